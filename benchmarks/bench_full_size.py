"""Full-size models: our harness against a bare loop on BERT-base, and what a full-size phase run costs per model.

1. **Bias at full size**: the latency p50 that ``accelerate_core.bench.benchmark_model`` (the loop of
   ``accel bench`` and of the generated benchmark tests) reports for a full-size BERT-base forward pass
   (``accelerate_core.full_size.build_full``: the default ``BertConfig``, ~110M parameters, random weights),
   against a bare ``time.perf_counter`` loop over the same call (same model, same inputs,
   ``torch.inference_mode``) in the same process, both on ``--threads`` torch threads. The two alternate in
   many short rounds, order flipped each round, so drift and neighbours' load hit both alike; the headline
   ratio is the **median of the per-round ratios** (a round a neighbour's burst hit is an outlier, not a
   shift), beside the pooled p50s. Each leg's CPU seconds (``time.process_time``) give a second ratio that
   a loaded machine cannot inflate: the harness's own added work. Aim: within 5%. The build time (meta
   device, then materialised with the model's own init) is reported too, and the load average before and
   after the measurement.
2. **A full-size phase run**: a real ``accel run --size full --hardware cpu`` (the embedded default: fork
   server, generated tests, DuckDB store, report) over a few models, then the same models tiny; per model the
   job's wall time (render, build, tests, benchmark loop) and its p50, from the store.

Prints one JSON object. Usage:
``.venv/bin/python benchmarks/bench_full_size.py [--rounds 16] [--per-round 6] [--models bert,gpt2,vit]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_harness_bias import paired_rounds  # the same alternating legs (this script runs from benchmarks/)

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- 1. bias at full size


def measure_bias(rounds: int, per_round: int, seq: int, threads: int) -> dict[str, Any]:
    import torch

    from accelerate_core import catalog
    from accelerate_core.bench import sample_stats
    from accelerate_core.full_size import build_full

    torch.set_num_threads(threads)
    started = time.perf_counter()
    model = build_full("bert")
    build_s = time.perf_counter() - started
    inputs = catalog.make_inputs("bert", model, batch_size=1, seq_len=seq)
    load_before = os.getloadavg()
    with torch.inference_mode():
        paired = paired_rounds(model, inputs, rounds, per_round, warm=5, seq=seq)
    harness, bare, ratios = paired.harness, paired.bare, paired.ratios
    h, b = sample_stats(harness), sample_stats(bare)
    ratio = statistics.median(ratios)
    return {
        "model": "bert (BertModel, default BertConfig)",
        "param_count": sum(p.numel() for p in model.parameters()),
        "build_s": round(build_s, 3),
        "shape": f"1x{seq}",
        "ours_p50_s": h["p50"],
        "bare_p50_s": b["p50"],
        "ratio": round(ratio, 4),
        "within_5pct": abs(ratio - 1) <= 0.05,
        "pooled_p50_ratio": round(h["p50"] / b["p50"], 4),
        "cpu_ratio": round(statistics.median(paired.cpu_ratios), 4),
        "per_round_ratios": [round(x, 4) for x in ratios],
        "per_round_cpu_ratios": [round(x, 4) for x in paired.cpu_ratios],
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg(),
        "ours_p90_s": h["p90"],
        "bare_p90_s": b["p90"],
        "samples_each": len(harness),
        "rounds": rounds,
        "torch_threads": threads,
    }


# ----------------------------------------------------------------------------- 2. a full-size phase run

QUICK_TOML = """
[bench]
batch_sizes = [1]
seq_lens = [16]
"""


def phase_run(models: str, size: str, folder: Path) -> dict[str, Any]:
    """One real ``accel run`` on this machine's CPU; per model the job's wall time and p50, from the store."""
    from accelerate_core.store import ResultsStore
    from tests.support.cli import seed_catalog_index

    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
    env.update(ACCEL_RESULTS_DB=str(folder / "results.duckdb"), ACCEL_TEMPLATES_DB=str(folder / "templates.duckdb"),
               ACCEL_REPORTS_DIR=str(folder / "reports"), ACCEL_CONCURRENCY="1")  # fmt: skip
    (folder / "accel.toml").write_text(QUICK_TOML)
    seed_catalog_index(folder)  # else each run builds the catalog index in its fresh folder first (minutes)
    argv = [sys.executable, "-m", "scheduler", "--config", str(folder / "accel.toml"), "run", "--phase",
            f"full-size-{size}", "--models", models, "--size", size, "--hardware", "cpu", "--json"]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=folder, capture_output=True, text=True, timeout=1800, check=False)
    wall_s = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"accel run --size {size} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    run_id = json.loads(done.stdout)["run_id"]
    with ResultsStore.open(folder / "results.duckdb", read_only=True) as store:
        rows = store.query(
            """SELECT j.model_type, j.status, j.duration_s,
                      max(m.p50) FILTER (m.metric = 'latency'), max(m.p50) FILTER (m.metric = 'param_count')
               FROM jobs j LEFT JOIN measurements m USING (job_key) WHERE j.run_id = ? GROUP BY ALL
               ORDER BY j.model_type""",
            [run_id],
        )
    per_model = {
        name: {"status": status, "wall_s": duration, "p50_s": p50, "param_count": int(params) if params else None}
        for name, status, duration, p50, params in rows
    }
    return {"size": size, "run_wall_s": round(wall_s, 2), "models": per_model}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--per-round", type=int, default=6)
    parser.add_argument("--seq", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default="bert,gpt2,vit")
    parser.add_argument("--skip-phase", action="store_true", help="only the bias measurement")
    args = parser.parse_args()
    report: dict[str, Any] = {"bias": measure_bias(args.rounds, args.per_round, args.seq, args.threads)}
    if not args.skip_phase:
        with tempfile.TemporaryDirectory(prefix="bench-full-size-") as tmp:
            runs = {}
            for size in ("full", "tiny"):
                (Path(tmp) / size).mkdir()
                runs[size] = phase_run(args.models, size, Path(tmp) / size)
        report["phase_run"] = runs
    report["load_avg"] = os.getloadavg()
    report["cpus"] = os.cpu_count()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

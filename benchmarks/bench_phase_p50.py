"""Does the short benchmark loop of a phase run keep the p50? Short phase-run loop vs a long one, same models.

A phase run gives each architecture about 2 s of wall time, so its latency loop is short
(``scheduler.plan.PHASE_LOOP``: warm-up calls, then at least ``min_iters`` calls and ``min_duration_s``, or
fewer seconds once the p50's 95% interval is within ``p50_ci_rel``: the precision rule).
This measures, for a few models in one fork server (the same job isolation as a run, one job at a time),
the forward-pass p50 from that short loop and from a long one (many calls over several seconds), and
prints JSON: per model both p50s, their ratio, sample counts and loop times; and the median and worst
relative difference over the models. The long loop is the baseline, measured in the same run.

Usage: ``python benchmarks/bench_phase_p50.py [--models bert,gpt2,vit,whisper,resnet] [--long-s 5] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict
from typing import Any

from accelerate_core import wire
from accelerate_core.config import BenchConfig
from accelerate_core.contracts import BenchReport, BenchRequest
from accelerate_core.runner import ForkServer
from scheduler.plan import PHASE_LOOP

ENTRY = "accelerate_core.bench.job:bench_entry"
DEFAULT_MODELS = "bert,gpt2,vit,whisper,resnet,bart"


def _one(runner: ForkServer, model: str, bench: BenchConfig, tag: str) -> dict[str, Any]:
    started = time.perf_counter()
    outcome = runner.run(f"{model}-{tag}", wire.encode(BenchRequest(model, "cpu", bench)),
                         env={"OMP_NUM_THREADS": "1"}, time_limit_s=300, mem_cap_mb=6144)  # fmt: skip
    report = wire.decode(BenchReport, outcome.value) if outcome.ok else None
    if report is None or report.usage_error:
        raise RuntimeError(f"{model} ({tag}): {outcome.error_class} {outcome.error_message or outcome.value}")
    (lat,) = [m for m in report.measurements if m.metric == "latency"]
    loop_s = sum(lat.samples)
    job_s = round(time.perf_counter() - started, 3)
    return {"p50": lat.p50, "n": lat.n, "loop_s": round(loop_s, 4), "job_s": job_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--long-s", type=float, default=5.0, help="minimum duration of the long loop")
    parser.add_argument("--repeat", type=int, default=3, help="short loops per model (fresh child each)")
    args = parser.parse_args(argv)
    short_bench = BenchConfig(**PHASE_LOOP)
    long_bench = BenchConfig(warmup=5, min_iters=200, min_duration_s=args.long_s, max_duration_s=4 * args.long_s)
    rows: dict[str, Any] = {}
    with ForkServer(ENTRY, max_children=1) as runner:
        for model in args.models.split(","):
            long = _one(runner, model, long_bench, "long")
            shorts = [_one(runner, model, short_bench, f"short{i}") for i in range(args.repeat)]
            ratios = [s["p50"] / long["p50"] for s in shorts]
            rows[model] = {"long": long, "short": shorts, "p50_ratio_short_over_long": [round(r, 4) for r in ratios]}
    all_ratios = [r for row in rows.values() for r in row["p50_ratio_short_over_long"]]
    deviations = [abs(r - 1) for r in all_ratios]
    print(json.dumps({
        "benchmark": "phase-run p50 (short loop) vs long loop, forward pass, batch 1 x seq 16, cpu, 1 thread",
        "short_settings": asdict(short_bench),
        "long_settings": asdict(long_bench),
        "models": rows,
        "median_abs_rel_diff": round(statistics.median(deviations), 4),
        "max_abs_rel_diff": round(max(deviations), 4),
        "median_short_loop_s": round(statistics.median(s["loop_s"] for r in rows.values() for s in r["short"]), 4),
        "median_long_loop_s": round(statistics.median(r["long"]["loop_s"] for r in rows.values()), 4),
    }, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

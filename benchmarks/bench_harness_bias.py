"""Harness bias and job-isolation cost, each against its baseline in the same run.

1. **Bias**: the latency p50 that ``accelerate_core.bench.benchmark_model`` (the harness ``accel bench``
   and the generated benchmark tests use) reports for a tiny BERT forward pass, against a bare
   ``time.perf_counter`` loop over the same call (same model, same inputs, ``torch.inference_mode``)
   in the same process. The two alternate in rounds, order flipped each round, so drift and
   neighbours' load hit both alike. Aim: within 10%.
2. **Isolation cost**: the wall time of one job through ``ForkServer`` (submit to outcome) when the
   child is forked from a parent that preloaded torch + transformers, against a fresh interpreter per
   job (``mode="spawn"``): a no-op job, and a job that builds a tiny BERT and runs one forward pass.
   Design figures: about 0.1 s vs about 5.6 s.

Prints one JSON object. Usage: ``.venv/bin/python benchmarks/bench_harness_bias.py [--rounds 7] [--spawn-jobs 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PRELOAD = ("torch", "transformers", "transformers.modeling_utils")  # the ForkServer default


# ----------------------------------------------------------------------------- jobs (run in children)


def noop_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Nothing at all: the pure cost of a child."""
    return {"pid": os.getpid()}


def bert_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Build a tiny BERT and run one forward pass, as a real job would."""
    import torch

    model, inputs = tiny_bert()
    with torch.inference_mode():
        out = model(**inputs)
    return {"shape": list(out.last_hidden_state.shape)}


def dispatch(payload: dict[str, Any]) -> dict[str, Any]:
    """The fork-server entry: one server runs both kinds of job."""
    return bert_job(payload) if payload.get("job") == "bert" else noop_job(payload)


def tiny_bert(batch: int = 1, seq: int = 16) -> tuple[Any, dict[str, Any]]:
    """A 2-layer, 32-wide BERT with random weights and its inputs."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        vocab_size=1024, max_position_embeddings=512)  # fmt: skip
    model = BertModel(config).eval()
    ids = torch.randint(0, config.vocab_size, (batch, seq))
    return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


# ----------------------------------------------------------------------------- 1. harness bias


def bare_loop(fn: Any, n: int) -> list[float]:
    """The baseline: nothing but perf_counter around each call."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def harness_loop(model: Any, inputs: dict[str, Any], n: int, warmup: int, seq: int = 16) -> list[float]:
    """The harness as ``accel bench`` runs it, fixed to ``n`` timed calls."""
    from accelerate_core.bench import benchmark_model
    from accelerate_core.config import BenchConfig

    bench = BenchConfig(batch_sizes=(1,), seq_lens=(seq,), warmup=warmup, min_iters=n, min_duration_s=0.0,
                        max_duration_s=3600.0)  # fmt: skip
    found = benchmark_model(model, lambda b, s: inputs, hardware="cpu", bench=bench, generative=False)
    latency = next(m for m in found if m.metric == "latency")
    assert latency.n == n, latency.n
    return list(latency.samples)


@dataclass
class Paired:
    """Both legs' samples, and per round the ratio (harness / bare) of the median wall times and of the CPU
    seconds of the whole leg (``time.process_time``: what neighbours' load on a shared machine cannot inflate)."""

    harness: list[float] = field(default_factory=list)
    bare: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    cpu_ratios: list[float] = field(default_factory=list)


def paired_rounds(
    model: Any, inputs: dict[str, Any], rounds: int, per_round: int, *, warm: int, seq: int = 16
) -> Paired:
    """Harness and bare legs alternating in order each round (this machine's drift hits both alike).

    Call under ``torch.inference_mode()``.
    """
    out = Paired()
    bare_loop(lambda: model(**inputs), warm)  # warm both paths up before anything counts
    for r in range(rounds):
        got: dict[str, list[float]] = {}
        cpu: dict[str, float] = {}
        for name in ("harness", "bare") if r % 2 == 0 else ("bare", "harness"):
            started = time.process_time()
            if name == "harness":
                got[name] = harness_loop(model, inputs, per_round, warmup=2, seq=seq)
            else:
                bare_loop(lambda: model(**inputs), 2)
                got[name] = bare_loop(lambda: model(**inputs), per_round)
            cpu[name] = time.process_time() - started
        out.harness += got["harness"]
        out.bare += got["bare"]
        out.ratios.append(statistics.median(got["harness"]) / statistics.median(got["bare"]))
        out.cpu_ratios.append(cpu["harness"] / cpu["bare"])
    return out


def measure_bias(rounds: int, per_round: int, threads: int) -> dict[str, Any]:
    import torch

    from accelerate_core.bench import sample_stats

    torch.set_num_threads(threads)
    model, inputs = tiny_bert()
    with torch.inference_mode():
        paired = paired_rounds(model, inputs, rounds, per_round, warm=20)
    harness, bare, ratios = paired.harness, paired.bare, paired.ratios
    h, b = sample_stats(harness), sample_stats(bare)
    bias = (h["p50"] - b["p50"]) / b["p50"] * 100
    return {
        "harness_p50_s": h["p50"],
        "bare_p50_s": b["p50"],
        "bias_pct": round(bias, 2),
        "within_10pct": abs(bias) <= 10,
        "per_round_ratio_median": round(statistics.median(ratios), 4),
        "per_round_ratios": [round(x, 4) for x in ratios],
        "harness_p90_s": h["p90"],
        "bare_p90_s": b["p90"],
        "samples_each": len(harness),
        "rounds": rounds,
        "torch_threads": threads,
    }


# ----------------------------------------------------------------------------- 2. isolation cost


def job_costs(mode: str, jobs: int) -> dict[str, Any]:
    from accelerate_core.runner import ForkServer

    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    started = time.perf_counter()
    result: dict[str, Any] = {"mode": mode, "jobs_each": jobs}
    with ForkServer("bench_harness_bias:dispatch", preload=PRELOAD, mode=mode) as runner:
        result["server_start_s"] = round(time.perf_counter() - started, 3)
        for job in ("noop", "bert"):
            walls = []
            for i in range(jobs):
                t0 = time.perf_counter()
                outcome = runner.run(f"{job}-{i}", {"job": job}, time_limit_s=300, mem_cap_mb=4096)
                walls.append(time.perf_counter() - t0)
                assert outcome.ok, outcome
            result[f"{job}_job_p50_s"] = round(statistics.median(walls), 4)
            result[f"{job}_job_all_s"] = [round(w, 4) for w in walls]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--per-round", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fork-jobs", type=int, default=10)
    parser.add_argument("--spawn-jobs", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    fork = job_costs("fork", args.fork_jobs)
    spawn = job_costs("spawn", args.spawn_jobs)
    bias = measure_bias(args.rounds, args.per_round, args.threads)
    report = {
        "bias": bias,
        "isolation": {
            "fork": fork,
            "spawn": spawn,
            "spawn_over_fork_noop": round(spawn["noop_job_p50_s"] / fork["noop_job_p50_s"], 1),
            "spawn_over_fork_bert": round(spawn["bert_job_p50_s"] / fork["bert_job_p50_s"], 1),
        },
        "load_avg": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

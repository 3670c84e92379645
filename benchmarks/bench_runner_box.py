"""What one job costs the fork server, fixed part only: fork to outcome of a no-op job, per box mode.

Runs ``--jobs`` no-op jobs one after another through a fork server that preloads what a worker's does
(torch and transformers), after a few warm-up jobs, and prints JSON per box mode: the round trip as the
client sees it (``run()`` wall time) and the child's life as the server measures it (``duration_s``),
p50/p90/mean in milliseconds. Modes alternate in rounds so that a busy machine hurts them alike.

Usage: ``python benchmarks/bench_runner_box.py [--jobs 100] [--rounds 3] [--modes cgroup,sweep]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from accelerate_core.runner import DEFAULT_PRELOAD, ForkServer

ENTRY = "tests.support.entries:echo"


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[int(q * (len(ordered) - 1))], 2)


def _summary(values: list[float]) -> dict[str, float]:
    return {"p50": _quantile(values, 0.5), "p90": _quantile(values, 0.9), "mean": round(statistics.mean(values), 2)}


def _round(box: str, jobs: int, walls: list[float], lives: list[float]) -> None:
    with ForkServer(ENTRY, preload=DEFAULT_PRELOAD, box=box) as runner:
        for i in range(5):
            runner.run(f"warm{i}", {}, time_limit_s=30, mem_cap_mb=4096)
        for i in range(jobs):
            started = time.perf_counter()
            outcome = runner.run(f"job{i}", {}, time_limit_s=30, mem_cap_mb=4096)
            walls.append((time.perf_counter() - started) * 1e3)
            lives.append(outcome.duration_s * 1e3)
            if not outcome.ok:
                raise RuntimeError(f"a no-op job failed: {outcome}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100, help="no-op jobs per round and mode")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default="cgroup,sweep", help="box modes to compare")
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    walls: dict[str, list[float]] = {m: [] for m in modes}
    lives: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.rounds):
        for mode in modes:
            _round(mode, args.jobs, walls[mode], lives[mode])
    report = {m: {"jobs": len(walls[m]), "round_trip_ms": _summary(walls[m]), "child_ms": _summary(lives[m])}
              for m in modes}  # fmt: skip
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

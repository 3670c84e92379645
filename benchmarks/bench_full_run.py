"""A full phase run on this machine (or a ``--models``/``--sample`` subset): wall, job time, makespan, stages.

Plans and runs the phase as ``accel run`` does on the embedded default (the local executor, ``--slots``
children at a time, a fresh results store under a temporary folder), then prints JSON per run: the
planning time, the fork server's start-up, the wall time from a ready server to the last outcome, the sum
of job times (busy), the makespan efficiency (busy / (slots x wall)), the idle slot time at the tail, the
time the executor spent writing to the store, the report's time, and the per-stage totals the jobs
recorded (``accelerate_core.report.stages``: render, pytest start, build, forward, generate, loop, runner)
and how the benchmark's timing loops ended (``loop_endings``: per metric, converged or cut at the time cap, with
their median samples, seconds and p50 precision).

``--runs 2`` runs the same selection again in the same store: the second run is ordered longest-first
from the first one's durations (the history a phase run has), so the two show what the order is worth.
The load average is printed before and after: on a shared machine compare runs of one invocation only.

Usage::

    python benchmarks/bench_full_run.py --sample 60          # 60 architectures across the catalog
    python benchmarks/bench_full_run.py --models all         # the full catalog (~7 min on 2 cores)
    python benchmarks/bench_full_run.py --sample 200 --kind dry --slots 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accelerate_core.config import Settings
from accelerate_core.constants import JOB_KIND_DRY, JOB_KIND_TEST
from accelerate_core.report.model import plain
from accelerate_core.report.stages import collect_loop_endings, collect_stages
from accelerate_core.store import ResultsStore
from scheduler.local import run_local
from scheduler.plan import PlanOptions
from scheduler.planning_inputs import plan_with_stores


def sample_models(n: int) -> str:
    """``n`` runnable architectures spread evenly over the catalog (sorted by model type): a ``--models`` value."""
    from accelerate_core.catalog.index import load_index

    runnable = sorted(e.model_type for e in load_index() if e.runnable)
    if n <= 0 or n >= len(runnable):
        return ",".join(runnable)
    step = len(runnable) / n
    return ",".join(runnable[int(i * step)] for i in range(n))


def phase_run(settings: Settings, models: str, *, slots: int, kind: str, phase: str) -> dict[str, Any]:
    """Plan and run one phase of ``models`` with ``slots`` children; return its figures (see the module doc)."""
    started = time.perf_counter()
    options = PlanOptions(phase=phase, models=models, hardware=("cpu",), kind=kind)
    plan = plan_with_stores(settings, options, base_dir=Path.cwd())
    plan_s = time.perf_counter() - started
    started = time.perf_counter()
    summary = run_local(settings, plan, slots=slots, write_report=True)
    total_s = time.perf_counter() - started
    with ResultsStore.open(settings.results_db, read_only=True) as store:
        stages = collect_stages(store, summary.run_id)
        endings = collect_loop_endings(store, summary.run_id)
    idle_s = summary.slots * summary.wall_s - summary.busy_s
    return {
        **summary.to_dict(),
        "planned": len(plan.jobs),
        "plan_s": round(plan_s, 2),
        "run_local_s": round(total_s, 2),
        "idle_slot_s": round(idle_s, 2),
        "per_job_ms": round(1000 * summary.wall_s * summary.slots / summary.ran, 2) if summary.ran else None,
        "stages": [plain(s) for s in stages],
        "loop_endings": [plain(e) for e in endings],
    }


def bench_settings(folder: Path, slots: int) -> Settings:
    """Settings of a throw-away store, templates and reports under ``folder``."""
    return Settings(results_db=folder / "results.duckdb", templates_db=folder / "templates.duckdb",
                    reports_dir=folder / "reports", concurrency=slots)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="all, a,b or @file (default: --sample)")
    parser.add_argument("--sample", type=int, default=60, help="this many architectures across the catalog")
    parser.add_argument("--slots", type=int, default=2, help="jobs at once")
    parser.add_argument("--kind", choices=(JOB_KIND_TEST, JOB_KIND_DRY), default=JOB_KIND_TEST)
    parser.add_argument("--runs", type=int, default=1, help="runs in one store (the 2nd is ordered from history)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the store and reports in this folder")
    args = parser.parse_args(argv)
    if args.slots < 1 or args.runs < 1:
        print("bench_full_run: --slots and --runs must be 1 or more", file=sys.stderr)
        return 2
    models = args.models or sample_models(args.sample)
    out: dict[str, Any] = {"models": args.models or f"sample of {args.sample}", "slots": args.slots,
                           "kind": args.kind, "cpus": os.cpu_count(), "loadavg_before": os.getloadavg()}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-full-run-") as tmp:
        folder = args.keep or Path(tmp)
        settings = bench_settings(folder, args.slots)
        out["runs"] = [phase_run(settings, models, slots=args.slots, kind=args.kind, phase="bench-full-run")
                       for _ in range(args.runs)]  # fmt: skip
    out["loadavg_after"] = os.getloadavg()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

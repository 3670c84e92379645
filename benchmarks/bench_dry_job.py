"""One dry job's fixed cost through the local executor (fork, pipe, result, row): target <= 20 ms per job.

Runs ``--jobs`` dry jobs (a job that renders and runs nothing: ``JobSpec.kind == "dry"``) as a phase run on
one slot (``benchmarks/bench_full_run.py``'s ``phase_run``: plan, fork server, store, report) and prints JSON:
per job, the executor's wall / jobs, and its parts as the jobs recorded them (``child``: fork to exit,
``entry``: the job body, ``runner``: fork, box, result write, exit) and as the executor measured them
(``store``: its writes, which overlap the next child; ``server``: the rest of a job's cycle: the fork's
parent side, the reap, the pipes, the loop; the jobs queued in the server start as soon as a child is
reaped). Where the server keeps a spare child (fork mode with cgroup boxes) a job is handed to a child
forked before it, so ``child`` counts from the hand-over and the fork is off the job's path; the child's
exit (tearing down its copy of the server's page tables) is still on it. In the same
invocation it measures two baselines: the fork server alone (``ForkServer.run`` of the same dry job, no
store, no loop) and a bare ``fork()`` + ``_exit`` + ``wait`` of a process as large as the fork server:
the kernel's page-table floor of a process whose memory is not in huge pages (the server collapses its
own, ``server_huge_mb``: its forks and exits cost less than this). On a shared,
loaded machine compare the ratios; the load average is printed before and after.

Usage: ``python benchmarks/bench_dry_job.py [--jobs 200] [--server-jobs 50]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accelerate_core import wire
from accelerate_core.constants import JOB_ENTRY, JOB_KIND_DRY
from accelerate_core.runner import ForkServer
from benchmarks.bench_full_run import bench_settings, phase_run, sample_models
from scheduler.plan import PlanOptions
from scheduler.planning_inputs import plan_with_stores

TARGET_MS = 20.0


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return {"p50": round(1e3 * statistics.median(ordered), 2), "p90": round(1e3 * p90, 2),
            "mean": round(1e3 * statistics.mean(ordered), 2)}  # fmt: skip


def server_only(folder: Path, jobs: int) -> dict[str, Any]:
    """The fork server alone: ``run()`` round trips of one dry job, and its children's lives."""
    settings = bench_settings(folder / "server-only", 1)
    plan = plan_with_stores(settings, PlanOptions(phase="bench-dry", models="bert", kind=JOB_KIND_DRY),
                            base_dir=Path.cwd())  # fmt: skip
    payload = wire.encode(plan.jobs[0])
    trips: list[float] = []
    lives: list[float] = []
    with ForkServer(JOB_ENTRY) as server:
        rss_mb = _rss_mb(server.pid)
        huge_mb = server.server_info.get("huge_mb")
        for i in range(jobs + 3):
            started = time.perf_counter()
            outcome = server.run(f"dry-{i}", payload, time_limit_s=60, mem_cap_mb=4096)
            if not outcome.ok:
                raise RuntimeError(f"a dry job failed: {outcome.error_message}")
            if i >= 3:  # the first children fault in pages the later ones share
                trips.append(time.perf_counter() - started)
                lives.append(outcome.duration_s)
    return {"jobs": jobs, "server_rss_mb": rss_mb, "server_huge_mb": huge_mb, "round_trip_ms": _ms(trips),
            "child_ms": _ms(lives)}  # fmt: skip


def fork_floor(rss_mb: float, forks: int = 20) -> dict[str, Any]:
    """``fork()`` + ``_exit(0)`` + ``waitpid`` of this process grown to ``rss_mb`` of touched memory."""
    have = _rss_mb(os.getpid()) or 0.0
    pages = bytearray(max(0, int((rss_mb - have) * 1024 * 1024)))
    for i in range(0, len(pages), 4096):
        pages[i] = 1
    times = []
    for _ in range(forks):
        started = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        times.append(time.perf_counter() - started)
    del pages
    return {"rss_mb": round(rss_mb), "fork_exit_wait_ms": _ms(times)}


def _rss_mb(pid: int | None) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _stage(stages: list[dict[str, Any]], name: str) -> float | None:
    return next((s["mean_s"] for s in stages if s["stage"] == name), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="dry jobs through the local executor")
    parser.add_argument("--server-jobs", type=int, default=50, help="dry jobs through the fork server alone")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.server_jobs < 1:
        print("bench_dry_job: --jobs and --server-jobs must be 1 or more", file=sys.stderr)
        return 2
    out: dict[str, Any] = {"cpus": os.cpu_count(), "loadavg_before": os.getloadavg(), "target_ms": TARGET_MS}
    with tempfile.TemporaryDirectory(prefix="bench-dry-job-") as tmp:
        folder = Path(tmp)
        run = phase_run(bench_settings(folder, 1), sample_models(args.jobs), slots=1, kind=JOB_KIND_DRY,
                        phase="bench-dry")  # fmt: skip
        server = server_only(folder, args.server_jobs)
    per_job_s = run["wall_s"] / max(1, run["ran"])
    child_s = _stage(run["stages"], "child") or 0.0
    store_s = run["store_s"] / max(1, run["ran"])
    out["local_executor"] = {
        "jobs": run["ran"],
        "wall_s": run["wall_s"],
        "per_job_ms": round(1e3 * per_job_s, 2),
        "breakdown_ms": {
            "child": round(1e3 * child_s, 2),
            "entry": round(1e3 * (_stage(run["stages"], "entry") or 0.0), 2),
            "runner": round(1e3 * (_stage(run["stages"], "runner") or 0.0), 2),
            "store": round(1e3 * store_s, 2),
            "server": round(1e3 * max(0.0, per_job_s - child_s), 2),
        },
        "startup_s": run["startup_s"],
    }
    out["fork_server_only"] = server
    out["fork_floor"] = fork_floor(server["server_rss_mb"] or 400.0)
    floor_ms = out["fork_floor"]["fork_exit_wait_ms"]["p50"]
    out["per_job_over_floor"] = round(1e3 * per_job_s / floor_ms, 2) if floor_ms else None
    out["per_job_over_server_only"] = round(1e3 * per_job_s / server["round_trip_ms"]["p50"], 2)
    out["meets_target"] = 1e3 * per_job_s <= TARGET_MS
    out["loadavg_after"] = os.getloadavg()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

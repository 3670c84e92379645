"""Benchmark of the model catalog sweep: ``models check`` over every architecture (or a sample).

Prints JSON: full-sweep wall time, passes per modality, non-passing types per reason class, and the
median/p90 wall time per type (fork + build + forward + check + generate, measured in the parent).

Usage: ``python benchmarks/bench_catalog.py [--jobs 2] [--models a,b|@file] [--out outcomes.json]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--models", default="all")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    from accelerate_core.catalog.check import count_outcomes, run_check
    from accelerate_core.catalog.index import load_index
    from accelerate_core.selection import select_models

    targets = select_models(load_index(), args.models)
    start = time.perf_counter()
    rows = run_check(targets, jobs=args.jobs, timeout_s=args.timeout)
    wall = time.perf_counter() - start
    summary = count_outcomes(rows)
    times = [float(r["wall_s"]) for r in rows if "wall_s" in r]
    result = {
        "types": len(rows),
        "jobs": args.jobs,
        "sweep_wall_s": round(wall, 1),
        "passed": summary["passed"],
        "pass_by_modality": {m: c["pass"] for m, c in summary["by_modality"].items()},
        "total_by_modality": {m: c["total"] for m, c in summary["by_modality"].items()},
        "not_passing_by_reason_class": summary["by_reason_class"],
        "needs": summary["needs"],
        "generate": summary["generate"],
        "per_type_s": {
            "median": round(statistics.median(times), 3) if times else 0.0,
            "p90": round(_quantile(times, 0.9), 3),
            "max": round(max(times, default=0.0), 3),
        },
    }
    if args.out is not None:
        args.out.write_text(json.dumps({"summary": summary, "outcomes": rows}, indent=1, default=str))
    json.dump(result, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

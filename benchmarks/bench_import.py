"""Import cost of ``accelerate_core`` over a bare interpreter, and the 16 x 50 parallel-load success rate.

Prints JSON. Three views of the same cost, every sample in a fresh interpreter (a cached module
would measure nothing), interleaved with a bare interpreter so machine load hits both alike:

- ``import_ms``: ``perf_counter`` around ``import accelerate_core`` inside the child (the headline);
- ``importtime_ms``: the cumulative figure ``python -X importtime`` reports for it;
- ``over_bare_wall_ms``: the child's wall time minus the bare interpreter's run just before it (median of
  the paired differences; ``over_bare_min_wall_ms``: min minus min). Noisiest: whole processes, exit included.

Usage: ``python benchmarks/bench_import.py [--repeats 40] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from accelerate_core.selfbench import (
    ORIGINAL_IMPORT_MS,
    TARGET_IMPORT_MS,
    measure_imports,
    measure_parallel,
)


def importtime_ms(module: str, repeats: int) -> float:
    """Median cumulative microseconds ``-X importtime`` reports for ``module``, in ms."""
    samples = []
    for _ in range(repeats):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", f"import {module}"],
            capture_output=True,
            text=True,
            check=True,
        )
        for line in done.stderr.splitlines():
            parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
            if len(parts) == 3 and parts[2] == module:
                samples.append(int(parts[1]) / 1000.0)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40, help="fresh interpreters per figure")
    parser.add_argument("--rounds", type=int, default=3, help="fresh interpreters for the 16x50 scenario")
    args = parser.parse_args()

    loading = measure_imports(["accelerate_core"], args.repeats)
    pkg = loading["modules"]["accelerate_core"]
    bare_wall = loading["bare"]["wall"]["median_ms"]
    parallel = measure_parallel(16, 50, rounds=args.rounds)
    import_ms = pkg["import"]["median_ms"]
    result = {
        "repeats": args.repeats,
        "import_ms": round(import_ms, 3),
        "import_p25_p75_ms": [round(pkg["import"]["p25_ms"], 3), round(pkg["import"]["p75_ms"], 3)],
        "importtime_ms": round(importtime_ms("accelerate_core", args.repeats), 3),
        "bare_wall_ms": round(bare_wall, 3),
        "over_bare_wall_ms": round(pkg["over_bare_ms"], 3),
        "over_bare_min_wall_ms": round(pkg["over_bare_min_ms"], 3),
        "wall_ratio_vs_bare": round(pkg["wall"]["median_ms"] / bare_wall, 3),
        "original_import_ms": ORIGINAL_IMPORT_MS,
        "ratio_vs_original": round(import_ms / ORIGINAL_IMPORT_MS, 3),
        "target_ms": TARGET_IMPORT_MS,
        "under_target": import_ms < TARGET_IMPORT_MS,
        "heavy_modules_imported": pkg["heavy"],
        "parallel_16x50": {
            "rounds": parallel["rounds"],
            "attempts": parallel["attempts"],
            "success_rate": parallel["success_rate"],
            "round_ms_median": round(parallel["seconds"]["median_ms"], 1),
            "errors": parallel["errors"],
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

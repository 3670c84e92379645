"""Faults on a fleet of real processes: one row per fault, with what it cost the run.

Every scenario registered in ``tests/faults/scenarios_*.py`` (``@fault("name")``) runs on a fresh fleet of
its own (redis-server on a free loopback port, the writer, prefork worker nodes, ``accel`` commands; see
``tests/faults/harness.py``). Each row: jobs planned, terminal rows, lost, duplicated, seconds from the
fault to the run's completion, and whether the run completed with its report. The ``none`` scenario (no
fault) is the baseline the others' seconds compare with (``vs_none``).

Usage: ``.venv/bin/python benchmarks/bench_faults.py [--only NAME,...] [--json]``; exit 1 when any fault
lost or doubled a job or left its run incomplete.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.faults.harness import FaultOutcome, Fleet, load_scenarios  # noqa: E402

COLUMNS = ("fault", "planned", "terminal", "lost", "duplicated", "seconds", "completed")


def run_one(name: str) -> FaultOutcome:
    """Run scenario ``name`` on a fresh fleet; a scenario that raises is a row that did not complete."""
    scenario = load_scenarios()[name]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"fault-{name}-") as tmp, Fleet(Path(tmp)) as fleet:
        try:
            return scenario(fleet)
        except Exception as e:
            note = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            return FaultOutcome(name, 0, 0, 0, 0, time.monotonic() - started, False, note)


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    head = [*COLUMNS, "vs_none", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c, "")) for c in head) + " |")
    return "\n".join(lines)


def _cell(value: object) -> str:
    """One Markdown table cell: a note with line breaks or pipes stays in its row."""
    return " / ".join(str(value).splitlines()).replace("|", "\\|")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated fault names (default: every one)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    names = list(load_scenarios())
    wanted = [n for n in args.only.split(",") if n] or names
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        print(f"bench_faults: unknown fault {', '.join(unknown)}: choose from {', '.join(names)}", file=sys.stderr)
        return 2
    rows = [run_one(name).row() for name in wanted]
    base = next((r["seconds"] for r in rows if r["fault"] == "none"), None)
    for r in rows:
        r["vs_none"] = round(r["seconds"] / base, 2) if base else None
    load = os.getloadavg()[0]
    if args.json:
        print(json.dumps({"faults": rows, "load_avg_1m": round(load, 2), "cpus": os.cpu_count()}, indent=2))
    else:
        print(table(rows))
        print(f"\nload average {load:.1f} on {os.cpu_count()} cpus")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

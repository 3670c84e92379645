"""The summary of ``gpu-check.sh``: its steps' figures in ``summary.json`` and ``summary.md`` in the output folder.

Usage: ``python gpu_check_summary.py OUT_DIR HARDWARE`` (after the writer has let go of the results DB).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _steps(out: Path) -> list[dict[str, Any]]:
    rows = (line.split("\t") for line in (out / "steps.tsv").read_text().splitlines() if line.count("\t") == 2)
    return [{"step": name, "exit": int(rc), "seconds": int(ms) / 1000} for name, rc, ms in rows]


def _bench(found: Any) -> dict[str, Any] | None:
    if not isinstance(found, dict):
        return None
    by_metric = {
        m["metric"]: m for m in found.get("measurements", []) if m.get("seq_len", 0) or m["metric"] != "latency"
    }
    latency = next((m for m in found.get("measurements", []) if m["metric"] == "latency"), None)
    return {
        "model": found.get("model_type"),
        "hardware": found.get("hardware"),
        "device": (found.get("environment") or {}).get("device_name"),
        "size": found.get("size"),
        "dtype": found.get("dtype"),
        "param_count": (by_metric.get("param_count") or {}).get("p50"),
        "load_s": (by_metric.get("load_time") or {}).get("p50"),
        "latency_p50_s": latency and latency["p50"],
        "latency_p90_s": latency and latency["p90"],
        "peak_memory_mib": (by_metric.get("peak_memory") or {}).get("p50"),
    }


def _fleet(out: Path, run_id: str | None) -> dict[str, Any] | None:
    db = out / "data" / "results.duckdb"
    if run_id is None or not db.is_file():
        return None
    import duckdb

    with duckdb.connect(str(db), read_only=True) as conn:
        rows = conn.execute(
            """SELECT j.model_type, j.status, j.duration_s, j.device_name, min(m.p50) FILTER (m.metric = 'latency')
               FROM jobs j LEFT JOIN measurements m USING (job_key) WHERE j.run_id = ?
               GROUP BY ALL ORDER BY j.model_type""",
            [run_id],
        ).fetchall()
    jobs = [{"model": m, "status": s, "seconds": d, "device": dev, "latency_p50_s": p50} for m, s, d, dev, p50 in rows]
    by_status: dict[str, int] = {}
    for job in jobs:
        by_status[job["status"]] = by_status.get(job["status"], 0) + 1
    return {"run_id": run_id, "jobs": jobs, "by_status": by_status}


def _markdown(summary: dict[str, Any]) -> str:
    lines = [f"# GPU check on {summary['hardware']}", "", "| step | exit | seconds |", "| --- | ---: | ---: |"]
    lines += [f"| {s['step']} | {s['exit']} | {s['seconds']:.1f} |" for s in summary["steps"]]
    if summary["torch"]:
        lines += ["", "torch: " + ", ".join(f"{k} {v}" for k, v in summary["torch"].items())]
    if bench := summary["bench"]:
        lines += ["", "## accel bench", "", "| " + " | ".join(bench) + " |", "|" + " --- |" * len(bench)]
        lines.append("| " + " | ".join(str(v) for v in bench.values()) + " |")
    if fleet := summary["fleet"]:
        lines += [
            "",
            f"## Fleet run {fleet['run_id']}: " + ", ".join(f"{n} {s}" for s, n in fleet["by_status"].items()),
        ]
        lines += ["", "| model | status | seconds | latency p50 (s) | device |", "| --- | --- | ---: | ---: | --- |"]
        lines += [f"| {j['model']} | {j['status']} | {j['seconds']} | {j['latency_p50_s']} | {j['device']} |"
                  for j in fleet["jobs"]]  # fmt: skip
    lines += ["", f"optimum-benchmark reports: {summary['optimum_reports']}", ""]
    return "\n".join(lines)


def main(out: Path, hardware: str) -> int:
    """Write the summary files; 0."""
    run = _json(out / "fleet.out")
    exported = _json(out / "export.out")
    summary = {
        "hardware": hardware,
        "steps": _steps(out),
        "torch": _json(out / "torch.out"),
        "detect": _json(out / "detect.out"),
        "bench": _bench(_json(out / "bench.out")),
        "fleet": _fleet(out, run.get("run_id") if isinstance(run, dict) else None),
        "optimum_reports": len(exported) if isinstance(exported, dict) else 0,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(_markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2]))

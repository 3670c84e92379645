"""Reads for planning, status and resume: runs, progress, unfinished jobs, past durations.

Each function runs one or two short queries and returns plain data, so a reader never keeps the
writer waiting longer than a query.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from accelerate_core.constants import STATUS_DONE, TERMINAL_STATUSES
from accelerate_core.contracts import JobSpec
from accelerate_core.errors import UnknownRunError

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection

_TERMINAL_SQL = "(" + ", ".join(f"'{s}'" for s in sorted(TERMINAL_STATUSES)) + ")"
_RUN_COLUMNS = ("run_id", "phase", "created_at", "params", "code_version", "status", "updated_at")
FAILURES_SHOWN = 50
"""How many recent failures :func:`run_progress` lists (the count covers all of them)."""


def _run_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(_RUN_COLUMNS, row, strict=False))
    out["params"] = json.loads(out["params"]) if out["params"] else {}
    return out


def list_runs(conn: DuckDBPyConnection) -> list[dict[str, Any]]:
    """Every run, newest first, with its job counts (``jobs``, ``terminal``, ``done``, ``failed``)."""
    rows = conn.execute(
        f"""SELECT r.*, count(j.job_key), count(j.job_key) FILTER (j.status IN {_TERMINAL_SQL}),
                count(j.job_key) FILTER (j.status = '{STATUS_DONE}'),
                count(j.job_key) FILTER (j.status IN {_TERMINAL_SQL} AND j.status NOT IN ('done', 'skipped'))
            FROM runs r LEFT JOIN jobs j USING (run_id)
            GROUP BY ALL ORDER BY r.created_at DESC, r.run_id DESC"""
    ).fetchall()
    out = []
    for row in rows:
        run = _run_dict(row[: len(_RUN_COLUMNS)])
        run.update(zip(("jobs", "terminal", "done", "failed"), row[len(_RUN_COLUMNS) :], strict=True))
        out.append(run)
    return out


def get_run(conn: DuckDBPyConnection, run_id: str) -> dict[str, Any]:
    """One run's row as a dict.

    Raises:
        UnknownRunError: no such run.
    """
    row = conn.execute("SELECT * FROM runs WHERE run_id = ?", [run_id]).fetchone()
    if row is None:
        raise UnknownRunError(f"run {run_id!r} is not in the results store: check `accel runs list`")
    return _run_dict(row)


def latest_run(conn: DuckDBPyConnection) -> str | None:
    """The id of the most recently created run, if any."""
    row = conn.execute("SELECT run_id FROM runs ORDER BY created_at DESC, run_id DESC LIMIT 1").fetchone()
    return str(row[0]) if row else None


def previous_run(conn: DuckDBPyConnection, phase: str, before_run_id: str) -> str | None:
    """The latest run of ``phase`` created before ``before_run_id`` (the default baseline), if any."""
    row = conn.execute(
        """SELECT r.run_id FROM runs r, (SELECT created_at FROM runs WHERE run_id = $run) b
           WHERE r.phase = $phase AND r.run_id <> $run AND r.created_at <= b.created_at
           ORDER BY r.created_at DESC, r.run_id DESC LIMIT 1""",
        {"run": before_run_id, "phase": phase},
    ).fetchone()
    return str(row[0]) if row else None


def is_phase_done(conn: DuckDBPyConnection, run_id: str) -> bool:
    """True when the run has jobs and every one of them has a terminal status."""
    row = conn.execute(
        f"SELECT count(*), count(*) FILTER (status IN {_TERMINAL_SQL}) FROM jobs WHERE run_id = ?", [run_id]
    ).fetchone()
    return bool(row and row[0] and row[0] == row[1])


def unfinished_jobs(conn: DuckDBPyConnection, run_id: str) -> list[JobSpec]:
    """The planned jobs of a run without a terminal row (for ``--resume``), longest expected first."""
    rows = conn.execute(
        f"""SELECT j.spec, t.name, t.sha, t.body, t.version FROM jobs j
            LEFT JOIN job_templates t ON t.sha = j.template_sha
            WHERE j.run_id = ? AND j.status NOT IN {_TERMINAL_SQL} AND j.spec IS NOT NULL
            ORDER BY j.expected_s DESC NULLS LAST, j.job_key""",
        [run_id],
    ).fetchall()
    specs = []
    for spec, name, sha, body, version in rows:
        data = json.loads(spec)
        if sha is not None:
            data["template"] = {"name": name, "sha": sha, "body": body, "version": version}
        specs.append(JobSpec.from_dict(data))
    return specs


def past_durations(conn: DuckDBPyConnection, hardware: str) -> dict[str, float]:
    """Median duration in seconds of each model's finished jobs on ``hardware``, over every run."""
    rows = conn.execute(
        f"""SELECT model_type, median(duration_s) FROM jobs
            WHERE hardware = ? AND status IN {_TERMINAL_SQL} AND duration_s IS NOT NULL
            GROUP BY model_type""",
        [hardware],
    ).fetchall()
    return {str(m): float(d) for m, d in rows}


def run_progress(conn: DuckDBPyConnection, run_id: str, *, now: float | None = None) -> dict[str, Any]:
    """A run's progress: counts by status and hardware, failures so far, expected seconds left.

    ``expected_s_left`` is the expected work left (past median duration of each unfinished job, else its
    planned estimate, else the run's mean on that hardware; running jobs minus their elapsed time)
    divided by the run's ``params["slots"]`` (1 when absent).

    Raises:
        UnknownRunError: no such run.
    """
    run = get_run(conn, run_id)
    clock = time.time() if now is None else now
    by_status, by_hardware = _counts(conn, run_id)
    total = sum(by_status.values())
    terminal = sum(n for s, n in by_status.items() if s in TERMINAL_STATUSES)
    failures, failures_total = _failures(conn, run_id)
    work_left = _work_left(conn, run_id, clock)
    slots = max(1, int(run["params"].get("slots") or 1))
    started = conn.execute("SELECT min(started_at) FROM jobs WHERE run_id = ?", [run_id]).fetchone()
    return {
        "run_id": run_id,
        "phase": run["phase"],
        "status": run["status"],
        "total": total,
        "terminal": terminal,
        "phase_done": bool(total) and terminal == total,
        "by_status": by_status,
        "by_hardware": by_hardware,
        "failures": failures,
        "failures_total": failures_total,
        "work_s_left": work_left,
        "expected_s_left": work_left / slots,
        "elapsed_s": clock - started[0] if started and started[0] is not None else 0.0,
        "updated_at": clock,
    }


def _counts(conn: DuckDBPyConnection, run_id: str) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    by_status: dict[str, int] = {}
    by_hardware: dict[str, dict[str, int]] = {}
    for hw, status, count in conn.execute(
        "SELECT hardware, status, count(*) FROM jobs WHERE run_id = ? GROUP BY ALL ORDER BY ALL", [run_id]
    ).fetchall():
        by_status[status] = by_status.get(status, 0) + count
        slot = by_hardware.setdefault(hw, {"total": 0})
        slot[status] = count
        slot["total"] += count
    return by_status, by_hardware


def _failures(conn: DuckDBPyConnection, run_id: str) -> tuple[list[dict[str, Any]], int]:
    cols = ("model_type", "hardware", "status", "error_class", "error_type", "error_message", "finished_at")
    rows = conn.execute(
        f"""SELECT {", ".join(cols)}, count(*) OVER () FROM jobs
            WHERE run_id = ? AND status IN {_TERMINAL_SQL} AND status NOT IN ('done', 'skipped')
            ORDER BY finished_at DESC NULLS LAST, model_type LIMIT {FAILURES_SHOWN}""",
        [run_id],
    ).fetchall()
    failures = []
    for row in rows:
        item = dict(zip(cols, row, strict=False))
        message = item["error_message"] or ""
        item["error_message"] = message if len(message) <= 300 else message[:297] + "..."
        failures.append(item)
    return failures, int(rows[0][-1]) if rows else 0


def _work_left(conn: DuckDBPyConnection, run_id: str, now: float) -> float:
    row = conn.execute(
        f"""WITH past AS (
                SELECT model_type, hardware, median(duration_s) AS d FROM jobs
                WHERE status IN {_TERMINAL_SQL} AND duration_s IS NOT NULL GROUP BY ALL),
            here AS (
                SELECT hardware, avg(duration_s) AS d FROM jobs
                WHERE run_id = $run AND duration_s IS NOT NULL GROUP BY ALL)
            SELECT coalesce(sum(greatest(
                coalesce(p.d, nullif(j.expected_s, 0), h.d, 0)
                - CASE WHEN j.status = 'running' AND j.started_at IS NOT NULL
                       THEN $now - j.started_at ELSE 0 END, 0)), 0)
            FROM jobs j LEFT JOIN past p USING (model_type, hardware) LEFT JOIN here h USING (hardware)
            WHERE j.run_id = $run AND j.status NOT IN {_TERMINAL_SQL}""",
        {"run": run_id, "now": now},
    ).fetchone()
    return float(row[0]) if row else 0.0

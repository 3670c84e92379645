"""Reads for planning, status and resume: runs, progress, unfinished jobs, past durations.

Each function runs one or two short queries and returns contracts (JSON columns decoded by
:mod:`accelerate_core.wire`), so a reader never keeps the writer waiting longer than a query.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

from accelerate_core import wire
from accelerate_core.constants import JOB_KIND_DRY, STATUS_DONE, STATUS_LOST, STATUS_RUNNING, TERMINAL_STATUSES
from accelerate_core.contracts import FailureRow, JobSpec, RunParams, RunRecord, StatusSnapshot, TemplateRef
from accelerate_core.errors import ContractError, StoreError, UnknownRunError
from accelerate_core.store.schema import NOT_FAILED_SQL, TERMINAL_SQL

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection

_RUN_COLUMNS = ("run_id", "phase", "created_at", "params", "code_version", "status", "updated_at")
FAILURES_SHOWN = 50
"""How many recent failures :func:`run_progress` lists (the count covers all of them)."""


@dataclass(frozen=True, slots=True)
class RunListing:
    """A run with its job counts, as ``accel runs list`` shows it."""

    run: RunRecord
    jobs: int
    terminal: int
    done: int
    failed: int


def _run_record(row: tuple[Any, ...]) -> RunRecord:
    run_id, phase, created_at, params, code_version, status, updated_at = row[: len(_RUN_COLUMNS)]
    try:
        decoded = wire.decode(RunParams, json.loads(params))
    except (ContractError, ValueError) as e:
        raise StoreError(f"run {run_id!r} has unreadable params ({e}): the store file is damaged") from e
    return RunRecord(str(run_id), str(phase), float(created_at), decoded, str(code_version), str(status),
                     float(updated_at))  # fmt: skip


def list_runs(conn: DuckDBPyConnection) -> list[RunListing]:
    """Every run, newest first, with its job counts (``jobs``, ``terminal``, ``done``, ``failed``)."""
    rows = conn.execute(
        f"""SELECT r.{", r.".join(_RUN_COLUMNS)}, count(j.job_key),
                count(j.job_key) FILTER (j.status IN {TERMINAL_SQL}),
                count(j.job_key) FILTER (j.status = '{STATUS_DONE}'),
                count(j.job_key) FILTER (j.status IN {TERMINAL_SQL} AND j.status NOT IN {NOT_FAILED_SQL})
            FROM runs r LEFT JOIN jobs j USING (run_id)
            GROUP BY ALL ORDER BY r.created_at DESC, r.run_id DESC"""
    ).fetchall()
    n = len(_RUN_COLUMNS)
    return [RunListing(_run_record(row), *(int(c) for c in row[n:])) for row in rows]


def get_run(conn: DuckDBPyConnection, run_id: str) -> RunRecord:
    """One run.

    Raises:
        UnknownRunError: no such run.
    """
    row = conn.execute(f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs WHERE run_id = ?", [run_id]).fetchone()
    if row is None:
        raise UnknownRunError(f"run {run_id!r} is not in the results store: check `accel runs list`")
    return _run_record(row)


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
        f"SELECT count(*), count(*) FILTER (status IN {TERMINAL_SQL}) FROM jobs WHERE run_id = ?", [run_id]
    ).fetchone()
    return bool(row and row[0] and row[0] == row[1])


def job_statuses(conn: DuckDBPyConnection, keys: list[str]) -> dict[str, str]:
    """The current status of each of ``keys`` that has a row (planned or written); absent keys are left out."""
    if not keys:
        return {}
    rows = conn.execute("SELECT job_key, status FROM jobs WHERE job_key IN (SELECT unnest($keys))", {"keys": keys})
    return {str(k): str(s) for k, s in rows.fetchall()}


def is_final(status: str) -> bool:
    """True for a status that is a job's final row: terminal, and not ``lost`` (a late result replaces a ``lost``
    row: the reconciler wrote it only because no result had come)."""
    return status in TERMINAL_STATUSES and status != STATUS_LOST


def final_keys(conn: DuckDBPyConnection, keys: list[str]) -> set[str]:
    """Those of ``keys`` whose job already has its final row (see :func:`is_final`)."""
    return {k for k, status in job_statuses(conn, keys).items() if is_final(status)}


def unfinished_jobs(conn: DuckDBPyConnection, run_id: str) -> list[JobSpec]:
    """The planned jobs of a run without a terminal row (for ``--resume``), longest expected first."""
    rows = conn.execute(
        f"""SELECT j.job_key, j.spec, t.name, t.sha, t.body, t.version FROM jobs j
            LEFT JOIN job_templates t ON t.sha = j.template_sha
            WHERE j.run_id = ? AND j.status NOT IN {TERMINAL_SQL} AND j.spec IS NOT NULL
            ORDER BY j.expected_s DESC NULLS LAST, j.job_key""",
        [run_id],
    ).fetchall()
    specs = []
    for key, spec, name, sha, body, version in rows:
        try:
            decoded = wire.decode(JobSpec, json.loads(spec))
        except (ContractError, ValueError) as e:
            raise StoreError(f"job {key} has an unreadable spec ({e}): the store file is damaged") from e
        template = TemplateRef(name, sha, body, version) if sha is not None else None
        specs.append(replace(decoded, template=template))
    return specs


def past_durations(conn: DuckDBPyConnection, hardware: str) -> dict[str, float]:
    """Median duration in seconds of each model's finished jobs on ``hardware``, over every run."""
    rows = conn.execute(
        f"""SELECT model_type, median(duration_s) FROM jobs
            WHERE hardware = ? AND status IN {TERMINAL_SQL} AND duration_s IS NOT NULL
            GROUP BY model_type""",
        [hardware],
    ).fetchall()
    return {str(m): float(d) for m, d in rows}


def run_progress(conn: DuckDBPyConnection, run_id: str, *, now: float | None = None) -> StatusSnapshot:
    """A run's progress: counts by status and hardware, failures so far, expected seconds left.

    ``expected_s_left`` is the expected work left (past median duration of each unfinished job, else its
    planned estimate, else the run's mean on that hardware; running jobs minus their elapsed time)
    divided by the run's ``params.slots`` (1 when unknown).

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
    slots = max(1, run.params.slots or 1)
    started = conn.execute("SELECT min(started_at) FROM jobs WHERE run_id = ?", [run_id]).fetchone()
    return StatusSnapshot(
        run_id=run_id,
        phase=run.phase,
        status=run.status,
        total=total,
        terminal=terminal,
        phase_done=bool(total) and terminal == total,
        by_status=by_status,
        by_hardware=by_hardware,
        failures=tuple(failures),
        failures_total=failures_total,
        work_s_left=work_left,
        expected_s_left=work_left / slots,
        elapsed_s=clock - started[0] if started and started[0] is not None else 0.0,
        updated_at=clock,
        round_trip_s=_round_trips(conn, run_id),
    )


def _round_trips(conn: DuckDBPyConnection, run_id: str) -> dict[str, float]:
    """Per worker node, its slowest ``dry`` job done: from the run's planning (just before it was sent) to the node
    finishing the job. Per job, not per batch: the writer records a batch of results at one time."""
    rows = conn.execute(
        f"""SELECT j.worker_id, max(j.finished_at - r.created_at) FROM jobs j JOIN runs r ON r.run_id = j.run_id
            WHERE j.run_id = ? AND j.kind = '{JOB_KIND_DRY}' AND j.status = '{STATUS_DONE}'
              AND j.worker_id IS NOT NULL AND j.finished_at IS NOT NULL
            GROUP BY j.worker_id""",
        [run_id],
    ).fetchall()
    return {str(worker): round(float(seconds), 6) for worker, seconds in rows}


_TARGET: Final = "coalesce(hardware || '.' || (spec ->> 'device_model'), hardware)"
"""A job row's target (``JobSpec.target``): its kind, or ``kind.model`` when it targets one device model."""


def _counts(conn: DuckDBPyConnection, run_id: str) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    by_status: dict[str, int] = {}
    by_hardware: dict[str, dict[str, int]] = {}
    for hw, status, count in conn.execute(
        f"SELECT {_TARGET}, status, count(*) FROM jobs WHERE run_id = ? GROUP BY ALL ORDER BY ALL", [run_id]
    ).fetchall():
        by_status[status] = by_status.get(status, 0) + count
        slot = by_hardware.setdefault(hw, {"total": 0})
        slot[status] = count
        slot["total"] += count
    return by_status, by_hardware


def _failures(conn: DuckDBPyConnection, run_id: str) -> tuple[list[FailureRow], int]:
    cols = ("model_type", "hardware", "status", "error_class", "error_type", "error_message", "finished_at")
    rows = conn.execute(
        f"""SELECT {", ".join(cols)}, count(*) OVER () FROM jobs
            WHERE run_id = ? AND status IN {TERMINAL_SQL} AND status NOT IN {NOT_FAILED_SQL}
            ORDER BY finished_at DESC NULLS LAST, model_type LIMIT {FAILURES_SHOWN}""",
        [run_id],
    ).fetchall()
    failures = []
    for model_type, hardware, status, error_class, error_type, message, finished_at, _ in rows:
        text = message or ""
        text = text if len(text) <= 300 else text[:297] + "..."
        failures.append(FailureRow(model_type, hardware, status, error_class, error_type, text, finished_at))
    return failures, int(rows[0][-1]) if rows else 0


def _work_left(conn: DuckDBPyConnection, run_id: str, now: float) -> float:
    row = conn.execute(
        f"""WITH past AS (
                SELECT model_type, hardware, median(duration_s) AS d FROM jobs
                WHERE status IN {TERMINAL_SQL} AND duration_s IS NOT NULL GROUP BY ALL),
            here AS (
                SELECT hardware, avg(duration_s) AS d FROM jobs
                WHERE run_id = $run AND duration_s IS NOT NULL GROUP BY ALL)
            SELECT coalesce(sum(greatest(
                coalesce(p.d, nullif(j.expected_s, 0), h.d, 0)
                - CASE WHEN j.status = '{STATUS_RUNNING}' AND j.started_at IS NOT NULL
                       THEN $now - j.started_at ELSE 0 END, 0)), 0)
            FROM jobs j LEFT JOIN past p USING (model_type, hardware) LEFT JOIN here h USING (hardware)
            WHERE j.run_id = $run AND j.status NOT IN {TERMINAL_SQL}""",
        {"run": run_id, "now": now},
    ).fetchone()
    return float(row[0]) if row else 0.0

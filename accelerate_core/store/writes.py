"""Writes to the results store: batched, idempotent, one transaction per batch.

Jobs are upserted by their deterministic key (``INSERT ... ON CONFLICT DO UPDATE``): recording the
same result twice leaves one row with ``attempts`` raised, never a second row, and replaces that
job's measurements. Callers hold the store's lock; these functions take the bare connection.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from accelerate_core.constants import STATUS_QUEUED, STATUS_RUNNING, TERMINAL_STATUSES
from accelerate_core.errors import ConfigError, StoreError, UnknownRunError
from accelerate_core.store.batch import registered

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection

    from accelerate_core.contracts import JobResult, RunPlan, WorkerInfo

RUN_STATUSES = ("planned", "running", "interrupted", "complete")
"""Every status a run can have; ``planned`` until its executor starts it."""

_TERMINAL_SQL = "(" + ", ".join(f"'{s}'" for s in sorted(TERMINAL_STATUSES)) + ")"


@contextmanager
def transaction(conn: DuckDBPyConnection, what: str) -> Iterator[None]:
    """One transaction: committed on success, rolled back (and raised as StoreError) on failure."""
    import duckdb

    conn.execute("BEGIN TRANSACTION")
    try:
        yield
        conn.execute("COMMIT")
    except duckdb.Error as e:
        conn.execute("ROLLBACK")
        raise StoreError(f"results store could not {what} ({e}): the batch was rolled back, nothing written") from e
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def record_run(conn: DuckDBPyConnection, plan: RunPlan) -> None:
    """Record a run and its planned jobs (status ``queued``); recording it again changes no job status."""
    now = time.time()
    specs = plan.job_specs()
    with transaction(conn, f"record run {plan.run_id}"):
        conn.execute(
            """INSERT INTO runs VALUES (?, ?, ?, ?, ?, 'planned', ?)
               ON CONFLICT (run_id) DO UPDATE SET params = excluded.params,
                   code_version = excluded.code_version, updated_at = excluded.updated_at""",
            [plan.run_id, plan.phase, plan.created_at, _json(plan.params), plan.code_version, now],
        )
        templates = {t.sha: t for t in (s.template_ref() for s in specs) if t is not None}
        if templates:
            cols: dict[str, list[Any]] = {
                "sha": list(templates),
                "name": [t.name for t in templates.values()],
                "version": [t.version for t in templates.values()],
                "body": [t.body for t in templates.values()],
            }
            types = {"sha": "VARCHAR", "name": "VARCHAR", "version": "INTEGER", "body": "VARCHAR"}
            with registered(conn, cols, types) as src:
                conn.execute(f"INSERT INTO job_templates SELECT {src} ON CONFLICT DO NOTHING")
        if specs:
            _insert_planned_jobs(conn, plan, now)


def _insert_planned_jobs(conn: DuckDBPyConnection, plan: RunPlan, now: float) -> None:
    specs = plan.job_specs()
    refs = [s.template_ref() for s in specs]
    cols: dict[str, list[Any]] = {
        "job_key": [s.key for s in specs],
        "run_id": [s.run_id for s in specs],
        "model_type": [s.model_type for s in specs],
        "hardware": [s.hardware for s in specs],
        "kind": [s.kind for s in specs],
        "spec": [_json({**s.to_dict(), "template": None}) for s in specs],
        "expected_s": [s.expected_s for s in specs],
        "template_name": [r.name if r else None for r in refs],
        "template_sha": [r.sha if r else None for r in refs],
    }
    types = {k: "VARCHAR" for k in cols} | {"spec": "JSON", "expected_s": "DOUBLE"}
    with registered(conn, cols, types) as src:
        conn.execute(
            f"""INSERT INTO jobs (job_key, run_id, model_type, hardware, kind, spec, expected_s,
                    template_name, template_sha, status, attempts, queued_at, tests_passed, tests_failed,
                    updated_at)
                SELECT *, '{STATUS_QUEUED}', 0, {now!r}, 0, 0, {now!r} FROM (SELECT {src})
                ON CONFLICT (job_key) DO UPDATE SET spec = excluded.spec, expected_s = excluded.expected_s"""
        )


_RESULT_TYPES = {
    "job_key": "VARCHAR",
    "run_id": "VARCHAR",
    "model_type": "VARCHAR",
    "hardware": "VARCHAR",
    "kind": "VARCHAR",
    "status": "VARCHAR",
    "attempt": "INTEGER",
    "repeats": "INTEGER",
    "worker_id": "VARCHAR",
    "host": "VARCHAR",
    "device_name": "VARCHAR",
    "started_at": "DOUBLE",
    "finished_at": "DOUBLE",
    "duration_s": "DOUBLE",
    "error_class": "VARCHAR",
    "error_type": "VARCHAR",
    "error_message": "VARCHAR",
    "template_name": "VARCHAR",
    "template_sha": "VARCHAR",
    "generated_source": "VARCHAR",
    "tests_passed": "INTEGER",
    "tests_failed": "INTEGER",
    "environment": "JSON",
}
_COPIED = [c for c in _RESULT_TYPES if c not in ("job_key", "attempt", "repeats", "run_id", "model_type")]

# attempts: a first result keeps its own attempt number; a result for a job that is already terminal
# is a repeat (a redelivery) and raises the count; results repeated inside one batch count too.
_UPSERT_RESULTS = f"""
INSERT INTO jobs (job_key, run_id, model_type, {", ".join(_COPIED)}, attempts, updated_at)
SELECT b.job_key, b.run_id, b.model_type, {", ".join("b." + c for c in _COPIED)},
    CASE WHEN j.job_key IS NULL THEN greatest(b.attempt, 1) + b.repeats
         WHEN j.status IN {_TERMINAL_SQL} THEN greatest(j.attempts + 1 + b.repeats, b.attempt)
         ELSE greatest(j.attempts, b.attempt, 1) + b.repeats END,
    $now
FROM (SELECT {{src}}) b LEFT JOIN jobs j ON j.job_key = b.job_key
ON CONFLICT (job_key) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in _COPIED if c not in ("template_name", "template_sha"))},
    template_name = coalesce(excluded.template_name, jobs.template_name),
    template_sha = coalesce(excluded.template_sha, jobs.template_sha),
    attempts = excluded.attempts, updated_at = excluded.updated_at
"""


def record_results(conn: DuckDBPyConnection, results: Sequence[JobResult]) -> int:
    """Upsert a batch of job results and replace their measurements, in one transaction.

    Returns:
        The number of distinct jobs written.
    """
    latest: dict[str, JobResult] = {}
    repeats: dict[str, int] = {}
    for r in results:
        repeats[r.key] = repeats.get(r.key, -1) + 1
        latest[r.key] = r
    if not latest:
        return 0
    jobs = list(latest.values())
    cols = _result_columns(jobs, repeats)
    meas = _measurement_columns(jobs)
    with transaction(conn, f"record {len(jobs)} job results"):
        with registered(conn, cols, _RESULT_TYPES) as src:
            conn.execute(_UPSERT_RESULTS.replace("{src}", src), {"now": time.time()})
        conn.execute("DELETE FROM measurements WHERE job_key IN (SELECT unnest($keys))", {"keys": list(latest)})
        if meas["job_key"]:
            with registered(conn, meas, _MEASUREMENT_TYPES) as src:
                conn.execute(f"INSERT INTO measurements SELECT {src}")
    return len(jobs)


def _result_columns(jobs: Sequence[JobResult], repeats: Mapping[str, int]) -> dict[str, list[Any]]:
    cols: dict[str, list[Any]] = {name: [] for name in _RESULT_TYPES}
    for r in jobs:
        row = {
            "job_key": r.key,
            "run_id": r.run_id,
            "model_type": r.model_type,
            "hardware": r.hardware,
            "kind": r.kind,
            "status": r.status,
            "attempt": r.attempt,
            "repeats": repeats[r.key],
            "worker_id": r.worker_id,
            "host": r.host,
            "device_name": r.device_name,
            "started_at": r.started_at,
            "finished_at": r.finished_at,
            "duration_s": r.duration_s,
            "error_class": r.error_class,
            "error_type": r.error_type,
            "error_message": r.error_message,
            "template_name": r.template_name,
            "template_sha": r.template_sha,
            "generated_source": r.generated_source,
            "tests_passed": r.tests_passed,
            "tests_failed": r.tests_failed,
            "environment": _json(r.environment),
        }
        for name, value in row.items():
            cols[name].append(value)
    return cols


_MEASUREMENT_TYPES = {
    "job_key": "VARCHAR",
    "run_id": "VARCHAR",
    "metric": "VARCHAR",
    "unit": "VARCHAR",
    "batch_size": "INTEGER",
    "seq_len": "INTEGER",
    "samples": "DOUBLE[]",
    "n": "INTEGER",
    "p50": "DOUBLE",
    "p90": "DOUBLE",
    "p99": "DOUBLE",
    "mean": "DOUBLE",
    "stdev": "DOUBLE",
}
_STATS = ("p50", "p90", "p99", "mean", "stdev")


def _measurement_columns(jobs: Sequence[JobResult]) -> dict[str, list[Any]]:
    cols: dict[str, list[Any]] = {name: [] for name in _MEASUREMENT_TYPES}
    for r in jobs:
        for m in r.measurements:
            samples = [float(x) for x in m.get("samples") or ()]
            stats = {k: m.get(k) for k in _STATS}
            if samples and any(v is None for v in stats.values()):
                stats = sample_stats(samples)
            cols["job_key"].append(r.key)
            cols["run_id"].append(r.run_id)
            cols["metric"].append(_required(m, "metric", r.key))
            cols["unit"].append(_required(m, "unit", r.key))
            cols["batch_size"].append(int(m.get("batch_size", 1)))
            cols["seq_len"].append(int(m.get("seq_len", 0)))
            cols["samples"].append(samples)
            cols["n"].append(int(m.get("n") or len(samples)))
            for k in _STATS:
                cols[k].append(_finite(stats[k]))
    return cols


def _required(m: Mapping[str, Any], name: str, key: str) -> Any:
    if not m.get(name):
        raise ConfigError(f"a measurement of job {key} has no {name!r}: every measurement needs metric and unit")
    return m[name]


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def sample_stats(samples: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99/mean/stdev of raw samples (linear-interpolated percentiles; stdev with n-1)."""
    import numpy as np

    a = np.asarray(samples, dtype=np.float64)
    p50, p90, p99 = (float(x) for x in np.percentile(a, [50, 90, 99]))
    stdev = float(a.std(ddof=1)) if len(a) > 1 else 0.0
    return {"p50": p50, "p90": p90, "p99": p99, "mean": float(a.mean()), "stdev": stdev}


def mark_running(conn: DuckDBPyConnection, keys: Sequence[str], worker_id: str, started_at: float) -> int:
    """Mark queued jobs as running on ``worker_id`` (terminal rows are left as they are); return how many."""
    if not keys:
        return 0
    with transaction(conn, "mark jobs running"):
        row = conn.execute(
            f"""UPDATE jobs SET status = '{STATUS_RUNNING}', worker_id = $worker, started_at = $started,
                    attempts = attempts + 1, updated_at = $now
                WHERE job_key IN (SELECT unnest($keys)) AND status NOT IN {_TERMINAL_SQL}
                RETURNING job_key""",
            {"worker": worker_id, "started": started_at, "now": time.time(), "keys": list(keys)},
        ).fetchall()
    return len(row)


def register_worker(conn: DuckDBPyConnection, info: WorkerInfo, *, now: float | None = None) -> None:
    """Record a worker's inventory; a re-registration refreshes it and keeps ``first_seen``."""
    seen = time.time() if now is None else now
    with transaction(conn, f"register worker {info.worker_id}"):
        conn.execute(
            """INSERT INTO workers VALUES ($id, $host, $hw, $idx, $dev, $mem, $driver, $versions, $seen, $seen, 1)
               ON CONFLICT (worker_id) DO UPDATE SET host = excluded.host, hardware = excluded.hardware,
                   device_index = excluded.device_index, device_name = excluded.device_name,
                   memory_mb = excluded.memory_mb, driver = excluded.driver, versions = excluded.versions,
                   last_seen = excluded.last_seen, registrations = workers.registrations + 1""",
            {
                "id": info.worker_id,
                "host": info.host,
                "hw": info.hardware,
                "idx": info.device_index,
                "dev": info.device_name,
                "mem": info.memory_mb,
                "driver": info.driver,
                "versions": _json(info.versions),
                "seen": seen,
            },
        )


def set_run_status(conn: DuckDBPyConnection, run_id: str, status: str) -> None:
    """Set a run's status (``planned``, ``running``, ``interrupted``, ``complete``).

    Raises:
        ConfigError: an unknown status.
        UnknownRunError: no such run.
    """
    if status not in RUN_STATUSES:
        raise ConfigError(f"run status {status!r} is invalid: use one of {', '.join(RUN_STATUSES)}")
    with transaction(conn, f"set run {run_id} status"):
        done = conn.execute(
            "UPDATE runs SET status = ?, updated_at = ? WHERE run_id = ? RETURNING run_id",
            [status, time.time(), run_id],
        ).fetchall()
    if not done:
        raise UnknownRunError(f"run {run_id!r} is not in the results store: check `accel runs list`")


_TIMING_TYPES = {
    "run_id": "VARCHAR",
    "recorded_at": "DOUBLE",
    "host": "VARCHAR",
    "section": "VARCHAR",
    "name": "VARCHAR",
    "n": "INTEGER",
    "median_s": "DOUBLE",
    "mean_s": "DOUBLE",
    "stdev_s": "DOUBLE",
    "min_s": "DOUBLE",
    "max_s": "DOUBLE",
    "samples": "DOUBLE[]",
    "extra": "JSON",
}


def record_import_timings(
    conn: DuckDBPyConnection,
    rows: Sequence[Mapping[str, Any]],
    *,
    run_id: str | None = None,
    host: str | None = None,
    recorded_at: float | None = None,
) -> int:
    """Record self-benchmark rows (module load times and the like); return how many.

    Each row needs ``name`` (e.g. a module) and either raw ``samples`` (seconds) or ``median_s``;
    optional: ``section`` (default ``"module-loading"``), ``n``, ``mean_s``, ``stdev_s``, ``min_s``,
    ``max_s``, ``run_id``, ``host``; any other key is kept in ``extra``.
    """
    when = time.time() if recorded_at is None else recorded_at
    cols: dict[str, list[Any]] = {name: [] for name in _TIMING_TYPES}
    for row in rows:
        for name, value in _timing_row(row, run_id=run_id, host=host, when=when).items():
            cols[name].append(value)
    if not cols["name"]:
        return 0
    with transaction(conn, "record import timings"), registered(conn, cols, _TIMING_TYPES) as src:
        conn.execute(f"INSERT INTO import_timings SELECT {src}")
    return len(cols["name"])


def _timing_row(row: Mapping[str, Any], *, run_id: str | None, host: str | None, when: float) -> dict[str, Any]:
    if not row.get("name"):
        raise ConfigError(f"import timing row {dict(row)!r} has no 'name': give the module or operation measured")
    samples = [float(x) for x in row.get("samples") or ()]
    if not samples and row.get("median_s") is None:
        raise ConfigError(f"import timing row {row['name']!r} has neither samples nor median_s")
    stats: dict[str, Any] = {}
    if samples:
        s = sample_stats(samples)
        stats = {"median_s": s["p50"], "mean_s": s["mean"], "stdev_s": s["stdev"]}
        stats |= {"min_s": min(samples), "max_s": max(samples)}
    known = set(_TIMING_TYPES)
    return {
        "run_id": row.get("run_id", run_id),
        "recorded_at": when,
        "host": row.get("host", host),
        "section": row.get("section", "module-loading"),
        "name": str(row["name"]),
        "n": int(row.get("n") or len(samples) or 1),
        **{k: _finite(row.get(k, stats.get(k))) for k in ("median_s", "mean_s", "stdev_s", "min_s", "max_s")},
        "samples": samples,
        "extra": _json({k: v for k, v in row.items() if k not in known}),
    }

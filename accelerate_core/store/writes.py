"""Writes to the results store: batched, idempotent, one transaction per batch.

Jobs are upserted by their deterministic key (``INSERT ... ON CONFLICT DO UPDATE``): recording the
same result twice leaves one row with ``attempts`` raised, never a second row. The first terminal
result of a job is the one kept (its row and measurements); a later one only raises ``attempts``.
Callers hold the store's lock; these functions take the bare connection.

JSON columns (``runs.params``, ``jobs.spec``, ``jobs.environment``, ``workers.versions``) are written
through :mod:`accelerate_core.wire`, the one encoder of the contracts.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from accelerate_core import wire
from accelerate_core.bench.stats import sample_stats
from accelerate_core.constants import RUN_PLANNED, RUN_STATUSES, STATUS_QUEUED, STATUS_RUNNING
from accelerate_core.database import transaction
from accelerate_core.errors import ConfigError, UnknownRunError
from accelerate_core.store.batch import execute_over
from accelerate_core.store.reads import is_final, job_statuses
from accelerate_core.store.schema import TERMINAL_SQL

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection

    from accelerate_core.contracts import JobResult, RunParams, RunPlan, WorkerInfo


_encode = json.JSONEncoder(sort_keys=True, default=str).encode
"""``json.dumps(value, sort_keys=True, default=str)`` without building an encoder per call (a batch encodes one
environment per job)."""


def _json(value: Any) -> str:
    return _encode(value)


def record_run(conn: DuckDBPyConnection, plan: RunPlan) -> None:
    """Record a run and its planned jobs (status ``queued``); recording it again changes nothing recorded.

    The run's params change only through :func:`update_run_params`.
    """
    now = time.time()
    with transaction(conn, f"record run {plan.run_id}"):
        conn.execute(
            f"INSERT INTO runs VALUES (?, ?, ?, ?, ?, '{RUN_PLANNED}', ?) ON CONFLICT (run_id) DO NOTHING",
            [plan.run_id, plan.phase, plan.created_at, _json(wire.encode(plan.params)), plan.code_version, now],
        )
        templates = {t.sha: t for t in plan.templates()}
        if templates:
            cols: dict[str, list[Any]] = {
                "sha": list(templates),
                "name": [t.name for t in templates.values()],
                "version": [t.version for t in templates.values()],
                "body": [t.body for t in templates.values()],
            }
            types = {"sha": "VARCHAR", "name": "VARCHAR", "version": "INTEGER", "body": "VARCHAR"}
            execute_over(conn, "INSERT INTO job_templates SELECT {src} ON CONFLICT DO NOTHING", cols, types)
        if plan.jobs:
            _insert_planned_jobs(conn, plan, now)


def _insert_planned_jobs(conn: DuckDBPyConnection, plan: RunPlan, now: float) -> None:
    specs = plan.jobs
    cols: dict[str, list[Any]] = {
        "job_key": [s.key for s in specs],
        "run_id": [s.run_id for s in specs],
        "model_type": [s.model_type for s in specs],
        "hardware": [s.hardware for s in specs],
        "kind": [s.kind for s in specs],
        # The template lives once in job_templates (by sha), not in every job's spec.
        "spec": [_json(wire.encode(replace(s, template=None))) for s in specs],
        "expected_s": [s.expected_s for s in specs],
        "template_name": [s.template.name if s.template else None for s in specs],
        "template_sha": [s.template.sha if s.template else None for s in specs],
    }
    types = {k: "VARCHAR" for k in cols} | {"spec": "JSON", "expected_s": "DOUBLE"}
    execute_over(
        conn,
        f"""INSERT INTO jobs (job_key, run_id, model_type, hardware, kind, spec, expected_s,
                template_name, template_sha, status, attempts, queued_at, tests_passed, tests_failed,
                updated_at)
            SELECT *, '{STATUS_QUEUED}', 0, {now!r}, 0, 0, {now!r} FROM (SELECT {{src}})
            ON CONFLICT (job_key) DO UPDATE SET spec = excluded.spec, expected_s = excluded.expected_s""",
        cols,
        types,
    )


def update_run_params(conn: DuckDBPyConnection, run_id: str, params: RunParams) -> None:
    """Replace a recorded run's params (its executor's figures: slots, makespan).

    Raises:
        UnknownRunError: no such run.
    """
    with transaction(conn, f"update run {run_id} params"):
        done = conn.execute(
            "UPDATE runs SET params = ?, updated_at = ? WHERE run_id = ? RETURNING run_id",
            [_json(wire.encode(params)), time.time(), run_id],
        ).fetchall()
    if not done:
        raise UnknownRunError(f"run {run_id!r} is not in the results store: check `accel runs list`")


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

# A job's row before its result is its planned one (record_run), so results UPDATE rows that exist and INSERT
# only the others. DuckDB plans INSERT ... ON CONFLICT DO UPDATE as a MERGE over a join with the whole table, which
# cost twice the UPDATE it replaced, and a statement that writes nothing still costs its planning: so each runs only
# when the lookup found rows for it.
# attempts: a first result keeps its own attempt number; a result for a job that is already terminal
# is a repeat (a redelivery) and raises the count; results repeated inside one batch count too.
_UPDATE_RESULTS = f"""
UPDATE jobs SET
    {", ".join(f"{c} = b.{c}" for c in _COPIED if c not in ("template_name", "template_sha"))},
    template_name = coalesce(b.template_name, jobs.template_name),
    template_sha = coalesce(b.template_sha, jobs.template_sha),
    attempts = CASE WHEN jobs.status IN {TERMINAL_SQL} THEN greatest(jobs.attempts + 1 + b.repeats, b.attempt)
                    ELSE greatest(jobs.attempts, b.attempt, 1) + b.repeats END,
    updated_at = $now
FROM (SELECT {{src}}) b WHERE jobs.job_key = b.job_key
"""
_INSERT_RESULTS = f"""
INSERT INTO jobs (job_key, run_id, model_type, {", ".join(_COPIED)}, attempts, updated_at)
SELECT job_key, run_id, model_type, {", ".join(_COPIED)}, greatest(attempt, 1) + repeats, $now FROM (SELECT {{src}})
"""

_UNWRITTEN = frozenset({STATUS_QUEUED, STATUS_RUNNING})
"""Statuses of a row no result has written (planned, or marked running): it has no measurements to replace.

Measurements are written here only, together with their job's row, and a result's status is always terminal
(``JobResult`` refuses others), so a row still queued or running has none; the DELETE, which scans the whole
(growing) measurements table, runs only for rows a result wrote: the ``lost`` ones a late result replaces."""


def record_results(conn: DuckDBPyConnection, results: Sequence[JobResult]) -> int:
    """Upsert a batch of job results and their measurements, in one transaction; the first terminal result wins.

    A job that already has its final row (see :func:`~accelerate_core.store.reads.is_final`) keeps it
    and its measurements: a late duplicate (a redelivered job) only raises its ``attempts``. Inside one
    batch, too, the first result of a job is the one written.

    So a job recorded ``cancelled`` stays cancelled (its run was cancelled and reported).

    Returns:
        The number of distinct jobs whose row was written (late duplicates not counted).
    """
    first: dict[str, JobResult] = {}
    repeats: dict[str, int] = {}
    for r in results:
        repeats[r.key] = repeats.get(r.key, -1) + 1
        first.setdefault(r.key, r)
    if not first:
        return 0
    with transaction(conn, f"record {len(first)} job results"):
        found = job_statuses(conn, list(first))
        late = [k for k, status in found.items() if is_final(status)]
        jobs = [r for k, r in first.items() if k not in found or not is_final(found[k])]
        if late:
            _count_duplicates(conn, {k: repeats[k] + 1 for k in late})
        if jobs:
            _write_results(conn, jobs, repeats, found)
    return len(jobs)


def _count_duplicates(conn: DuckDBPyConnection, counts: Mapping[str, int]) -> None:
    """Raise the ``attempts`` of jobs whose final row stays (each by its number of late results)."""
    conn.execute(
        """UPDATE jobs SET attempts = attempts + d.n, updated_at = $now
           FROM (SELECT unnest($keys) AS k, unnest($ns) AS n) d WHERE jobs.job_key = d.k""",
        {"keys": list(counts), "ns": list(counts.values()), "now": time.time()},
    )


def _write_results(
    conn: DuckDBPyConnection, jobs: Sequence[JobResult], repeats: Mapping[str, int], found: Mapping[str, str]
) -> None:
    """Write the rows of ``jobs`` (none final) and replace their measurements; ``found``: the statuses of rows
    that exist. Every batch column is built before anything is written, so a malformed result writes nothing."""
    known = [r for r in jobs if r.key in found]
    new = [r for r in jobs if r.key not in found]
    try:
        batches = [
            (sql, _result_columns(rows, repeats))
            for sql, rows in ((_UPDATE_RESULTS, known), (_INSERT_RESULTS, new))
            if rows
        ]
        meas = _measurement_columns(jobs)
    except (TypeError, ValueError, AttributeError) as e:
        raise ConfigError(f"a job result in the batch is malformed ({e}): nothing was written") from e
    now = time.time()
    for sql, cols in batches:
        execute_over(conn, sql, cols, _RESULT_TYPES, {"now": now})
    written = [r.key for r in known if found[r.key] not in _UNWRITTEN]
    if written:
        conn.execute("DELETE FROM measurements WHERE job_key IN (SELECT unnest($keys))", {"keys": written})
    if meas["job_key"]:
        insert = _INSERT_MEASURED if _stats_complete(meas) else _INSERT_MEASUREMENTS
        execute_over(conn, insert, meas, _MEASUREMENT_TYPES)


_ATTRS = {"job_key": "key", "attempt": "attempt"}
"""Batch columns named differently from their JobResult attribute."""


def _result_columns(jobs: Sequence[JobResult], repeats: Mapping[str, int]) -> dict[str, list[Any]]:
    cols: dict[str, list[Any]] = {}
    for name in _RESULT_TYPES:
        if name == "repeats":
            cols[name] = [repeats[r.key] for r in jobs]
        elif name == "environment":
            cols[name] = list(map(_encode, map(dict, map(attrgetter("environment"), jobs))))
        else:
            cols[name] = list(map(attrgetter(_ATTRS.get(name, name)), jobs))
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

# Statistics a measurement arrives without are computed from its raw samples here, in DuckDB, in bulk
# (linear-interpolated percentiles like numpy's default; sample standard deviation, 0 for one sample).
_INSERT_MEASUREMENTS = """
INSERT INTO measurements
SELECT job_key, run_id, metric, unit, batch_size, seq_len, samples, n,
    coalesce(p50, q[1]), coalesce(p90, q[2]), coalesce(p99, q[3]), coalesce(mean, list_avg(samples)),
    coalesce(stdev, CASE WHEN len(samples) > 0 THEN coalesce(list_stddev_samp(samples), 0) END)
FROM (
    SELECT *, CASE WHEN (p50 IS NULL OR p90 IS NULL OR p99 IS NULL) AND len(samples) > 0
                   THEN list_aggregate(samples, 'quantile_cont', [0.5, 0.9, 0.99]) END AS q
    FROM (SELECT {src})
)
"""

_INSERT_MEASURED = "INSERT INTO measurements SELECT {src}"
"""The insert of measurements that all arrived with their statistics (the runner's do): a third cheaper than
:data:`_INSERT_MEASUREMENTS`, whose expressions would keep every one of them as it is."""


def _stats_complete(cols: Mapping[str, Sequence[Any]]) -> bool:
    """True when every statistic of the batch is a finite number (none is ``None``, NaN or infinite: those are
    stored as ``NULL`` and computed from the samples)."""
    try:
        return all(math.isfinite(sum(cols[s])) for s in _STATS)  # a None raises TypeError
    except (TypeError, ValueError, OverflowError):
        return False


def _measurement_columns(jobs: Sequence[JobResult]) -> dict[str, list[Any]]:
    # Column by column through attrgetter (in C) rather than a tuple per row: the raw samples stay the
    # tuples they arrived as, and the Arrow batch flattens them in one pass.
    ms = [m for r in jobs for m in r.measurements]
    counts = [len(r.measurements) for r in jobs]
    cols: dict[str, list[Any]] = {
        "job_key": list(_repeat((r.key for r in jobs), counts)),
        "run_id": list(_repeat((r.run_id for r in jobs), counts)),
    }
    for name in ("metric", "unit", "samples", "p50", "p90", "p99", "mean", "stdev"):
        cols[name] = list(map(attrgetter(name), ms))
    cols["batch_size"] = [int(m.batch_size) for m in ms]
    cols["seq_len"] = [int(m.seq_len) for m in ms]
    cols["n"] = [m.n or len(m.samples) for m in ms]
    if not (all(cols["metric"]) and all(cols["unit"])):
        i = next(i for i, m in enumerate(ms) if not m.metric or not m.unit)
        raise ConfigError(
            f"a measurement of job {cols['job_key'][i]} has no metric or unit: every measurement needs both"
        )
    return {name: cols[name] for name in _MEASUREMENT_TYPES}


def _repeat(values: Iterable[str], counts: Sequence[int]) -> Iterator[str]:
    """Each of ``values`` as many times as its count."""
    return itertools.chain.from_iterable(map(itertools.repeat, values, counts))


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def mark_running(conn: DuckDBPyConnection, keys: Sequence[str], worker_id: str, started_at: float) -> int:
    """Mark queued jobs as running on ``worker_id`` (terminal rows are left as they are); return how many."""
    if not keys:
        return 0
    with transaction(conn, "mark jobs running"):
        row = conn.execute(
            f"""UPDATE jobs SET status = '{STATUS_RUNNING}', worker_id = $worker, started_at = $started,
                    attempts = attempts + 1, updated_at = $now
                WHERE job_key IN (SELECT unnest($keys)) AND status NOT IN {TERMINAL_SQL}
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
                "versions": _json(dict(info.versions)),
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
    with transaction(conn, "record import timings"):
        execute_over(conn, "INSERT INTO import_timings SELECT {src}", cols, _TIMING_TYPES)
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

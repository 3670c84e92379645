"""The results store's schema: tables, their migrations and the schema-version table.

Every change to the schema is a new entry of :data:`MIGRATIONS` (never an edit of an old one): a
store written by an older version is brought up to date when it is opened read-write, inside one
transaction, and ``schema_version`` records each step. A store written by a *newer* version is refused
rather than misread.

Times are unix seconds (``DOUBLE``), as in :mod:`accelerate_core.contracts`; JSON columns hold contracts
encoded by ``accelerate_core.wire``. There is no surrogate id anywhere: jobs are keyed by their deterministic job key
(``contracts.job_key``), so a redelivered result updates its row instead of adding one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from accelerate_core.constants import STATUS_DONE, STATUS_SKIPPED, TERMINAL_STATUSES
from accelerate_core.database import transaction
from accelerate_core.errors import StoreError

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection

log = logging.getLogger(__name__)

TERMINAL_SQL = "(" + ", ".join(f"'{s}'" for s in sorted(TERMINAL_STATUSES)) + ")"
"""The terminal job statuses as an SQL list, for ``status IN ...``."""

NOT_FAILED_SQL = f"('{STATUS_DONE}', '{STATUS_SKIPPED}')"
"""The terminal statuses that are not failures, as an SQL list."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: its version number, a one-line description, its statements and a data rewrite."""

    version: int
    description: str
    statements: tuple[str, ...]
    transform: Callable[[DuckDBPyConnection], None] | None = None


_V1 = (
    """CREATE TABLE runs (
        run_id VARCHAR PRIMARY KEY,
        phase VARCHAR NOT NULL,
        created_at DOUBLE NOT NULL,
        params JSON NOT NULL,
        code_version VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        updated_at DOUBLE NOT NULL
    )""",
    """CREATE TABLE job_templates (
        sha VARCHAR PRIMARY KEY,
        name VARCHAR NOT NULL,
        version INTEGER NOT NULL,
        body VARCHAR NOT NULL
    )""",
    """CREATE TABLE jobs (
        job_key VARCHAR PRIMARY KEY,
        run_id VARCHAR NOT NULL,
        model_type VARCHAR NOT NULL,
        hardware VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        attempts INTEGER NOT NULL,
        spec JSON,
        expected_s DOUBLE,
        worker_id VARCHAR,
        host VARCHAR,
        device_name VARCHAR,
        queued_at DOUBLE,
        started_at DOUBLE,
        finished_at DOUBLE,
        duration_s DOUBLE,
        error_class VARCHAR,
        error_type VARCHAR,
        error_message VARCHAR,
        template_name VARCHAR,
        template_sha VARCHAR,
        generated_source VARCHAR,
        tests_passed INTEGER,
        tests_failed INTEGER,
        environment JSON,
        updated_at DOUBLE NOT NULL
    )""",
    """CREATE TABLE measurements (
        job_key VARCHAR NOT NULL,
        run_id VARCHAR NOT NULL,
        metric VARCHAR NOT NULL,
        unit VARCHAR NOT NULL,
        batch_size INTEGER NOT NULL,
        seq_len INTEGER NOT NULL,
        samples DOUBLE[],
        n INTEGER NOT NULL,
        p50 DOUBLE,
        p90 DOUBLE,
        p99 DOUBLE,
        mean DOUBLE,
        stdev DOUBLE
    )""",
    """CREATE TABLE workers (
        worker_id VARCHAR PRIMARY KEY,
        host VARCHAR NOT NULL,
        hardware VARCHAR NOT NULL,
        device_index INTEGER,
        device_name VARCHAR,
        memory_mb BIGINT,
        driver VARCHAR,
        versions JSON,
        first_seen DOUBLE NOT NULL,
        last_seen DOUBLE NOT NULL,
        registrations INTEGER NOT NULL
    )""",
    """CREATE TABLE import_timings (
        run_id VARCHAR,
        recorded_at DOUBLE NOT NULL,
        host VARCHAR,
        section VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        n INTEGER NOT NULL,
        median_s DOUBLE,
        mean_s DOUBLE,
        stdev_s DOUBLE,
        min_s DOUBLE,
        max_s DOUBLE,
        samples DOUBLE[],
        extra JSON
    )""",
)


def _versioned_json(conn: DuckDBPyConnection) -> None:
    from accelerate_core.store.legacy import upgrade_json_columns

    upgrade_json_columns(conn)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "runs, jobs, measurements, workers, import_timings, job_templates", _V1),
    Migration(2, "runs.params and jobs.spec in the versioned wire format", (), _versioned_json),
)
"""Every schema step, in order. Append; never edit a released step."""

SCHEMA_VERSION: int = MIGRATIONS[-1].version
"""The schema version this code reads and writes."""

_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    description VARCHAR NOT NULL,
    applied_at DOUBLE NOT NULL
)"""


def current_version(conn: DuckDBPyConnection) -> int:
    """Return the schema version recorded in the file (0 for a new, empty file)."""
    # fetchall, not fetchone: a result left unread keeps its transaction open on a cursor kept for long (the
    # service's), and an open transaction pins every later commit's undo memory and blocks checkpoints.
    rows = conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'").fetchall()
    if not rows or not rows[0][0]:
        return 0
    got = conn.execute("SELECT max(version) FROM schema_version").fetchall()
    return int(got[0][0]) if got and got[0][0] is not None else 0


def migrate(conn: DuckDBPyConnection, *, path: str) -> int:
    """Bring the store up to :data:`SCHEMA_VERSION`, in one transaction; return the version reached.

    Raises:
        StoreError: the file was written by a newer version of accelerate-fleet.
    """
    found = current_version(conn)
    check_readable(found, path=path)
    if found == SCHEMA_VERSION:
        return found
    with transaction(conn, f"migrate results store {path} to schema version {SCHEMA_VERSION}"):
        conn.execute(_VERSION_TABLE)
        for step in MIGRATIONS:
            if step.version <= found:
                continue
            for statement in step.statements:
                conn.execute(statement)
            if step.transform is not None:
                step.transform(conn)
            conn.execute("INSERT INTO schema_version VALUES (?, ?, ?)", [step.version, step.description, time.time()])
            log.info("results store %s migrated to schema version %d", path, step.version)
    return SCHEMA_VERSION


def check_readable(found: int, *, path: str) -> None:
    """Raise StoreError when a file's schema version is newer than this code knows."""
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"results store {path} has schema version {found}, newer than this accelerate-fleet "
            f"({SCHEMA_VERSION}): upgrade accelerate-fleet to read it"
        )

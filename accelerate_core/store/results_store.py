"""``ResultsStore``: the one object through which the fleet reads and writes its DuckDB results file.

Open it read-write in exactly one process (the writer: the local executor or the fleet's results
writer); everyone else opens it read-only when nobody writes, or reads the status snapshot the writer
refreshes after each batch. A store object serialises its own calls with a lock, so the threads of one
executor can share it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from accelerate_core import database
from accelerate_core.errors import StoreError
from accelerate_core.store import export, reads, schema, snapshot, writes

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection

    from accelerate_core.contracts import JobResult, JobSpec, RunParams, RunPlan, RunRecord, StatusSnapshot, WorkerInfo
    from accelerate_core.store.reads import RunListing

log = logging.getLogger(__name__)
T = TypeVar("T")

RESULTS_DB = database.Database(
    label="results store",
    setting="results_db",
    first_step="run `accel run` first",
    when_locked="wait for it to finish, or read its status snapshot (accel status)",
)
"""How the results file is opened and named in errors (:mod:`accelerate_core.database`)."""


class ResultsStore:
    """The results DuckDB file: runs, jobs, measurements, workers and self-benchmark timings."""

    def __init__(self, conn: DuckDBPyConnection, path: str, *, read_only: bool) -> None:
        """Wrap an open connection; use :meth:`open` or :meth:`memory` instead."""
        self._conn: DuckDBPyConnection | None = conn
        self._lock = threading.RLock()
        self.path = path
        self.read_only = read_only

    @classmethod
    def open(cls, path: Path | str, *, read_only: bool = False) -> ResultsStore:
        """Open (and, read-write, create or migrate) the store at ``path``.

        A file of an older schema opened read-only is migrated first (read-write, for a moment): nobody
        else can hold it read-write while it is open read-only here.

        Raises:
            StoreLockedError: another process, or this one, already holds the file read-write.
            StoreError: the file is missing (read-only), unreadable, or of a newer schema.
        """
        conn = RESULTS_DB.connect(path, read_only=read_only)
        store = cls(conn, str(path), read_only=read_only)
        try:
            if read_only:
                found = schema.current_version(conn)
                schema.check_readable(found, path=str(path))
                if 0 < found < schema.SCHEMA_VERSION:
                    store.close()
                    cls.open(path).close()
                    return cls.open(path, read_only=True)
            else:
                schema.migrate(conn, path=str(path))
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def memory(cls) -> ResultsStore:
        """A fresh in-memory store (for tests and dry runs): same schema, nothing on disk."""
        return cls.open(database.MEMORY)

    def close(self) -> None:
        """Close the store (idempotent); a writer's file becomes free for the next opener."""
        with self._lock:
            if self._conn is not None:
                database.release(self.path, self._conn, read_only=self.read_only)
                self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "ro" if self.read_only else "rw"
        return f"ResultsStore({self.path!r}, {mode}, {'closed' if self._conn is None else 'open'})"

    def _read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self._lock:
            if self._conn is None:
                raise StoreError(f"results store {self.path} is closed: open it again")
            with RESULTS_DB.translated(self.path):
                return fn(self._conn, *args, **kwargs)

    def _write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self.read_only:
            raise StoreError(f"results store {self.path} is open read-only: open it read-write to record results")
        return self._read(fn, *args, **kwargs)

    # -- writes -------------------------------------------------------------------------------------

    def record_run(self, plan: RunPlan) -> None:
        """Record a run and its planned jobs (``queued``); idempotent."""
        self._write(writes.record_run, plan)

    def update_run_params(self, run_id: str, params: RunParams) -> None:
        """Replace a recorded run's params (its executor's figures: slots, makespan)."""
        self._write(writes.update_run_params, run_id, params)

    def record_results(self, results: Sequence[JobResult]) -> int:
        """Upsert a batch of results by job key in one transaction; return the number of jobs written."""
        return self._write(writes.record_results, results)

    def mark_running(self, keys: Sequence[str], worker_id: str, started_at: float) -> int:
        """Mark queued jobs as running; return how many were marked."""
        return self._write(writes.mark_running, keys, worker_id, started_at)

    def register_worker(self, info: WorkerInfo) -> None:
        """Record (or refresh) a worker's inventory."""
        self._write(writes.register_worker, info)

    def set_run_status(self, run_id: str, status: str) -> None:
        """Set a run's status: ``planned``, ``running``, ``interrupted`` or ``complete``."""
        self._write(writes.set_run_status, run_id, status)

    def record_import_timings(
        self, rows: Sequence[Mapping[str, Any]], *, run_id: str | None = None, host: str | None = None
    ) -> int:
        """Record self-benchmark rows (see :func:`accelerate_core.store.writes.record_import_timings`)."""
        return self._write(writes.record_import_timings, rows, run_id=run_id, host=host)

    def write_status_snapshot(self, run_id: str, directory: Path) -> Path:
        """Write the run's progress atomically as JSON in ``directory``; return the file."""
        return snapshot.write_snapshot(self.run_progress(run_id), directory)

    # -- reads --------------------------------------------------------------------------------------

    def schema_version(self) -> int:
        """The schema version of the open file."""
        return self._read(schema.current_version)

    def list_runs(self) -> list[RunListing]:
        """Every run, newest first, with job counts."""
        return self._read(reads.list_runs)

    def get_run(self, run_id: str) -> RunRecord:
        """One run (raises UnknownRunError)."""
        return self._read(reads.get_run, run_id)

    def latest_run(self) -> str | None:
        """The newest run's id, if any."""
        return self._read(reads.latest_run)

    def run_progress(self, run_id: str, *, now: float | None = None) -> StatusSnapshot:
        """Counts by status and hardware, failures so far and expected seconds left."""
        return self._read(reads.run_progress, run_id, now=now)

    def unfinished_jobs(self, run_id: str) -> list[JobSpec]:
        """The run's jobs without a terminal row, as specs to run again."""
        return self._read(reads.unfinished_jobs, run_id)

    def past_durations(self, hardware: str) -> dict[str, float]:
        """Median past duration (s) of each model type on ``hardware``."""
        return self._read(reads.past_durations, hardware)

    def previous_run(self, phase: str, before_run_id: str) -> str | None:
        """The latest run of ``phase`` before ``before_run_id``."""
        return self._read(reads.previous_run, phase, before_run_id)

    def final_keys(self, keys: Sequence[str]) -> set[str]:
        """Those of ``keys`` whose job has its final row already (a later result is a late duplicate)."""
        return self._read(reads.final_keys, list(keys))

    def is_phase_done(self, run_id: str) -> bool:
        """True when every planned job of the run has a terminal row."""
        return self._read(reads.is_phase_done, run_id)

    def export_run(self, run_id: str, out_dir: Path, fmt: str) -> dict[str, Path]:
        """Export the run to ``parquet`` or ``csv`` files in ``out_dir``; return them by table."""
        self.get_run(run_id)
        return self._read(export.export_run, run_id, Path(out_dir), fmt)

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a read query and return its rows (the report's reader; not for writes)."""
        return self._read(lambda conn: conn.execute(sql, params).fetchall())

"""The service's seam to the store: an open DuckDB connection, and read-only views on cursors of it.

The service never opens the store for writing. Its host hands it a :class:`ReadSource`:

- the writer (the one process holding the file read-write) wraps its own connection, so reads see each
  batch as soon as it commits: ``ReadSource(conn, path)``;
- ``accel serve`` opens a local file read-only: ``ReadSource.open(path)`` (in a process that already
  holds the file read-write, that is a cursor of the writer's connection).

Every request reads through :func:`read_view`: a fresh cursor (DuckDB runs cursors of one database
concurrently, each in its own transaction), a transaction begun before the first query, so the
request's queries all see one snapshot, and always rolled back at the end, so nothing a request ran
could ever be committed, even on the writer's read-write connection. That, and handlers that only call
read functions (GET is the only method served), make the service read-only by construction;
over a file opened read-only DuckDB refuses any write outright.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from accelerate_core.errors import StoreError
from accelerate_core.store import ResultsStore, schema
from accelerate_core.store.results_store import RESULTS_DB

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection


class ReadSource:
    """An open connection to the results store, handing out one cursor per request.

    Args:
        conn: an open DuckDB connection of the store (the writer's own, or one opened read-only).
        path: the store's path (it names the store in errors; reports find the catalog next to it).
        owned: close ``conn`` in :meth:`close` (True when this object opened it).
    """

    def __init__(self, conn: DuckDBPyConnection, path: str, *, owned: bool = False) -> None:
        self._conn: DuckDBPyConnection | None = conn
        self._owned = owned
        self._lock = threading.Lock()
        self.path = path

    @classmethod
    def open(cls, path: Path | str) -> ReadSource:
        """Open the store at ``path`` read-only (a cursor of this process's writer when it holds the file).

        Raises:
            StoreLockedError: another process holds the file read-write.
            StoreError: the file is missing, unreadable or of a newer schema.
        """
        conn = RESULTS_DB.connect(path, read_only=True)
        try:
            schema.check_readable(schema.current_version(conn), path=str(path))
        except BaseException:
            conn.close()
            raise
        return cls(conn, str(path), owned=True)

    def cursor(self) -> DuckDBPyConnection:
        """A new cursor of the connection, for one thread's use.

        Raises:
            StoreError: the source is closed.
        """
        with self._lock:  # DuckDB's cursor() registers the child on its parent: not safe to race
            if self._conn is None:
                raise StoreError(f"results store {self.path} is closed: the service is stopping")
            return self._conn.cursor()

    def close(self) -> None:
        """Stop handing out cursors; close the connection when this object opened it (idempotent)."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None and self._owned:
            conn.close()


@dataclass(frozen=True, slots=True)
class ReadView:
    """One request's reading handle: the cursor (for the browse queries) and a read-only store on it."""

    conn: DuckDBPyConnection
    store: ResultsStore


@contextmanager
def read_view(source: ReadSource) -> Iterator[ReadView]:
    """A read-only view on a fresh cursor, inside a transaction that is rolled back on exit."""
    import duckdb

    cursor = source.cursor()
    store = ResultsStore(cursor, source.path, read_only=True)
    try:
        cursor.execute("BEGIN TRANSACTION")
        yield ReadView(cursor, store)
    finally:
        # A connection closed under the request has nothing left to roll back.
        with contextlib.suppress(duckdb.Error):
            cursor.execute("ROLLBACK")
        store.close()

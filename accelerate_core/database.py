"""DuckDB files under the one-writer rule: opening, transactions, and DuckDB's errors translated to ours.

Both stores (the results store and the templates store) open their files here, so a locked file, a
missing one or a failed commit reads the same everywhere and never escapes as a duckdb exception.

- DuckDB lets one process hold a file read-write; a second process (writer or reader) gets an
  ``IOException`` naming the holder's PID. That becomes :class:`StoreLockedError`, naming the file and
  the holder ("held read-write by process N (exe)").
- Inside one process DuckDB would happily hand out a second read-write connection, so this module keeps
  a registry of the files this process has open read-write and refuses a second writer too; a reader
  in the writer's own process gets a cursor of the writer's connection (DuckDB refuses a second
  connection to the same file with another configuration).
- :func:`transaction` commits or rolls back and always raises :class:`StoreError` on a DuckDB failure,
  including a failed ``COMMIT`` (after which DuckDB has already rolled back by itself): a failed commit
  or an I/O error is a :class:`StoreWriteError` (a full disk: trying again later can succeed).

Importing this module does not import duckdb.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from accelerate_core.errors import StoreError, StoreLockedError, StoreMissingError, StoreWriteError

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection

__all__ = ["MEMORY", "Database", "transaction"]

MEMORY = ":memory:"
"""The path of an in-memory database (tests, fakes): nothing is written to disk."""

RELEASE_FREED_MEMORY: Final = "SET allocator_background_threads = true"
"""Run with every file connection: DuckDB's allocator keeps what a query freed (up to its 128 MiB flush threshold)
for the next one unless its background threads hand it back. Without them one report build of a 10,000-job run
left a long-lived writer ~60-90 MiB bigger (freed to DuckDB, not to the system); with them about flat, though the
soak (``tests/faults/test_soak.py``) still sees the writer grow more than 10% now and then."""

_HOLDER = re.compile(r"Conflicting lock is held in (?P<exe>.*?) \(PID (?P<pid>\d+)\)")
_open_writers: dict[str, DuckDBPyConnection] = {}
_registry_lock = threading.Lock()


def canonical(path: Path | str) -> str:
    """The key of a database file: its resolved absolute path (or ``:memory:``)."""
    return MEMORY if str(path) == MEMORY else str(Path(path).expanduser().resolve())


def holder_of(message: str) -> tuple[int | None, str | None]:
    """Parse DuckDB's lock message; return the holder's (pid, executable) when it names them."""
    found = _HOLDER.search(message)
    if not found:
        return None, None
    return int(found.group("pid")), found.group("exe")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


DUCKDB_INTERRUPTED = "Query interrupted"
"""What DuckDB's Python client raises (as a RuntimeError) when SIGINT arrives during a query."""


@dataclass(frozen=True, slots=True)
class Database:
    """One kind of DuckDB file (the results store, the templates DB) and the words its errors use.

    Args:
        label: what the file is, as errors name it (``"results store"``).
        setting: the setting that names the file (``"results_db"``), for "check ..." hints.
        first_step: what creates the file, for a read-only open of a missing one.
        when_locked: what to do while another process holds the file.
    """

    label: str
    setting: str
    first_step: str
    when_locked: str

    def connect(self, path: Path | str, *, read_only: bool, wait_s: float = 0.0) -> DuckDBPyConnection:
        """Open ``path`` (or ``:memory:``); read-write, register it as this process's writer of the file.

        Args:
            path: the file (its folder is created for a read-write open).
            read_only: open read-only (the file must exist).
            wait_s: how long to keep retrying while another process holds the file.

        Raises:
            StoreLockedError: another process (past ``wait_s``), or this one, holds the file read-write.
            StoreError: the file is missing (read-only) or cannot be opened.
        """
        deadline = time.monotonic() + wait_s
        pause = 0.02
        while True:
            try:
                return self._connect_once(path, read_only=read_only)
            except StoreLockedError:
                if time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.25)

    def _connect_once(self, path: Path | str, *, read_only: bool) -> DuckDBPyConnection:
        import duckdb

        key = canonical(path)
        if key == MEMORY:
            return duckdb.connect(MEMORY)
        with _registry_lock:
            if key in _open_writers:
                if read_only:
                    return _open_writers[key].cursor()
                raise StoreLockedError(
                    f"{self.label} {key} is already open read-write in this process (PID {os.getpid()}): "
                    "use that store object instead of opening a second writer"
                )
            conn = self._connect_file(key, read_only=read_only)
            if not read_only:
                _open_writers[key] = conn
            return conn

    def _connect_file(self, key: str, *, read_only: bool) -> DuckDBPyConnection:
        import duckdb

        if read_only and not Path(key).is_file():
            raise StoreMissingError(f"{self.label} {key} does not exist: {self.first_step} or check {self.setting}")
        if not read_only:
            try:
                Path(key).parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(
                    f"cannot create the folder of {self.label} {key} ({e.strerror}): check {self.setting}"
                ) from e
        try:
            conn = duckdb.connect(key, read_only=read_only)
            conn.execute(RELEASE_FREED_MEMORY)
            return conn
        except duckdb.IOException as e:
            if "lock" in str(e).lower():
                raise self.locked_error(key, str(e)) from e
            raise StoreError(
                f"{self.label} {key} cannot be opened ({_first_line(e)}): check the path and its permissions"
            ) from e
        except duckdb.Error as e:
            raise StoreError(f"{self.label} {key} cannot be opened ({_first_line(e)}): is it a DuckDB file?") from e

    def locked_error(self, path: str, message: str) -> StoreLockedError:
        """The one-line StoreLockedError for a file another process holds (named from DuckDB's ``message``)."""
        pid, exe = holder_of(message)
        who = f"process {pid} ({exe})" if pid is not None else "another process"
        return StoreLockedError(
            f"{self.label} {path} is held read-write by {who}: only one writer may open it; {self.when_locked}"
        )

    def error(self, path: Path | str, e: BaseException) -> StoreError:
        """A DuckDB failure while using ``path``, as a one-line StoreError."""
        return StoreError(f"{self.label} {path} failed: {_first_line(e)}")

    @contextlib.contextmanager
    def translated(self, path: Path | str) -> Iterator[None]:
        """Turn any DuckDB error raised inside the block into :meth:`error` (``from`` it); Ctrl-C stays Ctrl-C."""
        import duckdb

        try:
            with ctrl_c_kept():
                yield
        except duckdb.Error as e:
            raise self.error(path, e) from e


@contextlib.contextmanager
def ctrl_c_kept() -> Iterator[None]:
    """Raise KeyboardInterrupt again where DuckDB turned Ctrl-C into an error of its own.

    DuckDB's client swallows a KeyboardInterrupt that arrives during a query and raises its own interruption
    (a bare ``RuntimeError: Query interrupted`` in 2.0, ``InterruptException`` elsewhere), so without this a
    command interrupted mid-query would leave with that error's traceback instead of as on any other Ctrl-C.
    """
    import duckdb

    try:
        yield
    except duckdb.InterruptException as e:
        raise KeyboardInterrupt from e
    except RuntimeError as e:
        if str(e) == DUCKDB_INTERRUPTED:
            raise KeyboardInterrupt from e
        raise


def release(path: Path | str, conn: DuckDBPyConnection, *, read_only: bool) -> None:
    """Close ``conn``; when it is this process's writer of ``path``, forget it."""
    key = canonical(path)
    with _registry_lock:
        if not read_only and _open_writers.get(key) is conn:
            del _open_writers[key]
    conn.close()


@contextlib.contextmanager
def transaction(conn: DuckDBPyConnection, what: str) -> Iterator[None]:
    """One transaction: committed when the block ends, rolled back when it raises.

    Args:
        conn: the connection.
        what: what the transaction does, for the error ("record run r1").

    Raises:
        StoreError: DuckDB failed inside the block or at ``COMMIT``; nothing of the block was written.
    """
    import duckdb

    try:
        conn.execute("BEGIN TRANSACTION")
    except duckdb.Error as e:
        raise StoreError(f"could not {what}: no transaction could begin ({_first_line(e)})") from e
    try:
        yield
    except duckdb.IOException as e:
        _rollback(conn)
        raise StoreWriteError(f"could not {what} ({_first_line(e)}): rolled back, nothing was written") from e
    except duckdb.Error as e:
        _rollback(conn)
        raise StoreError(f"could not {what} ({_first_line(e)}): rolled back, nothing was written") from e
    except BaseException:
        _rollback(conn)
        raise
    try:
        conn.execute("COMMIT")
    except duckdb.Error as e:
        _rollback(conn)
        reason = _first_line(e)
        raise StoreWriteError(
            f"could not {what}: the commit failed ({reason}), rolled back, nothing was written; "
            "is the disk under the results DB full?"
        ) from e


def _rollback(conn: DuckDBPyConnection) -> None:
    """Roll back what is left, quietly: the error that led here is the one to raise.

    After a failed COMMIT DuckDB has rolled back already, and a ROLLBACK then fails ("no transaction
    is active"); that failure must not replace the StoreError.
    """
    import duckdb

    with contextlib.suppress(duckdb.Error):
        conn.execute("ROLLBACK")

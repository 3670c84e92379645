"""Opening a DuckDB file under the one-writer rule, with DuckDB's errors translated to ours.

DuckDB lets one process hold a file read-write; a second process (writer or reader) gets an
``IOException`` naming the holder's PID. That becomes :class:`StoreLockedError` here, naming the file
and the holder. Inside one process DuckDB would happily hand out a second read-write connection, so
this module keeps a registry of the files this process has open read-write and refuses a second
opener too: two writers in one process would break the batching and the one-transaction-per-batch
rule just as surely as two processes.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from accelerate_core.errors import StoreError, StoreLockedError

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection

MEMORY = ":memory:"
"""The path of an in-memory store (tests, fakes): nothing is written to disk."""

_HOLDER = re.compile(r"Conflicting lock is held in (?P<exe>.*?) \(PID (?P<pid>\d+)\)")
_open_writers: dict[str, DuckDBPyConnection] = {}
_registry_lock = threading.Lock()


def _canonical(path: Path | str) -> str:
    return MEMORY if str(path) == MEMORY else str(Path(path).expanduser().resolve())


def holder_of(message: str) -> tuple[int | None, str | None]:
    """Parse DuckDB's lock message; return the holder's (pid, executable) when it names them."""
    found = _HOLDER.search(message)
    if not found:
        return None, None
    return int(found.group("pid")), found.group("exe")


def locked_error(path: str, message: str) -> StoreLockedError:
    """Build the one-line StoreLockedError for a file another process holds."""
    pid, exe = holder_of(message)
    who = f"process {pid} ({exe})" if pid is not None else "another process"
    return StoreLockedError(
        f"results store {path} is held read-write by {who}: only one writer may open it; "
        "wait for it to finish, or read its status snapshot (accel status)"
    )


def connect(path: Path | str, *, read_only: bool) -> DuckDBPyConnection:
    """Open ``path`` (or ``:memory:``) and register it as this process's writer when read-write.

    Raises:
        StoreLockedError: another process (or this one) already holds the file read-write.
        StoreError: the file is missing (read-only) or cannot be opened.
    """
    import duckdb

    key = _canonical(path)
    if key == MEMORY:
        return duckdb.connect(MEMORY)
    with _registry_lock:
        if key in _open_writers:
            if read_only:
                # A reader in the writer's own process shares its database through a cursor.
                return _open_writers[key].cursor()
            raise StoreLockedError(
                f"results store {key} is already open read-write in this process (PID {os.getpid()}): "
                "use that store object instead of opening a second writer"
            )
        conn = _connect_file(key, read_only=read_only)
        if not read_only:
            _open_writers[key] = conn
        return conn


def _connect_file(key: str, *, read_only: bool) -> DuckDBPyConnection:
    import duckdb as ddb

    if read_only and not Path(key).is_file():
        raise StoreError(f"results store {key} does not exist: run `accel run` first or check results_db")
    if not read_only:
        try:
            Path(key).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the folder of results store {key} ({e.strerror}): check results_db") from e
    try:
        return ddb.connect(key, read_only=read_only)
    except ddb.IOException as e:
        if "lock" in str(e).lower():
            raise locked_error(key, str(e)) from e
        raise StoreError(f"results store {key} cannot be opened ({e}): check the path and its permissions") from e
    except ddb.Error as e:
        raise StoreError(f"results store {key} cannot be opened ({e}): is it a DuckDB file?") from e


def release(path: Path | str, conn: DuckDBPyConnection, *, read_only: bool) -> None:
    """Close ``conn``; when it is this process's writer of ``path``, forget it."""
    key = _canonical(path)
    with _registry_lock:
        if not read_only and _open_writers.get(key) is conn:
            del _open_writers[key]
    conn.close()

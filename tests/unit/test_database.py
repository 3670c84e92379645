"""The one DuckDB layer of both stores (accelerate_core.database), on real DuckDB files."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from accelerate_core.database import DUCKDB_INTERRUPTED, Database, ctrl_c_kept, holder_of, release, transaction
from accelerate_core.errors import StoreError, StoreLockedError

DB = Database(label="test DB", setting="test_db", first_step="create it", when_locked="wait for it")


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    path = tmp_path / "sub" / "t.duckdb"
    conn = DB.connect(path, read_only=False)
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    yield conn
    release(path, conn, read_only=False)


def _keys(conn: duckdb.DuckDBPyConnection) -> list[int]:
    return [k for (k,) in conn.execute("SELECT k FROM t ORDER BY k").fetchall()]


def test_a_failed_commit_is_a_store_error_and_the_connection_stays_usable(writer: duckdb.DuckDBPyConnection) -> None:
    # Given a transaction whose key another connection commits first (DuckDB only finds out at COMMIT)
    other = writer.cursor()
    with pytest.raises(StoreError) as info, transaction(writer, "insert key 1"):
        writer.execute("INSERT INTO t VALUES (1)")
        other.execute("INSERT INTO t VALUES (1)")  # auto-committed before ours
    # Then the failed commit is one StoreError from DuckDB's own error, never a raw duckdb exception
    message = str(info.value)
    assert message.startswith("could not insert key 1: the commit failed (") and "nothing was written" in message
    assert isinstance(info.value.__cause__, duckdb.TransactionException) and "\n" not in message
    # And the connection takes the next transaction
    with transaction(writer, "insert key 2"):
        writer.execute("INSERT INTO t VALUES (2)")
    assert _keys(writer) == [1, 2]


def test_a_duckdb_error_inside_rolls_back_everything(writer: duckdb.DuckDBPyConnection) -> None:
    rolled_back = r"^could not insert two keys \(.*\): rolled back, nothing was written$"
    with pytest.raises(StoreError, match=rolled_back), transaction(writer, "insert two keys"):
        writer.execute("INSERT INTO t VALUES (5)")
        writer.execute("INSERT INTO t VALUES ('five')")
    assert _keys(writer) == []


def test_another_error_inside_rolls_back_and_passes_through(writer: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(KeyError), transaction(writer, "insert a key"):
        writer.execute("INSERT INTO t VALUES (7)")
        raise KeyError("not a store problem")
    assert _keys(writer) == []


def test_a_transaction_that_cannot_begin_is_a_store_error(writer: duckdb.DuckDBPyConnection) -> None:
    with (
        transaction(writer, "outer"),
        pytest.raises(StoreError, match="no transaction could begin"),
        transaction(writer, "inner"),
    ):
        pass


def test_one_writer_per_file_in_this_process_and_readers_share_it(tmp_path: Path) -> None:
    path = tmp_path / "t.duckdb"
    conn = DB.connect(path, read_only=False)
    try:
        conn.execute("CREATE TABLE t AS SELECT 3 AS k")
        with pytest.raises(StoreLockedError, match=r"^test DB .* is already open read-write in this process"):
            DB.connect(tmp_path / "." / "t.duckdb", read_only=False)
        reader = DB.connect(path, read_only=True)
        assert _keys(reader) == [3]
        release(path, reader, read_only=True)
    finally:
        release(path, conn, read_only=False)
    again = DB.connect(path, read_only=False)  # free once released
    release(path, again, read_only=False)


def test_wait_s_waits_for_the_writer_to_go(tmp_path: Path) -> None:
    # Given a writer that lets go of the file after a moment
    path = tmp_path / "t.duckdb"
    conn = DB.connect(path, read_only=False)
    threading.Timer(0.3, release, args=(path, conn), kwargs={"read_only": False}).start()
    # When a second writer waits for it; Then it gets the file
    second = DB.connect(path, read_only=False, wait_s=10.0)
    release(path, second, read_only=False)


def test_missing_and_broken_files_are_one_line_store_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"^test DB .*none\.duckdb does not exist: create it or check test_db$"):
        DB.connect(tmp_path / "none.duckdb", read_only=True)
    junk = tmp_path / "junk.duckdb"
    junk.write_text("not a database")
    with pytest.raises(StoreError, match="cannot be opened") as info:
        DB.connect(junk, read_only=False)
    assert "\n" not in str(info.value) and not isinstance(info.value, StoreLockedError)
    release(junk, duckdb.connect(), read_only=False)  # nothing was registered for it


def test_the_lock_message_names_the_holder() -> None:
    duckdb_says = (
        'IO Error: Could not set lock on file "/x.duckdb": Conflicting lock is held in /usr/bin/python3 (PID 42)'
    )
    assert holder_of(duckdb_says) == (42, "/usr/bin/python3")
    error = DB.locked_error("/x.duckdb", duckdb_says)
    assert str(error) == (
        "test DB /x.duckdb is held read-write by process 42 (/usr/bin/python3): only one writer may open it; "
        "wait for it"
    )
    assert "another process" in str(DB.locked_error("/x.duckdb", "lock"))


def test_translated_turns_duckdb_errors_into_store_errors(writer: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(StoreError, match=r"^test DB here failed: Catalog Error") as info, DB.translated("here"):
        writer.execute("SELECT * FROM no_such_table")
    assert isinstance(info.value.__cause__, duckdb.CatalogException)


@pytest.mark.parametrize(
    "duckdb_says",
    [RuntimeError(DUCKDB_INTERRUPTED), duckdb.InterruptException("INTERRUPT Error: Interrupted!")],
    ids=["sigint-during-query", "conn-interrupt"],
)
def test_ctrl_c_that_duckdb_turned_into_its_error_is_ctrl_c_again(duckdb_says: Exception) -> None:
    # DuckDB 2.0 answers SIGINT mid-query with RuntimeError('Query interrupted') (accel status --watch left with
    # its traceback on Ctrl-C); both a store's translated block and a bare ctrl_c_kept give KeyboardInterrupt
    for block in (DB.translated("here"), ctrl_c_kept()):
        with pytest.raises(KeyboardInterrupt) as info, block:
            raise duckdb_says
        assert info.value.__cause__ is duckdb_says


def test_ctrl_c_really_arriving_during_a_query_is_ctrl_c(writer: duckdb.DuckDBPyConnection) -> None:
    # A real interruption of a running query (conn.interrupt, what DuckDB does on SIGINT) through translated
    timer = threading.Timer(0.3, writer.interrupt)
    timer.start()
    with pytest.raises(KeyboardInterrupt), DB.translated("here"):
        writer.execute("SELECT count(*) FROM range(1000000000000) a").fetchall()
    timer.join()


def test_other_runtime_errors_pass_through_unchanged() -> None:
    with pytest.raises(RuntimeError, match=r"^not an interruption$"), DB.translated("here"):
        raise RuntimeError("not an interruption")

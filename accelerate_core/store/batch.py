"""The fast bulk path into DuckDB: a column-wise batch scanned as an Arrow table.

``executemany`` costs DuckDB one statement per row (a few thousand rows/s here); one ``INSERT ... SELECT``
over a relation moves the whole batch at once. An Arrow table is that relation: DuckDB scans it zero-copy,
column by column, where a dict of numpy object arrays makes it convert every Python value (every raw
sample) itself. pyarrow converts the raw sample lists in C into one flat float64 buffer plus offsets.

Every column has its SQL type in the ``SELECT`` (its Arrow type already, or an explicit cast), so a column
that happens to be all ``NULL`` in one batch still lands with the right type. Non-finite floats are stored
as ``NULL`` (a NaN inside a sample list too; an infinite sample stays infinite). A batch holding a value
Arrow will not take as its column's type (a string among the samples, say) goes through the numpy relation
instead, where DuckDB's own cast accepts it or refuses the batch, as it always did.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection

_names = itertools.count()


def _numpy_column(values: Sequence[Any], sql_type: str) -> Any:
    """The column as a numpy array DuckDB converts value by value (the path for odd values)."""
    import numpy as np

    if sql_type == "DOUBLE[]":
        out = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):
            out[i] = None if v is None else v if isinstance(v, list) else list(v)
        return out
    if sql_type == "DOUBLE":
        return _finite_floats(values)
    if sql_type in ("INTEGER", "BIGINT") and None not in values:
        return np.asarray(values, dtype=np.int64)
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def _finite_floats(values: Sequence[Any]) -> Any:
    """float64 with None, NaN and +-inf all as NaN (which both scans read as NULL)."""
    import numpy as np

    floats = np.array(values, dtype=np.float64)
    floats[~np.isfinite(floats)] = np.nan
    return floats


def _arrow_column(values: Sequence[Any], sql_type: str) -> Any:
    """The column as an Arrow array of its type; raises (ValueError, TypeError) for a value it cannot take."""
    import numpy as np
    import pyarrow as pa

    if sql_type == "DOUBLE[]":
        return _arrow_lists(values)
    if sql_type == "DOUBLE":
        floats = _finite_floats(values)
        return pa.array(floats, mask=np.isnan(floats))
    if sql_type == "INTEGER":
        return pa.array(values, type=pa.int32())
    if sql_type == "BIGINT":
        return pa.array(values, type=pa.int64())
    return pa.array(values, type=pa.string())


def _arrow_lists(values: Sequence[Any]) -> Any:
    """Lists of floats as one flat float64 buffer plus offsets, converted by pyarrow in C (a ``None`` list is a NULL
    list); a NaN sample becomes NULL, in a second pass only when the batch has one."""
    import pyarrow as pa
    import pyarrow.compute as pc

    lists = pa.array(values, type=pa.list_(pa.float64()))
    nan = pc.is_nan(lists.values)
    if not pc.any(nan).as_py():
        return lists
    samples = pc.if_else(nan, pa.scalar(None, pa.float64()), lists.values)
    return pa.ListArray.from_arrays(lists.offsets, samples, mask=lists.is_null())


def arrow_relation(columns: Mapping[str, Sequence[Any]], types: Mapping[str, str]) -> Any:
    """An Arrow table of ``columns`` (name -> values) of SQL ``types``; raises ValueError or TypeError (pyarrow's
    ArrowInvalid and ArrowTypeError are among them) for a value that does not fit its column's type."""
    import pyarrow as pa

    return pa.table({col: _arrow_column(values, types[col]) for col, values in columns.items()})


def numpy_relation(columns: Mapping[str, Sequence[Any]], types: Mapping[str, str]) -> dict[str, Any]:
    """``columns`` as numpy arrays, for DuckDB to convert (and cast) value by value."""
    return {col: _numpy_column(values, types[col]) for col, values in columns.items()}


class ArrowStream:
    """An Arrow table offered to DuckDB only as an Arrow C stream (the PyCapsule interface).

    DuckDB scans a registered pyarrow Table through a ``pyarrow.dataset`` scanner it builds in Python for every
    scan, about 1 ms a statement here; from a C stream it reads the buffers with no Python in between. Each
    scan asks for a new stream, so the relation can be read any number of times.
    """

    __slots__ = ("table",)

    def __init__(self, table: Any) -> None:
        """Wrap a pyarrow Table."""
        self.table = table

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        """A new stream over the table (the Arrow PyCapsule interface)."""
        return self.table.__arrow_c_stream__(requested_schema)


_EXACT = frozenset({"VARCHAR", "DOUBLE", "DOUBLE[]", "INTEGER", "BIGINT"})
"""SQL types an Arrow column of :func:`arrow_relation` already has exactly (string, float64, list of float64, int32,
int64): no CAST to bind and run for them (about a tenth of the writer's two statements over a batch, measured)."""


def _relation(columns: Mapping[str, Sequence[Any]], types: Mapping[str, str]) -> Any:
    try:
        return ArrowStream(arrow_relation(columns, types))
    except (ValueError, TypeError, OverflowError):
        return numpy_relation(columns, types)


_SCANNED = "_accel_batch"
"""The batch's name in a statement of :func:`execute_over`: a local variable there, which DuckDB's replacement scan
finds in the frame that runs the statement. Registering it instead costs two catalog writes (a view created, then
dropped): about 1 ms a statement, as much as the statement itself at a small batch (measured)."""


def execute_over(
    conn: DuckDBPyConnection,
    sql: str,
    columns: Mapping[str, Sequence[Any]],
    types: Mapping[str, str],
    params: object = None,
) -> list[tuple[Any, ...]]:
    """Run ``sql`` over ``columns`` (name -> values, equal lengths) of SQL ``types``; return its rows (all fetched).

    Each ``{src}`` in ``sql`` becomes ``"c1, CAST(c2 AS T2) AS c2, ... FROM <batch>"``, to follow ``SELECT``: a column
    the Arrow table already holds as its SQL type is named bare, every other one is cast.
    """
    relation = _relation(columns, types)
    if not isinstance(relation, ArrowStream):
        return _execute_registered(conn, sql, columns, types, relation, params)
    _accel_batch = relation  # read by DuckDB's replacement scan, by this name, from this frame
    return conn.execute(sql.replace("{src}", _select(columns, types, _EXACT, _SCANNED)), params).fetchall()


def _execute_registered(
    conn: DuckDBPyConnection,
    sql: str,
    columns: Mapping[str, Sequence[Any]],
    types: Mapping[str, str],
    relation: Any,
    params: object,
) -> list[tuple[Any, ...]]:
    """The numpy relation's way (DuckDB's replacement scan does not read a dict of arrays): register, run, drop."""
    name = f"{_SCANNED}_{next(_names)}"
    conn.register(name, relation)
    try:
        return conn.execute(sql.replace("{src}", _select(columns, types, frozenset(), name)), params).fetchall()
    finally:
        conn.unregister(name)


def _select(columns: Mapping[str, Sequence[Any]], types: Mapping[str, str], exact: frozenset[str], name: str) -> str:
    casts = ", ".join(col if types[col] in exact else f"CAST({col} AS {types[col]}) AS {col}" for col in columns)
    return f"{casts} FROM {name}"

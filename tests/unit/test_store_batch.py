"""The store's bulk path: an Arrow batch lands in DuckDB exactly as the numpy relation it replaced did."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accelerate_core.store import batch

TYPES = {"key": "VARCHAR", "n": "INTEGER", "x": "DOUBLE", "samples": "DOUBLE[]", "env": "JSON"}

floats = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**31), 2**31))
sample = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**53), 2**53))
samples = st.one_of(st.none(), st.lists(sample, max_size=6).map(tuple), st.lists(sample, max_size=6))
rows = st.lists(
    st.tuples(
        st.text(max_size=8),
        st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
        floats,
        samples,
        st.sampled_from(['{"a": 1}', "[]", "null", None]),
    ),
    max_size=12,
)


@pytest.fixture(scope="module")
def conn() -> Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect()
    yield c
    c.close()


def _columns(data: Sequence[tuple[Any, ...]]) -> dict[str, list[Any]]:
    return {name: [row[i] for row in data] for i, name in enumerate(TYPES)}


def _stored(conn: duckdb.DuckDBPyConnection, relation: Any, columns: Mapping[str, Sequence[Any]]) -> list[Any]:
    conn.register("t", relation)
    try:
        casts = ", ".join(f"CAST({col} AS {TYPES[col]}) AS {col}" for col in columns)
        return conn.execute(f"SELECT {casts} FROM t").fetchall()
    finally:
        conn.unregister("t")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@settings(max_examples=30, deadline=None)
@given(rows)
def test_arrow_table_stream_and_numpy_relations_store_the_same_values(
    conn: duckdb.DuckDBPyConnection, data: list[Any]
) -> None:
    columns = _columns(data)
    arrow = batch.arrow_relation(columns, TYPES)
    numpy = batch.numpy_relation(columns, TYPES)
    assert _same(_stored(conn, arrow, columns), _stored(conn, numpy, columns))
    assert _same(_stored(conn, batch.ArrowStream(arrow), columns), _stored(conn, numpy, columns))


def test_nan_samples_are_null_and_infinite_ones_stay(conn: duckdb.DuckDBPyConnection) -> None:
    columns = _columns([("k", 1, math.inf, (1.0, math.nan, -math.inf), None), ("j", None, None, None, "[]")])
    (first, second) = _stored(conn, batch._relation(columns, TYPES), columns)
    assert first == ("k", 1, None, [1.0, None, -math.inf], None)
    assert second == ("j", None, None, None, "[]")


def test_a_value_arrow_will_not_take_goes_through_duckdbs_own_cast(conn: duckdb.DuckDBPyConnection) -> None:
    # A numeric string among the samples is read as its number, as DuckDB's cast reads it
    columns = _columns([("k", 1, 2.0, ("1.5", 2), None)])
    assert _stored(conn, batch._relation(columns, TYPES), columns) == [("k", 1, 2.0, [1.5, 2.0], None)]
    # Any other string is DuckDB's to refuse: the batch falls back to the numpy relation, and the cast fails
    columns = _columns([("k", 1, 2.0, ("not a number",), None)])
    relation = batch._relation(columns, TYPES)
    assert isinstance(relation, dict)
    with pytest.raises(duckdb.ConversionException):
        _stored(conn, relation, columns)


@pytest.mark.parametrize(
    "data", [[("k", 1, 2.0, (1.0,), "[]")], [(None, None, None, None, None)], [("k", 1, 2.0, ("1.5",), "[]")]]
)
def test_a_registered_batch_selects_every_column_as_its_sql_type(
    conn: duckdb.DuckDBPyConnection, data: list[Any]
) -> None:
    # Given a batch (one with every value NULL too), When it is selected through execute_over()
    described = batch.execute_over(conn, "DESCRIBE SELECT {src}", _columns(data), TYPES)
    # Then each column has its SQL type, cast or (an Arrow column already of that type) bare
    assert [(row[0], row[1]) for row in described] == list(TYPES.items())

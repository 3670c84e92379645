"""Export of one run to Parquet or CSV files with DuckDB's ``COPY`` (no pandas, no pyarrow)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from accelerate_core.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection

EXPORT_FORMATS = ("parquet", "csv")
"""Formats :func:`export_run` writes."""

_QUERIES = {
    "runs": "SELECT * FROM runs WHERE run_id = $run",
    "jobs": "SELECT * FROM jobs WHERE run_id = $run ORDER BY model_type, hardware, kind",
    "measurements": """SELECT j.model_type, j.hardware, m.* FROM measurements m JOIN jobs j USING (job_key)
                       WHERE m.run_id = $run ORDER BY j.model_type, j.hardware, m.metric, m.batch_size, m.seq_len""",
    "workers": """SELECT * FROM workers WHERE worker_id IN (SELECT worker_id FROM jobs WHERE run_id = $run)
                  ORDER BY worker_id""",
}


EXPORT_TABLES = tuple(_QUERIES)
"""The tables of a run's export, one file each."""


def export_run(conn: DuckDBPyConnection, run_id: str, out_dir: Path, fmt: str) -> dict[str, Path]:
    """Write the run's runs/jobs/measurements/workers rows as ``<table>.<fmt>`` files in ``out_dir``.

    CSV has no list type, so raw samples go out as a JSON array text there; Parquet keeps them a list.

    Raises:
        ConfigError: an unknown format.
        StoreError: a file cannot be written.
    """
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"export format {fmt!r} is invalid: use one of {', '.join(EXPORT_FORMATS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    return {table: export_table(conn, run_id, table, out_dir / f"{table}.{fmt}", fmt) for table in EXPORT_TABLES}


def export_table(conn: DuckDBPyConnection, run_id: str, table: str, target: Path, fmt: str) -> Path:
    """Write one table of the run's export (:data:`EXPORT_TABLES`) to ``target`` as ``fmt``; return ``target``.

    Raises:
        ConfigError: an unknown table or format.
        StoreError: the file cannot be written.
    """
    import duckdb

    if table not in _QUERIES or fmt not in EXPORT_FORMATS:
        raise ConfigError(f"cannot export {table!r} as {fmt!r}: tables {', '.join(EXPORT_TABLES)}, formats "
                          f"{', '.join(EXPORT_FORMATS)}")  # fmt: skip
    query = _QUERIES[table]
    if fmt == "csv" and table == "measurements":
        query = query.replace("m.*", "m.* REPLACE (to_json(m.samples)::VARCHAR AS samples)")
    options = "(FORMAT parquet, COMPRESSION zstd)" if fmt == "parquet" else "(FORMAT csv, HEADER true)"
    literal = str(target).replace("'", "''")
    try:
        conn.execute(f"COPY ({query}) TO '{literal}' {options}", {"run": run_id})
    except duckdb.Error as e:
        raise StoreError(f"cannot export {table} of run {run_id} to {target} ({e}): check the folder") from e
    return target

"""Export of one run to Parquet or CSV files with DuckDB's ``COPY`` (no pandas, no pyarrow), or as
optimum-benchmark reports (:mod:`accelerate_core.store.optimum`): one bundle table, unpacked into job folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from accelerate_core.errors import ConfigError, StoreError
from accelerate_core.store.optimum import optimum_reports, write_reports

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection

EXPORT_FORMATS = ("parquet", "csv", "optimum")
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
"""The tables of a run's Parquet or CSV export, one file each."""

OPTIMUM_TABLE = "benchmark_reports"
"""The one table of an ``optimum`` export: ``{relative path: report}`` as JSON, unpacked by :func:`save_table`."""


def export_tables(fmt: str) -> tuple[str, ...]:
    """The tables an export as ``fmt`` is made of (what the results service serves one by one)."""
    return (OPTIMUM_TABLE,) if fmt == "optimum" else EXPORT_TABLES


def save_table(table: str, fmt: str, content: bytes, out_dir: Path) -> dict[str, Path]:
    """Write one exported table's bytes into ``out_dir``: its file, or for ``optimum`` the job folders' reports.

    Raises:
        StoreError: a file cannot be written or an optimum bundle is not a JSON object.
    """
    if fmt == "optimum":
        try:
            reports = json.loads(content)
        except ValueError as e:
            raise StoreError(f"the optimum export of the run is not JSON ({e})") from e
        if not isinstance(reports, dict):
            raise StoreError("the optimum export of the run is not a JSON object of reports")
        return write_reports(reports, out_dir)
    target = out_dir / f"{table}.{fmt}"
    try:
        target.write_bytes(content)
    except OSError as e:
        raise StoreError(f"cannot write {target} ({e}): check the folder") from e
    return {table: target}


def export_run(conn: DuckDBPyConnection, run_id: str, out_dir: Path, fmt: str) -> dict[str, Path]:
    """Write the run's runs/jobs/measurements/workers rows as ``<table>.<fmt>`` files in ``out_dir``.

    CSV has no list type, so raw samples go out as a JSON array text there; Parquet keeps them a list.
    ``optimum`` writes ``<model>/<hardware>/<dtype>/b<batch>-s<seq>/benchmark_report.json`` files instead.

    Raises:
        ConfigError: an unknown format.
        StoreError: a file cannot be written.
    """
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"export format {fmt!r} is invalid: use one of {', '.join(EXPORT_FORMATS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "optimum":
        return write_reports(optimum_reports(conn, run_id), out_dir)
    return {table: export_table(conn, run_id, table, out_dir / f"{table}.{fmt}", fmt) for table in EXPORT_TABLES}


def export_table(conn: DuckDBPyConnection, run_id: str, table: str, target: Path, fmt: str) -> Path:
    """Write one table of the run's export (:data:`EXPORT_TABLES`) to ``target`` as ``fmt``; return ``target``.

    Raises:
        ConfigError: an unknown table or format.
        StoreError: the file cannot be written.
    """
    import duckdb

    if fmt not in EXPORT_FORMATS or table not in export_tables(fmt):
        raise ConfigError(f"cannot export {table!r} as {fmt!r}: tables {', '.join(EXPORT_TABLES)} as parquet or csv, "
                          f"{OPTIMUM_TABLE} as optimum")  # fmt: skip
    if fmt == "optimum":
        try:
            target.write_text(json.dumps(optimum_reports(conn, run_id)))
        except OSError as e:
            raise StoreError(f"cannot export the optimum reports of run {run_id} to {target} ({e})") from e
        return target
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

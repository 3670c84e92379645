"""The results store: one DuckDB file, one writer, idempotent batched ingest, reads, snapshots, export.

Importing this package does not import duckdb; the first :meth:`ResultsStore.open` does.
"""

from __future__ import annotations

from accelerate_core.store.export import EXPORT_FORMATS
from accelerate_core.store.reads import RunListing
from accelerate_core.store.results_store import ResultsStore
from accelerate_core.store.schema import SCHEMA_VERSION
from accelerate_core.store.snapshot import read_status_snapshot, snapshot_dir, snapshot_path

__all__ = [
    "EXPORT_FORMATS",
    "SCHEMA_VERSION",
    "ResultsStore",
    "RunListing",
    "read_status_snapshot",
    "snapshot_dir",
    "snapshot_path",
]

"""The status snapshot: a run's progress as an atomic JSON file, readable while the DB is locked.

DuckDB lets no other process read a file that a writer holds, so the writer refreshes this snapshot
after every batch (write to a temporary file in the same folder, then ``os.replace``: a reader sees the
old snapshot or the new one, never half of one).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from accelerate_core.errors import StoreError


def snapshot_path(run_id: str, directory: Path) -> Path:
    """Where the status snapshot of ``run_id`` lives inside ``directory``."""
    safe = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in run_id)
    return Path(directory) / f"status-{safe}.json"


def write_snapshot(progress: dict[str, Any], run_id: str, directory: Path) -> Path:
    """Write ``progress`` atomically as the run's snapshot; return its path."""
    target = snapshot_path(run_id, directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name, suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(progress, fh, sort_keys=True, default=str)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_status_snapshot(run_id: str, directory: Path) -> dict[str, Any]:
    """Read the snapshot a writer left for ``run_id``.

    Raises:
        StoreError: there is no snapshot for that run, or it is unreadable.
    """
    path = snapshot_path(run_id, directory)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise StoreError(f"no status snapshot for run {run_id!r} in {directory}: is its writer running?") from e
    except (OSError, ValueError) as e:
        raise StoreError(f"status snapshot {path} is unreadable ({e}): wait for the writer's next batch") from e
    if not isinstance(data, dict):
        raise StoreError(f"status snapshot {path} is not a JSON object: delete it; the writer rewrites it")
    data["snapshot_path"] = str(path)
    return data

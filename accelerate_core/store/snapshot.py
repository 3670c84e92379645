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
from typing import TYPE_CHECKING

from accelerate_core import wire
from accelerate_core.contracts import StatusSnapshot
from accelerate_core.errors import ContractError, StoreError

if TYPE_CHECKING:
    from accelerate_core.config import Settings


def snapshot_dir(settings: Settings) -> Path:
    """Where the process holding the results DB writes its status snapshots: next to the DB."""
    return settings.results_db.parent


def snapshot_path(run_id: str, directory: Path) -> Path:
    """Where the status snapshot of ``run_id`` lives inside ``directory``."""
    safe = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in run_id)
    return Path(directory) / f"status-{safe}.json"


def write_snapshot(snapshot: StatusSnapshot, directory: Path) -> Path:
    """Write ``snapshot`` atomically as its run's snapshot file; return its path."""
    target = snapshot_path(snapshot.run_id, directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name, suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(wire.encode(snapshot), fh, sort_keys=True)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_status_snapshot(run_id: str, directory: Path) -> StatusSnapshot:
    """Read the snapshot a writer left for ``run_id``.

    Raises:
        StoreError: there is no snapshot for that run, or it is unreadable.
    """
    return read_snapshot_file(snapshot_path(run_id, directory))


def read_snapshot_file(path: Path) -> StatusSnapshot:
    """Read one snapshot file.

    Raises:
        StoreError: the file is missing or unreadable.
    """
    try:
        return wire.decode(StatusSnapshot, json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError as e:
        raise StoreError(f"no status snapshot {path.name} in {path.parent}: is its writer running?") from e
    except (OSError, ValueError, ContractError) as e:
        raise StoreError(f"status snapshot {path} is unreadable ({e}): wait for the writer's next batch") from e

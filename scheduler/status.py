"""A run's status: read from the results store, or from the writer's snapshot while the store is held.

``accel status [RUN]`` shows progress per hardware, the failures so far and the expected time left. The
DuckDB file admits one read-write process: while ``accel run`` (or the fleet's results writer) holds it,
opening it fails with :class:`~accelerate_core.errors.StoreLockedError`, and the status is read from the
snapshot that process writes every few seconds instead.

:class:`RunProgress` is the live progress bar of a local run (done, failed, running, ETA).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from accelerate_core.constants import STATUS_DONE, STATUS_SKIPPED, TERMINAL_STATUSES
from accelerate_core.errors import StoreLockedError, UnknownRunError

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from accelerate_core.config import Settings
    from accelerate_core.contracts import JobResult

logger = logging.getLogger(__name__)


def run_status(settings: Settings, run_id: str | None = None) -> dict[str, Any]:
    """The status of ``run_id`` (the latest run when None), from the DB or, when it is locked, the snapshot.

    Returns:
        ``ResultsStore.run_progress`` (counts by status and hardware, failures, ``expected_s_left``, ...)
        plus ``source``: ``"db"`` or ``"snapshot"`` (with ``snapshot_path``).

    Raises:
        UnknownRunError: no such run (or no run at all).
        StoreLockedError: the DB is held and no snapshot of that run exists.
    """
    from accelerate_core.store import ResultsStore

    if not settings.results_db.exists():
        remote = _fleet_status(settings, run_id)
        if remote is not None:
            return remote
        raise UnknownRunError(f"no results store at {settings.results_db}: start a run with `accel run`")
    try:
        with ResultsStore.open(settings.results_db, read_only=True) as store:
            if run_id is None:
                runs = store.list_runs()
                if not runs:
                    raise UnknownRunError("the results store has no run yet: start one with `accel run`")
                run_id = str(runs[0]["run_id"])
            return {**store.run_progress(run_id), "source": "db"}
    except StoreLockedError as locked:
        snapshot = read_snapshot(snapshot_dir(settings), run_id) or _fleet_status(settings, run_id)
        if snapshot is None:
            raise StoreLockedError(f"{locked} (and it left no status snapshot in {snapshot_dir(settings)})") from locked
        return {"source": "snapshot", **snapshot}


def _fleet_status(settings: Settings, run_id: str | None) -> dict[str, Any] | None:
    """The fleet writer's snapshot of ``run_id`` from the broker, when one is configured (else None)."""
    if not settings.broker_url or run_id is None:
        return None
    import importlib

    remote = importlib.import_module("scheduler.remote")  # imports celery: only with a broker
    snapshot = remote.read_status(settings, run_id)
    return {**snapshot, "source": "broker"} if isinstance(snapshot, dict) else None


def snapshot_dir(settings: Settings) -> Path:
    """Where the process holding the results DB writes its status snapshots (next to the DB)."""
    return settings.results_db.parent


def read_snapshot(directory: Path, run_id: str | None) -> dict[str, Any] | None:
    """The snapshot of ``run_id`` (the newest snapshot in ``directory`` when None), or None."""
    from accelerate_core.errors import StoreError
    from accelerate_core.store.snapshot import read_status_snapshot, snapshot_path

    if run_id is None:
        found = sorted(directory.glob(snapshot_path("x", directory).name.replace("x", "*")),
                       key=lambda p: p.stat().st_mtime)  # fmt: skip
        if not found:
            return None
        data = read_status_snapshot_file(found[-1])
        return data
    try:
        return read_status_snapshot(run_id, directory)
    except StoreError:
        return None


def read_status_snapshot_file(path: Path) -> dict[str, Any] | None:
    """Read one snapshot file (None when it vanished or is unreadable)."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def format_status(status: dict[str, Any]) -> list[str]:
    """Human-readable lines of a :func:`run_status` result."""
    lines = [
        f"run {status.get('run_id')}  phase {status.get('phase')}  status {status.get('status')}"
        f"  ({status.get('terminal', 0)}/{status.get('total', 0)} finished; from the {status.get('source')})"
    ]
    for hw, counts in sorted((status.get("by_hardware") or {}).items()):
        total = int(counts.get("total", 0))
        finished = sum(int(v) for k, v in counts.items() if k in TERMINAL_STATUSES)
        detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k != "total")
        lines.append(f"  {hw}: {finished}/{total} finished ({detail})")
    if not status.get("phase_done"):
        lines.append(f"  expected time left: {_duration(float(status.get('expected_s_left') or 0.0))}")
    failures = status.get("failures") or []
    if failures:
        lines.append(f"  failures so far: {status.get('failures_total', len(failures))} (latest first)")
        for f in failures[:20]:
            message = (f.get("error_message") or "")[:100]
            lines.append(f"    {f.get('model_type')} [{f.get('hardware')}] {f.get('error_class')}: {message}")
    return lines


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class RunProgress:
    """The live progress bar of a local run on stderr: done, failed, running, ETA (off when ``show`` is False)."""

    def __init__(self, total: int, *, show: bool) -> None:
        self.total = total
        self.show = show
        self.done = 0
        self.failed = 0
        self.running = 0
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> RunProgress:
        if self.show:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("[bold]run"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self._bar.start()
            self._task = self._bar.add_task("run", total=self.total, detail="")
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._bar is not None:
            self._refresh()
            self._bar.stop()

    def advance_to(self, progress: dict[str, Any]) -> None:
        """Start from what the store already has (a resumed run, skipped entries)."""
        by_status = progress.get("by_status") or {}
        self.done = sum(int(v) for k, v in by_status.items() if k in (STATUS_DONE, STATUS_SKIPPED))
        self.failed = sum(int(v) for k, v in by_status.items() if k in TERMINAL_STATUSES) - self.done
        self._refresh()

    def set_running(self, running: int) -> None:
        """The number of jobs in flight."""
        self.running = running
        self._refresh()

    def finished(self, result: JobResult, *, running: int) -> None:
        """One more job finished."""
        if result.status in (STATUS_DONE, STATUS_SKIPPED):
            self.done += 1
        else:
            self.failed += 1
        self.running = running
        self._refresh()

    def _refresh(self) -> None:
        if self._bar is not None and self._task is not None:
            detail = f"done {self.done}  failed {self.failed}  running {self.running}"
            self._bar.update(self._task, completed=self.done + self.failed, detail=detail)


def wait_for_status(settings: Settings, run_id: str, *, timeout_s: float = 30.0, poll_s: float = 0.2) -> dict[str, Any]:
    """Poll :func:`run_status` until the run exists (tests and scripts that start a run in the background)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return run_status(settings, run_id)
        except (UnknownRunError, StoreLockedError):
            if time.monotonic() > deadline:
                raise
            time.sleep(poll_s)


__all__ = ["RunProgress", "format_status", "run_status", "snapshot_dir", "wait_for_status"]

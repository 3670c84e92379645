"""A run's status: read from the results store, or from the writer's snapshot while the store is held.

``accel status [RUN]`` shows progress per hardware, the failures so far and the expected time left. The
DuckDB file admits one read-write process: while ``accel run`` (or the fleet's results writer) holds it,
opening it fails with :class:`~accelerate_core.errors.StoreLockedError`, and the status is read from the
snapshot that process writes every few seconds instead (a file next to the DB, or the fleet writer's copy in
the broker). Every source gives the same :class:`~accelerate_core.contracts.StatusSnapshot`.

:class:`RunProgress` is the live progress bar of a local run (done, failed, running, ETA).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from accelerate_core import wire
from accelerate_core.constants import STATUS_DONE, STATUS_SKIPPED, TERMINAL_STATUSES
from accelerate_core.errors import BrokerError, StoreError, StoreLockedError, UnknownRunError
from accelerate_core.store.snapshot import snapshot_dir

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from accelerate_core.config import Settings
    from accelerate_core.contracts import JobResult, StatusSnapshot, WriterHeartbeat

logger = logging.getLogger(__name__)

SOURCE_DB = "db"
SOURCE_SNAPSHOT = "snapshot"
SOURCE_BROKER = "broker"
SOURCE_API = "results service"


@dataclass(frozen=True, slots=True)
class WriterState:
    """The fleet writer as ``accel status`` shows it: its heartbeat (None: none alive), or why none could be read.

    ``backlog`` and ``oldest_s`` are read from the ``results`` queue itself when no writer is alive to say them.
    """

    heartbeat: WriterHeartbeat | None = None
    backlog: int = 0
    oldest_s: float | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data: ``alive``, the heartbeat's fields (``backlog``, ``oldest_s``, ...) and ``error``."""
        beat = wire.encode(self.heartbeat) if self.heartbeat is not None else {}
        beat.pop(wire.VERSION_KEY, None)
        return {"alive": self.heartbeat is not None, "backlog": self.backlog, "oldest_s": self.oldest_s, **beat,
                "error": self.error}  # fmt: skip

    def line(self) -> str:
        """One line: alive or not (and what to do), and how far behind the results queue is."""
        from accelerate_core import liveness

        if self.error is not None:
            return f"  writer: unknown ({self.error})"
        if self.heartbeat is not None:
            return "  " + liveness.describe(self.heartbeat)
        oldest = f", oldest result waiting {self.oldest_s:.0f} s" if self.oldest_s is not None else ""
        return f"  {liveness.describe(None)}; backlog {self.backlog}{oldest}"


def writer_state(settings: Settings) -> WriterState | None:
    """The fleet writer's liveness and lag from its heartbeat (None when no broker is configured)."""
    if not settings.broker_url:
        return None
    from accelerate_core import broker, liveness

    try:
        client = broker.connect(settings.broker_url)
    except BrokerError as e:
        return WriterState(error=str(e))
    try:
        beat = liveness.read_writer(client)
        if beat is not None:
            return WriterState(beat, beat.backlog, beat.oldest_s)
        return WriterState(None, *liveness.results_backlog(client, settings.results_queue))
    except Exception as e:  # redis errors: status still shows the run
        return WriterState(error=str(broker.broker_error(settings.broker_url, e)))
    finally:
        client.close()


@dataclass(frozen=True, slots=True)
class RunStatus:
    """A run's status snapshot and where it was read: the DB, a snapshot file (its path) or the broker.

    ``writer`` is the fleet writer's state when a broker is configured.
    """

    snapshot: StatusSnapshot
    source: str
    snapshot_path: str | None = None
    writer: WriterState | None = None
    page_url: str | None = None

    def to_json(self) -> dict[str, Any]:
        """What ``accel status --json`` prints: the snapshot's fields, ``source``, ``snapshot_path``, ``writer``,
        ``page_url``."""
        writer = self.writer.to_json() if self.writer is not None else None
        return {**wire.encode(self.snapshot), "source": self.source, "snapshot_path": self.snapshot_path,
                "writer": writer, "page_url": self.page_url}  # fmt: skip


def run_status(settings: Settings, run_id: str | None = None) -> RunStatus:
    """The status of ``run_id`` (the latest run when None) and the URL of its page when a results service is known.

    Raises:
        UnknownRunError: no such run (or no run at all).
        StoreLockedError: the DB is held and no snapshot of that run exists.
    """
    from scheduler.results import page_url

    found = _read_status(settings, run_id)
    return replace(found, page_url=page_url(settings, found.snapshot.run_id))


def _read_status(settings: Settings, run_id: str | None) -> RunStatus:
    """The status from the DB or, when it is locked or elsewhere, a snapshot or the writer's results service."""
    from accelerate_core.store import ResultsStore

    through_api = _api_status(settings, run_id) if settings.results_url else None
    if through_api is not None:
        return through_api
    if not settings.results_db.exists():
        remote = _fleet_status(settings, run_id) or _api_status(settings, run_id)
        if remote is not None:
            return remote
        raise UnknownRunError(f"no results store at {settings.results_db}: start a run with `accel run`")
    try:
        with ResultsStore.open(settings.results_db, read_only=True) as store:
            if run_id is None:
                run_id = store.latest_run()
                if run_id is None:
                    raise UnknownRunError("the results store has no run yet: start one with `accel run`")
            return RunStatus(store.run_progress(run_id), SOURCE_DB)
    except StoreLockedError as locked:
        found = (
            read_snapshot(snapshot_dir(settings), run_id)
            or _fleet_status(settings, run_id)
            or _api_status(settings, run_id)
        )
        if found is None:
            raise StoreLockedError(f"{locked} (and it left no status snapshot in {snapshot_dir(settings)})") from locked
        return found


def _fleet_status(settings: Settings, run_id: str | None) -> RunStatus | None:
    """The fleet writer's snapshot of ``run_id`` from the broker, when one is configured (else None)."""
    if not settings.broker_url or run_id is None:
        return None
    from accelerate_core import broker

    client = broker.connect(settings.broker_url)
    try:
        snapshot = broker.read_status(client, run_id)
    finally:
        client.close()
    return RunStatus(snapshot, SOURCE_BROKER) if snapshot is not None else None


def _api_status(settings: Settings, run_id: str | None) -> RunStatus | None:
    """The run's progress read through the writer's results service; None when none is known."""
    from accelerate_core.contracts import StatusSnapshot
    from scheduler.results import LATEST, results_api

    api = results_api(settings)
    if api is None:
        return None
    found = api.json(f"/api/runs/{run_id or LATEST}")
    return RunStatus(wire.decode(StatusSnapshot, found["progress"]), SOURCE_API)


def read_snapshot(directory: Path, run_id: str | None) -> RunStatus | None:
    """The snapshot of ``run_id`` (the newest snapshot in ``directory`` when None), or None."""
    from accelerate_core.store.snapshot import read_snapshot_file, snapshot_path

    if run_id is None:
        found = sorted(directory.glob(snapshot_path("x", directory).name.replace("x", "*")),
                       key=lambda p: p.stat().st_mtime)  # fmt: skip
        if not found:
            return None
        path = found[-1]
    else:
        path = snapshot_path(run_id, directory)
    try:
        return RunStatus(read_snapshot_file(path), SOURCE_SNAPSHOT, str(path))
    except StoreError:
        return None


def format_status(status: RunStatus) -> list[str]:
    """Human-readable lines of a :func:`run_status` result."""
    snap = status.snapshot
    lines = [
        f"run {snap.run_id}  phase {snap.phase}  status {snap.status}"
        f"  ({snap.terminal}/{snap.total} finished; from the {status.source})"
    ]
    for hw, counts in sorted(snap.by_hardware.items()):
        total = int(counts.get("total", 0))
        finished = sum(int(v) for k, v in counts.items() if k in TERMINAL_STATUSES)
        detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k != "total")
        lines.append(f"  {hw}: {finished}/{total} finished ({detail})")
    if not snap.phase_done:
        lines.append(f"  expected time left: {_duration(snap.expected_s_left)}")
    if status.writer is not None:
        lines.append(status.writer.line())
    if status.page_url:
        lines.append(f"  page: {status.page_url}")
    if snap.failures:
        lines.append(f"  failures so far: {snap.failures_total or len(snap.failures)} (latest first)")
        for f in snap.failures[:20]:
            message = (f.error_message or "")[:100]
            lines.append(f"    {f.model_type} [{f.hardware}] {f.error_class}: {message}")
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

    def advance_to(self, snapshot: StatusSnapshot) -> None:
        """Start from what the store already has (a resumed run, skipped entries)."""
        by_status = snapshot.by_status
        self.done = sum(v for k, v in by_status.items() if k in (STATUS_DONE, STATUS_SKIPPED))
        self.failed = sum(v for k, v in by_status.items() if k in TERMINAL_STATUSES) - self.done
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


def wait_for_status(settings: Settings, run_id: str, *, timeout_s: float = 30.0, poll_s: float = 0.2) -> RunStatus:
    """Poll :func:`run_status` until the run exists (tests and scripts that start a run in the background)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return run_status(settings, run_id)
        except (UnknownRunError, StoreLockedError):
            if time.monotonic() > deadline:
                raise
            time.sleep(poll_s)


__all__ = [
    "RunProgress",
    "RunStatus",
    "WriterState",
    "format_status",
    "run_status",
    "snapshot_dir",
    "wait_for_status",
    "writer_state",
]

"""The local (embedded) executor: a run's jobs through a fork server on this machine, results in DuckDB.

No servers: the plan is recorded in the results store (held read-write by this process for the whole
run), the jobs go longest-first to ``accelerate_core.runner.ForkServer(JOB_ENTRY)`` (the same job body as
the Celery workers') with N children at a time, and the jobs' running marks and outcomes are recorded in
batches (one transaction every couple of seconds: each costs the CPU the jobs share).
A status snapshot is written every few seconds so ``accel status`` works from another terminal while this
process holds the file.

Stopping: SIGINT (Ctrl-C) and SIGTERM end the running children, keep every finished result and mark
the run ``interrupted``; ``run_local(..., resume=True)`` (``accel run --resume RUN``) later runs only the
jobs without a terminal row. A SIGKILL of this process loses at most the results of the last batch not
yet written: those jobs have no terminal row, so a resume runs them again and never doubles a row.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Final

from accelerate_core import wire
from accelerate_core.constants import JOB_ENTRY, RUN_COMPLETE, RUN_INTERRUPTED, RUN_RUNNING
from accelerate_core.contracts import JobResult, JobSpec, Makespan, RunParams, RunPlan
from accelerate_core.errors import ConfigError, StoreWriteError
from accelerate_core.finish import finish_run
from accelerate_core.job_outcome import outcome_to_result
from scheduler.plan import order_jobs
from scheduler.status import RunProgress, snapshot_dir

if TYPE_CHECKING:
    from accelerate_core.config import Settings
    from accelerate_core.runner import ChildOutcome, ForkServer
    from accelerate_core.store import ResultsStore

logger = logging.getLogger(__name__)

_FLUSH_EVERY_S: Final = 2.0
_FLUSH_BATCH: Final = 64
_SNAPSHOT_EVERY_S: Final = 4.0
"""Each write to the store costs ~20-100 ms of the CPU the jobs share (a transaction, whatever its size): on 2
cores at 1 s and 2 s they took ~6% of a full run. Results and running marks go in one batch per flush."""
_POLL_S: Final = 0.5
_RETRY_MIN_S: Final = 0.5
_RETRY_MAX_S: Final = 8.0


@dataclass
class RunSummary:
    """What a local run did, printed by ``accel run`` (``--json``: :meth:`to_dict`)."""

    run_id: str
    status: str = RUN_RUNNING
    slots: int = 1
    planned: int = 0
    ran: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    startup_s: float = 0.0
    busy_s: float = 0.0
    store_s: float = 0.0
    report_dir: Path | None = None
    report_files: dict[str, str] = field(default_factory=dict)

    @property
    def efficiency(self) -> float:
        """Makespan efficiency: job time / (slots x wall time), 0 when nothing ran."""
        return self.makespan().efficiency

    def makespan(self) -> Makespan:
        """This invocation's figures, as the run's params keep them (one entry per invocation)."""
        return Makespan(slots=self.slots, wall_s=self.wall_s, busy_s=self.busy_s, startup_s=self.startup_s,
                        ran=self.ran, status=self.status)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return {
            "run_id": self.run_id,
            "status": self.status,
            "slots": self.slots,
            "planned": self.planned,
            "ran": self.ran,
            "counts": dict(self.counts),
            "wall_s": round(self.wall_s, 2),
            "startup_s": round(self.startup_s, 2),
            "busy_s": round(self.busy_s, 2),
            "store_s": round(self.store_s, 2),
            "efficiency": self.efficiency,
            "report_dir": str(self.report_dir) if self.report_dir else None,
            "report_files": dict(self.report_files),
        }


def run_local(
    settings: Settings,
    plan: RunPlan | None = None,
    *,
    resume_run_id: str | None = None,
    slots: int | None = None,
    show_progress: bool = False,
    stop: threading.Event | None = None,
    write_report: bool = True,
) -> RunSummary:
    """Run a plan (or resume a run) on this machine and write its report.

    Args:
        settings: where the results DB and reports live; concurrency default.
        plan: a new run's plan (recorded first). Exactly one of ``plan`` and ``resume_run_id``.
        resume_run_id: resume this run: run only its jobs without a terminal row.
        slots: jobs at once (default ``settings.effective_concurrency()``).
        show_progress: draw a live progress bar on stderr.
        stop: set it to stop the run as SIGINT would (tests, embedding); SIGINT/SIGTERM set it too.
        write_report: write the aggregate report when the run completes.

    Returns:
        The summary; ``status`` is ``complete`` or ``interrupted``.

    Raises:
        StoreLockedError: another process holds the results DB.
        UnknownRunError: ``resume_run_id`` is not in the store.
        RunnerError: the fork server cannot start.
    """
    from accelerate_core.store import ResultsStore

    if (plan is None) == (resume_run_id is None):
        raise ConfigError("run_local needs exactly one of plan and resume_run_id")
    n_slots = slots or settings.effective_concurrency()
    stop_event = stop or threading.Event()
    if plan is not None:  # run_progress divides the work left by the slots
        plan = replace(plan, params=replace(plan.params, slots=n_slots))
    settings.results_db.parent.mkdir(parents=True, exist_ok=True)
    with ResultsStore.open(settings.results_db) as store:
        run_id, pending, planned = _prepare(store, plan, resume_run_id, n_slots)
        summary = RunSummary(run_id=run_id, slots=n_slots, planned=planned)
        feeder = _Feeder(store, settings, run_id, n_slots, stop_event)
        with _stop_on_signals(stop_event), RunProgress(planned, show=show_progress) as bar:
            bar.advance_to(store.run_progress(run_id))
            feeder.progress = bar
            feeder.run(pending, summary)
        _finish(store, settings, summary, write_report=write_report)
    return summary


def _prepare(
    store: ResultsStore, plan: RunPlan | None, resume_run_id: str | None, slots: int
) -> tuple[str, list[JobSpec], int]:
    """Record the plan (or read the resumed run) and return the jobs still to run, longest first.

    Planned jobs that are not to be run get their ``skipped`` row here (again on a resume, if a kill
    came between recording the plan and recording them).
    """
    params: RunParams
    if plan is not None:
        store.record_run(plan)
        run_id, params, unfinished = plan.run_id, plan.params, list(plan.jobs)
    else:
        assert resume_run_id is not None
        run_id, params = resume_run_id, store.get_run(resume_run_id).params
        unfinished = store.unfinished_jobs(run_id)
        if params.slots != slots:
            params = replace(params, slots=slots)
            store.update_run_params(run_id, params)
    store.set_run_status(run_id, RUN_RUNNING)
    to_skip = [j for j in unfinished if j.skip is not None]
    if to_skip:
        now = time.time()
        store.record_results([JobResult.skipped(j, now=now) for j in to_skip])
    pending = order_jobs(j for j in unfinished if j.skip is None)
    planned = params.n_jobs or len(unfinished)
    logger.info("run %s: %d jobs to run, %d skipped now", run_id, len(pending), len(to_skip))
    return run_id, pending, planned


class _Feeder:
    """Feeds jobs to the fork server N at a time and records outcomes in batches."""

    def __init__(self, store: ResultsStore, settings: Settings, run_id: str, slots: int, stop: threading.Event):
        self.store = store
        self.settings = settings
        self.run_id = run_id
        self.slots = slots
        self.stop = stop
        self.host = socket.gethostname()
        self.worker_id = f"local-{self.host}-{os.getpid()}"
        self.progress: RunProgress | None = None
        self._batch: list[JobResult] = []
        self._to_mark: dict[str, float] = {}  # running jobs: key -> when they started, 0 once marked in the store
        self.store_s = 0.0  # time spent writing results, marks and snapshots
        self._last_flush = time.monotonic()
        self._last_snapshot = 0.0
        self._failing_since: float | None = None  # while the store cannot write (a full disk)

    def run(self, pending: Sequence[JobSpec], summary: RunSummary) -> None:
        """Run ``pending`` to the end or until ``stop`` is set; fill ``summary``'s timings.

        Served endpoints' jobs run last, here, one at a time (``accelerate_core.endpoint.job``: an HTTP
        client needs no child, and this process's environment holds their tokens), so no model job of the
        run loads this machine while an endpoint is measured.
        """
        from accelerate_core.runner import ForkServer

        queue = deque(s for s in pending if s.endpoint is None)
        endpoints = [s for s in pending if s.endpoint is not None]
        running: dict[str, JobSpec] = {}
        started = time.monotonic()
        self._snapshot(force=True)
        if queue:
            with ForkServer(JOB_ENTRY, max_children=self.slots) as server:
                # The makespan counts from a ready server: its start-up (imports) is reported apart.
                summary.startup_s = time.monotonic() - started
                started = time.monotonic()
                self._loop(server, queue, running, summary)
                summary.wall_s = time.monotonic() - started  # to the last outcome, not the server's shutdown
                if running:  # stopped: end the children; their jobs keep no terminal row
                    server.close()
        summary.wall_s += self._run_endpoints(endpoints, summary)
        self._flush(until_durable=True)
        self._snapshot(force=True)
        summary.store_s = self.store_s

    def _run_endpoints(self, specs: Sequence[JobSpec], summary: RunSummary) -> float:
        """Run the endpoint jobs one by one (until ``stop``); return the seconds they took."""
        from accelerate_core.endpoint.job import run_endpoint_job

        started = time.monotonic()
        for spec in specs:
            if self.stop.is_set():
                break
            self._mark_running([spec.key])
            if self.progress is not None:
                self.progress.set_running(1)
            result = run_endpoint_job(spec, worker_id=self.worker_id, host=self.host)
            self._record(result, float(result.duration_s or 0.0), summary, running=0)
            self._snapshot()
        return time.monotonic() - started if specs else 0.0

    def _loop(
        self, server: ForkServer, queue: deque[JobSpec], running: dict[str, JobSpec], summary: RunSummary
    ) -> None:
        while (queue or running) and not self.stop.is_set():
            self._fill(server, queue, running)
            outcomes = server.poll(_POLL_S)
            self._collect(outcomes, running, summary)
            self._maybe_flush()
            self._snapshot()

    def _fill(self, server: ForkServer, queue: deque[JobSpec], running: dict[str, JobSpec]) -> None:
        """Keep ``slots`` jobs running and as many more queued in the server.

        The queued ones start the moment a child ends, in the server's own loop turn: the slot no longer
        waits for the outcome to reach this process, be recorded, and a new job to come back (~0.3 s a job
        on a loaded machine). The server starts them first in first out, so the jobs running are always the
        ``slots`` oldest of ``running`` (insertion ordered); those are the ones marked running.
        """
        env = child_env(self.settings, self.slots)
        while queue and len(running) < 2 * self.slots:
            spec = queue.popleft()
            limits = spec.limits
            server.submit(
                spec.key, wire.encode(spec), env=env, time_limit_s=limits.hard_s, mem_cap_mb=limits.mem_cap_mb
            )
            running[spec.key] = spec
        now = time.time()
        for key in itertools.islice(running, self.slots):
            self._to_mark.setdefault(key, now)  # written with the next flush, not one transaction per job
        if self.progress is not None:
            self.progress.set_running(min(len(running), self.slots))

    def _mark_running(self, keys: list[str], started_at: float | None = None) -> None:
        begun = time.monotonic()
        try:
            self.store.mark_running(keys, self.worker_id, time.time() if started_at is None else started_at)
        except StoreWriteError as e:  # only bookkeeping: the results are what must be kept
            self._store_failed(e)
        self.store_s += time.monotonic() - begun

    def _write_marks(self) -> None:
        """Mark the jobs that started since the last flush running (one transaction; the earliest start time).
        A job that already finished is not in ``_to_mark`` any more: its terminal row is in the batch."""
        keys = [k for k, at in self._to_mark.items() if at > 0]
        if keys:
            self._mark_running(keys, min(self._to_mark[k] for k in keys))
        for key in self._to_mark:  # marked (or finished): never again
            self._to_mark[key] = 0.0

    def _collect(self, outcomes: Sequence[ChildOutcome], running: dict[str, JobSpec], summary: RunSummary) -> None:
        for outcome in outcomes:
            spec = running.pop(outcome.job_id, None)
            if spec is None:
                continue
            self._to_mark.pop(outcome.job_id, None)
            if self.stop.is_set() and not outcome.ok:
                # A child ended by the same Ctrl-C is not a result: its job stays unfinished for --resume.
                continue
            result = outcome_to_result(spec, outcome, self.worker_id, self.host)
            self._record(result, float(outcome.duration_s or 0.0), summary, running=min(len(running), self.slots))

    def _record(self, result: JobResult, busy_s: float, summary: RunSummary, *, running: int) -> None:
        self._batch.append(result)
        summary.ran += 1
        summary.busy_s += busy_s
        summary.counts[result.status] = summary.counts.get(result.status, 0) + 1
        if self.progress is not None:
            self.progress.finished(result, running=running)

    def _maybe_flush(self) -> None:
        if len(self._batch) >= _FLUSH_BATCH or (self._batch and time.monotonic() - self._last_flush >= _FLUSH_EVERY_S):
            self._flush()

    def _flush(self, *, until_durable: bool = False) -> None:
        """Write the held results; while the store cannot (a full disk) keep them, and with ``until_durable``
        retry with backoff until it can or the run is stopped."""
        self._write_marks()
        pause = _RETRY_MIN_S
        while self._batch:
            begun = time.monotonic()
            try:
                self.store.record_results(self._batch)
            except StoreWriteError as e:
                self.store_s += time.monotonic() - begun
                self._store_failed(e)
                if not until_durable or self.stop.wait(pause):
                    break
                pause = min(pause * 2, _RETRY_MAX_S)
                continue
            self.store_s += time.monotonic() - begun
            self._batch = []
            if self._failing_since is not None:
                logger.info("the results store writes again after %.0f s", time.monotonic() - self._failing_since)
                self._failing_since = None
        self._last_flush = time.monotonic()

    def _store_failed(self, e: StoreWriteError) -> None:
        """Say once (one line) that the store cannot write and what happens now."""
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            logger.error(
                "accel run: %s; keeping %d results in memory and retrying until it writes again (free space under %s)",
                e,
                len(self._batch),
                self.settings.results_db.parent,
            )

    def _snapshot(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_snapshot >= _SNAPSHOT_EVERY_S:
            self._flush()
            self._last_snapshot = now
            begun = time.monotonic()
            try:
                self.store.write_status_snapshot(self.run_id, snapshot_dir(self.settings))
            except OSError as e:  # the same full disk: the store's line already says so
                logger.debug("the status snapshot of run %s could not be written: %s", self.run_id, e)
            self.store_s += time.monotonic() - begun


def child_env(settings: Settings, slots: int) -> dict[str, str]:
    """Environment of a job's child: its share of the cores, so N children do not oversubscribe them."""
    threads = str(max(1, (os.cpu_count() or 1) // max(1, slots)))
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false"}


def _finish(store: ResultsStore, settings: Settings, summary: RunSummary, *, write_report: bool) -> None:
    """Record this invocation's makespan figures, then finish the run if it completed, else mark it interrupted."""
    snapshot = store.run_progress(summary.run_id)
    summary.counts = dict(snapshot.by_status)
    complete = snapshot.phase_done  # a stop that came after the last job leaves a complete run
    summary.status = RUN_COMPLETE if complete else RUN_INTERRUPTED
    params = store.get_run(summary.run_id).params
    store.update_run_params(summary.run_id, replace(params, makespan=(*params.makespan, summary.makespan())))
    if complete:
        files = finish_run(store, summary.run_id, settings.reports_dir, write_report=write_report)
        summary.report_files = {fmt: str(path) for fmt, path in files.items()}
        summary.report_dir = settings.reports_dir / summary.run_id if files else None
    else:
        store.set_run_status(summary.run_id, RUN_INTERRUPTED)
    # The last snapshot was taken while the run was "running"; readers that cannot open the DB see the end.
    store.write_status_snapshot(summary.run_id, snapshot_dir(settings))


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` (the loop ends its children and returns) instead of raising."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        logger.warning("received signal %d: stopping the run (finished results are kept)", signum)
        stop.set()

    previous: dict[signal.Signals, Callable[..., Any] | int | None] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)

"""The writer's reconciler: no planned job is left without a message, a result or a terminal row.

The writer holds the results store, so it is the one process that knows every open run's jobs without a
terminal row. Between its batches it calls :meth:`Reconciler.tick`, which

- every ``settings.reconcile_every_s`` compares each open (``running``) run's unfinished jobs with what the
  broker holds (:func:`accelerate_core.reconcile.read_inflight`: queued, delivered-unacknowledged, or a
  result on its way). A job missing at two passes in a row has lost its message (the scheduler killed
  mid-dispatch, a message a worker rejected, a Redis that kept nothing on disk): it is sent again, with its
  job key as the task id, so a late original still makes one row. A job re-sent ``reconcile_resends`` times
  and missing again is recorded ``lost`` (``message-lost``) with the reason; one the plan skips gets its
  ``skipped`` row. A run whose scheduler is still sending its jobs (its dispatch mark is live, see
  :class:`accelerate_core.reconcile.DispatchMark`) is skipped: jobs not sent yet are not lost;
- at once, reconciles each run named in a resume request (``accel run --resume RUN`` on a fleet): two reads a
  moment apart, so a job missing from both is re-sent now; the reply says what it found.

Rows (``lost``, ``skipped``) go through the ``results`` queue like every other result, so the writer records
them in order, a terminal row already there wins, and a run they complete is finished and reported.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from accelerate_core import reconcile, signing, wire
from accelerate_core.constants import (
    ERR_MESSAGE_LOST,
    HARDWARE_KINDS,
    RUN_RUNNING,
    STATUS_LOST,
    TASK_RECORD_RESULT,
)
from accelerate_core.contracts import JobResult, JobSpec, ReconcileReport
from accelerate_core.errors import UnknownRunError
from accelerate_core.job_message import job_queue, send_job

if TYPE_CHECKING:
    import redis

    from accelerate_core.config import Settings
    from accelerate_core.store import ResultsStore

logger = logging.getLogger(__name__)

CONFIRM_S = 1.0
"""A resume request reads the broker twice this far apart: a job missing from both reads has no message."""

RECONCILER_ID = "reconciler"
"""The ``worker_id`` of the rows the reconciler records (``lost``, ``skipped``)."""

SendJob = Callable[[JobSpec], None]
"""Sends one job to its hardware queue (task id = job key)."""

SendResults = Callable[[Sequence[JobResult]], None]
"""Sends rows to the writer's ``results`` queue."""


@dataclass
class Reconciler:
    """Re-sends jobs whose message vanished, or records them ``lost``; see the module docstring.

    Args:
        store: the writer's results store (read here; rows go through ``send_results``).
        client: the broker.
        settings: queue names, ``reconcile_every_s``, ``reconcile_resends``.
        send_job: sends one job again.
        send_results: sends rows to the writer.
        clock: a monotonic clock (tests pass their own); ``sleep`` waits between a resume's two reads.
    """

    store: ResultsStore
    client: redis.Redis
    settings: Settings
    send_job: SendJob
    send_results: SendResults
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _missing: dict[str, set[str]] = field(default_factory=dict)
    _next_pass: float = 0.0

    def tick(self) -> list[ReconcileReport]:
        """Serve resume requests, then the periodic pass when it is due; log (never raise) a failure."""
        reports: list[ReconcileReport] = []
        try:
            for run_id in reconcile.take_requests(self.client):
                report = self.resume(run_id)
                reconcile.publish_reply(self.client, report)
                reports.append(report)
            if self.clock() >= self._next_pass:
                self._next_pass = self.clock() + self.settings.reconcile_every_s
                reports += [self.reconcile(run_id) for run_id in self.open_runs()]
        except Exception:
            logger.exception("reconciliation failed: trying again at the next pass")
        return reports

    def open_runs(self) -> list[str]:
        """The runs the writer is still recording (status ``running``)."""
        rows = self.store.query("SELECT run_id FROM runs WHERE status = ? ORDER BY created_at", [RUN_RUNNING])
        open_ids = [str(r[0]) for r in rows]
        for gone in set(self._missing) - set(open_ids):
            del self._missing[gone]
        return open_ids

    def resume(self, run_id: str) -> ReconcileReport:
        """Reconcile ``run_id`` now: two reads ``CONFIRM_S`` apart; a job missing from both is re-sent."""
        try:
            self.store.get_run(run_id)
        except UnknownRunError:
            logger.warning("resume of run %s: the results store has no such run", run_id)
            return ReconcileReport(run_id, known=False, updated_at=time.time())
        first = self.reconcile(run_id)
        self.sleep(CONFIRM_S)
        last = self.reconcile(run_id)
        report = replace(last, resent=first.resent + last.resent, lost=first.lost + last.lost,
                         skipped=first.skipped + last.skipped)  # fmt: skip
        logger.info("resume of run %s: %s", run_id, reconcile.describe(report))
        return report

    def reconcile(self, run_id: str) -> ReconcileReport:
        """One pass over ``run_id``: act on the jobs without a message at this pass and the one before.

        A run a scheduler is still sending is left alone (its jobs not sent yet are not lost), and its next
        passes start afresh once the sending is done.
        """
        unfinished = self.store.unfinished_jobs(run_id)
        if reconcile.dispatching(self.client, run_id) is not None:
            self._missing.pop(run_id, None)
            return ReconcileReport(run_id, unfinished=len(unfinished), updated_at=time.time())
        inflight = reconcile.read_inflight(self.client, self._job_queues(unfinished), self.settings.results_queue)
        missing = {j.key for j in unfinished if not inflight.holds(j.key)}
        confirmed = [j for j in unfinished if j.key in missing & self._missing.get(run_id, set())]
        self._missing[run_id] = missing - {j.key for j in confirmed}
        skipped = [JobResult.skipped(j, now=time.time()) for j in confirmed if j.skip is not None]
        resent, lost = self._resend_or_lose([j for j in confirmed if j.skip is None])
        if skipped or lost:
            self.send_results([*skipped, *lost])
        report = ReconcileReport(
            run_id,
            unfinished=len(unfinished),
            in_flight=len(unfinished) - len(missing),
            resent=resent,
            lost=len(lost),
            skipped=len(skipped),
            missing=len(self._missing[run_id]),
            updated_at=time.time(),
        )
        if confirmed:
            logger.warning("run %s: %s", run_id, reconcile.describe(report))
        return report

    def _job_queues(self, jobs: Sequence[JobSpec]) -> list[str]:
        """Every hardware queue, and any other queue these jobs are sent to (a kind added later, say)."""
        kinds = [self.settings.queue_for(kind) for kind in HARDWARE_KINDS]
        return list(dict.fromkeys([*kinds, *(job_queue(self.settings, j) for j in jobs)]))

    def _resend_or_lose(self, specs: Sequence[JobSpec]) -> tuple[int, list[JobResult]]:
        resent, lost = 0, []
        for spec in specs:
            sends = reconcile.count_resend(self.client, spec.key)
            if sends > self.settings.reconcile_resends:
                lost.append(lost_result(spec, sends - 1, job_queue(self.settings, spec)))
                continue
            logger.warning("job %s has no message on the broker: sending it again (%d)", spec.key, sends)
            self.send_job(spec)
            resent += 1
        return resent, lost


def lost_result(spec: JobSpec, resends: int, queue: str, *, now: float | None = None) -> JobResult:
    """The ``lost`` row of a job whose message vanished again after ``resends`` re-sends."""
    stamp = time.time() if now is None else now
    message = (
        f"its message vanished from the broker after {resends} re-sends: no worker on {queue} ran it to a "
        "result; check those workers' logs (rejected messages, crashes)"
    )
    return JobResult.for_spec(spec, status=STATUS_LOST, started_at=stamp, finished_at=stamp,
                              error_class=ERR_MESSAGE_LOST, error_message=message, worker_id=RECONCILER_ID,
                              host=socket.gethostname())  # fmt: skip


def for_writer(store: ResultsStore, client: redis.Redis, settings: Settings) -> Reconciler:
    """The writer's reconciler: jobs and rows sent through a Celery app of its own."""
    from workers.app import make_app

    app = make_app(settings)

    key = signing.require_key(settings)  # it re-sends jobs and sends rows: signed, or no one would take them

    def send_results(rows: Sequence[JobResult]) -> None:
        app.send_task(
            TASK_RECORD_RESULT,
            kwargs=key.envelope(TASK_RECORD_RESULT, "results", [wire.encode(r) for r in rows]),
            queue=settings.results_queue,
            kwargsrepr=repr({"rows": len(rows), "by": RECONCILER_ID}),
        )

    return Reconciler(store, client, settings, send_job=lambda spec: send_job(app, settings, spec, key=key),
                      send_results=send_results)  # fmt: skip


__all__ = ["Reconciler", "for_writer", "lost_result"]

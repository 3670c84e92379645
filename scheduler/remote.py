"""Dispatch a planned run to the fleet: by task name over the Redis broker, never importing ``workers``.

The scheduler builds a minimal Celery *client* app from the settings (JSON only, sent events on for
Flower, no result backend) and sends:

1. ``accel.record_run`` (queue ``results``): the writer records the run and its jobs as ``queued``;
2. ``accel.record_result`` with the ``skipped`` results of jobs the plan does not run;
3. one ``accel.run_job`` per runnable job to ``hw.<kind>``, with the job key as the task id (a job
   sent twice is still one row), Celery time limits from the job's own (``accelerate_core.limits``) and
   the job signed with the fleet key (``accelerate_core.signing``: workers run nothing else);
   :data:`SEND_BATCH` jobs (and their sent events) at a time in one Redis pipeline (kombu's ``Producer.batch``),
   the first pipeline only :data:`SEND_FIRST` jobs, so the workers start while the rest is built.

Every payload is a contract encoded by :mod:`accelerate_core.wire`; broker connections and their errors
come from :mod:`accelerate_core.broker`, shared with the workers and the writer.

The writer consumes ``results`` in order, so the run is recorded before any of its results. Progress
comes back through the writer's status snapshot in Redis (``acc:status:<run>``); ``--wait`` follows it and
reports a stall instead of waiting forever (:mod:`scheduler.stall`). ``accel run --resume RUN`` asks the writer
to reconcile the run (:func:`resume_remote`): jobs without a terminal row and without a live message are sent
again, so a scheduler killed mid-dispatch loses nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from accelerate_core import broker, reconcile, signing, wire
from accelerate_core.config import Settings
from accelerate_core.constants import (
    DISPATCH_TTL_S,
    HARDWARE_KINDS,
    TASK_RECORD_RESULT,
    TASK_RECORD_RUN,
    hardware_kind,
)
from accelerate_core.contracts import JobSpec, ReconcileReport, RunPlan, StatusSnapshot
from accelerate_core.errors import BrokerError, RunStalledError, UnknownRunError
from accelerate_core.job_message import send_job
from scheduler.celery_client import INSPECT_TIMEOUT_S, client_app
from scheduler.nodes import node_answers
from scheduler.stall import Liveness, StallWatch, start_hint

if TYPE_CHECKING:
    import redis
    from celery import Celery

logger = logging.getLogger(__name__)

POLL_EVERY_S = 0.5
"""How often ``--wait`` reads the run's status snapshot, in seconds."""

FOLLOW_MISSES = 10
"""``--wait`` gives up after this many polls in a row found the broker unreachable."""

PROBE_EVERY_S = 5.0
"""How often ``--wait`` checks that a writer and the run's workers are alive, in seconds."""

REPLY_WAIT_S = 30.0
"""How long ``accel run --resume`` on a fleet waits for the writer's reconciliation, in seconds."""

SEND_BATCH = 500
"""Jobs sent in one Redis pipeline (their messages and their sent events: kombu's ``Producer.batch``)."""

SEND_FIRST = 50
"""Jobs in the first pipeline: building 500 signed messages takes ~0.5 s, which the workers would wait out idle."""


def live_queues(settings: Settings, timeout_s: float = INSPECT_TIMEOUT_S) -> dict[str, list[str]]:
    """The queues each live worker consumes now, ``{node name: [queue, ...]}`` (empty: none alive), from the nodes'
    signed answers only (:func:`scheduler.nodes.node_answers`: a forged node plans nothing)."""
    broker.check(broker.require_url(settings))
    return {n.node: list(n.queues) for n in node_answers(settings, timeout_s).nodes}


def live_hardware(
    settings: Settings, timeout_s: float = INSPECT_TIMEOUT_S, kinds: tuple[str, ...] = HARDWARE_KINDS
) -> list[str]:
    """``--hardware auto`` on a fleet: the kinds (of ``kinds``) whose queues live workers consume right now."""
    consumed = consumed_queues(settings, timeout_s)
    return [kind for kind in kinds if settings.queue_for(kind) in consumed]


def consumed_queues(settings: Settings, timeout_s: float = INSPECT_TIMEOUT_S) -> frozenset[str]:
    """Every queue some live worker consumes now (kinds' ``hw.cuda`` and device models' ``hw.cuda.h100``)."""
    return frozenset(q for queues in live_queues(settings, timeout_s).values() for q in queues)


def live_nodes(settings: Settings, timeout_s: float = INSPECT_TIMEOUT_S) -> list[str]:
    """The names of every node that answers a broadcast now (verified or not: the names in use)."""
    answers = node_answers(settings, timeout_s)
    return sorted([n.node for n in answers.nodes] + list(answers.unverified))


def dispatch(
    settings: Settings, plan: RunPlan, app: Celery | None = None, *, route: Callable[[JobSpec], Any] | None = None
) -> int:
    """Record ``plan`` through the writer and send each runnable job to its hardware queue.

    ``route`` picks another queue for a job (a name or a kombu ``Queue``; ``accel run --dry`` sends to each
    node's own queue).

    While it sends, the run carries a dispatch mark (:class:`accelerate_core.reconcile.DispatchMark`), so the
    writer's reconciler does not take the jobs not sent yet for lost ones; a failure leaves the mark to expire.

    Returns:
        The number of jobs sent.

    Raises:
        ConfigError: no broker, or no fleet key, is configured; or the broker's eviction policy would drop
            jobs (``accelerate_core.broker.sanity``).
        BrokerError: the broker is unreachable.
    """
    url = broker.require_url(settings)
    key = signing.require_key(settings)
    broker.verify(url)
    own = app is None
    app = app or client_app(settings)
    quiet = client_app(settings, sent_events=False)
    client = broker.connect(url)
    mark = reconcile.DispatchMark(client, plan.run_id)
    jobs = plan.runnable()
    try:
        mark.start()  # before the run is recorded: the reconciler never sees it with jobs not sent yet
        with quiet.producer_or_acquire() as producer:
            _send_run(quiet, settings, plan, producer, key)
        with app.producer_or_acquire() as producer:
            for batch in send_batches(jobs):
                _send_batch(app, settings, batch, key, producer, route)
                mark.refresh()
        mark.done()
    except BrokerError:
        raise
    except Exception as e:
        raise broker.broker_error(url, e) from e
    finally:
        client.close()
        quiet.close()
        if own:
            app.close()
    logger.info("run %s: %d jobs sent (%d skipped)", plan.run_id, len(jobs), len(plan.jobs) - len(jobs))
    return len(jobs)


def send_batches(jobs: Sequence[JobSpec]) -> Iterator[Sequence[JobSpec]]:
    """``jobs`` in the pipelines they are sent in, in order: :data:`SEND_FIRST` of them, then :data:`SEND_BATCH`."""
    start, size = 0, SEND_FIRST
    while start < len(jobs):
        yield jobs[start : start + size]
        start, size = start + size, SEND_BATCH


def _send_batch(
    app: Celery,
    settings: Settings,
    jobs: Sequence[JobSpec],
    key: signing.FleetKey,
    producer: Any,
    route: Callable[[JobSpec], Any] | None,
) -> None:
    """Send ``jobs`` in one Redis pipeline (one round trip instead of two per job: its message, its sent event).

    A pipeline that fails is of uncertain delivery: its jobs are sent again one by one, each with Celery's retry
    policy. A job sent twice is still one row (task id = job key); the writer counts the second result a duplicate.
    """
    from kombu.exceptions import BatchPublishError

    def send(spec: JobSpec) -> None:
        send_job(app, settings, spec, key=key, producer=producer, queue=route(spec) if route else None)

    try:
        with producer.batch(max_size=2 * len(jobs)):
            for spec in jobs:
                send(spec)
    except BatchPublishError as e:
        logger.warning("sending %d jobs in one pipeline failed (%s): sending them one by one", len(jobs), e.__cause__)
        for spec in jobs:
            send(spec)


def _send_run(app: Celery, settings: Settings, plan: RunPlan, producer: Any, key: signing.FleetKey) -> None:
    app.send_task(
        TASK_RECORD_RUN,
        kwargs=key.envelope(TASK_RECORD_RUN, "plan", wire.encode(plan.compact())),  # signed runs only
        queue=settings.results_queue,
        kwargsrepr=repr({"run_id": plan.run_id, "phase": plan.phase, "jobs": len(plan.jobs)}),
        producer=producer,
    )
    skipped = plan.skipped_results(now=time.time())
    if skipped:
        app.send_task(
            TASK_RECORD_RESULT,
            kwargs=key.envelope(TASK_RECORD_RESULT, "results", [wire.encode(r) for r in skipped]),
            queue=settings.results_queue,
            kwargsrepr=repr({"run_id": plan.run_id, "skipped": len(skipped)}),
            producer=producer,
        )


def read_status(settings: Settings, run_id: str) -> StatusSnapshot | None:
    """The writer's latest status snapshot of ``run_id`` from Redis (None before its first one)."""
    client = broker.connect(broker.require_url(settings))
    try:
        return broker.read_status(client, run_id)
    finally:
        client.close()


def probe_liveness(settings: Settings, timeout_s: float = INSPECT_TIMEOUT_S) -> Liveness:
    """Whether a writer is alive (its heartbeat) and which hardware kinds live workers consume now.

    Raises:
        BrokerError: the broker is unreachable.
    """
    from accelerate_core import liveness

    url = broker.require_url(settings)
    client = broker.connect(url)
    try:
        writer = liveness.read_writer(client) is not None
    except Exception as e:  # redis errors
        raise broker.broker_error(url, e) from e
    finally:
        client.close()
    return Liveness(writer=writer, served=consumed_queues(settings, timeout_s))


def follow(
    settings: Settings,
    run_id: str,
    *,
    on_progress: Callable[[StatusSnapshot], None] | None = None,
    poll_s: float = POLL_EVERY_S,
    probe_every_s: float = PROBE_EVERY_S,
) -> StatusSnapshot:
    """Wait until the writer reports ``run_id`` done; call ``on_progress`` with each new snapshot.

    Never waits forever: :class:`scheduler.stall.StallWatch` decides when the run stalled (no progress for
    ``settings.stall_s``, no live writer, no live worker for a kind with unfinished jobs).

    Raises:
        RunStalledError: the run stalled (the message says why and what to do).
        BrokerError: the broker became unreachable.
    """
    watch = StallWatch(run_id, settings.stall_s, settings.queue_for, started=time.monotonic())
    misses, probed_at = 0, -1e9
    while True:
        live: Liveness | None = None
        try:
            snap = read_status(settings, run_id)
            if time.monotonic() - probed_at >= probe_every_s:
                probed_at = time.monotonic()
                live = probe_liveness(settings)
            misses = 0
        except BrokerError:
            misses += 1  # a busy broker machine may miss one poll; a gone broker misses them all
            if misses >= FOLLOW_MISSES:
                raise
            snap = None
        if snap is not None:
            if on_progress is not None:
                on_progress(snap)
            if snap.phase_done and (snap.report_dir or snap.report_error):
                return snap
        stalled = watch.observe(snap, live, time.monotonic())
        if stalled:
            raise RunStalledError(stalled)
        time.sleep(poll_s)


def run_remote(settings: Settings, plan: RunPlan, wait: bool) -> str:
    """Send ``plan`` to the fleet; return its run id at once, or when it is done under ``wait``.

    Under ``wait`` a progress bar follows the writer's status snapshots (on a terminal).

    Raises:
        ConfigError: no broker, or no fleet key, configured.
        BrokerError: the broker is unreachable.
        RunStalledError: under ``wait``, the run stalled.
    """
    dispatch(settings, plan)
    _warn_unserved(settings, plan)
    if wait:
        follow_with_bar(settings, plan.run_id, len(plan.jobs))
    return plan.run_id


def resume_remote(settings: Settings, run_id: str, *, reply_wait_s: float = REPLY_WAIT_S) -> ReconcileReport | None:
    """Ask the writer to reconcile ``run_id`` now (``accel run --resume`` on a fleet) and return its reply.

    The writer re-sends every job of the run without a terminal row and without a live message (task id =
    job key, so a job sent twice is one row).

    A run another scheduler is still sending is resumed once that one is done (or killed: its dispatch mark
    expires), since until then its unsent jobs are not lost.

    Returns:
        The writer's reconciliation, or None when no writer is alive or none answered within ``reply_wait_s``
        (the request stays: a writer serves it when it starts).

    Raises:
        UnknownRunError: the writer's store has no such run.
        BrokerError: the broker is unreachable.
    """
    from accelerate_core import liveness

    url = broker.require_url(settings)
    client = broker.connect(url)
    try:
        _wait_for_dispatch(client, run_id)
        reconcile.request(client, run_id)
        if liveness.read_writer(client) is None:
            return None  # nobody to answer now; the request waits for the next writer
        deadline = time.monotonic() + reply_wait_s
        report = reconcile.read_reply(client, run_id)
        while report is None and time.monotonic() < deadline:
            time.sleep(POLL_EVERY_S)
            report = reconcile.read_reply(client, run_id)
    except Exception as e:  # redis errors
        raise broker.broker_error(url, e) from e
    finally:
        client.close()
    if report is not None and not report.known:
        raise UnknownRunError(reconcile.describe(report))
    return report


def _wait_for_dispatch(client: redis.Redis, run_id: str) -> None:
    """Wait while another scheduler still sends ``run_id``'s jobs (until it is done or its mark expires)."""
    holder = reconcile.dispatching(client, run_id)
    if holder is None:
        return
    logger.warning(
        "run %s is still being sent by %s: resuming once it is done, or %d s after it stopped",
        run_id, holder, DISPATCH_TTL_S,
    )  # fmt: skip
    while reconcile.dispatching(client, run_id) is not None:
        time.sleep(POLL_EVERY_S)


def _warn_unserved(settings: Settings, plan: RunPlan) -> None:
    """Say so when a queue the plan needs (a kind's, a device model's) has no live worker: its jobs wait in Redis
    until one joins."""
    needed = {hardware_kind(j.target) for j in plan.jobs}
    served = consumed_queues(settings)
    for target in sorted(t for t in needed if settings.queue_for(t) not in served):
        logger.warning(
            "no live worker consumes %s: its jobs wait there until one joins (%s)",
            settings.queue_for(target),
            start_hint(target),
        )


def follow_with_bar(settings: Settings, run_id: str, total: int) -> StatusSnapshot:
    """:func:`follow` with a progress bar on a terminal (its total follows the writer's snapshots)."""
    from scheduler.cli.common import progress

    with progress(total, f"run {run_id}") as bar:
        task = bar.task_ids[0]

        def update(snap: StatusSnapshot) -> None:
            failed = snap.failures_total
            bar.update(task, total=snap.total or total, completed=snap.terminal,
                       detail=f"{failed} failed" if failed else "")  # fmt: skip

        return follow(settings, run_id, on_progress=update)

"""Dispatch a planned run to the fleet: by task name over the Redis broker, never importing ``workers``.

The scheduler builds a minimal Celery *client* app from the settings (JSON only, sent events on for
Flower, no result backend) and sends:

1. ``accel.record_run`` (queue ``results``): the writer records the run and its jobs as ``queued``;
2. ``accel.record_result`` with the ``skipped`` results of jobs the plan does not run;
3. one ``accel.run_job`` per runnable job to ``hw.<kind>``, with the job key as the task id (a job
   sent twice is still one row) and Celery time limits from the job's own (``accelerate_core.limits``).

Every payload is a contract encoded by :mod:`accelerate_core.wire`; broker connections and their errors
come from :mod:`accelerate_core.broker`, shared with the workers and the writer.

The writer consumes ``results`` in order, so the run is recorded before any of its results. Progress
comes back through the writer's status snapshot in Redis (``acc:status:<run>``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from accelerate_core import broker, wire
from accelerate_core.config import Settings
from accelerate_core.constants import HARDWARE_KINDS, TASK_RECORD_RESULT, TASK_RECORD_RUN, TASK_RUN_JOB
from accelerate_core.contracts import JobSpec, RunPlan, StatusSnapshot
from accelerate_core.errors import BrokerError
from accelerate_core.limits import backstop_limits

if TYPE_CHECKING:
    from celery import Celery

logger = logging.getLogger(__name__)

INSPECT_TIMEOUT_S = 1.0
"""How long a broadcast to the live workers waits for their replies, in seconds."""

POLL_EVERY_S = 0.5
"""How often ``--wait`` reads the run's status snapshot, in seconds."""

FOLLOW_MISSES = 10
"""``--wait`` gives up after this many polls in a row found the broker unreachable."""


def client_app(settings: Settings, *, sent_events: bool = True) -> Celery:
    """A minimal Celery app that only sends tasks by name and broadcasts to workers.

    Args:
        settings: the broker.
        sent_events: announce each sent task to Flower (off for the writer's messages: the writer
            takes them off the queue itself, so Flower would list them as sent forever).
    """
    from celery import Celery

    app = Celery("accel-client", set_as_current=False)
    app.conf.update(
        broker_url=broker.require_url(settings),
        broker_connection_retry_on_startup=False,
        broker_connection_timeout=3.0,
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_send_sent_event=sent_events,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
    )
    return app


def live_queues(settings: Settings, timeout_s: float = INSPECT_TIMEOUT_S) -> dict[str, list[str]]:
    """The queues each live worker consumes now: ``{node name: [queue, ...]}`` (empty: none alive)."""
    url = broker.require_url(settings)
    broker.check(url)
    app = client_app(settings)
    try:
        replies = app.control.inspect(timeout=timeout_s).active_queues() or {}
    except Exception as e:  # kombu raises its own connection errors
        raise broker.broker_error(url, e) from e
    finally:
        app.close()
    return {node: [q.get("name", "") for q in queues] for node, queues in replies.items()}


def live_hardware(settings: Settings, timeout_s: float = INSPECT_TIMEOUT_S) -> list[str]:
    """``--hardware auto`` on a fleet: the kinds whose queues live workers consume right now."""
    consumed = {q for queues in live_queues(settings, timeout_s).values() for q in queues}
    return [kind for kind in HARDWARE_KINDS if settings.queue_for(kind) in consumed]


def live_nodes(settings: Settings, timeout_s: float = INSPECT_TIMEOUT_S) -> list[str]:
    """The node names of every live worker (writer included)."""
    return sorted(live_queues(settings, timeout_s))


def job_labels(spec: JobSpec) -> dict[str, Any]:
    """What Flower shows of a job (the full spec, template body included, is too long to read)."""
    return {"model_type": spec.model_type, "hardware": spec.hardware, "kind": spec.kind, "run_id": spec.run_id}


def dispatch(settings: Settings, plan: RunPlan, app: Celery | None = None) -> int:
    """Record ``plan`` through the writer and send each runnable job to its hardware queue.

    Returns:
        The number of jobs sent.

    Raises:
        BrokerError: the broker is unreachable.
    """
    url = broker.require_url(settings)
    broker.check(url)
    own = app is None
    app = app or client_app(settings)
    quiet = client_app(settings, sent_events=False)
    jobs = plan.runnable()
    try:
        with quiet.producer_or_acquire() as producer:
            _send_run(quiet, settings, plan, producer)
        with app.producer_or_acquire() as producer:
            for spec in jobs:
                soft, hard = backstop_limits(spec.limits.hard_s)
                app.send_task(
                    TASK_RUN_JOB,
                    kwargs={"spec": wire.encode(spec)},
                    task_id=spec.key,
                    queue=settings.queue_for(spec.hardware),
                    soft_time_limit=soft,
                    time_limit=hard,
                    kwargsrepr=repr(job_labels(spec)),
                    producer=producer,
                )
    except BrokerError:
        raise
    except Exception as e:
        raise broker.broker_error(url, e) from e
    finally:
        quiet.close()
        if own:
            app.close()
    logger.info("run %s: %d jobs sent (%d skipped)", plan.run_id, len(jobs), len(plan.jobs) - len(jobs))
    return len(jobs)


def _send_run(app: Celery, settings: Settings, plan: RunPlan, producer: Any) -> None:
    app.send_task(
        TASK_RECORD_RUN,
        kwargs={"plan": wire.encode(plan)},
        queue=settings.results_queue,
        kwargsrepr=repr({"run_id": plan.run_id, "phase": plan.phase, "jobs": len(plan.jobs)}),
        producer=producer,
    )
    skipped = plan.skipped_results(now=time.time())
    if skipped:
        app.send_task(
            TASK_RECORD_RESULT,
            kwargs={"results": [wire.encode(r) for r in skipped]},
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


def follow(
    settings: Settings,
    run_id: str,
    *,
    on_progress: Callable[[StatusSnapshot], None] | None = None,
    poll_s: float = POLL_EVERY_S,
    timeout_s: float | None = None,
) -> StatusSnapshot:
    """Wait until the writer reports ``run_id`` done; call ``on_progress`` with each new snapshot.

    Raises:
        BrokerError: the broker became unreachable, or ``timeout_s`` passed first.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    misses = 0
    while True:
        try:
            snap = read_status(settings, run_id)
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
        if deadline is not None and time.monotonic() > deadline:
            raise BrokerError(
                f"run {run_id} not done after {timeout_s:.0f} s: check `accel status {run_id}` and Flower"
            )
        time.sleep(poll_s)


def run_remote(settings: Settings, plan: RunPlan, wait: bool) -> str:
    """Send ``plan`` to the fleet; return its run id at once, or when it is done under ``wait``.

    Under ``wait`` a progress bar follows the writer's status snapshots (on a terminal).

    Raises:
        ConfigError: no broker configured.
        BrokerError: the broker is unreachable.
    """
    dispatch(settings, plan)
    _warn_unserved(settings, plan)
    if wait:
        _follow_with_bar(settings, plan)
    return plan.run_id


def _warn_unserved(settings: Settings, plan: RunPlan) -> None:
    """Say so when a kind the plan needs has no live worker: its jobs wait in Redis until one joins."""
    needed = {j.hardware for j in plan.jobs}
    served = set(live_hardware(settings))
    for kind in sorted(needed - served):
        logger.warning(
            "no live worker consumes %s: its jobs wait there until one joins (accel worker --hardware %s)",
            settings.queue_for(kind),
            kind,
        )


def _follow_with_bar(settings: Settings, plan: RunPlan) -> None:
    from scheduler.cli.common import progress

    total = len(plan.jobs)
    with progress(total, f"run {plan.run_id}") as bar:
        task = bar.task_ids[0]

        def update(snap: StatusSnapshot) -> None:
            failed = snap.failures_total
            bar.update(task, completed=snap.terminal, detail=f"{failed} failed" if failed else "")

        follow(settings, plan.run_id, on_progress=update)

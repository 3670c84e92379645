"""The Celery app of the fleet, built from :class:`~accelerate_core.config.Settings`.

What the configuration guarantees, and why:

- JSON only, in and out: pickle would let anyone who reaches Redis run code on every worker.
- ``acks_late`` + prefetch 1: a job is acknowledged only after it finished, and a worker holds at
  most one job it has not started, so a dead worker loses nothing and hoards nothing.
- ``visibility_timeout`` longer than the longest hard time limit: Redis hands an unacknowledged
  job to another worker only after this long, so a slow job is never run twice at once.
- ``reject_on_worker_lost``: a job whose pool process was killed goes back to its queue at once;
  our own cap (:mod:`workers.tasks`, ``acc:deliveries:<key>``) stops a job that kills every worker
  it lands on after ``settings.redelivery_cap`` deliveries and records it as ``redelivery-cap``.
- Celery time limits sit *above* the runner's own hard limit (which kills the job's child and records
  ``timeout``): they are the backstop should the runner itself hang (the rule: ``accelerate_core.limits``).
  A pool process killed at Celery's hard limit is not acknowledged: the job is redelivered and, past the cap,
  recorded as ``redelivery-cap``, so every planned job still ends with a row.
- A broker at ``maxmemory`` (``noeviction``) or out of reach pauses a node, never ends it: its transport
  (:mod:`workers.transport`) waits out a full broker, it reconnects for as long as it takes, and a result the
  broker refuses is sent again with backoff (:func:`workers.tasks.send_result`). A job whose hard limit would
  reach this node's visibility timeout runs with one cut to fit (``workers.tasks.fit_limits``).
- Task events (and sent events) on, so Flower shows the fleet live; no result backend: results
  travel to the writer as tasks of their own and land in DuckDB.
- Routes: a queue per hardware kind (``hw.cpu``, ``hw.cuda``, ...) and ``results`` for the writer; each
  node also consumes its own direct queue (``worker_direct``), so a smoke test reaches every node.

``workers.app:app`` is the app of this process, built on first use from ``Settings.load()`` (that
is, ``ACCEL_CONFIG`` / ``ACCEL_*`` variables), so ``celery -A workers.app:app ...`` works.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from accelerate_core import broker
from accelerate_core.config import Settings
from accelerate_core.constants import (
    TASK_CANCEL_RUN,
    TASK_RECORD_RESULT,
    TASK_RECORD_RUN,
    TASK_REGISTER_WORKER,
    WORKER_KINDS,
)

if TYPE_CHECKING:
    from celery import Celery

logger = logging.getLogger(__name__)


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration of every fleet process (workers, writer, Flower's view)."""
    results = {"queue": settings.results_queue}
    return {
        "broker_url": broker.require_url(settings),
        "broker_connection_retry_on_startup": True,
        # A node never gives up on its broker (a restart, a network cut): it reconnects for as long as it takes.
        "broker_connection_max_retries": None,
        # kombu's Redis transport, except that a full broker (maxmemory) pauses the node instead of ending it.
        "broker_transport": "workers.transport:Transport",
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout_s,
            # kombu scans for messages past their visibility timeout on every 10th 10-s tick by default: a
            # job of a node killed whole would wait up to 100 s more before another node gets it. Every tick.
            "unacked_restore_throttle": 1,
        },
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "result_accept_content": ["json"],
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,
        # A task killed by Celery's hard limit goes back to its queue (then counts toward the cap)
        # instead of being acknowledged without a result; run_job records every other failure itself.
        "task_acks_on_failure_or_timeout": False,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Each node also consumes a queue of its own (``<node>.dq2``): `accel run --dry` reaches every node.
        "worker_direct": True,
        "worker_send_task_events": True,
        # Task events in one message every 0.1 s instead of two per job (workers.consumer).
        "worker_consumer": "workers.consumer:Consumer",
        "task_send_sent_event": True,
        "task_default_queue": settings.queue_for("cpu"),
        "task_routes": {
            TASK_RECORD_RESULT: results,
            TASK_RECORD_RUN: results,
            TASK_REGISTER_WORKER: results,
            TASK_CANCEL_RUN: results,
        },
        "task_create_missing_queues": True,
        "worker_hijack_root_logger": True,
        "worker_redirect_stdouts": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "accel_hardware_queues": [settings.queue_for(kind) for kind in WORKER_KINDS],
    }


def make_app(settings: Settings) -> Celery:
    """Build the fleet's Celery app from ``settings`` and register its tasks.

    Raises:
        ConfigError: no broker URL is configured.
    """
    from celery import Celery

    from workers import tasks

    app = Celery("accel", set_as_current=False)
    app.conf.update(celery_config(settings))
    tasks.register(app, settings)
    return app


_app: Celery | None = None


def get_app() -> Celery:
    """This process's app, built once from ``Settings.load()`` (the environment and ``ACCEL_CONFIG``)."""
    global _app
    if _app is None:
        _app = make_app(Settings.load())
    return _app


def __getattr__(name: str) -> Any:
    # ``celery -A workers.app:app`` looks the attribute up; build the app only then.
    if name == "app":
        return get_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

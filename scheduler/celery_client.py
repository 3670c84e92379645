"""The scheduler's Celery client: a minimal app that sends tasks by name and broadcasts to workers.

It never imports ``workers``: the scheduler knows the fleet's tasks by name only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from accelerate_core import broker
from accelerate_core.config import Settings

if TYPE_CHECKING:
    from celery import Celery

INSPECT_TIMEOUT_S = 1.0
"""How long a broadcast to the live workers waits for their replies, in seconds."""


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

"""The worker nodes' Celery consumer: task events published at most every :data:`EVENT_FLUSH_S`, in one message.

Celery buffers a node's task events (``task-received``, ``-started``, ``-succeeded``, ...) and publishes the
buffer as one ``task.multi`` message on the next turn of the node's event loop: about two Redis ``PUBLISH``es
per job, each a round trip and kombu's publish machinery (a third of the node's main-process CPU on dry jobs,
where the job itself costs nothing). Here the first buffered event schedules one flush :data:`EVENT_FLUSH_S`
later and every event until then joins it: the same events in the same order, a fraction of a second later,
which a live console does not notice. Celery still flushes a buffer that reaches its limit at once, and the
consumer flushes what is buffered before it shuts down.

Selected by ``worker_consumer`` in :func:`workers.app.celery_config`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

__all__ = ["EVENT_FLUSH_S", "Consumer", "EventFlush"]

EVENT_FLUSH_S = 0.1
"""How long a node's first buffered task event waits for others before they are published together, in seconds."""

_STALE_S = 10 * EVENT_FLUSH_S
"""A flush scheduled this long ago that never ran (its timer went with a lost connection) is scheduled again."""


class EventFlush:
    """One pending flush at a time: :meth:`request` schedules it unless one is due already; :meth:`run` runs it.

    Args:
        call_later: schedules a callback after a delay (the hub's ``call_later``).
        flush: publishes the buffered events.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        call_later: Callable[[float, Callable[[], None]], object],
        flush: Callable[[], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.call_later = call_later
        self.flush = flush
        self.clock = clock
        self.scheduled_at: float | None = None

    def request(self) -> None:
        """An event was buffered: make sure a flush runs within :data:`EVENT_FLUSH_S`."""
        now = self.clock()
        if self.scheduled_at is not None and now - self.scheduled_at < _STALE_S:
            return
        self.scheduled_at = now
        self.call_later(EVENT_FLUSH_S, self.run)

    def run(self) -> None:
        """Publish what is buffered now (also when none is scheduled: at shutdown)."""
        self.scheduled_at = None
        self.flush()


class Consumer(CeleryConsumer):  # type: ignore[misc]
    """Celery's consumer, flushing task events through one :class:`EventFlush`."""

    _event_flush: EventFlush | None = None

    def on_send_event_buffered(self) -> None:
        hub: Any = self.hub
        if hub is None:
            return
        if self._event_flush is None:
            self._event_flush = EventFlush(hub.call_later, self._flush_events)
        self._event_flush.request()

    def shutdown(self) -> None:
        # Celery's own flush runs on the next loop turn, which a stopping consumer may not have.
        with contextlib.suppress(Exception):
            self._flush_events()
        super().shutdown()

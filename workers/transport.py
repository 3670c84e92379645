"""The workers' Redis transport: kombu's, except that a full broker pauses a node instead of ending it.

Redis at ``maxmemory`` with ``noeviction`` (the fleet's setting: a broker must never evict jobs) refuses
every transaction that writes, and kombu's ack, reject and "remember the message I took" are
transactions. A refusal there ends the worker's main process (``Unrecoverable error: OutOfMemoryError``),
and a message taken off its queue but not yet remembered is gone with it. Here those steps wait instead,
retrying with backoff (logged once a minute) until the broker has room again (the writer drains
``results``, or its operator raises ``maxmemory``). Waiting blocks the node's event loop: while its broker
is full a node takes no new job, which is what it should do.

The periodic scan that hands long-unacknowledged messages back to their queue is skipped while the
broker is full (it runs again on its next turn).

Selected by ``broker_transport`` in :func:`workers.app.celery_config`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kombu.transport import redis as kombu_redis

from accelerate_core import broker

__all__ = ["FULL_RETRY_MAX_S", "Channel", "QoS", "Transport", "wait_out_full_broker"]

logger = logging.getLogger(__name__)

FULL_RETRY_FIRST_S = 0.2
"""First wait before retrying a step the full broker refused, in seconds (then doubling)."""

FULL_RETRY_MAX_S = 5.0
"""Longest wait between two tries of a step the full broker refused, in seconds."""

LOG_EVERY_S = 60.0
"""How often a node still waiting for a full broker says so again, in seconds."""

T = TypeVar("T")


def wait_out_full_broker(step: Callable[[], T], what: str, *, sleep: Callable[[float], None] | None = None) -> T:
    """Run ``step``; while the broker refuses it for lack of memory, wait and try again.

    Args:
        step: one broker transaction.
        what: what it does, for the log line.
        sleep: waits (default ``time.sleep``; tests pass their own).

    Raises:
        Exception: whatever ``step`` raises that is not the broker being full.
    """
    wait = sleep or time.sleep
    delay = FULL_RETRY_FIRST_S
    waited = 0.0
    logged_at = -LOG_EVERY_S
    while True:
        try:
            return step()
        except Exception as e:
            if not broker.is_full(e):
                raise
            if waited - logged_at >= LOG_EVERY_S:
                logger.warning(
                    "the broker is full (maxmemory): cannot %s; waiting for room (%.0f s so far): start the writer "
                    "so it drains the results queue, or raise maxmemory",
                    what,
                    waited,
                )
                logged_at = waited
            wait(delay)
            waited += delay
            delay = min(FULL_RETRY_MAX_S, delay * 2)


_BaseQoS: Any = kombu_redis.QoS  # untyped: its methods are called through this name
_BaseChannel: Any = kombu_redis.Channel


class QoS(kombu_redis.QoS):  # type: ignore[misc]
    """kombu's unacked-message bookkeeping, waiting out a full broker instead of raising."""

    def append(self, message: Any, delivery_tag: Any) -> None:
        wait_out_full_broker(lambda: _BaseQoS.append(self, message, delivery_tag), "record the job it took")

    def ack(self, delivery_tag: Any) -> None:
        wait_out_full_broker(lambda: _BaseQoS.ack(self, delivery_tag), "acknowledge a finished job")

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        wait_out_full_broker(lambda: _BaseQoS.reject(self, delivery_tag, requeue=requeue), "hand a job back")

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        try:
            _BaseQoS.restore_visible(self, *args, **kwargs)
        except Exception as e:
            if not broker.is_full(e):
                raise
            logger.debug("broker full: the scan for unacknowledged messages waits for its next turn")


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    """kombu's Redis channel with the waiting :class:`QoS`, reusing one Redis client for its plain commands.

    kombu builds a new ``redis.Redis`` for every command it sends outside its event loop (each task event a node
    publishes, each ack): about 0.5 ms of CPU each, for an object that only wraps the channel's connection pool
    (which hands out the connections and is fork- and thread-safe). One client per pool does the same work.
    """

    QoS = QoS
    _plain_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return _BaseChannel._create_client(self, asynchronous=True)
        pool = self.pool
        if self._plain_client is None or self._plain_client.connection_pool is not pool:
            self._plain_client = _BaseChannel._create_client(self)
        return self._plain_client


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    """kombu's Redis transport with the waiting :class:`Channel`."""

    Channel = Channel

"""Is a results writer alive, and how far behind is it: the writer's heartbeat in Redis.

The writer publishes a :class:`~accelerate_core.contracts.WriterHeartbeat` at
:data:`~accelerate_core.constants.WRITER_HEARTBEAT_KEY` every
:data:`~accelerate_core.constants.WRITER_HEARTBEAT_EVERY_S` with a lifetime of
:data:`~accelerate_core.constants.WRITER_HEARTBEAT_TTL_S`: a writer that died or stalls (SIGSTOP, a
machine gone) stops refreshing it and the key expires. :func:`read_writer` is the one reader
(``accel status``, ``accel run --wait``'s stall check, the "no writer alive" warning, finding the writer's
results service). The key's lifetime is the test, not the clocks of two machines.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from accelerate_core import wire
from accelerate_core.constants import WRITER_HEARTBEAT_KEY, WRITER_HEARTBEAT_TTL_S
from accelerate_core.contracts import WriterHeartbeat
from accelerate_core.errors import ContractError

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)


def publish_writer(client: redis.Redis, beat: WriterHeartbeat, ttl_s: int = WRITER_HEARTBEAT_TTL_S) -> None:
    """Store the writer's heartbeat for ``ttl_s`` seconds.

    Raises:
        redis.RedisError: the broker refused it (the writer logs it and carries on).
    """
    client.set(WRITER_HEARTBEAT_KEY, json.dumps(wire.encode(beat), sort_keys=True), ex=ttl_s)


def read_writer(client: redis.Redis) -> WriterHeartbeat | None:
    """The live writer's latest heartbeat; None when no writer is alive (or its heartbeat is unreadable).

    Raises:
        redis.RedisError: the broker cannot be read (callers translate it, e.g. ``broker.broker_error``).
    """
    raw = client.get(WRITER_HEARTBEAT_KEY)
    if raw is None:
        return None
    try:
        return wire.decode(WriterHeartbeat, json.loads(raw))  # type: ignore[arg-type]
    except (ValueError, ContractError) as e:
        logger.warning("the writer's heartbeat in redis is unreadable: %s", e)
        return None


def describe(beat: WriterHeartbeat | None) -> str:
    """One line about the writer for a person (``accel status``)."""
    if beat is None:
        return "writer: none alive (start one: accel writer)"
    oldest = f", oldest result waiting {beat.oldest_s:.0f} s" if beat.oldest_s is not None else ""
    line = f"writer: {beat.state} on {beat.host} (pid {beat.pid}), backlog {beat.backlog}{oldest}"
    if beat.dead_letters:
        line += f", {beat.dead_letters} dead letters (accel writer dead-letters)"
    if beat.last_error:
        line += f"; last error: {beat.last_error}"
    return line

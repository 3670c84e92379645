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
import time
from typing import TYPE_CHECKING

from accelerate_core import wire
from accelerate_core.celery_message import envelope, task_kwargs
from accelerate_core.constants import (
    TASK_RECORD_RESULT,
    WRITER_HEARTBEAT_KEY,
    WRITER_HEARTBEAT_TTL_S,
    WRITER_PROCESSING_KEY,
)
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


PEEK_MESSAGES = 16
"""How many of the oldest waiting messages the backlog reader looks at for the oldest result."""

PEEK_MAX_BYTES = 1 << 20
"""Waiting messages longer than this (bytes) are passed over unread by the backlog reader: a run message
(``record_run``: ~6 KB a job, tens of MB for a big run) or a big batch of ``skipped`` results. A worker's
result is a few KB."""

# The queue's and the claimed batch's lengths, then those of the PEEK_MESSAGES oldest waiting messages (claimed
# batch first, then the queue, each from its tail) that are at most PEEK_MAX_BYTES long: the big ones never
# leave Redis.
_PEEK_LUA = """
local out = {redis.call('LLEN', KEYS[1]), redis.call('LLEN', KEYS[2])}
local left = tonumber(ARGV[1])
for _, key in ipairs({KEYS[2], KEYS[1]}) do
  local i = -1
  while left > 0 do
    local raw = redis.call('LINDEX', key, i)
    if not raw then break end
    if #raw <= tonumber(ARGV[2]) then out[#out + 1] = raw end
    left = left - 1
    i = i - 1
  end
end
return out
"""


def results_backlog(client: redis.Redis, queue: str) -> tuple[int, float | None]:
    """Messages waiting for the writer (queue + claimed batch), and how long the oldest waiting result is done.

    Read from the queue itself, so it is right with no writer alive too, in one server-side script. The
    oldest waiting messages are the claimed batch's first ones, then the queue's tail; the first
    ``record_result`` among the :data:`PEEK_MESSAGES` oldest gives the age (its ``finished_at``). Other
    messages (a run, a worker) say nothing about age and are told by their task name without decoding their
    body; one over :data:`PEEK_MAX_BYTES` is not even read (a heartbeat every second must not decode a run's
    megabytes).

    Raises:
        redis.RedisError: the broker cannot be read.
    """
    reply = client.eval(_PEEK_LUA, 2, queue, WRITER_PROCESSING_KEY, PEEK_MESSAGES, PEEK_MAX_BYTES)  # type: ignore[no-untyped-call]
    waiting, claimed, *oldest = reply
    finished = next((f for f in map(_finished_at, oldest) if f is not None), None)
    age = max(0.0, time.time() - finished) if finished is not None else None
    return int(waiting) + int(claimed), age


def _finished_at(raw: bytes) -> float | None:
    """The ``finished_at`` of the first result in a raw ``record_result`` message, or None (another task's
    message, or unreadable); the body is decoded only for a ``record_result``."""
    message = envelope(raw)
    if message is None or message["headers"].get("task") != TASK_RECORD_RESULT:
        return None
    try:
        kwargs = task_kwargs(message)
    except ContractError:
        return None
    result = kwargs.get("result") or (kwargs.get("results") or [None])[0]
    value = result.get("finished_at") if isinstance(result, dict) else None
    return float(value) if isinstance(value, int | float) else None


def describe(beat: WriterHeartbeat | None) -> str:
    """One line about the writer for a person (``accel status``)."""
    if beat is None:
        return "writer: none alive (start one: accel writer)"
    oldest = f", oldest result waiting {beat.oldest_s:.0f} s" if beat.oldest_s is not None else ""
    line = f"writer: {beat.state} on {beat.host} (pid {beat.pid}), backlog {beat.backlog}{oldest}"
    if beat.dead_letters:
        line += f", {beat.dead_letters} dead letters (accel dead-letters)"
    if beat.last_error:
        line += f"; last error: {beat.last_error}"
    return line

"""The writer's dead letters: messages on ``results`` it could not decode or apply, counted and kept in Redis.

A message the writer cannot use (not JSON, an undecodable body, a payload its contract refuses, a result
for a run the store does not know) would fail the same way on every try: the writer sets it aside here
and writes the rest of its batch, instead of retrying the batch forever or dropping the message unseen.
The list keeps the latest :data:`~accelerate_core.constants.DEAD_LETTER_KEEP` (newest first); the counter
counts every one. ``accel dead-letters`` reads them; the writer's heartbeat carries the count.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING

from accelerate_core import wire
from accelerate_core.constants import DEAD_LETTER_COUNT_KEY, DEAD_LETTER_KEEP, DEAD_LETTER_KEY, DEAD_LETTER_MAX_CHARS
from accelerate_core.contracts import DeadLetter
from accelerate_core.errors import ContractError

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)


def letter(
    message: bytes | str, reason: str, *, task: str | None = None, run_id: str | None = None, now: float | None = None
) -> DeadLetter:
    """A dead letter of ``message`` (bytes that are not UTF-8 are kept with replacement characters)."""
    text = message.decode("utf-8", errors="replace") if isinstance(message, bytes) else message
    return DeadLetter(at=time.time() if now is None else now, reason=reason, message=text[:DEAD_LETTER_MAX_CHARS],
                      task=task, run_id=run_id)  # fmt: skip


def push(client: redis.Redis, dead: DeadLetter) -> int:
    """Keep ``dead`` (the list is trimmed to the newest ``DEAD_LETTER_KEEP``); return the count of all so far.

    Raises:
        redis.RedisError: the broker refused it.
    """
    pipe = client.pipeline(transaction=True)
    pipe.lpush(DEAD_LETTER_KEY, json.dumps(wire.encode(dead), sort_keys=True))
    pipe.ltrim(DEAD_LETTER_KEY, 0, DEAD_LETTER_KEEP - 1)
    pipe.incr(DEAD_LETTER_COUNT_KEY)
    return int(pipe.execute()[-1])


def count(client: redis.Redis) -> int:
    """How many messages were ever dead-lettered on this broker."""
    raw = client.get(DEAD_LETTER_COUNT_KEY)
    return int(raw) if raw is not None else 0  # type: ignore[arg-type]


def read(client: redis.Redis, limit: int = 20) -> list[DeadLetter]:
    """The newest ``limit`` dead letters, newest first (an unreadable entry is skipped, and logged)."""
    found: list[DeadLetter] = []
    for raw in client.lrange(DEAD_LETTER_KEY, 0, max(0, limit - 1)):  # type: ignore[union-attr]
        try:
            found.append(wire.decode(DeadLetter, json.loads(raw)))
        except (ValueError, ContractError) as e:
            logger.warning("a dead letter in redis is unreadable: %s", e)
    return found

"""Answers cached per store version: while the store has not changed, a request has the same answer.

The host says what the store's version is (:data:`StoreVersion`): the writer bumps a counter after each
commit; ``accel serve`` opens its file read-only, so nobody can change it and the version never moves
(:func:`unchanging`). Fifty readers asking for the same run between two commits then cost one read of
the store, and requests for the same answer that arrive while it is being read wait for that one read
instead of starting their own. Entries are dropped least recently used first, past ``max_bytes``.
Everything here runs on the service's IO loop thread, so it needs no lock.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass

StoreVersion = Callable[[], Hashable]
"""Returns the store's current version: it changes whenever the store may have changed (called per request)."""


def unchanging() -> int:
    """The version of a store nobody can write (a file this process opened read-only)."""
    return 0


@dataclass(frozen=True, slots=True)
class Answer:
    """A finished answer: body, content type and extra headers."""

    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()


class AnswerCache:
    """Answers by key, least recently used dropped first past ``max_bytes``; one computation per key at a time."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.hits = 0
        self._entries: OrderedDict[Hashable, Answer] = OrderedDict()
        self._pending: dict[Hashable, asyncio.Future[Answer]] = {}

    async def get(self, key: Hashable, compute: Callable[[], Awaitable[Answer]]) -> Answer:
        """The answer of ``key``: cached, being computed (then awaited), or computed now and kept."""
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return found
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # never "exception never retrieved"
        self._pending[key] = future
        try:
            answer = await compute()
        except BaseException as e:
            future.set_exception(e)
            raise
        finally:
            del self._pending[key]
        future.set_result(answer)
        self._keep(key, answer)
        return answer

    def _keep(self, key: Hashable, answer: Answer) -> None:
        if len(answer.body) > self.max_bytes:
            return
        self._entries[key] = answer
        self.size += len(answer.body)
        while self.size > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self.size -= len(dropped.body)

"""The writer's claim on the broker: its lock, and a keeper thread that renews it and publishes its heartbeat.

:class:`WriterLock` is redis-py's ``Lock``: a random owner token, renewed only by its owner (a Lua check
of the token), released atomically. A writer started while another's lock is live (a writer killed a
moment ago) waits for the lock, saying so in one line, instead of exiting. Before each write the writer
checks it still owns the lock (:meth:`WriterLock.check`, fencing): a writer that stalled past its lock's
lifetime (SIGSTOP) and woke to find another writer in its place writes nothing more.

The :class:`Keeper` is a thread, not the writer's loop: the loop can be busy for longer than the lock's
lifetime (a report build, a commit retried against a full disk), and the fleet must still see a live
writer and its lag. A writer that stalls as a whole stops its keeper too, so its lock and heartbeat expire.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from accelerate_core import liveness
from accelerate_core.constants import (
    WRITER_HEARTBEAT_EVERY_S,
    WRITER_HEARTBEAT_KEY,
    WRITER_LOCK_KEY,
)
from accelerate_core.contracts import WriterHeartbeat
from accelerate_core.errors import LockLostError

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)


@dataclass
class WriterState:
    """What the writer is doing, as its heartbeat tells the fleet (the loop sets it, the keeper reads it)."""

    state: str = "writing"
    dead_letters: int = 0
    duplicates: int = 0
    last_error: str | None = None
    api_url: str | None = None
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started_at: float = field(default_factory=time.time)


class WriterLock:
    """The one-writer-per-broker lock: redis-py's ``Lock`` (owner token, renewal, atomic release).

    Args:
        client: the broker.
        ttl_s: the lock's lifetime; the keeper renews it every beat, well within it.
        key: the lock's Redis key.
    """

    def __init__(self, client: redis.Redis, ttl_s: int, key: str = WRITER_LOCK_KEY) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.key = key
        self._lock = client.lock(key, timeout=ttl_s, thread_local=False)

    def acquire(self, stop: threading.Event, say: Callable[[str], None] = logger.warning) -> bool:
        """Take the lock, waiting (one line said through ``say``) while another writer's is live.

        Returns:
            True once held; False when ``stop`` was set first.
        """
        if self._lock.acquire(blocking=False):
            return True
        say(self.waiting_line())
        while not stop.is_set():
            if self._lock.acquire(blocking=True, blocking_timeout=0.5):
                logger.info("writer: the other writer's lock expired: this writer holds it now")
                return True
        return False

    def waiting_line(self) -> str:
        """What a writer waiting for the lock says: who holds it (from its heartbeat) and for how long at most."""
        left_ms = self.client.pttl(self.key)
        left = f"{max(0, int(left_ms)) / 1000:.0f} s" if isinstance(left_ms, int) and left_ms > 0 else "a moment"
        beat = liveness.read_writer(self.client)
        who = (f"the writer on {beat.host} (pid {beat.pid}, {beat.state})" if beat is not None
               else "a writer with no heartbeat (it died or stalls)")  # fmt: skip
        return (f"another writer holds this broker: {who}; waiting for its lock to expire (at most {left}, "
                f"ttl {self.ttl_s} s) before writing; stop this one if the other should keep writing")  # fmt: skip

    def renew(self) -> None:
        """Reset the lock's lifetime to ``ttl_s`` (only the owner can).

        Raises:
            LockLostError: the lock expired and another writer holds it, or nobody does.
        """
        from redis.exceptions import LockNotOwnedError

        try:
            self._lock.reacquire()
        except LockNotOwnedError as e:
            raise LockLostError(self._lost_line()) from e

    def check(self) -> None:
        """Fencing, before each write: raise unless this writer still owns the lock.

        Raises:
            LockLostError: another writer holds it (this one stalled past its lifetime), or nobody does.
        """
        if not self._lock.owned():
            raise LockLostError(self._lost_line())

    def _lost_line(self) -> str:
        return (
            f"this writer lost its lock (it stalled past the {self.ttl_s} s lifetime, and another writer may hold "
            "it now): it writes nothing more and stops; its unacknowledged batch stays queued"
        )

    def release(self) -> None:
        """Drop the lock if this writer still holds it (atomic: never another writer's)."""
        from redis.exceptions import LockError

        with contextlib.suppress(LockError):
            self._lock.release()


class Keeper:
    """Publishes the writer's heartbeat every ``every_s`` and calls ``renew`` (its lock) on the same beat.

    Args:
        client: the broker.
        queue: the results queue (its length is the backlog).
        state: the writer's state (read on each beat).
        renew: called on each beat before the heartbeat (the lock's renewal). When it raises
            :class:`LockLostError` the keeper stops beating (the heartbeat is the new writer's now) and
            sets :attr:`lost`.
        every_s: the beat.
    """

    def __init__(
        self,
        client: redis.Redis,
        queue: str,
        state: WriterState,
        *,
        renew: Callable[[], None] | None = None,
        every_s: float = WRITER_HEARTBEAT_EVERY_S,
    ) -> None:
        self.client = client
        self.queue = queue
        self.state = state
        self.renew = renew
        self.every_s = every_s
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="writer-keeper", daemon=True)

    def __enter__(self) -> Keeper:
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        import redis as redis_lib

        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        if self.lost.is_set():
            return
        try:  # a writer that stops says so at once; another writer's heartbeat stays
            beat = liveness.read_writer(self.client)
            if beat is not None and (beat.host, beat.pid) == (self.state.host, self.state.pid):
                self.client.delete(WRITER_HEARTBEAT_KEY)
        except redis_lib.RedisError as e:
            logger.warning("writer: cannot clear its heartbeat: %s", e)

    def beat(self) -> None:
        """Renew, then publish one heartbeat; a broker failure is logged, never raised."""
        import redis as redis_lib

        try:
            if self.renew is not None:
                self.renew()
        except LockLostError as e:
            logger.error("writer: %s", e)
            self.lost.set()
            self._stop.set()
            return
        except redis_lib.RedisError as e:
            logger.warning("writer: cannot renew its lock: %s", e)
        try:
            waiting, oldest = liveness.results_backlog(self.client, self.queue)
            liveness.publish_writer(self.client, self.heartbeat(waiting, oldest))
        except redis_lib.RedisError as e:
            logger.warning("writer: cannot publish its heartbeat: %s", e)

    def heartbeat(self, waiting: int, oldest: float | None) -> WriterHeartbeat:
        """The heartbeat of the writer's current state."""
        s = self.state
        return WriterHeartbeat(
            host=s.host, pid=s.pid, started_at=s.started_at, at=time.time(), state=s.state, backlog=waiting,
            oldest_s=oldest, dead_letters=s.dead_letters, duplicates=s.duplicates, api_url=s.api_url,
            last_error=s.last_error,
        )  # fmt: skip

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.beat()

"""The read budget: while the host is busy, the service's reads take at most a share of one core.

The service runs inside the writer's process, and Python runs one thread at a time (the GIL): reads that
build answers take the interpreter, and the CPU, from the ingest thread. Lower thread priority alone does
not stop that (measured: two niced busy threads still halve the ingest rate). So while the host says it
is busy, a read thread that used ``t`` seconds of CPU rests ``t * (threads / share - 1)`` seconds before
its next read, and all reads together take at most ``share`` of one core. The rest comes before the next
read, not after this one: an answer is never held back. When the host is idle, reads run freely.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

MAX_REST_S = 5.0
"""The longest rest after one read (a read that took minutes must not park its thread for hours)."""


class ReadBudget:
    """Runs reads in the pool's threads, resting between them while ``busy()`` says the host is busy."""

    def __init__(self, share: float, threads: int, busy: Callable[[], bool] | None) -> None:
        self.factor = max(0.0, threads / share - 1.0)
        self.busy = busy
        self._owed = threading.local()
        self.rested_s = 0.0

    def run(self, fn: Callable[[], T]) -> T:
        """Rest what the last read of this thread left owed (while the host is busy), then run ``fn``."""
        owed = getattr(self._owed, "s", 0.0)
        if owed > 0 and self.busy is not None and self.busy():
            time.sleep(owed)
            self.rested_s += owed
        started = time.thread_time()
        try:
            return fn()
        finally:
            self._owed.s = min(MAX_REST_S, (time.thread_time() - started) * self.factor)

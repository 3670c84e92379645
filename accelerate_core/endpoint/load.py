"""The load generator: one concurrency level, closed loop or open loop, every request accounted for.

- **Closed loop** (default): ``concurrency`` clients; each sends its next request as soon as its last
  one ends, until ``requests`` have been sent or ``duration_s`` has passed (requests in flight then
  finish and count).
- **Open loop** (``rate``): requests are *scheduled* at ``rate`` per second, with exponential gaps
  (``poisson``, seeded) or equal gaps (``fixed``); at most ``concurrency`` are in flight, so a request
  whose slot is taken waits for one (its timing starts when it is sent, as in vLLM's benchmark; the
  level's ``late_s`` sums how far sends slipped behind the schedule).

``send(i)`` must return a sample for every ``i`` and never raise (``EndpointClient.stream_chat`` does
that), so ``len(samples)`` is exactly the number of requests sent.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from time import perf_counter

from accelerate_core.endpoint.sample import RequestSample

__all__ = ["LevelRun", "Send", "run_level"]

Send = Callable[[int], Awaitable[RequestSample]]
"""Sends request ``i`` (an index into the benchmark's prompts) and returns its sample."""


@dataclass(frozen=True, slots=True)
class LevelRun:
    """The raw outcome of one level: every sample, the wall time it took, how late open-loop sends were."""

    concurrency: int
    samples: list[RequestSample]
    started: float
    wall_s: float
    late_s: float = 0.0


async def run_level(
    send: Send,
    *,
    concurrency: int,
    requests: int | None,
    duration_s: float | None = None,
    rate: float | None = None,
    arrival: str = "poisson",
    seed: int = 0,
    first_index: int = 0,
    clock: Callable[[], float] = perf_counter,
) -> LevelRun:
    """Run one level and return its samples (see the module docstring for the two loops).

    Args:
        send: sends request ``i``; never raises.
        concurrency: clients (closed loop) or the cap on requests in flight (open loop).
        requests: how many to send; None with ``duration_s`` to send until it has passed.
        duration_s: stop sending after this many seconds (when ``requests`` is None).
        rate: open-loop arrivals per second; None for the closed loop.
        arrival: ``poisson`` or ``fixed`` gaps (open loop only).
        seed: seeds the Poisson gaps.
        first_index: the index of this level's first request (levels use different prompts).
        clock: seconds, monotonic (tests pass their own).
    """
    started = clock()
    deadline = None if duration_s is None else started + duration_s
    indices = _indices(first_index, requests, deadline, clock)
    if rate is None:
        samples = await _closed(send, concurrency, indices)
        late = 0.0
    else:
        samples, late = await _open(send, concurrency, indices, _gaps(rate, arrival, seed), clock)
    return LevelRun(concurrency, samples, started, clock() - started, late)


def _indices(first: int, requests: int | None, deadline: float | None, clock: Callable[[], float]) -> Iterator[int]:
    """Request indices while the level may still send: ``requests`` of them, or until ``deadline``."""
    for i in itertools.count(first):
        if requests is not None and i - first >= requests:
            return
        if deadline is not None and clock() >= deadline:
            return
        yield i


async def _closed(send: Send, concurrency: int, indices: Iterator[int]) -> list[RequestSample]:
    samples: list[RequestSample] = []

    async def client() -> None:
        # One shared iterator: each client takes the next index when it is free (asyncio is single-threaded).
        for i in indices:
            samples.append(await send(i))

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return samples


def _gaps(rate: float, arrival: str, seed: int) -> Iterator[float]:
    rng = random.Random(seed)
    while True:
        yield rng.expovariate(rate) if arrival == "poisson" else 1.0 / rate


async def _open(
    send: Send, concurrency: int, indices: Iterator[int], gaps: Iterator[float], clock: Callable[[], float]
) -> tuple[list[RequestSample], float]:
    slots = asyncio.Semaphore(concurrency)
    samples: list[RequestSample] = []
    tasks: list[asyncio.Task[None]] = []
    late = 0.0

    async def one(i: int) -> None:
        try:
            samples.append(await send(i))
        finally:
            slots.release()

    due = clock()
    for i in indices:
        await asyncio.sleep(max(0.0, due - clock()))
        await slots.acquire()
        late += max(0.0, clock() - due)
        tasks.append(asyncio.create_task(one(i)))
        due += next(gaps)
    await asyncio.gather(*tasks)
    return samples, late

"""The latency loop: warm-up, then timed calls until both a minimum count and a minimum duration.

:func:`measure` runs ``warmup`` untimed calls, then times calls one by one and stops as soon as both
``min_iters`` calls and ``min_duration_s`` seconds of timed looping are reached, or at
``max_duration_s`` whatever the count (at least one call is always timed). Every raw sample is kept.

How one call is timed depends on the device (:func:`device_timing`):

- CPU: ``time.perf_counter`` around the call, nothing else, so the harness adds no bias over a bare
  ``perf_counter`` loop (``benchmarks/bench_harness_bias.py`` checks it);
- CUDA/ROCm: CUDA events recorded around the call, then ``synchronize`` on the end event; the events
  time the device work, not the Python launch overhead alone;
- MPS: ``torch.mps.synchronize()`` before and after the call, ``perf_counter`` around it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from accelerate_core.bench.stats import sample_stats

__all__ = ["STOP_MAX_DURATION", "STOP_RULES_MET", "CallTimer", "Samples", "device_timing", "measure"]

STOP_RULES_MET = "min-iters-and-duration"
"""``Samples.stopped_by`` when both ``min_iters`` and ``min_duration_s`` were reached."""

STOP_MAX_DURATION = "max-duration"
"""``Samples.stopped_by`` when ``max_duration_s`` cut the loop short."""


class CallTimer(Protocol):
    """Times one call of ``fn`` on a device and returns seconds."""

    def __call__(self, fn: Callable[[], object]) -> float: ...


@dataclass(frozen=True, slots=True)
class Samples:
    """Raw timings of one measured call, in seconds, with how the loop ended."""

    values: list[float]
    warmup: int
    loop_s: float
    stopped_by: str
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """``n``, ``p50``, ``p90``, ``p99``, ``mean``, ``stdev`` of the values."""
        return sample_stats(self.values)


def measure(
    fn: Callable[[], object],
    *,
    sync: Callable[[], None] | None = None,
    warmup: int,
    min_iters: int,
    min_duration_s: float,
    max_duration_s: float,
    timer: CallTimer | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Samples:
    """Time ``fn`` until both ``min_iters`` calls and ``min_duration_s`` seconds, at most ``max_duration_s``.

    Args:
        fn: the call to time (a forward pass, a ``generate``).
        sync: waits for queued device work; called after each warm-up call and around each timed call
            (None on CPU).
        warmup: untimed calls first.
        min_iters: timed calls needed before the loop may stop.
        min_duration_s: seconds of timed looping needed before the loop may stop.
        max_duration_s: the loop stops once this much time has passed, even below ``min_iters``.
        timer: times one call on a device (CUDA events); default ``clock`` around the call.
        clock: the clock (tests pass a fake one).

    Returns:
        The raw samples.
    """
    if min_iters < 1 or warmup < 0 or not 0 <= min_duration_s <= max_duration_s:
        raise ValueError("measure needs min_iters >= 1, warmup >= 0 and 0 <= min_duration_s <= max_duration_s")
    for _ in range(warmup):
        fn()
        if sync is not None:
            sync()
    time_one = timer or _clock_timer(clock, sync)
    values: list[float] = []
    start = clock()
    while True:
        values.append(time_one(fn))
        elapsed = clock() - start
        if len(values) >= min_iters and elapsed >= min_duration_s:
            stopped_by = STOP_RULES_MET
            break
        if elapsed >= max_duration_s:
            stopped_by = STOP_MAX_DURATION
            break
    return Samples(values=values, warmup=warmup, loop_s=clock() - start, stopped_by=stopped_by)


def _clock_timer(clock: Callable[[], float], sync: Callable[[], None] | None) -> CallTimer:
    if sync is None:

        def bare(fn: Callable[[], object]) -> float:
            t0 = clock()
            fn()
            return clock() - t0

        return bare

    def synced(fn: Callable[[], object]) -> float:
        sync()
        t0 = clock()
        fn()
        sync()
        return clock() - t0

    return synced


class CudaEventTimer:
    """Times one call with a pair of CUDA events (CUDA and ROCm builds of torch)."""

    def __init__(self) -> None:
        import torch

        self._start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        self._end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]

    def __call__(self, fn: Callable[[], object]) -> float:
        self._start.record()
        fn()
        self._end.record()
        self._end.synchronize()
        return float(self._start.elapsed_time(self._end)) / 1000.0  # ms -> s


def device_timing(hardware: str) -> tuple[Callable[[], None] | None, CallTimer | None]:
    """The ``(sync, timer)`` pair for :func:`measure` on a hardware kind (imports torch for GPUs)."""
    if hardware == "cpu":
        return None, None
    from accelerate_core.backends import get_backend

    backend = get_backend(hardware)
    if hardware in ("cuda", "rocm"):
        return backend.synchronize, CudaEventTimer()
    return backend.synchronize, None

"""The latency loop: warm-up, then timed calls until a minimum count and duration, or sooner once the p50 is precise.

:func:`measure` runs ``warmup`` untimed calls, then times calls one by one. It stops as soon as both
``min_iters`` calls and ``min_duration_s`` seconds of timed looping are reached (:data:`STOP_RULES_MET`), or
at ``max_duration_s`` whatever the count (:data:`STOP_MAX_DURATION`; at least one call is always timed).

With ``p50_ci_rel`` (the precision rule) a loop whose p50 is already known well enough stops before
``min_duration_s``: once ``min_iters`` calls are in, it stops when the distribution-free 95% confidence
interval of the median (:func:`~accelerate_core.bench.stats.median_ci`, from order statistics) has a
half-width of at most ``p50_ci_rel`` of the p50 (:data:`STOP_CONVERGED`). The duration rule exists to gather
enough calls for a stable p50; a p50 shown to be that stable does not need it. A loop that is not precise
by ``min_duration_s`` stops there as without the rule, and says so: every :class:`Samples` carries why it
stopped and the interval's relative half-width at the end (``ci_rel``, None below 6 samples), so a result
shows how precise its p50 is whichever way the loop ended.

The precision is checked at ``min_iters`` calls, then each time the count has grown by a tenth (the values
are kept sorted as they come, so a check reads two ranks): the loop stops at the first check that finds its
p50 precise. Every raw sample is kept.

How one call is timed depends on the device (:func:`device_timing`):

- CPU: ``time.perf_counter`` around the call, nothing else, so the harness adds no bias over a bare
  ``perf_counter`` loop (``benchmarks/bench_harness_bias.py`` checks it);
- CUDA/ROCm: CUDA events recorded around the call, then ``synchronize`` on the end event; the events
  time the device work, not the Python launch overhead alone;
- MPS: ``torch.mps.synchronize()`` before and after the call, ``perf_counter`` around it.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from accelerate_core.bench.stats import median_ci_rel, sample_stats

__all__ = [
    "CI_CONFIDENCE",
    "STOP_CONVERGED",
    "STOP_MAX_DURATION",
    "STOP_RULES_MET",
    "CallTimer",
    "Samples",
    "device_timing",
    "measure",
]

CI_CONFIDENCE = 0.95
"""Confidence of the p50 interval the precision rule reads (``Samples.ci_rel``)."""

STOP_RULES_MET = "min-iters-and-duration"
"""``Samples.stopped_by`` when both ``min_iters`` and ``min_duration_s`` were reached (and the p50 was not yet as
precise as ``p50_ci_rel`` asks, when it asks)."""

STOP_CONVERGED = "converged"
"""``Samples.stopped_by`` when ``min_iters`` were reached and the p50's 95% interval was within ``p50_ci_rel``."""

STOP_MAX_DURATION = "max-duration"
"""``Samples.stopped_by`` when ``max_duration_s`` cut the loop short."""


class CallTimer(Protocol):
    """Times one call of ``fn`` on a device and returns seconds."""

    def __call__(self, fn: Callable[[], object]) -> float: ...


@dataclass(frozen=True, slots=True)
class Samples:
    """Raw timings of one measured call, in seconds, with how the loop ended and how precise its p50 is
    (``ci_rel``: half-width of the 95% interval of the median over the median; None below 6 samples)."""

    values: list[float]
    warmup: int
    loop_s: float
    stopped_by: str
    ci_rel: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """``n``, ``p50``, ``p90``, ``p99``, ``mean``, ``stdev`` of the values."""
        return sample_stats(self.values)

    def loop_record(self) -> dict[str, Any]:
        """How the loop ended, as JSON for a result's environment: ``stopped_by``, ``n``, ``warmup``,
        ``loop_s``, ``ci_rel``."""
        ci_rel = None if self.ci_rel is None else round(self.ci_rel, 5)
        return {"stopped_by": self.stopped_by, "n": len(self.values), "warmup": self.warmup,
                "loop_s": round(self.loop_s, 4), "ci_rel": ci_rel}  # fmt: skip


def measure(
    fn: Callable[[], object],
    *,
    sync: Callable[[], None] | None = None,
    warmup: int,
    min_iters: int,
    min_duration_s: float,
    max_duration_s: float,
    p50_ci_rel: float | None = None,
    timer: CallTimer | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Samples:
    """Time ``fn`` until ``min_iters`` calls and ``min_duration_s`` (or a precise p50), at most ``max_duration_s``.

    Args:
        fn: the call to time (a forward pass, a ``generate``).
        sync: waits for queued device work; called after each warm-up call and around each timed call
            (None on CPU).
        warmup: untimed calls first.
        min_iters: timed calls needed before the loop may stop.
        min_duration_s: seconds of timed looping needed before the loop may stop.
        max_duration_s: the loop stops once this much time has passed, even below ``min_iters``.
        p50_ci_rel: the precision rule: after ``min_iters`` calls, stop as soon as the 95% interval of the p50
            is within this fraction of it (0.01: +-1%), even before ``min_duration_s``; None: no such rule.
        timer: times one call on a device (CUDA events); default ``clock`` around the call.
        clock: the clock (tests pass a fake one).

    Returns:
        The raw samples.
    """
    if min_iters < 1 or warmup < 0 or not 0 <= min_duration_s <= max_duration_s:
        raise ValueError("measure needs min_iters >= 1, warmup >= 0 and 0 <= min_duration_s <= max_duration_s")
    if p50_ci_rel is not None and not p50_ci_rel > 0:
        raise ValueError("measure needs p50_ci_rel > 0 (or None for no precision rule)")
    for _ in range(warmup):
        fn()
        if sync is not None:
            sync()
    time_one = timer or _clock_timer(clock, sync)
    values: list[float] = []
    ordered: list[float] = []  # the values, sorted as they come: a precision check reads two ranks
    next_check = min_iters
    start = clock()
    while True:
        value = time_one(fn)
        values.append(value)
        bisect.insort(ordered, value)
        elapsed = clock() - start
        if len(values) >= min_iters and elapsed >= min_duration_s:
            stopped_by = STOP_RULES_MET
            break
        if elapsed >= max_duration_s:
            stopped_by = STOP_MAX_DURATION
            break
        if p50_ci_rel is not None and len(values) >= next_check:
            ci_rel = median_ci_rel(ordered, CI_CONFIDENCE)
            if ci_rel is not None and ci_rel <= p50_ci_rel:
                stopped_by = STOP_CONVERGED
                break
            next_check = len(values) + max(1, len(values) // 10)
    loop_s = clock() - start
    return Samples(values=values, warmup=warmup, loop_s=loop_s, stopped_by=stopped_by,
                   ci_rel=median_ci_rel(ordered, CI_CONFIDENCE))  # fmt: skip


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

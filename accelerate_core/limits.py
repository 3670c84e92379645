"""The time-limit rule of the fleet, defined once for the scheduler (per message) and the workers (task defaults).

A job's own hard limit (``JobLimits.hard_s``) is enforced by the job runner, which kills the job's child and
records ``timeout``. Celery's limits sit *above* it, as the backstop should the runner itself hang: the soft
limit fires ``grace`` seconds after the runner's hard limit (the task then cancels the child and records a
timeout), the hard limit kills the pool process after twice that. Redis's visibility timeout is comfortably
longer than every Celery hard limit, so a slow job is never handed to a second worker while it runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["backstop_limits", "fit_hard_s", "visibility_timeout_s"]


def backstop_limits(hard_s: float) -> tuple[float, float]:
    """Celery's (soft, hard) time limits, in seconds, for a job whose runner kills it at ``hard_s``.

    ``grace`` is 10% of the hard limit, at least 1 s and at most 30 s; soft < hard always.
    """
    grace = min(30.0, max(1.0, 0.1 * hard_s))
    return hard_s + grace, hard_s + 2 * grace


def visibility_timeout_s(hard_limits_s: Iterable[float]) -> int:
    """Redis's visibility timeout, in seconds: 25% (plus 30 s) above the longest Celery hard limit."""
    longest = max(backstop_limits(h)[1] for h in hard_limits_s)
    return math.ceil(longest * 1.25 + 30)


def fit_hard_s(hard_s: float, visibility_s: float) -> float:
    """``hard_s``, or the longest whole-second hard limit below it whose Celery backstop ends before ``visibility_s``.

    A job's limits travel with it (set where the run was planned); the visibility timeout is the worker's own
    (from its settings). Were the backstop to reach it, Redis would hand the job to a second worker while the
    first still runs it, so the worker clamps the job's hard limit to this.
    """
    if backstop_limits(hard_s)[1] < visibility_s:
        return hard_s
    # backstop(h) = h + 2 * grace(h) is h + 2 up to 10 s, 1.2 h up to 300 s, h + 60 above: invert its piece.
    if visibility_s <= 12:
        inverse = visibility_s - 2
    else:
        inverse = visibility_s / 1.2 if visibility_s <= 360 else visibility_s - 60
    fitted = max(1.0, float(math.ceil(inverse) - 1))
    while fitted > 1 and backstop_limits(fitted)[1] >= visibility_s:
        fitted -= 1
    return fitted

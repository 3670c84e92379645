"""Statistics of the report: the Mann-Whitney U test on raw samples, batched, and small helpers.

A change of p50 latency is flagged only when it is beyond a threshold *and* the two sets of raw
samples differ by a two-sided Mann-Whitney U test: a 30% gap between five wide, overlapping samples
is noise, not a regression. Tests are run in batches of equal sample counts, vectorised along an
axis, so thousands of comparisons cost about as much as a few dozen calls.

The normal approximation scipy takes for all but tiny samples is computed here in numpy, with the
same float operations as ``scipy.stats.mannwhitneyu`` (the same p-values, to the bit): importing
scipy.stats alone took longer than building the whole report. scipy still computes the exact
distribution of tiny tie-free samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import median
from typing import Any

MIN_SAMPLES = 2
"""Fewer raw samples than this on either side: no test is possible (verdict ``untested``)."""


def mann_whitney_p(pairs: Sequence[tuple[Sequence[float], Sequence[float]]]) -> list[float | None]:
    """Two-sided Mann-Whitney U p-values of each ``(baseline, current)`` pair of raw samples.

    Returns ``None`` for a pair with fewer than :data:`MIN_SAMPLES` samples on a side.
    """
    import numpy as np

    out: list[float | None] = [None] * len(pairs)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (a, b) in enumerate(pairs):
        if len(a) >= MIN_SAMPLES and len(b) >= MIN_SAMPLES:
            groups.setdefault((len(a), len(b)), []).append(i)
    for idx in groups.values():
        x = np.asarray([pairs[i][0] for i in idx], dtype=np.float64)
        y = np.asarray([pairs[i][1] for i in idx], dtype=np.float64)
        with np.errstate(all="ignore"):
            p = _asymptotic_p(x, y)
            if p is None:
                p = scipy_mann_whitney_p(x, y)
        for i, value in zip(idx, np.atleast_1d(p), strict=True):
            out[i] = float(value) if math.isfinite(float(value)) else 1.0
    return out


def scipy_mann_whitney_p(x: Any, y: Any) -> Any:
    """scipy's two-sided p-values, row by row of ``x`` and ``y``: importing scipy.stats costs ~0.9 s."""
    from scipy.stats import mannwhitneyu

    return mannwhitneyu(x, y, axis=1, alternative="two-sided").pvalue


def _asymptotic_p(x: Any, y: Any) -> Any:
    """What ``scipy.stats.mannwhitneyu(x, y, axis=1)`` gives (the same float operations, so the same bits)
    where scipy takes the normal approximation, with tie and continuity corrections: both samples over 8
    values, or a tie anywhere in the batch. None where scipy computes the exact distribution instead (or a
    value is NaN or infinite): ask scipy then.
    """
    import numpy as np
    from scipy.special import ndtr  # scipy.special alone: ~0.2 s to import

    n1, n2 = x.shape[1], y.shape[1]
    xy = np.concatenate([x, y], axis=1)
    if not np.isfinite(xy).all():
        return None
    order = np.argsort(xy, axis=1, kind="stable")
    ranked = np.take_along_axis(xy, order, axis=1)
    first = np.ones(ranked.shape, dtype=bool)
    first[:, 1:] = ranked[:, 1:] != ranked[:, :-1]
    starts = np.flatnonzero(first)  # each row begins a run: no run crosses rows
    counts = np.diff(starts, append=ranked.size)
    if (n1 <= 8 or n2 <= 8) and not (counts > 1).any():
        return None
    ordinal = np.tile(np.arange(1, xy.shape[1] + 1, dtype=np.float64), xy.shape[0])
    ranks = np.repeat(ordinal[starts] + (counts - 1) / 2, counts).reshape(xy.shape)  # average ranks, sorted
    r1 = np.where(order < n1, ranks, 0.0).sum(axis=1)  # half-integers: exact in any order of summing
    u1 = r1 - n1 * (n1 + 1) / 2
    u = np.maximum(u1, n1 * n2 - u1)
    t = np.zeros(ranked.size, dtype=np.float64)
    t[starts] = counts
    tie_term = (t**3 - t).reshape(xy.shape).sum(axis=1)
    n = n1 + n2
    s = np.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))))
    z = (u - n1 * n2 / 2 - 0.5) / s
    return np.clip(ndtr(-z) * 2, 0.0, 1.0)


def relative_change(baseline: float, current: float) -> float:
    """``current / baseline - 1`` (``inf`` when the baseline is zero and the current value is not)."""
    if baseline == 0:
        return 0.0 if current == 0 else math.inf
    return current / baseline - 1.0


def median_or_none(values: Sequence[float]) -> float | None:
    """The median of ``values``, or None when there are none."""
    return float(median(values)) if values else None


def pass_rate(done: int, total: int, skipped: int, pending: int) -> float | None:
    """done / (total - skipped - pending), or None when no job has a verdict yet."""
    judged = total - skipped - pending
    return done / judged if judged > 0 else None

"""Statistics of the report: the Mann-Whitney U test on raw samples, batched, and small helpers.

A change of p50 latency is flagged only when it is beyond a threshold *and* the two sets of raw
samples differ by a two-sided Mann-Whitney U test: a 30% gap between five wide, overlapping samples
is noise, not a regression. Tests are run in batches of equal sample counts (scipy vectorises along
an axis), so thousands of comparisons cost about as much as a few dozen calls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import median

MIN_SAMPLES = 2
"""Fewer raw samples than this on either side: no test is possible (verdict ``untested``)."""


def mann_whitney_p(pairs: Sequence[tuple[Sequence[float], Sequence[float]]]) -> list[float | None]:
    """Two-sided Mann-Whitney U p-values of each ``(baseline, current)`` pair of raw samples.

    Returns ``None`` for a pair with fewer than :data:`MIN_SAMPLES` samples on a side.
    """
    import numpy as np
    from scipy.stats import mannwhitneyu

    out: list[float | None] = [None] * len(pairs)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (a, b) in enumerate(pairs):
        if len(a) >= MIN_SAMPLES and len(b) >= MIN_SAMPLES:
            groups.setdefault((len(a), len(b)), []).append(i)
    for idx in groups.values():
        x = np.asarray([pairs[i][0] for i in idx], dtype=np.float64)
        y = np.asarray([pairs[i][1] for i in idx], dtype=np.float64)
        with np.errstate(all="ignore"):
            p = mannwhitneyu(x, y, axis=1, alternative="two-sided").pvalue
        for i, value in zip(idx, np.atleast_1d(p), strict=True):
            out[i] = float(value) if math.isfinite(float(value)) else 1.0
    return out


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

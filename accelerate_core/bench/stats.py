"""Summary statistics of raw samples: percentiles, mean, standard deviation. Pure Python, no numpy.

Percentiles use linear interpolation between closest ranks, the definition of numpy's default
(``method="linear"``, Hyndman & Fan type 7): for ``n`` sorted values ``x[0..n-1]`` the ``q``-th
percentile sits at rank ``h = (n - 1) * q / 100``; with ``i = floor(h)`` it is
``x[i] + (h - i) * (x[i + 1] - x[i])``.
So p50 is the usual median, and p99 of fewer than 100 samples lies between the two largest values.
``stdev`` is the sample standard deviation (``n - 1`` in the denominator; 0.0 for one sample).

The confidence interval of the median (:func:`median_ci`) is distribution-free, from order statistics: the
number of samples below the true median is Binomial(n, 1/2), so for sorted ``x[0..n-1]`` the interval
``[x[k-1], x[n-k]]`` covers it with probability ``1 - 2 * P(B <= k-1)``; ``k`` is the largest count whose
tail ``P(B <= k-1)`` is at most ``(1 - confidence) / 2`` (exact binomial sums, integers). Below 6 samples no
95% interval exists (``P(B <= 0) = 2**-n`` is above 2.5%).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from functools import lru_cache
from typing import Any

__all__ = ["median_ci", "median_ci_ranks", "median_ci_rel", "percentile", "sample_stats"]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values, by linear interpolation (numpy's default).

    Raises:
        ValueError: no values, or ``q`` outside 0-100.
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q={q} is outside 0-100")
    rank = (len(sorted_values) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (rank - low) * (sorted_values[high] - sorted_values[low])


def sample_stats(samples: Sequence[float]) -> dict[str, Any]:
    """``n``, ``p50``, ``p90``, ``p99``, ``mean`` and ``stdev`` of raw samples (keys as in ``Measurement``).

    Raises:
        ValueError: no samples.
    """
    if not samples:
        raise ValueError("cannot summarize zero samples: measure at least one call")
    ordered = sorted(float(s) for s in samples)
    n = len(ordered)
    mean = math.fsum(ordered) / n
    variance = math.fsum((x - mean) ** 2 for x in ordered) / (n - 1) if n > 1 else 0.0
    return {
        "n": n,
        "p50": percentile(ordered, 50),
        "p90": percentile(ordered, 90),
        "p99": percentile(ordered, 99),
        "mean": mean,
        "stdev": math.sqrt(variance),
    }


@lru_cache(maxsize=1024)
def median_ci_ranks(n: int, confidence: float = 0.95) -> tuple[int, int] | None:
    """0-based ranks ``(lo, hi)`` of the sorted samples that bound the median's ``confidence`` interval.

    None when ``n`` samples are too few for any interval at that confidence (see the module docstring).

    Raises:
        ValueError: ``confidence`` outside (0, 1) or ``n`` below 0.
    """
    if not 0 < confidence < 1 or n < 0:
        raise ValueError(f"median_ci_ranks needs 0 < confidence < 1 and n >= 0, got {confidence}, {n}")
    # P(B <= k-1) <= tail  <=>  sum_{i<k} C(n, i) <= tail * 2**n, in exact integers and fractions.
    tail = (1 - Fraction(confidence).limit_denominator(10**9)) / 2 * 2**n
    k, below, term = 0, 0, 1  # term = C(n, k)
    while 2 * k < n and below + term <= tail:
        below += term
        term = term * (n - k) // (k + 1)
        k += 1
    return None if k == 0 else (k - 1, n - k)


def median_ci(sorted_values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """The distribution-free ``confidence`` interval of the median of already sorted values, or None (too few)."""
    ranks = median_ci_ranks(len(sorted_values), confidence)
    return None if ranks is None else (sorted_values[ranks[0]], sorted_values[ranks[1]])


def median_ci_rel(sorted_values: Sequence[float], confidence: float = 0.95) -> float | None:
    """Half the width of :func:`median_ci` over the median (0.01: the p50 is known to +-1%); None when there is
    no interval yet or the median is not positive."""
    interval = median_ci(sorted_values, confidence)
    if interval is None:
        return None
    median = percentile(sorted_values, 50)
    return (interval[1] - interval[0]) / 2 / median if median > 0 else None

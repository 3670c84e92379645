"""Summary statistics of raw samples: percentiles, mean, standard deviation. Pure Python, no numpy.

Percentiles use linear interpolation between closest ranks, the definition of numpy's default
(``method="linear"``, Hyndman & Fan type 7): for ``n`` sorted values ``x[0..n-1]`` the ``q``-th
percentile sits at rank ``h = (n - 1) * q / 100``; with ``i = floor(h)`` it is
``x[i] + (h - i) * (x[i + 1] - x[i])``.
So p50 is the usual median, and p99 of fewer than 100 samples lies between the two largest values.
``stdev`` is the sample standard deviation (``n - 1`` in the denominator; 0.0 for one sample).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["percentile", "sample_stats"]


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

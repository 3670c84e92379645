"""Honest measurement: warm-up, a latency loop with two stopping rules, raw samples, environment.

Importing this package does not import torch: the functions that need it import it when called.

- :func:`measure` / :class:`Samples`: the latency loop (:mod:`accelerate_core.bench.measure`);
- :func:`sample_stats`: p50/p90/p99 (linear interpolation, numpy's default), mean, sample stdev;
- :func:`benchmark_model`: latency, throughput, tokens/s and peak memory per shape;
- :func:`shape_guard`: a call past the model's positions is an unsupported shape (a ``skipped`` row);
- :func:`environment`: versions, device, driver, CPU and threads, attached to every result;
- :func:`write_measurements` / :func:`read_measurements`: the file a generated benchmark test writes
  to ``$ACCEL_BENCH_OUT`` (:data:`accelerate_core.constants.BENCH_OUT_ENV`).
"""

from __future__ import annotations

from accelerate_core.bench.environment import environment
from accelerate_core.bench.measure import (
    STOP_CONVERGED,
    STOP_MAX_DURATION,
    STOP_RULES_MET,
    Samples,
    device_timing,
    measure,
)
from accelerate_core.bench.measurements_file import MeasurementsFile, read_measurements, write_measurements
from accelerate_core.bench.model import benchmark_model
from accelerate_core.bench.shapes import SHAPE_UNSUPPORTED, shape_guard
from accelerate_core.bench.stats import median_ci, percentile, sample_stats

__all__ = [
    "SHAPE_UNSUPPORTED",
    "STOP_CONVERGED",
    "STOP_MAX_DURATION",
    "STOP_RULES_MET",
    "MeasurementsFile",
    "Samples",
    "benchmark_model",
    "device_timing",
    "environment",
    "measure",
    "median_ci",
    "percentile",
    "read_measurements",
    "sample_stats",
    "shape_guard",
    "write_measurements",
]

"""selfbench measurements: statistics, fresh-interpreter import timing, the summary's verdict."""

from __future__ import annotations

import sys

import pytest

from accelerate_core.selfbench import measure_imports, millisecond_stats, run_child


def test_millisecond_stats_reports_median_and_spread_in_ms() -> None:
    stats = millisecond_stats([0.001, 0.002, 0.003, 0.004, 0.010])
    assert stats["n"] == 5
    assert stats["median_ms"] == pytest.approx(3.0)
    assert stats["min_ms"] == pytest.approx(1.0) and stats["max_ms"] == pytest.approx(10.0)
    assert stats["p25_ms"] <= stats["median_ms"] <= stats["p75_ms"]
    assert millisecond_stats([0.5])["stdev_ms"] == 0.0
    assert millisecond_stats([]) == {"n": 0}


def test_imports_are_timed_in_fresh_interpreters() -> None:
    # Given two fresh-interpreter repeats; When a light and a heavier stdlib module are timed
    result = measure_imports(["accelerate_core", "accelerate_core.config"], repeats=2)
    modules = result["modules"]
    # Then each has its samples, the heavier one costs more, and nothing heavy was loaded
    assert len(modules["accelerate_core"]["samples_s"]) == 2
    assert modules["accelerate_core.config"]["import"]["median_ms"] > modules["accelerate_core"]["import"]["median_ms"]
    assert modules["accelerate_core"]["heavy"] == [] and result["bare"]["wall"]["n"] == 2


def test_a_failing_child_is_reported() -> None:
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        run_child(sys.executable, "1/0")

"""The read budget: reads rest between them only while the host is busy, before the next read, bounded."""

from __future__ import annotations

import time

import pytest

from accelerate_core.service import budget
from accelerate_core.service.budget import ReadBudget


def _work(seconds: float) -> str:
    """Burn ``seconds`` of this thread's CPU (the budget counts CPU time, not waiting)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass
    return "answer"


def test_while_the_host_is_busy_a_read_thread_rests_before_its_next_read() -> None:
    # Given two read threads allowed a fifth of a core while the host is busy (each rests 9x its work)
    reads = ReadBudget(share=0.2, threads=2, busy=lambda: True)
    # When a read takes 0.05 s; Then it is answered without resting first
    assert reads.run(lambda: _work(0.05)) == "answer"
    assert reads.rested_s == 0
    # And the next read of that thread first rests nine times as long as the last one worked
    started = time.perf_counter()
    reads.run(lambda: None)
    assert reads.rested_s >= 9 * 0.05
    assert time.perf_counter() - started >= reads.rested_s


def test_an_idle_host_or_no_host_means_no_rest() -> None:
    for busy in (None, lambda: False):
        reads = ReadBudget(share=0.1, threads=2, busy=busy)
        reads.run(lambda: _work(0.05))
        reads.run(lambda: None)
        assert reads.rested_s == 0


def test_a_long_read_owes_a_bounded_rest_and_a_failed_read_owes_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget, "MAX_REST_S", 0.05)
    reads = ReadBudget(share=0.01, threads=4, busy=lambda: True)  # would rest 399x the work
    with pytest.raises(ValueError):
        reads.run(lambda: (_work(0.02), int("x")))
    reads.run(lambda: None)
    assert reads.rested_s == pytest.approx(0.05)

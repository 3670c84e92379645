"""The generation split (prefill = time to first token, decode = per-token gaps) from a step clock's stamps."""

from __future__ import annotations

import pytest

from accelerate_core.bench.generation import StepClock


def test_a_call_splits_into_its_prefill_and_one_decode_gap_per_later_token() -> None:
    # Given a clock that reads 10.0 at the call's start, then 10.5, 10.6, 10.75 as three tokens' logits are ready
    ticks = iter([10.0, 10.5, 10.6, 10.75, 20.0, 20.2])
    synced: list[int] = []
    clock = StepClock(sync=lambda: synced.append(1), clock=lambda: next(ticks))
    clock.begin()
    for _ in range(3):
        assert clock(None, "scores") == "scores"  # the scores pass through untouched
    # When the call is split
    prefill, decode = clock.split()
    # Then the prefill is start to first token and each later token is one decode sample; the device was waited for
    assert prefill == pytest.approx(0.5) and decode == pytest.approx([0.1, 0.15])
    assert len(synced) == 4
    # And the next call starts afresh: one token is a prefill without decode
    clock.begin()
    clock(None, None)
    assert clock.split() == (pytest.approx(0.2), [])


def test_a_call_without_a_token_is_refused() -> None:
    clock = StepClock(clock=lambda: 1.0)
    clock.begin()
    with pytest.raises(ValueError, match="no logits processor call"):
        clock.split()

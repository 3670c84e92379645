"""Compile time apart from the latency loop: the compiled model's first calls until two agree."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from accelerate_core.bench.compile import COMPILE_UNSUPPORTED, MAX_COMPILE_CALLS, compile_time, compile_warmup
from accelerate_core.errors import ModelBuildError


def _clock(durations: list[float]) -> Iterator[float]:
    """A clock whose readings make successive calls last each of ``durations`` in turn (a start, an end each)."""
    ticks: list[float] = []
    now = 0.0
    for d in durations:
        ticks += [now, now + d]
        now += d + 1.0
    return iter(ticks)


@pytest.mark.parametrize(
    ("durations", "compile_s", "calls"),
    [
        ([18.0, 0.24, 0.22], 18.0, 3),  # one compiling call, then two that agree: only the first is compile time
        ([30.0, 2.0, 0.3, 0.25], 32.0, 4),  # a second (re)compiling call counts too
        ([0.2, 0.21], 0.0, 2),  # nothing to compile (the calls agree at once)
        ([64.0, 32.0, 16.0, 8.0, 4.0, 2.0], 124.0, MAX_COMPILE_CALLS),  # never agree: all but the last call
    ],
)
def test_compile_time_is_the_calls_before_two_agree(durations: list[float], compile_s: float, calls: int) -> None:
    ticks = _clock(durations)
    made: list[int] = []

    warm = compile_warmup(lambda: made.append(1), clock=lambda: next(ticks))

    assert warm.compile_s == pytest.approx(compile_s)
    assert len(made) == calls and warm.calls == pytest.approx(durations[:calls])


def test_a_compile_that_fails_is_an_unsupported_combination_naming_the_backend() -> None:
    class Model:
        def __call__(self, **inputs: object) -> None:
            raise RuntimeError("InductorError: CppCompileError: C++ compile error\nmore lines")

    refused = COMPILE_UNSUPPORTED.format(backend="inductor") + " Model: RuntimeError: InductorError: CppCompileError"
    with pytest.raises(ModelBuildError, match=refused):
        compile_time(Model(), {}, "inductor", None)

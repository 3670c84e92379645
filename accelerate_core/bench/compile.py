"""``torch.compile``: the compiled model, and its compile time measured apart from the latency loop.

A compiled model compiles on its first calls (tracing, then the backend; a new shape may recompile), so those
calls are not steady state. :func:`compile_warmup` calls the compiled forward until two consecutive calls agree
(the later within :data:`STABLE_RATIO` of the earlier, at most :data:`MAX_COMPILE_CALLS` calls) and reports the
calls before the agreeing one as the compile time (``compile_time``, s, one per shape); the latency loop starts
after it, so its samples are steady state. A backend this install or the model cannot run (inductor without a C
compiler, an operator dynamo refuses) raises :class:`~accelerate_core.errors.ModelBuildError` starting with
:data:`COMPILE_UNSUPPORTED`: the job is a ``skipped`` row with that reason, not a failure.

``generate`` keeps the eager model (each decode step's new length would recompile): the generation metrics of a
compiled job are the eager model's, and its notes say so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from accelerate_core.errors import ModelBuildError

__all__ = ["COMPILE_UNSUPPORTED", "MAX_COMPILE_CALLS", "STABLE_RATIO", "CompileWarmup", "compile_model",
           "compile_time", "compile_warmup"]  # fmt: skip

COMPILE_UNSUPPORTED: Final = "compile {backend!r} is not supported by"
"""The start of the message of a model or install that cannot compile with a backend (a ``skipped`` row)."""

STABLE_RATIO: Final = 1.5
"""A call within this factor of the call before it means compilation is over."""

MAX_COMPILE_CALLS: Final = 6
"""Compile warm-up stops here even if the calls never agree (the loop's own warm-up follows)."""


@dataclass(frozen=True, slots=True)
class CompileWarmup:
    """The compile warm-up of one shape: ``compile_s``, the calls before the agreeing pair; ``calls``, each call."""

    compile_s: float
    calls: list[float]


def compile_model(model: Any, backend: str) -> Any:
    """``torch.compile(model, backend=backend)`` (compilation itself happens on the first calls).

    Raises:
        ModelBuildError: ``torch.compile`` refuses the backend here (unknown, or no dynamo on this Python).
    """
    import torch

    try:
        return torch.compile(model, backend=backend)
    except Exception as e:  # dynamo's errors are many and version-dependent: each one means "cannot compile"
        raise unsupported(model, backend, e) from e


def unsupported(model: Any, backend: str, e: BaseException) -> ModelBuildError:
    """The one-line error of a model (or install) that cannot be compiled with ``backend``."""
    first = (str(e).strip().splitlines() or [""])[0][:200]
    name = type(getattr(model, "_orig_mod", model)).__name__
    return ModelBuildError(f"{COMPILE_UNSUPPORTED.format(backend=backend)} {name}: {type(e).__name__}: {first}")


def compile_time(compiled: Any, inputs: dict[str, Any], backend: str, sync: Callable[[], None] | None) -> float:
    """The compile time of ``compiled`` at the shape of ``inputs`` (:func:`compile_warmup`).

    Raises:
        ModelBuildError: compiling failed (the backend cannot run here or refuses the model).
    """
    try:
        return compile_warmup(lambda: compiled(**inputs), sync=sync).compile_s
    except Exception as e:  # dynamo/inductor raise many kinds, by version: each means this compile cannot run
        raise unsupported(compiled, backend, e) from e


def compile_warmup(
    call: Callable[[], object],
    *,
    sync: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> CompileWarmup:
    """Call ``call`` until two consecutive calls agree (see the module docstring); the compile time before that.

    Args:
        call: one forward pass of the compiled model.
        sync: waits for queued device work (None on CPU).
        clock: the clock (tests pass a fake one).
    """
    calls: list[float] = []
    while len(calls) < MAX_COMPILE_CALLS:
        if sync is not None:
            sync()
        start = clock()
        call()
        if sync is not None:
            sync()
        calls.append(clock() - start)
        if len(calls) >= 2 and max(calls[-2:]) <= STABLE_RATIO * min(calls[-2:]):
            return CompileWarmup(compile_s=sum(calls[:-2]), calls=calls)
    return CompileWarmup(compile_s=sum(calls[:-1]), calls=calls)

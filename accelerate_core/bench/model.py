"""Benchmark one built model over the configured shapes: latency, throughput, tokens/s, peak memory.

Once per model, ``param_count`` (params): its number of parameters. Per (batch size, sequence length) of the
:class:`~accelerate_core.config.BenchConfig`:

- ``latency`` (s): raw samples of one forward pass under ``torch.inference_mode``, from :func:`measure`;
- ``throughput`` (samples/s): ``batch_size / latency``, per sample;
- generative models only, from ``generate`` with a fixed number of new tokens (``min_new_tokens ==
  max_new_tokens == bench.new_tokens``, greedy) so every call does the same work
  (:mod:`accelerate_core.bench.generation`): ``tokens_per_s`` (tokens/s), ``batch_size * new_tokens / duration``
  per call; ``ttft`` (s), the prefill: time to first token, per call; ``itl`` (s), the decode: one sample per
  token after the first, a decode step with the KV cache (the names an endpoint's rows use for the same split);
- ``peak_memory`` (MiB): the peak over that shape's loop: RSS high-water mark on CPU (reset through
  ``/proc/self/clear_refs`` where Linux allows it, otherwise the process lifetime peak),
  ``torch.cuda.max_memory_allocated`` after a reset on CUDA/ROCm, the driver's allocation on MPS.

Each loop's ending (why it stopped, samples, seconds, the p50's relative 95% interval half-width:
:meth:`~accelerate_core.bench.measure.Samples.loop_record`) is appended to ``loops`` when given, tagged with its
``metric`` (``latency`` or ``generate``) and shape, so a result can say how its numbers were taken.

With ``compile_backend``, ``compile_time`` (s) per shape: the compiled model's first calls, until two agree
(:mod:`accelerate_core.bench.compile`), timed before the loop so the latency samples are steady state.

Load time and the first call are measured by the caller (they happen once, before any shape) and
passed in, so they are reported apart from the steady-state loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from accelerate_core.bench.compile import compile_model, compile_time
from accelerate_core.bench.generation import generation_kwargs, time_generation
from accelerate_core.bench.measure import Samples, device_timing, measure
from accelerate_core.bench.shapes import SEQ_NOT_APPLICABLE, input_shapes, shape_guard
from accelerate_core.bench.stats import sample_stats
from accelerate_core.config import BenchConfig
from accelerate_core.contracts import Measurement

__all__ = ["benchmark_model", "single"]

log = logging.getLogger(__name__)

MakeInputs = Callable[[int, int], dict[str, Any]]


def single(metric: str, unit: str, value: float, *, batch_size: int = 1, seq_len: int = 0) -> Measurement:
    """A measurement of one value (load time, first call)."""
    return Measurement(metric=metric, unit=unit, batch_size=batch_size, seq_len=seq_len, samples=(value,),
                       **sample_stats([value]))  # fmt: skip


def from_samples(metric: str, unit: str, values: list[float], batch_size: int, seq_len: int) -> Measurement:
    """A measurement carrying raw samples and their summary."""
    return Measurement(metric=metric, unit=unit, batch_size=batch_size, seq_len=seq_len, samples=tuple(values),
                       **sample_stats(values))  # fmt: skip


def benchmark_model(
    model: Any,
    make_inputs: MakeInputs,
    *,
    hardware: str,
    bench: BenchConfig,
    generative: bool,
    load_s: float | None = None,
    first_call_s: float | None = None,
    notes: list[str] | None = None,
    compile_backend: str | None = None,
    same_input_once: bool = False,
    loops: list[dict[str, Any]] | None = None,
) -> list[Measurement]:
    """Measure ``model`` at every shape of ``bench``; return the measurements.

    Args:
        model: a torch module in eval mode, on the device of ``hardware``.
        make_inputs: ``(batch_size, seq_len) -> inputs`` on the same device.
        hardware: the hardware kind (chooses device sync, timer and memory counter).
        bench: shapes and the loop's stopping rule.
        generative: also measure tokens/s with ``model.generate``.
        load_s: the model's build/load time, measured by the caller.
        first_call_s: the first forward pass, measured by the caller.
        notes: when given, why a metric is missing is appended here (e.g. ``generate`` failed).
        compile_backend: time a ``torch.compile`` of the model with this backend, its compile time apart
            (:mod:`accelerate_core.bench.compile`); None: the eager model.
        same_input_once: a sequence length whose inputs are those of an earlier one at the same batch size (a
            model with no sequence axis: images, audio) is not measured again; a note says so.
        loops: when given, each loop's ending is appended here (see the module docstring).

    Raises:
        ModelBuildError: the shape or the compile is not supported by the model here (a ``skipped`` row).
    """
    compiled = None if compile_backend is None else (compile_backend, compile_model(model, compile_backend))
    if compiled is not None and generative and notes is not None:
        notes.append(f"compiled with {compile_backend}: generate (tokens/s, ttft, itl) runs the eager model")
    out: list[Measurement] = []
    if load_s is not None:
        out.append(single("load_time", "s", load_s))
    if first_call_s is not None:
        out.append(single("first_call", "s", first_call_s))
    out.append(single("param_count", "params", float(sum(p.numel() for p in model.parameters()))))
    for batch_size in bench.batch_sizes:
        seen: dict[Any, int] = {}
        for seq_len in bench.seq_lens:
            inputs = make_inputs(batch_size, seq_len)
            first = seen.setdefault(input_shapes(inputs), seq_len) if same_input_once else seq_len
            if first != seq_len:
                if notes is not None:
                    notes.append(f"{SEQ_NOT_APPLICABLE} {type(model).__name__}: batch {batch_size} x seq {seq_len} "
                                 f"is the input of seq {first} (no sequence axis), measured once")  # fmt: skip
                continue
            out.extend(_one_shape(model, compiled, inputs, hardware, bench, generative, (batch_size, seq_len),
                                  _Log(notes, [] if loops is None else loops)))  # fmt: skip
    return out


@dataclass(frozen=True, slots=True)
class _Log:
    """Where a shape's loops leave what the caller asked for: notes (why a metric is missing), loop endings."""

    notes: list[str] | None
    loops: list[dict[str, Any]]

    def loop(self, metric: str, samples: Samples, shape: tuple[int, int]) -> None:
        self.loops.append({"metric": metric, "batch_size": shape[0], "seq_len": shape[1], **samples.loop_record()})


def _one_shape(
    model: Any,
    compiled: tuple[str, Any] | None,
    inputs: dict[str, Any],
    hardware: str,
    bench: BenchConfig,
    generative: bool,
    shape: tuple[int, int],
    log_to: _Log,
) -> list[Measurement]:
    import torch

    from accelerate_core.backends import get_backend

    batch, seq = shape
    backend = get_backend(hardware)
    backend.reset_peak_memory()
    forward = model if compiled is None else compiled[1]
    found: list[Measurement] = []
    with torch.inference_mode(), shape_guard(model, batch, seq):
        if compiled is not None:  # compiling happens on the first calls: timed apart, before the loop
            seconds = compile_time(forward, inputs, compiled[0], device_timing(hardware)[0])
            found.append(single("compile_time", "s", seconds, batch_size=batch, seq_len=seq))
        latency = _loop(lambda: forward(**inputs), hardware, bench)
        log_to.loop("latency", latency, shape)
        found += [
            from_samples("latency", "s", latency.values, batch, seq),
            from_samples("throughput", "samples/s", [batch / v for v in latency.values if v > 0], batch, seq),
        ]
        if generative:
            found.extend(_generation(model, inputs, hardware, bench, shape, log_to))
    found.append(single("peak_memory", "MiB", backend.peak_memory_mb(), batch_size=batch, seq_len=seq))
    return found


def _loop(fn: Callable[[], object], hardware: str, bench: BenchConfig) -> Samples:
    sync, timer = device_timing(hardware)
    return measure(fn, sync=sync, timer=timer, warmup=bench.warmup, min_iters=bench.min_iters,
                   min_duration_s=bench.min_duration_s, max_duration_s=bench.max_duration_s,
                   p50_ci_rel=bench.p50_ci_rel)  # fmt: skip


def _generation(
    model: Any, inputs: dict[str, Any], hardware: str, bench: BenchConfig, shape: tuple[int, int], log_to: _Log
) -> list[Measurement]:
    n, (batch, seq), notes = bench.new_tokens, shape, log_to.notes
    try:
        timed = time_generation(model, generation_kwargs(model, inputs, n), hardware, bench)
    except Exception as e:  # latency stands on its own; a model whose generate breaks has no generation metrics
        message = f"generate failed at batch {batch}, seq {seq}, so no tokens/s: {type(e).__name__}: {e}"
        log.warning("%s: %s", type(model).__name__, message)
        if notes is not None:
            notes.append(message.splitlines()[0][:300])
        return []
    log_to.loop("generate", timed.loop, shape)
    found = [
        from_samples("tokens_per_s", "tokens/s", [batch * n / v for v in timed.calls if v > 0], batch, seq),
        from_samples("ttft", "s", timed.prefill, batch, seq),
    ]
    if timed.decode:
        found.append(from_samples("itl", "s", timed.decode, batch, seq))
    return found

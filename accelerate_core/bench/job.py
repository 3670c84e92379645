"""The fork-server entry of ``accel bench``: build one model (tiny or full size), time load, first call, loop.

Runs inside a child of :class:`~accelerate_core.runner.ForkServer` (the CLI never imports torch). The
payload is an encoded :class:`~accelerate_core.contracts.BenchRequest`; it returns an encoded
:class:`~accelerate_core.contracts.BenchReport`, whose ``usage_error`` is set for a bad model type or missing
hardware (the CLI prints that one line and exits 2). A failure while building is tagged ``build-error``; one
in the forward pass is a ``forward-error``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from accelerate_core import wire
from accelerate_core.bench.environment import environment
from accelerate_core.bench.model import benchmark_model
from accelerate_core.constants import ERR_BUILD, SIZE_FULL, TORCH_DEVICE
from accelerate_core.contracts import BenchReport, BenchRequest
from accelerate_core.dispatch import build_model, set_attention
from accelerate_core.errors import AccelerateError, ConfigError
from accelerate_core.full_size import FULL_SIZE_NOTE
from accelerate_core.runner.outcome import JobFailure
from accelerate_core.sources import describe_source

__all__ = ["bench_entry", "set_image_size"]


@dataclass
class _Built:
    model: Any
    inputs: dict[str, Any]
    make_inputs: Callable[[int, int], dict[str, Any]]
    generative: bool


def bench_entry(payload: dict[str, Any]) -> dict[str, Any]:
    """Benchmark one model (see the module docstring): an encoded BenchRequest in, an encoded BenchReport out."""
    request = wire.decode(BenchRequest, payload)
    try:
        report = _bench(request)
    except AccelerateError as e:
        if e.exit_code != 2:
            raise
        report = BenchReport(request.model_type, request.hardware, usage_error=str(e))
    return wire.encode(report)


def _bench(request: BenchRequest) -> BenchReport:
    import torch

    from accelerate_core.backends import get_backend

    model_type, hardware, bench = request.model_type, request.hardware, request.bench
    if hardware not in TORCH_DEVICE:
        raise ConfigError(f"unknown hardware {hardware!r}: use one of {', '.join(TORCH_DEVICE)}")
    device = TORCH_DEVICE[hardware]
    sync = get_backend(hardware).synchronize
    started = time.perf_counter()
    built = _build(request, device)
    sync()
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    with torch.inference_mode():
        built.model(**built.inputs)
    sync()
    first_call_s = time.perf_counter() - started
    notes: list[str] = []
    measurements = benchmark_model(built.model, built.make_inputs, hardware=hardware, bench=bench,
                                   generative=built.generative, load_s=load_s, first_call_s=first_call_s,
                                   notes=notes, compile_backend=request.compile_backend,
                                   same_input_once=True)  # fmt: skip
    if request.size == SIZE_FULL:
        notes.insert(0, FULL_SIZE_NOTE.format(config=built.model.config.__class__.__name__, device=device,
                                              dtype=request.dtype))  # fmt: skip
    return BenchReport(
        model_type=model_type,
        hardware=hardware,
        model_class=type(built.model).__name__,
        param_count=sum(p.numel() for p in built.model.parameters()),
        size=request.size,
        dtype=request.dtype,
        source=None if request.source is None else describe_source(request.source),
        attn=request.attn,
        compile_backend=request.compile_backend,
        generative=built.generative,
        image_size=bench.image_size,
        measurements=tuple(measurements),
        environment=environment(hardware),
        notes=tuple(notes),
    )


def _model(request: BenchRequest, device: str) -> Any:
    """The model of the request: tiny through the catalog (with ``image_size`` when set) or full size."""

    model_type, bench, source = request.model_type, request.bench, request.source
    if bench.image_size is None:
        checkpoint = source.path if source is not None else None
        return build_model(model_type, device=device, dtype=request.dtype, size=request.size, checkpoint=checkpoint,
                           attn=request.attn)  # fmt: skip
    if request.size == SIZE_FULL or source is not None:
        raise ConfigError("--image-size applies to tiny model types only: drop it")
    return set_attention(_with_image_size(model_type, device, bench.image_size, request.dtype), request.attn)


def _build(request: BenchRequest, device: str) -> _Built:
    """Build the model and its inputs; a build failure is a ``build-error`` (a bad type stays UnknownModelError)."""
    from accelerate_core import catalog

    model_type, bench = request.model_type, request.bench
    batch, seq = bench.batch_sizes[0], bench.seq_lens[0]
    try:
        model = _model(request, device)
        inputs = catalog.make_inputs(model_type, model, batch_size=batch, seq_len=seq, device=device)
        generative = bool(catalog.generate_supported(model))
    except AccelerateError as e:
        if e.exit_code == 2:
            raise
        raise JobFailure(ERR_BUILD, f"{model_type} could not be built: {e}", error_type=type(e).__name__) from e
    except Exception as e:
        raise JobFailure(ERR_BUILD, f"{model_type} could not be built: {e}", error_type=type(e).__name__) from e

    def make_inputs(batch_size: int, seq_len: int) -> dict[str, Any]:
        return dict(catalog.make_inputs(model_type, model, batch_size=batch_size, seq_len=seq_len, device=device))

    return _Built(model, dict(inputs), make_inputs, generative)


def _with_image_size(model_type: str, device: str, image_size: int, dtype: str) -> Any:
    """The tiny model with every ``image_size`` of its config (nested ones too) set to ``image_size``."""
    from accelerate_core import catalog

    config = catalog.tiny_config_dict(model_type)
    if not set_image_size(config, image_size):
        raise ConfigError(f"model type {model_type!r} has no image_size in its config: drop --image-size")
    return catalog.instantiate(model_type, config, catalog.entry(model_type).model_class, device=device, dtype=dtype)


def set_image_size(config: dict[str, Any], size: int) -> bool:
    """Set ``image_size`` wherever the config (or a nested sub-config) has one; True if any was set."""
    found = False
    for key, value in config.items():
        if key == "image_size" and isinstance(value, int | list | tuple):
            config[key] = size if isinstance(value, int) else [size] * len(value)
            found = True
        elif isinstance(value, dict):
            found = set_image_size(value, size) or found
    return found

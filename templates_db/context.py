"""Render contexts: the catalog's facts about a model, plus hardware, device and benchmark settings.

:func:`job_context` is what a worker (or ``accel generate``) renders with. It calls the catalog, which
imports transformers, so call it in the CLI or in a forked job child, never at import time.

Keys a template can rely on (besides the catalog's own: ``model_type``, ``modality``, ``family``,
``model_class``, ``config_class``, ``config``, ``generative``, ``main_input_name``, ``input_names``, ...):

- ``hardware``: the hardware kind the file is generated for (``cpu``, ``cuda``, ``rocm``, ``mps``);
- ``device``: the torch device string for it (``cuda`` for both cuda and rocm);
- ``bench``: the benchmark settings (``BenchConfig`` fields, tuples as lists);
- ``batch_size``, ``seq_len``, ``new_tokens``: the shape of the functional tests;
- ``dtype``, ``size``: the job's dtype and model size (``float32`` and ``tiny`` unless the job says otherwise);
- ``checkpoint``: the local checkpoint directory the model is loaded from (None: built with random weights);
- ``attn``: the attention implementation the model is switched to (None: its default);
- ``compile_backend``: the ``torch.compile`` backend the benchmark times, compile time apart (None: eager);
- ``template`` (added by ``render_job``): name, sha and version of the template itself.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, Final

from accelerate_core.config import BenchConfig
from accelerate_core.constants import HARDWARE_KINDS, SIZE_TINY, TORCH_DEVICE
from accelerate_core.errors import ConfigError, UnknownModelError

"""torch device string of each hardware kind (ROCm builds of torch expose HIP devices as ``cuda``)."""

SAMPLE_MODEL_TYPES: Final = ("bert", "gpt2", "vit", "wav2vec2")
"""Architectures a new template is rendered and collected against before it is stored: a text
encoder, a generative decoder, a vision and an audio model."""

__all__ = ["SAMPLE_MODEL_TYPES", "device_for", "extend_context", "job_context", "sample_contexts"]


def device_for(hardware: str) -> str:
    """The torch device string for a hardware kind.

    Raises:
        ConfigError: an unknown hardware kind.
    """
    try:
        return TORCH_DEVICE[hardware]
    except KeyError as e:
        raise ConfigError(f"unknown hardware {hardware!r}: use one of {', '.join(HARDWARE_KINDS)}") from e


def bench_dict(bench: BenchConfig) -> dict[str, Any]:
    """``BenchConfig`` as JSON-like data (tuples become lists)."""
    data: dict[str, Any] = {}
    for f in dataclasses.fields(bench):
        value = getattr(bench, f.name)
        data[f.name] = list(value) if isinstance(value, tuple) else value
    return data


def extend_context(facts: Mapping[str, Any], hardware: str, bench: BenchConfig | None = None) -> dict[str, Any]:
    """Add hardware, device and benchmark keys to the catalog's facts about one model."""
    bench = bench or BenchConfig()
    context = dict(facts)
    context["hardware"] = hardware
    context["device"] = device_for(hardware)
    context["bench"] = bench_dict(bench)
    context["batch_size"] = bench.batch_sizes[0]
    context["seq_len"] = bench.seq_lens[0]
    context["new_tokens"] = bench.new_tokens
    context.setdefault("dtype", "float32")
    context.setdefault("size", SIZE_TINY)
    context.setdefault("checkpoint", None)
    context.setdefault("attn", None)
    context.setdefault("compile_backend", None)
    return context


def job_context(model_type: str, hardware: str = "cpu", bench: BenchConfig | None = None) -> dict[str, Any]:
    """The full render context of one model on one hardware kind (imports the catalog: heavy).

    Raises:
        UnknownModelError: ``model_type`` is not in the catalog.
        ConfigError: an unknown hardware kind.
    """
    from accelerate_core import catalog

    device_for(hardware)
    return extend_context(catalog.template_context(model_type, hardware), hardware, bench)


@functools.cache
def _sample_facts(hardware: str) -> tuple[Mapping[str, Any], ...]:
    from accelerate_core import catalog

    facts = []
    for model_type in SAMPLE_MODEL_TYPES:
        try:
            fact = catalog.template_context(model_type, hardware)
        except UnknownModelError:  # a transformers without this architecture: validate with the others
            continue
        if fact.get("runnable", True):
            facts.append(fact)
    return tuple(facts)


def sample_contexts(hardware: str = "cpu", bench: BenchConfig | None = None) -> list[dict[str, Any]]:
    """Contexts of :data:`SAMPLE_MODEL_TYPES` on ``hardware`` (computed once per process)."""
    return [extend_context(f, hardware, bench) for f in _sample_facts(hardware)]

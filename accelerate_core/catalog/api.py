"""The heavy catalog API (imports torch and transformers): build a tiny model, its inputs, check outputs.

Called in fork-server children, by ``accel models``/``accel bench`` and by generated test files, so
every function is deterministic (seeded) and raises this project's errors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from accelerate_core.catalog.classes import load_class
from accelerate_core.catalog.describe import config_class, describe, make_config, tiny_config_dict
from accelerate_core.catalog.fast_init import build_once_initialised
from accelerate_core.catalog.index import IndexEntry
from accelerate_core.catalog.inputs import build_inputs
from accelerate_core.catalog.overrides import override_for
from accelerate_core.errors import ModelBuildError

logger = logging.getLogger(__name__)

SEED = 0


def entry(model_type: str) -> IndexEntry:
    """The catalog entry of ``model_type`` (UnknownModelError for a type transformers lacks)."""
    return describe(model_type)


def _dtype(dtype: Any) -> Any:
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise ModelBuildError(f"unknown dtype {dtype!r}: use float32, float16 or bfloat16")
    return value


def _post_build(model: Any, model_type: str) -> None:
    for step in override_for(model_type).post_build:
        target = model
        for part in str(step["method"]).split("."):
            target = getattr(target, part)
        target(*step.get("args", []), **step.get("kwargs", {}))


def instantiate(
    model_type: str,
    config_dict: dict[str, Any] | None = None,
    model_class: str | None = None,
    device: str = "cpu",
    dtype: Any = None,
) -> Any:
    """Build the tiny model with seeded random weights, in eval mode, on ``device``.

    Args:
        model_type: A ``CONFIG_MAPPING`` key.
        config_dict: The config (default: :func:`tiny_config_dict`).
        model_class: The class name (default: the catalog's choice).
        device: A torch device string.
        dtype: ``None`` (float32), a torch dtype or its name.

    Raises:
        ModelBuildError: The type has no class or the model cannot be built.
    """

    name = model_class or _own_class(model_type)
    config = make_config(model_type, config_dict if config_dict is not None else tiny_config_dict(model_type))
    cls = load_class(name, config_class(model_type))
    model = build_once_initialised(lambda: cls._from_config(config) if hasattr(cls, "_from_config") else cls(config),
                                   seed=SEED)  # fmt: skip
    _post_build(model, model_type)
    model.eval()
    model.to(device=device, dtype=_dtype(dtype))
    return model


def _own_class(model_type: str) -> str:
    """The catalog's model class of ``model_type``. A generated test names its class, so a job never asks: the
    live description (default config, class mappings) cost ~50 ms of each job's build."""
    info = describe(model_type)
    if info.model_class is None:
        raise ModelBuildError(f"{model_type} has no model class of its own ({info.reason}): test its parent")
    return info.model_class


def make_inputs(
    model_type: str, model: Any, *, batch_size: int = 1, seq_len: int = 16, device: str = "cpu"
) -> dict[str, Any]:
    """Seeded forward inputs for ``model`` (tensors on ``device``; floats in the model's dtype)."""
    import torch

    ov = override_for(model_type)
    raw = build_inputs(
        model,
        name=ov.inputs,
        args=ov.input_args,
        extra=ov.extra_inputs,
        drop=ov.drop_inputs,
        batch_size=batch_size,
        seq_len=seq_len,
    )
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    return {k: _to(v, device, dtype) for k, v in raw.items()}


def _to(value: Any, device: str, dtype: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=dtype) if value.is_floating_point() else value.to(device)
    if isinstance(value, list):
        return [_to(v, device, dtype) for v in value]
    return value


def generate_supported(model: Any) -> bool:
    """True when ``model.generate(input_ids, max_new_tokens=N, ...)`` works with the tiny config."""
    can = getattr(model, "can_generate", None)
    if not callable(can) or not can():
        return False
    model_type = getattr(model.config, "model_type", "")
    if override_for(model_type).generate is False:
        return False
    return getattr(model, "main_input_name", "input_ids") == "input_ids"


@dataclass
class BuiltModel:
    """A tiny model ready to run: the module, its inputs, its catalog entry and config dict."""

    model: Any
    inputs: dict[str, Any]
    entry: IndexEntry
    config: dict[str, Any]


def build(
    model_type: str, device: str = "cpu", dtype: Any = None, *, batch_size: int = 1, seq_len: int = 16
) -> BuiltModel:
    """Build the tiny model of ``model_type`` and its inputs (for ``accel bench``, dispatch and checks)."""
    info = describe(model_type)
    config = tiny_config_dict(model_type)
    model = instantiate(model_type, config, info.model_class, device=device, dtype=dtype)
    inputs = make_inputs(model_type, model, batch_size=batch_size, seq_len=seq_len, device=device)
    return BuiltModel(model=model, inputs=inputs, entry=info, config=config)

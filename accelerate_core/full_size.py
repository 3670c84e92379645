"""Full-size models: an architecture at its default configuration, with random weights and no download.

``full`` is what a shipped model costs to run (BERT-base: ~110M parameters), where ``tiny`` only checks
that the architecture works on a stack. Building is fast because the model is first built on the *meta*
device (shapes only, no memory, no initialisation), then materialised once on its target device and dtype
(``to_empty``) and initialised there by the model's own ``init_weights`` (its ``_init_weights`` rules,
buffers such as position ids included, and weight tying). On a GPU the random numbers are drawn on the GPU;
nothing is built on the CPU and copied. The one remaining cost is drawing the random numbers.

Heavy: imports torch and transformers when called (fork-server children, generated tests).
"""

from __future__ import annotations

from typing import Any, Final

from accelerate_core.errors import ModelBuildError, UnknownModelError

__all__ = ["FULL_SIZE_NOTE", "build_full", "on_meta"]

FULL_SIZE_NOTE: Final = (
    "full size: the default {config} (real dimensions), built on the meta device and materialised on {device} "
    "as {dtype} with the model's own random init; no download"
)
"""What a report says about a full-size model (format with ``config``, ``device`` and ``dtype``)."""


def build_full(model_type: str, *, device: str = "cpu", dtype: str = "float32") -> Any:
    """The model of ``model_type`` at its default config, random weights, in eval mode on ``device``.

    Args:
        model_type: A ``CONFIG_MAPPING`` key the catalog can build.
        device: A torch device string.
        dtype: The parameters' dtype name (``float32``, ``bfloat16``, ``float16``).

    Raises:
        UnknownModelError: the type is not in the catalog.
        ModelBuildError: the type has no model class, or its default config or init fails.
    """
    import torch

    from accelerate_core.catalog.describe import default_config_dict

    torch_dtype = getattr(torch, dtype)
    try:
        model = on_meta(model_type, default_config_dict(model_type))
        model.to(dtype=torch_dtype)  # free on meta: materialise directly in the target dtype
        model.to_empty(device=device)
        torch.manual_seed(0)
        model.init_weights()
    except (ModelBuildError, UnknownModelError):
        raise
    except Exception as e:  # a model's own code may raise anything while it is built
        raise ModelBuildError(f"full-size {model_type} could not be built: {type(e).__name__}: {e}") from e
    return model.eval()


def on_meta(model_type: str, config_dict: dict[str, Any]) -> Any:
    """The model of ``model_type`` with ``config_dict`` on the meta device: shapes only, no memory, no init.

    Raises:
        UnknownModelError: the type is not in the catalog.
        ModelBuildError: the type has no model class of its own.
        Exception: whatever the model's own code raises while it is built.
    """
    import torch

    from accelerate_core.catalog.classes import load_class
    from accelerate_core.catalog.describe import config_class, describe, make_config

    info = describe(model_type)
    if info.model_class is None:
        raise ModelBuildError(f"{model_type} has no model class of its own ({info.reason}): test its parent")
    config = make_config(model_type, config_dict)
    cls: Any = load_class(info.model_class, config_class(model_type))
    with torch.device("meta"):
        return cls._from_config(config)  # transformers skips init on the meta device

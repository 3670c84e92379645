"""Build a model without the default weight fill that transformers overwrites anyway.

Building a model from its config fills most weights twice: each torch layer's constructor draws its default
init (``nn.Linear``: ``kaiming_uniform_``), then the model's ``post_init`` draws transformers' own
(``_init_weights``: ``normal_(0, initializer_range)``...) over it. The random draws are nearly all of the build
(a tiny model: 0.1-2 s; 85% of the time in the build of a 40-model sample). :func:`build_once_initialised`
builds with torch's ``nn.init`` functions (in every module that holds a copy, as transformers' own
``no_init_weights`` patches them) replaced by a NaN fill while the constructors run; transformers' init still
runs as always (it calls its own copies of the real functions). Then every floating parameter and buffer is
checked: when a NaN is left anywhere (a weight transformers does not re-initialise, a value computed from a
filled one) the model is built again the ordinary way, so the result is always a model whose every weight was
drawn by the same init as before, never a sentinel.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["build_once_initialised", "has_nan"]

log = logging.getLogger(__name__)


def build_once_initialised(build: Callable[[], Any], *, seed: int) -> Any:
    """``build()`` with torch's default init skipped (see the module docstring); the ordinary build when that
    leaves a NaN. ``seed`` is set before each build."""
    import torch

    torch.manual_seed(seed)
    with _default_init_as_nan():
        model = build()
    if not has_nan(model):
        return model
    log.debug("%s kept a weight that only torch's default init sets: built again with it", type(model).__name__)
    del model
    torch.manual_seed(seed)
    return build()


def has_nan(model: Any) -> bool:
    """Whether a floating parameter or buffer of ``model`` holds a NaN (``max`` propagates NaN: one pass, no mask)."""
    import torch

    with torch.no_grad():
        tensors = [*model.parameters(), *(b for b in model.buffers() if b is not None)]
        return any(bool(torch.isnan(t.max())) for t in tensors if t.is_floating_point() and t.numel())


@contextmanager
def _default_init_as_nan() -> Iterator[None]:
    """torch's ``nn.init`` functions fill floating tensors with NaN instead of drawing (others run as usual)."""
    from transformers.initialization import TORCH_INIT_FUNCTIONS, TORCH_MODULES_TO_PATCH

    originals: list[tuple[Any, str, Any]] = []
    try:
        for module_name in TORCH_MODULES_TO_PATCH:
            module = sys.modules.get(module_name)
            for name in TORCH_INIT_FUNCTIONS if module is not None else ():
                if hasattr(module, name):
                    originals.append((module, name, getattr(module, name)))
                    setattr(module, name, _nan_fill(getattr(module, name)))
        yield
    finally:
        for module, name, original in reversed(originals):
            setattr(module, name, original)


def _nan_fill(original: Callable[..., Any]) -> Callable[..., Any]:
    def fill(tensor: Any, *args: Any, **kwargs: Any) -> Any:
        import torch

        if not tensor.is_floating_point():
            return original(tensor, *args, **kwargs)
        with torch.no_grad():
            return tensor.fill_(float("nan"))

    return fill

"""The model catalog: every transformers architecture, buildable as a tiny model with random weights.

Light (no torch): :mod:`accelerate_core.catalog.index` (``load_index``, ``IndexEntry``).
Heavy (imports torch/transformers on first use, resolved lazily here): ``entry``, ``tiny_config_dict``,
``instantiate``, ``make_inputs``, ``check_outputs``, ``generate_supported``, ``template_context``,
``build``, ``BuiltModel``.
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from accelerate_core.catalog.api import (
        BuiltModel,
        build,
        entry,
        generate_supported,
        instantiate,
        make_inputs,
    )
    from accelerate_core.catalog.context import template_context
    from accelerate_core.catalog.describe import tiny_config_dict
    from accelerate_core.catalog.index import IndexEntry, load_index
    from accelerate_core.catalog.outputs import check_outputs

_LAZY: dict[str, str] = {
    "BuiltModel": "accelerate_core.catalog.api",
    "build": "accelerate_core.catalog.api",
    "entry": "accelerate_core.catalog.api",
    "generate_supported": "accelerate_core.catalog.api",
    "instantiate": "accelerate_core.catalog.api",
    "make_inputs": "accelerate_core.catalog.api",
    "template_context": "accelerate_core.catalog.context",
    "tiny_config_dict": "accelerate_core.catalog.describe",
    "IndexEntry": "accelerate_core.catalog.index",
    "load_index": "accelerate_core.catalog.index",
    "check_outputs": "accelerate_core.catalog.outputs",
}
_lock = threading.RLock()

__all__ = [
    "BuiltModel",
    "IndexEntry",
    "build",
    "check_outputs",
    "entry",
    "generate_supported",
    "instantiate",
    "load_index",
    "make_inputs",
    "template_context",
    "tiny_config_dict",
]


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'accelerate_core.catalog' has no attribute {name!r}")
    with _lock:
        value = getattr(importlib.import_module(module_name), name)
        globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

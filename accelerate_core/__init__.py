"""accelerate-fleet's core: config, hardware backends, model catalog, dispatch, measurement, store.

Importing this package is cheap and imports none of torch, transformers, duckdb, celery or jinja2:
the public names below are resolved lazily on first access (PEP 562), under a lock so that many
threads importing at once see one consistent module.
"""

import _thread  # not `threading`: that alone costs more than the 2 ms budget of this import

__version__ = "0.1.0"

# Not `from typing import TYPE_CHECKING`: importing typing costs ~3 ms; mypy honours this name as is.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from accelerate_core.backends import Backend, Inventory, detect, select_hardware
    from accelerate_core.config import BenchConfig, Settings
    from accelerate_core.dispatch import load_checkpoint_and_dispatch
    from accelerate_core.errors import AccelerateError

_LAZY: dict[str, str] = {
    "Settings": "accelerate_core.config",
    "BenchConfig": "accelerate_core.config",
    "AccelerateError": "accelerate_core.errors",
    "Backend": "accelerate_core.backends",
    "Inventory": "accelerate_core.backends",
    "detect": "accelerate_core.backends",
    "select_hardware": "accelerate_core.backends",
    "load_checkpoint_and_dispatch": "accelerate_core.dispatch",
}
_lock = _thread.RLock()

__all__ = [
    "AccelerateError",
    "Backend",
    "BenchConfig",
    "Inventory",
    "Settings",
    "__version__",
    "detect",
    "load_checkpoint_and_dispatch",
    "select_hardware",
]


def __getattr__(name: str) -> "Any":
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'accelerate_core' has no attribute {name!r}")
    import importlib

    with _lock:
        value = getattr(importlib.import_module(module_name), name)
        globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

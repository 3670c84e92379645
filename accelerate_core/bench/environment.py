"""The environment recorded with every result: library versions, device, driver, CPU, threads.

Called in the process that runs the model (it imports torch); results measured under different
environments are then never compared blindly.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import sys
from typing import Any

__all__ = ["environment"]

log = logging.getLogger(__name__)


def environment(hardware: str) -> dict[str, Any]:
    """torch/transformers versions, device name and driver, CPU model and thread counts, host.

    Args:
        hardware: the hardware kind the results were measured on (``cpu``, ``cuda``, ``rocm``, ``mps``).

    Returns:
        JSON-able facts; a value that cannot be found is None rather than an error.
    """
    import torch

    from accelerate_core import __version__
    from accelerate_core.backends.cpu import cpu_model_name
    from accelerate_core.backends.device_model import recorded_model

    env: dict[str, Any] = {
        "hardware": hardware,
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "accelerate_fleet": __version__,
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "cuda_runtime": getattr(torch.version, "cuda", None),
        "hip_runtime": getattr(torch.version, "hip", None),
        "cpu_model": cpu_model_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "visible_devices": {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")},
    }
    env.update(_device(hardware, env["cpu_model"]))
    env["device_model"] = recorded_model(env.get("device_name"))  # what comparisons pair results by
    return env


def _version(module: str) -> str | None:
    mod = sys.modules.get(module)
    if mod is None:
        try:
            mod = __import__(module)
        except ImportError:
            return None
    return getattr(mod, "__version__", None)


def _device(hardware: str, cpu_model: str | None) -> dict[str, Any]:
    """Device name, memory and driver of the device the results ran on (the first visible one)."""
    if hardware == "cpu":
        return {"device_name": cpu_model, "driver": None}
    from accelerate_core.backends import get_backend

    info: dict[str, Any] = {"device_name": None, "driver": None}
    try:
        import torch

        if hardware in ("cuda", "rocm") and torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info["device_name"] = props.name
            info["device_memory_mb"] = int(props.total_memory // 2**20)
            info["compute_capability"] = f"{props.major}.{props.minor}"
        devices = get_backend(hardware).devices()
        if devices:
            info["device_name"] = info["device_name"] or devices[0].name
            info["driver"] = devices[0].driver_version
    except Exception as e:  # the environment is descriptive: a failing probe must not fail the result
        log.debug("device facts for %s unavailable: %s", hardware, e)
    return info

"""Hardware backends: what this machine has, how to pin a job to one device, and where a model runs.

Light to import: no torch, no subprocess until a probe runs. The public API:

- :func:`detect` -> :class:`Inventory` (cached per process, thread-safe);
- :func:`require` (kind, devices) -> the devices, or one clear :class:`HardwareUnavailableError`;
- :func:`get_backend` (kind) -> :class:`Backend` (``pin_env``, ``synchronize``, peak memory);
- :func:`select_hardware` (:class:`ModelRequirements`, inventory) -> :class:`Selection` (pure rules).
"""

from __future__ import annotations

from accelerate_core.backends.base import THREAD_ENV_VARS, Backend, DeviceInfo, StubBackend
from accelerate_core.backends.cpu import CpuBackend
from accelerate_core.backends.cuda import CudaBackend
from accelerate_core.backends.inventory import Inventory, detect, get_backend, require
from accelerate_core.backends.mps import MpsBackend
from accelerate_core.backends.rocm import RocmBackend
from accelerate_core.backends.select import (
    Candidate,
    ModelRequirements,
    Selection,
    assess,
    dtype_support,
    normalize_dtype,
    parse_hardware,
    select_hardware,
)
from accelerate_core.errors import HardwareUnavailableError

__all__ = [
    "THREAD_ENV_VARS",
    "Backend",
    "Candidate",
    "CpuBackend",
    "CudaBackend",
    "DeviceInfo",
    "HardwareUnavailableError",
    "Inventory",
    "ModelRequirements",
    "MpsBackend",
    "RocmBackend",
    "Selection",
    "StubBackend",
    "assess",
    "detect",
    "dtype_support",
    "get_backend",
    "normalize_dtype",
    "parse_hardware",
    "require",
    "select_hardware",
]

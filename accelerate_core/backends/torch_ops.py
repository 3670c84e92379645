"""Device-side operations through torch: synchronize and peak memory (imported only by model processes).

These are the only backend functions that import torch; detection never calls them.
"""

from __future__ import annotations

from typing import Any

from accelerate_core.errors import HardwareUnavailableError


def _torch() -> Any:
    import torch

    return torch


def _gpu(kind: str) -> Any:
    """torch's ``cuda`` namespace, after checking it is the right build (HIP for rocm, CUDA for cuda)."""
    torch = _torch()
    is_hip = getattr(torch.version, "hip", None) is not None
    if (kind == "rocm") != is_hip:
        build = "ROCm (HIP)" if is_hip else "CUDA" if torch.version.cuda else "CPU-only"
        raise HardwareUnavailableError(f"this torch is a {build} build and cannot drive {kind}: install a {kind} wheel")
    return torch.cuda


def synchronize(kind: str) -> None:
    """Wait for queued work of ``kind`` (cuda, rocm, mps); no-op for cpu."""
    if kind in ("cuda", "rocm"):
        _gpu(kind).synchronize()
    elif kind == "mps":
        _torch().mps.synchronize()


def reset_peak_memory(kind: str) -> None:
    """Reset the allocator's peak statistics of the current device of ``kind``."""
    if kind in ("cuda", "rocm"):
        _gpu(kind).reset_peak_memory_stats()


def peak_memory_mb(kind: str) -> float:
    """Peak allocated memory of ``kind`` in MiB since the last reset.

    MPS has no peak counter: it reports the driver's current allocation, a lower bound of the peak.
    """
    if kind in ("cuda", "rocm"):
        return float(_gpu(kind).max_memory_allocated()) / 2**20
    if kind == "mps":
        return float(_torch().mps.driver_allocated_memory()) / 2**20
    return 0.0

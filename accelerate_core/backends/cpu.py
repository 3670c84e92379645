"""The CPU backend: model, cores and threads from /proc/cpuinfo + psutil; peak RSS from /proc.

Peak memory on Linux is the process's RSS high-water mark (``VmHWM``), which writing ``5`` to
``/proc/self/clear_refs`` resets; elsewhere ``getrusage`` gives a peak that cannot be reset.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Sequence
from pathlib import Path

from accelerate_core.backends.base import Backend, DeviceInfo

logger = logging.getLogger(__name__)

_PROC_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def cpu_model_name(cpuinfo: str | None = None) -> str:
    """The CPU's model name: ``/proc/cpuinfo`` on Linux, ``sysctl`` on macOS, else ``platform``.

    Args:
        cpuinfo: the text of /proc/cpuinfo (tests pass one); read from the system when None.
    """
    text = cpuinfo if cpuinfo is not None else _read("/proc/cpuinfo")
    for line in (text or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Processor", "cpu model") and value.strip():
            return value.strip()
    if platform.system() == "Darwin":
        brand = _sysctl("machdep.cpu.brand_string")
        if brand:
            return brand
    return platform.processor() or platform.machine() or "unknown CPU"


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _sysctl(name: str) -> str | None:
    import subprocess

    try:
        done = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def _usable_threads() -> int:
    """Logical CPUs this process may run on (its affinity mask, where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class CpuBackend(Backend):
    """The host CPU (always available; one device, index 0)."""

    kind = "cpu"

    def _probe(self) -> Sequence[DeviceInfo]:
        import psutil  # ~25 ms; only detection pays it

        cores = psutil.cpu_count(logical=False)
        return (
            DeviceInfo(
                kind="cpu",
                index=0,
                name=cpu_model_name(),
                total_memory_mb=int(psutil.virtual_memory().total // 2**20),
                runtime_version=platform.release() or None,
                arch=platform.machine() or None,
                cores=cores,
                threads=_usable_threads(),
            ),
        )

    def _visible_env(self, index: int) -> dict[str, str]:
        # A CPU job must never initialise a GPU: hide them all (an empty list means no device).
        return {"CUDA_VISIBLE_DEVICES": "", "HIP_VISIBLE_DEVICES": ""}

    def _reset_peak(self) -> None:
        try:
            _CLEAR_REFS.write_text("5")
        except OSError:
            logger.debug("cannot reset the RSS high-water mark here; peak covers the process lifetime")

    def _peak_mb(self) -> float:
        status = _read(str(_PROC_STATUS))
        for line in (status or "").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if platform.system() == "Darwin" else peak / 1024.0  # bytes on macOS, kB else

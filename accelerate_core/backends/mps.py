"""The MPS backend: Apple-silicon GPUs through torch's Metal backend, probed only on macOS.

There is no driver tool to ask, so this is the one backend whose detection imports torch, and only
on macOS on arm64: everywhere else it answers "not available" without importing anything.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Sequence

from accelerate_core.backends import torch_ops
from accelerate_core.backends.base import Backend, DeviceInfo

logger = logging.getLogger(__name__)


def _sysctl_int(name: str) -> int | None:
    import subprocess

    try:
        done = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=False)
        return int(done.stdout.strip())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def _chip_name() -> str:
    import subprocess

    try:
        done = subprocess.run(
            ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return "Apple GPU"
    return done.stdout.strip() or "Apple GPU"


class MpsBackend(Backend):
    """Apple-silicon GPU (Metal Performance Shaders); one device sharing the unified memory."""

    kind = "mps"

    def _probe(self) -> Sequence[DeviceInfo]:
        if platform.system() != "Darwin" or platform.machine() != "arm64":
            self._note("mps: not macOS on Apple silicon")
            return ()
        import torch  # the only way to know whether Metal is usable by torch

        if not torch.backends.mps.is_available():
            built = torch.backends.mps.is_built()
            self._note("mps: torch reports MPS unavailable" + ("" if built else " (torch built without MPS)"))
            return ()
        memsize = _sysctl_int("hw.memsize")
        return (
            DeviceInfo(
                kind="mps",
                index=0,
                name=_chip_name(),
                total_memory_mb=memsize // 2**20 if memsize else None,
                runtime_version=platform.mac_ver()[0] or None,
                arch=platform.machine(),
            ),
        )

    def _sync(self) -> None:
        torch_ops.synchronize("mps")

    def _peak_mb(self) -> float:
        return torch_ops.peak_memory_mb("mps")

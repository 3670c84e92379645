"""The ROCm backend: AMD GPUs from the KFD topology in sysfs, names from ``rocm-smi``; no torch.

``/sys/class/kfd/kfd/topology/nodes/<n>/properties`` lists every HSA agent; GPU agents have
``simd_count > 0`` and a ``gfx_target_version`` (``90010`` -> ``gfx90a``). They are numbered in
node order, which is the order ``HIP_VISIBLE_DEVICES`` uses. ``rocm-smi --showproductname --json``
adds the marketing name when installed. A ROCm torch also answers ``torch.cuda``: this backend, not
the CUDA one, reports those devices (``torch.version.hip`` tells them apart).
"""

from __future__ import annotations

import getpass
import grp
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from accelerate_core.backends import torch_ops
from accelerate_core.backends.base import Backend, DeviceInfo
from accelerate_core.backends.cuda import probe_loaded_torch
from accelerate_core.errors import HardwareUnavailableError

logger = logging.getLogger(__name__)

KFD_NODES = Path("/sys/class/kfd/kfd/topology/nodes")
KFD_DEVICE = Path("/dev/kfd")
"""The ROCm compute device every HIP process opens read-write; group ``render`` on current distributions."""
_ROCM_VERSION_FILES = (Path("/opt/rocm/.info/version"), Path("/opt/rocm/.info/version-dev"))


def parse_properties(text: str) -> dict[str, int]:
    """Parse a KFD ``properties`` file (``name value`` lines) into integers."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        try:
            out[key] = int(value.strip())
        except ValueError:
            continue
    return out


def gfx_arch(target_version: int) -> str:
    """``gfx_target_version`` to the gfx name: 90010 -> gfx90a, 90402 -> gfx942, 110000 -> gfx1100."""
    major, rest = divmod(target_version, 10000)
    minor, stepping = divmod(rest, 100)
    return f"gfx{major}{minor:x}{stepping:x}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _vram_mb(node: Path, props: dict[str, int]) -> int | None:
    minor = props.get("drm_render_minor")
    if minor is not None:
        raw = _read(Path(f"/sys/class/drm/renderD{minor}/device/mem_info_vram_total"))
        if raw and raw.isdigit():
            return int(raw) // 2**20
    sizes: list[int] = [
        parse_properties(_read(b / "properties") or "").get("size_in_bytes", 0) for b in node.glob("mem_banks/*")
    ]
    largest = max(sizes, default=0)
    return largest // 2**20 if largest else None


def probe_kfd(nodes_dir: Path = KFD_NODES) -> list[DeviceInfo] | None:
    """AMD GPUs from the KFD topology, or None when there is no ``/sys/class/kfd``."""
    if not nodes_dir.is_dir():
        return None
    driver = _read(Path("/sys/module/amdgpu/version"))
    runtime = next((v for v in map(_read, _ROCM_VERSION_FILES) if v), None)
    devices: list[DeviceInfo] = []
    nodes = sorted((p for p in nodes_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    for node in nodes:
        props = parse_properties(_read(node / "properties") or "")
        if props.get("simd_count", 0) <= 0 or not props.get("gfx_target_version"):
            continue  # a CPU agent
        arch = gfx_arch(props["gfx_target_version"])
        name = _read(node / "name") or ""
        devices.append(
            DeviceInfo(
                kind="rocm",
                index=len(devices),
                name=name if name and name != arch else f"AMD {arch}",
                total_memory_mb=_vram_mb(node, props),
                driver_version=driver,
                runtime_version=runtime,
                arch=arch,
                uuid=str(props["unique_id"]) if props.get("unique_id") else None,
            )
        )
    return devices


def rocm_smi_names(exe: str = "rocm-smi") -> list[str]:
    """Product names in card order from ``rocm-smi --showproductname --json`` ([] when unavailable)."""
    import json
    import shutil
    import subprocess

    path = shutil.which(exe)
    if path is None:
        return []
    try:
        done = subprocess.run(
            [path, "--showproductname", "--json"], capture_output=True, text=True, timeout=10, check=False
        )
        data = json.loads(done.stdout or "{}")
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        logger.debug("rocm-smi failed: %s", e)
        return []
    cards = sorted((k for k in data if k.startswith("card")), key=lambda k: int(k[4:] or 0))
    fields = [{str(k).lower(): v for k, v in dict(data[c]).items()} for c in cards]  # "Card series"/"Card Series"
    return [str(f.get("card series") or f.get("card sku") or "") for f in fields]


def check_kfd_access(device: Path = KFD_DEVICE) -> None:
    """Open ``device`` read-write as HIP will, and say in one line what to do when that is refused.

    The KFD topology in sysfs is readable by everyone, so detection finds the GPUs even for a user who
    may not use them; without this check the worker would start and every job would fail.

    Raises:
        HardwareUnavailableError: the device is missing or this user may not open it.
    """
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError as e:
        raise HardwareUnavailableError(
            f"{device} does not exist: load the amdgpu driver, or pass --device={device} --device=/dev/dri "
            "to the container"
        ) from e
    except PermissionError as e:
        group, user = _group_name(device), getpass.getuser()
        raise HardwareUnavailableError(
            f"user {user} may not open {device} (permission denied): add it to the {group} group "
            f"(sudo usermod -aG {group} {user}, then log in again; in a container: --group-add {group})"
        ) from e
    os.close(fd)


def _group_name(path: Path) -> str:
    gid = path.stat().st_gid
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:  # a group the container's /etc/group does not name (a host's render gid)
        return str(gid)


class RocmBackend(Backend):
    """AMD GPUs (ROCm/HIP)."""

    kind = "rocm"

    def _probe(self) -> Sequence[DeviceInfo]:
        try:
            found = probe_kfd()
        except (OSError, ValueError) as e:  # an unreadable topology: ask torch, if loaded
            self._note(f"rocm: KFD topology unreadable ({e})")
            found = None
        if found is None:
            found = probe_loaded_torch("rocm")
            if found is None:
                self._note("rocm: no /sys/class/kfd (no amdgpu kernel driver)")
            return found or ()
        names = rocm_smi_names() if found else []
        if len(names) == len(found):
            found = [DeviceInfo(**{**d.to_dict(), "name": n}) if n else d for d, n in zip(found, names, strict=True)]
        return found

    def _visible_env(self, index: int) -> dict[str, str]:
        # HIP_VISIBLE_DEVICES only: HIP also honours CUDA_VISIBLE_DEVICES and ROCR_VISIBLE_DEVICES,
        # and setting two of them filters twice (index 1 of a one-device list is no device).
        return {"HIP_VISIBLE_DEVICES": str(index)}

    def _check_access(self) -> None:
        check_kfd_access()

    def _sync(self) -> None:
        torch_ops.synchronize("rocm")

    def _reset_peak(self) -> None:
        torch_ops.reset_peak_memory("rocm")

    def _peak_mb(self) -> float:
        return torch_ops.peak_memory_mb("rocm")

"""The CUDA backend: NVIDIA GPUs found through NVML (ctypes) or ``nvidia-smi``, never through torch.

Detection order: NVML via ``libnvidia-ml.so.1`` (no subprocess, ~1 ms), then ``nvidia-smi
--query-gpu ... --format=csv``, then torch only when a model process has already imported it (and
only for a CUDA build: a ROCm torch also answers ``torch.cuda``, and ROCm is never reported as CUDA).
Indices follow PCI bus order, as NVML and nvidia-smi do; :meth:`CudaBackend.pin_env` sets
``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so that the CUDA runtime agrees with them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

from accelerate_core.backends import torch_ops
from accelerate_core.backends.base import Backend, DeviceInfo

logger = logging.getLogger(__name__)

_NVML_LIBS = ("libnvidia-ml.so.1", "libnvidia-ml.so", "nvml.dll")
_SMI_FIELDS = "index,name,memory.total,driver_version,compute_cap,uuid"


def _load_nvml() -> Any:
    import ctypes

    for name in _NVML_LIBS:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def _nvml_str(fn: Any, *args: Any, size: int = 96) -> str | None:
    import ctypes

    buf = ctypes.create_string_buffer(size)
    if fn(*args, buf, ctypes.c_uint(size)) != 0:
        return None
    return buf.value.decode(errors="replace")


def _nvml_device(lib: Any, index: int, driver: str | None, runtime: str | None) -> DeviceInfo:
    import ctypes

    class _NvmlMemory(ctypes.Structure):  # nvmlMemory_t
        _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]

    handle = ctypes.c_void_p()
    if lib.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(index), ctypes.byref(handle)) != 0:
        raise OSError(f"nvmlDeviceGetHandleByIndex({index}) failed")
    mem = _NvmlMemory()
    total = mem.total // 2**20 if lib.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(mem)) == 0 else None
    major, minor = ctypes.c_int(), ctypes.c_int()
    ok = lib.nvmlDeviceGetCudaComputeCapability(handle, ctypes.byref(major), ctypes.byref(minor)) == 0
    return DeviceInfo(
        kind="cuda",
        index=index,
        name=_nvml_str(lib.nvmlDeviceGetName, handle) or f"NVIDIA GPU {index}",
        total_memory_mb=total,
        driver_version=driver,
        runtime_version=runtime,
        compute_capability=f"{major.value}.{minor.value}" if ok else None,
        uuid=_nvml_str(lib.nvmlDeviceGetUUID, handle),
    )


def probe_nvml() -> list[DeviceInfo] | None:
    """NVIDIA devices through NVML, or None when the library is absent or fails to initialise."""
    import ctypes

    lib = _load_nvml()
    if lib is None or lib.nvmlInit_v2() != 0:
        return None
    try:
        count = ctypes.c_uint()
        if lib.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0:
            return None
        driver = _nvml_str(lib.nvmlSystemGetDriverVersion, size=80)
        version = ctypes.c_int()
        runtime = None
        if lib.nvmlSystemGetCudaDriverVersion_v2(ctypes.byref(version)) == 0:
            runtime = f"{version.value // 1000}.{version.value % 1000 // 10}"
        return [_nvml_device(lib, i, driver, runtime) for i in range(count.value)]
    finally:
        lib.nvmlShutdown()


def parse_nvidia_smi_csv(text: str) -> list[DeviceInfo]:
    """Parse ``nvidia-smi --query-gpu=index,name,memory.total,driver_version,compute_cap,uuid
    --format=csv,noheader,nounits`` output (missing trailing fields are allowed)."""
    devices = []
    for line in text.strip().splitlines():
        cols = [c.strip() for c in line.split(",")]
        if len(cols) < 2 or not cols[0].isdigit():
            continue
        cols += [""] * (6 - len(cols))

        def known(value: str) -> str | None:
            return value if value and not value.startswith("[") and value != "N/A" else None

        memory = known(cols[2])
        devices.append(
            DeviceInfo(
                kind="cuda",
                index=int(cols[0]),
                name=cols[1],
                total_memory_mb=int(float(memory)) if memory else None,
                driver_version=known(cols[3]),
                compute_capability=known(cols[4]),
                uuid=known(cols[5]),
            )
        )
    return devices


def probe_nvidia_smi(exe: str = "nvidia-smi") -> list[DeviceInfo] | None:
    """NVIDIA devices through ``nvidia-smi``, or None when it is absent or fails."""
    import shutil
    import subprocess

    path = shutil.which(exe)
    if path is None:
        return None
    for fields in (_SMI_FIELDS, _SMI_FIELDS.replace("compute_cap,", "")):  # old drivers lack compute_cap
        cmd = [path, f"--query-gpu={fields}", "--format=csv,noheader,nounits"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError) as e:
            logger.debug("nvidia-smi failed: %s", e)
            return None
        if done.returncode == 0:
            if "compute_cap" not in fields:
                return [_without_cc(d) for d in parse_nvidia_smi_csv(done.stdout)]
            return parse_nvidia_smi_csv(done.stdout)
    return None


def _without_cc(dev: DeviceInfo) -> DeviceInfo:
    # Without compute_cap the 5th column is the uuid.
    return DeviceInfo(**{**dev.to_dict(), "compute_capability": None, "uuid": dev.compute_capability})


def probe_loaded_torch(kind: str) -> list[DeviceInfo] | None:
    """Devices through torch, only when this process has already imported it (never imports it).

    Returns None when torch is not loaded or is not a build for ``kind`` (``torch.version.hip`` tells
    a ROCm build from a CUDA one).
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    is_hip = getattr(torch.version, "hip", None) is not None
    if (kind == "rocm") != is_hip or not torch.cuda.is_available():
        return None
    runtime = torch.version.hip if is_hip else torch.version.cuda
    out = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        arch = getattr(props, "gcnArchName", None) if is_hip else None
        out.append(
            DeviceInfo(
                kind=kind,
                index=i,
                name=props.name,
                total_memory_mb=int(props.total_memory // 2**20),
                runtime_version=str(runtime) if runtime else None,
                compute_capability=None if is_hip else f"{props.major}.{props.minor}",
                arch=arch.split(":")[0] if arch else None,
            )
        )
    return out


class CudaBackend(Backend):
    """NVIDIA GPUs (CUDA)."""

    kind = "cuda"

    def _probe(self) -> Sequence[DeviceInfo]:
        probes = (("nvml", probe_nvml), ("nvidia-smi", probe_nvidia_smi), ("torch", lambda: probe_loaded_torch("cuda")))
        for source, probe in probes:
            try:
                found = probe()
            except (OSError, AttributeError, ValueError, RuntimeError) as e:  # an old or broken driver: next probe
                self._note(f"cuda: {source} probe failed ({e}); trying the next")
                continue
            if found is not None:
                logger.debug("cuda: %d device(s) via %s", len(found), source)
                return found
        self._note("cuda: no NVML library and no nvidia-smi (no NVIDIA driver)")
        return ()

    def _visible_env(self, index: int) -> dict[str, str]:
        return {"CUDA_VISIBLE_DEVICES": str(index), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}

    def _sync(self) -> None:
        torch_ops.synchronize("cuda")

    def _reset_peak(self) -> None:
        torch_ops.reset_peak_memory("cuda")

    def _peak_mb(self) -> float:
        return torch_ops.peak_memory_mb("cuda")

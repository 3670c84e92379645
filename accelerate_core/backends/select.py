"""Which hardware can run a model, and which is preferred: pure rules over an inventory given as data.

Rules, applied to every device:

1. **kind allowed**: the model's requirements may exclude kinds (e.g. a model known to fail on mps);
2. **dtype supported**: bfloat16 needs compute capability >= 8.0 on CUDA, a gfx90a/gfx94x/gfx11+
   class GPU on ROCm, macOS 14 on MPS; float16 needs compute capability >= 5.3 on CUDA; float64 never
   on MPS. float16/bfloat16 on CPU are *allowed but not preferred* (many kernels are emulated);
3. **memory fits with headroom**: the estimate (parameters x bytes per element x an overhead factor
   for activations and the allocator) must fit in ``(1 - headroom)`` of the device's memory.

Among the devices that pass, the preferred one has no "slow" penalty, then the highest kind
preference (cuda = rocm > mps > cpu), then the most memory, then the lowest index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from accelerate_core.backends.base import DeviceInfo
from accelerate_core.backends.inventory import Inventory, require
from accelerate_core.constants import HARDWARE_KINDS, TORCH_DEVICE
from accelerate_core.errors import ConfigError, HardwareUnavailableError

KIND_PREFERENCE: dict[str, int] = {"cuda": 3, "rocm": 3, "mps": 2, "cpu": 0}
"""Higher is preferred; cuda and rocm tie (a machine rarely has both)."""

DTYPE_BYTES: dict[str, int] = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
"""Bytes per parameter of each supported dtype."""

_DTYPE_ALIASES: dict[str, str] = {
    "fp32": "float32",
    "float": "float32",
    "fp16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
    "fp64": "float64",
    "double": "float64",
}
_ROCM_BF16_PREFIXES = ("gfx908", "gfx90a", "gfx94", "gfx95", "gfx11", "gfx12")


def normalize_dtype(dtype: str | None) -> str:
    """Canonical dtype name (``bf16`` -> ``bfloat16``, ``torch.float16`` -> ``float16``); None -> float32.

    Raises:
        ConfigError: the dtype is not one of float32, float16, bfloat16, float64.
    """
    if dtype is None:
        return "float32"
    name = str(dtype).lower().removeprefix("torch.")
    name = _DTYPE_ALIASES.get(name, name)
    if name not in DTYPE_BYTES:
        raise ConfigError(f"dtype {dtype!r} is not supported: use one of {', '.join(DTYPE_BYTES)}")
    return name


@dataclass(frozen=True, slots=True)
class ModelRequirements:
    """What a model needs from a device.

    Attributes:
        model_type: for messages only.
        param_count: number of parameters (None: unknown, memory is not checked).
        dtype: the dtype to run in (aliases accepted, normalised).
        memory_mb: an explicit memory need in MiB (overrides the estimate from ``param_count``).
        kinds: the hardware kinds allowed to run it.
        overhead: memory factor over the raw weights (activations, allocator, workspace).
        headroom: the fraction of a device's memory left free.
    """

    model_type: str = "model"
    param_count: int | None = None
    dtype: str = "float32"
    memory_mb: float | None = None
    kinds: tuple[str, ...] = HARDWARE_KINDS
    overhead: float = 1.5
    headroom: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", normalize_dtype(self.dtype))
        unknown = [k for k in self.kinds if k not in HARDWARE_KINDS]
        if unknown:
            raise ConfigError(f"unknown hardware kind(s) {unknown}: use {', '.join(HARDWARE_KINDS)}")
        if not 0 <= self.headroom < 1 or self.overhead < 1:
            raise ConfigError("headroom must be in [0, 1) and overhead >= 1")

    def required_mb(self) -> float | None:
        """Estimated memory need in MiB, or None when unknown."""
        if self.memory_mb is not None:
            return self.memory_mb
        if self.param_count is None:
            return None
        return self.param_count * DTYPE_BYTES[self.dtype] * self.overhead / 2**20


@dataclass(frozen=True, slots=True)
class Candidate:
    """One device assessed for a model: can it run it, is it slow, and why."""

    device: DeviceInfo
    ok: bool
    slow: bool = False
    reasons: tuple[str, ...] = ()

    def rank(self) -> tuple[int, int, int, int]:
        """Sort key, best first when sorted descending."""
        mem = self.device.total_memory_mb or 0
        return (int(not self.slow), KIND_PREFERENCE.get(self.device.kind, 0), mem, -self.device.index)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data."""
        return {"device": self.device.label, "ok": self.ok, "slow": self.slow, "reasons": list(self.reasons)}


@dataclass(frozen=True, slots=True)
class Selection:
    """The chosen device for a model, with every candidate and the kinds that could run it."""

    device: DeviceInfo
    dtype: str
    required_mb: float | None
    candidates: tuple[Candidate, ...] = field(default=())

    @property
    def kind(self) -> str:
        """The chosen hardware kind."""
        return self.device.kind

    @property
    def torch_device(self) -> str:
        """The torch device string (a ROCm GPU is ``cuda:N`` to torch, as HIP builds name it)."""
        kind = TORCH_DEVICE[self.device.kind]
        return f"{kind}:{self.device.index}" if kind == "cuda" else kind

    @property
    def runnable_kinds(self) -> tuple[str, ...]:
        """Kinds with at least one device able to run the model, preferred first."""
        ordered = sorted((c for c in self.candidates if c.ok), key=Candidate.rank, reverse=True)
        return tuple(dict.fromkeys(c.device.kind for c in ordered))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data."""
        return {
            "device": self.device.label,
            "torch_device": self.torch_device,
            "dtype": self.dtype,
            "required_mb": self.required_mb,
            "runnable_kinds": list(self.runnable_kinds),
            "candidates": [c.to_dict() for c in self.candidates],
        }


def dtype_support(dtype: str, device: DeviceInfo) -> tuple[bool, bool, str | None]:
    """Whether ``device`` runs ``dtype``: ``(supported, slow, reason)``."""
    dtype = normalize_dtype(dtype)
    if device.kind == "cpu":
        if dtype in ("float16", "bfloat16"):
            return True, True, f"{dtype} on cpu runs but is slow (emulated kernels); not preferred"
        return True, False, None
    if device.kind == "cuda":
        return _cuda_dtype(dtype, device)
    if device.kind == "rocm":
        if dtype == "bfloat16" and device.arch and not device.arch.startswith(_ROCM_BF16_PREFIXES):
            return False, False, f"bfloat16 needs a gfx90a/gfx94x/gfx11+ GPU ({device.arch} has none)"
        return True, False, None
    if device.kind == "mps":
        if dtype == "float64":
            return False, False, "float64 is not supported on mps"
        if dtype == "bfloat16" and _major(device.runtime_version) < 14:
            return False, False, f"bfloat16 on mps needs macOS 14 (have {device.runtime_version or 'unknown'})"
    return True, False, None


def _cuda_dtype(dtype: str, device: DeviceInfo) -> tuple[bool, bool, str | None]:
    cc = device.capability_tuple()
    need = {"bfloat16": (8, 0), "float16": (5, 3)}.get(dtype)
    if need is None:
        return True, False, None
    if cc is None:
        return True, False, f"compute capability unknown; assuming {dtype} works"
    if cc < need:
        return False, False, f"{dtype} needs compute capability >= {need[0]}.{need[1]} (has {cc[0]}.{cc[1]})"
    return True, False, None


def _major(version: str | None) -> int:
    try:
        return int((version or "0").split(".")[0])
    except ValueError:
        return 0


def assess(model: ModelRequirements, device: DeviceInfo) -> Candidate:
    """Apply every rule to one device."""
    reasons: list[str] = []
    ok = True
    if device.kind not in model.kinds:
        ok = False
        reasons.append(f"{model.model_type} is not allowed on {device.kind}")
    supported, slow, why = dtype_support(model.dtype, device)
    ok = ok and supported
    if why:
        reasons.append(why)
    need = model.required_mb()
    if need is not None and device.total_memory_mb:
        usable = device.total_memory_mb * (1 - model.headroom)
        if need > usable:
            ok = False
            reasons.append(f"needs ~{need:.0f} MiB, only {usable:.0f} MiB usable of {device.total_memory_mb}")
    return Candidate(device=device, ok=ok, slow=slow, reasons=tuple(reasons))


def parse_hardware(hardware: str) -> tuple[str | None, int | None]:
    """``auto`` -> (None, None); ``cuda`` -> ("cuda", None); ``cuda:1`` -> ("cuda", 1).

    Raises:
        ConfigError: not a hardware kind or a malformed index.
    """
    if hardware in ("", "auto"):
        return None, None
    kind, _, index = hardware.partition(":")
    if kind not in HARDWARE_KINDS or (index and not index.isdigit()):
        raise ConfigError(f"hardware {hardware!r} is invalid: use auto, a kind ({', '.join(HARDWARE_KINDS)}) or kind:N")
    return kind, int(index) if index else None


def select_hardware(model: ModelRequirements, inventory: Inventory, *, hardware: str = "auto") -> Selection:
    """Choose the device that runs ``model`` best among ``inventory``'s devices.

    Args:
        model: what the model needs.
        inventory: the devices to choose from.
        hardware: ``auto``, a kind (``cuda``) or one device (``cuda:1``).

    Raises:
        ConfigError: ``hardware`` is malformed.
        HardwareUnavailableError: the requested kind/device is absent, or no device can run the model.
    """
    kind, index = parse_hardware(hardware)
    pool: Sequence[DeviceInfo] = inventory.devices
    if kind is not None:
        pool = require(kind, None if index is None else [index], inventory)
    candidates = tuple(assess(model, d) for d in pool)
    fitting = sorted((c for c in candidates if c.ok), key=Candidate.rank, reverse=True)
    if not fitting:
        why = "; ".join(f"{c.device.label}: {', '.join(c.reasons) or 'rejected'}" for c in candidates)
        raise HardwareUnavailableError(
            f"no device here can run {model.model_type} in {model.dtype} ({why or 'no devices'}): "
            "try another dtype or --hardware"
        )
    return Selection(
        device=fitting[0].device, dtype=model.dtype, required_mb=model.required_mb(), candidates=candidates
    )

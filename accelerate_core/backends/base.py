"""The hardware backend base class and the device record every backend produces.

A backend is one hardware kind (``cpu``, ``cuda``, ``rocm``, ``mps``). The public methods of
:class:`Backend` hold the shared logic (caching, thread safety, the thread-count environment,
validation of device indices); each kind implements a few small private hooks:

- ``_probe()``: enumerate the devices, preferably without importing torch;
- ``_visible_env(index)``: the variables that make only one device visible to a child process;
- ``_check_access()``: that this user may open the devices (sysfs shows them to everyone);
- ``_sync()``, ``_reset_peak()``, ``_peak_mb()``: device-side work, called only in a process that
  runs models (they may import torch).

:class:`StubBackend` ships a backend whose devices are given as data (tests, planning for machines
that are not this one).
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from accelerate_core.errors import HardwareUnavailableError

logger = logging.getLogger(__name__)

THREAD_ENV_VARS: tuple[str, ...] = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)
"""Variables that cap the intra-op thread pools of torch, MKL, OpenBLAS, numexpr and Accelerate."""


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One device of one hardware kind, as detected (or given as data).

    Attributes:
        kind: the hardware kind (``cpu``, ``cuda``, ``rocm``, ``mps``).
        index: the device index within its kind (what ``CUDA_VISIBLE_DEVICES`` takes); 0 for cpu/mps.
        name: the product name (GPU name, CPU model).
        total_memory_mb: device memory in MiB (system RAM for cpu, unified memory for mps).
        driver_version: the kernel driver version, when known.
        runtime_version: the CUDA/ROCm runtime version (the macOS version for mps), when known.
        compute_capability: ``"8.0"`` style, CUDA only.
        arch: the GPU architecture (``gfx90a``) or the CPU machine (``x86_64``).
        cores: physical cores (cpu only).
        threads: logical CPUs (cpu only).
        uuid: a stable identifier when the driver gives one.
    """

    kind: str
    index: int
    name: str
    total_memory_mb: int | None = None
    driver_version: str | None = None
    runtime_version: str | None = None
    compute_capability: str | None = None
    arch: str | None = None
    cores: int | None = None
    threads: int | None = None
    uuid: str | None = None

    @property
    def label(self) -> str:
        """``kind:index`` (``cuda:1``), the name this device goes by in logs and reports."""
        return f"{self.kind}:{self.index}"

    def capability_tuple(self) -> tuple[int, int] | None:
        """The compute capability as ``(major, minor)``, or None when unknown or not CUDA."""
        if not self.compute_capability:
            return None
        major, _, minor = self.compute_capability.partition(".")
        try:
            return int(major), int(minor or 0)
        except ValueError:
            return None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeviceInfo:
        """Build from :meth:`to_dict` output (unknown keys are ignored, for forward compatibility)."""
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


class Backend(ABC):
    """One hardware kind: availability, devices, pinning environment, sync and peak memory.

    Subclasses set :attr:`kind` and implement the private hooks; the public methods are final.
    Device enumeration runs once per backend instance (thread-safe) unless ``refresh=True``.
    """

    kind: str = ""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._devices: tuple[DeviceInfo, ...] | None = None
        self._notes: list[str] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r})"

    # -- public API -------------------------------------------------------------------------------

    def devices(self, *, refresh: bool = False) -> tuple[DeviceInfo, ...]:
        """The devices of this kind on this machine (probed once, then cached).

        A probe that fails is logged and reported as no devices: detection never raises.
        """
        with self._lock:
            if self._devices is None or refresh:
                self._notes = []
                try:
                    self._devices = tuple(self._probe())
                except Exception as e:  # a broken driver must not break `accel detect`
                    logger.debug("%s probe failed: %s", self.kind, e, exc_info=True)
                    self._notes.append(f"{self.kind} probe failed: {e}")
                    self._devices = ()
            return self._devices

    @property
    def notes(self) -> tuple[str, ...]:
        """Why detection found nothing or fell back (filled by the last probe)."""
        return tuple(self._notes)

    def available(self) -> bool:
        """True when at least one device of this kind is present."""
        return bool(self.devices())

    def device(self, index: int = 0) -> DeviceInfo:
        """Return device ``index``; raises HardwareUnavailableError when it is not present."""
        for dev in self.devices():
            if dev.index == index:
                return dev
        present = [d.index for d in self.devices()]
        where = f"present: {present}" if present else f"no {self.kind} device on this machine"
        raise HardwareUnavailableError(
            f"{self.kind} device {index} is not available ({where}): run `accel detect` to see the hardware"
        )

    def pin_env(self, device_index: int | None = 0, threads: int | None = None) -> dict[str, str]:
        """The environment that pins a child process to one device and a thread count.

        Args:
            device_index: the device to make visible (ignored by cpu/mps, which have one).
            threads: intra-op threads for torch/BLAS (None: leave the libraries' default).

        Returns:
            Variables to add to the child's environment.
        """
        env = {} if threads is None else dict.fromkeys(THREAD_ENV_VARS, str(max(1, threads)))
        env.update(self._visible_env(0 if device_index is None else device_index))
        return env

    def check_access(self) -> None:
        """Raise HardwareUnavailableError (one line) when this process may see the devices but not use them."""
        self._check_access()

    def synchronize(self) -> None:
        """Wait for queued device work to finish (no-op on cpu)."""
        self._sync()

    def reset_peak_memory(self) -> None:
        """Start a new peak-memory window for :meth:`peak_memory_mb`."""
        self._reset_peak()

    def peak_memory_mb(self) -> float:
        """Peak memory of this process on this kind since the last reset, in MiB."""
        return self._peak_mb()

    # -- hooks ------------------------------------------------------------------------------------

    @abstractmethod
    def _probe(self) -> Sequence[DeviceInfo]:
        """Enumerate this kind's devices (each backend's own probe)."""

    def _visible_env(self, index: int) -> dict[str, str]:
        return {}

    def _check_access(self) -> None:
        return None

    def _sync(self) -> None:
        return None

    def _reset_peak(self) -> None:
        return None

    def _peak_mb(self) -> float:
        return 0.0

    def _note(self, message: str) -> None:
        self._notes.append(message)


class StubBackend(Backend):
    """A backend whose devices are given as data: for tests and for planning other machines."""

    def __init__(self, kind: str, devices: Sequence[DeviceInfo] = ()) -> None:
        super().__init__()
        self.kind = kind
        self._given = tuple(devices)

    def _probe(self) -> Sequence[DeviceInfo]:
        return self._given

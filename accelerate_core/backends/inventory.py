"""What hardware this machine has: :func:`detect` returns an :class:`Inventory`, cached per process.

The inventory is plain data (frozen dataclasses with ``to_dict``/``from_dict``), so a planner can
reason about another machine's inventory given as JSON, and tests can give one as data.
"""

from __future__ import annotations

import logging
import platform
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from accelerate_core.backends.base import Backend, DeviceInfo
from accelerate_core.backends.cpu import CpuBackend
from accelerate_core.backends.cuda import CudaBackend
from accelerate_core.backends.mps import MpsBackend
from accelerate_core.backends.rocm import RocmBackend
from accelerate_core.constants import HARDWARE_KINDS
from accelerate_core.errors import ConfigError, HardwareUnavailableError

logger = logging.getLogger(__name__)

_BACKEND_TYPES: dict[str, type[Backend]] = {
    "cpu": CpuBackend,
    "cuda": CudaBackend,
    "rocm": RocmBackend,
    "mps": MpsBackend,
}
_backends: dict[str, Backend] = {}
_lock = threading.Lock()
_cached: Inventory | None = None


@dataclass(frozen=True, slots=True)
class Inventory:
    """The hardware of one machine: every device of every kind, plus where it was found.

    Attributes:
        host: the machine's host name.
        system: ``platform.system()`` (Linux, Darwin, Windows).
        machine: ``platform.machine()`` (x86_64, arm64).
        python: the Python version.
        devices: every device found, cpu first.
        notes: why a kind is missing or how it was probed (for ``accel detect``).
    """

    host: str
    system: str
    machine: str
    python: str
    devices: tuple[DeviceInfo, ...] = ()
    notes: tuple[str, ...] = field(default=())

    def of(self, kind: str) -> tuple[DeviceInfo, ...]:
        """The devices of one kind (empty when the kind is absent)."""
        return tuple(d for d in self.devices if d.kind == kind)

    def kinds(self) -> tuple[str, ...]:
        """The kinds present, in :data:`~accelerate_core.constants.HARDWARE_KINDS` order."""
        present = {d.kind for d in self.devices}
        return tuple(k for k in HARDWARE_KINDS if k in present)

    def has(self, kind: str) -> bool:
        """True when at least one device of ``kind`` is present."""
        return any(d.kind == kind for d in self.devices)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data (``kinds`` added for readers)."""
        return {
            "host": self.host,
            "system": self.system,
            "machine": self.machine,
            "python": self.python,
            "kinds": list(self.kinds()),
            "devices": [d.to_dict() for d in self.devices],
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Inventory:
        """Build from :meth:`to_dict` output; raises ConfigError when it is malformed."""
        try:
            return cls(
                host=str(data.get("host", "")),
                system=str(data.get("system", "")),
                machine=str(data.get("machine", "")),
                python=str(data.get("python", "")),
                devices=tuple(DeviceInfo.from_dict(d) for d in data.get("devices", ())),
                notes=tuple(data.get("notes", ())),
            )
        except (TypeError, AttributeError) as e:
            raise ConfigError(f"inventory data is malformed ({e}): give the output of `accel detect --json`") from e

    @classmethod
    def of_devices(cls, devices: Iterable[DeviceInfo], host: str = "given") -> Inventory:
        """An inventory made of the given devices (tests, planning for other machines)."""
        return cls(host=host, system="", machine="", python="", devices=tuple(devices))


def get_backend(kind: str) -> Backend:
    """The process-wide backend of one hardware kind; raises ConfigError for an unknown kind."""
    if kind not in _BACKEND_TYPES:
        raise ConfigError(f"unknown hardware kind {kind!r}: use one of {', '.join(HARDWARE_KINDS)}")
    with _lock:
        backend = _backends.get(kind)
        if backend is None:
            backend = _backends[kind] = _BACKEND_TYPES[kind]()
        return backend


def detect(*, refresh: bool = False, kinds: Sequence[str] = HARDWARE_KINDS) -> Inventory:
    """Detect this machine's hardware (cached per process; thread-safe).

    Args:
        refresh: probe again instead of returning the cached inventory.
        kinds: the kinds to probe (the cache holds only a full probe).

    Returns:
        The inventory; a kind whose probe fails is absent, with a note saying why.
    """
    global _cached
    full = tuple(kinds) == HARDWARE_KINDS
    with _lock:
        if full and _cached is not None and not refresh:
            return _cached
    devices: list[DeviceInfo] = []
    notes: list[str] = []
    for kind in kinds:
        backend = get_backend(kind)
        devices.extend(backend.devices(refresh=refresh))
        notes.extend(backend.notes)
    import socket

    inventory = Inventory(
        host=socket.gethostname(),
        system=platform.system(),
        machine=platform.machine(),
        python=platform.python_version(),
        devices=tuple(devices),
        notes=tuple(notes),
    )
    if full:
        with _lock:
            _cached = inventory
    logger.debug("detected %s", ", ".join(d.label for d in devices))
    return inventory


def require(kind: str, devices: Sequence[int] | None = None, inventory: Inventory | None = None) -> list[DeviceInfo]:
    """The devices of ``kind`` to use, or one clear error when they are not here.

    Args:
        kind: a hardware kind (``cpu``, ``cuda``, ``rocm``, ``mps``).
        devices: device indices wanted (None: every device of the kind).
        inventory: the inventory to check (None: :func:`detect`).

    Raises:
        ConfigError: ``kind`` is not a hardware kind.
        HardwareUnavailableError: no device of ``kind``, a requested index is missing, or this user may not
            open the devices (``/dev/kfd`` for rocm).
    """
    if kind not in HARDWARE_KINDS:
        raise ConfigError(f"unknown hardware kind {kind!r}: use one of {', '.join(HARDWARE_KINDS)}")
    inv = detect() if inventory is None else inventory
    present = inv.of(kind)
    if present and inventory is None:  # devices of this machine: also check this user may open them
        get_backend(kind).check_access()
    if not present:
        have = ", ".join(inv.kinds()) or "nothing"
        raise HardwareUnavailableError(
            f"no {kind} device on {inv.host or 'this machine'} (found: {have}): "
            f"choose another --hardware or run `accel detect`"
        )
    if devices is None:
        return list(present)
    by_index = {d.index: d for d in present}
    missing = [i for i in devices if i not in by_index]
    if missing:
        raise HardwareUnavailableError(
            f"{kind} device(s) {missing} not present (have {sorted(by_index)}): pick one of those indices"
        )
    return [by_index[i] for i in devices]

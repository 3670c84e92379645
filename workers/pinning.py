"""Hardware pinning: the device environment of one worker node, set before anything imports torch.

A worker node is pinned to one hardware kind and (for accelerators) one device index. Its process
environment names that device only (``CUDA_VISIBLE_DEVICES=3`` makes it ``cuda:0`` inside), and the
thread counts of the math libraries are capped so that several nodes on one machine do not
oversubscribe its cores. The environment is set in the worker's main process *before* Celery and
anything below it start, so the fork server and every job child inherit it. The main process itself
never imports torch: jobs run in the fork server's children.

The pinning travels in ``ACCEL_WORKER_*`` variables as well, so any process of the node (a prefork
pool process, the fork server) can tell which hardware and device it serves with :func:`current`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

from accelerate_core.constants import API_HARDWARE, WORKER_KINDS
from accelerate_core.errors import ConfigError

HARDWARE_ENV = "ACCEL_WORKER_HARDWARE"
"""The hardware kind this process serves (``cpu``, ``cuda``, ``rocm``, ``mps``, or ``api``: served endpoints)."""

DEVICE_ENV = "ACCEL_WORKER_DEVICE"
"""The physical device index this node is pinned to (empty for CPU and MPS)."""

NODE_ENV = "ACCEL_WORKER_NODE"
"""The node name of this worker, e.g. ``cuda0@gpu-box-1``."""


@dataclass(frozen=True, slots=True)
class Pinning:
    """What one worker node is pinned to.

    Attributes:
        hardware: the hardware kind.
        device_index: the physical device index for ``cuda``/``rocm``; a slot number for ``cpu``.
        threads: math-library threads per job (0 leaves the libraries' defaults).
    """

    hardware: str
    device_index: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        if self.hardware not in WORKER_KINDS:
            raise ConfigError(f"unknown hardware {self.hardware!r}: use one of {', '.join(WORKER_KINDS)}")
        if self.device_index < 0 or self.threads < 0:
            raise ConfigError("device index and thread count must be >= 0")

    def node_name(self, host: str | None = None) -> str:
        """The Celery node name, unique per device on a host: ``cuda0@host``, ``cpu1@host``."""
        return f"{self.hardware}{self.device_index}@{host or socket.gethostname()}"

    def device_env(self) -> dict[str, str]:
        """The environment that pins a process (and its children) to this device and thread count."""
        from accelerate_core.backends import get_backend

        # An api node runs HTTP clients, no model: it has no device to pin, only the CPU's thread count.
        backend = get_backend("cpu" if self.hardware == API_HARDWARE else self.hardware)
        env = backend.pin_env(self.device_index, self.threads or None)
        env.update({HARDWARE_ENV: self.hardware, DEVICE_ENV: str(self.device_index)})
        return env


def apply(pinning: Pinning, environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set ``pinning``'s device environment in ``environ`` (default ``os.environ``) and return it.

    Call this first thing in a worker's main process, before Celery or torch is imported.
    """
    env = pinning.device_env()
    target = os.environ if environ is None else environ
    target.update(env)
    return env


def current(environ: Mapping[str, str] | None = None) -> Pinning:
    """The pinning of this process, read back from its ``ACCEL_WORKER_*`` variables (CPU if unset)."""
    env = os.environ if environ is None else environ
    hardware = env.get(HARDWARE_ENV) or "cpu"
    raw_index = env.get(DEVICE_ENV) or "0"
    threads = env.get("OMP_NUM_THREADS") or "0"
    try:
        return Pinning(hardware, int(raw_index), int(threads))
    except ValueError as e:
        raise ConfigError(f"{DEVICE_ENV}={raw_index!r} or OMP_NUM_THREADS={threads!r} is not an integer") from e

"""Device models: the slug of a device's product name, and the queue of one device model.

A node consumes its kind's queue (``hw.cuda``) *and* its device model's (``hw.cuda.h100-80gb-hbm3``), so a run
may target one model (``--hardware cuda:h100``) while a plain ``--hardware cuda`` run still takes any node of the
kind. The slug comes from the product name (``torch.cuda.get_device_name``, NVML, rocm-smi, the CPU model from
``/proc/cpuinfo``) with the vendor's words dropped: ``NVIDIA H100 80GB HBM3`` -> ``h100-80gb-hbm3``.

``ACCEL_DEVICE_MODEL`` overrides the detected name (slugged too): it labels a node by hand (a fleet whose CPU
boxes all answer ``QEMU Virtual CPU``) and lets tests give a CPU node any model.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Final

from accelerate_core.constants import DEVICE_MODEL_PATTERN, HARDWARE_KINDS
from accelerate_core.errors import ConfigError

DEVICE_MODEL_ENV: Final = "ACCEL_DEVICE_MODEL"
"""Overrides the detected device name of this process (and its children); the value is slugged."""

UNKNOWN_MODEL: Final = "unknown"
"""The slug of a name with nothing left once slugged (an empty or all-vendor name)."""

MAX_SLUG: Final = 48
"""Longest slug: queue names stay readable, and a slug stays one token of a job key."""

_VENDOR_WORDS: Final = frozenset(
    {"nvidia", "amd", "ati", "intel", "apple", "corporation", "corp", "inc", "cpu", "processor", "r", "tm"}
)
_TOKEN = re.compile(r"[a-z0-9]+")
SLUG_PATTERN: Final = DEVICE_MODEL_PATTERN
"""What every slug matches: lower-case letters and digits in words joined by single hyphens."""


def slug(name: str) -> str:
    """The device model slug of a product name: lower case, vendor words dropped, words joined by ``-``.

    ``NVIDIA H100 80GB HBM3`` -> ``h100-80gb-hbm3``; ``Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz`` ->
    ``xeon-gold-6338-2-00ghz``; a name with nothing left is :data:`UNKNOWN_MODEL`. Always matches
    :data:`SLUG_PATTERN`, so ``hw.<kind>.<slug>`` is always a valid queue name.
    """
    words = [w for w in _TOKEN.findall(name.lower()) if w not in _VENDOR_WORDS]
    text = "-".join(words)[:MAX_SLUG].strip("-")
    return text or UNKNOWN_MODEL


def device_model(kind: str, index: int = 0, environ: Mapping[str, str] | None = None) -> str:
    """The slug of this machine's device ``kind:index`` (``ACCEL_DEVICE_MODEL`` first, when set).

    Raises:
        HardwareUnavailableError: no such device here (and no override).
    """
    env = os.environ if environ is None else environ
    if env.get(DEVICE_MODEL_ENV, "").strip():
        return recorded_model(None, env)
    from accelerate_core.backends.inventory import require

    return slug(require(kind, [index] if kind in ("cuda", "rocm") else None)[0].name)


def model_queue(kind_queue: str, model: str) -> str:
    """The queue of one device model: its kind's queue plus ``.<slug>`` (``hw.cuda`` -> ``hw.cuda.h100-sxm``)."""
    return f"{kind_queue}.{model}"


def models_in_queues(kind_queue: str, queues: Iterable[str]) -> list[str]:
    """The device models whose queues (of one kind's queue, ``hw.cuda``) appear among ``queues``, sorted."""
    prefix = f"{kind_queue}."
    return sorted({q[len(prefix) :] for q in queues if q.startswith(prefix) and SLUG_PATTERN.match(q[len(prefix) :])})


def match_model(kind: str, wanted: str, known: Iterable[str]) -> str:
    """The one known device model of ``kind`` that ``wanted`` names (exact, else prefix, else substring).

    Raises:
        ConfigError: none matches, or several do equally well (one line listing the known models).
    """
    models = sorted(set(known))
    key = slug(wanted)
    for rule in (lambda m: m == key, lambda m: m.startswith(key), lambda m: key in m):
        found = [m for m in models if rule(m)]
        if len(found) == 1:
            return found[0]
        if found:
            raise ConfigError(
                f"--hardware {kind}:{wanted} matches several device models ({', '.join(found)}): name one of them"
            )
    have = ", ".join(f"{kind}:{m}" for m in models) or "none (no live node of this kind)"
    raise ConfigError(f"--hardware {kind}:{wanted} names no known device model: known {have}")


def node_queues(kind_queue: str, kind: str, index: int = 0) -> list[str]:
    """The queues a node of ``kind:index`` consumes by default: its kind's and its device model's.

    A node that serves no device (``api``) consumes its kind's queue only.
    """
    if kind not in HARDWARE_KINDS:
        return [kind_queue]
    return [kind_queue, model_queue(kind_queue, device_model(kind, index))]


def recorded_model(device_name: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The device model a result records: ``ACCEL_DEVICE_MODEL`` when set, else the slug of the device's name."""
    given = (os.environ if environ is None else environ).get(DEVICE_MODEL_ENV, "").strip()
    return slug(given or device_name or "")

"""The measurements file: how a generated benchmark test hands its numbers to the job that ran it.

A generated test writes ``write_measurements(os.environ[BENCH_OUT_ENV], ...)``; the job then reads
it back with :func:`read_measurements`. The file is one wire message (:mod:`accelerate_core.wire`)::

    {
      "v": "1.0",
      "format": "accel-measurements",
      "environment": {...environment(hardware)...},
      "measurements": [{...one Measurement...}, ...]
    }

Writes are atomic (a temporary file renamed over the target), so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate_core import wire
from accelerate_core.contracts import Measurement
from accelerate_core.errors import ConfigError, ContractError

__all__ = ["FORMAT", "MeasurementsFile", "read_measurements", "write_measurements"]

FORMAT = "accel-measurements"
"""The ``format`` tag of a measurements file."""


@dataclass(frozen=True, slots=True)
class MeasurementsFile:
    """The content of a measurements file."""

    measurements: tuple[Measurement, ...]
    environment: Mapping[str, Any]
    format: str = FORMAT


def write_measurements(
    path: str | os.PathLike[str],
    measurements: Sequence[Measurement],
    environment: Mapping[str, Any],
    *,
    append: bool = False,
) -> Path:
    """Write measurements and their environment to ``path`` atomically; return the path.

    Args:
        path: the file (its folder must exist).
        measurements: the measurements.
        environment: the environment they were measured in (:func:`~accelerate_core.bench.environment`).
        append: keep the measurements already in the file (several benchmark tests, one file).

    Raises:
        ConfigError: the existing file is malformed (with ``append``).
    """
    target = Path(path)
    items = tuple(measurements)
    if append and target.exists():
        items = read_measurements(target).measurements + items
    content = wire.encode(MeasurementsFile(items, dict(environment)))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(content, fh, indent=1, default=str)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_measurements(path: str | os.PathLike[str]) -> MeasurementsFile:
    """Read a measurements file.

    Raises:
        ConfigError: the file is missing, not JSON, or not a measurements file this version reads.
    """
    target = Path(path)
    try:
        data = json.loads(target.read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"measurements file {target} does not exist: did the benchmark test run?") from e
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"measurements file {target} is unreadable ({e}): the benchmark test was cut short") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"{target} is not an {FORMAT} file: write it with write_measurements")
    try:
        return wire.decode(MeasurementsFile, data)
    except ContractError as e:
        raise ConfigError(f"measurements file {target} is malformed ({e}): write it with write_measurements") from e

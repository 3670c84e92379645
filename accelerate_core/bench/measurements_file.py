"""The measurements file: how a generated benchmark test hands its numbers to the job that ran it.

A generated test writes ``write_measurements(os.environ[BENCH_OUT_ENV], ...)``; the job then reads
it back with :func:`read_measurements`. The format (JSON, one object)::

    {
      "format": "accel-measurements",
      "version": 1,
      "environment": {...environment(hardware)...},
      "measurements": [{...Measurement.to_dict()...}, ...]
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

from accelerate_core.contracts import Measurement
from accelerate_core.errors import ConfigError

__all__ = ["FORMAT", "VERSION", "MeasurementsFile", "read_measurements", "write_measurements"]

FORMAT = "accel-measurements"
"""The ``format`` tag of a measurements file."""

VERSION = 1
"""The version of the measurements file format written here."""


@dataclass(frozen=True, slots=True)
class MeasurementsFile:
    """The content of a measurements file."""

    measurements: list[Measurement]
    environment: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The file's JSON object."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "environment": self.environment,
            "measurements": [m.to_dict() for m in self.measurements],
        }


def write_measurements(
    path: str | os.PathLike[str],
    measurements: Sequence[Measurement | Mapping[str, Any]],
    environment: Mapping[str, Any],
    *,
    append: bool = False,
) -> Path:
    """Write measurements and their environment to ``path`` atomically; return the path.

    Args:
        path: the file (its folder must exist).
        measurements: ``Measurement`` objects or their dicts (validated).
        environment: the environment they were measured in (:func:`~accelerate_core.bench.environment`).
        append: keep the measurements already in the file (several benchmark tests, one file).

    Raises:
        ConfigError: a measurement is malformed, or the existing file is (with ``append``).
    """
    target = Path(path)
    items = [m if isinstance(m, Measurement) else Measurement.from_dict(dict(m)) for m in measurements]
    if append and target.exists():
        items = read_measurements(target).measurements + items
    content = MeasurementsFile(items, dict(environment)).to_dict()
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
        ConfigError: the file is missing, not JSON, or not a measurements file of a known version.
    """
    target = Path(path)
    try:
        data = json.loads(target.read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"measurements file {target} does not exist: did the benchmark test run?") from e
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"measurements file {target} is unreadable ({e}): the benchmark test was cut short") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
        raise ConfigError(f"{target} is not an {FORMAT} v{VERSION} file: write it with write_measurements")
    raw = data.get("measurements")
    if not isinstance(raw, list):
        raise ConfigError(f"measurements file {target} has no measurements list: write it with write_measurements")
    return MeasurementsFile([Measurement.from_dict(m) for m in raw], dict(data.get("environment") or {}))

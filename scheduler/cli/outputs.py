"""Where a command writes (``--out``): checked, and made, before the command does its work.

A folder that cannot be made or written (``/proc/x``, an existing file, a read-only mount) is one line naming
the option and the path, exit 2 (:class:`~accelerate_core.errors.ConfigError`), before a long ``accel generate``
or ``accel models check`` has run, instead of an ``OSError`` traceback after it.
"""

from __future__ import annotations

import os
from pathlib import Path

from accelerate_core.errors import ConfigError

__all__ = ["out_file", "out_folder"]


def out_folder(path: Path, option: str = "--out") -> Path:
    """``path`` as a folder that exists and this process may write into (made with its parents); returned."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise ConfigError(f"{option} {path} cannot be made a folder ({why}): give a folder you can write") from e
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path} is not writable by this user: give a folder you can write")
    return path


def out_file(path: Path, option: str = "--out") -> Path:
    """``path`` as a file this process may write (its folder made); returned."""
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder: give a file path, e.g. {path / 'out.json'}")
    out_folder(path.parent, option)
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{option} {path} is not writable by this user: give a file you can write")
    return path

"""Run the installed ``accel`` console script as a user does: a real subprocess, a clean ACCEL_* environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ACCEL = Path(sys.executable).with_name("accel")
"""The console script of this environment (``python -m scheduler`` where it is not installed)."""


def accel(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run ``accel ARGS`` in ``cwd`` with no inherited ``ACCEL_*`` variable, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
    command = [str(ACCEL)] if ACCEL.exists() else [sys.executable, "-m", "scheduler"]
    return subprocess.run(
        [*command, *args], cwd=cwd, env={**base, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )


def seed_catalog_index(where: Path) -> None:
    """Put the catalog index (built once and cached in this checkout) where ``accel`` in ``where`` looks for it.

    Building it takes about 25 s of CPU (it imports transformers' every config); a fresh folder would
    build it again for each test that plans a run or checks a model name.
    """
    from accelerate_core.catalog.index import index_path, load_index

    load_index()
    target = where / index_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(index_path(), target)

"""Run the installed ``accel`` console script as a user does: a real subprocess, a clean ACCEL_* environment."""

from __future__ import annotations

import os
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

"""A fleet's processes in a test: ``accel writer``, ``accel worker``, ... started as real subprocesses, each with
its log, stopped as a group; and ``accel`` commands run against the same settings."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from accelerate_core.config import Settings
from accelerate_core.errors import BrokerError
from tests.support import processes

REPO = Path(__file__).resolve().parents[2]
ACCEL = [sys.executable, "-m", "scheduler"]


@dataclass
class FleetProcesses:
    """The processes of one test fleet, by name, all with the environment ``env`` (its ``ACCEL_*`` settings)."""

    settings: Settings
    env: dict[str, str]
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start ``accel ARGS`` in the background, its output in ``logs/NAME.log``."""
        proc = processes.start([*ACCEL, *args], env=self.env, cwd=REPO, log=self.logs / f"{name}.log")
        self.procs[name] = proc
        return proc

    def stop(self, name: str) -> None:
        """Stop the process ``name`` and its whole group."""
        processes.stop(self.procs.pop(name))

    def stop_all(self) -> None:
        """Stop every process still running, all at once."""
        processes.stop_all([self.procs.pop(name) for name in list(self.procs)])

    def log(self, name: str) -> str:
        """The tail of process ``name``'s log."""
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]

    def accel(self, *args: str, cwd: Path = REPO, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
        """Run ``accel ARGS`` in ``cwd`` to its end (tables as wide as their rows)."""
        env = {**self.env, "COLUMNS": "250"}
        return subprocess.run([*ACCEL, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout_s)

    def live(self) -> list[str]:
        """The live worker nodes' names (none while the broker does not answer)."""
        from scheduler.remote import live_nodes

        try:
            return live_nodes(self.settings, 1.0)
        except BrokerError:
            return []

"""The wire protocol between the :class:`ForkServer` client and its server: JSON lines over pipes.

Client -> server (the server's stdin), one JSON object per line::

    {"op": "submit", "job": {"v": "1.0", "job_id": ..., "payload": {...}, "env": {...}, "time_limit_s": 30,
                             "mem_cap_mb": 2048, "max_tasks": 1024, "max_file_mb": 4096}}
    {"op": "cancel", "job_id": "..."}
    {"op": "ping"}
    {"op": "shutdown"}

Server -> client (a private dup of the server's original stdout; the server points its own fd 1 at
stderr so that a stray ``print`` can never corrupt the stream)::

    {"event": "ready", "pid": 123, "mode": "fork", "preload_s": 4.2, "huge_mb": 210,
     "box": {"mode": "cgroup", "cgroup": ...}}          (huge_mb: its anonymous memory in 2 MiB pages)
    {"event": "started", "job_id": "...", "pid": 456}
    {"event": "outcome", "outcome": {...an encoded ChildOutcome...}}
    {"event": "pong", "running": 1, "queued": 0, "spare": 457}   (spare: the pid of the child forked
                                                                   ahead for the next job, or null)
    {"event": "fatal", "message": "..."}     (the server cannot start, e.g. the entry does not import)

A child writes exactly one JSON object (the outcome fields it knows) to its own result pipe, then exits.
JSON only, never pickle: a payload is data, not code. ``JobRequest`` and ``ChildOutcome`` travel encoded by
:mod:`accelerate_core.wire` (its one decoding rule, like every other message).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from accelerate_core.errors import RunnerError

log = logging.getLogger(__name__)

__all__ = [
    "BOX_MODES",
    "DEFAULT_MAX_FILE_MB",
    "DEFAULT_MAX_TASKS",
    "KILL_GRACE_S",
    "JobRequest",
    "LineReader",
    "encode",
]

_READ_CHUNK = 1 << 16

KILL_GRACE_S = 2.0
"""Seconds between SIGTERM and SIGKILL when a child passes its hard time limit (the client's watchdog
allows for it too)."""

BOX_MODES = ("auto", "cgroup", "sweep")
"""How the server boxes each job (:mod:`accelerate_core.runner.box`); ``auto``: cgroup when this machine
offers a writable one, else sweep."""

DEFAULT_MAX_TASKS = 1024
"""Processes and threads a job's whole tree may have at once. Threads count, as the kernel's pids
controller counts tasks: torch starts one intra-op thread per core when no thread count is pinned."""

DEFAULT_MAX_FILE_MB = 4096
"""The largest file a job (or any process it starts) may write, in MiB."""


@dataclass(frozen=True, slots=True)
class JobRequest:
    """One job as the server receives it."""

    job_id: str
    payload: dict[str, Any]
    time_limit_s: float
    mem_cap_mb: int
    env: dict[str, str] = field(default_factory=dict)
    max_tasks: int = DEFAULT_MAX_TASKS
    max_file_mb: int = DEFAULT_MAX_FILE_MB

    def __post_init__(self) -> None:
        if not self.job_id:
            raise RunnerError("job_id is empty: give every job a unique id")
        if not self.time_limit_s > 0:
            raise RunnerError(f"time_limit_s={self.time_limit_s} is invalid: give a positive number of seconds")
        if self.mem_cap_mb < 1:
            raise RunnerError(f"mem_cap_mb={self.mem_cap_mb} is invalid: give a positive number of MiB")
        if self.max_tasks < 2:
            raise RunnerError(f"max_tasks={self.max_tasks} is invalid: give 2 or more (the job's own process counts)")
        if self.max_file_mb < 1:
            raise RunnerError(f"max_file_mb={self.max_file_mb} is invalid: give a positive number of MiB")


def encode(message: dict[str, Any]) -> bytes:
    """One protocol line (JSON, no embedded newlines, newline-terminated)."""
    return json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n"


class LineReader:
    """Reads JSON lines from a non-blocking file descriptor without ever blocking."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.eof = False
        self._buffer = b""

    def read(self) -> list[dict[str, Any]]:
        """Read what is available now and return the complete messages; sets ``eof`` at end of stream."""
        while not self.eof:
            try:
                chunk = os.read(self.fd, _READ_CHUNK)
            except BlockingIOError:
                break
            except OSError:  # the other side is gone (EBADF, EIO): same as end of stream
                chunk = b""
            if not chunk:
                self.eof = True
                break
            self._buffer += chunk
            if len(chunk) < _READ_CHUNK:
                break
        return self._split()

    def _split(self) -> list[dict[str, Any]]:
        *lines, self._buffer = self._buffer.split(b"\n")
        messages = []
        for line in lines:
            if not line.strip():
                continue
            try:
                message = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                # A writer interrupted mid-line (a signal in the client) leaves one bad line: skip it, keep the stream.
                log.error("skipped a corrupt fork-server protocol line (%s): %.200r", e, line)
                continue
            if isinstance(message, dict):
                messages.append(message)
        return messages

"""Real processes in tests: each started in its own session with its output in a log, stopped as a group;
and waiting until a process is gone."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil


def start(argv: Sequence[str], *, env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session (so its children can be stopped with it), output appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    """SIGTERM the process group, then SIGKILL what is left after ``timeout_s``.

    The whole group, not only ``proc``: a shell that started servers in the background (``cmd &``) has
    exited long before them.
    """
    for sig, grace_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        if _gone(proc, grace_s):
            break
    proc.wait(10)


def stop_all(procs: Sequence[subprocess.Popen[bytes]], timeout_s: float = 30) -> None:
    """:func:`stop` for several process groups at once: SIGTERM them all, then wait for each.

    One after the other, each group's shutdown (a worker node's warm shutdown, the writer's last batch)
    would wait for the one before; signalled together they shut down side by side.
    """
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        if not _gone(proc, max(0.0, deadline - time.monotonic())):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            _gone(proc, 10.0)
        proc.wait(10)


def _gone(proc: subprocess.Popen[bytes], within_s: float) -> bool:
    """True once ``proc`` is reaped (its zombie would hold the group) and no process of its group is left."""
    deadline = time.monotonic() + within_s
    while proc.poll() is None or _group_alive(proc.pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for(check: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.3) -> Any:
    """Poll ``check`` until it returns something truthy (returned), or fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def gone(pid: int, within_s: float = 5.0) -> bool:
    """True once ``pid`` no longer runs (a zombie awaiting its reaping counts as gone)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def children_but_the_spare(fs: Any) -> list[psutil.Process]:
    """A fork server's children other than its spare (the child forked ahead for the next job, idle).

    ``fs`` is a :class:`accelerate_core.runner.ForkServer`; after a job every other child must be gone.
    """
    assert fs.ping()
    spare = fs.last_pong.get("spare")
    return [c for c in psutil.Process(fs.pid or 0).children() if c.pid != spare]

"""The server's children: start one per job (fork or spawn), watch time and memory, kill, reap, classify.

A child runs in its own session (``setsid``), so killing its process group takes any process it
started with it. At the hard time limit the group gets SIGTERM, then SIGKILL after a grace period.
The parent samples each child's RSS (psutil) whenever its loop wakes, at least every
``RSS_INTERVAL_S``, and kills a child whose RSS is over its cap. The server is a child subreaper
(Linux), so grandchildren orphaned by a killed job are reaped here rather than lingering as zombies.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from accelerate_core.constants import ERR_CRASHED, ERR_OOM, ERR_TIMEOUT
from accelerate_core.runner.child import Entry, run_forked
from accelerate_core.runner.environ import scrub
from accelerate_core.runner.outcome import ChildOutcome
from accelerate_core.runner.protocol import KILL_GRACE_S, JobRequest

__all__ = ["KILL_GRACE_S", "RSS_INTERVAL_S", "Child", "Supervisor"]

log = logging.getLogger(__name__)

RSS_INTERVAL_S = 0.1
"""How often (seconds) the parent samples a running child's RSS against its cap."""


_LOG_TAIL_CHARS = 2000
_FORK_BLOCKED = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
_MIB = 1024 * 1024


@dataclass
class Child:
    """One running job, as the parent tracks it."""

    request: JobRequest
    pid: int
    result_fd: int
    log_path: Path
    started: float
    proc: subprocess.Popen[bytes] | None = None
    data: bytearray = field(default_factory=bytearray)
    kill_reason: str | None = None
    kill_type: str = ""
    kill_detail: str = ""
    term_sent_at: float | None = None
    peak_rss: int = 0

    @property
    def deadline(self) -> float:
        """When the hard time limit passes (monotonic seconds)."""
        return self.started + self.request.time_limit_s

    def next_wakeup(self) -> float:
        """The next moment the parent must look at this child (monotonic seconds)."""
        if self.term_sent_at is not None:
            return self.term_sent_at + KILL_GRACE_S
        return min(self.deadline, time.monotonic() + RSS_INTERVAL_S)

    def drain(self) -> bool:
        """Read what the child wrote to its result pipe; True at end of stream."""
        while True:
            try:
                chunk = os.read(self.result_fd, 1 << 16)
            except BlockingIOError:
                return False
            except OSError:
                return True
            if not chunk:
                return True
            self.data += chunk


class Supervisor:
    """Starts, watches and reaps the children of one server.

    Args:
        entry: the resolved entry function (fork mode) or its ``"module:function"`` spec (spawn mode).
        spawn: start a fresh interpreter per job instead of forking.
        preload: modules a spawned child imports before the entry (fork mode has them already).
        workdir: where per-job logs and spawn job files live.
        close_in_child: descriptors a forked child must close (the server's protocol pipes).
    """

    def __init__(
        self,
        entry: Entry | str,
        *,
        spawn: bool,
        preload: tuple[str, ...],
        workdir: Path,
        close_in_child: Callable[[], list[int]],
    ) -> None:
        self.entry = entry
        self.spawn = spawn
        self.preload = preload
        self.workdir = workdir
        self.close_in_child = close_in_child
        self.children: dict[int, Child] = {}

    def start(self, request: JobRequest) -> Child:
        """Start one child for ``request`` and return it (the caller registers ``result_fd``)."""
        log_path = self.workdir / f"job-{len(self.children)}-{time.monotonic_ns()}.log"
        read_fd, write_fd = os.pipe()
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        proc = None
        try:
            if self.spawn:
                proc = self._spawn(request, write_fd, log_fd)
                pid = proc.pid
            else:
                pid = self._fork(request, read_fd, write_fd, log_fd)
        finally:
            os.close(write_fd)
            os.close(log_fd)
        os.set_blocking(read_fd, False)
        child = Child(request, pid, read_fd, log_path, time.monotonic(), proc=proc)
        self.children[pid] = child
        return child

    def _fork(self, request: JobRequest, read_fd: int, write_fd: int, log_fd: int) -> int:
        if not callable(self.entry):
            raise TypeError("fork mode needs the resolved entry function")
        others = [c.result_fd for c in self.children.values()]
        # Block the server's signals across the fork: a SIGTERM landing in the child before it resets its
        # handlers would run the server's handler there (and kill its siblings' groups).
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _FORK_BLOCKED)
        try:
            pid = os.fork()
            if pid == 0:  # the child: never returns; it restores the mask after resetting the handlers
                run_forked(self.entry, request, write_fd, log_fd, [read_fd, *others, *self.close_in_child()],
                           sigmask=blocked)  # fmt: skip
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        return pid

    def _spawn(self, request: JobRequest, write_fd: int, log_fd: int) -> subprocess.Popen[bytes]:
        job_file = self.workdir / f"job-{time.monotonic_ns()}.json"
        job_file.write_text(json.dumps(request.to_dict()))
        spec = self.entry if isinstance(self.entry, str) else f"{self.entry.__module__}:{self.entry.__name__}"
        argv = [sys.executable, "-m", "accelerate_core.runner.child", "--entry", spec,
                "--result-fd", str(write_fd), "--preload", ",".join(self.preload)]  # fmt: skip
        with job_file.open("rb") as stdin:
            proc = subprocess.Popen(
                argv, stdin=stdin, stdout=log_fd, stderr=log_fd, pass_fds=(write_fd,),
                start_new_session=True, env={**scrub(os.environ), **request.env},
            )  # fmt: skip
        job_file.unlink(missing_ok=True)
        return proc

    def next_wakeup(self) -> float | None:
        """The earliest moment any child needs attention, or None when none is running."""
        return min((c.next_wakeup() for c in self.children.values()), default=None)

    def enforce(self, now: float | None = None) -> None:
        """Kill children past their time limit or over their memory cap; escalate to SIGKILL after grace."""
        now = time.monotonic() if now is None else now
        for child in list(self.children.values()):
            if child.term_sent_at is not None:
                if now >= child.term_sent_at + KILL_GRACE_S:
                    _kill_group(child.pid, signal.SIGKILL)
                continue
            if child.kill_reason is None and now >= child.deadline:
                detail = f"killed at the hard time limit of {child.request.time_limit_s:g} s"
                self.kill(child, ERR_TIMEOUT, "Timeout", detail, graceful=True, now=now)
            elif child.kill_reason is None:
                self._check_memory(child, now)

    def _check_memory(self, child: Child, now: float) -> None:
        try:
            rss = psutil.Process(child.pid).memory_info().rss
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            return
        child.peak_rss = max(child.peak_rss, rss)
        cap = child.request.mem_cap_mb * _MIB
        if rss > cap:
            detail = f"RSS {rss / _MIB:.0f} MiB exceeded the memory cap of {child.request.mem_cap_mb} MiB"
            self.kill(child, ERR_OOM, "MemoryCapExceeded", detail, graceful=False, now=now)

    def kill(
        self, child: Child, reason: str, error_type: str, detail: str, *, graceful: bool, now: float | None = None
    ) -> None:
        """Kill a child's process group; its outcome will carry ``reason`` (an error class), ``error_type``
        and ``detail`` (the first kill's, if several). SIGTERM first when ``graceful``, else SIGKILL."""
        if child.kill_reason is None:
            child.kill_reason, child.kill_type, child.kill_detail = reason, error_type, detail
        if graceful:
            child.term_sent_at = time.monotonic() if now is None else now
            _kill_group(child.pid, signal.SIGTERM)
        else:
            child.term_sent_at = child.term_sent_at or (time.monotonic() if now is None else now)
            _kill_group(child.pid, signal.SIGKILL)

    def kill_all(self) -> None:
        """SIGKILL every child's process group (server shutdown)."""
        for child in self.children.values():
            self.kill(child, ERR_CRASHED, "Killed", "killed: the fork server shut down", graceful=False)

    def reap(self) -> Iterator[tuple[Child, ChildOutcome]]:
        """Collect every exited child (and orphaned grandchild); yield finished children with outcomes."""
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue  # an orphaned grandchild of a killed job (we are its subreaper)
            if child.proc is not None:
                child.proc.returncode = os.waitstatus_to_exitcode(status)
            child.drain()
            # Whatever the job left running goes with it. Only the group: the pid itself is free now,
            # while a group id stays reserved as long as any member lives, so this never hits a stranger.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            yield child, self._outcome(child, status, usage.ru_maxrss)
            self._cleanup(child)

    def _outcome(self, child: Child, status: int, maxrss_kb: int) -> ChildOutcome:
        peak = max(child.peak_rss, maxrss_kb * 1024 if sys.platform.startswith("linux") else maxrss_kb)
        signum = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        common: dict[str, Any] = {
            "duration_s": round(time.monotonic() - child.started, 6),
            "peak_rss_mb": round(peak / _MIB, 1),
            "exit_signal": signum,
            "pid": child.pid,
        }
        job_id = child.request.job_id
        if child.kill_reason is not None:
            common["log_tail"] = _tail(child.log_path)
            return ChildOutcome.failure(job_id, child.kill_reason, child.kill_type, child.kill_detail, **common)
        record = _parse(child.data)
        if record is not None:
            return _from_record(job_id, record, child.log_path, common)
        tail = _tail(child.log_path)
        if signum is not None:
            message = f"the child was killed by signal {signum} ({_signame(signum)})"
        else:
            message = f"the child exited with status {os.WEXITSTATUS(status)} without a result"
        if tail:
            message += f": {tail.strip().splitlines()[-1][:300]}"
        return ChildOutcome.crashed(job_id, message, log_tail=tail, **common)

    def _cleanup(self, child: Child) -> None:
        with contextlib.suppress(OSError):
            os.close(child.result_fd)
        child.log_path.unlink(missing_ok=True)


def _from_record(job_id: str, record: dict[str, Any], log_path: Path, common: dict[str, Any]) -> ChildOutcome:
    if record.get("ok"):
        return ChildOutcome(job_id=job_id, ok=True, value=record.get("value"), **common)
    return ChildOutcome(
        job_id=job_id,
        ok=False,
        error_class=record.get("error_class"),
        error_type=record.get("error_type"),
        error_message=record.get("error_message"),
        traceback=record.get("traceback"),
        log_tail=_tail(log_path),
        **common,
    )


def _parse(data: bytearray) -> dict[str, Any] | None:
    if not data:
        return None
    try:
        record = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) else None


def _tail(path: Path) -> str | None:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - _LOG_TAIL_CHARS))
            text = fh.read().decode(errors="replace")
    except OSError:
        return None
    return text or None


def _signame(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _kill_group(pid: int, sig: int) -> None:
    """Signal a running (not yet reaped) child's process group, and the child itself.

    The child itself too: in the moment before its ``setsid`` it has no group of its own.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)

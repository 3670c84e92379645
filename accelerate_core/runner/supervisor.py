"""The server's children: start one per job (fork or spawn), watch time and its box, kill, reap, classify.

A child runs in its own session (``setsid``) and in its job box (:mod:`accelerate_core.runner.box`).
At the hard time limit its process group gets SIGTERM, then (after a grace period) the whole tree
SIGKILL. Every ``RSS_INTERVAL_S`` (from the fork: a shorter job is never sampled) the parent samples
each job's tree: over its task limit (or after a fork the kernel refused at it) the job is killed as
``process-limit``, over its memory cap (RSS summed over the tree) as ``out-of-memory``. When the
child exits, whatever
is left of its tree is killed before its outcome is sent. The server is a child subreaper (Linux), so
grandchildren orphaned by a job are reaped here rather than lingering as zombies.
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

from accelerate_core import wire
from accelerate_core.constants import ERR_CRASHED, ERR_FILE_SIZE, ERR_OOM, ERR_PROCESS_LIMIT, ERR_TIMEOUT
from accelerate_core.runner.box import Boxes, JobBox, Usage
from accelerate_core.runner.child import Entry, run_forked, run_spare, spare_job, spare_message
from accelerate_core.runner.environ import scrub
from accelerate_core.runner.outcome import ChildOutcome
from accelerate_core.runner.protocol import KILL_GRACE_S, JobRequest

__all__ = ["KILL_GRACE_S", "RSS_INTERVAL_S", "SPARE_MESSAGE_MAX", "Child", "Spare", "Supervisor"]

log = logging.getLogger(__name__)

RSS_INTERVAL_S = 0.1
"""How often (seconds) the parent samples a running job's tree (tasks, RSS) against its limits."""


SPARE_MESSAGE_MAX = 60 * 1024
"""The largest job (encoded) handed to a spare: one write into its empty pipe (64 KiB) takes all of it,
so the server never blocks on a spare. A larger job gets a child forked for it."""

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
    box: JobBox
    proc: subprocess.Popen[bytes] | None = None
    data: bytearray = field(default_factory=bytearray)
    kill_reason: str | None = None
    kill_type: str = ""
    kill_detail: str = ""
    term_sent_at: float | None = None
    peak_rss: int = 0
    next_sample: float = 0.0

    def __post_init__(self) -> None:
        self.next_sample = self.started + RSS_INTERVAL_S  # a job shorter than that costs no sample at all

    @property
    def deadline(self) -> float:
        """When the hard time limit passes (monotonic seconds)."""
        return self.started + self.request.time_limit_s

    def next_wakeup(self) -> float:
        """The next moment the parent must look at this child (monotonic seconds)."""
        if self.term_sent_at is not None:
            return self.term_sent_at + KILL_GRACE_S
        return min(self.deadline, self.next_sample)

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


@dataclass
class Spare:
    """A child forked ahead of its job (fork mode with cgroup boxes), blocked reading its job pipe."""

    pid: int
    job_fd: int
    result_fd: int
    log_path: Path

    def close_fds(self) -> list[int]:
        """The server's ends of its pipes (no other child may hold them)."""
        return [self.job_fd, self.result_fd]


class Supervisor:
    """Starts, watches and reaps the children of one server.

    In fork mode with cgroup boxes it keeps one *spare*: a child forked ahead of time (:meth:`prefork`,
    called when the loop has nothing more urgent to do) that waits for a job. :meth:`start` hands the
    next job to it, so the fork (about two thirds of a dry job's fixed cost, most of it copying the
    large server's page tables) is off the job's path. The spare detaches from the server at its fork
    (session, signals, fds: as a job's child does) and applies everything of the job (box, environment,
    limits) once the job arrived (:func:`accelerate_core.runner.child.run_spare`). A spare that dies idle
    costs no job; the next job is then forked for itself, and spares resume after it (a spare that
    cannot live must not become a fork loop). Not when sweeping: there a spare would look like an orphan
    of some job to the process-table walk, and the walk at a job's end, skipped while the server has no
    child left, would run every time.

    Args:
        entry: the resolved entry function (fork mode) or its ``"module:function"`` spec (spawn mode).
        spawn: start a fresh interpreter per job instead of forking.
        preload: modules a spawned child imports before the entry (fork mode has them already).
        workdir: where per-job logs and spawn job files live.
        close_in_child: descriptors a forked child must close (the server's protocol pipes).
        boxes: makes each job's box (cgroup or sweep).
    """

    def __init__(
        self,
        entry: Entry | str,
        *,
        spawn: bool,
        preload: tuple[str, ...],
        workdir: Path,
        close_in_child: Callable[[], list[int]],
        boxes: Boxes,
    ) -> None:
        self.entry = entry
        self.boxes = boxes
        self.spawn = spawn
        self.preload = preload
        self.workdir = workdir
        self.close_in_child = close_in_child
        self.children: dict[int, Child] = {}
        self.spare: Spare | None = None
        self._spare_died = False  # then no spare until a job has been started without one (no fork loop)

    def start(self, request: JobRequest) -> Child:
        """Start one child for ``request`` (the spare, if one waits) and return it (the caller registers
        ``result_fd``)."""
        spare = self._take_spare(request)
        if spare is not None:
            return spare
        self._spare_died = False
        log_path = self.workdir / f"job-{len(self.children)}-{time.monotonic_ns()}.log"
        read_fd, write_fd = os.pipe()
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        proc = None
        try:
            box = self.boxes.open(request.max_tasks)
            if self.spawn:
                proc = self._spawn(request, box, write_fd, log_fd)
                pid = proc.pid
            else:
                pid = self._fork(request, box, read_fd, write_fd, log_fd)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
            os.close(log_fd)
        return self._track(request, pid, read_fd, log_path, box, proc)

    def _track(
        self, request: JobRequest, pid: int, read_fd: int, log_path: Path, box: JobBox,
        proc: subprocess.Popen[bytes] | None = None,
    ) -> Child:  # fmt: skip
        box.attach(pid)
        os.set_blocking(read_fd, False)
        child = Child(request, pid, read_fd, log_path, time.monotonic(), box, proc=proc)
        self.children[pid] = child
        return child

    @property
    def preforks(self) -> bool:
        """True when this supervisor keeps a spare child (fork mode, cgroup boxes)."""
        return not self.spawn and self.boxes.mode == "cgroup"

    def prefork(self) -> None:
        """Fork a spare child unless one waits already (a no-op where spares are not kept).

        Raises:
            OSError: the fork failed (the next job then gets a child forked for it).
        """
        if self.spare is not None or not self.preforks or self._spare_died:
            return
        log_path = self.workdir / f"spare-{time.monotonic_ns()}.log"
        job_r, job_w = os.pipe()
        result_r, result_w = os.pipe()
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            pid = self._fork_spare(job_r, job_w, result_r, result_w, log_fd)
        except BaseException:
            for fd in (job_w, result_r):
                os.close(fd)
            log_path.unlink(missing_ok=True)
            raise
        finally:
            for fd in (job_r, result_w, log_fd):
                os.close(fd)
        self.spare = Spare(pid, job_w, result_r, log_path)

    def _fork_spare(self, job_r: int, job_w: int, result_r: int, result_w: int, log_fd: int) -> int:
        if not callable(self.entry):
            raise TypeError("fork mode needs the resolved entry function")
        others = [job_w, result_r, *self._server_fds()]
        server_pid = os.getpid()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _FORK_BLOCKED)
        try:
            pid = os.fork()
            if pid == 0:  # the spare: never returns (see run_spare)
                run_spare(self.entry, job_r, result_w, log_fd, others, server_pid=server_pid, sigmask=blocked)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        return pid

    def _server_fds(self) -> list[int]:
        """The server's descriptors a new child must close: protocol, running children's results, the spare's."""
        spare = [] if self.spare is None else self.spare.close_fds()
        return [*(c.result_fd for c in self.children.values()), *spare, *self.close_in_child()]

    def _take_spare(self, request: JobRequest) -> Child | None:
        """Hand ``request`` to the spare; None when there is none, or the job is too large for its pipe."""
        spare = self.spare
        if spare is None:
            return None
        job = spare_job(request)
        if len(job) > SPARE_MESSAGE_MAX:
            return None
        box = self.boxes.open(request.max_tasks)
        message = spare_message(job, box.procs_files)
        self.spare = None
        try:
            # One write into the empty pipe (64 KiB; a smaller one, under the kernel's pipe-page limit,
            # blocks only until the spare, which is reading, has taken the rest).
            os.write(spare.job_fd, message)
        except OSError:  # the spare died (its death is reaped as a stranger's): fork for this job instead
            self.boxes.finish(box)
            self._drop(spare)
            return None
        finally:
            os.close(spare.job_fd)
        return self._track(request, spare.pid, spare.result_fd, spare.log_path, box)

    def discard_spare(self) -> None:
        """Kill the spare (shutdown, or it died): it ran no job, so nothing is reported."""
        spare, self.spare = self.spare, None
        if spare is None:
            return
        with contextlib.suppress(OSError):
            os.close(spare.job_fd)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(spare.pid, signal.SIGKILL)
        self._drop(spare)

    def _drop(self, spare: Spare) -> None:
        with contextlib.suppress(OSError):
            os.close(spare.result_fd)
        spare.log_path.unlink(missing_ok=True)

    def _fork(self, request: JobRequest, box: JobBox, read_fd: int, write_fd: int, log_fd: int) -> int:
        if not callable(self.entry):
            raise TypeError("fork mode needs the resolved entry function")
        others = self._server_fds()
        # Block the server's signals across the fork: a SIGTERM landing in the child before it resets its
        # handlers would run the server's handler there (and kill its siblings' groups).
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _FORK_BLOCKED)
        try:
            pid = os.fork()
            if pid == 0:  # the child: never returns; it restores the mask after resetting the handlers
                run_forked(self.entry, request, write_fd, log_fd, [read_fd, *others], procs_files=box.procs_files,
                           sigmask=blocked)  # fmt: skip
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        return pid

    def _spawn(self, request: JobRequest, box: JobBox, write_fd: int, log_fd: int) -> subprocess.Popen[bytes]:
        job_file = self.workdir / f"job-{time.monotonic_ns()}.json"
        job_file.write_text(json.dumps(wire.encode(request)))
        spec = self.entry if isinstance(self.entry, str) else f"{self.entry.__module__}:{self.entry.__name__}"
        argv = [sys.executable, "-m", "accelerate_core.runner.child", "--entry", spec,
                "--result-fd", str(write_fd), "--preload", ",".join(self.preload)]  # fmt: skip
        for procs_file in box.procs_files:
            argv += ["--cgroup", procs_file]
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
                    child.box.kill()
                continue
            if child.kill_reason is None and now >= child.deadline:
                detail = f"killed at the hard time limit of {child.request.time_limit_s:g} s"
                self.kill(child, ERR_TIMEOUT, "Timeout", detail, graceful=True, now=now)
            elif child.kill_reason is None and now >= child.next_sample:
                child.next_sample = now + RSS_INTERVAL_S
                self._check_box(child, now)

    def _check_box(self, child: Child, now: float) -> None:
        usage = child.box.sample()
        child.peak_rss = max(child.peak_rss, usage.rss_bytes)
        request = child.request
        if usage.refused or usage.tasks > request.max_tasks:
            self.kill(child, ERR_PROCESS_LIMIT, "ProcessLimit", _over_tasks(usage, request), graceful=False, now=now)
        elif usage.rss_bytes > request.mem_cap_mb * _MIB:
            detail = (f"RSS {usage.rss_bytes / _MIB:.0f} MiB over {usage.processes} process(es) exceeded the "
                      f"memory cap of {request.mem_cap_mb} MiB")  # fmt: skip
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
            child.box.kill()

    def kill_all(self) -> None:
        """SIGKILL every child's process group and the spare (server shutdown)."""
        self.discard_spare()
        for child in self.children.values():
            self.kill(child, ERR_CRASHED, "Killed", "killed: the fork server shut down", graceful=False)

    def reap(self) -> Iterator[tuple[Child, ChildOutcome]]:
        """Collect every exited child (and orphaned grandchild); yield finished children with outcomes."""
        while True:
            try:
                pid, status, rusage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                if self.spare is not None and pid == self.spare.pid:  # died idle: no job lost
                    log.warning("the spare child %d died before its job (status %d)", pid, status)
                    os.close(self.spare.job_fd)
                    self._drop(self.spare)
                    self.spare, self._spare_died = None, True
                continue  # an orphaned grandchild of a killed job (we are its subreaper)
            if child.proc is not None:
                child.proc.returncode = os.waitstatus_to_exitcode(status)
            child.drain()
            # Whatever the job left running goes with it: its group first (the pid itself is free now,
            # while a group id stays reserved as long as any member lives, so this never hits a stranger),
            # then the rest of its box (a setsid descendant). A fork the kernel refused counts even
            # when the child died of it before a sample saw it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            if child.kill_reason is None and child.box.refused():
                usage = child.box.sample()
                child.kill_reason, child.kill_type = ERR_PROCESS_LIMIT, "ProcessLimit"
                child.kill_detail = _over_tasks(usage, child.request)
            self.boxes.finish(child.box)
            yield child, self._outcome(child, status, rusage.ru_maxrss)
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
        if signum == signal.SIGXFSZ:
            message = f"the child wrote past the file-size limit of {child.request.max_file_mb} MiB (SIGXFSZ)"
            return ChildOutcome.failure(job_id, ERR_FILE_SIZE, "FileSizeLimit", message, log_tail=tail, **common)
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


def _over_tasks(usage: Usage, request: JobRequest) -> str:
    return (
        f"the job's process tree hit its limit of {request.max_tasks} tasks (processes and threads): "
        f"{usage.processes} processes, {usage.tasks} tasks"
    )


def _from_record(job_id: str, record: dict[str, Any], log_path: Path, common: dict[str, Any]) -> ChildOutcome:
    entry_s = record.get("entry_s")
    if isinstance(entry_s, int | float) and not isinstance(entry_s, bool):
        common = {**common, "entry_s": round(float(entry_s), 6)}
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

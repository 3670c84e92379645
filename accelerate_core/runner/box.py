"""The job box: what a job's whole process tree may use, and its end with the job.

Every job runs boxed, in both executors:

- **environment**: only the allow-list of :mod:`accelerate_core.runner.environ` (secrets never);
- **tasks**: at most ``max_tasks`` processes and threads over the job's whole tree;
- **file size**: no file written past ``max_file_mb`` (``RLIMIT_FSIZE``, inherited by every descendant:
  Python gets ``OSError(EFBIG)``, other programs too, as Python ignores ``SIGXFSZ``);
- **memory**: the RSS summed over the job's whole tree stays under its cap (sampled by the server);
- **the end**: when the job's child exits or is killed, every process of its tree is killed, one that
  left the process group with ``setsid`` included.

Two ways to know the tree, chosen once per server (``mode``):

``cgroup`` (Linux with a writable cgroup, :mod:`accelerate_core.runner.cgroup`)
    The child joins its job's cgroup before the job runs, so no descendant can leave it by forking or
    ``setsid``; ``pids.max`` refuses the fork past the limit in the kernel, and the cgroup's member list
    is what is killed at the end (``cgroup.kill`` where there is one).
``sweep`` (elsewhere, or asked for)
    The server records the job's descendants at every sample (psutil over the process table). It is a
    child subreaper (Linux), so an orphan re-parents to it and is counted with the jobs that were running
    when it appeared. Over the task limit it kills the job at the next sample; at the end it stops
    (SIGSTOP) every process it finds, walks again until no new one appears, then SIGKILLs them all.
    A process started and orphaned between two samples while several jobs ran may be killed with the
    first of them to end; one that re-parented elsewhere (no subreaper: macOS) is not found.

Both classify what they stop: ``process-limit``, ``file-size-limit``, ``out-of-memory``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psutil

from accelerate_core.errors import RunnerError
from accelerate_core.runner.cgroup import CgroupBase, JobCgroup, stop_then_kill
from accelerate_core.runner.protocol import BOX_MODES

__all__ = [
    "BOX_MODES",
    "Boxes",
    "JobBox",
    "Usage",
    "enter_box",
    "open_boxes",
]

log = logging.getLogger(__name__)

_SUBREAPER = sys.platform.startswith("linux")  # the server makes itself its orphans' reaper there
_SETTLE_S = 1.0
_SETTLE_POLL_S = 0.005
_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Usage:
    """One sample of a job's tree: processes, tasks (with threads), summed RSS, refused forks."""

    processes: int
    tasks: int
    rss_bytes: int
    refused: int = 0


class JobBox(ABC):
    """One job's box, as the server sees it: who belongs to the job, what it uses, and its kill."""

    main_pid: int = 0
    ended: bool = False
    """Set once the job's child is reaped (its pid may then belong to a stranger)."""

    @property
    def procs_files(self) -> list[str]:
        """The cgroup files the child writes itself into before the job runs (none when sweeping)."""
        return []

    def attach(self, pid: int) -> None:
        """Record the job's child, once started."""
        self.main_pid = pid

    @abstractmethod
    def sample(self) -> Usage:
        """What the job's whole tree uses now."""

    def refused(self) -> int:
        """How many forks (or threads) the kernel refused the job at its task limit so far."""
        return 0

    @abstractmethod
    def kill(self) -> None:
        """SIGKILL every process of the job's tree."""

    @abstractmethod
    def members(self) -> list[int]:
        """The job's live processes, its child included."""

    def settle(self, timeout_s: float = _SETTLE_S) -> bool:
        """Kill the tree and wait (briefly) until nothing of it is left; True when nothing is."""
        deadline = time.monotonic() + timeout_s
        while [p for p in self.members() if _alive(p)]:
            if time.monotonic() >= deadline:
                return False
            self.kill()
            time.sleep(_SETTLE_POLL_S)
        return True

    def close(self) -> bool:
        """Release what the box holds; False when it must be tried again later."""
        return True


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _usage(pids: Iterable[int], tasks: int | None = None, refused: int = 0) -> Usage:
    processes = rss = threads = 0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                rss += proc.memory_info().rss
                threads += proc.num_threads() if tasks is None else 0
        except psutil.Error:
            continue
        processes += 1
    return Usage(processes, threads if tasks is None else tasks, rss, refused)


class CgroupBox(JobBox):
    """A job in a cgroup of its own (see :mod:`accelerate_core.runner.cgroup`)."""

    def __init__(self, cgroup: JobCgroup) -> None:
        self.cgroup = cgroup

    @property
    def procs_files(self) -> list[str]:
        return self.cgroup.procs_files

    def members(self) -> list[int]:
        return self.cgroup.members()

    def sample(self) -> Usage:
        return _usage(self.members(), self.cgroup.tasks(), self.cgroup.limit_hits())

    def refused(self) -> int:
        return self.cgroup.limit_hits()

    def kill(self) -> None:
        self.cgroup.kill()

    def close(self) -> bool:
        return self.cgroup.remove()


class SweepBox(JobBox):
    """A job whose tree is found by walking the process table (no cgroup)."""

    def __init__(self, boxes: Boxes) -> None:
        self.boxes = boxes
        self._main: psutil.Process | None = None
        self.seen: dict[int, psutil.Process] = {}

    @property
    def main(self) -> psutil.Process | None:
        """The job's child with its start time (so a later stranger with its pid is not taken for it).

        Looked up on first use, while the pid is surely the child's (not yet reaped): not at all for a
        job too short to be sampled.
        """
        if self._main is None and not self.ended and self.main_pid:
            with contextlib.suppress(psutil.Error):
                self._main = psutil.Process(self.main_pid)
        return self._main

    def members(self) -> list[int]:
        if _SUBREAPER and self.boxes.alone(self) and not _has_children():
            # Every live descendant of an ended job re-parents to the server (its subreaper): a server
            # with no child at all has nothing of it left, and the process table need not be read.
            return []
        return list(self._walk(self.boxes.table(fresh=True)))

    def sample(self) -> Usage:
        return _usage(self._walk(self.boxes.table()))

    def _walk(self, table: dict[int, list[psutil.Process]]) -> dict[int, psutil.Process]:
        """Find the job's processes (from its child, what was seen before, and fresh orphans); record them."""
        roots = [p for p in (self.main, *self.seen.values()) if p is not None and p.is_running()]
        roots += self.boxes.orphans(table)
        found: dict[int, psutil.Process] = {}
        while roots:
            proc = roots.pop()
            if proc.pid not in found:
                found[proc.pid] = proc
                roots.extend(table.get(proc.pid, ()))
        self.seen = found
        return found

    def kill(self) -> None:
        stop_then_kill(lambda: self._walk(self.boxes.table(fresh=True)), _signal)

    def close(self) -> bool:
        self.boxes.forget(self)
        return True


def _has_children() -> bool:
    """True when this process has a child, running or not yet reaped (none is reaped here)."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def _signal(proc: psutil.Process, sig: int) -> None:
    with contextlib.suppress(psutil.Error, OSError):
        if proc.is_running():  # not a stranger that took a recorded pid
            proc.send_signal(sig)


class Boxes:
    """A server's job boxes: makes one per job, in the server's mode.

    Args:
        cgroups: the server's cgroup directory (``cgroup`` mode), or None (``sweep`` mode).
    """

    def __init__(self, cgroups: CgroupBase | None) -> None:
        self.cgroups = cgroups
        self.mode = "sweep" if cgroups is None else "cgroup"
        self._sweeping: list[SweepBox] = []
        self._table: tuple[float, dict[int, list[psutil.Process]]] | None = None
        self._cleanup: list[JobBox] = []

    def open(self, max_tasks: int) -> JobBox:
        """A box for the next job (before its child starts)."""
        self.retry_cleanup()
        if self.cgroups is not None:
            try:
                return CgroupBox(self.cgroups.job(max_tasks))
            except OSError as e:
                raise RunnerError(f"cannot make the job's cgroup ({e}): start the server with box='sweep'") from e
        box = SweepBox(self)
        self._sweeping.append(box)
        return box

    def finish(self, box: JobBox) -> None:
        """End a job's box once its child is reaped: kill what is left of its tree, wait briefly, release."""
        box.ended = True
        if not box.settle():
            log.warning("job box of pid %d: processes still alive 1 s after SIGKILL", box.main_pid)
        if not box.close():
            self._cleanup.append(box)

    def retry_cleanup(self) -> None:
        """Release boxes whose killed processes were not yet reaped at :meth:`finish`."""
        self._cleanup = [box for box in self._cleanup if not box.close()]

    def close(self) -> None:
        """Server shutdown: kill every job's tree and release the server's cgroups."""
        for box in [*self._sweeping, *self._cleanup]:
            box.settle()
        self.retry_cleanup()
        if self.cgroups is not None:
            self.cgroups.close()

    def info(self) -> dict[str, Any]:
        """The box mode and the server's cgroups, for the ready message."""
        return {"mode": self.mode, **(self.cgroups.info() if self.cgroups else {})}

    # sweep mode: one process table for every job, re-read at most every few milliseconds

    def table(self, *, fresh: bool = False) -> dict[int, list[psutil.Process]]:
        """Children by parent pid, over every process of this machine (cached a few ms unless ``fresh``)."""
        now = time.monotonic()
        if fresh or self._table is None or now - self._table[0] > 0.01:
            children: dict[int, list[psutil.Process]] = {}
            for proc in psutil.process_iter(["ppid"]):
                children.setdefault(proc.info["ppid"], []).append(proc)
            self._table = (now, children)
        return self._table[1]

    def orphans(self, table: dict[int, list[psutil.Process]]) -> list[psutil.Process]:
        """The server's children that are no job's child nor seen in any job's tree: orphans of some job."""
        mains = {b.main_pid for b in self._sweeping}
        known = {pid for b in self._sweeping for pid in b.seen}
        return [p for p in table.get(os.getpid(), ()) if p.pid not in mains and p.pid not in known]

    def alone(self, box: SweepBox) -> bool:
        """True when ``box`` is the only sweeping job and its child has ended."""
        return self._sweeping == [box] and box.ended

    def forget(self, box: SweepBox) -> None:
        """A job ended: its recorded processes are no longer looked after."""
        with contextlib.suppress(ValueError):
            self._sweeping.remove(box)


def open_boxes(mode: str) -> Boxes:
    """The boxes of a server in ``mode`` (see :data:`BOX_MODES`).

    Raises:
        RunnerError: ``cgroup`` was asked for and this machine offers no writable cgroup.
    """
    if mode not in BOX_MODES:
        raise RunnerError(f"box mode {mode!r} is invalid: use one of {', '.join(BOX_MODES)}")
    cgroups = None if mode == "sweep" else CgroupBase.create()
    if cgroups is None and mode == "cgroup":
        raise RunnerError("box='cgroup' but no writable cgroup here: use box='auto' or 'sweep'")
    return Boxes(cgroups)


def enter_box(procs_files: Iterable[str], max_file_mb: int) -> None:
    """In the job's child, before the job runs: join the job's cgroup and cap file sizes.

    Call it while the process has one thread: a v1 cgroup is joined through its ``tasks`` file, which
    moves the calling thread only (see :mod:`accelerate_core.runner.cgroup`).

    Raises:
        RunnerError: a cgroup could not be joined (the job must not run outside its box).
    """
    for path in procs_files:
        if path.endswith("/tasks") and len(os.listdir("/proc/self/task")) != 1:
            raise RunnerError(f"cannot enter the job's cgroup {path} from a process with threads: the job did not run")
        try:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        except OSError as e:
            raise RunnerError(f"cannot enter the job's cgroup {path} ({e}): the job did not run") from e
    limit = max_file_mb * _MIB
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

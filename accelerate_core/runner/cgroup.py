"""Linux control groups for the job box: one cgroup per job, for membership, a task limit and the kill.

A process cannot leave its cgroup by forking, double-forking or ``setsid``, so a job's cgroup knows
every process of its tree; the ``pids`` controller's ``pids.max`` limits its tasks (processes and
threads) in the kernel, for root too (``RLIMIT_NPROC`` is per user and root ignores it); and
``cgroup.kill`` (cgroup v2, Linux >= 5.14) kills them all in one write.

A fork server makes ``accel-runner-<pid>/`` under its own cgroup, and ``job-<n>/`` below it per job, in
one hierarchy, the first of these that is writable:

1. cgroup v2 with the ``pids`` controller delegated to the server's cgroup;
2. the cgroup v1 ``pids`` hierarchy (same files; no ``cgroup.kill``: members are stopped, then killed);
3. cgroup v2 without controllers (membership and ``cgroup.kill``; tasks are then counted by sampling).

Joining costs. Moving a whole process into a cgroup (``cgroup.procs``) takes the kernel's global
``cgroup_threadgroup_rwsem`` for writing, which waits for an RCU grace period when none was taken
recently: measured here, about 10-14 ms per job once jobs are more than ~20 ms apart. Moving one
thread of a v1 hierarchy (its ``tasks`` file) skips that lock, so a v1 child, single-threaded when it
joins, writes ``tasks`` (about 0.1 ms). v2 allows thread moves only inside a threaded subtree, so a
v2 child pays the grace period.

Memory is not capped here: the box samples the RSS of the cgroup's members instead, so that the cap
keeps one meaning (resident memory, shared pages included) with or without cgroups.
Nothing here is needed off Linux: :meth:`CgroupBase.create` returns None there, and the box sweeps.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psutil

__all__ = [
    "CgroupBase",
    "Hierarchy",
    "JobCgroup",
    "kill_tree",
    "own_hierarchies",
    "release",
    "remove_tree",
    "stop_then_kill",
]

log = logging.getLogger(__name__)

PREFIX = "accel-runner-"
"""Name prefix of a fork server's cgroup directory; the server's pid follows."""

_KILL_ROUNDS = 50
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """One mounted cgroup hierarchy and this process's cgroup directory in it."""

    version: int
    controllers: frozenset[str]
    directory: Path


def own_hierarchies(mountinfo: str, proc_cgroup: str) -> list[Hierarchy]:
    """This process's cgroup directories, from ``/proc/self/mountinfo`` and ``/proc/self/cgroup`` text.

    A hierarchy whose mount does not show this process's cgroup (another namespace's mount) is left out.
    """
    mounts: list[tuple[str, str, str, frozenset[str]]] = []  # (fstype, root, mount point, super options)
    for line in mountinfo.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, fs = head.split(), tail.split()
        if sep and len(fields) >= 5 and len(fs) >= 3 and fs[0] in ("cgroup", "cgroup2"):
            mounts.append((fs[0], fields[3], fields[4], frozenset(fs[2].split(","))))
    found = []
    for line in proc_cgroup.splitlines():
        hid, _, rest = line.partition(":")
        names, _, path = rest.partition(":")
        controllers = frozenset(filter(None, names.split(",")))
        version = 2 if hid == "0" and not controllers else 1
        for fstype, root, point, options in mounts:
            if (fstype == "cgroup2") != (version == 2) or not controllers <= options:
                continue
            relative = os.path.relpath(path, root)
            if not relative.startswith(".."):
                found.append(Hierarchy(version, controllers, Path(point) / relative))
                break
    return found


def _read(path: Path) -> str:
    with open(path) as fh:
        return fh.read()


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def members(directory: Path) -> list[int]:
    """The processes in a cgroup (not its sub-cgroups); empty when it is gone."""
    try:
        return [int(p) for p in _read(directory / "cgroup.procs").split()]
    except (OSError, ValueError):
        return []


def kill_tree(directory: Path) -> None:
    """SIGKILL every process in a cgroup and its sub-cgroups (``cgroup.kill``, else :func:`stop_then_kill`)."""
    kill_file = directory / "cgroup.kill"
    if kill_file.exists():
        with contextlib.suppress(OSError):
            _write(kill_file, "1")
            return
    stop_then_kill(lambda: {pid: pid for sub in _walk(directory) for pid in members(sub)}, _send)


def stop_then_kill(find: Callable[[], Mapping[int, T]], send: Callable[[T, int], None]) -> None:
    """SIGSTOP what ``find`` returns until it finds no new process, then SIGKILL them all.

    A stopped process cannot fork, so a fork bomb cannot outrun this the way it can a kill loop.
    ``find`` maps pids to what ``send(what, signal)`` signals.
    """
    stopped: dict[int, T] = {}
    for _ in range(_KILL_ROUNDS):
        fresh = {pid: target for pid, target in find().items() if pid not in stopped}
        if not fresh:
            break
        for target in fresh.values():
            send(target, signal.SIGSTOP)
        stopped.update(fresh)
    for target in stopped.values():
        send(target, signal.SIGKILL)


def _send(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def remove_tree(directory: Path) -> bool:
    """Remove a cgroup and its sub-cgroups, deepest first; True when all of it is gone."""
    for sub in reversed(_walk(directory)):
        with contextlib.suppress(FileNotFoundError):
            try:
                sub.rmdir()
            except OSError as e:  # EBUSY: a process not yet reaped; the caller tries again later
                log.debug("cgroup %s not removed yet: %s", sub, e)
                return False
    return True


def _walk(directory: Path) -> list[Path]:
    """``directory`` and every sub-cgroup below it, parents first."""
    found = [directory]
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            if entry.is_dir(follow_symlinks=False):
                found.extend(_walk(Path(entry.path)))
    return found


class JobCgroup:
    """One job's cgroup: the child joins it, the parent reads its members and limit and kills them.

    Args:
        directory: the job's cgroup directory.
        join_file: the file the child writes ``0`` to, to move itself in (``cgroup.procs`` or ``tasks``).
        pids: whether the directory has the ``pids`` controller (``pids.max``).
    """

    def __init__(self, directory: Path, join_file: str, *, pids: bool) -> None:
        self.directory = directory
        self.join_file = join_file
        self.pids = pids

    @property
    def procs_files(self) -> list[str]:
        """The files the child writes itself into before the job runs."""
        return [str(self.directory / self.join_file)]

    def members(self) -> list[int]:
        """The job's live processes."""
        return members(self.directory)

    def tasks(self) -> int | None:
        """The job's tasks (processes and threads) as the pids controller counts them, if it does."""
        if not self.pids:
            return None
        try:
            return int(_read(self.directory / "pids.current"))
        except (OSError, ValueError):
            return None

    def limit_hits(self) -> int:
        """How many forks (or new threads) the kernel refused at ``pids.max``."""
        if not self.pids:
            return 0
        with contextlib.suppress(OSError, ValueError):
            for line in _read(self.directory / "pids.events").splitlines():
                key, _, value = line.partition(" ")
                if key == "max":
                    return int(value)
        return 0

    def kill(self) -> None:
        """SIGKILL every process of the job."""
        kill_tree(self.directory)

    def remove(self) -> bool:
        """Remove the job's directory; False while a killed process is still alive (try again later)."""
        return remove_tree(self.directory)


class CgroupBase:
    """A fork server's cgroup directory, under which each job gets its own.

    Use :meth:`create`; ``None`` means no writable cgroup here (then the box sweeps instead).

    Args:
        directory: the server's ``accel-runner-<pid>`` directory.
        version: its hierarchy's version (1 or 2).
        pids: whether its job directories get the ``pids`` controller.
    """

    def __init__(self, directory: Path, *, version: int, pids: bool) -> None:
        self.directory = directory
        self.version = version
        self.pids = pids
        self._count = 0

    @classmethod
    def create(cls, pid: int | None = None) -> CgroupBase | None:
        """Make ``accel-runner-<pid>/`` in the best writable hierarchy (module docstring); None when none is.

        Leftovers of fork servers that died without cleaning up (their pid is gone) are killed and
        removed first: a ``setsid`` process of theirs may still be running there.
        """
        if not sys.platform.startswith("linux"):
            return None
        try:
            hierarchies = own_hierarchies(_read(Path("/proc/self/mountinfo")), _read(Path("/proc/self/cgroup")))
        except OSError:
            return None
        name = f"{PREFIX}{pid or os.getpid()}"
        v2 = next((h.directory for h in hierarchies if h.version == 2), None)
        v1_pids = next((h.directory for h in hierarchies if "pids" in h.controllers), None)
        tree = _make(v2, name)
        if tree is not None and _delegate_pids(tree):
            return cls(tree, version=2, pids=True)
        v1 = _make(v1_pids, name)
        if v1 is not None:
            if tree is not None:
                remove_tree(tree)
            return cls(v1, version=1, pids=True)
        return None if tree is None else cls(tree, version=2, pids=False)

    def job(self, max_tasks: int) -> JobCgroup:
        """Make the next job's cgroup, with a limit of ``max_tasks`` tasks where the pids controller is.

        Raises:
            OSError: the directory or the limit could not be written.
        """
        self._count += 1
        directory = self.directory / f"job-{self._count}"
        directory.mkdir()
        if self.pids:
            _write(directory / "pids.max", str(max_tasks))
        # v1: the child moves its only thread, which skips the global lock (module docstring)
        return JobCgroup(directory, "tasks" if self.version == 1 else "cgroup.procs", pids=self.pids)

    def info(self) -> dict[str, str | int]:
        """Where the server's cgroup is (for its ready message and the client's clean-up)."""
        return {"cgroup": str(self.directory), "version": self.version, "pids": int(self.pids)}

    def close(self) -> bool:
        """Kill whatever is left in the server's cgroup and remove it; True when all is gone."""
        return release(self.directory)


def release(directory: Path, timeout_s: float = 1.0) -> bool:
    """Kill every process under ``directory`` and remove it, waiting up to ``timeout_s`` for the killed.

    Also how a client cleans up after a dead server. True when all of it is gone.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        kill_tree(directory)
        if remove_tree(directory):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)


def _make(parent: Path | None, name: str) -> Path | None:
    if parent is None:
        return None
    _remove_stale(parent)
    directory = parent / name
    try:
        directory.mkdir(exist_ok=True)
    except OSError as e:
        log.debug("no job cgroups under %s: %s", parent, e)
        return None
    return directory


def _delegate_pids(directory: Path) -> bool:
    """Enable the pids controller for ``directory``'s children when its parent delegated it."""
    try:
        if "pids" not in _read(directory / "cgroup.controllers").split():
            return False
        _write(directory / "cgroup.subtree_control", "+pids")
    except OSError as e:
        log.debug("pids controller not delegated to %s: %s", directory, e)
        return False
    return True


def _remove_stale(parent: Path) -> None:
    with contextlib.suppress(OSError):
        for entry in os.scandir(parent):
            suffix = entry.name.removeprefix(PREFIX)
            if entry.name.startswith(PREFIX) and suffix.isdigit() and not psutil.pid_exists(int(suffix)):
                log.info("removing the cgroup %s of a fork server that is gone", entry.path)
                release(Path(entry.path))

"""Linux control groups for the job box: one cgroup per job, for membership, a task limit and the kill.

A process cannot leave its cgroup by forking, double-forking or ``setsid``, so a job's cgroup knows
every process of its tree, and ``cgroup.kill`` (cgroup v2, Linux >= 5.14) kills them all in one write,
a fork bomb mid-fork included. The ``pids`` controller's ``pids.max`` limits the tasks (processes and
threads) in the kernel, for root too (``RLIMIT_NPROC`` is per user and root ignores it).

A fork server makes ``accel-runner-<pid>/`` under its own cgroup and ``job-<n>/`` below it per job,
in up to two hierarchies:

- the **tree**: the cgroup v2 hierarchy, when this process's v2 cgroup is writable (no controller
  is needed for membership and ``cgroup.kill``);
- the **pids** directory: the same v2 directory when the ``pids`` controller is delegated to it,
  else the cgroup v1 ``pids`` hierarchy when it is mounted and writable (the files are the same).

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
from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = ["CgroupBase", "Hierarchy", "JobCgroup", "kill_tree", "own_hierarchies", "release", "remove_tree"]

log = logging.getLogger(__name__)

PREFIX = "accel-runner-"
"""Name prefix of a fork server's cgroup directory; the server's pid follows."""

_KILL_ROUNDS = 50


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
    """SIGKILL every process in a cgroup and its sub-cgroups (``cgroup.kill``, else member by member)."""
    kill_file = directory / "cgroup.kill"
    if kill_file.exists():
        with contextlib.suppress(OSError):
            _write(kill_file, "1")
            return
    for _ in range(_KILL_ROUNDS):  # a process forking while we kill: again, until nothing is left
        pids = [pid for sub in _walk(directory) for pid in members(sub)]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


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
    """One job's cgroup(s): the child joins them, the parent reads members and limits and kills them.

    Args:
        dirs: the job's directories (the v2 tree one and/or the v1 pids one), membership read from the first.
        pids_dir: the one of ``dirs`` with ``pids.max``, if any.
    """

    def __init__(self, dirs: tuple[Path, ...], pids_dir: Path | None) -> None:
        self.dirs = dirs
        self.pids_dir = pids_dir

    @property
    def procs_files(self) -> list[str]:
        """The ``cgroup.procs`` files the child writes itself into before the job runs."""
        return [str(d / "cgroup.procs") for d in self.dirs]

    def members(self) -> list[int]:
        """The job's live processes."""
        return members(self.dirs[0])

    def tasks(self) -> int | None:
        """The job's tasks (processes and threads) as the pids controller counts them, if it does."""
        if self.pids_dir is None:
            return None
        try:
            return int(_read(self.pids_dir / "pids.current"))
        except (OSError, ValueError):
            return None

    def limit_hits(self) -> int:
        """How many forks (or new threads) the kernel refused at ``pids.max``."""
        if self.pids_dir is None:
            return 0
        with contextlib.suppress(OSError, ValueError):
            for line in _read(self.pids_dir / "pids.events").splitlines():
                key, _, value = line.partition(" ")
                if key == "max":
                    return int(value)
        return 0

    def kill(self) -> None:
        """SIGKILL every process of the job (every directory has the same members: one is enough)."""
        kill_tree(self.dirs[0])

    def remove(self) -> bool:
        """Remove the job's directories; False while a killed process is not yet reaped (try again later)."""
        return all([remove_tree(d) for d in self.dirs])


class CgroupBase:
    """A fork server's cgroup directories, under which each job gets its own.

    Use :meth:`create`; ``None`` means no writable cgroup here (then the box sweeps instead).
    """

    def __init__(self, tree: Path | None, pids: Path | None) -> None:
        self.tree = tree
        self.pids = pids
        self._count = 0

    @classmethod
    def create(cls, pid: int | None = None) -> CgroupBase | None:
        """Make ``accel-runner-<pid>/`` in this process's writable cgroups; None when there is none.

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
        pids = tree if tree is not None and _delegate_pids(tree) else _make(v1_pids, name)
        if tree is None and pids is None:
            return None
        return cls(tree, pids)

    def job(self, max_tasks: int) -> JobCgroup:
        """Make the next job's cgroup(s) with a limit of ``max_tasks`` tasks.

        Raises:
            OSError: a directory or the limit could not be written.
        """
        self._count += 1
        name = f"job-{self._count}"
        dirs: list[Path] = []
        pids_dir = None
        for base in dict.fromkeys(d for d in (self.tree, self.pids) if d is not None):
            directory = base / name
            directory.mkdir()
            dirs.append(directory)
            if base == self.pids:
                _write(directory / "pids.max", str(max_tasks))
                pids_dir = directory
        return JobCgroup(tuple(dirs), pids_dir)

    def info(self) -> dict[str, str | None]:
        """Where the server's cgroups are (for its ready message and the client's clean-up)."""
        return {"tree": str(self.tree) if self.tree else None, "pids": str(self.pids) if self.pids else None}

    def close(self) -> bool:
        """Kill whatever is left in the server's cgroups and remove them; True when all is gone."""
        return release([d for d in (self.tree, self.pids) if d is not None])


def release(dirs: list[Path], timeout_s: float = 1.0) -> bool:
    """Kill every process under ``dirs`` and remove them, waiting up to ``timeout_s`` for the killed to die.

    Also how a client cleans up after a dead server. True when all of it is gone.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        for directory in dirs:
            kill_tree(directory)
        if all([remove_tree(d) for d in dirs]):
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
                release([Path(entry.path)])

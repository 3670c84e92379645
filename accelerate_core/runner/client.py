"""The client of the fork server: submit jobs, poll outcomes, restart the server when it dies.

The server is a plain subprocess (not ``multiprocessing``), so a daemonic Celery prefork pool process
can own one. Every submitted job yields exactly one :class:`ChildOutcome`, whatever happens: if the
server itself dies (or stops answering past every deadline), the jobs in flight come back as
``crashed`` and the next call starts a fresh server.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from accelerate_core import wire
from accelerate_core.errors import ContractError, RunnerError
from accelerate_core.runner.environ import scrub
from accelerate_core.runner.outcome import ChildOutcome
from accelerate_core.runner.protocol import (
    BOX_MODES,
    DEFAULT_MAX_FILE_MB,
    DEFAULT_MAX_TASKS,
    KILL_GRACE_S,
    JobRequest,
    LineReader,
    encode,
)

__all__ = ["DEFAULT_PRELOAD", "ForkServer"]

log = logging.getLogger(__name__)

START_TIMEOUT_S = 300.0
"""How long the server may take to import its preload and the entry before start-up counts as failed."""

WATCHDOG_SLACK_S = 30.0
"""A job whose outcome is this late past its time limit (and kill grace) means the server is stuck."""

START_WATCHDOG_FACTOR = 2.0
"""A job not started ``START_WATCHDOG_FACTOR * watchdog_s`` after submission while a child slot is free
means the server is stuck (it starts a queued job in the same loop turn that frees a slot)."""

_MODES = ("auto", "fork", "spawn")

DEFAULT_PRELOAD = ("torch", "transformers", "transformers.modeling_utils")
"""What the server imports before forking. ``import transformers`` alone is lazy: the model machinery
(``transformers.modeling_utils``, about 4-5 s here) would otherwise be imported again in every child,
which is most of what a fork is meant to save. Importing it touches no device."""


class _Job:
    """Client-side bookkeeping of one submitted job.

    On the wire a job goes by ``wire_id`` (its id plus a per-client sequence number), so an outcome
    can never be mistaken for that of a later job with the same id (a redelivered job keeps its key).
    An *abandoned* job (its ``run`` was interrupted) is killed and its outcome dropped on arrival.
    """

    __slots__ = ("abandoned", "deadline", "job_id", "pid", "request", "submitted")

    def __init__(self, job_id: str, request: JobRequest) -> None:
        self.job_id = job_id
        self.request = request
        self.pid: int | None = None
        self.deadline: float | None = None  # set when the server reports it started
        self.submitted = time.monotonic()
        self.abandoned = False

    def due(self, slack_s: float) -> float:
        """When the server should have started (not started yet) or finished this job at the latest."""
        if self.deadline is not None:
            return self.deadline + KILL_GRACE_S + slack_s
        return self.submitted + START_WATCHDOG_FACTOR * slack_s


class ForkServer:
    """A preloaded parent that runs each job in a child process of its own.

    Args:
        entry: the job function, ``"package.module:function"``, called as ``entry(payload) -> dict``.
        preload: modules the server imports once, before forking (never touching a device); the
            default is :data:`DEFAULT_PRELOAD`.
        max_children: how many jobs run at once; more are queued in the server, first in first out.
        mode: ``"fork"``, ``"spawn"`` (a fresh interpreter per job, ~5.6 s each) or ``"auto"``
            (spawn on macOS, else fork).
        python: the interpreter to run the server with (default: this one).
        watchdog_s: how late past a job's time limit (and kill grace) its outcome may be before the
            server counts as stuck: it is then killed and its jobs come back as ``crashed``.
        box: how each job's process tree is boxed (:mod:`accelerate_core.runner.box`): ``"cgroup"``
            (fails to start without a writable cgroup), ``"sweep"`` or ``"auto"`` (cgroup when possible).

    The server is started with the job allow-list of the caller's environment only
    (:mod:`accelerate_core.runner.environ`): no secret of the caller reaches a job.

    Use as a context manager, or call :meth:`close`. Not thread-safe: one owner thread.
    """

    def __init__(
        self,
        entry: str,
        *,
        preload: Sequence[str] = DEFAULT_PRELOAD,
        max_children: int = 1,
        mode: str = "auto",
        python: str | None = None,
        watchdog_s: float = WATCHDOG_SLACK_S,
        box: str = "auto",
    ) -> None:
        if ":" not in entry:
            raise RunnerError(f"entry {entry!r} is malformed: use 'package.module:function'")
        if mode not in _MODES:
            raise RunnerError(f"fork server mode {mode!r} is invalid: use one of {', '.join(_MODES)}")
        if max_children < 1:
            raise RunnerError(f"max_children={max_children} is invalid: give 1 or more")
        if box not in BOX_MODES:
            raise RunnerError(f"box mode {box!r} is invalid: use one of {', '.join(BOX_MODES)}")
        self.entry = entry
        self.preload = tuple(preload)
        self.max_children = max_children
        self.mode = mode
        self.python = python or sys.executable
        self.watchdog_s = watchdog_s
        self.box = box
        self.server_info: dict[str, Any] = {}
        self.last_pong: dict[str, Any] = {}
        """The server's last answer to :meth:`ping`: jobs running, queued, its spare child's pid."""
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: LineReader | None = None
        self._sel: selectors.BaseSelector | None = None
        self._ready = False
        self._pong = False
        self._probe_at: float | None = None  # when the watchdog sent its liveness ping
        self._jobs: dict[str, _Job] = {}  # by wire id, abandoned ones included until their outcome
        self._live: dict[str, str] = {}  # job id -> wire id, for the jobs the caller still waits for
        self._seq = itertools.count(1)
        self._done: list[ChildOutcome] = []
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._start()

    # ----------------------------------------------------------------- lifecycle

    def _argv(self) -> list[str]:
        argv = [self.python, "-m", "accelerate_core.runner.server", "--entry", self.entry,
                "--preload", ",".join(self.preload), "--max-children", str(self.max_children),
                "--box", self.box]  # fmt: skip
        if self.mode == "spawn":
            argv.append("--spawn")
        return argv

    def _start(self) -> None:
        proc = subprocess.Popen(
            self._argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True, env=server_environ(os.environ)
        )
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        self._proc = proc
        self._reader = LineReader(proc.stdout.fileno())
        self._sel = selectors.DefaultSelector()
        self._sel.register(proc.stdout.fileno(), selectors.EVENT_READ)
        self._ready = False
        self._finalizer = weakref.finalize(self, _terminate, proc)
        log.debug("fork server started (pid %d): %s", proc.pid, " ".join(self._argv()))

    @property
    def pid(self) -> int | None:
        """The server's process id (None when not running)."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def ensure_ready(self, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
        """Start the server if needed and wait until it has imported everything; return its ready message.

        Raises:
            RunnerError: the server could not start (its entry or preload does not import) or timed out.
        """
        if self._proc is not None and self._proc.poll() is not None:
            self._check_health()  # the jobs of a server that died come back as crashed first
        if self._proc is None:
            self._restart_dead()
        deadline = time.monotonic() + timeout
        while not self._ready:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._kill_server()
                raise RunnerError(f"the fork server did not start within {timeout:g} s: check its stderr")
            self._pump(remaining)
            if not self._ready and self._server_gone():
                code = self._proc.poll() if self._proc else None
                detail = self.server_info.get("fatal") or f"it exited with status {code}"
                self._kill_server()
                raise RunnerError(f"the fork server failed to start ({detail}): check the entry and preload")
        return self.server_info

    def close(self) -> None:
        """Stop the server, killing every child; in-flight jobs are dropped. Safe to call twice.

        A later call (``submit``, ``run``, ``ensure_ready``) starts a fresh server.
        """
        self._jobs.clear()
        self._live.clear()
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert proc.stdin is not None
            proc.stdin.write(encode({"op": "shutdown"}))
            proc.stdin.close()
        try:
            proc.wait(timeout=KILL_GRACE_S + 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._teardown()

    def __enter__(self) -> ForkServer:
        self.ensure_ready()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # ----------------------------------------------------------------- jobs

    def submit(
        self,
        job_id: str,
        payload: dict[str, Any],
        *,
        env: Mapping[str, str] | None = None,
        time_limit_s: float,
        mem_cap_mb: int,
        max_tasks: int = DEFAULT_MAX_TASKS,
        max_file_mb: int = DEFAULT_MAX_FILE_MB,
    ) -> None:
        """Queue one job (non-blocking once the server is up). Its outcome comes from :meth:`poll`.

        Args:
            job_id: unique among the jobs in flight; the outcome carries it.
            payload: JSON data handed to ``entry(payload)``.
            env: variables set in the child before the entry runs (``CUDA_VISIBLE_DEVICES``,
                ``OMP_NUM_THREADS`` -> also ``torch.set_num_threads``, ...), over the allow-list of the
                server's environment.
            time_limit_s: hard wall-clock limit from the fork; then SIGTERM, SIGKILL after a grace.
            mem_cap_mb: the RSS cap of the job's whole process tree (summed), watched by the server; it
                includes the pages the child shares with the preloaded parent (about 250-350 MB of torch
                and transformers). On CPU jobs an ``RLIMIT_DATA`` of the inherited data plus
                ``mem_cap_mb`` also makes a single huge allocation fail at once (``MemoryError``); not
                set when the env exposes a GPU.
            max_tasks: the processes and threads the job's tree may have at once (``process-limit``).
            max_file_mb: the largest file the job's tree may write (``file-size-limit``).

        Raises:
            RunnerError: ``job_id`` is already in flight, the request is invalid, or the server cannot start.
        """
        if job_id in self._live:
            raise RunnerError(f"job {job_id!r} is already in flight: give each job a unique id")
        wire_id = f"{job_id}#{next(self._seq)}"
        request = JobRequest(wire_id, dict(payload), float(time_limit_s), int(mem_cap_mb), dict(env or {}),
                             max_tasks=int(max_tasks), max_file_mb=int(max_file_mb))  # fmt: skip
        self.ensure_ready()
        self._jobs[wire_id] = _Job(job_id, request)
        self._live[job_id] = wire_id
        self._send({"op": "submit", "job": wire.encode(request)})

    def poll(self, timeout: float | None = None) -> list[ChildOutcome]:
        """Wait up to ``timeout`` seconds (None: until one arrives) for outcomes; return all that are ready.

        Returns at once with ``[]`` when no job is in flight. Never spins: it blocks on the server's
        pipe. If the server died, the jobs in flight come back as ``crashed``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done and self._live:
            self._pump(self._wait_for(deadline))
            self._check_health()
            if deadline is not None and time.monotonic() >= deadline:
                break
        done, self._done = self._done, []
        return done

    def run(
        self,
        job_id: str,
        payload: dict[str, Any],
        *,
        env: Mapping[str, str] | None = None,
        time_limit_s: float,
        mem_cap_mb: int,
        max_tasks: int = DEFAULT_MAX_TASKS,
        max_file_mb: int = DEFAULT_MAX_FILE_MB,
    ) -> ChildOutcome:
        """Submit one job and wait for its outcome (other jobs' outcomes stay queued for :meth:`poll`).

        If the wait is interrupted (a Celery soft time limit, Ctrl-C), the job is killed and abandoned:
        its outcome is dropped, and the same ``job_id`` may be submitted again at once.
        """
        self.submit(job_id, payload, env=env, time_limit_s=time_limit_s, mem_cap_mb=mem_cap_mb,
                    max_tasks=max_tasks, max_file_mb=max_file_mb)  # fmt: skip
        try:
            while True:
                for i, outcome in enumerate(self._done):
                    if outcome.job_id == job_id:
                        return self._done.pop(i)
                self._pump(self._wait_for(None))
                self._check_health()
        except BaseException:
            self._abandon(job_id)
            raise

    def cancel(self, job_id: str) -> None:
        """Kill a job (queued or running); its outcome still arrives, as ``crashed`` / ``Cancelled``."""
        wire_id = self._live.get(job_id)
        if wire_id is not None:
            self._send({"op": "cancel", "job_id": wire_id})

    def _abandon(self, job_id: str) -> None:
        wire_id = self._live.pop(job_id, None)
        job = self._jobs.get(wire_id or "")
        if job is None:
            return
        job.abandoned = True
        with contextlib.suppress(Exception):  # we are unwinding already: never mask the original error
            self._send({"op": "cancel", "job_id": job.request.job_id})

    def in_flight(self) -> list[str]:
        """The ids of jobs submitted and not yet returned by :meth:`poll`/:meth:`run`."""
        return list(self._live)

    def ping(self, timeout: float = 10.0) -> bool:
        """True when the server answers within ``timeout`` seconds."""
        self.ensure_ready()
        self._pong = False
        self._send({"op": "ping"})
        deadline = time.monotonic() + timeout
        while not self._pong and not self._server_gone() and time.monotonic() < deadline:
            self._pump(deadline - time.monotonic())
        return self._pong

    # ----------------------------------------------------------------- internals

    def _send(self, message: dict[str, Any]) -> None:
        self._write(message)
        self._check_health()

    def _write(self, message: dict[str, Any]) -> None:
        proc = self._proc
        try:
            assert proc is not None and proc.stdin is not None
            proc.stdin.write(encode(message))
            proc.stdin.flush()
        except (OSError, ValueError, AssertionError):  # broken pipe: the server died; the health check says so
            log.warning("the fork server is gone; its jobs will be reported as crashed")

    def _wait_for(self, deadline: float | None) -> float | None:
        """Seconds to block now: up to the caller's deadline, the watchdog and a server-exit check."""
        limits = [time.monotonic() + 1.0]  # look at the server's exit status at least once a second
        if deadline is not None:
            limits.append(deadline)
        limits.extend(j.due(self.watchdog_s) for j in self._jobs.values())
        return max(0.0, min(limits) - time.monotonic())

    def _pump(self, timeout: float | None) -> None:
        """Block up to ``timeout`` on the server's pipe and handle every message that arrived."""
        if self._sel is None or self._reader is None:
            return
        if self._sel.select(timeout):
            for message in self._reader.read():
                self._on_message(message)

    def _on_message(self, message: dict[str, Any]) -> None:
        event = message.get("event")
        if event == "outcome":
            outcome = _outcome(message.get("outcome"))
            if outcome is not None:
                self._finish(outcome.job_id, outcome)
        elif event == "started":
            job = self._jobs.get(str(message.get("job_id")))
            if job is not None:
                job.pid = message.get("pid")
                job.deadline = time.monotonic() + job.request.time_limit_s
        elif event == "ready":
            self._ready = True
            self.server_info = message
        elif event == "pong":
            self._pong = True
            self.last_pong = message
        elif event == "fatal":
            self.server_info = {"fatal": message.get("message")}

    def _server_gone(self) -> bool:
        return self._reader is None or self._reader.eof or self._proc is None or self._proc.poll() is not None

    def _check_health(self) -> None:
        """Turn a dead or stuck server into ``crashed`` outcomes for the jobs in flight."""
        if not self._server_gone() and not self._stuck(time.monotonic()):
            return
        if self._reader is not None:  # first take what it did say (outcomes of jobs that finished)
            for message in self._reader.read():
                self._on_message(message)
        reason = "stopped answering"
        if self._server_gone():
            code = _exit_status(self._proc, wait_s=2.0)
            reason = "closed its pipe" if code is None else f"died (exit status {code})"
        self._kill_server()
        _release_cgroups(self.server_info.get("box"))
        text = f"the fork server {reason} while the job was in flight; it restarts on the next call"
        for wire_id, job in list(self._jobs.items()):
            if job.pid is not None:
                _kill_orphaned_group(job.pid)
            self._finish(wire_id, ChildOutcome.crashed(wire_id, text, pid=job.pid))

    def _finish(self, wire_id: str, outcome: ChildOutcome) -> None:
        """Hand an outcome to the caller under the job's own id (dropped for an abandoned job)."""
        job = self._jobs.pop(wire_id, None)
        if job is None:
            return
        if self._live.get(job.job_id) == wire_id:
            del self._live[job.job_id]
        if not job.abandoned:
            self._done.append(dataclasses.replace(outcome, job_id=job.job_id))

    def _stuck(self, now: float) -> bool:
        """True when the server is alive but has stopped doing its job.

        A started job still running past its limit, kill grace and ``watchdog_s`` means the server no
        longer enforces limits. A job not started long after a child slot freed up may only mean a very
        busy machine: the server is pinged first, and counts as stuck only if the ping goes unanswered
        for ``watchdog_s`` too.
        """
        if any(j.deadline is not None and now > j.due(self.watchdog_s) for j in self._jobs.values()):
            return True
        slot_free = sum(1 for j in self._jobs.values() if j.deadline is not None) < self.max_children
        waiting = [j for j in self._jobs.values() if j.deadline is None and slot_free and now > j.due(self.watchdog_s)]
        if not waiting:
            self._probe_at = None
            return False
        if self._probe_at is None:
            self._pong, self._probe_at = False, now
            self._write({"op": "ping"})
            return False
        if self._pong:  # alive, merely slow: give the waiting jobs another full period
            self._probe_at = None
            for job in waiting:
                job.submitted = now
            return False
        return now > self._probe_at + self.watchdog_s

    def _restart_dead(self) -> None:
        self._kill_server()
        self.restarts += 1
        log.warning("restarting the fork server (restart #%d)", self.restarts)
        self._start()

    def _kill_server(self) -> None:
        if self._proc is not None:
            _terminate(self._proc)
        self._teardown()

    def _teardown(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
        if self._sel is not None:
            self._sel.close()
        proc = self._proc
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                _close(stream)
        self._proc, self._sel, self._reader, self._ready = None, None, None, False


HUGE_PAGE_MALLOC = "glibc.malloc.hugetlb=1"
"""glibc's malloc tunable that asks for transparent huge pages (``madvise``) on the heap it maps. Every job
forks the preloaded server, and a fork (and the child's exit) costs in proportion to the page-table
entries of its ~400 MB heap: with ~140 MB of it in 2 MiB pages, fork + exit + wait went from ~50 ms to
~30 ms here (measured on the server's own imports). A child writing to such a page still copies 4 KiB.
Ignored where glibc is older than 2.35, not glibc, or THP is off."""


def server_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """The fork server's environment: the job allow-list of ``environ`` (:func:`scrub`), plus
    :data:`HUGE_PAGE_MALLOC` (after any glibc tunables of ``environ``). The server drops the tunable from its
    ``os.environ`` once started, so no job's environment carries it; its children inherit the heap it shaped."""
    tunables = environ.get("GLIBC_TUNABLES")
    return {**scrub(environ), "GLIBC_TUNABLES": f"{tunables}:{HUGE_PAGE_MALLOC}" if tunables else HUGE_PAGE_MALLOC}


def _close(stream: IO[bytes] | None) -> None:
    with contextlib.suppress(OSError, ValueError):
        if stream is not None:
            stream.close()


def _exit_status(proc: subprocess.Popen[bytes] | None, wait_s: float) -> int | None:
    """The server's exit status, waiting briefly (its pipe may close a moment before it is reaped)."""
    if proc is None:
        return None
    try:
        return proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        return None


def _kill_orphaned_group(pgid: int) -> None:
    """Kill what is left of a job whose server died: the child died with it, its own children did not.

    The group id stays reserved while any member lives, so this reaches only that job's processes.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _release_cgroups(box: Any) -> None:
    """Kill what is left in a dead server's job cgroups (a ``setsid`` descendant) and remove them."""
    directory = dict(box or {}).get("cgroup")
    if isinstance(directory, str) and directory:
        from accelerate_core.runner.cgroup import release

        release(Path(directory))


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """Kill the server (its children die with it: they asked for SIGKILL on their parent's death)."""
    if proc.poll() is None:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    for stream in (proc.stdin, proc.stdout):
        _close(stream)


def _outcome(data: object) -> ChildOutcome | None:
    """The outcome in a server message; a malformed one is logged and, when it names its job, a crash."""
    try:
        return wire.decode(ChildOutcome, data)
    except ContractError as e:
        job_id = data.get("job_id") if isinstance(data, dict) else None
        log.error("malformed outcome from the fork server: %s", e)
        return (
            ChildOutcome.crashed(job_id, f"the fork server sent a malformed outcome: {e}")
            if isinstance(job_id, str)
            else None
        )

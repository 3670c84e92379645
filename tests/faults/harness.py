"""Fault injection on a whole fleet of real processes, and what a fault did to a run.

- :class:`Fleet`: its own ``redis-server`` on a free loopback port (password required, AOF on), worker
  nodes (``accel worker``: real prefork Celery), the writer (``accel writer``) and ``accel`` commands
  such as ``accel run``, each a subprocess in its own session; :meth:`Fleet.kill`, :meth:`Fleet.stop`,
  :meth:`Fleet.cont` and :meth:`Fleet.restart` act on the whole process group (a node's main process,
  its pool and its fork server alike).
- :class:`FaultOutcome`: planned jobs, terminal rows, lost, duplicated, seconds to completion and
  whether the run completed with its report, computed from the DuckDB store once the writer stopped.
- :func:`fault`: registers a scenario ``(Fleet) -> FaultOutcome`` under a name. Each area keeps its
  scenarios in ``tests/faults/scenarios_<area>.py``; :func:`load_scenarios` imports them all
  (``benchmarks/bench_faults.py`` runs every one; ``tests/faults/test_<area>.py`` asserts on each).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from accelerate_core.config import Settings
from accelerate_core.constants import JOB_KIND_DRY, RUN_COMPLETE, TERMINAL_STATUSES, WRITER_LOCK_KEY
from accelerate_core.contracts import JobSpec, RunParams, RunPlan, StatusSnapshot, job_key
from accelerate_core.errors import BrokerError
from tests.support import processes
from tests.support.fleet_key import FLEET_KEY_HEX
from tests.support.redis_server import RedisServer, free_port

REPO = Path(__file__).resolve().parents[2]
ACCEL = (sys.executable, "-m", "scheduler")
HOST = socket.gethostname()
PASSWORD = "faults-broker-pw"
WRITER_LOCK_TTL_S = 5
"""The writer lock's lifetime in a fault fleet, in seconds (shorter than production's, so takeovers are quick)."""
READY_S = 120.0
"""How long a process may take to start on a loaded machine before a scenario fails, in seconds."""


@dataclass(frozen=True)
class FaultOutcome:
    """What one fault did to one run, read from the DuckDB store.

    Attributes:
        fault: the scenario's name.
        planned: jobs planned.
        terminal: planned jobs with a terminal row (``lost`` rows included).
        lost: planned jobs without a terminal row, plus jobs recorded ``lost``.
        duplicated: rows beyond one per planned job (a second row, a row nobody planned, doubled measurements).
        seconds: from the fault's start until the run completed (or the scenario gave up).
        completed: the run is ``complete`` in the store and its report is on disk.
        note: what else the scenario saw (a line the writer printed, counters).
    """

    fault: str
    planned: int
    terminal: int
    lost: int
    duplicated: int
    seconds: float
    completed: bool
    note: str = ""

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing doubled, every planned job terminal, the run completed."""
        return self.lost == 0 and self.duplicated == 0 and self.terminal == self.planned and self.completed

    def row(self) -> dict[str, Any]:
        """The outcome as plain JSON data (``ok`` included)."""
        return {**asdict(self), "seconds": round(self.seconds, 2), "ok": self.ok}


Scenario = Callable[["Fleet"], FaultOutcome]
"""A fault scenario: starts what it needs on the fleet, injects the fault, returns the outcome."""

SCENARIOS: dict[str, Scenario] = {}
"""Every registered scenario by name, in registration order."""


def fault(name: str) -> Callable[[Scenario], Scenario]:
    """Register a scenario under ``name`` (unique across every scenarios module)."""

    def register(fn: Scenario) -> Scenario:
        if name in SCENARIOS and SCENARIOS[name] is not fn:
            raise ValueError(f"fault {name!r} is registered twice: give each scenario its own name")
        SCENARIOS[name] = fn
        return fn

    return register


def load_scenarios() -> dict[str, Scenario]:
    """Import every ``tests/faults/scenarios_*.py`` and return the registry."""
    here = Path(__file__).parent
    for info in pkgutil.iter_modules([str(here)]):
        if info.name.startswith("scenarios_"):
            importlib.import_module(f"tests.faults.{info.name}")
    return SCENARIOS


def dry_plan(run_id: str, n: int, *, sleep_s: float = 0.0, phase: str = "faults") -> RunPlan:
    """A run of ``n`` ``dry`` jobs on cpu (no model; each sleeps ``sleep_s`` standing in for work)."""
    jobs = tuple(
        JobSpec(key=job_key(run_id, f"dry{i}", "cpu", JOB_KIND_DRY), run_id=run_id, model_type=f"dry{i}",
                hardware="cpu", kind=JOB_KIND_DRY, sleep_s=sleep_s)
        for i in range(n)
    )  # fmt: skip
    params = RunParams(kind=JOB_KIND_DRY, n_jobs=n)
    return RunPlan(run_id=run_id, phase=phase, created_at=time.time(), params=params, jobs=jobs)


def _pump(proc: subprocess.Popen[bytes], log: Path) -> None:
    """Copy ``proc``'s output to ``log`` line by line.

    Through a pipe, not a file the process writes itself: a fault may limit the size of the files the
    process writes (``RLIMIT_FSIZE``), and its one line saying so must still come out.
    """
    assert proc.stdout is not None
    with log.open("ab") as out:
        for line in proc.stdout:
            out.write(line)
            out.flush()


class Fleet:
    """A fleet of real processes in ``workdir``: Redis, the writer, worker nodes and ``accel`` commands.

    Args:
        workdir: where the results DB, reports, logs and Redis's files go.
        env: extra ``ACCEL_*`` settings for every process (e.g. a short visibility timeout).
    """

    def __init__(self, workdir: Path, *, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.redis_server = RedisServer(workdir / "redis", password=PASSWORD)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
        self.env.update(
            ACCEL_BROKER_URL=f"redis://127.0.0.1:{self.redis_server.port}/0",
            ACCEL_BROKER_PASSWORD=PASSWORD,
            ACCEL_RESULTS_DB=str(workdir / "data" / "results.duckdb"),
            ACCEL_TEMPLATES_DB=str(workdir / "templates.duckdb"),
            ACCEL_REPORTS_DIR=str(workdir / "reports"),
            ACCEL_FLOWER_PASSWORD="faults-flower-pw",
            ACCEL_FLOWER_PORT=str(free_port()),
            ACCEL_WRITER_LOCK_TTL_S=str(WRITER_LOCK_TTL_S),
            ACCEL_FLEET_KEY=FLEET_KEY_HEX,
            ACCEL_SERVE_PORT=str(free_port()),  # each fleet's writer serves on a port of its own
            **(env or {}),
        )
        self.settings = Settings.load(environ=self.env)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.argv: dict[str, tuple[str, ...]] = {}

    # -- life cycle -------------------------------------------------------------------------------------

    def __enter__(self) -> Fleet:
        self.redis_server.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every process, all at once (a stopped one is continued first so it can die), then Redis."""
        for name in list(self.procs):
            self.cont(name)
        processes.stop_all([self.procs.pop(name) for name in list(self.procs)])
        self.redis_server.stop()

    # -- processes --------------------------------------------------------------------------------------

    def spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``accel ARGS`` as process ``name`` (output in ``logs/NAME.log``)."""
        if name in self.procs and self.procs[name].poll() is None:
            raise ValueError(f"process {name!r} is running already: kill or terminate it first")
        self.argv[name] = args
        full_env = self.env | (env or {})
        proc = subprocess.Popen([*ACCEL, *args], env=full_env, cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        threading.Thread(target=_pump, args=(proc, self.logs / f"{name}.log"), daemon=True).start()
        self.procs[name] = proc
        return proc

    def writer(
        self, name: str = "writer", *, wait: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``accel writer`` (``env``: extra settings); with ``wait``, return once it holds the writer lock."""
        proc = self.spawn(name, "writer", env=env)
        if wait:
            self.wait_for(lambda: self.redis().exists(WRITER_LOCK_KEY) or self._died(name), READY_S, f"{name}")
            self._check_alive(name)
        return proc

    def worker(self, name: str = "cpu0", *args: str, wait: bool = True) -> subprocess.Popen[bytes]:
        """Start ``accel worker --hardware cpu ARGS``; with ``wait``, return once it answers a ping."""
        before = set(self.live_nodes())
        proc = self.spawn(name, "worker", "--hardware", "cpu", *args)
        if wait:
            self.wait_for(lambda: set(self.live_nodes()) - before or self._died(name), READY_S, f"worker {name}")
            self._check_alive(name)
        return proc

    def signal(self, name: str, sig: signal.Signals) -> None:
        """Send ``sig`` to process ``name``'s whole group."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.procs[name].pid, sig)

    def kill(self, name: str) -> None:
        """``kill -9`` the whole group of process ``name`` and reap it."""
        self.signal(name, signal.SIGKILL)
        processes.stop(self.procs[name], timeout_s=5)

    def stop(self, name: str) -> None:
        """SIGSTOP process ``name``'s group (a stall: it holds what it held, and does nothing)."""
        self.signal(name, signal.SIGSTOP)

    def cont(self, name: str) -> None:
        """SIGCONT process ``name``'s group."""
        self.signal(name, signal.SIGCONT)

    def terminate(self, name: str, timeout_s: float = 30) -> int | None:
        """SIGTERM process ``name``'s group (SIGKILL past ``timeout_s``); return its exit status."""
        proc = self.procs.pop(name)
        processes.stop(proc, timeout_s=timeout_s)
        return proc.returncode

    def restart(self, name: str) -> subprocess.Popen[bytes]:
        """Start process ``name`` again with the arguments it was started with (it must have ended)."""
        self.procs.pop(name, None)
        return self.spawn(name, *self.argv[name])

    def accel(self, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
        """Run ``accel ARGS`` to its end with this fleet's settings."""
        return subprocess.run([*ACCEL, *args], env=self.env, cwd=REPO, capture_output=True, text=True,
                              timeout=timeout_s)  # fmt: skip

    def log(self, name: str) -> str:
        """Everything process ``name`` printed so far."""
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def _died(self, name: str) -> bool:
        return self.procs[name].poll() is not None

    def _check_alive(self, name: str) -> None:
        if self._died(name):
            raise AssertionError(f"{name} exited with {self.procs[name].returncode}:\n{self.log(name)[-3000:]}")

    # -- the broker -------------------------------------------------------------------------------------

    def redis(self) -> Any:
        """A redis-py client of this fleet's broker."""
        import redis

        return redis.Redis.from_url(self.settings.broker_url or "", socket_timeout=5)

    def live_nodes(self) -> list[str]:
        """The worker nodes that answer a ping now."""
        from scheduler.remote import live_nodes

        try:
            return live_nodes(self.settings, 1.0)
        except BrokerError:
            return []

    def dispatch(self, plan: RunPlan) -> int:
        """Record ``plan`` through the writer and send its jobs, as ``accel run`` does."""
        from scheduler.remote import dispatch

        return dispatch(self.settings, plan)

    def status(self, run_id: str) -> StatusSnapshot | None:
        """The writer's latest status snapshot of ``run_id`` (None before its first, or on a missed poll)."""
        from scheduler.remote import read_status

        try:
            return read_status(self.settings, run_id)
        except BrokerError:
            return None

    def wait_complete(self, run_id: str, timeout_s: float) -> bool:
        """Wait until the writer says the run is done and its report written; False past ``timeout_s``."""

        def done() -> bool:
            snap = self.status(run_id)
            return snap is not None and snap.phase_done and snap.report_dir is not None

        try:
            self.wait_for(done, timeout_s, f"run {run_id} to complete")
        except AssertionError:
            return False
        return True

    @staticmethod
    def wait_for(check: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.2) -> Any:
        """Poll ``check`` until it returns something truthy (returned), or raise AssertionError naming ``what``."""
        return processes.wait_for(check, timeout_s, what, every_s)

    # -- the outcome ------------------------------------------------------------------------------------

    def outcome(
        self, fault_name: str, plan: RunPlan, started: float, *, completed: bool, note: str = ""
    ) -> FaultOutcome:
        """Stop every writer, then count ``plan``'s rows in the results store (read-only)."""
        seconds = time.monotonic() - started
        for name in [n for n, args in self.argv.items() if args[:1] == ("writer",) and n in self.procs]:
            self.cont(name)
            self.terminate(name)
        return count_outcome(self.settings, fault_name, plan, seconds, completed=completed, note=note)


def count_outcome(
    settings: Settings, fault_name: str, plan: RunPlan, seconds: float, *, completed: bool, note: str = ""
) -> FaultOutcome:
    """``plan``'s outcome as the results store (opened read-only, so no writer may hold it) records it."""
    from accelerate_core.store import ResultsStore

    planned = {j.key for j in plan.jobs}
    with ResultsStore.open(settings.results_db, read_only=True) as store:
        rows = store.query("SELECT job_key, status FROM jobs WHERE run_id = ?", [plan.run_id])
        terminal = {k for k, s in rows if s in TERMINAL_STATUSES and k in planned}
        lost_rows = {k for k, s in rows if s == "lost"}
        extra = len(rows) - len({k for k, _ in rows}) + sum(1 for k, _ in rows if k not in planned)
        doubled = store.query(
            "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM measurements WHERE run_id = ? "
            "GROUP BY job_key, metric, batch_size, seq_len)",
            [plan.run_id],
        )[0][0]
        run = store.query("SELECT status FROM runs WHERE run_id = ?", [plan.run_id])
    report = settings.reports_dir / plan.run_id
    complete = completed and bool(run) and run[0][0] == RUN_COMPLETE and report.is_dir() and any(report.iterdir())
    return FaultOutcome(
        fault=fault_name,
        planned=len(planned),
        terminal=len(terminal),
        lost=len(planned - terminal) + len(lost_rows & planned),
        duplicated=int(extra) + int(doubled),
        seconds=seconds,
        completed=complete,
        note=note,
    )

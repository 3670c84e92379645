"""The fleet end to end: real redis-server, real prefork workers and writer (started with ``accel``), real Flower.

One fleet for the module (starting workers is the slow part): the writer, one CPU worker and Flower. The
tests run in file order and share it: a worker killed mid-job, the redelivery cap, then a phase run of
20+ architectures during which a second worker joins; the last test stops the writer and reads the store.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from accelerate_core import wire
from accelerate_core.config import Settings
from accelerate_core.constants import (
    ERR_REDELIVERY_CAP,
    ERR_VERSION_SKEW,
    TASK_RECORD_RUN,
    TASK_RUN_JOB,
    TERMINAL_STATUSES,
    WRITER_LOCK_KEY,
)
from accelerate_core.contracts import JobSpec, RunParams, RunPlan, StatusSnapshot, job_key
from accelerate_core.errors import BrokerError
from accelerate_core.store import ResultsStore
from scheduler.celery_client import client_app
from scheduler.plan import PlanOptions
from scheduler.planning_inputs import plan_with_stores, template_lookup
from scheduler.remote import dispatch, live_nodes, read_status, run_remote
from tests.support import http
from tests.support.fleet import FleetProcesses
from tests.support.fleet_key import FLEET_KEY, FLEET_KEY_HEX
from tests.support.processes import wait_for
from tests.support.redis_server import RedisServer, free_port

pytestmark = pytest.mark.redis

REPO = Path(__file__).resolve().parents[2]
ACCEL = [sys.executable, "-m", "scheduler"]
HOST = socket.gethostname()
PASSWORD = "fleet-test-pw"
# 20 architectures across modalities (deploy/demo-models.txt is used when it is there).
MODELS = [
    "bert", "gpt2", "vit", "distilbert", "roberta", "albert", "electra", "deit", "opt", "bloom",
    "whisper", "clip", "patchtst", "bart", "t5", "gpt_neo", "llama", "mistral", "mobilebert", "squeezebert",
]  # fmt: skip


def _models() -> list[str]:
    demo = REPO / "deploy" / "demo-models.txt"
    if demo.is_file():
        names = [ln.split("#")[0].strip() for ln in demo.read_text().splitlines()]
        names = [n for n in names if n]
        if len(names) >= 20:
            return names
    return MODELS


@dataclass
class Fleet(FleetProcesses):
    attempts: dict[str, int] = field(default_factory=dict)  # fault runs of this module -> their job's attempts


def flower_get(fleet: Fleet, path: str, auth: bool = True) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{fleet.settings.flower_port}{path}"
    status, body = http.get(url, auth=("admin", PASSWORD) if auth else None, timeout_s=10)
    return status, json.loads(body or b"null") if status < 400 else None


@pytest.fixture(scope="module")
def fleet(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    redis_server.fresh()
    base = tmp_path_factory.mktemp("fleet")
    templates = base / "templates.duckdb"
    template_lookup(Settings(templates_db=templates))  # sync the shipped templates once
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
    env.update(
        ACCEL_BROKER_URL=redis_server.url,
        ACCEL_RESULTS_DB=str(base / "data" / "results.duckdb"),
        ACCEL_TEMPLATES_DB=str(templates),
        ACCEL_REPORTS_DIR=str(base / "reports"),
        ACCEL_FLOWER_PASSWORD=PASSWORD,
        ACCEL_FLOWER_PORT=str(free_port()),
        ACCEL_REDELIVERY_CAP="2",
        ACCEL_FLEET_KEY=FLEET_KEY_HEX,
        ACCEL_SERVE_PORT=str(free_port()),
    )
    fl = Fleet(Settings.load(environ=env), env, base)
    fl.start("flower", "flower")
    fl.start("writer", "writer")
    fl.start("cpu0", "worker", "--hardware", "cpu")
    try:
        wait_for(lambda: f"cpu0@{HOST}" in _live(fl), 120, "worker cpu0")
        wait_for(lambda: _redis(fl).exists(WRITER_LOCK_KEY), 30, "the writer")
        wait_for(lambda: flower_get(fl, "/api/workers")[0] == 200, 60, "flower")
        yield fl
    finally:
        fl.stop_all()


def _live(fleet: Fleet) -> list[str]:
    try:
        return live_nodes(fleet.settings, 1.0)
    except BrokerError:
        return []


def _redis(fleet: Fleet) -> Any:
    import redis

    return redis.Redis.from_url(fleet.settings.broker_url or "")


def _dry_plan(run_id: str, n: int, sleep_s: float) -> RunPlan:
    jobs = tuple(
        JobSpec(
            key=job_key(run_id, f"sleepy{i}", "cpu", "dry"),
            run_id=run_id,
            model_type=f"sleepy{i}",
            hardware="cpu",
            kind="dry",
            sleep_s=sleep_s,
        )
        for i in range(n)
    )
    params = RunParams(kind="dry", n_jobs=n)
    return RunPlan(run_id=run_id, phase="fleet-faults", created_at=time.time(), params=params, jobs=jobs)


_killed: set[int] = set()


def _kill_pool_process_running(fleet: Fleet, key: str) -> int:
    """SIGKILL the prefork pool process that is running job ``key`` now; return its pid.

    ``inspect().active()`` can still name a pool process killed a moment ago (the node has not yet
    noticed), so a pid already killed, or gone, is not a match: wait for the redelivered run.
    """
    inspect = client_app(fleet.settings).control.inspect(timeout=1.0)

    def running() -> int | None:
        for tasks in (inspect.active() or {}).values():
            for task in tasks:
                pid = task.get("worker_pid")
                if task.get("id") == key and pid and int(pid) not in _killed and psutil.pid_exists(int(pid)):
                    return int(pid)
        return None

    pid = wait_for(running, 60, f"job {key} to start")
    os.kill(pid, signal.SIGKILL)
    _killed.add(pid)
    return int(pid)


def _status(fleet: Fleet, run_id: str) -> StatusSnapshot:
    """The writer's snapshot of the run (an empty one before the first, or when a loaded machine misses a poll)."""
    try:
        found = read_status(fleet.settings, run_id)
    except BrokerError:
        found = None
    return found or StatusSnapshot(run_id=run_id, phase="", status="")


def _done(fleet: Fleet, run_id: str, timeout_s: float) -> StatusSnapshot:
    snap: StatusSnapshot = wait_for(lambda: (s := _status(fleet, run_id)).phase_done and s, timeout_s, f"run {run_id}")
    return snap


# -- refusals (no fleet needed) ------------------------------------------------------------------------


def _accel(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ACCEL, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_cuda_worker_refuses_on_a_machine_without_one() -> None:
    result = _accel("worker", "--hardware", "cuda")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("accel: error: no cuda device on ")


def test_unreachable_broker_is_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
    env.update(ACCEL_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0", ACCEL_FLOWER_PASSWORD="pw")
    env.update(ACCEL_FLEET_KEY=FLEET_KEY_HEX)
    for args in (("worker", "--hardware", "cpu"), ("writer",), ("flower",)):
        result = _accel(*args, env=env)
        lines = [ln for ln in result.stderr.strip().splitlines() if ln.startswith("accel: error:")]
        assert result.returncode == 1, (args, result.stderr)
        assert len(lines) == 1 and "cannot reach redis at redis://127.0.0.1:" in lines[0], result.stderr
        assert "Traceback" not in result.stderr


# -- faults ---------------------------------------------------------------------------------------------


def test_a_worker_killed_mid_job_gets_it_redelivered_and_recorded_once(fleet: Fleet) -> None:
    # Given a job that takes a few seconds
    plan = _dry_plan("fleet-kill", 1, sleep_s=3.0)
    dispatch(fleet.settings, plan)
    key = plan.jobs[0].key
    # When the pool process running it is SIGKILLed mid-job
    _kill_pool_process_running(fleet, key)
    # Then the job is delivered again and its result lands once
    snap = _done(fleet, plan.run_id, 90)
    assert snap.by_status == {"done": 1}
    fleet.attempts[plan.run_id] = 2  # checked in the store by the last test


def test_a_job_that_keeps_killing_its_worker_stops_at_the_redelivery_cap(fleet: Fleet) -> None:
    # Given the cap is 2 deliveries, and a job whose every run loses its worker
    plan = _dry_plan("fleet-cap", 1, sleep_s=30.0)
    dispatch(fleet.settings, plan)
    key = plan.jobs[0].key
    for _ in range(2):
        _kill_pool_process_running(fleet, key)
        time.sleep(0.5)
    # Then the third delivery is recorded failed with redelivery-cap, without running it
    snap = _done(fleet, plan.run_id, 60)
    assert snap.by_status == {"failed": 1}
    assert snap.failures[0].error_class == ERR_REDELIVERY_CAP
    fleet.attempts[plan.run_id] = 3


# -- schema versions between processes --------------------------------------------------------------------


def _send_by_name(fleet: Fleet, plan: RunPlan, spec_message: dict[str, Any]) -> None:
    """Record ``plan`` through the writer, then put one raw job message on the worker's queue by task name (signed)."""
    app = client_app(fleet.settings)
    try:
        run = FLEET_KEY.envelope(TASK_RECORD_RUN, "plan", wire.encode(plan))
        app.send_task(TASK_RECORD_RUN, kwargs=run, queue=fleet.settings.results_queue)
        signed = FLEET_KEY.envelope(TASK_RUN_JOB, "spec", spec_message)
        app.send_task(TASK_RUN_JOB, kwargs=signed, task_id=plan.jobs[0].key, queue=fleet.settings.queue_for("cpu"))
    finally:
        app.close()


def test_a_job_of_a_newer_major_schema_becomes_a_version_skew_row_not_a_vanished_message(fleet: Fleet) -> None:
    # Given a job message written by a scheduler of the next major schema (a renamed key, say)
    plan = _dry_plan("fleet-skew", 1, sleep_s=0.0)
    newer = f"{wire.SCHEMA_MAJOR + 1}.0"
    message = {**wire.encode(plan.jobs[0]), "v": newer, "limits_v2": {"hard_s": 10}}
    # When it reaches this (older) prefork worker and the real writer
    _send_by_name(fleet, plan, message)
    # Then the job still ends in exactly one terminal row: version-skew, naming both versions
    snap = _done(fleet, plan.run_id, 60)
    assert snap.by_status == {"failed": 1}
    failure = snap.failures[0]
    assert failure.error_class == ERR_VERSION_SKEW and failure.error_type == "VersionSkewError"
    assert newer in (failure.error_message or "") and wire.SCHEMA_VERSION in (failure.error_message or "")
    fleet.attempts[plan.run_id] = 1


def test_a_job_of_a_newer_minor_schema_with_an_unknown_key_runs_normally(fleet: Fleet) -> None:
    # Given a job message of the next minor schema, with an optional key this worker does not know
    plan = _dry_plan("fleet-minor", 1, sleep_s=0.0)
    message = {**wire.encode(plan.jobs[0]), "v": f"{wire.SCHEMA_MAJOR}.{wire.SCHEMA_MINOR + 1}", "signature": "ab"}
    # When it reaches the worker, Then it runs and is recorded done
    _send_by_name(fleet, plan, message)
    assert _done(fleet, plan.run_id, 60).by_status == {"done": 1}
    fleet.attempts[plan.run_id] = 1


# -- the phase run ----------------------------------------------------------------------------------------


def test_run_with_hardware_auto_plans_for_the_queues_live_workers_consume(fleet: Fleet) -> None:
    # Given a fleet whose only live workers are cpu nodes
    # When `accel run --broker ... --hardware auto --wait` is run from the command line
    result = _accel("run", "--phase", "fleet-auto", "--models", "bert,gpt2", "--hardware", "auto", "--wait",
                    "--json", env=fleet.env)  # fmt: skip
    # Then it plans for cpu only, and returns once the writer has every job of the run
    assert result.returncode == 0, result.stderr
    run_id = json.loads(result.stdout)["run_id"]
    snap = _status(fleet, run_id)
    assert snap.phase_done and snap.terminal == snap.total == 2, snap
    assert set(snap.by_hardware) == {"cpu"}, snap


def test_run_with_hardware_auto_and_no_live_worker_is_one_line(tmp_path: Path) -> None:
    # Given a broker that no worker consumes
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
        env.update(ACCEL_BROKER_URL=server.url, ACCEL_RESULTS_DB=str(tmp_path / "r.duckdb"),
                   ACCEL_TEMPLATES_DB=str(tmp_path / "t.duckdb"))  # fmt: skip
        # When a run asks for the hardware live workers have
        result = _accel("run", "--phase", "p", "--models", "bert", "--hardware", "auto", env=env)
    finally:
        server.stop()
    # Then it refuses in one line that says what to do, and sends nothing
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "no live worker" in lines[0] and "accel worker" in lines[0]


def test_phase_run_over_two_workers_records_every_job_once_and_reports(fleet: Fleet, tmp_path: Path) -> None:
    # Given a phase run of 20+ architectures planned for the fleet
    models = _models()
    plan = plan_with_stores(fleet.settings, PlanOptions(phase="fleet-it", models=",".join(models), hardware=("cpu",)),
                            local=False, base_dir=REPO)  # fmt: skip
    assert len(plan.jobs) >= 20
    # When it is sent, and a second worker joins once the first results landed
    assert run_remote(fleet.settings, plan, wait=False) == plan.run_id
    wait_for(lambda: _status(fleet, plan.run_id).by_status.get("done"), 240, "the first result")
    fleet.start("cpu1", "worker", "--hardware", "cpu")
    snap = _done(fleet, plan.run_id, 420)
    # Then every job is terminal, and the report is written
    assert snap.terminal == snap.total == len(plan.jobs)
    report_dir = Path(snap.report_dir or "")
    assert (report_dir / "report.json").is_file() and (report_dir / "report.md").is_file()
    _check_flower(fleet, plan)
    _check_node_never_loaded_torch(fleet.procs["cpu0"].pid)
    # and the store (read once the writer stopped) holds each job once, from both workers
    fleet.stop("writer")
    with ResultsStore.open(fleet.settings.results_db, read_only=True) as store:
        rows = store.query("SELECT job_key, status, worker_id, attempts FROM jobs WHERE run_id = ?", [plan.run_id])
        assert sorted(r[0] for r in rows) == sorted(j.key for j in plan.jobs)
        assert all(r[1] in TERMINAL_STATUSES for r in rows)
        ran = {r[2] for r in rows if r[2]}
        assert {f"cpu0@{HOST}", f"cpu1@{HOST}"} <= ran, f"workers seen: {ran}\n{fleet.log('cpu1')}"
        workers = {r[0] for r in store.query("SELECT worker_id FROM workers")}
        assert {f"cpu0@{HOST}", f"cpu1@{HOST}"} <= workers
        # the fault tests' jobs: one row each, with the deliveries they took
        faults = store.query("SELECT run_id, attempts FROM jobs WHERE kind = 'dry'")
        assert dict(faults) == fleet.attempts and len(faults) == len(fleet.attempts)
        _check_same_shape_as_local(fleet, store, plan.run_id, tmp_path)


def _check_node_never_loaded_torch(pid: int) -> None:
    """The node's main and pool processes ran 20 jobs without loading torch: jobs ran in the fork server."""
    import psutil

    main = psutil.Process(pid)
    pool = [c for c in main.children() if "accelerate_core.runner" not in " ".join(c.cmdline())]
    assert pool, "the node has no pool process"
    for proc in [main, *pool]:
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "libtorch" not in maps and "libcuda" not in maps, f"{proc.cmdline()} loaded torch"


def _check_flower(fleet: Fleet, plan: RunPlan) -> None:
    # Flower (with auth) shows both workers and the succeeded jobs by their keys; without auth it refuses
    status, workers = flower_get(fleet, "/api/workers?refresh=1")
    assert status == 200 and {f"cpu0@{HOST}", f"cpu1@{HOST}"} <= set(workers)
    status, tasks = flower_get(fleet, "/api/tasks?limit=1000")
    assert status == 200
    succeeded = {tid for tid, t in tasks.items() if t.get("state") == "SUCCESS" and t.get("name") == "accel.run_job"}
    keys = {j.key for j in plan.jobs}
    assert len(succeeded & keys) >= len(keys) - 2  # events of a job's last moments may trail
    some = tasks[next(iter(succeeded & keys))]
    assert "model_type" in str(some.get("kwargs")) and "'hardware': 'cpu'" in str(some.get("kwargs"))
    assert flower_get(fleet, "/api/workers", auth=False)[0] == 401
    assert flower_get(fleet, "/api/tasks", auth=False)[0] == 401


def _check_same_shape_as_local(fleet: Fleet, store: ResultsStore, run_id: str, tmp_path: Path) -> None:
    """A local run of one model fills the same columns and metrics as the fleet's row of that model."""
    from scheduler.local import run_local

    local = Settings(
        results_db=tmp_path / "local.duckdb",
        templates_db=fleet.settings.templates_db,
        reports_dir=tmp_path / "reports",
        concurrency=1,
    )
    plan = plan_with_stores(local, PlanOptions(phase="local-shape", models="bert", hardware=("cpu",)), base_dir=REPO)
    run_local(local, plan, show_progress=False)
    with ResultsStore.open(local.results_db, read_only=True) as mine:
        assert _shape(mine, plan.run_id) == _shape(store, run_id)


def _shape(store: ResultsStore, run_id: str) -> tuple[list[str], list[tuple[str, str]]]:
    columns = [c for (c,) in store.query("SELECT column_name FROM duckdb_columns() WHERE table_name = 'jobs'")]
    row = store.query(f"SELECT {', '.join(columns)} FROM jobs WHERE run_id = ? AND model_type = 'bert'", [run_id])[0]
    ignore = {"attempts"}
    filled = [c for c, v in zip(columns, row, strict=True) if v is not None and c not in ignore]
    metrics = store.query(
        """SELECT DISTINCT m.metric, m.unit FROM measurements m JOIN jobs j USING (job_key)
           WHERE j.run_id = ? AND j.model_type = 'bert' ORDER BY 1, 2""",
        [run_id],
    )
    return filled, [(str(a), str(b)) for a, b in metrics]

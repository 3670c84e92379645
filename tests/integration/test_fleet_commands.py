"""The operators' fleet commands on real processes: a redis-server of its own, the writer, prefork worker nodes.

``accel workers`` lists a node started mid-test (with ``-n``, ``-Q`` and Celery options after ``--``);
``accel run --dry --wait`` reports each live node's round trip; ``accel cancel`` ends a running run with its
report (it signs its cancel: a forged cancel or result sent straight to Redis is dead-lettered and changes
nothing); ``accel run`` warns when no writer is alive.
The tests share one fleet and run in file order.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from accelerate_core import wire
from accelerate_core.backends.device_model import device_model
from accelerate_core.config import Settings
from accelerate_core.constants import STATUS_FAILED, TASK_CANCEL_RUN, TASK_RECORD_RESULT
from accelerate_core.contracts import JobResult, JobSpec, RunParams, RunPlan, job_key
from accelerate_core.signing import FleetKey
from scheduler.cli.run import NO_WRITER_WARNING
from scheduler.planning_inputs import template_lookup
from scheduler.remote import dispatch, read_status
from tests.support import processes
from tests.support.cli import seed_catalog_index
from tests.support.fleet import ACCEL, REPO, FleetProcesses
from tests.support.fleet_key import FLEET_KEY_HEX
from tests.support.processes import wait_for
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.redis

HOST = socket.gethostname()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetProcesses]:
    base = tmp_path_factory.mktemp("fleetcmd")
    server = RedisServer(base / "redis", password="fleetcmd-pw")
    server.start()
    templates = base / "templates.duckdb"
    template_lookup(Settings(templates_db=templates))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
    env.update(
        ACCEL_BROKER_URL=server.url,
        ACCEL_RESULTS_DB=str(base / "data" / "results.duckdb"),
        ACCEL_TEMPLATES_DB=str(templates),
        ACCEL_REPORTS_DIR=str(base / "reports"),
        ACCEL_FLEET_KEY=FLEET_KEY_HEX,
    )
    fl = FleetProcesses(Settings.load(environ=env), env, base)
    fl.start("writer", "writer")
    fl.start("cpu0", "worker", "--hardware", "cpu")
    try:
        wait_for(lambda: f"cpu0@{HOST}" in fl.live(), 120, "worker cpu0")
        yield fl
    finally:
        fl.stop_all()
        server.stop()


def _workers(fleet: FleetProcesses) -> dict[str, Any]:
    done = fleet.accel("workers", "--json", "--timeout", "2")
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def test_workers_lists_a_node_started_mid_test_with_its_hardware_versions_and_queues(fleet: FleetProcesses) -> None:
    # Given one node and the writer
    before = _workers(fleet)
    assert [n["node"] for n in before["nodes"]] == [f"cpu0@{HOST}"]
    assert before["writer"]["host"] == HOST and before["writer"]["pid"] > 0 and before["writer"]["state"] == "writing"
    # When a second node starts with its own name, queues and a Celery option passed through
    start_smoke_node(fleet)
    # Then `accel workers --json` lists it with its hardware, device, versions and both queues
    nodes = {n["node"]: n for n in wait_for(lambda: _with_info(fleet), 60, "both inventories")}
    smoke = nodes[f"smoke@{HOST}"]
    assert smoke["queues"] == ["hw.cpu", "hw.smoke"] and smoke["pid"] > 0 and smoke["active"] == []
    assert smoke["info"]["hardware"] == "cpu" and smoke["info"]["device_name"]
    from importlib import metadata

    assert smoke["info"]["versions"]["torch"] == metadata.version("torch")
    assert smoke["info"]["versions"]["transformers"] == metadata.version("transformers")
    assert nodes[f"cpu0@{HOST}"]["queues"] == ["hw.cpu", f"hw.cpu.{device_model('cpu')}"]  # its model's queue too
    # and the Celery option reached the node (its pool says so)
    stats = _stats(fleet, f"smoke@{HOST}")
    assert stats["pool"]["max-tasks-per-child"] == 7
    # and the table names both nodes and the writer
    text = fleet.accel("workers", "--timeout", "2")
    assert text.returncode == 0 and f"smoke@{HOST}" in text.stdout and "2 live nodes; writer: writing on" in text.stdout


def start_smoke_node(fleet: FleetProcesses) -> None:
    """The second node (its own name, queues and a Celery option passed through), once per module."""
    if f"smoke@{HOST}" not in fleet.live():
        fleet.start(
            "smoke", "worker", "-n", f"smoke@{HOST}", "-Q", "hw.cpu,hw.smoke", "--", "--max-tasks-per-child", "7"
        )
    wait_for(lambda: f"smoke@{HOST}" in fleet.live(), 120, "worker smoke")


def _with_info(fleet: FleetProcesses) -> list[dict[str, Any]] | None:
    nodes: list[dict[str, Any]] = _workers(fleet)["nodes"]
    return nodes if len(nodes) == 2 and all(n["info"] for n in nodes) else None


def _stats(fleet: FleetProcesses, node: str) -> dict[str, Any]:
    from scheduler.celery_client import client_app

    app = client_app(fleet.settings)
    try:
        found: dict[str, Any] = (app.control.inspect([node], timeout=2.0).stats() or {})[node]
    finally:
        app.close()
    return found


def test_run_dry_wait_reports_each_live_nodes_round_trip(fleet: FleetProcesses) -> None:
    # Given two live nodes (cpu0 and smoke) and the writer
    start_smoke_node(fleet)
    # When the smoke test runs and waits
    done = fleet.accel("run", "--dry", "--wait", "--json")
    # Then each node ran its own dry job, and its round trip to the store is reported
    assert done.returncode == 0, done.stderr + fleet.log("writer")[-1500:]
    result = json.loads(done.stdout)
    nodes = {n["node"]: n for n in result["nodes"]}
    assert set(nodes) == {f"cpu0@{HOST}", f"smoke@{HOST}"}
    for node in nodes.values():
        assert node["status"] == "done" and node["hardware"] == "cpu", node
        assert 0 < node["round_trip_s"] < 60, node
    assert result["ok"] and result["waited"] and Path(result["report_dir"], "report.json").is_file()
    # and the table says the same for a person
    text = fleet.accel("run", "--dry", "--wait")
    assert text.returncode == 0, text.stderr
    assert "2/2 nodes answered" in text.stdout and f"smoke@{HOST}" in text.stdout and " ms " in text.stdout
    # and without --wait it says where to follow the run
    sent = fleet.accel("run", "--dry")
    assert sent.returncode == 0 and "a dry job sent to each of 2 live nodes" in sent.stdout


def _slow_plan(run_id: str, n: int, sleep_s: float) -> RunPlan:
    jobs = tuple(
        JobSpec(key=job_key(run_id, f"slow{i}", "cpu", "dry"), run_id=run_id, model_type=f"slow{i}", hardware="cpu",
                kind="dry", sleep_s=sleep_s)
        for i in range(n)
    )  # fmt: skip
    return RunPlan(run_id, "cancel", time.time(), RunParams(kind="dry", n_jobs=n), jobs)


def _active(fleet: FleetProcesses) -> list[str]:
    return [job["key"] for node in _workers(fleet)["nodes"] for job in node["active"]]


def _dead_letters(fleet: FleetProcesses) -> dict[str, Any]:
    done = fleet.accel("dead-letters", "--json", "--limit", "100")
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def _forge(fleet: FleetProcesses, task: str, kwargs: dict[str, Any]) -> None:
    """``send_task`` as a broker user without the fleet key would: a bare Celery client, straight to Redis."""
    from celery import Celery

    app = Celery("attacker", broker=fleet.settings.broker_url, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"])
    try:
        app.send_task(task, kwargs=kwargs, queue=fleet.settings.results_queue)
    finally:
        app.close()


def test_forged_results_and_cancels_are_dead_lettered_and_the_run_keeps_its_real_outcome(
    fleet: FleetProcesses,
) -> None:
    # Given a running run of two slow jobs
    run_id = "forged-1"
    plan = _slow_plan(run_id, 2, sleep_s=8.0)
    dispatch(fleet.settings, plan)
    wait_for(lambda: _active(fleet), 60, "a job running")
    before = _dead_letters(fleet)["count"]
    # When a broker user sends, before the real results, a false failure of each job (unsigned, as an older
    # worker would, and signed with another key) and a cancel of the run (unsigned, and with another key)
    other = FleetKey(os.urandom(32))
    false = [
        wire.encode(JobResult.for_spec(j, status=STATUS_FAILED, started_at=time.time(), finished_at=time.time(),
                                       error_class="forged", worker_id="attacker"))
        for j in plan.jobs
    ]  # fmt: skip
    _forge(fleet, TASK_RECORD_RESULT, {"result": false[0]})
    _forge(fleet, TASK_RECORD_RESULT, other.envelope(TASK_RECORD_RESULT, "results", false))
    _forge(fleet, TASK_CANCEL_RUN, {"run_id": run_id})
    _forge(fleet, TASK_CANCEL_RUN, other.envelope(TASK_CANCEL_RUN, "run_id", run_id))
    # Then the writer dead-letters all four, saying why, while the jobs still run
    letters = wait_for(lambda: (d := _dead_letters(fleet))["count"] >= before + 4 and d, 60, "four dead letters")
    reasons = sorted(d["reason"].split(":")[0] for d in letters["letters"][:4])
    assert reasons == ["bad-signature", "bad-signature", "unsigned", "unsigned"], letters["letters"][:4]
    assert all("upgrade" in d["reason"] for d in letters["letters"][:4] if d["reason"].startswith("unsigned"))
    running = read_status(fleet.settings, run_id)
    assert running is not None and not running.phase_done and set(running.by_status) <= {"queued", "running"}
    # and the run ends with its real outcome: both jobs done, nothing failed or cancelled
    final = wait_for(lambda: (s := read_status(fleet.settings, run_id)) is not None and s.phase_done and s, 90, "run")
    assert dict(final.by_status) == {"done": 2}, final
    assert _dead_letters(fleet)["count"] == before + 4


def test_cancel_ends_a_running_run_with_its_report_and_revokes_its_pending_jobs(fleet: FleetProcesses) -> None:
    # Given a run of 8 slow jobs on two nodes, two of them running
    start_smoke_node(fleet)
    run_id = "cancel-me-1"
    dispatch(fleet.settings, _slow_plan(run_id, 8, sleep_s=12.0))
    wait_for(lambda: len(_active(fleet)) == 2, 60, "two jobs running")
    # When it is cancelled
    done = fleet.accel("cancel", run_id, "--json")
    # Then the run is over at once: every unfinished job cancelled, the report written
    assert done.returncode == 0, done.stderr + fleet.log("writer")[-1500:]
    result = json.loads(done.stdout)
    status = result["status"]
    assert status["phase_done"] and status["status"] == "complete" and not result["already_finished"]
    # (a loaded machine may finish a running job or two before the cancel lands: those stay done)
    by_status = status["by_status"]
    assert set(by_status) <= {"cancelled", "done"} and sum(by_status.values()) == 8, by_status
    assert result["cancelled"] == by_status["cancelled"] >= 4, by_status
    assert Path(status["report_dir"], "report.json").is_file()
    # and the pending jobs were revoked: once the two running ones end, no node takes another job of the run
    wait_for(lambda: not _active(fleet), 60, "the running jobs to end")
    time.sleep(3.0)
    assert not _active(fleet), "a node took a job of the cancelled run"
    # and the late results of the jobs that were running did not overwrite their cancelled rows
    late = read_status(fleet.settings, run_id)
    assert late is not None and dict(late.by_status) == by_status, late
    # and cancelling it again, or an unknown run, says so in one line
    again = fleet.accel("cancel", run_id)
    assert again.returncode == 0 and "had already finished (complete): nothing to cancel" in again.stdout
    unknown = fleet.accel("cancel", "no-such-run")
    assert unknown.returncode == 2 and unknown.stderr.startswith("accel: error: run no-such-run is not known")


def test_a_run_for_one_device_model_runs_on_the_node_of_that_model_only(fleet: FleetProcesses) -> None:
    # Given a cpu node labelled as another device model (ACCEL_DEVICE_MODEL), beside the plain cpu nodes
    node = f"labbox@{HOST}"
    env = {**fleet.env, "ACCEL_DEVICE_MODEL": "Lab Box 7"}
    fleet.procs["labbox"] = processes.start([*ACCEL, "worker", "-n", node], env=env, cwd=REPO,
                                            log=fleet.logs / "labbox.log")  # fmt: skip
    wait_for(lambda: node in fleet.live(), 120, "worker labbox")
    seed_catalog_index(fleet.logs)
    # When a run targets that model by a prefix of its slug
    done = fleet.accel("run", "--phase", "labbox", "--models", "bert", "--hardware", "cpu:lab-box", "--wait",
                       "--json", cwd=fleet.logs)  # fmt: skip
    # Then it completes, its one job run by the labelled node (which consumes hw.cpu.lab-box-7), counted under
    # its target (what a stall line names the queue of)
    assert done.returncode == 0, done.stderr + fleet.log("labbox")
    snap = read_status(fleet.settings, json.loads(done.stdout)["run_id"])
    assert snap is not None and snap.phase_done and snap.by_hardware["cpu.lab-box-7"].get("done") == 1, snap
    assert _stats(fleet, node)["total"].get("accel.run_job") == 1
    # and a device model no live node has is one line listing the known ones, exit 2
    unknown = fleet.accel("run", "--phase", "x", "--models", "bert", "--hardware", "cpu:h100", cwd=fleet.logs)
    assert unknown.returncode == 2 and "cpu:lab-box-7" in unknown.stderr and len(unknown.stderr.splitlines()) == 1
    fleet.stop("labbox")


# -- last: the writer stops -------------------------------------------------------------------------------


def test_run_warns_in_one_line_when_no_writer_is_alive(fleet: FleetProcesses) -> None:
    # Given a writer alive, a run says nothing about it
    seed_catalog_index(fleet.logs)
    alive = fleet.accel("run", "--phase", "warn", "--models", "bert", "--hardware", "cpu", cwd=fleet.logs)
    assert alive.returncode == 0 and NO_WRITER_WARNING not in alive.stderr, alive.stderr
    # When the writer stops
    fleet.stop("writer")
    wait_for(lambda: "writer: none alive" in fleet.accel("workers").stdout, 60, "the writer's heartbeat to end")
    # Then `accel run` still sends the run, and warns once that nothing records it yet
    done = fleet.accel("run", "--phase", "warn", "--models", "bert", "--hardware", "cpu", cwd=fleet.logs)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count(NO_WRITER_WARNING) == 1, done.stderr
    assert "jobs sent to the fleet" in done.stdout


def test_forged_node_answers_are_left_out_of_workers_and_of_the_hardware_a_plan_sees(fleet: FleetProcesses) -> None:
    # Given two fake nodes of a broker user, no fleet code, each claiming a CUDA H100: one answers the bare report
    # nodes answered before answers were signed, one signs its report with a key of its own
    forged = {f"plain@{HOST}": "", f"signed@{HOST}": "ab" * 32}
    procs = [_start_forged(fleet, name, key) for name, key in forged.items()]
    try:
        wait_for(lambda: set(forged) <= set(fleet.live()), 60, "the forged nodes")
        # When `accel workers` asks the fleet
        listed = _workers(fleet)
        text = fleet.accel("workers", "--timeout", "2")
        # and a plan asks which hardware is live
        planned = fleet.accel("plan", "--models", "bert", "--hardware", "auto", "--json")
    finally:
        processes.stop_all(procs)
    # Then the real nodes are listed, the forged ones only named as unverified
    names = [n["node"] for n in listed["nodes"]]
    assert f"cpu0@{HOST}" in names and not set(forged) & set(names), names
    assert listed["unverified"] == sorted(forged) and listed["verified"] is True
    assert text.returncode == 0 and "without the fleet's signature" in text.stdout and f"plain@{HOST}" in text.stdout
    # and the plan sees cpu only: no job would be sent to the queues the forged nodes claim
    assert planned.returncode == 0, planned.stderr
    assert set(json.loads(planned.stdout)["by_hardware"]) == {"cpu"}, planned.stdout


def _start_forged(fleet: FleetProcesses, name: str, key_hex: str) -> subprocess.Popen[bytes]:
    env = {**fleet.env, "FORGED_BROKER": fleet.settings.broker_url or "", "FORGED_KEY_HEX": key_hex}
    log = fleet.logs / f"{name.split('@')[0]}.log"
    return processes.start([sys.executable, "-m", "tests.support.forged_node", name], env=env, cwd=REPO, log=log)

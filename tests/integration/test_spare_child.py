"""The fork server's spare child: forked ahead of its job, it must run that job exactly as a child forked
for it would, and die with the server.

Real servers, real forks, real kills. Spares are kept in fork mode with cgroup boxes only (see
:class:`accelerate_core.runner.supervisor.Supervisor`), so these tests need a writable cgroup.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from accelerate_core.constants import ERR_CRASHED
from accelerate_core.runner import ForkServer
from tests.support.cgroups import cgroups_here
from tests.support.processes import gone, wait_for

ENTRY = "tests.support.entries:dispatch"
CAP_MB = 2000


pytestmark = pytest.mark.skipif(not cgroups_here(), reason="no writable cgroup: the server keeps no spare")


def spare_of(fs: ForkServer) -> int:
    """The pid of the server's waiting spare (it is forked once the server has nothing more urgent to do)."""

    def ask() -> int | None:
        assert fs.ping()
        return fs.last_pong.get("spare")

    return int(wait_for(ask, 10, "the server's spare child", every_s=0.05))


@pytest.fixture()
def server() -> Iterator[ForkServer]:
    with ForkServer(ENTRY, preload=(), max_children=1, box="cgroup") as fs:
        yield fs


def test_a_job_run_by_a_spare_sees_its_own_env_limits_and_box_not_another_jobs(server):
    first_spare = spare_of(server)
    first = server.run("first", {"do": "state"}, env={"OMP_NUM_THREADS": "3", "ACCEL_WORKER_NODE": "node-a"},
                       time_limit_s=20, mem_cap_mb=CAP_MB, max_file_mb=3)  # fmt: skip
    second_spare = spare_of(server)
    second = server.run("second", {"do": "state"}, env={"MKL_NUM_THREADS": "5"}, time_limit_s=20,
                        mem_cap_mb=CAP_MB // 2, max_file_mb=5)  # fmt: skip
    # a job too large for a spare's pipe gets a child forked for it: the reference a spare must equal
    cold = server.run("cold", {"do": "state", "pad": "x" * 100_000}, time_limit_s=20, mem_cap_mb=CAP_MB)

    assert first.ok and second.ok and cold.ok, (first, second, cold)
    a, b, c = first.value, second.value, cold.value
    assert a is not None and b is not None and c is not None
    assert (a["pid"], b["pid"]) == (first_spare, second_spare) and c["pid"] != spare_of(server)
    assert a["environ"]["ACCEL_WORKER_NODE"] == "node-a" and a["environ"]["OMP_NUM_THREADS"] == "3"
    assert "ACCEL_WORKER_NODE" not in b["environ"] and "OMP_NUM_THREADS" not in b["environ"]
    assert b["environ"]["MKL_NUM_THREADS"] == "5" and "MKL_NUM_THREADS" not in c["environ"]
    assert (a["fsize"], b["fsize"]) == (3 * 1024 * 1024, 5 * 1024 * 1024)
    assert b["data"] < a["data"]  # its own memory cap (half the first's), relative to the same server
    job_cgroups = {v["cgroup"] for v in (a, b, c)}
    assert len(job_cgroups) == 3 and all("accel-runner-" in cg for cg in job_cgroups)
    for v in (a, b):  # detached from the server exactly like a child forked for its job
        assert v["ppid"] == server.pid and v["pgid"] == v["pid"] and v["sigterm_default"]
        assert (v["cwd"], v["blocked"], len(v["fds"])) == (c["cwd"], c["blocked"], len(c["fds"]))


def test_killing_the_server_with_a_spare_waiting_and_a_job_running_leaves_no_process(server, tmp_path: Path):
    server.submit("running", {"do": "sleep", "pid_file": str(tmp_path / "p")}, time_limit_s=60, mem_cap_mb=CAP_MB)
    wait_for(lambda: (tmp_path / "p").exists() and len((tmp_path / "p").read_text().split()) == 2, 20, "the job")
    child, grandchild = map(int, (tmp_path / "p").read_text().split())
    spare, first_server = spare_of(server), server.pid or 0

    psutil.Process(first_server).kill()
    outcomes = server.poll(timeout=15)
    after = server.run("after", {"do": "echo"}, time_limit_s=20, mem_cap_mb=CAP_MB)

    assert [(o.job_id, o.error_class) for o in outcomes] == [("running", ERR_CRASHED)]  # once, not lost
    assert gone(spare) and gone(child) and gone(grandchild)  # the spare died with its server: no orphan
    assert after.ok and server.restarts == 1 and spare_of(server) != spare


def test_a_spare_killed_while_idle_costs_no_job_and_is_replaced(server):
    spare = spare_of(server)

    os.kill(spare, signal.SIGKILL)
    assert gone(spare)
    time.sleep(0.2)  # the server reaps it
    outcome = server.run("after-spare-died", {"do": "echo"}, time_limit_s=20, mem_cap_mb=CAP_MB)
    extra = server.poll(timeout=0.5)

    assert outcome.ok and outcome.value is not None and outcome.value["pid"] != spare
    assert extra == [] and server.restarts == 0
    assert spare_of(server) not in (spare, outcome.pid)


def test_a_spare_killed_while_running_its_job_reports_that_job_once_as_crashed(server, tmp_path: Path):
    spare = spare_of(server)
    server.submit("victim", {"do": "sleep", "pid_file": str(tmp_path / "p")}, time_limit_s=60, mem_cap_mb=CAP_MB)
    wait_for(lambda: (tmp_path / "p").exists() and len((tmp_path / "p").read_text().split()) == 2, 20, "the job")
    child, grandchild = map(int, (tmp_path / "p").read_text().split())

    os.kill(child, signal.SIGKILL)
    outcomes = server.poll(timeout=15)

    assert child == spare
    assert [(o.job_id, o.error_class, o.exit_signal) for o in outcomes] == [("victim", ERR_CRASHED, 9)]
    assert gone(grandchild) and server.poll(timeout=0.5) == []
    assert server.run("next", {"do": "echo"}, time_limit_s=20, mem_cap_mb=CAP_MB).ok


def test_a_fresh_server_forks_a_spare_before_any_message_so_its_first_job_runs_in_it():
    with ForkServer(ENTRY, preload=(), box="cgroup") as fs:
        fs.ensure_ready()
        # no ping, no job: the server forks its spare once it has said it is ready
        (waiting,) = wait_for(lambda: psutil.Process(fs.pid or 0).children(), 10, "a spare before any job")

        first = fs.run("first", {"do": "echo"}, time_limit_s=20, mem_cap_mb=CAP_MB)

        assert first.ok and first.pid == waiting.pid

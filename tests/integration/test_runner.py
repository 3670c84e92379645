"""The fork server against misbehaving jobs: real forked children, real signals, real memory.

One server (preloading torch) serves most tests in turn; the tests that kill or restart a server
start their own. The last test checks the shared server is still the same healthy process.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from accelerate_core.constants import ERR_CRASHED, ERR_FORWARD, ERR_MISSING_DEPENDENCY, ERR_OOM, ERR_TIMEOUT
from accelerate_core.errors import RunnerError
from accelerate_core.runner import ForkServer
from accelerate_core.runner.supervisor import KILL_GRACE_S
from tests.support.processes import children_but_the_spare, gone

ENTRY = "tests.support.entries:dispatch"
CAP_MB = 2000


@pytest.fixture(scope="module")
def server() -> Iterator[ForkServer]:
    with ForkServer(ENTRY, preload=("torch",), max_children=3) as fs:
        yield fs


@pytest.fixture(scope="module")
def server_pid(server: ForkServer) -> int:
    assert server.pid is not None
    return server.pid


def test_a_normal_job_returns_its_value_from_a_child_in_its_own_process_group(server, server_pid):
    outcome = server.run("echo", {"do": "echo", "x": 1}, time_limit_s=20, mem_cap_mb=CAP_MB)

    assert outcome.ok, outcome
    assert outcome.value is not None and outcome.value["echo"] == {"do": "echo", "x": 1}
    assert outcome.value["ppid"] == server_pid
    assert outcome.value["pgid"] == outcome.value["pid"] == outcome.pid
    assert outcome.peak_rss_mb and outcome.peak_rss_mb > 10
    assert server.server_info["mode"] == "fork"
    # The entry's own time comes back too: the rest of the child's life is the runner's fixed cost
    assert outcome.entry_s is not None and 0 < outcome.entry_s < outcome.duration_s


def test_a_job_past_its_time_limit_is_a_timeout_and_its_process_group_is_gone(server, tmp_path: Path):
    pid_file = tmp_path / "pids"

    outcome = server.run("sleeper", {"do": "sleep", "pid_file": str(pid_file)}, time_limit_s=1.0, mem_cap_mb=CAP_MB)

    assert (outcome.ok, outcome.error_class, outcome.error_type) == (False, ERR_TIMEOUT, "Timeout")
    assert "1 s" in (outcome.error_message or "")
    assert 1.0 <= outcome.duration_s < 1.0 + KILL_GRACE_S
    child, grandchild = map(int, pid_file.read_text().split())
    assert child == outcome.pid
    assert gone(child) and gone(grandchild)


def test_a_job_ignoring_sigterm_is_killed_after_the_grace_period(server, tmp_path: Path):
    payload = {"do": "sleep", "pid_file": str(tmp_path / "pids"), "ignore_term": True}

    outcome = server.run("stubborn", payload, time_limit_s=0.5, mem_cap_mb=CAP_MB)

    assert outcome.error_class == ERR_TIMEOUT
    assert outcome.exit_signal == 9
    assert outcome.duration_s >= 0.5 + KILL_GRACE_S - 0.1
    assert gone(outcome.pid or 0)


def test_an_exception_is_reported_with_its_class_message_and_traceback(server):
    outcome = server.run("boom", {"do": "boom"}, time_limit_s=20, mem_cap_mb=CAP_MB)

    assert (outcome.ok, outcome.error_class) == (False, ERR_FORWARD)
    assert (outcome.error_type, outcome.error_message) == ("ValueError", "boom")
    assert outcome.traceback and "def boom" not in outcome.traceback and "ValueError: boom" in outcome.traceback


def test_a_missing_module_is_a_missing_dependency(server):
    outcome = server.run("missing", {"do": "missing"}, time_limit_s=20, mem_cap_mb=CAP_MB)

    assert (outcome.error_class, outcome.error_type) == (ERR_MISSING_DEPENDENCY, "ModuleNotFoundError")
    assert "accel_no_such_module" in (outcome.error_message or "")


def test_one_allocation_past_the_cap_fails_in_the_child_as_out_of_memory(server):
    outcome = server.run("alloc-once", {"do": "allocate", "mb": 3000}, time_limit_s=20, mem_cap_mb=600)

    assert (outcome.error_class, outcome.error_type) == (ERR_OOM, "MemoryError")
    assert outcome.peak_rss_mb is not None and outcome.peak_rss_mb < 600


def test_growing_past_the_cap_is_killed_by_the_rss_watch_as_out_of_memory(server):
    payload = {"do": "allocate", "mb": 3000, "chunk_mb": 10, "pause_s": 0.05}  # 200 MB/s: the watch, not the rlimit

    outcome = server.run("alloc-slow", payload, time_limit_s=30, mem_cap_mb=500)

    assert (outcome.error_class, outcome.error_type) == (ERR_OOM, "MemoryCapExceeded")
    assert "500 MiB" in (outcome.error_message or "")
    assert outcome.peak_rss_mb is not None and 500 < outcome.peak_rss_mb < 800
    assert gone(outcome.pid or 0)


def test_a_segfault_is_crashed_with_its_signal(server):
    outcome = server.run("segv", {"do": "segfault"}, time_limit_s=20, mem_cap_mb=CAP_MB)

    assert (outcome.error_class, outcome.exit_signal) == (ERR_CRASHED, 11)
    assert "SIGSEGV" in (outcome.error_message or "")


def test_the_job_env_pins_devices_and_threads_in_the_child_only(server):
    env = {"CUDA_VISIBLE_DEVICES": "", "HIP_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}

    pinned = server.run("env1", {"do": "env"}, env=env, time_limit_s=20, mem_cap_mb=CAP_MB)
    other = server.run("env2", {"do": "env"}, env={"OMP_NUM_THREADS": "2"}, time_limit_s=20, mem_cap_mb=CAP_MB)

    assert pinned.ok and other.ok, (pinned, other)
    assert pinned.value == {"env": env, "threads": 1}
    assert other.value is not None and other.value["threads"] == 2
    assert other.value["env"]["CUDA_VISIBLE_DEVICES"] == os.environ.get("CUDA_VISIBLE_DEVICES")


def test_children_run_concurrently_up_to_max_children(server):
    for i in range(3):
        server.submit(f"nap{i}", {"do": "nap", "s": 1.0}, time_limit_s=20, mem_cap_mb=CAP_MB)
    started = time.monotonic()
    outcomes = []
    while len(outcomes) < 3:
        outcomes += server.poll(timeout=10)

    assert time.monotonic() - started < 2.9  # three 1 s naps side by side (one after another: 3 s or more)
    spans = sorted((o.value["start"], o.value["end"]) for o in outcomes if o.value)
    assert len(spans) == 3 and spans[2][0] < spans[0][1]  # the last one started before the first ended
    assert len({o.pid for o in outcomes}) == 3


def test_concurrent_failures_are_each_classified_and_a_queued_job_still_runs(server):
    jobs = {
        "mix-timeout": ({"do": "sleep"}, 1.0, CAP_MB),
        "mix-oom": ({"do": "allocate", "mb": 3000, "chunk_mb": 10, "pause_s": 0.05}, 30, 400),
        "mix-segv": ({"do": "segfault"}, 20, CAP_MB),
        "mix-ok": ({"do": "echo"}, 20, CAP_MB),  # queued behind the first three (max_children=3)
    }
    for job_id, (payload, limit, cap) in jobs.items():
        server.submit(job_id, payload, time_limit_s=limit, mem_cap_mb=cap)

    outcomes = {}
    while len(outcomes) < len(jobs):
        outcomes.update((o.job_id, o) for o in server.poll(timeout=30))

    assert outcomes["mix-timeout"].error_class == ERR_TIMEOUT
    assert outcomes["mix-oom"].error_class == ERR_OOM
    assert outcomes["mix-segv"].error_class == ERR_CRASHED and outcomes["mix-segv"].exit_signal == 11
    assert outcomes["mix-ok"].ok


def test_poll_blocks_without_spinning_and_returns_nothing_when_idle(server):
    assert server.poll(timeout=5) == []  # nothing in flight: returns at once
    server.submit("long-nap", {"do": "nap", "s": 1.5}, time_limit_s=20, mem_cap_mb=CAP_MB)
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)

    first = server.poll(timeout=0.8)

    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    assert first == []
    assert (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime) < 0.1
    assert [o.job_id for o in server.poll(timeout=10)] == ["long-nap"]


def test_cancel_kills_a_running_job_and_still_reports_it(server, tmp_path: Path):
    server.submit("to-cancel", {"do": "sleep", "pid_file": str(tmp_path / "p")}, time_limit_s=60, mem_cap_mb=CAP_MB)
    while not (tmp_path / "p").exists():
        time.sleep(0.05)

    server.cancel("to-cancel")
    (outcome,) = server.poll(timeout=10)

    assert (outcome.job_id, outcome.error_class, outcome.error_type) == ("to-cancel", ERR_CRASHED, "Cancelled")
    assert all(gone(int(p)) for p in (tmp_path / "p").read_text().split())


def test_output_and_large_results_do_not_corrupt_the_protocol(server):
    noisy = server.run("noisy", {"do": "noisy"}, time_limit_s=20, mem_cap_mb=CAP_MB)
    big = server.run("big", {"do": "big", "size": 3_000_000}, time_limit_s=20, mem_cap_mb=CAP_MB)

    assert noisy.ok and noisy.value == {"printed": True}
    assert big.ok and big.value is not None and len(big.value["blob"]) == 3_000_000


def test_a_duplicate_job_id_in_flight_is_refused(server):
    server.submit("dup", {"do": "nap", "s": 0.2}, time_limit_s=20, mem_cap_mb=CAP_MB)
    with pytest.raises(RunnerError, match="already in flight"):
        server.submit("dup", {"do": "echo"}, time_limit_s=20, mem_cap_mb=CAP_MB)
    assert [o.ok for o in server.poll(timeout=10)] == [True]


def test_an_interrupted_run_kills_and_abandons_its_job_so_the_same_id_can_run_again(server, tmp_path: Path):
    class Interrupted(Exception):
        """Stands in for Celery's SoftTimeLimitExceeded, raised by a signal handler mid-wait."""

    def interrupt(*_):
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 1.5)
    try:
        with pytest.raises(Interrupted):
            server.run("same-key", {"do": "sleep", "pid_file": str(tmp_path / "p")}, time_limit_s=60, mem_cap_mb=CAP_MB)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    child, grandchild = _wait_for_pids(tmp_path / "p")

    again = server.run("same-key", {"do": "echo"}, time_limit_s=20, mem_cap_mb=CAP_MB)
    server.submit("after-abandon", {"do": "echo"}, time_limit_s=20, mem_cap_mb=CAP_MB)
    later = server.poll(timeout=10)

    assert again.ok and again.value is not None and again.value["echo"] == {"do": "echo"}
    assert [o.job_id for o in later] == ["after-abandon"]  # the abandoned outcome never surfaces
    assert gone(child) and gone(grandchild)


def test_the_shared_server_survived_every_job_above(server, server_pid):
    outcome = server.run("still-alive", {"do": "echo"}, time_limit_s=20, mem_cap_mb=CAP_MB)

    assert outcome.ok
    assert server.pid == server_pid and server.restarts == 0
    assert server.ping()
    assert children_but_the_spare(server) == []  # every job's child reaped, no zombie left


def test_a_dead_server_reports_in_flight_jobs_as_crashed_and_restarts_on_the_next_call(tmp_path: Path):
    with ForkServer(ENTRY, preload=(), max_children=1) as fs:
        first_pid = fs.pid
        fs.submit("victim", {"do": "sleep", "pid_file": str(tmp_path / "p")}, time_limit_s=60, mem_cap_mb=CAP_MB)
        while not (tmp_path / "p").exists():
            time.sleep(0.05)
        child, grandchild = map(int, (tmp_path / "p").read_text().split())

        psutil.Process(first_pid).kill()
        (outcome,) = fs.poll(timeout=10)
        after = fs.run("next", {"do": "echo"}, time_limit_s=20, mem_cap_mb=CAP_MB)

        assert (outcome.job_id, outcome.error_class) == ("victim", ERR_CRASHED)
        assert "fork server died" in (outcome.error_message or "")
        assert gone(child) and gone(grandchild)
        assert after.ok and fs.pid not in (None, first_pid) and fs.restarts == 1


def test_a_submit_after_the_server_died_first_reports_the_lost_jobs_as_crashed(tmp_path: Path):
    with ForkServer(ENTRY, preload=(), max_children=1) as fs:
        fs.submit("lost", {"do": "sleep", "pid_file": str(tmp_path / "p")}, time_limit_s=60, mem_cap_mb=CAP_MB)
        child, grandchild = _wait_for_pids(tmp_path / "p")
        psutil.Process(fs.pid or 0).kill()
        time.sleep(0.2)

        fs.submit("fresh", {"do": "echo"}, time_limit_s=20, mem_cap_mb=CAP_MB)  # no poll in between
        outcomes = {o.job_id: o for o in _poll_all(fs, 2)}

        assert outcomes["lost"].error_class == ERR_CRASHED and outcomes["fresh"].ok
        assert gone(child) and gone(grandchild) and fs.restarts == 1


def _poll_all(fs: ForkServer, n: int) -> list:
    got: list = []
    deadline = time.monotonic() + 60
    while len(got) < n and time.monotonic() < deadline:
        got += fs.poll(timeout=5)
    return got


def test_spawn_mode_runs_each_job_in_a_fresh_interpreter(tmp_path: Path):
    with ForkServer(ENTRY, preload=(), mode="spawn") as fs:
        ok = fs.run("spawned", {"do": "echo"}, env={"OMP_NUM_THREADS": "1"}, time_limit_s=30, mem_cap_mb=CAP_MB)
        boom = fs.run("spawned-boom", {"do": "boom"}, time_limit_s=30, mem_cap_mb=CAP_MB)
        slow = fs.run("spawned-sleep", {"do": "sleep"}, time_limit_s=1.5, mem_cap_mb=CAP_MB)

        assert fs.server_info["mode"] == "spawn"
        assert ok.ok and ok.value is not None and ok.value["ppid"] == fs.pid and ok.value["pgid"] == ok.value["pid"]
        assert (boom.error_class, boom.error_type, boom.error_message) == (ERR_FORWARD, "ValueError", "boom")
        assert slow.error_class == ERR_TIMEOUT and gone(slow.pid or 0)


def test_an_entry_that_does_not_exist_fails_start_up_with_one_line():
    fs = ForkServer("tests.support.entries:no_such_function", preload=())
    try:
        with pytest.raises(RunnerError, match=r"failed to start.*no_such_function"):
            fs.ensure_ready(timeout=60)
    finally:
        fs.close()


CLIENT_SCRIPT = """
import sys, time
from accelerate_core.runner import ForkServer
fs = ForkServer("tests.support.entries:dispatch", preload=())
fs.ensure_ready()
fs.submit("orphan", {"do": "sleep", "pid_file": sys.argv[1]}, time_limit_s=120, mem_cap_mb=2000)
print(fs.pid, flush=True)
time.sleep(120)
"""


def _wait_for_pids(path: Path) -> list[int]:
    deadline = time.monotonic() + 30
    while not path.exists() or len(path.read_text().split()) < 2:
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)
    return [int(p) for p in path.read_text().split()]


def test_a_killed_client_takes_its_server_and_every_job_process_with_it(tmp_path: Path):
    pid_file = tmp_path / "pids"
    repo = Path(__file__).resolve().parents[2]
    client = subprocess.Popen([sys.executable, "-c", CLIENT_SCRIPT, str(pid_file)], stdout=subprocess.PIPE,
                              text=True, cwd=repo)  # fmt: skip
    try:
        assert client.stdout is not None
        server_pid = int(client.stdout.readline())
        child, grandchild = _wait_for_pids(pid_file)

        client.kill()  # no close(), no finalizer: the server sees its stdin close
        client.wait(timeout=10)

        assert gone(server_pid) and gone(child) and gone(grandchild)
    finally:
        client.kill()
        client.wait(timeout=10)
        if client.stdout is not None:
            client.stdout.close()


def test_sigterm_to_the_server_kills_the_jobs_process_groups_before_it_exits(tmp_path: Path):
    with ForkServer(ENTRY, preload=()) as fs:
        fs.submit("term", {"do": "sleep", "pid_file": str(tmp_path / "p")}, time_limit_s=60, mem_cap_mb=CAP_MB)
        child, grandchild = _wait_for_pids(tmp_path / "p")

        os.kill(fs.pid or 0, signal.SIGTERM)
        (outcome,) = fs.poll(timeout=15)

        assert (outcome.error_class, outcome.error_type) == (ERR_CRASHED, "Killed")
        assert "shut down" in (outcome.error_message or "")
        assert gone(child) and gone(grandchild)


def test_a_frozen_server_is_detected_killed_and_replaced(tmp_path: Path):
    with ForkServer(ENTRY, preload=(), watchdog_s=0.5) as fs:
        frozen = fs.pid or 0
        os.kill(frozen, signal.SIGSTOP)  # alive, but answers nothing any more

        started = time.monotonic()
        outcome = fs.run("never-starts", {"do": "echo"}, time_limit_s=5, mem_cap_mb=CAP_MB)
        waited = time.monotonic() - started
        after = fs.run("after-freeze", {"do": "echo"}, time_limit_s=5, mem_cap_mb=CAP_MB)

        assert (outcome.error_class, outcome.error_type) == (ERR_CRASHED, "Crashed")
        assert "stopped answering" in (outcome.error_message or "")
        assert waited < 5
        assert gone(frozen) and after.ok and fs.restarts == 1


def test_a_slow_but_alive_server_answers_the_watchdog_ping_and_keeps_its_jobs():
    with ForkServer(ENTRY, preload=(), watchdog_s=2.0) as fs:
        paused = fs.pid or 0
        os.kill(paused, signal.SIGSTOP)  # a machine so busy the server does not run for a while...
        resume = threading.Timer(4.5, os.kill, (paused, signal.SIGCONT))  # ...then it does, before the ping expires
        resume.start()
        try:
            outcome = fs.run("slow-start", {"do": "echo"}, time_limit_s=20, mem_cap_mb=CAP_MB)
        finally:
            resume.join()

        assert outcome.ok, outcome
        assert fs.pid == paused and fs.restarts == 0

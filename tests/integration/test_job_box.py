"""The job box against hostile jobs: real fork servers, real forks, real files, real memory.

Each attack runs in both box modes: ``cgroup`` (this machine's writable cgroups; skipped with the
reason where there are none) and ``sweep`` (the process-table fallback). Every one must end as a
classified outcome with no process of the job left, and the server must run the next job.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from accelerate_core.constants import ERR_CRASHED, ERR_FILE_SIZE, ERR_OOM, ERR_PROCESS_LIMIT, ERR_TIMEOUT
from accelerate_core.runner import ForkServer
from tests.support.cgroups import cgroups_here
from tests.support.processes import children_but_the_spare, gone

ENTRY = "tests.support.entries:dispatch"
CAP_MB = 2000
SECRET_PASSWORD = "s3cret-broker-pw"
SECRET_FLOWER = "s3cret-flower-pw"


CGROUPS = cgroups_here()
MODES = [
    "sweep",
    pytest.param("cgroup", marks=pytest.mark.skipif(not CGROUPS, reason="no writable cgroup on this machine")),
]


def pids_in(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.fixture(scope="module", params=MODES)
def server(request: pytest.FixtureRequest) -> Iterator[ForkServer]:
    with ForkServer(ENTRY, preload=(), max_children=2, box=request.param) as fs:
        assert fs.server_info["box"]["mode"] == request.param
        yield fs


def assert_healthy(fs: ForkServer) -> None:
    """The server runs the next job, answers, and holds no child or zombie."""
    after = fs.run("next", {"do": "echo"}, time_limit_s=20, mem_cap_mb=CAP_MB)
    assert after.ok, after
    assert children_but_the_spare(fs) == []


def test_auto_picks_cgroups_where_this_machine_has_writable_ones():
    with ForkServer(ENTRY, preload=()) as fs:
        assert fs.server_info["box"]["mode"] == ("cgroup" if CGROUPS else "sweep")


def test_a_setsid_and_a_double_forked_daemon_die_with_their_job(server, tmp_path: Path):
    pid_file = tmp_path / "pids"

    outcome = server.run("daemon", {"do": "daemon", "pid_file": str(pid_file)}, time_limit_s=20, mem_cap_mb=CAP_MB)

    assert outcome.ok, outcome
    daemons = pids_in(pid_file)
    assert len(daemons) == 2
    assert all(gone(pid) for pid in daemons)
    assert_healthy(server)


def test_a_fork_bomb_is_a_process_limit_and_leaves_nothing(server, tmp_path: Path):
    pid_file = tmp_path / "pids"
    started = time.monotonic()

    outcome = server.run(
        "bomb", {"do": "fork_bomb", "n": 10_000, "pid_file": str(pid_file)}, time_limit_s=30, mem_cap_mb=CAP_MB,
        max_tasks=64,
    )  # fmt: skip

    assert (outcome.error_class, outcome.error_type) == (ERR_PROCESS_LIMIT, "ProcessLimit"), outcome
    assert "limit of 64 tasks" in (outcome.error_message or "")
    assert time.monotonic() - started < 10
    forked = pids_in(pid_file)
    assert len(forked) >= 10
    assert all(gone(pid) for pid in [outcome.pid or 0, *forked])
    assert_healthy(server)


def test_a_disk_filler_stops_at_the_file_size_limit(server, tmp_path: Path):
    target = tmp_path / "fill"

    outcome = server.run(
        "fill", {"do": "fill_disk", "path": str(target), "mb": 64}, time_limit_s=30, mem_cap_mb=CAP_MB, max_file_mb=8
    )

    assert (outcome.error_class, outcome.error_type) == (ERR_FILE_SIZE, "OSError"), outcome
    assert "File too large" in (outcome.error_message or "")
    assert target.stat().st_size == 8 * 1024 * 1024  # the Python writer
    assert (tmp_path / "fill.sh").stat().st_size == 8 * 1024 * 1024  # the shell pipeline it started
    assert (tmp_path / "fill.rc").read_text() != "0"
    assert gone(outcome.pid or 0)
    assert_healthy(server)


def test_a_memory_hog_spread_over_processes_is_out_of_memory(server, tmp_path: Path):
    pid_file = tmp_path / "pids"
    payload = {"do": "hog_tree", "n": 4, "mb": 120, "pid_file": str(pid_file)}

    outcome = server.run("hog", payload, time_limit_s=30, mem_cap_mb=300)

    assert (outcome.error_class, outcome.error_type) == (ERR_OOM, "MemoryCapExceeded"), outcome
    assert "exceeded the memory cap of 300 MiB" in (outcome.error_message or "")
    hogs = pids_in(pid_file)
    assert len(hogs) >= 2  # no single process was over the cap: only their sum
    assert all(gone(pid) for pid in [outcome.pid or 0, *hogs])
    assert_healthy(server)


@pytest.mark.parametrize("mode", ["fork", "spawn"])
def test_no_secret_of_the_caller_reaches_a_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str):
    token = secrets.token_hex(16)
    monkeypatch.setenv("ACCEL_BROKER_URL", f"redis://:{SECRET_PASSWORD}@10.0.0.5:6379/0")
    monkeypatch.setenv("ACCEL_FLOWER_PASSWORD", SECRET_FLOWER)
    monkeypatch.setenv("SECRET_TOKEN", token)
    monkeypatch.setenv("HF_TOKEN", token + "hf")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    with ForkServer(ENTRY, preload=(), mode=mode) as fs:
        outcome = fs.run("env", {"do": "environ"}, env={"OMP_NUM_THREADS": "1"}, time_limit_s=60, mem_cap_mb=CAP_MB)
        server_environ = Path(f"/proc/{fs.pid}/environ").read_bytes()

    assert outcome.ok, outcome
    # The server's heap asks glibc for huge pages (cheaper forks); the tunable is not in a job's environment
    assert b"GLIBC_TUNABLES=glibc.malloc.hugetlb=1" in server_environ
    assert "GLIBC_TUNABLES" not in outcome.value["environ"] and "GLIBC_TUNABLES" not in outcome.value["grandchild"]
    assert outcome.value is not None
    seen = repr(outcome.value)
    for secret in (SECRET_PASSWORD, SECRET_FLOWER, token, "ACCEL_BROKER_URL", "ACCEL_FLOWER_PASSWORD", "SECRET_TOKEN"):
        assert secret not in seen
    environ = outcome.value["environ"]
    assert environ["OMP_NUM_THREADS"] == "1" and environ["TRANSFORMERS_OFFLINE"] == "1"
    assert environ["PATH"] == os.environ["PATH"]


def test_a_job_past_its_time_limit_takes_its_setsid_descendants_with_it(server, tmp_path: Path):
    pid_file = tmp_path / "pids"
    payload = {"do": "hog_tree", "n": 2, "mb": 0, "pid_file": str(pid_file)}

    outcome = server.run("slow-tree", payload, time_limit_s=1.0, mem_cap_mb=CAP_MB)

    assert outcome.error_class == ERR_TIMEOUT, outcome
    sleepers = pids_in(pid_file)
    assert len(sleepers) == 2
    assert all(gone(pid) for pid in [outcome.pid or 0, *sleepers])
    assert_healthy(server)


def test_a_spawned_child_is_boxed_too(tmp_path: Path):
    pid_file = tmp_path / "pids"
    with ForkServer(ENTRY, preload=(), mode="spawn") as fs:
        outcome = fs.run("spawned-daemon", {"do": "daemon", "pid_file": str(pid_file)}, time_limit_s=60,
                         mem_cap_mb=CAP_MB)  # fmt: skip
        fill = fs.run("spawned-fill", {"do": "fill_disk", "path": str(tmp_path / "f"), "mb": 16}, time_limit_s=60,
                      mem_cap_mb=CAP_MB, max_file_mb=2)  # fmt: skip

        assert outcome.ok, outcome
        assert all(gone(pid) for pid in pids_in(pid_file))
        assert fill.error_class == ERR_FILE_SIZE and (tmp_path / "f").stat().st_size == 2 * 1024 * 1024
        assert psutil.Process(fs.pid or 0).children() == []


@pytest.mark.skipif(not CGROUPS, reason="no writable cgroup on this machine")
def test_when_the_server_itself_is_killed_its_client_kills_the_jobs_setsid_descendants(tmp_path: Path):
    pid_file = tmp_path / "pids"
    with ForkServer(ENTRY, preload=(), box="cgroup") as fs:
        fs.submit("orphaned", {"do": "hog_tree", "n": 1, "mb": 0, "pid_file": str(pid_file)}, time_limit_s=60,
                  mem_cap_mb=CAP_MB)  # fmt: skip
        deadline = time.monotonic() + 30
        while not pids_in(pid_file) and time.monotonic() < deadline:
            time.sleep(0.05)
        (sleeper,) = pids_in(pid_file)
        cgroup = Path(fs.server_info["box"]["cgroup"])

        psutil.Process(fs.pid or 0).kill()  # no clean-up by the server at all
        (outcome,) = fs.poll(timeout=15)

        assert outcome.error_class == ERR_CRASHED
        assert gone(sleeper)  # it left the process group: only its cgroup still knew it
        assert not cgroup.exists()

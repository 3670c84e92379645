"""The broker's ACL users on a real redis-server: each role does its job, and is refused what it must not do.

The ACL file is written by ``python -m accelerate_core.acl`` from per-role passwords, Redis starts with
``--aclfile``, and the writer, a prefork worker, ``accel run`` and Flower each log in as their own user.
A run completes through them with no command of theirs denied (``ACL LOG`` holds only the start-up check's
``CONFIG GET``, which it reads on without); then each role is refused ``CONFIG SET``, ``FLUSHALL``, ``SAVE``,
``CLIENT KILL``, ``SHUTDOWN``, ``KEYS`` and ``ACL SETUSER``, and Flower cannot put or take a queue's messages.
A missing or placeholder role password is one line and exit 2; the file is 0600 and holds no password.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from accelerate_core.acl import ROLES, role_env
from accelerate_core.config import Settings
from scheduler.planning_inputs import template_lookup
from tests.support import http
from tests.support.cli import seed_catalog_index
from tests.support.fleet import FleetProcesses
from tests.support.fleet_key import FLEET_KEY_HEX
from tests.support.processes import wait_for
from tests.support.redis_server import RedisServer, free_port

pytestmark = pytest.mark.redis

HOST = socket.gethostname()
ADMIN = "acl-admin-0a1b2c3d"
PASSWORDS = {role: f"{role}-pw-{i}f3e9a7c" for i, role in enumerate(ROLES)}
FLOWER_PW = "flower-login-5e6f7a8b"


def _write_acl(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "accelerate_core.acl", str(path)], env=env, capture_output=True, text=True, timeout=60
    )


def _role_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
    return {**env, "ACCEL_BROKER_PASSWORD": ADMIN, **{role_env(r): p for r, p in PASSWORDS.items()}}


@pytest.fixture(scope="module")
def acl_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FleetProcesses, RedisServer, Path]]:
    base = tmp_path_factory.mktemp("acl")
    acl = base / "users.acl"
    done = _write_acl(acl, _role_env())
    assert done.returncode == 0, done.stderr
    server = RedisServer(base / "redis", password=ADMIN, args=["--aclfile", str(acl)])
    server.start()
    templates = base / "templates.duckdb"
    template_lookup(Settings(templates_db=templates))
    seed_catalog_index(base)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
    env.update(
        ACCEL_RESULTS_DB=str(base / "data" / "results.duckdb"),
        ACCEL_TEMPLATES_DB=str(templates),
        ACCEL_REPORTS_DIR=str(base / "reports"),
        ACCEL_FLEET_KEY=FLEET_KEY_HEX,
        ACCEL_SERVE_PORT=str(free_port()),
        ACCEL_FLOWER_PASSWORD=FLOWER_PW,
        ACCEL_FLOWER_PORT=str(free_port()),
    )
    fleets = {role: _as(role, env, server, base) for role in ROLES}
    fleets["writer"].start("writer", "writer")
    fleets["worker"].start("cpu0", "worker", "--hardware", "cpu")
    fleets["flower"].start("flower", "flower")
    try:
        wait_for(lambda: f"cpu0@{HOST}" in fleets["scheduler"].live(), 120, "worker cpu0")
        yield fleets["scheduler"], server, base
    finally:
        for fleet in fleets.values():
            fleet.stop_all()
        server.stop()


def _as(role: str, env: dict[str, str], server: RedisServer, base: Path) -> FleetProcesses:
    env = {
        **env,
        "ACCEL_BROKER_URL": f"redis://{role}@127.0.0.1:{server.port}/0",
        "ACCEL_BROKER_PASSWORD": PASSWORDS[role],
    }
    return FleetProcesses(Settings.load(environ=env), env, base)


def _client(server: RedisServer, user: str, password: str) -> Any:
    import redis

    return redis.Redis(port=server.port, username=user, password=password, socket_timeout=10)


def test_a_run_completes_with_every_process_logged_in_as_its_role_and_nothing_denied(
    acl_fleet: tuple[FleetProcesses, RedisServer, Path],
) -> None:
    scheduler, server, base = acl_fleet
    # When a run is sent as the scheduler, worked by the worker user and written by the writer user
    sent = scheduler.accel("run", "--phase", "acl", "--models", "bert", "--hardware", "cpu", cwd=base)
    assert sent.returncode == 0, sent.stderr
    run_id = re.search(r"run (\S+): 1 jobs sent", sent.stdout + sent.stderr)
    assert run_id, sent.stdout + sent.stderr
    # Then its report is written, and the CLI reads its status and the fleet's nodes as the scheduler
    wait_for(lambda: (base / "reports" / run_id.group(1) / "report.md").is_file(), 180, "the run's report")
    assert scheduler.accel("status", run_id.group(1)).returncode == 0
    workers = scheduler.accel("workers", "--json", "--timeout", "2")
    assert workers.returncode == 0 and f"cpu0@{HOST}" in workers.stdout, workers.stderr
    # and Flower, logged in as its user, sees the worker (an inspect broadcast and its replies)
    port = scheduler.env["ACCEL_FLOWER_PORT"]

    def flower_sees_worker() -> bool:
        try:
            status, body = http.get(f"http://127.0.0.1:{port}/api/workers?refresh=1", auth=("admin", FLOWER_PW))
        except OSError:
            return False
        return status == 200 and f"cpu0@{HOST}".encode() in body

    wait_for(flower_sees_worker, 90, "Flower's view of the worker")
    # and no command of any role was denied on the way but the start-up check's CONFIG GET (it reads on without)
    denied = [(e["username"], e["object"]) for e in _client(server, "default", ADMIN).acl_log(count=1000)]
    assert {d for d in denied if d[1] != "config|get"} == set(), denied
    assert {user for user, _ in denied} <= {"scheduler", "worker", "writer"}, denied


@pytest.mark.parametrize("role", ROLES)
def test_every_role_is_refused_admin_and_dangerous_commands(
    acl_fleet: tuple[FleetProcesses, RedisServer, Path], role: str
) -> None:
    import redis

    _, server, _ = acl_fleet
    client = _client(server, role, PASSWORDS[role])
    _client(server, "default", ADMIN).set("acl-canary", "1")
    for attempt in (
        lambda: client.config_set("dir", "/tmp"),
        lambda: client.flushall(),
        lambda: client.execute_command("SAVE"),
        lambda: client.execute_command("CLIENT", "KILL", "TYPE", "normal"),
        lambda: client.execute_command("SHUTDOWN", "NOSAVE"),
        lambda: client.keys("*"),
        lambda: client.execute_command("ACL", "SETUSER", role, "+@all"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            attempt()
    admin = _client(server, "default", ADMIN)
    assert admin.get("acl-canary") == b"1" and admin.ping()
    assert admin.config_get("dir")["dir"] != "/tmp"


def test_flower_cannot_put_or_take_a_queues_messages(acl_fleet: tuple[FleetProcesses, RedisServer, Path]) -> None:
    import redis

    _, server, _ = acl_fleet
    flower = _client(server, "flower", PASSWORDS["flower"])
    admin = _client(server, "default", ADMIN)
    admin.lpush("hw.acl-probe", "m")
    for attempt in (lambda: flower.lpush("hw.cpu", "x"), lambda: flower.rpush("hw.cpu", "x"),
                    lambda: flower.rpop("hw.acl-probe")):  # fmt: skip
        with pytest.raises(redis.exceptions.NoPermissionError):
            attempt()
    assert admin.llen("hw.cpu") == 0 and admin.lrange("hw.acl-probe", 0, -1) == [b"m"]
    assert flower.llen("hw.acl-probe") == 1  # what its broker page reads


def test_the_acl_file_is_private_and_holds_no_password(tmp_path: Path) -> None:
    path = tmp_path / "users.acl"
    assert _write_acl(path, _role_env()).returncode == 0
    text = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert all(p not in text for p in (ADMIN, *PASSWORDS.values()))
    assert [ln.split()[1] for ln in text.splitlines()] == ["default", *ROLES]
    # without the admin password the default user is off
    no_admin = {k: v for k, v in _role_env().items() if k != "ACCEL_BROKER_PASSWORD"}
    assert _write_acl(path, no_admin).returncode == 0
    assert path.read_text().splitlines()[0].startswith("user default off")


@pytest.mark.parametrize("value", ["", "change-me-worker", "password", "two words"])
def test_a_missing_or_placeholder_role_password_is_one_line_and_exit_2(tmp_path: Path, value: str) -> None:
    env = {**_role_env(), role_env("worker"): value}
    done = _write_acl(tmp_path / "users.acl", env)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "ACCEL_BROKER_PASSWORD_WORKER" in lines[0], done.stderr
    assert not value or value not in lines[0]
    assert not (tmp_path / "users.acl").exists()

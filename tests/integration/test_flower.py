"""Flower as an attacker with a Flower login meets it: real redis-server, a real prefork worker, real Flowers.

Two Flowers watch one broker and one worker: the default (read-only) one, started from a folder holding a
hostile ``flowerconfig.py`` and ``celeryconfig.py`` and with stray ``FLOWER_*``/``CELERY_*`` variables that
would turn control on and let anyone in; and one started with ``--allow-control``. The tests run in file
order: the read-only checks first, then control (its worker shutdown last).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from accelerate_core.config import Settings
from accelerate_core.errors import BrokerError
from scheduler.celery_client import client_app
from scheduler.cli.fleet import FLOWER_CONTROL_WARNING, flower_env
from scheduler.remote import live_nodes
from tests.support import processes
from tests.support.fleet_key import FLEET_KEY_HEX
from tests.support.processes import wait_for
from tests.support.redis_server import RedisServer, free_port

REPO = Path(__file__).resolve().parents[2]
ACCEL = [sys.executable, "-m", "scheduler"]
PASSWORD = "flower-test-pw"
NODE = f"cpu0@{socket.gethostname()}"
PROBE_QUEUE = "hw.probe"  # no worker consumes it: a task sent there stays for the test to count
HOSTILE_CONFIG = """
from pathlib import Path
Path({marker!r}).write_text("ran")
read_only = False
unauthenticated_api = True
"""


@dataclass
class Setup:
    settings: Settings
    env: dict[str, str]
    base: Path
    ports: dict[str, int]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, args: list[str], *, cwd: Path, env: dict[str, str]) -> None:
        self.procs[name] = processes.start([*ACCEL, *args], env=env, cwd=cwd, log=self.base / f"{name}.log")

    def stop_all(self) -> None:
        processes.stop_all(list(self.procs.values()))

    def log(self, name: str) -> str:
        return (self.base / f"{name}.log").read_text(errors="replace")


def http(
    port: int,
    path: str,
    *,
    method: str = "GET",
    user: str | None = "admin",
    password: str = PASSWORD,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    data = json.dumps(body or {}).encode() if method == "POST" else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if user is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def _live(settings: Settings) -> list[str]:
    try:
        return live_nodes(settings, 1.0)
    except BrokerError:
        return []


def _redis(settings: Settings) -> Any:
    import redis

    return redis.Redis.from_url(settings.broker_url or "")


def _revoked(settings: Settings) -> list[str]:
    app = client_app(settings)
    try:
        replies = app.control.inspect(destination=[NODE], timeout=2.0).revoked() or {}
    finally:
        app.close()
    return list(replies.get(NODE) or [])


@pytest.fixture(scope="module")
def setup(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    redis_server.fresh()
    base = tmp_path_factory.mktemp("flower")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCEL_", "FLOWER_", "CELERY_"))}
    env.update(
        ACCEL_BROKER_URL=redis_server.url,
        ACCEL_RESULTS_DB=str(base / "results.duckdb"),
        ACCEL_FLOWER_PASSWORD=PASSWORD,
        ACCEL_FLEET_KEY=FLEET_KEY_HEX,
    )
    s = Setup(Settings.load(environ=env), env, base, {"ro": free_port(), "control": free_port()})
    hostile = base / "hostile-cwd"
    hostile.mkdir()
    (hostile / "flowerconfig.py").write_text(HOSTILE_CONFIG.format(marker=str(base / "flowerconfig-ran")))
    (hostile / "celeryconfig.py").write_text(HOSTILE_CONFIG.format(marker=str(base / "celeryconfig-ran")))
    stray = {
        "FLOWER_READ_ONLY": "false",
        "FLOWER_UNAUTHENTICATED_API": "true",
        "FLOWER_BASIC_AUTH": "intruder:letmein",
        "CELERY_CONFIG_MODULE": "celeryconfig",
    }
    s.start("worker", ["worker", "--hardware", "cpu"], cwd=REPO, env=env)
    s.start("flower-ro", ["flower", "--port", str(s.ports["ro"])], cwd=hostile, env={**env, **stray})
    s.start("flower-control", ["flower", "--port", str(s.ports["control"]), "--allow-control"], cwd=REPO, env=env)
    try:
        wait_for(lambda: NODE in _live(s.settings), 180, "the worker")
        for name in ("ro", "control"):
            wait_for(lambda n=name: http(s.ports[n], "/healthcheck", user=None)[0] == 200, 90, f"flower {name}")
        wait_for(lambda: NODE.encode() in http(s.ports["control"], "/api/workers?refresh=1")[1], 60, "flower's view")
        yield s
    finally:
        s.stop_all()


def test_flower_env_passes_only_our_options_and_is_read_only_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWER_UNAUTHENTICATED_API", "true")
    monkeypatch.setenv("FLOWER_PERSISTENT", "true")
    monkeypatch.setenv("CELERY_CONFIG_MODULE", "evil")
    settings = Settings(broker_url="redis://127.0.0.1:1/0", flower_password="pw")
    env = flower_env(settings, "127.0.0.1", 5556)
    ours = {k: v for k, v in env.items() if k.startswith(("FLOWER_", "CELERY_"))}
    assert ours == {
        "CELERY_BROKER_URL": "redis://127.0.0.1:1/0",
        "FLOWER_BASIC_AUTH": "admin:pw",
        "FLOWER_ADDRESS": "127.0.0.1",
        "FLOWER_PORT": "5556",
        "FLOWER_READ_ONLY": "true",
        "FLOWER_CONF": os.devnull,
    }
    assert flower_env(settings, "127.0.0.1", 5556, allow_control=True)["FLOWER_READ_ONLY"] == "false"


@pytest.mark.redis
def test_login_is_required_for_the_ui_and_api_but_not_for_metrics_and_healthcheck(setup: Setup) -> None:
    port = setup.ports["ro"]
    assert http(port, "/", user=None)[0] == 401
    assert http(port, "/api/workers", user=None)[0] == 401
    assert http(port, "/api/workers", user="intruder", password="letmein")[0] == 401  # the stray FLOWER_BASIC_AUTH
    assert http(port, "/api/workers", user="admin", password="wrong")[0] == 401
    assert http(port, "/")[0] == 200
    # Documented in SECURITY.md: these two answer anyone who reaches the port (hence the loopback bind)
    status, metrics = http(port, "/metrics", user=None)
    assert status == 200 and b"flower_" in metrics
    assert http(port, "/healthcheck", user=None) == (200, b"OK")


@pytest.mark.redis
def test_read_only_flower_refuses_send_revoke_and_shutdown_and_nothing_happens(setup: Setup) -> None:
    # Given a logged-in user of the default Flower, a live worker and an empty probe queue
    port, client = setup.ports["ro"], _redis(setup.settings)
    work_queue = setup.settings.queue_for("cpu")
    before = (client.llen(PROBE_QUEUE), client.llen(work_queue))
    task_id = str(uuid.uuid4())
    # When they send a job, revoke a task and shut the worker down through the API
    sent = http(port, "/api/task/send-task/accel.run_job", method="POST", body={"queue": PROBE_QUEUE, "kwargs": {}})
    revoked = http(port, f"/api/task/revoke/{task_id}", method="POST")
    shutdown = http(port, f"/api/worker/shutdown/{NODE}", method="POST")
    # Then each is refused, and nothing was sent, revoked or shut down
    assert [sent[0], revoked[0], shutdown[0]] == [403, 403, 403]
    assert b"Read only" in sent[1]
    time.sleep(1.0)
    assert (client.llen(PROBE_QUEUE), client.llen(work_queue)) == before == (0, 0)
    assert task_id not in _revoked(setup.settings)
    assert setup.procs["worker"].poll() is None and NODE in _live(setup.settings)
    # And the hostile config files in Flower's folder never ran
    assert not (setup.base / "flowerconfig-ran").exists() and not (setup.base / "celeryconfig-ran").exists()


@pytest.mark.redis
def test_a_cross_site_post_is_refused_even_with_control_on(setup: Setup) -> None:
    # The CSRF fix of flower 2.2 (hence flower>=2.2): a browser tricked into posting from another site
    port, client = setup.ports["control"], _redis(setup.settings)
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://evil.example"}):
        status, _ = http(port, "/api/task/send-task/accel.run_job", method="POST", body={"queue": PROBE_QUEUE},
                         headers=headers)  # fmt: skip
        assert status == 403, headers
    assert client.llen(PROBE_QUEUE) == 0


@pytest.mark.redis
def test_with_allow_control_send_revoke_and_shutdown_work_and_a_warning_is_printed(setup: Setup) -> None:
    port, client = setup.ports["control"], _redis(setup.settings)
    assert FLOWER_CONTROL_WARNING in setup.log("flower-control")
    assert FLOWER_CONTROL_WARNING not in setup.log("flower-ro")
    status, body = http(port, "/api/task/send-task/accel.noop", method="POST", body={"queue": PROBE_QUEUE})
    assert status == 200 and "task-id" in json.loads(body)
    assert wait_for(lambda: client.llen(PROBE_QUEUE) == 1, 10, "the sent task")
    task_id = str(uuid.uuid4())
    assert http(port, f"/api/task/revoke/{task_id}", method="POST")[0] == 200
    assert wait_for(lambda: task_id in _revoked(setup.settings), 15, "the revocation")
    assert http(port, f"/api/worker/shutdown/{NODE}", method="POST")[0] == 200
    setup.procs["worker"].wait(60)

"""Endpoints on a fleet: real redis-server, the writer, a CPU worker and an ``accel worker --hardware api`` node.

``accel run --broker ... --endpoint fleet=URL@stub --wait`` sends the endpoint's job to queue ``hw.api``; the
api node runs it with the token from *its own* environment (the ``accel run`` process has none), the writer
records an ``api:fleet`` row beside ``cpu``, an endpoint that is down is a classified row and the run still
completes; the token is in no log, no row and no report.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from accelerate_core.config import Settings
from accelerate_core.endpoint.stub import StubProcess
from accelerate_core.store import ResultsStore
from scheduler.planning_inputs import template_lookup
from scheduler.remote import live_nodes
from tests.support import processes
from tests.support.fleet_key import FLEET_KEY_HEX
from tests.support.processes import wait_for
from tests.support.redis_server import RedisServer, free_port

pytestmark = pytest.mark.redis

REPO = Path(__file__).resolve().parents[2]
ACCEL = [sys.executable, "-m", "scheduler"]
HOST = socket.gethostname()
TOKEN = "sk-fleet-endpoint-0123456789abcdef"


def test_an_api_worker_runs_endpoint_jobs_beside_cpu_and_keeps_its_token(redis_server: RedisServer, tmp_path):
    url = redis_server.fresh()
    template_lookup(Settings(templates_db=tmp_path / "templates.duckdb"))  # sync the shipped templates once
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
    env.update(
        ACCEL_BROKER_URL=url,
        ACCEL_RESULTS_DB=str(tmp_path / "results.duckdb"),
        ACCEL_TEMPLATES_DB=str(tmp_path / "templates.duckdb"),
        ACCEL_REPORTS_DIR=str(tmp_path / "reports"),
        ACCEL_FLEET_KEY=FLEET_KEY_HEX,
        ACCEL_SERVE_PORT=str(free_port()),
    )
    settings = Settings.load(environ=env)
    procs = {}
    with StubProcess(["--tokens", "8", "--delay-ms", "1", "--echo-auth"]) as stub:
        try:
            procs["writer"] = processes.start([*ACCEL, "writer"], env=env, cwd=REPO, log=tmp_path / "writer.log")
            procs["cpu"] = processes.start([*ACCEL, "worker", "--hardware", "cpu"], env=env, cwd=REPO,
                                           log=tmp_path / "cpu.log")  # fmt: skip
            api_env = {**env, "ACCEL_ENDPOINT_TOKEN_FLEET": TOKEN}
            procs["api"] = processes.start([*ACCEL, "worker", "--hardware", "api"], env=api_env, cwd=REPO,
                                           log=tmp_path / "api.log")  # fmt: skip
            wait_for(lambda: {f"cpu0@{HOST}", f"api0@{HOST}"} <= set(live_nodes(settings, 1.0)), 180, "the workers")
            down = f"http://127.0.0.1:{free_port()}"
            done = subprocess.run(
                [*ACCEL, "run", "--phase", "fleet-serving", "--models", "bert", "--hardware", "cpu", "--wait",
                 "--endpoint", f"fleet={stub.url}@stub", "--endpoint", f"down={down}@stub"],
                capture_output=True, text=True, timeout=400, env=env, cwd=tmp_path,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr[-3000:]
        finally:
            processes.stop_all(list(procs.values()))
    with ResultsStore.open(settings.results_db, read_only=True) as store:
        run_id = store.list_runs()[0].run.run_id
        report = json.loads((settings.reports_dir / run_id / "report.json").read_text())
    rows = {r["hardware"]: r for r in report["rows"]}
    assert rows["cpu"]["status"] == "done" and rows["api:fleet"]["status"] == "done", rows
    assert rows["api:fleet"]["p50_s"] > 0
    assert rows["api:down"]["status"] == "failed" and rows["api:down"]["error_class"] == "endpoint-down"
    workers = {w["worker_id"]: w for w in report["workers"]}
    assert workers[f"api0@{HOST}"]["hardware"] == "api"
    for path in [settings.results_db, *settings.reports_dir.rglob("*"), *tmp_path.glob("*.log")]:
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert TOKEN not in done.stdout + done.stderr

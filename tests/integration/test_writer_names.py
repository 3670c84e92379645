"""Path traversal through the broker: a forged run id reaches a real writer process and writes nothing.

The writer writes a finished run's report to ``reports_dir / run_id``, with the run id taken from a message
that anyone who can write to Redis can forge. Before names were checked, a run ``../../etc/x`` with one
finished job put ``report.md/html/json`` two folders above ``reports_dir``. Now the message is refused when
it is decoded: one log line, no row, no file; the writer goes on with the next (valid) run.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from accelerate_core import wire
from accelerate_core.config import Settings
from accelerate_core.constants import TASK_RECORD_RESULT, TASK_RECORD_RUN, WRITER_LOCK_KEY
from accelerate_core.contracts import RunParams, job_key
from scheduler.celery_client import client_app
from tests.support import processes
from tests.support.fleet_key import FLEET_KEY, FLEET_KEY_HEX
from tests.support.processes import wait_for
from tests.support.redis_server import RedisServer, free_port

pytestmark = pytest.mark.redis

FORGED = "../../etc/x"


def _job(run_id: str) -> dict[str, Any]:
    # Written by hand, as a forger would: the contracts themselves refuse such a run id.
    return {"key": job_key(run_id, "bert", "cpu", "dry"), "run_id": run_id, "model_type": "bert",
            "hardware": "cpu", "kind": "dry"}  # fmt: skip


def _run(run_id: str, phase: str) -> dict[str, Any]:
    params = {k: v for k, v in wire.encode(RunParams(kind="dry", n_jobs=1)).items() if k != "v"}
    return {"v": wire.SCHEMA_VERSION, "run_id": run_id, "phase": phase, "created_at": time.time(),
            "params": params, "jobs": [_job(run_id)]}  # fmt: skip


def test_a_forged_run_id_reaches_the_writer_and_nothing_is_written_outside_reports_dir(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # Given a real writer whose reports go to <tmp>/deep/er/reports
    redis_server.fresh()
    reports = tmp_path / "deep" / "er" / "reports"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
    env.update(
        ACCEL_BROKER_URL=redis_server.url,
        ACCEL_RESULTS_DB=str(tmp_path / "data" / "results.duckdb"),
        ACCEL_REPORTS_DIR=str(reports),
        ACCEL_FLEET_KEY=FLEET_KEY_HEX,
        ACCEL_SERVE_PORT=str(free_port()),
    )
    settings = Settings.load(environ=env)
    log = tmp_path / "writer.log"
    writer = processes.start([sys.executable, "-m", "scheduler", "writer"], env=env, cwd=tmp_path, log=log)
    app = client_app(settings, sent_events=False)
    try:
        import redis

        client = redis.Redis.from_url(redis_server.url)
        wait_for(lambda: client.exists(WRITER_LOCK_KEY), 60, "the writer")
        # When a forged run (and its finished job) is sent straight to the results queue, then a valid one
        for run_id, phase in ((FORGED, "q4"), ("ok-1", "q4")):
            signed = FLEET_KEY.envelope(TASK_RECORD_RUN, "plan", _run(run_id, phase))  # past the signature check
            app.send_task(TASK_RECORD_RUN, kwargs=signed, queue=settings.results_queue)
            result = {"v": wire.SCHEMA_VERSION, **_job(run_id), "status": "done"}
            signed = FLEET_KEY.envelope(TASK_RECORD_RESULT, "result", result)
            app.send_task(TASK_RECORD_RESULT, kwargs=signed, queue=settings.results_queue)
        # Then the valid run is reported where it belongs ...
        wait_for(lambda: (reports / "ok-1" / "report.md").is_file(), 60, "the valid run's report")
    finally:
        app.close()
        processes.stop(writer)
    # ... nothing exists outside reports_dir but the writer's own files, and the forged run left no trace
    outside = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if reports not in (p, *p.parents))
    assert not (tmp_path / "deep" / "etc").exists()
    assert all(p in ("data", "deep", "deep/er", "writer.log") or p.startswith("data/") for p in outside), outside
    assert not any("etc" in p for p in outside)
    assert sorted(p.name for p in reports.iterdir()) == ["ok-1"]
    dropped = [ln for ln in log.read_text().splitlines() if "dead-lettered a" in ln]
    assert len(dropped) == 2, log.read_text()[-3000:]
    # (the run's first field to fail is its job's run id: the decoder names the path to it)
    assert "RunPlan.jobs[0] is invalid: JobSpec.run_id '../../etc/x' is not a valid name" in dropped[0]
    assert "JobResult.run_id '../../etc/x' is not a valid name" in dropped[1]

"""`accel status`'s writer line on a real Redis: liveness from the heartbeat, lag from the queue without one."""

from __future__ import annotations

import time

import pytest
import redis

from accelerate_core import liveness
from accelerate_core.config import Settings
from accelerate_core.contracts import JobResult, JobSpec, WriterHeartbeat, job_key
from scheduler.celery_client import client_app
from scheduler.status import writer_state
from tests.support.fleet_key import FLEET_KEY_HEX
from workers import tasks

pytestmark = pytest.mark.redis


def test_no_writer_alive_is_said_with_the_backlog_it_leaves(redis_url: str) -> None:
    settings = Settings(broker_url=redis_url, fleet_key=FLEET_KEY_HEX)
    # Given a result that finished 10 s ago waits on the results queue, and no writer
    spec = JobSpec(key=job_key("st", "m0", "cpu", "dry"), run_id="st", model_type="m0", hardware="cpu", kind="dry")
    now = time.time()
    app = client_app(settings)
    tasks.send_result(settings, JobResult.for_spec(spec, status="done", started_at=now - 11, finished_at=now - 10))
    app.close()
    # When the status reads the writer's state
    state = writer_state(settings)
    # Then it says none is alive, what to start, and how far behind the queue is
    assert state is not None and state.heartbeat is None
    line = state.line()
    assert "none alive" in line and "accel writer" in line and "backlog 1" in line
    assert state.oldest_s is not None and 9.5 <= state.oldest_s < 60
    assert state.to_json()["alive"] is False and state.to_json()["backlog"] == 1


def test_a_live_writer_is_shown_from_its_heartbeat(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    liveness.publish_writer(client, WriterHeartbeat(host="w1", pid=42, started_at=0.0, at=time.time(), backlog=3))
    client.close()
    state = writer_state(Settings(broker_url=redis_url))
    assert state is not None and "writing on w1 (pid 42), backlog 3" in state.line()
    assert state.to_json()["alive"] is True and state.to_json()["pid"] == 42


def test_no_broker_no_writer_line_and_an_unreachable_one_is_named() -> None:
    assert writer_state(Settings()) is None
    state = writer_state(Settings(broker_url="redis://127.0.0.1:1/0"))
    assert state is not None and state.error is not None and "cannot reach redis" in state.line()

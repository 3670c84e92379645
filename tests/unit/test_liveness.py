"""The writer's heartbeat on a real Redis: published with its backlog and lag, read by one function, gone with it."""

from __future__ import annotations

import os
import time

import pytest

from accelerate_core import liveness
from accelerate_core.config import Settings
from accelerate_core.constants import STATUS_DONE, WRITER_HEARTBEAT_KEY
from accelerate_core.contracts import JobResult, JobSpec, WriterHeartbeat, job_key
from tests.support.fleet_key import FLEET_KEY_HEX
from workers import keeper, tasks

pytestmark = pytest.mark.redis


def _result(finished_at: float) -> JobResult:
    spec = JobSpec(key=job_key("r1", "bert", "cpu", "dry"), run_id="r1", model_type="bert", hardware="cpu", kind="dry")
    return JobResult.for_spec(spec, status=STATUS_DONE, started_at=finished_at - 1, finished_at=finished_at,
                              worker_id="cpu0@h", host="h", attempt=1)  # fmt: skip


def test_no_writer_reads_as_none_and_says_what_to_do(redis_url: str) -> None:
    import redis

    assert liveness.read_writer(redis.Redis.from_url(redis_url)) is None
    assert "accel writer" in liveness.describe(None)


def test_keeper_publishes_backlog_and_the_oldest_results_age_then_clears_it(redis_url: str) -> None:
    import redis

    # Given a result finished 30 s ago waiting on the results queue, and a writer's keeper
    client = redis.Redis.from_url(redis_url)
    settings = Settings(broker_url=redis_url, fleet_key=FLEET_KEY_HEX)
    tasks.send_result(settings, _result(time.time() - 30))
    state = keeper.WriterState(state="store-failing", dead_letters=2, last_error="disk full")
    # When it beats
    with keeper.Keeper(client, settings.results_queue, state, every_s=60):
        beat = liveness.read_writer(client)
        ttl = client.ttl(WRITER_HEARTBEAT_KEY)
    # Then the fleet reads who the writer is, what it does and how far behind it is
    assert isinstance(beat, WriterHeartbeat)
    assert (beat.pid, beat.state, beat.backlog, beat.dead_letters) == (os.getpid(), "store-failing", 1, 2)
    assert beat.oldest_s is not None and 29 <= beat.oldest_s < 120
    assert 0 < ttl <= 10
    line = liveness.describe(beat)
    assert "store-failing" in line and "backlog 1" in line and "disk full" in line
    assert "2 dead letters (accel dead-letters)" in line
    # And a writer that stops clears its heartbeat at once
    assert liveness.read_writer(client) is None


def test_a_heartbeat_expires_when_its_writer_stops_refreshing_it(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    beat = WriterHeartbeat(host="h", pid=1, started_at=0.0, at=time.time())
    liveness.publish_writer(client, beat, ttl_s=1)
    assert liveness.read_writer(client) == beat
    time.sleep(1.2)
    assert liveness.read_writer(client) is None


def test_another_writers_heartbeat_is_not_cleared(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    with keeper.Keeper(client, "results", keeper.WriterState(), every_s=60):
        other = WriterHeartbeat(host="elsewhere", pid=2, started_at=0.0, at=time.time())
        liveness.publish_writer(client, other)
    assert liveness.read_writer(client) == other

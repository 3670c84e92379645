"""The writer's heartbeat on a real Redis: published with its backlog and lag, read by one function, gone with it."""

from __future__ import annotations

import os
import time

import pytest

from accelerate_core import celery_message, liveness
from accelerate_core.config import Settings
from accelerate_core.constants import STATUS_DONE, TASK_RECORD_RUN, WRITER_HEARTBEAT_KEY, WRITER_PROCESSING_KEY
from accelerate_core.contracts import JobResult, JobSpec, WriterHeartbeat, job_key
from tests.support.fleet_key import FLEET_KEY_HEX
from workers import keeper, tasks

pytestmark = pytest.mark.redis


def _result(finished_at: float) -> JobResult:
    spec = JobSpec(key=job_key("r1", "bert", "cpu", "dry"), run_id="r1", model_type="bert", hardware="cpu", kind="dry")
    return JobResult.for_spec(spec, status=STATUS_DONE, started_at=finished_at - 1, finished_at=finished_at,
                              worker_id="cpu0@h", host="h", attempt=1)  # fmt: skip


def _run_message(jobs: int) -> bytes:
    """A ``record_run`` message the size of a ``jobs``-job run's (~6 KB a job)."""
    plan = {"run_id": "r1", "jobs": [{"key": f"r1:{i}", "template": "x" * 6000} for i in range(jobs)]}
    return celery_message.build(TASK_RECORD_RUN, {"plan": plan}, queue="results", kwargsrepr="{}")


def test_a_big_run_message_ahead_is_passed_over_unread_and_the_oldest_result_still_gives_the_age(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    # Given a 2,000-job run message claimed by the writer (it is recording it), a small run message first in
    # the queue, and behind them a result finished 30 s ago and a newer one
    client = redis.Redis.from_url(redis_url)
    settings = Settings(broker_url=redis_url, fleet_key=FLEET_KEY_HEX)
    client.lpush(WRITER_PROCESSING_KEY, _run_message(2000))
    client.lpush(settings.results_queue, _run_message(1))
    tasks.send_result(settings, _result(time.time() - 30))
    tasks.send_result(settings, _result(time.time() - 5))
    decoded: list[object] = []
    monkeypatch.setattr(liveness, "task_kwargs", lambda m: decoded.append(m) or celery_message.task_kwargs(m))
    # When the backlog is read
    started = time.perf_counter()
    backlog, oldest_s = liveness.results_backlog(client, settings.results_queue)
    took = time.perf_counter() - started
    # Then it counts all four, ages by the oldest result, decodes that result's body only, and stays fast
    # (the run message never leaves Redis)
    assert backlog == 4
    assert oldest_s is not None and 29 <= oldest_s < 60
    assert len(decoded) == 1
    assert took < 0.5


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

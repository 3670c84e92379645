"""Reconciliation on a real redis-server: what the broker holds of each job, and the writer's reconciler.

Job and result messages are sent by a real Celery client app (the scheduler's), so their shape is kombu's;
the reconciler reads a real (in-memory) results store. Its senders are recorders: a "re-sent" job here puts
no message on the broker, so the same job stays missing and runs out of re-sends.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import pytest
import redis

from accelerate_core import reconcile, wire
from accelerate_core.config import Settings
from accelerate_core.constants import (
    DISPATCH_REFRESH_S,
    DISPATCH_TTL_S,
    ERR_MESSAGE_LOST,
    ERR_REVOKED,
    ERR_WORKER,
    KOMBU_UNACKED_KEY,
    STATUS_CANCELLED,
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_LOST,
    STATUS_SKIPPED,
    TASK_RUN_JOB,
    WRITER_PROCESSING_KEY,
)
from accelerate_core.contracts import JobResult, JobSpec, ReconcileReport, RunParams, RunPlan, SkipReason, job_key
from accelerate_core.errors import BrokerError
from accelerate_core.job_message import send_job
from accelerate_core.store import ResultsStore
from scheduler.celery_client import client_app
from tests.support.fleet_key import FLEET_KEY, FLEET_KEY_HEX
from workers import tasks
from workers.reconciler import Reconciler

pytestmark = pytest.mark.redis


def _plan(run_id: str, n: int, *, skip_last: bool = False) -> RunPlan:
    jobs = [
        JobSpec(key=job_key(run_id, f"m{i}", "cpu", "dry"), run_id=run_id, model_type=f"m{i}", hardware="cpu",
                kind="dry")
        for i in range(n)
    ]  # fmt: skip
    if skip_last:
        jobs[-1] = replace(jobs[-1], skip=SkipReason("unsupported", "not on cpu"))
    return RunPlan(run_id=run_id, phase="unit", created_at=time.time(), params=RunParams(kind="dry"), jobs=tuple(jobs))


def _result(spec: JobSpec, status: str = STATUS_DONE) -> JobResult:
    now = time.time()
    return JobResult.for_spec(spec, status=status, started_at=now - 1, finished_at=now, worker_id="cpu0@h", host="h")


@dataclass
class Sent:
    jobs: list[str] = field(default_factory=list)
    rows: list[JobResult] = field(default_factory=list)

    def job(self, spec: JobSpec) -> None:
        self.jobs.append(spec.key)

    def results(self, rows: Sequence[JobResult]) -> None:
        self.rows.extend(rows)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def store() -> Iterator[ResultsStore]:
    with ResultsStore.memory() as s:
        yield s


def _reconciler(store: ResultsStore, client: redis.Redis, settings: Settings, sent: Sent) -> Reconciler:
    return Reconciler(store, client, settings, send_job=sent.job, send_results=sent.results, sleep=lambda _: None)


def test_inflight_sees_queued_unacked_and_results_on_their_way(redis_url: str, client: redis.Redis) -> None:
    settings = Settings(broker_url=redis_url, fleet_key=FLEET_KEY_HEX)
    plan = _plan("inflight", 5)
    app = client_app(settings)
    # Given job 0 queued, job 1 delivered and unacknowledged, job 2's result queued, job 3's being written
    send_job(app, settings, plan.jobs[0], key=FLEET_KEY)
    send_job(app, settings, plan.jobs[1], key=FLEET_KEY)
    delivered = client.lpop("hw.cpu")
    client.hset(KOMBU_UNACKED_KEY, "tag-1", json.dumps([json.loads(delivered), "", "hw.cpu"]))  # type: ignore[arg-type]
    tasks.send_result(settings, _result(plan.jobs[2]))
    tasks.send_result(settings, _result(plan.jobs[3]))
    client.rpoplpush("results", WRITER_PROCESSING_KEY)
    client.lpush("results", b"not json at all")  # a malformed message hides nothing and breaks nothing
    app.close()
    # When the broker is read
    found = reconcile.read_inflight(client, ["hw.cpu", "hw.cuda"], "results")
    # Then each is where it is, and job 4 (never sent) is nowhere
    assert found.jobs == {plan.jobs[0].key, plan.jobs[1].key}
    assert found.results == {plan.jobs[2].key, plan.jobs[3].key}
    assert [found.holds(j.key) for j in plan.jobs] == [True, True, True, True, False]


def test_a_job_missing_at_two_passes_is_resent_then_recorded_lost(
    redis_url: str, client: redis.Redis, store: ResultsStore
) -> None:
    settings = Settings(broker_url=redis_url, reconcile_resends=1)
    plan = _plan("recon", 3)
    store.record_run(plan)
    store.record_results([_result(plan.jobs[1])])
    app = client_app(settings)
    send_job(app, settings, plan.jobs[0], key=FLEET_KEY)  # job 0 is queued; job 2 has no message anywhere
    app.close()
    sent = Sent()
    rec = _reconciler(store, client, settings, sent)
    # Given a first pass: job 2 is missing, but a worker may be between popping and recording it: no action
    first = rec.reconcile("recon")
    assert (first.unfinished, first.in_flight, first.resent, first.missing) == (2, 1, 0, 1)
    assert sent.jobs == []
    # When it is still missing at the next pass: it is sent again, by its key
    second = rec.reconcile("recon")
    assert (second.resent, second.lost, sent.jobs) == (1, 0, [plan.jobs[2].key])
    # Then, missing twice more after its one re-send: recorded lost with the reason, not sent a third time
    rec.reconcile("recon")
    third = rec.reconcile("recon")
    assert (third.resent, third.lost, len(sent.jobs)) == (0, 1, 1)
    (row,) = sent.rows
    assert (row.key, row.status, row.error_class) == (plan.jobs[2].key, STATUS_LOST, ERR_MESSAGE_LOST)
    assert "after 1 re-sends" in (row.error_message or "") and "hw.cpu" in (row.error_message or "")


def test_a_run_still_being_dispatched_is_never_resent_and_is_reconciled_afresh_once_sent(
    redis_url: str, client: redis.Redis, store: ResultsStore
) -> None:
    settings = Settings(broker_url=redis_url)
    plan = _plan("sending", 3)
    store.record_run(plan)
    sent = Sent()
    rec = _reconciler(store, client, settings, sent)
    # Given a scheduler still sending the run (its dispatch mark live), none of its jobs sent yet
    mark = reconcile.DispatchMark(client, "sending")
    mark.start()
    assert reconcile.dispatching(client, "sending") is not None and 0 < client.ttl(mark.key) <= DISPATCH_TTL_S
    # When the reconciler passes many times: nothing is re-sent, nothing counted missing
    reports = [rec.reconcile("sending") for _ in range(5)]
    assert sent.jobs == [] and sent.rows == [] and {(r.unfinished, r.missing) for r in reports} == {(3, 0)}
    # Then once the mark is gone (all sent, or the scheduler killed), a job missing at two fresh passes is re-sent
    mark.done()
    assert reconcile.dispatching(client, "sending") is None
    assert rec.reconcile("sending").resent == 0
    assert rec.reconcile("sending").resent == 3 and sorted(sent.jobs) == sorted(j.key for j in plan.jobs)


def test_a_dispatch_mark_is_renewed_only_every_refresh_interval(client: redis.Redis) -> None:
    now = [100.0]
    mark = reconcile.DispatchMark(client, "renew", clock=lambda: now[0])
    mark.start()
    client.expire(mark.key, 5)
    now[0] += DISPATCH_REFRESH_S - 0.1
    mark.refresh()  # not due: the mark keeps its shortened lifetime
    assert client.ttl(mark.key) <= 5
    now[0] += 0.2
    mark.refresh()  # due: renewed to its full lifetime
    assert client.ttl(mark.key) > 5
    mark.done()


def test_a_planned_skip_the_scheduler_never_sent_gets_its_skipped_row(
    redis_url: str, client: redis.Redis, store: ResultsStore
) -> None:
    settings = Settings(broker_url=redis_url)
    plan = _plan("skips", 2, skip_last=True)
    store.record_run(plan)
    store.record_results([_result(plan.jobs[0])])
    sent = Sent()
    rec = _reconciler(store, client, settings, sent)
    rec.reconcile("skips")
    report = rec.reconcile("skips")
    assert (report.skipped, report.resent, sent.jobs) == (1, 0, [])
    assert [(r.key, r.status) for r in sent.rows] == [(plan.jobs[1].key, STATUS_SKIPPED)]


def test_a_resume_request_is_served_at_once_and_answered(
    redis_url: str, client: redis.Redis, store: ResultsStore
) -> None:
    settings = Settings(broker_url=redis_url, reconcile_every_s=3600)
    plan = _plan("resumed", 3)
    store.record_run(plan)
    store.set_run_status("resumed", "running")
    sent = Sent()
    rec = _reconciler(store, client, settings, sent)
    rec.tick()  # the periodic pass: every job missing once
    sent.jobs.clear()
    # Given `accel run --resume` asked for this run and for one the store does not know
    reconcile.request(client, "resumed")
    reconcile.request(client, "nosuchrun")
    # When the writer's next loop ticks (the periodic pass is not due)
    reports = {r.run_id: r for r in rec.tick()}
    # Then every job without a message was re-sent at once, and both replies are there to read
    assert sorted(sent.jobs) == sorted(j.key for j in plan.jobs)
    assert reports["resumed"].resent == 3
    reply = reconcile.read_reply(client, "resumed")
    assert reply is not None and (reply.known, reply.resent, reply.unfinished) == (True, 3, 3)
    unknown = reconcile.read_reply(client, "nosuchrun")
    assert unknown is not None and not unknown.known
    assert "accel runs list" in reconcile.describe(unknown)
    assert rec.tick() == []  # requests are taken once


def test_periodic_passes_cover_only_open_runs_and_wait_their_interval(
    redis_url: str, client: redis.Redis, store: ResultsStore
) -> None:
    settings = Settings(broker_url=redis_url, reconcile_every_s=30)
    for run_id, status in (("open1", "running"), ("done1", "complete")):
        store.record_run(_plan(run_id, 1))
        store.set_run_status(run_id, status)
    now = [100.0]
    rec = Reconciler(store, client, settings, send_job=Sent().job, send_results=Sent().results,
                     clock=lambda: now[0])  # fmt: skip
    assert [r.run_id for r in rec.tick()] == ["open1"]
    now[0] += 29
    assert rec.tick() == []
    now[0] += 1
    assert [r.run_id for r in rec.tick()] == ["open1"]


def test_a_broken_broker_makes_a_logged_failed_tick_not_a_dead_writer(store: ResultsStore) -> None:
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    rec = Reconciler(store, dead, Settings(), send_job=Sent().job, send_results=Sent().results)
    assert rec.tick() == []


def test_an_exception_in_the_task_body_is_a_worker_error_row(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _plan("body", 1).jobs[0]

    def broken(_: Settings) -> redis.Redis:
        raise BrokerError("cannot reach redis at redis://127.0.0.1:1 (connection refused): start redis-server")

    monkeypatch.setattr(tasks, "_redis", broken)
    kwargs = FLEET_KEY.envelope(TASK_RUN_JOB, "spec", wire.encode(spec))
    row = tasks.task_result(spec.key, kwargs, Settings(), "cpu0@h", key=FLEET_KEY, redelivered=True)
    assert row is not None and (row.key, row.status, row.error_class) == (spec.key, STATUS_FAILED, ERR_WORKER)
    assert row.error_type == "BrokerError" and "connection refused" in (row.error_message or "")
    assert tasks.task_result("not-a-job-key", {}, Settings(), "cpu0@h", key=FLEET_KEY, redelivered=False) is None


def test_a_revoked_job_is_a_cancelled_row_naming_how() -> None:
    spec = _plan("rev", 1).jobs[0]
    before = tasks.revoked_result(spec.key, "cpu0@h", terminated=False, expired=False)
    assert before is not None and (before.key, before.status, before.error_class) == (
        spec.key,
        STATUS_CANCELLED,
        ERR_REVOKED,
    )
    assert "before it ran" in (before.error_message or "")
    killed = tasks.revoked_result(spec.key, "cpu0@h", terminated=True, expired=False, signum=15)
    assert killed is not None and "terminated while it ran (signal 15)" in (killed.error_message or "")
    assert tasks.revoked_result("celery-task-of-someone-else", "cpu0@h", terminated=False, expired=False) is None


def test_resume_on_a_fleet_asks_the_writer_and_returns_its_answer(redis_url: str, client: redis.Redis) -> None:
    from accelerate_core import liveness
    from accelerate_core.contracts import WriterHeartbeat
    from accelerate_core.errors import UnknownRunError
    from scheduler.remote import resume_remote

    settings = Settings(broker_url=redis_url)
    # Given no live writer: the request is left for one, and nobody is waited for
    started = time.monotonic()
    assert resume_remote(settings, "r9", reply_wait_s=30) is None
    assert time.monotonic() - started < 5 and client.sismember("acc:reconcile:requests", "r9")
    client.delete("acc:reconcile:requests")
    # Given a live writer that answers (published here as the writer would)
    liveness.publish_writer(client, WriterHeartbeat(host="h", pid=1, started_at=0.0, at=time.time()))
    reconcile.publish_reply(client, ReconcileReport("r9", resent=99))  # a stale reply: the request drops it
    _answer_soon(client, ReconcileReport("r9", unfinished=4, resent=4))
    report = resume_remote(settings, "r9", reply_wait_s=30)
    assert report is not None and (report.unfinished, report.resent) == (4, 4)
    # and a run the writer does not know is one line (exit 2)
    _answer_soon(client, ReconcileReport("gone", known=False))
    with pytest.raises(UnknownRunError, match="accel runs list"):
        resume_remote(settings, "gone", reply_wait_s=30)


def _answer_soon(client: redis.Redis, report: ReconcileReport) -> None:
    def answer() -> None:  # as the writer does: once the request is there, take it and reply
        deadline = time.monotonic() + 30
        while report.run_id not in reconcile.take_requests(client) and time.monotonic() < deadline:
            time.sleep(0.05)
        reconcile.publish_reply(client, report)

    threading.Thread(target=answer, daemon=True).start()

"""The fleet's parts without workers: Celery settings, pinning, node names, the writer and its intake.

Redis-backed tests use the real redis-server of the session fixture; the writer writes a real DuckDB
store. Worker processes are exercised in ``tests/integration/test_fleet.py``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from accelerate_core.config import Settings, TimeLimit
from accelerate_core.constants import (
    ERR_REDELIVERY_CAP,
    STATUS_DONE,
    STATUS_FAILED,
    TASK_RECORD_RESULT,
    TASK_RECORD_RUN,
    TASK_RUN_JOB,
)
from accelerate_core.contracts import JobResult, JobSpec, RunPlan, job_key
from accelerate_core.errors import BrokerError, ConfigError, HardwareUnavailableError
from accelerate_core.store import ResultsStore
from scheduler.cli.fleet import flower_env, node_plan, parse_devices
from scheduler.remote import celery_limits, client_app, job_labels
from workers import pinning, tasks, writer
from workers.app import backstop_limits, broker_error, check_broker, make_app, visibility_timeout_s


def _dry_plan(run_id: str, n: int, **bench: float) -> RunPlan:
    jobs = [
        JobSpec(
            key=job_key(run_id, f"m{i}", "cpu", "dry"),
            run_id=run_id,
            model_type=f"m{i}",
            hardware="cpu",
            kind="dry",
            bench=dict(bench),
        ).to_dict()
        for i in range(n)
    ]
    return RunPlan(run_id=run_id, phase="unit", created_at=time.time(), params={"kind": "dry"}, jobs=jobs)


def _done(spec: dict, worker: str = "cpu0@h") -> JobResult:
    return JobResult(
        key=spec["key"],
        run_id=spec["run_id"],
        model_type=spec["model_type"],
        hardware="cpu",
        kind="dry",
        status=STATUS_DONE,
        started_at=1.0,
        finished_at=2.0,
        duration_s=1.0,
        worker_id=worker,
    )


# -- the Celery app --------------------------------------------------------------------------------


def test_app_is_json_only_acks_late_prefetch_one_and_routes_results_to_the_writer() -> None:
    # Given settings with a long test-kind hard limit
    settings = Settings(
        broker_url="redis://127.0.0.1:1/0", time_limits={"test": TimeLimit(100, 600), "dry": TimeLimit(1, 2)}
    )
    # When the app is built
    conf = make_app(settings).conf
    # Then it accepts JSON only and never pickles
    assert conf.task_serializer == "json" and conf.result_serializer == "json"
    assert list(conf.accept_content) == ["json"]
    # and it acknowledges late, prefetches one, requeues a job whose worker died
    assert conf.task_acks_late is True and conf.worker_prefetch_multiplier == 1
    assert conf.task_reject_on_worker_lost is True
    # and Redis redelivers only after the longest Celery hard limit
    longest_hard = max(backstop_limits(t)[1] for t in settings.time_limits.values())
    assert conf.broker_transport_options["visibility_timeout"] > longest_hard >= 600
    # and task events are on for Flower, with no result backend
    assert conf.worker_send_task_events is True and conf.task_send_sent_event is True
    assert conf.result_backend is None
    assert conf.task_routes[TASK_RECORD_RESULT] == {"queue": "results"}
    assert conf.task_routes[TASK_RECORD_RUN] == {"queue": "results"}


def test_run_job_task_has_soft_below_hard_limits_above_the_runners() -> None:
    settings = Settings(broker_url="redis://127.0.0.1:1/0")
    task = make_app(settings).tasks[TASK_RUN_JOB]
    assert task.acks_late and task.reject_on_worker_lost
    assert settings.longest_hard_limit_s < task.soft_time_limit < task.time_limit
    for limit in settings.time_limits.values():
        soft, hard = celery_limits(limit)
        assert (soft, hard) == backstop_limits(limit)
        assert limit.hard_s < soft < hard < visibility_timeout_s(settings)


def test_app_without_broker_is_a_one_line_config_error() -> None:
    with pytest.raises(ConfigError, match="ACCEL_BROKER_URL"):
        make_app(Settings())


def test_unreachable_broker_is_one_line_naming_host_and_fix() -> None:
    with pytest.raises(BrokerError) as info:
        check_broker("redis://:secret@127.0.0.1:1/0", timeout_s=1)
    text = str(info.value)
    assert "\n" not in text and "secret" not in text
    assert text == (
        "cannot reach redis at redis://127.0.0.1:1 (connection refused): start redis-server or fix ACCEL_BROKER_URL"
    )
    assert (
        broker_error("redis://h:7/0", TimeoutError("timed out")).args[0].startswith("cannot reach redis at redis://h:7")
    )


def test_dispatch_to_an_unreachable_broker_is_one_line() -> None:
    from scheduler.remote import run_remote

    settings = Settings(broker_url="redis://127.0.0.1:1/0")
    with pytest.raises(BrokerError, match=r"^cannot reach redis at redis://127\.0\.0\.1:1 \(connection refused\)"):
        run_remote(settings, _dry_plan("r0", 1), wait=False)


def test_job_labels_are_short_and_readable() -> None:
    spec = JobSpec.from_dict(_dry_plan("r1", 1).jobs[0])
    assert job_labels(spec) == {"model_type": "m0", "hardware": "cpu", "kind": "dry", "run_id": "r1"}
    assert client_app(Settings(broker_url="redis://127.0.0.1:1/0")).conf.task_send_sent_event is True


# -- pinning and node names ----------------------------------------------------------------------------


def test_pinning_env_hides_accelerators_from_cpu_and_pins_one_gpu() -> None:
    cpu = pinning.Pinning("cpu", 1, 2).device_env()
    assert cpu["CUDA_VISIBLE_DEVICES"] == "" and cpu["HIP_VISIBLE_DEVICES"] == ""
    assert cpu["OMP_NUM_THREADS"] == "2"
    cuda = pinning.Pinning("cuda", 3).device_env()
    assert cuda["CUDA_VISIBLE_DEVICES"] == "3" and cuda[pinning.HARDWARE_ENV] == "cuda"
    assert pinning.Pinning("rocm", 1).device_env()["HIP_VISIBLE_DEVICES"] == "1"
    assert pinning.Pinning("cuda", 3).node_name("gpu-1") == "cuda3@gpu-1"


def test_pinning_round_trips_through_the_environment() -> None:
    env: dict[str, str] = {}
    pinning.apply(pinning.Pinning("cuda", 2, 4), env)
    assert pinning.current(env) == pinning.Pinning("cuda", 2, 4)
    assert pinning.current({}) == pinning.Pinning("cpu", 0, 0)
    with pytest.raises(ConfigError):
        pinning.Pinning("tpu")


def test_node_plan_takes_the_next_free_cpu_slot_and_refuses_a_busy_gpu() -> None:
    assert node_plan("cpu", None, [], host="h") == [(0, "cpu0@h")]
    assert node_plan("cpu", None, ["cpu0@h", "writer@h"], host="h") == [(1, "cpu1@h")]
    assert node_plan("cuda", [0, 1], ["cpu0@h"], host="h") == [(0, "cuda0@h"), (1, "cuda1@h")]
    with pytest.raises(HardwareUnavailableError, match="cuda1@h is already running"):
        node_plan("cuda", [0, 1], ["cuda1@h"], host="h")


def test_devices_option_is_validated() -> None:
    assert parse_devices(None) is None and parse_devices("all") is None
    assert parse_devices("0,2") == [0, 2]
    for bad in ("a", "0,0", "-1"):
        with pytest.raises(ConfigError):
            parse_devices(bad)


def test_flower_refuses_to_start_without_a_password() -> None:
    with pytest.raises(ConfigError, match="ACCEL_FLOWER_PASSWORD"):
        flower_env(Settings(broker_url="redis://127.0.0.1:1/0"), "127.0.0.1", 5555)
    env = flower_env(Settings(broker_url="redis://127.0.0.1:1/0", flower_password="pw"), "127.0.0.1", 5556)
    assert env["FLOWER_BASIC_AUTH"] == "admin:pw" and env["FLOWER_PORT"] == "5556"
    assert env["FLOWER_ADDRESS"] == "127.0.0.1"


# -- the job path (dry jobs, the redelivery cap) -------------------------------------------------------


@pytest.mark.redis
def test_first_delivery_costs_no_count_redeliveries_count_and_the_cap_records_failure(redis_url: str) -> None:
    import redis

    settings = Settings(broker_url=redis_url, redelivery_cap=2)
    client = redis.Redis.from_url(redis_url)
    ex = tasks.Executor(settings, "cpu0@h", "h", tasks.DeliveryCounter(client))
    spec = JobSpec.from_dict(_dry_plan("r1", 1).jobs[0])
    # Given a first delivery: attempt 1, nothing counted in Redis
    first = tasks.execute(spec, ex, redelivered=False)
    assert (first.status, first.attempt, first.worker_id) == (STATUS_DONE, 1, "cpu0@h")
    assert client.get(tasks.DELIVERIES_PREFIX + spec.key) is None
    # When it is redelivered: attempt 2 runs (cap 2)
    assert tasks.execute(spec, ex).attempt == 2
    # Then the next redelivery is beyond the cap: failed with redelivery-cap, not run
    capped = tasks.execute(spec, ex)
    assert (capped.status, capped.error_class, capped.attempt) == (STATUS_FAILED, ERR_REDELIVERY_CAP, 3)
    assert 0 < client.ttl(tasks.DELIVERIES_PREFIX + spec.key) <= tasks.DELIVERIES_TTL_S


# -- the writer ----------------------------------------------------------------------------------------


def _writer(tmp_path: Path, store: ResultsStore, published: dict[str, str]) -> writer.ResultWriter:
    settings = Settings(results_db=tmp_path / "r.duckdb", reports_dir=tmp_path / "reports")
    return writer.ResultWriter(store, settings, publish=lambda run, text: published.__setitem__(run, text))


def test_writer_records_run_and_results_once_then_reports_the_finished_run(tmp_path: Path) -> None:
    published: dict[str, str] = {}
    plan = _dry_plan("run-w", 3)
    with ResultsStore.open(tmp_path / "r.duckdb") as store:
        w = _writer(tmp_path, store, published)
        # Given the run recorded and two results, one of them twice (a redelivery)
        w.handle(TASK_RECORD_RUN, {"plan": plan.to_dict()})
        w.handle(TASK_RECORD_RESULT, {"result": _done(plan.jobs[0]).to_dict()})
        w.handle(TASK_RECORD_RESULT, {"results": [_done(plan.jobs[0]).to_dict(), _done(plan.jobs[1]).to_dict()]})
        assert w.flush() == 3
        # Then the run is not done yet, and nothing is reported
        assert not store.is_phase_done("run-w") and "run-w" not in w.reported
        # When the last result lands
        w.handle(TASK_RECORD_RESULT, {"result": _done(plan.jobs[2], "cpu1@h").to_dict()})
        w.flush()
        rows = store.query("SELECT job_key, count(*) FROM jobs WHERE run_id = 'run-w' GROUP BY job_key")
        # Then there is one row per job, the run is complete, its report and snapshot are written
        assert sorted(n for _, n in rows) == [1, 1, 1]
        assert store.get_run("run-w")["status"] == "complete"
        assert (tmp_path / "reports" / "run-w" / "report.json").is_file()
        snap = json.loads(published["run-w"])
        assert snap["phase_done"] and snap["terminal"] == 3 and snap["report_dir"].endswith("run-w")


def test_writer_refuses_unknown_messages(tmp_path: Path) -> None:
    with ResultsStore.open(tmp_path / "r.duckdb") as store, pytest.raises(ConfigError, match=r"accel\.run_job"):
        _writer(tmp_path, store, {}).handle(TASK_RUN_JOB, {})


def test_decode_refuses_non_json_messages() -> None:
    with pytest.raises(ConfigError):
        writer.decode_message(json.dumps({"content-type": "application/x-python-serialize", "body": ""}).encode())
    with pytest.raises(ConfigError):
        writer.decode_message(b"not json")


@pytest.mark.redis
def test_intake_takes_celery_messages_in_order_and_a_dead_writers_batch_comes_back(redis_url: str) -> None:
    import redis

    # Given three results sent by name through a real Celery app (as the workers do)
    settings = Settings(broker_url=redis_url)
    app = make_app(settings)
    plan = _dry_plan("run-i", 3)
    for spec in plan.jobs:
        tasks.send_result(app, settings, _done(spec))
    client = redis.Redis.from_url(redis_url)
    intake = writer.Intake(client, "results")
    # When a writer claims them and dies before settling
    batch = intake.claim(10)
    keys = [writer.decode_message(raw)[1]["result"]["key"] for raw in batch]
    assert keys == [j["key"] for j in plan.jobs]
    # Then the next writer gets the same batch again, in the same order, before anything new
    assert writer.Intake(client, "results").claim(10) == batch
    intake.settle()
    assert intake.claim(10, wait_s=0.1) == []


@pytest.mark.redis
def test_only_one_writer_per_broker(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    first = writer.WriterLock(client)
    first.acquire()
    with pytest.raises(BrokerError, match="another writer holds this broker"):
        writer.WriterLock(client).acquire()
    first.release()
    writer.WriterLock(client).acquire()

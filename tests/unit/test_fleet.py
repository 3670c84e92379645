"""The fleet's parts without workers: Celery settings, pinning, node names, the writer and its intake.

Redis-backed tests use the real redis-server of the session fixture; the writer writes a real DuckDB
store. Worker processes are exercised in ``tests/integration/test_fleet.py``.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from accelerate_core import broker, wire
from accelerate_core.config import Settings, TimeLimit
from accelerate_core.constants import (
    DELIVERIES_PREFIX,
    DELIVERIES_TTL_S,
    ERR_BAD_SIGNATURE,
    ERR_REDELIVERY_CAP,
    ERR_UNSIGNED,
    ERR_VERSION_SKEW,
    ERR_WORKER,
    STATUS_DONE,
    STATUS_FAILED,
    TASK_CANCEL_RUN,
    TASK_RECORD_RESULT,
    TASK_RECORD_RUN,
    TASK_REGISTER_WORKER,
    TASK_RUN_JOB,
    WRITER_LOCK_KEY,
)
from accelerate_core.contracts import (
    DeadLetter,
    JobResult,
    JobSpec,
    RunParams,
    RunPlan,
    StatusSnapshot,
    WorkerInfo,
    job_key,
)
from accelerate_core.errors import (
    BrokerError,
    ConfigError,
    ContractError,
    HardwareUnavailableError,
    LockLostError,
    SignatureError,
    UnknownRunError,
)
from accelerate_core.job_message import job_labels
from accelerate_core.limits import backstop_limits, visibility_timeout_s
from accelerate_core.signing import FleetKey
from accelerate_core.store import ResultsStore
from scheduler.celery_client import client_app
from scheduler.cli.fleet import flower_env, node_plan, parse_devices
from tests.support.fleet_key import FLEET_KEY, FLEET_KEY_HEX
from workers import keeper, pinning, tasks, writer
from workers.app import make_app

NEWER_MINOR = f"{wire.SCHEMA_MAJOR}.{wire.SCHEMA_MINOR + 1}"
NEWER_MAJOR = f"{wire.SCHEMA_MAJOR + 1}.0"


def _dry_plan(run_id: str, n: int, sleep_s: float = 0.0) -> RunPlan:
    jobs = tuple(
        JobSpec(
            key=job_key(run_id, f"m{i}", "cpu", "dry"),
            run_id=run_id,
            model_type=f"m{i}",
            hardware="cpu",
            kind="dry",
            sleep_s=sleep_s,
        )
        for i in range(n)
    )
    return RunPlan(run_id=run_id, phase="unit", created_at=time.time(), params=RunParams(kind="dry"), jobs=jobs)


def _done(spec: JobSpec, worker: str = "cpu0@h") -> JobResult:
    return JobResult(
        key=spec.key,
        run_id=spec.run_id,
        model_type=spec.model_type,
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
        broker_url="redis://127.0.0.1:1/0",
        time_limits={"test": TimeLimit(100, 600), "dry": TimeLimit(1, 2)},
        fleet_key=FLEET_KEY_HEX,
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
    longest_hard = max(backstop_limits(t.hard_s)[1] for t in settings.time_limits.values())
    assert conf.broker_transport_options["visibility_timeout"] > longest_hard >= 600
    # and looks for such jobs on every restore tick (kombu's default looks on every 10th: 100 s apart)
    assert conf.broker_transport_options["unacked_restore_throttle"] == 1
    # and task events are on for Flower, with no result backend
    assert conf.worker_send_task_events is True and conf.task_send_sent_event is True
    assert conf.result_backend is None
    assert conf.task_routes[TASK_RECORD_RESULT] == {"queue": "results"}
    assert conf.task_routes[TASK_RECORD_RUN] == {"queue": "results"}


def test_run_job_task_has_soft_below_hard_limits_above_the_runners() -> None:
    settings = Settings(broker_url="redis://127.0.0.1:1/0", fleet_key=FLEET_KEY_HEX)
    task = make_app(settings).tasks[TASK_RUN_JOB]
    assert task.acks_late and task.reject_on_worker_lost
    assert settings.longest_hard_limit_s < task.soft_time_limit < task.time_limit
    visibility = make_app(settings).conf.broker_transport_options["visibility_timeout"]
    assert visibility == visibility_timeout_s(t.hard_s for t in settings.time_limits.values())
    for limit in settings.time_limits.values():
        soft, hard = backstop_limits(limit.hard_s)
        assert limit.hard_s < soft < hard < visibility


def test_app_without_broker_is_a_one_line_config_error() -> None:
    with pytest.raises(ConfigError, match="ACCEL_BROKER_URL"):
        make_app(Settings())


def test_a_worker_app_without_the_fleet_key_is_a_one_line_config_error() -> None:
    with pytest.raises(ConfigError, match="no fleet key: set ACCEL_FLEET_KEY"):
        make_app(Settings(broker_url="redis://127.0.0.1:1/0"))


def test_unreachable_broker_is_one_line_naming_host_and_fix() -> None:
    with pytest.raises(BrokerError) as info:
        broker.check("redis://:secret@127.0.0.1:1/0", timeout_s=1)
    text = str(info.value)
    assert "\n" not in text and "secret" not in text
    assert text == (
        "cannot reach redis at redis://127.0.0.1:1 (connection refused): start redis-server or fix ACCEL_BROKER_URL"
    )
    assert (
        broker.broker_error("redis://h:7/0", TimeoutError("timed out"))
        .args[0]
        .startswith("cannot reach redis at redis://h:7")
    )


def test_dispatch_to_an_unreachable_broker_is_one_line() -> None:
    from scheduler.remote import run_remote

    settings = Settings(broker_url="redis://127.0.0.1:1/0", fleet_key=FLEET_KEY_HEX)
    with pytest.raises(BrokerError, match=r"^cannot reach redis at redis://127\.0\.0\.1:1 \(connection refused\)"):
        run_remote(settings, _dry_plan("r0", 1), wait=False)


@pytest.mark.redis
def test_dispatch_without_the_fleet_key_is_one_line_and_sends_nothing(redis_url: str) -> None:
    from scheduler.remote import dispatch

    with pytest.raises(ConfigError, match=r"^no fleet key: set ACCEL_FLEET_KEY"):
        dispatch(Settings(broker_url=redis_url), _dry_plan("r0", 1))
    assert broker.connect(redis_url).dbsize() == 0


@pytest.mark.redis
def test_dispatch_sends_a_short_first_pipeline_then_full_ones_every_job_once_in_order(redis_url: str) -> None:
    from scheduler.remote import SEND_BATCH, SEND_FIRST, dispatch, send_batches

    # Given a run of more jobs than a short first pipeline and two full ones hold
    plan = _dry_plan("sent-in-order", SEND_FIRST + 2 * SEND_BATCH + 7)
    sizes = [len(b) for b in send_batches(plan.jobs)]
    assert sizes == [SEND_FIRST, SEND_BATCH, SEND_BATCH, 7]
    # When it is dispatched
    client = broker.connect(redis_url)
    client.flushdb()
    settings = Settings(broker_url=redis_url, fleet_key=FLEET_KEY_HEX)
    assert dispatch(settings, plan) == len(plan.jobs)
    # Then the queue holds every job once, in plan order (LPUSH: the oldest is the list's last)
    queued = [json.loads(raw)["headers"]["id"] for raw in client.lrange(settings.queue_for("cpu"), 0, -1)[::-1]]
    assert queued == [j.key for j in plan.jobs]


def test_job_labels_are_short_and_readable() -> None:
    spec = _dry_plan("r1", 1).jobs[0]
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
    ctx = tasks.WorkerContext(settings, "cpu0@h", "h", tasks.DeliveryCounter(client))
    spec = _dry_plan("r1", 1).jobs[0]
    # Given a first delivery: attempt 1, nothing counted in Redis
    first = tasks.handle_delivery(spec, ctx, redelivered=False)
    assert (first.status, first.attempt, first.worker_id) == (STATUS_DONE, 1, "cpu0@h")
    assert client.get(DELIVERIES_PREFIX + spec.key) is None
    # When it is redelivered: attempt 2 runs (cap 2)
    assert tasks.handle_delivery(spec, ctx).attempt == 2
    # Then the next redelivery is beyond the cap: failed with redelivery-cap, not run
    capped = tasks.handle_delivery(spec, ctx)
    assert (capped.status, capped.error_class, capped.attempt) == (STATUS_FAILED, ERR_REDELIVERY_CAP, 3)
    assert 0 < client.ttl(DELIVERIES_PREFIX + spec.key) <= DELIVERIES_TTL_S


@pytest.mark.redis
def test_a_job_message_the_worker_cannot_decode_still_becomes_its_row(redis_url: str) -> None:
    import redis

    ctx = tasks.WorkerContext(
        Settings(broker_url=redis_url), "cpu0@h", "h", tasks.DeliveryCounter(redis.Redis.from_url(redis_url))
    )
    spec = _dry_plan("r2", 1).jobs[0]
    encoded = wire.encode(spec)

    def run(task_id: str, payload: object) -> JobResult | None:
        kwargs = {"spec": payload, "sig": FLEET_KEY.sign(TASK_RUN_JOB, payload)}
        return tasks.run_message(task_id, kwargs, ctx, key=FLEET_KEY, redelivered=False)

    # Given a job of a newer major schema: a version-skew row naming both versions, keyed by the task id
    skew = run(spec.key, {**encoded, "v": NEWER_MAJOR, "renamed": 1})
    assert skew is not None and (skew.key, skew.status, skew.error_class) == (spec.key, STATUS_FAILED, ERR_VERSION_SKEW)
    assert NEWER_MAJOR in (skew.error_message or "") and wire.SCHEMA_VERSION in (skew.error_message or "")
    assert (skew.run_id, skew.model_type, skew.hardware, skew.kind) == ("r2", "m0", "cpu", "dry")
    # a message with no payload at all (another kwarg name) is the same: the task id names the job
    assert run(spec.key, None).error_class == ERR_WORKER  # type: ignore[union-attr]
    # a newer minor with an unknown optional key runs normally
    ran = run(spec.key, {**encoded, "v": NEWER_MINOR, "signature": "x"})
    assert ran is not None and ran.status == STATUS_DONE
    # and a task id that is no job key names nothing to record
    assert run("not-a-key", {"v": NEWER_MAJOR}) is None
    # and an unsigned or forged one is refused before it is read: its row says so, nothing ran
    unsigned = tasks.run_message(spec.key, {"spec": encoded}, ctx, key=FLEET_KEY, redelivered=False)
    assert unsigned is not None and (unsigned.status, unsigned.error_class) == (STATUS_FAILED, ERR_UNSIGNED)
    forged = tasks.run_message(spec.key, {"spec": encoded, "sig": "0" * 64}, ctx, key=FLEET_KEY, redelivered=False)
    assert forged is not None and forged.error_class == ERR_BAD_SIGNATURE and forged.worker_id == "cpu0@h"


# -- the writer ----------------------------------------------------------------------------------------


def _writer(tmp_path: Path, store: ResultsStore, published: dict[str, StatusSnapshot]) -> writer.ResultWriter:
    settings = Settings(results_db=tmp_path / "r.duckdb", reports_dir=tmp_path / "reports")
    publish = lambda snap: published.__setitem__(snap.run_id, snap)  # noqa: E731
    return writer.ResultWriter(store, settings, publish=publish, key=FLEET_KEY)


def _signed(name: str, message: Any) -> dict[str, Any]:
    """``record_result`` keyword arguments as a worker (``result``) or the scheduler (``results``) signs them."""
    return FLEET_KEY.envelope(TASK_RECORD_RESULT, name, message)


def test_writer_records_run_and_results_once_then_reports_the_finished_run(tmp_path: Path) -> None:
    published: dict[str, StatusSnapshot] = {}
    plan = _dry_plan("run-w", 3)
    with ResultsStore.open(tmp_path / "r.duckdb") as store:
        w = _writer(tmp_path, store, published)
        # Given the run recorded and two results, one of them twice (a redelivery)
        w.handle(TASK_RECORD_RUN, FLEET_KEY.envelope(TASK_RECORD_RUN, "plan", wire.encode(plan)))
        w.handle(TASK_RECORD_RESULT, _signed("result", wire.encode(_done(plan.jobs[0]))))
        w.handle(
            TASK_RECORD_RESULT, _signed("results", [wire.encode(_done(plan.jobs[0])), wire.encode(_done(plan.jobs[1]))])
        )
        assert w.flush() == 3
        # Then the run is not done yet, and nothing is reported
        assert not store.is_phase_done("run-w") and "run-w" not in w.reported
        # When the last result lands
        w.handle(TASK_RECORD_RESULT, _signed("result", wire.encode(_done(plan.jobs[2], "cpu1@h"))))
        w.flush()
        rows = store.query("SELECT job_key, count(*) FROM jobs WHERE run_id = 'run-w' GROUP BY job_key")
        # Then there is one row per job, the run is complete, its report and snapshot are written
        assert sorted(n for _, n in rows) == [1, 1, 1]
        assert store.get_run("run-w").status == "complete"
        assert (tmp_path / "reports" / "run-w" / "report.json").is_file()
        snap = published["run-w"]
        assert snap.phase_done and snap.terminal == 3 and (snap.report_dir or "").endswith("run-w")
        # and the file snapshot next to the DB is the same snapshot
        from accelerate_core.store import read_status_snapshot

        assert read_status_snapshot("run-w", tmp_path) == snap


def test_writer_records_a_newer_minor_result_and_a_newer_major_one_as_version_skew(tmp_path: Path) -> None:
    plan = _dry_plan("run-v", 3)
    with ResultsStore.open(tmp_path / "r.duckdb") as store:
        w = _writer(tmp_path, store, {})
        w.handle(TASK_RECORD_RUN, FLEET_KEY.envelope(TASK_RECORD_RUN, "plan", wire.encode(plan)))
        # Given a result of a newer minor schema with an optional key this writer does not know
        newer = {**wire.encode(_done(plan.jobs[0])), "v": NEWER_MINOR, "gpu_clock_mhz": 1980}
        # and one of a newer major schema, and one with no schema version at all
        skewed = {**wire.encode(_done(plan.jobs[1])), "v": NEWER_MAJOR}
        unversioned = {k: v for k, v in wire.encode(_done(plan.jobs[2])).items() if k != "v"}
        w.handle(TASK_RECORD_RESULT, _signed("results", [newer, skewed, unversioned]))
        w.flush()
        rows = dict(
            (k, (s, c, m)) for k, s, c, m in store.query("SELECT job_key, status, error_class, error_message FROM jobs")
        )
    # Then the first is recorded as sent; the others are version-skew rows naming both versions
    assert rows[plan.jobs[0].key][:2] == (STATUS_DONE, None)
    for job, theirs in ((plan.jobs[1], NEWER_MAJOR), (plan.jobs[2], wire.UNVERSIONED)):
        status, error_class, message = rows[job.key]
        assert (status, error_class) == (STATUS_FAILED, ERR_VERSION_SKEW)
        assert theirs in message and wire.SCHEMA_VERSION in message


def test_writer_records_the_jobs_of_a_run_it_cannot_decode(tmp_path: Path) -> None:
    plan = _dry_plan("run-s", 2)
    with ResultsStore.open(tmp_path / "r.duckdb") as store:
        w = _writer(tmp_path, store, {})
        # Given a run message of a newer major schema
        w.handle(TASK_RECORD_RUN, FLEET_KEY.envelope(TASK_RECORD_RUN, "plan", {**wire.encode(plan), "v": NEWER_MAJOR}))
        w.flush()
        # Then the run is recorded by its id, each of its jobs has a version-skew row, and the run completes
        classes = store.query("SELECT error_class, count(*) FROM jobs WHERE run_id = 'run-s' GROUP BY ALL")
        assert classes == [(ERR_VERSION_SKEW, 2)]
        assert store.get_run("run-s").status == "complete"
        # while a run message that names no job is refused, not guessed at
        with pytest.raises(ContractError, match="schema"):
            w.handle(TASK_RECORD_RUN, FLEET_KEY.envelope(TASK_RECORD_RUN, "plan", {"v": NEWER_MAJOR}))
        with pytest.raises(ContractError, match="WorkerInfo"):
            w.handle(TASK_REGISTER_WORKER, FLEET_KEY.envelope(TASK_REGISTER_WORKER, "info", {"v": wire.SCHEMA_VERSION}))


def test_writer_refuses_a_run_message_not_signed_with_the_fleet_key(tmp_path: Path) -> None:
    # The reconciler re-sends a recorded run's lost jobs signed: a forged run must never be recorded.
    plan = _dry_plan("run-forged", 2)
    with ResultsStore.open(tmp_path / "r.duckdb") as store:
        w = _writer(tmp_path, store, {})
        forged = [{"plan": wire.encode(plan)}, {"plan": wire.encode(plan), "sig": "0" * 64},
                  FleetKey(bytes(32)).envelope(TASK_RECORD_RUN, "plan", wire.encode(plan)),
                  {**FLEET_KEY.envelope(TASK_RUN_JOB, "plan", wire.encode(plan))}]  # fmt: skip
        for kwargs in forged:
            with pytest.raises(SignatureError):
                w.handle(TASK_RECORD_RUN, kwargs)
        assert store.query("SELECT count(*) FROM runs")[0][0] == 0
        assert store.query("SELECT count(*) FROM jobs")[0][0] == 0


def test_writer_refuses_results_and_cancels_not_signed_with_the_fleet_key(tmp_path: Path) -> None:
    # Any broker user can put a record_result or cancel_run on `results`: only the fleet's are applied.
    plan = _dry_plan("run-fr", 2)
    with ResultsStore.open(tmp_path / "r.duckdb") as store:
        w = _writer(tmp_path, store, {})
        w.handle(TASK_RECORD_RUN, FLEET_KEY.envelope(TASK_RECORD_RUN, "plan", wire.encode(plan)))
        fake = wire.encode(_done(plan.jobs[0]))
        other = FleetKey(bytes(32))
        forged = [{"result": fake}, {"results": [fake]}, {"result": fake, "sig": "0" * 64},
                  other.envelope(TASK_RECORD_RESULT, "result", fake),
                  other.envelope(TASK_RECORD_RESULT, "results", [fake]),
                  FLEET_KEY.envelope(TASK_RECORD_RUN, "result", fake),  # a signature made for another task
                  {**_signed("result", wire.encode(_done(plan.jobs[1]))), "result": fake}]  # fmt: skip
        for kwargs in forged:
            with pytest.raises(SignatureError):
                w.handle(TASK_RECORD_RESULT, kwargs)
        # a signed result is taken, and an unsigned `results` beside it is never read
        w.handle(TASK_RECORD_RESULT, {**_signed("result", wire.encode(_done(plan.jobs[1]))), "results": [fake]})
        # a signed list moved under `result` (or one row under `results`) is refused by shape
        with pytest.raises(ContractError, match="'result' is a list"):
            w.handle(TASK_RECORD_RESULT, {"result": [fake], "sig": _signed("results", [fake])["sig"]})
        w.flush()
        assert store.query("SELECT job_key, status FROM jobs WHERE status != 'queued'") == [(plan.jobs[1].key, "done")]
        # and a cancel that is unsigned, forged, or another message's signature cancels nothing
        for kwargs in [{"run_id": "run-fr"}, other.envelope(TASK_CANCEL_RUN, "run_id", "run-fr"),
                       FLEET_KEY.envelope(TASK_RECORD_RUN, "run_id", "run-fr")]:  # fmt: skip
            with pytest.raises(SignatureError):
                w.handle(TASK_CANCEL_RUN, kwargs)
        assert store.query("SELECT count(*) FROM jobs WHERE status = 'cancelled'") == [(0,)]
        assert store.get_run("run-fr").status != "complete"


def test_writer_dead_letters_a_forged_message_naming_why_and_writes_the_rest_of_the_batch(tmp_path: Path) -> None:
    letters: list[DeadLetter] = []
    plan = _dry_plan("run-fb", 2)
    with ResultsStore.open(tmp_path / "r.duckdb") as store:
        w = _writer(tmp_path, store, {})
        w.dead_letter = letters.append
        fake = wire.encode(_done(plan.jobs[0]))
        batch = [
            _message(TASK_RECORD_RUN, FLEET_KEY.envelope(TASK_RECORD_RUN, "plan", wire.encode(plan))),
            _message(TASK_RECORD_RESULT, {"result": fake}),  # an older worker's: unsigned
            _message(TASK_RECORD_RESULT, {"result": fake, "sig": "ab" * 32}),
            _message(TASK_CANCEL_RUN, {"run_id": "run-fb"}),
            _message(TASK_RECORD_RESULT, _signed("result", wire.encode(_done(plan.jobs[1])))),
        ]
        assert writer.process_batch(w, batch) == 2
        assert [d.reason.split(":")[0] for d in letters] == ["unsigned", "bad-signature", "unsigned"]
        assert "upgrade" in letters[0].reason and letters[0].task == TASK_RECORD_RESULT
        assert store.query("SELECT status, count(*) FROM jobs GROUP BY ALL ORDER BY ALL") == [
            ("done", 1),
            ("queued", 1),
        ]


def _message(task: str, kwargs: dict[str, Any]) -> bytes:
    """A Celery (protocol 2, JSON) message as kombu puts it on a Redis list."""
    body = json.dumps([[], kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
    return json.dumps({"body": body, "content-type": "application/json", "headers": {"task": task}}).encode()


def test_writer_refuses_unknown_messages(tmp_path: Path) -> None:
    with ResultsStore.open(tmp_path / "r.duckdb") as store, pytest.raises(ContractError, match=r"accel\.run_job"):
        _writer(tmp_path, store, {}).handle(TASK_RUN_JOB, {})


def test_decode_refuses_non_json_messages() -> None:
    with pytest.raises(ContractError):
        writer.decode_message(json.dumps({"content-type": "application/x-python-serialize", "body": ""}).encode())
    with pytest.raises(ContractError):
        writer.decode_message(b"not json")


@pytest.mark.redis
def test_the_writer_registers_a_nodes_signed_inventory_and_dead_letters_forged_ones(
    redis_url: str, tmp_path: Path
) -> None:
    import redis

    # Given a real node's registration, sent as a node sends it once ready, between two forged ones (a fake H100
    # node that would pose as hardware in the reports): unsigned, and signed with another key
    settings = Settings(broker_url=redis_url, fleet_key=FLEET_KEY_HEX, results_db=tmp_path / "r.duckdb")
    fake = wire.encode(WorkerInfo("cuda0@fake", "fake", "cuda", 0, "NVIDIA H100 80GB HBM3", 81_559))
    app = make_app(settings)
    try:
        app.send_task(TASK_REGISTER_WORKER, kwargs={"info": fake}, queue=settings.results_queue)
        tasks.announce(app, settings, "cpu0@real")
        other = FleetKey(bytes(range(32)))
        app.send_task(TASK_REGISTER_WORKER, kwargs=other.envelope(TASK_REGISTER_WORKER, "info", fake),
                      queue=settings.results_queue)  # fmt: skip
    finally:
        app.close()
    # When the writer takes them off the results queue
    letters: list[DeadLetter] = []
    with ResultsStore.open(settings.results_db) as store:
        w = writer.ResultWriter(store, settings, key=FLEET_KEY, dead_letter=letters.append)
        batch = writer.Intake(redis.Redis.from_url(redis_url), settings.results_queue).claim(10)
        assert len(batch) == 3 and writer.process_batch(w, batch) == 1
        registered = store.query("SELECT worker_id, hardware FROM workers")
    # Then only the real node is registered, and both forged ones are dead letters saying why
    assert registered == [("cpu0@real", "cpu")]
    assert sorted(d.reason.split(":")[0] for d in letters) == ["bad-signature", "unsigned"]
    assert {d.task for d in letters} == {TASK_REGISTER_WORKER}


@pytest.mark.redis
def test_intake_takes_celery_messages_in_order_and_a_dead_writers_batch_comes_back(redis_url: str) -> None:
    import redis

    # Given three results sent as the workers send them
    settings = Settings(broker_url=redis_url, fleet_key=FLEET_KEY_HEX)
    plan = _dry_plan("run-i", 3)
    for spec in plan.jobs:
        tasks.send_result(settings, _done(spec))
    client = redis.Redis.from_url(redis_url)
    intake = writer.Intake(client, "results")
    # When a writer claims them and dies before settling
    batch = intake.claim(10)
    keys = [writer.decode_message(raw)[1]["result"]["key"] for raw in batch]
    assert keys == [j.key for j in plan.jobs]
    # Then the next writer gets the same batch again, in the same order, before anything new
    assert writer.Intake(client, "results").claim(10) == batch
    intake.settle(batch)
    assert intake.claim(10, wait_s=0.1) == []


@pytest.mark.redis
def test_a_short_batch_lingers_once_and_takes_what_arrived_meanwhile_in_order(redis_url: str) -> None:
    import redis

    # Given one message on the queue, and two more that arrive while the writer lingers
    client = redis.Redis.from_url(redis_url)
    client.lpush("results", b"m1")
    intake = writer.Intake(client, "results")
    pauses: list[float] = []

    def pause(s: float) -> None:
        pauses.append(s)
        client.lpush("results", b"m2", b"m3")

    # When it claims with a linger
    batch = intake.claim(10, wait_s=0.1, linger_s=0.05, pause=pause)
    # Then it paused once and took all three, oldest first, all held in the processing list until settled
    assert pauses == [0.05]
    assert batch == [b"m1", b"m2", b"m3"]
    assert client.llen(intake.processing_key) == 3
    # And a full batch does not linger
    client.lpush("results", b"m4", b"m5")
    intake.settle(batch)
    assert intake.claim(2, linger_s=0.05, pause=pause) == [b"m4", b"m5"] and pauses == [0.05]


@pytest.mark.redis
def test_settling_a_batch_keeps_what_a_stalled_writer_claimed_meanwhile(redis_url: str) -> None:
    import redis

    # Given a claimed batch, and a message a stalled writer moved into the processing list as it woke up
    client = redis.Redis.from_url(redis_url)
    client.lpush("results", b"m1", b"m2")
    intake = writer.Intake(client, "results")
    batch = intake.claim(10)
    client.lpush(intake.processing_key, b"stray")
    # When the batch is acknowledged
    intake.settle(batch)
    # Then only its own messages leave; the stray one is the next claim
    assert intake.claim(10) == [b"stray"]


@pytest.mark.redis
def test_a_second_writer_waits_for_the_first_ones_lock_saying_so_once_and_fences_it_out(redis_url: str) -> None:
    import redis

    # Given a writer holding the lock that stops renewing it (killed, or stalled)
    client = redis.Redis.from_url(redis_url)
    first = keeper.WriterLock(client, ttl_s=2)
    assert first.acquire(threading.Event())
    # When a second writer starts
    said: list[str] = []
    second = keeper.WriterLock(client, ttl_s=2)
    assert second.acquire(threading.Event(), say=said.append)
    # Then it waited for the lock to expire, saying so in one line, and took it
    assert len(said) == 1 and "another writer holds this broker" in said[0] and "waiting" in said[0]
    second.check()
    # And the first can neither renew nor pass the fence, nor release the second's lock
    with pytest.raises(LockLostError, match="lost its lock"):
        first.check()
    with pytest.raises(LockLostError):
        first.renew()
    first.release()
    second.check()
    second.release()
    assert not client.exists(WRITER_LOCK_KEY)


@pytest.mark.redis
def test_a_writer_waiting_for_the_lock_stops_when_asked(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    assert keeper.WriterLock(client, ttl_s=60).acquire(threading.Event())
    stop = threading.Event()
    stop.set()
    assert keeper.WriterLock(client, ttl_s=60).acquire(stop, say=lambda _: None) is False


def test_writer_cancels_a_run_its_unfinished_jobs_cancelled_and_revoked_and_reports_it(tmp_path: Path) -> None:
    published: dict[str, StatusSnapshot] = {}
    revoked: list[list[str]] = []
    plan = _dry_plan("run-c", 3)
    with ResultsStore.open(tmp_path / "r.duckdb") as store:
        settings = Settings(results_db=tmp_path / "r.duckdb", reports_dir=tmp_path / "reports")
        w = writer.ResultWriter(store, settings, publish=lambda s: published.__setitem__(s.run_id, s),
                                revoke=revoked.append, key=FLEET_KEY)  # fmt: skip
        # Given a run with one job done and a result still held when the cancel arrives
        w.handle(TASK_RECORD_RUN, FLEET_KEY.envelope(TASK_RECORD_RUN, "plan", wire.encode(plan)))
        w.handle(TASK_RECORD_RESULT, _signed("result", wire.encode(_done(plan.jobs[0]))))
        # When it is cancelled
        w.handle(TASK_CANCEL_RUN, FLEET_KEY.envelope(TASK_CANCEL_RUN, "run_id", "run-c"))
        # Then the result sent before the cancel counts, the other two are cancelled and revoked
        assert len(revoked) == 1 and sorted(revoked[0]) == sorted([plan.jobs[1].key, plan.jobs[2].key])
        snap = published["run-c"]
        assert dict(snap.by_status) == {"done": 1, "cancelled": 2} and snap.phase_done
        assert store.get_run("run-c").status == "complete" and snap.report_dir
        # and a cancel of an unknown run, or of a malformed id, is refused
        with pytest.raises(UnknownRunError):
            w.handle(TASK_CANCEL_RUN, FLEET_KEY.envelope(TASK_CANCEL_RUN, "run_id", "no-such-run"))
        with pytest.raises(ConfigError):
            w.handle(TASK_CANCEL_RUN, FLEET_KEY.envelope(TASK_CANCEL_RUN, "run_id", "../x"))

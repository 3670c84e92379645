"""Broker sanity at start, and a full or vanished broker met by a worker (accelerate_core.broker, workers.transport,
workers.tasks.send_result), against a real redis-server whose settings each test changes and restores."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from accelerate_core import broker
from accelerate_core.contracts import JobResult
from accelerate_core.errors import ConfigError
from tests.support.broker_memory import fill_broker, free_broker
from tests.support.fleet_key import FLEET_KEY_HEX
from tests.support.redis_server import RedisServer
from workers import transport

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of this module's own: its eviction policy and persistence are changed here."""
    s = RedisServer(tmp_path_factory.mktemp("redis-sanity"))
    s.start()
    yield s
    s.stop()


@pytest.fixture
def client(server: RedisServer) -> Iterator[object]:
    import redis

    c = redis.Redis.from_url(server.fresh())
    yield c
    c.config_set("maxmemory-policy", "noeviction")
    c.config_set("appendonly", "yes")
    c.config_set("save", "")
    c.config_set("maxmemory", 0)
    c.close()


@pytest.mark.parametrize("policy", ["allkeys-lru", "allkeys-random", "volatile-lru", "volatile-ttl"])
def test_an_evicting_broker_is_refused_in_one_line_naming_the_fix(server: RedisServer, client, policy: str) -> None:
    # Given a broker that would evict keys (queued jobs among them) when full
    client.config_set("maxmemory-policy", policy)
    # When a fleet process starts on it, Then it is refused: exit 2, one line, the policy and the fix named
    with pytest.raises(ConfigError) as info:
        broker.verify(server.url)
    text = str(info.value)
    assert info.value.exit_code == 2 and "\n" not in text
    assert policy in text and "maxmemory-policy noeviction" in text and f"127.0.0.1:{server.port}" in text


def test_a_broker_that_keeps_nothing_on_disk_is_a_one_line_warning(
    server: RedisServer, client, caplog: pytest.LogCaptureFixture
) -> None:
    # Given the fleet's setting (AOF on): no word
    with caplog.at_level(logging.WARNING, logger="accelerate_core.broker"):
        broker.verify(server.url)
    assert caplog.records == []
    # Given RDB rules but no AOF: still kept on disk, no word
    client.config_set("appendonly", "no")
    client.config_set("save", "3600 1")
    with caplog.at_level(logging.WARNING, logger="accelerate_core.broker"):
        broker.verify(server.url)
    assert caplog.records == []
    # When neither AOF nor RDB is on
    client.config_set("save", "")
    with caplog.at_level(logging.WARNING, logger="accelerate_core.broker"):
        broker.verify(server.url)
    # Then one warning line says what a restart costs and what to do
    (record,) = caplog.records
    line = record.getMessage()
    assert "\n" not in line and "keeps nothing on disk" in line and "appendonly yes" in line and "--resume" in line


def test_durability_unreadable_parts_are_unknown_not_a_warning() -> None:
    # CONFIG denied (an ACL): RDB rules unknown, so a broker without AOF is not called diskless
    assert broker.sanity("redis://h:1/0", broker.Durability("noeviction", False, None)) is None
    assert broker.sanity("redis://h:1/0", broker.Durability(None, None, None)) is None


def test_a_full_broker_is_told_apart_from_other_errors(client) -> None:
    import redis

    fill_broker(client)
    # Given a write the full broker refuses, alone and inside a transaction (as kombu's are)
    with pytest.raises(redis.RedisError) as alone:
        client.lpush("results", b"m")
    with pytest.raises(redis.RedisError) as in_transaction:
        client.pipeline().lpush("results", b"m").llen("results").execute()
    # Then both are "full" and transient; a plain command error is neither
    for e in (alone.value, in_transaction.value):
        assert broker.is_full(e) and broker.is_transient(e)
    with pytest.raises(redis.ResponseError) as other:
        client.execute_command("NOSUCHCOMMAND")
    assert not broker.is_full(other.value) and not broker.is_transient(other.value)
    assert broker.is_transient(redis.ConnectionError("Connection refused")) and not broker.is_full(OSError())


def test_a_step_the_full_broker_refuses_waits_until_there_is_room(client, caplog: pytest.LogCaptureFixture) -> None:
    fill_broker(client)
    waits: list[float] = []

    def sleep(s: float) -> None:
        # the operator frees memory after the third wait
        waits.append(s)
        if len(waits) == 3:
            free_broker(client)

    # When a node's bookkeeping write meets the full broker
    with caplog.at_level(logging.WARNING, logger="workers.transport"):
        n = transport.wait_out_full_broker(lambda: client.lpush("acc:test", b"m"), "record the job it took",
                                           sleep=sleep)  # fmt: skip
    # Then it waited with growing pauses, said so once, and the write went through once room came back
    assert n == 1 and waits == [0.2, 0.4, 0.8]
    assert len(caplog.records) == 1 and "broker is full" in caplog.records[0].getMessage()
    # and anything else is raised at once
    with pytest.raises(ZeroDivisionError):
        transport.wait_out_full_broker(lambda: 1 // 0, "divide", sleep=sleep)


def test_a_result_the_full_broker_refuses_is_sent_again_until_it_is_taken(client, tmp_path: Path) -> None:
    from accelerate_core.config import Settings
    from workers.tasks import send_result

    url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"
    settings = Settings(broker_url=url, results_db=tmp_path / "r.duckdb", fleet_key=FLEET_KEY_HEX)
    result = JobResult(key="r:m:cpu:dry:0", run_id="r", model_type="m", hardware="cpu", kind="dry", status="done")
    fill_broker(client)
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        if len(waits) == 4:
            free_broker(client)

    # When the result meets the full broker, Then it is sent again with backoff until the broker takes it
    send_result(settings, result, sleep=sleep)
    assert waits == [0.5, 1.0, 2.0, 4.0]
    assert client.llen(settings.results_queue) == 1


@pytest.mark.parametrize("command", [["worker", "--hardware", "cpu"], ["writer"]])
def test_a_node_on_an_evicting_broker_exits_2_with_one_line(
    server: RedisServer, client, tmp_path: Path, command: list[str]
) -> None:
    import os
    import subprocess
    import sys

    client.config_set("maxmemory-policy", "allkeys-lru")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
    env.update(ACCEL_BROKER_URL=server.url, ACCEL_RESULTS_DB=str(tmp_path / "r.duckdb"), ACCEL_FLEET_KEY=FLEET_KEY_HEX)
    # When `accel worker` / `accel writer` starts on a broker that would evict jobs
    done = subprocess.run([sys.executable, "-m", "scheduler", *command], env=env, capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    # Then it exits 2 with one line naming the policy, and no traceback
    assert done.returncode == 2, done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("accel: error:")]
    assert len(errors) == 1 and "allkeys-lru" in errors[0] and "noeviction" in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_a_redelivery_is_counted_once_the_full_broker_has_room(client, monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.tasks import DeliveryCounter

    fill_broker(client)
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        free_broker(client)

    monkeypatch.setattr(transport.time, "sleep", sleep)
    # When a redelivered job is counted while the broker is full, Then the count waits for room (no failure)
    assert DeliveryCounter(client).count("r:m:cpu:dry:0") == 1  # type: ignore[arg-type]
    assert waits == [0.2]


def test_a_run_sent_to_a_full_broker_is_refused_in_one_line_saying_what_to_do(server: RedisServer, client) -> None:
    from accelerate_core.config import Settings
    from accelerate_core.errors import BrokerError
    from scheduler.remote import dispatch
    from tests.faults.harness import dry_plan

    fill_broker(client)
    # When `accel run` sends a run to a full broker
    with pytest.raises(BrokerError) as info:
        dispatch(Settings(broker_url=server.url, fleet_key=FLEET_KEY_HEX), dry_plan("full-run", 2))
    # Then one line says it is full and what frees it (not "cannot reach")
    text = str(info.value)
    assert "\n" not in text and "is full" in text and "accel writer" in text and "cannot reach" not in text

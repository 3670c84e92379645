"""The broker agreements (accelerate_core.broker) against a real password-protected redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from accelerate_core import broker
from accelerate_core.config import Settings
from accelerate_core.contracts import FailureRow, StatusSnapshot
from accelerate_core.errors import BrokerError, ConfigError
from tests.support.redis_server import RedisServer

PASSWORD = "s3cret-Pa55"

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server that requires a password, as deploy/redis.conf sets one."""
    server = RedisServer(tmp_path_factory.mktemp("redis-auth"), password=PASSWORD)
    server.start()
    yield server
    server.stop()


def _error(url: str) -> str:
    with pytest.raises(BrokerError) as info:
        broker.check(url, timeout_s=2)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_a_missing_password_is_one_line_saying_where_to_put_it(guarded: RedisServer) -> None:
    # Given a URL without the password the broker requires
    text = _error(f"redis://127.0.0.1:{guarded.port}/0")
    # Then the line says so and shows the URL shape to use
    assert text == (
        f"the broker at redis://127.0.0.1:{guarded.port} requires a password: put it in ACCEL_BROKER_URL as "
        f"redis://:PASSWORD@127.0.0.1:{guarded.port}/0"
    )


def test_a_wrong_password_is_one_line_that_never_shows_it(guarded: RedisServer) -> None:
    text = _error(f"redis://:not-the-password@127.0.0.1:{guarded.port}/0")
    assert text == (
        f"the broker at redis://127.0.0.1:{guarded.port} refused the password: fix the password in ACCEL_BROKER_URL"
    )
    assert "not-the-password" not in text and PASSWORD not in text


def test_the_right_password_connects_and_the_status_snapshot_round_trips(guarded: RedisServer) -> None:
    # Given the right password
    client = broker.connect(guarded.url)
    try:
        # When the writer publishes a snapshot, Then `accel status` reads back the same snapshot
        snap = StatusSnapshot(
            run_id="r1",
            phase="p",
            status="running",
            total=2,
            terminal=1,
            by_status={"done": 1, "queued": 1},
            by_hardware={"cpu": {"total": 2, "done": 1, "queued": 1}},
            failures=(FailureRow("bert", "cpu", "failed", "forward-error", "RuntimeError", "boom", 1.0),),
            failures_total=1,
        )
        broker.publish_status(client, snap)
        assert broker.read_status(client, "r1") == snap
        assert broker.read_status(client, "r2") is None
        client.set("acc:status:bad", b"{not json")
        assert broker.read_status(client, "bad") is None  # unreadable: logged, not a traceback
        assert int(client.ttl("acc:status:r1")) > 0
    finally:
        client.close()


def test_no_broker_configured_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ACCEL_BROKER_URL=redis://HOST:6379/0") as info:
        broker.require_url(Settings(results_db=tmp_path / "r.duckdb"))
    assert info.value.exit_code == 2

"""The broker password is set once (``ACCEL_BROKER_PASSWORD``) and joined to every broker URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from kombu.utils.url import url_to_parts

from accelerate_core import broker
from accelerate_core.config import Settings
from accelerate_core.errors import ConfigError
from tests.support.fleet_key import FLEET_KEY_HEX

ODD = "p@ss/w:rd?#%"


def test_the_password_joins_the_url_and_both_clients_read_it_back() -> None:
    settings = Settings.load(environ={"ACCEL_BROKER_URL": "redis://fleet:6379/0", "ACCEL_BROKER_PASSWORD": ODD})
    assert settings.broker_url is not None
    assert redis.connection.parse_url(settings.broker_url)["password"] == ODD  # redis-py (the checks, the writer)
    parts = url_to_parts(settings.broker_url)  # kombu (Celery's broker connection)
    assert (parts.password, parts.hostname, parts.port) == (ODD, "fleet", 6379)


def test_the_password_follows_a_broker_given_on_the_command_line() -> None:
    settings = Settings.load(environ={"ACCEL_BROKER_PASSWORD": "s3cret"})
    assert settings.broker_url is None  # the embedded default: no broker, the password unused
    moved = settings.with_overrides(broker_url="redis://10.0.0.5:6380/1")
    assert moved.broker_url == "redis://:s3cret@10.0.0.5:6380/1"


def test_the_password_is_never_shown() -> None:
    settings = Settings.load(environ={"ACCEL_BROKER_URL": "redis://fleet:6379/0", "ACCEL_BROKER_PASSWORD": "s3cret"})
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.describe())
    assert settings.describe()["broker_password"] == "***"


def test_two_different_passwords_are_refused_in_one_line() -> None:
    env = {"ACCEL_BROKER_URL": "redis://:pw-alpha@fleet:6379/0", "ACCEL_BROKER_PASSWORD": "pw-beta"}
    with pytest.raises(ConfigError, match="give it once, in ACCEL_BROKER_PASSWORD") as caught:
        Settings.load(environ=env)
    assert "pw-alpha" not in str(caught.value) and "pw-beta" not in str(caught.value)
    same = Settings.load(environ={**env, "ACCEL_BROKER_PASSWORD": "pw-alpha"})
    assert same.broker_url == "redis://:pw-alpha@fleet:6379/0"


@pytest.mark.parametrize(
    ("url", "password"),
    [("redis://127.0.0.1:6379/0", None), ("redis://localhost:6379/0", None), ("redis://[::1]:6379/0", None),
     ("redis://10.0.0.5:6379/0", "s3cret-enough"), ("rediss://fleet.example:6380/0?ssl_cert_reqs=required", "x1")],
)  # fmt: skip
def test_a_loopback_broker_may_go_without_a_password_any_other_needs_one(url: str, password: str | None) -> None:
    env = {"ACCEL_BROKER_URL": url, **({"ACCEL_BROKER_PASSWORD": password} if password else {})}
    assert broker.require_url(Settings.load(environ=env)).startswith(url.split("://")[0])


@pytest.mark.parametrize("url", ["redis://10.0.0.5:6379/0", "redis://redis:6379/0", "redis://[2001:db8::1]:6379/0"])
def test_a_broker_other_machines_reach_is_refused_without_a_password(url: str) -> None:
    with pytest.raises(ConfigError, match="is not on loopback and ACCEL_BROKER_PASSWORD is not set") as caught:
        broker.require_url(Settings.load(environ={"ACCEL_BROKER_URL": url}))
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("password", ["change-me-broker-password", "change-me-broker", "CHANGEME", "...", "password"])
def test_the_examples_placeholder_password_is_refused_and_not_quoted(password: str) -> None:
    for url in ("redis://127.0.0.1:6379/0", "redis://10.0.0.5:6379/0"):
        settings = Settings.load(environ={"ACCEL_BROKER_URL": url, "ACCEL_BROKER_PASSWORD": password})
        with pytest.raises(ConfigError, match="is the examples' placeholder: set your own") as caught:
            broker.require_url(settings)
        assert password not in str(caught.value)


def test_every_fleet_command_refuses_the_placeholder_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
    env.update(ACCEL_BROKER_URL="redis://127.0.0.1:1/0", ACCEL_BROKER_PASSWORD="change-me-broker",
               ACCEL_FLEET_KEY=FLEET_KEY_HEX, ACCEL_FLOWER_PASSWORD="flower-pw")  # fmt: skip
    for args in (["worker"], ["writer"], ["flower"], ["run", "--phase", "p", "--models", "bert"]):
        done = subprocess.run([sys.executable, "-m", "scheduler", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, (args, done.stderr)
        assert "placeholder" in lines[0] and "change-me-broker" not in done.stderr, (args, lines)

"""The broker password is set once (``ACCEL_BROKER_PASSWORD``) and joined to every broker URL."""

from __future__ import annotations

import pytest
import redis
from kombu.utils.url import url_to_parts

from accelerate_core.config import Settings
from accelerate_core.errors import ConfigError

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

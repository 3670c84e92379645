"""Settings: defaults, TOML and environment sources, validation messages, redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from accelerate_core.config import Settings, redact_url
from accelerate_core.errors import ConfigError


def test_defaults_are_embedded_mode() -> None:
    s = Settings.load(environ={})
    assert s.broker_url is None
    assert s.time_limit("test").soft_s < s.time_limit("test").hard_s


def test_env_overrides_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "accel.toml"
    cfg.write_text("redelivery_cap = 5\nmem_cap_mb = 1024\n[time_limits.test]\nsoft_s = 10\nhard_s = 20\n")
    s = Settings.load(cfg, environ={"ACCEL_REDELIVERY_CAP": "7", "ACCEL_BROKER_URL": "redis://h:6379/1"})
    assert s.redelivery_cap == 7
    assert s.mem_cap_mb == 1024
    assert s.time_limit("test").hard_s == 20.0
    assert s.broker_url == "redis://h:6379/1"


@pytest.mark.parametrize(
    ("environ", "needle"),
    [
        ({"ACCEL_BROKER_URL": "nonsense"}, "ACCEL_BROKER_URL"),
        ({"ACCEL_REDELIVERY_CAP": "zero"}, "redelivery_cap"),
        ({"ACCEL_REDELIVERY_CAP": "0"}, "redelivery_cap"),
        ({"ACCEL_TEST_SOFT_S": "300"}, "soft_s"),
    ],
)
def test_bad_values_give_one_line(environ: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load(environ=environ)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("broker_url = [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        Settings.load(cfg, environ={})


def test_password_never_printed() -> None:
    s = Settings.load(environ={"ACCEL_BROKER_URL": "redis://user:hunter2@host:6379/0"})
    assert "hunter2" not in str(s.describe())
    assert "hunter2" not in repr(s)
    assert "hunter2" not in redact_url(s.broker_url)
    with pytest.raises(ConfigError) as info:
        Settings.load(environ={"ACCEL_BROKER_URL": "http://u:hunter2@host/"})
    assert "hunter2" not in str(info.value)

"""Settings: defaults, TOML and environment sources, validation messages naming their source, redaction.

Besides the examples, Hypothesis feeds the loader arbitrary TOML files and environments (Settings or exactly
one ConfigError, never another exception) and arbitrary broker URLs (one the checks accept is read without
error by both redis-py and Celery's kombu, and no password ever survives :func:`redact_url`).
"""

from __future__ import annotations

import json
import math
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accelerate_core.config import BROKER_URL_PARAMS, Settings, broker_url_problem, redact_url
from accelerate_core.errors import ConfigError


def test_defaults_are_embedded_mode() -> None:
    s = Settings.load(environ={})
    assert s.broker_url is None
    assert s.time_limit("test").soft_s < s.time_limit("test").hard_s
    assert s.source_of("concurrency") == "default"


def test_env_overrides_toml_and_each_value_knows_its_source(tmp_path: Path) -> None:
    cfg = tmp_path / "accel.toml"
    cfg.write_text("redelivery_cap = 5\nmem_cap_mb = 1024\n[time_limits.test]\nsoft_s = 10\nhard_s = 20\n")
    s = Settings.load(cfg, environ={"ACCEL_REDELIVERY_CAP": "7", "ACCEL_BROKER_URL": "redis://h:6379/1"})
    assert s.redelivery_cap == 7
    assert s.mem_cap_mb == 1024
    assert s.time_limit("test").hard_s == 20.0
    assert s.broker_url == "redis://h:6379/1"
    assert s.source_of("redelivery_cap") == "env ACCEL_REDELIVERY_CAP"
    assert s.source_of("mem_cap_mb") == f"file {cfg}" == s.source_of("time_limits")
    flagged = s.with_overrides(concurrency=4, source="--jobs")
    assert flagged.concurrency == 4 and flagged.source_of("concurrency") == "flag --jobs"
    with pytest.raises(ConfigError, match=r"^--jobs 5000 is out of range: give 0\.\.4096"):
        s.with_overrides(concurrency=5000, source="--jobs")


BAD_TOML = [
    ('concurrency = "x"', "accel.toml: concurrency = 'x' is a string, not an integer"),
    ("concurrency = true", "accel.toml: concurrency = True is a boolean, not an integer"),
    ("mem_cap_mb = 1.5", "accel.toml: mem_cap_mb = 1.5 is a number, not an integer"),
    ("mem_cap_mb = 10", "accel.toml: mem_cap_mb = 10 is out of range: give 64..16777216"),
    ("flower_port = 70000", "accel.toml: flower_port = 70000 is out of range"),
    ("bench = 3", "accel.toml: bench = 3 is not a table"),
    ("time_limits = 3", "accel.toml: time_limits = 3 is not a table"),
    ("[time_limits]\ntest = 5", "accel.toml: time_limits.test = 5 is not a table"),
    ("[time_limits.test]\nsoft = 5", "accel.toml: [time_limits.test] has unknown key(s) ['soft']"),
    ("[time_limits.tset]\nsoft_s = 5", "accel.toml: [time_limits] has unknown key(s) ['tset']"),
    ("[time_limits.test]\nsoft_s = true", "accel.toml: time_limits.test.soft_s = True is a boolean, not a number"),
    ("[time_limits.test]\nsoft_s = 300", "accel.toml: time limit soft_s=300.0 hard_s=180.0 is invalid"),
    ("[time_limits.test]\nhard_s = inf", "accel.toml: time_limits.test.hard_s = inf is not a finite number"),
    ('[bench]\nbatch_sizes = "1"', "accel.toml: bench.batch_sizes = '1' is a string, not an array of integers"),
    ("[bench]\nbatch_sizes = [true]", "accel.toml: bench.batch_sizes = [True] is an array, not an array of integers"),
    ("[bench]\nbatch_sizes = [0]", "accel.toml: bench.batch_sizes=(0,) is invalid"),
    ("[bench]\nwarmup = 1.5", "accel.toml: bench.warmup = 1.5 is a number, not an integer"),
    ("[bench]\nbatch = [1]", "accel.toml: [bench] has unknown key(s) ['batch']"),
    ('results_db = ""', "accel.toml: results_db = '' is not a usable path"),
    ('results_db = "a\\u0000b"', "accel.toml: results_db = 'a\\x00b' is not a usable path"),
    ("results_db = 3", "accel.toml: results_db = 3 is an integer, not a string"),
    ('queue_prefix = "hw/../"', "accel.toml: queue_prefix = 'hw/../' is not a valid queue name"),
    ('flower_user = "a:b"', "accel.toml: flower_user = 'a:b' is invalid"),
    ('flower_password = "a,b"', "accel.toml: the Flower password contains ','"),
    ("concurency = 2", "accel.toml: unknown setting 'concurency'"),
    ('broker_url = "redis://[::1/0"', "accel.toml: broker_url = 'redis://[::1/0' is not a valid URL"),
]


@pytest.mark.parametrize(("toml", "message"), BAD_TOML)
def test_bad_toml_values_are_one_line_naming_the_file_and_key(tmp_path: Path, toml: str, message: str) -> None:
    cfg = tmp_path / "accel.toml"
    cfg.write_text(toml + "\n")
    with pytest.raises(ConfigError) as info:
        Settings.load(cfg, environ={})
    text = str(info.value)
    assert text.startswith(str(tmp_path)) and message in text and "\n" not in text


BAD_ENV = [
    ({"ACCEL_BROKER_URL": "nonsense"}, "ACCEL_BROKER_URL='nonsense' is not a Redis URL"),
    ({"ACCEL_BROKER_URL": "redis://[::1/0"}, "ACCEL_BROKER_URL='redis://[::1/0' is not a valid URL"),
    ({"ACCEL_BROKER_URL": "redis://h:99999/0"}, "ACCEL_BROKER_URL='redis://h:99999/0' has an invalid port"),
    ({"ACCEL_BROKER_URL": "redis://h:x/0"}, "ACCEL_BROKER_URL='redis://h:x/0' has an invalid port"),
    ({"ACCEL_BROKER_URL": "redis://h:0/0"}, "has port 0"),
    ({"ACCEL_BROKER_URL": "redis://h/x"}, "names no database number"),
    ({"ACCEL_BROKER_URL": "redis:///0"}, "has no valid host"),
    ({"ACCEL_BROKER_URL": "redis://h/0?timeout=x"}, "has unknown or repeated parameters ['timeout']"),
    ({"ACCEL_BROKER_URL": "redis://h/0?ssl_cert_reqs=required"}, "sets TLS options on a plain redis:// URL"),
    ({"ACCEL_BROKER_URL": "rediss://h:6380/0?ssl_cert_reqs=none"}, "asks for TLS without certificate verification"),
    ({"ACCEL_BROKER_URL": "rediss://h:6380/0?ssl_cert_reqs=optional"}, "asks for TLS without certificate verification"),
    ({"ACCEL_BROKER_URL": "redis://h/0?password=hunter2"}, "carries a password as a query parameter"),
    ({"ACCEL_BROKER_URL": "redis://:hun#ter2@h/0"}, "contains '#'"),
    ({"ACCEL_BROKER_URL": "redis://:hun/ter2@h/0"}, "has an '@' after the host"),
    ({"ACCEL_REDELIVERY_CAP": "zero"}, "ACCEL_REDELIVERY_CAP='zero' is not an integer"),
    ({"ACCEL_REDELIVERY_CAP": "0"}, "ACCEL_REDELIVERY_CAP=0 is out of range: give 1..1000"),
    ({"ACCEL_CONCURRENCY": "1e3"}, "ACCEL_CONCURRENCY='1e3' is not an integer"),
    ({"ACCEL_TEST_SOFT_S": "300"}, "ACCEL_TEST_SOFT_S: time limit soft_s=300.0 hard_s=180.0 is invalid"),
    ({"ACCEL_TEST_HARD_S": "nan"}, "ACCEL_TEST_HARD_S='nan' is not a finite number"),
    ({"ACCEL_FLOWER_PASSWORD": "hun,ter2"}, "ACCEL_FLOWER_PASSWORD: the Flower password contains ','"),
    ({"ACCEL_CONFIG": "/nonexistent/accel.toml"}, "ACCEL_CONFIG='/nonexistent/accel.toml' is not a file"),
]


@pytest.mark.parametrize(("environ", "message"), BAD_ENV)
def test_bad_env_values_are_one_line_naming_the_variable_without_secrets(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load(environ=environ)
    text = str(info.value)
    assert message in text and "\n" not in text
    assert "ter2" not in text  # no password (hunter2, hun#ter2, ...) is ever shown


def test_non_utf8_and_malformed_toml_name_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("broker_url = [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.toml is not valid TOML"):
        Settings.load(cfg, environ={})
    cfg.write_bytes(b'flower_user = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"bad\.toml is not UTF-8 \(byte 18\)"):
        Settings.load(cfg, environ={})


def test_password_never_printed() -> None:
    s = Settings.load(environ={"ACCEL_BROKER_URL": "redis://user:hunter2@host:6379/0"})
    assert "hunter2" not in str(s.describe())
    assert "hunter2" not in repr(s)
    assert "hunter2" not in redact_url(s.broker_url)
    with pytest.raises(ConfigError) as info:
        Settings.load(environ={"ACCEL_BROKER_URL": "http://u:hunter2@host/"})
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://u:hunter2@h:6379/0", "redis://u:***@h:6379/0"),
        ("redis://h/0?password=hunter2", "redis://h/0?password=***"),
        ("redis://h/0?pass%77ord=hunter2&ssl_ca_certs=/ca.pem", "redis://h/0?pass%77ord=***&ssl_ca_certs=/ca.pem"),
        ("redis://:hun/ter2@h/0", "redis://:***@h/0"),
        ("redis://:hun?ter2@h", "redis://:***@h"),
        ("redis://:hunter2@[::1/0", "redis://:***@[::1/0"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("", "(none)"),
    ],
)
def test_redact_url_hides_userinfo_and_query_passwords_even_in_malformed_urls(url: str, shown: str) -> None:
    assert redact_url(url) == shown


# -- property-based -------------------------------------------------------------------------------------

_KEYS = [
    "broker_url", "results_db", "reports_dir", "queue_prefix", "redelivery_cap", "mem_cap_mb", "concurrency",
    "flower_user", "flower_password", "flower_port", "time_limits", "bench", "unknown_key",
]  # fmt: skip
_SUBKEYS = ["test", "dry", "soft_s", "hard_s", "batch_sizes", "seq_lens", "warmup", "min_iters", "max_duration_s"]
_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
_SCALARS = (
    st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | _TEXT
    | st.sampled_from(["redis://h:6379/0", "rediss://h/0", "x", "1", "0.5", "[::1", "a,b"])
)
_TOML_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_SUBKEYS) | _TEXT, inner, max_size=3),
    max_leaves=8,
)


def _toml(value: Any) -> str:
    """``value`` written as a TOML value (inline tables and arrays)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"


_ENV_VARS = [
    "ACCEL_BROKER_URL", "ACCEL_CONCURRENCY", "ACCEL_MEM_CAP_MB", "ACCEL_TEST_SOFT_S", "ACCEL_TEST_HARD_S",
    "ACCEL_FLOWER_PORT", "ACCEL_FLOWER_USER", "ACCEL_FLOWER_PASSWORD", "ACCEL_RESULTS_DB", "ACCEL_QUEUE_PREFIX",
]  # fmt: skip
_ENV_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.dictionaries(st.sampled_from(_KEYS), _TOML_VALUES, max_size=6),
    env=st.dictionaries(st.sampled_from(_ENV_VARS), _ENV_TEXT | st.sampled_from(["1", "2.5", "-3", "inf"]), max_size=4),
)
def test_any_toml_file_and_environment_give_settings_or_exactly_one_config_error(
    tmp_path: Path, data: dict[str, Any], env: dict[str, str]
) -> None:
    cfg = tmp_path / "accel.toml"
    cfg.write_text("".join(f"{json.dumps(k)} = {_toml(v)}\n" for k, v in data.items()), encoding="utf-8")
    try:
        loaded = Settings.load(cfg, environ=env)
    except ConfigError as e:
        text = str(e)
        assert text and "\n" not in text and "Traceback" not in text
        return
    assert isinstance(loaded, Settings) and loaded.time_limit("test").hard_s <= 7 * 24 * 3600


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_as_a_config_file_give_settings_or_one_config_error(tmp_path_factory: Any, raw: bytes) -> None:
    cfg = tmp_path_factory.mktemp("cfg") / "accel.toml"
    cfg.write_bytes(raw)
    try:
        Settings.load(cfg, environ={})
    except ConfigError as e:
        assert "\n" not in str(e)


_HOSTS = st.sampled_from(["h", "127.0.0.1", "[::1]", "[::1", "redis.example", "a_b", "", "h h", "[zz]", "é"])
_PORTS = st.sampled_from(["", ":6379", ":0", ":65536", ":x", ":-1", ":99999999999"])
_PATHS = st.sampled_from(["", "/", "/0", "/15", "/x", "/0/1", "/١"])
_QUERIES = st.lists(
    st.sampled_from([*BROKER_URL_PARAMS, "password", "timeout", "db"]).flatmap(
        lambda k: st.sampled_from(["required", "none", "/ca.pem", "x", ""]).map(lambda v: f"{k}={v}")
    ),
    max_size=3,
).map(lambda items: ("?" + "&".join(items)) if items else "")
_SECRET = "Zq9xSECRETx9qZ"
_USERINFO = st.sampled_from(["", "u@", f":{_SECRET}@", f"u:{_SECRET}@", f":{_SECRET}/x@", f":{_SECRET}#@"])
_URLS = st.builds(
    lambda scheme, user, host, port, path, query: f"{scheme}://{user}{host}{port}{path}{query}",
    st.sampled_from(["redis", "rediss", "http"]),
    _USERINFO,
    _HOSTS,
    _PORTS,
    _PATHS,
    _QUERIES,
) | st.text(string.printable, max_size=40)


@settings(max_examples=500, deadline=None)
@given(_URLS)
def test_an_accepted_broker_url_reads_alike_in_redis_py_and_kombu_and_no_password_is_ever_shown(url: str) -> None:
    import redis.connection
    from kombu.utils.url import parse_url as kombu_parse_url

    assert _SECRET not in redact_url(url)
    try:
        Settings.load(environ={"ACCEL_BROKER_URL": url})
    except ConfigError as e:
        assert _SECRET not in str(e) and "\n" not in str(e)
        assert broker_url_problem(url)
        return
    if not url:
        return
    ours = redis.connection.parse_url(url)
    theirs = kombu_parse_url(url)
    assert ours.get("password") == theirs.get("password")
    assert (ours.get("host") or "localhost") == (theirs.get("hostname") or "localhost")

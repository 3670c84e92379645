"""Who may read the results service: loopback binds, tokens in headers, the config that refuses to start."""

from __future__ import annotations

import base64

import pytest

from accelerate_core.config import Settings
from accelerate_core.errors import ConfigError
from accelerate_core.service import ServiceConfig
from accelerate_core.service.access import authorized, is_loopback, presented_token


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.5.0.9", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("myhost", False), ("", False)],
)  # fmt: skip
def test_only_loopback_addresses_count_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer s3cret", "s3cret"), ("bearer  s3cret ", "s3cret"), (_basic("anyone", "s3cret"), "s3cret"),
     (_basic("", "a:b"), "a:b"), ("Basic !!!", None), ("Digest abc", None), ("Bearer", None), (None, None),
     ("Basic " + base64.b64encode(b"no-colon").decode(), None)],
)  # fmt: skip
def test_the_token_is_read_from_bearer_or_basic_auth(header: str | None, token: str | None) -> None:
    assert presented_token(header) == token


def test_a_request_is_authorized_only_with_the_exact_token() -> None:
    # Given a configured token; Then only that exact token passes; without a token configured, all pass
    assert authorized("Bearer s3cret", "s3cret")
    assert authorized(_basic("u", "s3cret"), "s3cret")
    assert not authorized("Bearer s3cre", "s3cret")
    assert not authorized("Bearer s3cret2", "s3cret")
    assert not authorized(None, "s3cret")
    assert authorized(None, None)


def test_a_non_loopback_bind_without_a_token_is_refused() -> None:
    # When the service is configured for every interface without a token; Then it refuses, naming the fix
    with pytest.raises(ConfigError, match=r"refusing to serve results on 0\.0\.0\.0 without a token: set ACCEL_SERVE"):
        ServiceConfig(host="0.0.0.0")
    # And with a token it is accepted; on loopback no token is needed; an empty token is refused
    assert ServiceConfig(host="0.0.0.0", token="t").token == "t"
    assert ServiceConfig(host="127.0.0.1").token is None
    with pytest.raises(ConfigError, match="token is empty"):
        ServiceConfig(token="  ")
    with pytest.raises(ConfigError, match="port 70000 is invalid"):
        ServiceConfig(port=70000)


def test_the_token_comes_from_the_environment_and_is_never_shown() -> None:
    # Given ACCEL_SERVE_* variables
    settings = Settings.load(environ={"ACCEL_SERVE_TOKEN": "s3cret", "ACCEL_SERVE_HOST": "0.0.0.0",
                                      "ACCEL_SERVE_PORT": "9000"})  # fmt: skip
    # When the service's configuration is built from them, the CLI's options winning
    config = ServiceConfig.from_settings(settings, port=0)
    # Then the values arrive, and neither the settings' nor the config's printable form shows the token
    assert (config.host, config.port, config.token) == ("0.0.0.0", 0, "s3cret")
    assert settings.describe()["serve_token"] == "***"
    assert "s3cret" not in repr(settings) and "s3cret" not in repr(config)
    assert Settings.load(environ={"ACCEL_SERVE_TOKEN": ""}).serve_token is None
    with pytest.raises(ConfigError, match=r"ACCEL_SERVE_PORT.*is out of range: give 1\.\.65535"):
        Settings.load(environ={"ACCEL_SERVE_PORT": "0"})


@pytest.mark.parametrize(
    "url",
    ["ftp://host:8765", "http://", "http://host:0", "http://user:pw@host:8765", "http://host:8765/?token=x", "host"],
)
def test_a_results_url_that_is_not_a_service_address_is_one_line(url: str) -> None:
    # When ACCEL_RESULTS_URL is not an http(s) address of a host; Then the settings refuse it, naming the variable
    with pytest.raises(ConfigError, match=r"ACCEL_RESULTS_URL=.* (is not|carries)") as e:
        Settings.load(environ={"ACCEL_RESULTS_URL": url})
    assert "\n" not in str(e.value) and "pw@" not in str(e.value) and "token=x" not in str(e.value)


def test_a_results_url_with_a_path_is_kept() -> None:
    assert (
        Settings.load(environ={"ACCEL_RESULTS_URL": "https://proxy:443/accel"}).results_url == "https://proxy:443/accel"
    )

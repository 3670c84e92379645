"""The endpoint benchmark against a real fault-injecting HTTP server (the shipped stub, its own process).

Real sockets, the real client: a healthy stream, then every failure a served model can show (down,
killed mid-stream, 500s, too slow, malformed, error events, truncated, dropped), each a classified
error with every request accounted for (``ok + errors == sent``); and the token never printed.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import pytest

from accelerate_core.endpoint import EndpointBenchConfig, EndpointReport, EndpointTarget, Secret, bench_endpoint
from accelerate_core.endpoint.check import check_endpoint
from tests.support.redis_server import free_port

TOKEN = "sk-test-0123456789abcdef"
"""A bearer token that must never appear in anything the benchmark prints."""

CLI = "import sys\nfrom scheduler.cli import main\nsys.exit(main(sys.argv[1:]))"


def bench(url: str, token: str | None = None, **settings: object) -> EndpointReport:
    config = EndpointBenchConfig(**{"requests": 4, "warmup": 1, "timeout_s": 10.0, **settings})  # type: ignore[arg-type]
    return bench_endpoint(EndpointTarget("stub", url, "stub", Secret(token) if token else None), config)


def accounted(report: EndpointReport) -> None:
    """Every request sent is either ok or in exactly one error class, at every level."""
    for level in report.levels:
        assert level.ok + sum(level.errors.values()) == level.sent == len(level.samples)
        assert sum(1 for s in level.samples if s["ok"]) == level.ok


def accel(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI, "endpoint", *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_a_healthy_stream_is_timed_per_token(stub):
    server = stub("--tokens", "8", "--delay-ms", "20")
    report = bench(server.url, concurrency=(1, 2), requests=4)
    accounted(report)
    for level in report.levels:
        assert level.ok == 4 and level.errors == {}
        assert all(s["output_tokens"] == 8 and len(s["itl_s"]) == 7 for s in level.samples)
        assert level.latencies["ttft_s"]["p50"] >= 0.015  # the first token comes after one delay
        assert 0.015 <= level.latencies["itl_s"]["p50"] < 0.2
        assert level.latencies["e2e_s"]["p50"] >= 8 * 0.015
        assert level.server_prompt_tokens == 128  # the stub counts words: one word per token
    assert report.include_usage
    overlap = sorted((s["start_s"], s["start_s"] + s["e2e_s"]) for s in report.levels[1].samples)
    assert any(b[0] < a[1] for a, b in itertools.pairwise(overlap))  # two really in flight


def test_server_down_every_request_is_connection_refused():
    url = f"http://127.0.0.1:{free_port()}"
    report = bench(url, concurrency=(1, 2))
    accounted(report)
    assert [level.errors for level in report.levels] == [{"connection-refused": 4}] * 2
    assert report.all_failed and report.error_totals() == {"connection-refused": 8}
    done = accel("bench", url, "--model", "stub")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "cannot reach" in done.stderr and "connection-refused" in done.stderr


def test_server_killed_mid_stream_loses_one_request_and_refuses_the_rest(stub):
    # Warm-up = chat request 1; requests 2 and 3 finish; request 4 dies after 3 chunks (SIGKILL).
    server = stub("--tokens", "8", "--fault", "die", "--fault-from", "4", "--fault-after", "3")
    report = bench(server.url, requests=6)
    accounted(report)
    level = report.levels[0]
    classes = [s["error_class"] for s in level.samples]
    assert level.ok == 2 and classes[:3] == [None, None, "connection-lost"]
    assert level.samples[2]["output_tokens"] == 3  # the tokens that did arrive are counted
    # A request sent while the process is being torn down may still be accepted, then reset (lost);
    # once the port is closed, the rest are refused.
    assert set(classes[3:]) <= {"connection-lost", "connection-refused"} and classes[-1] == "connection-refused"
    assert not server.alive()


def test_http_500s_exit_1_with_the_class(stub):
    server = stub("--fault", "http-500")
    report = bench(server.url)
    accounted(report)
    assert report.levels[0].errors == {"http-500": 4}
    assert "injected failure" in report.levels[0].error_examples["http-500"]
    done = accel("bench", server.url, "--model", "stub", "--requests", "3")
    assert done.returncode == 1
    assert done.stderr.strip().endswith("every request failed: http-500 3")


def test_a_slow_server_past_the_timeout_is_a_timeout(stub):
    server = stub("--fault", "stall", "--stall-s", "30")
    report = bench(server.url, concurrency=(2,), requests=2, timeout_s=0.5)
    accounted(report)
    level = report.levels[0]
    assert level.errors == {"timeout": 2}
    assert all(0.45 <= s["e2e_s"] < 5 for s in level.samples)


@pytest.mark.parametrize(
    ("fault", "error_class"),
    [
        ("malformed", "malformed-stream"),
        ("error-event", "stream-error"),
        ("truncate", "truncated-stream"),
        ("drop", "connection-lost"),
    ],
)
def test_broken_streams_are_classified(stub, fault, error_class):
    server = stub("--fault", fault, "--fault-from", "2")  # the warm-up is fine, every counted request breaks
    report = bench(server.url, concurrency=(1, 3), requests=3)
    accounted(report)
    assert [level.errors for level in report.levels] == [{error_class: 3}] * 2
    assert report.warmup.ok == 1


def test_a_server_refusing_stream_options_is_benchmarked_without_them(stub):
    server = stub("--tokens", "5", "--fault", "reject-stream-options")
    report = bench(server.url)
    accounted(report)
    assert not report.include_usage and report.levels[0].ok == 4
    assert all(s["output_tokens"] == 5 and s["server_prompt_tokens"] is None for s in report.levels[0].samples)


def test_open_loop_and_duration_runs_account_for_every_request(stub):
    server = stub("--tokens", "4", "--delay-ms", "5")
    fixed = bench(server.url, concurrency=(2,), requests=6, rate=20.0, arrival="fixed")
    accounted(fixed)
    starts = [s["start_s"] for s in fixed.levels[0].samples]
    assert fixed.levels[0].ok == 6 and starts[-1] >= 5 * 0.05 * 0.9
    assert fixed.levels[0].mode == "open-loop fixed 20/s"
    timed = bench(server.url, concurrency=(2,), requests=None, duration_s=0.5)
    accounted(timed)
    assert timed.levels[0].sent >= 2 and timed.levels[0].ok == timed.levels[0].sent


@pytest.mark.parametrize("fault", ["http-500", "malformed", "error-event", "none"])
def test_the_token_is_never_printed_even_when_the_server_echoes_it(stub, fault):
    server = stub("--fault", fault, "--fault-from", "2", "--echo-auth", "--tokens", "3")
    runs = (
        (["--json"], {"ACCEL_ENDPOINT_TOKEN": TOKEN}),
        (["--token-env", "MY_TOKEN"], {"MY_TOKEN": TOKEN}),  # the table
    )
    for args, env in runs:
        done = accel("bench", server.url, "--model", "stub", "--requests", "2", "--warmup", "1", *args, env=env)
        assert TOKEN not in done.stdout + done.stderr
        if fault != "none":  # the server did send it back, masked on our side
            assert "Bearer ***" in done.stdout + done.stderr
        if "--json" in args:
            data = json.loads(done.stdout)
            assert data["target"]["auth"] == "bearer" and TOKEN not in json.dumps(data)


def test_the_token_is_never_printed_when_the_server_is_down():
    done = accel("bench", f"http://127.0.0.1:{free_port()}", "--model", "m", env={"ACCEL_ENDPOINT_TOKEN": TOKEN})
    assert done.returncode == 2 and TOKEN not in done.stdout + done.stderr


def test_an_unset_token_variable_is_one_line_exit_2():
    done = accel("bench", "http://127.0.0.1:1", "--model", "m", "--token-env", "ACCEL_TEST_NO_SUCH_VAR")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "ACCEL_TEST_NO_SUCH_VAR" in done.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--concurrency", "0"], "--concurrency"),
        (["--requests", "2", "--duration", "1"], "not both"),
        (["--warmup", "0"], "warmup"),
    ],
)
def test_bad_options_are_one_line_exit_2(args, says):
    done = accel("bench", "http://127.0.0.1:1", "--model", "m", *args)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and says in done.stderr


@pytest.mark.parametrize(
    ("fault", "ok", "says"),
    [
        ("none", True, "streamed and whole agree"),
        ("bad-usage", False, "usage does not add up"),
        ("http-500", False, "http-500"),
        ("truncate", False, "truncated-stream"),
    ],
)
def test_the_functional_check(stub, fault, ok, says):
    server = stub("--fault", fault, "--fault-after", "1")
    result = check_endpoint(EndpointTarget("stub", server.url, "stub"), timeout_s=10)
    assert result.ok is ok and says in result.reason

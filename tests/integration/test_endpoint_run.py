"""Endpoints in a phase run, against real servers (the shipped stub in its own process, real sockets).

The job body (``accelerate_core.endpoint.job``): a healthy server is a ``done`` row with TTFT/ITL/latency
and tokens/s measurements per concurrency; a server that is down, answers 500s or whose usage does not
add up is a classified row. Then whole ``accel run`` processes on the embedded default: the report lists
``api:NAME`` beside ``cpu``, an endpoint that is down does not stop the run, a slower server is a
regression in the next run's comparison, and the token is nowhere in clear (DuckDB file, reports, output).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from accelerate_core import wire
from accelerate_core.constants import JOB_KIND_TEST, STATUS_DONE, STATUS_FAILED
from accelerate_core.contracts import EndpointJob, JobSpec, job_key
from accelerate_core.endpoint.job import run_endpoint_job
from accelerate_core.store import browse
from tests.support.cli import seed_catalog_index
from tests.support.redis_server import free_port

TOKEN = "sk-phase-run-0123456789abcdef"
"""A bearer token that must never appear in clear in anything a run writes or prints."""

CLI = "import sys\nfrom scheduler.cli import main\nsys.exit(main(sys.argv[1:]))"


def endpoint_spec(url: str, name: str = "stub", model: str = "stub", **settings: object) -> JobSpec:
    endpoint = EndpointJob(name, url, model, **{"concurrency": (1, 4), "requests": 8, "timeout_s": 5.0, **settings})  # type: ignore[arg-type]
    key = job_key("r1", "stub", endpoint.hardware, JOB_KIND_TEST)
    return JobSpec(key=key, run_id="r1", model_type="stub", hardware=endpoint.hardware, kind=JOB_KIND_TEST,
                   endpoint=endpoint)  # fmt: skip


def run_job(spec: JobSpec, token: str | None = None):  # type: ignore[no-untyped-def]
    environ = {f"ACCEL_ENDPOINT_TOKEN_{spec.endpoint.name.upper()}": token} if token and spec.endpoint else {}
    return run_endpoint_job(spec, worker_id="w1", host="h1", environ=environ)


def test_a_healthy_endpoint_is_a_done_row_with_serving_measurements(stub):
    server = stub("--tokens", "8", "--delay-ms", "2")
    result = run_job(endpoint_spec(server.url), TOKEN)
    assert result.status == STATUS_DONE and result.hardware == "api:stub", result.error_message
    assert (result.tests_passed, result.tests_failed) == (2, 0)
    shapes = {(m.metric, m.batch_size) for m in result.measurements}
    for metric in ("ttft", "itl", "tpot", "latency", "tokens_per_s", "requests_per_s"):
        assert {(metric, 1), (metric, 4)} <= shapes
    latency = next(m for m in result.measurements if m.metric == "latency" and m.batch_size == 4)
    assert latency.n == len(latency.samples) == 8 and latency.p50 is not None and latency.p50 > 0
    assert result.environment["bench"]["errors"] == {} and result.environment["check"]["ok"] is True
    assert result.environment["endpoint"]["auth"] == "bearer"
    assert server.url in (result.device_name or "")


def test_a_server_that_is_down_is_an_endpoint_down_row():
    result = run_job(endpoint_spec(f"http://127.0.0.1:{free_port()}"))
    assert result.status == STATUS_FAILED and result.error_class == "endpoint-down"
    assert "connection-refused" in (result.error_message or "") and result.tests_failed == 1
    assert result.measurements == ()


@pytest.mark.parametrize(("fault", "says"), [("http-500", "http-500"), ("bad-usage", "usage does not add up")])
def test_a_failing_functional_check_is_its_own_classified_outcome(stub, fault, says):
    server = stub("--fault", fault, "--echo-auth")
    result = run_job(endpoint_spec(server.url), TOKEN)
    assert result.status == STATUS_FAILED and result.error_class == "endpoint-check", result.error_message
    assert says in (result.error_message or "") and (result.tests_passed, result.tests_failed) == (0, 1)
    assert TOKEN not in json.dumps(wire.encode(result))


def test_without_a_model_the_first_listed_model_is_asked_for(stub):
    server = stub("--tokens", "4")
    result = run_job(endpoint_spec(server.url, model="", concurrency=(1,), requests=2))
    assert result.status == STATUS_DONE, result.error_message
    assert result.environment["endpoint"]["model"] not in ("", "-")


# -- whole runs -----------------------------------------------------------------------------------


def accel(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    seed_catalog_index(tmp_path)  # runs from tmp_path: give it the checkout's index instead of a fresh build
    environ = {**os.environ, "ACCEL_RESULTS_DB": str(tmp_path / "results.duckdb"), "ACCEL_REPORTS_DIR":
               str(tmp_path / "reports"), "ACCEL_TEMPLATES_DB": str(tmp_path / "templates.duckdb"),
               "ACCEL_BROKER_URL": "", "ACCEL_CONCURRENCY": "1", **(env or {})}  # fmt: skip
    return subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True, timeout=600,
                          env=environ, cwd=tmp_path)  # fmt: skip


def report_json(tmp_path: Path, summary: dict) -> dict:
    return json.loads(Path(summary["report_files"]["json"]).read_text())  # type: ignore[no-any-return]


def assert_no_token_in_clear(tmp_path: Path, *outputs: str) -> None:
    for path in [tmp_path / "results.duckdb", *(tmp_path / "reports").rglob("*")]:
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    for text in outputs:
        assert TOKEN not in text


def test_a_phase_run_lists_api_rows_beside_cpu_and_a_slower_server_is_a_regression(stub, tmp_path):
    fast, echoing = stub("--tokens", "8", "--delay-ms", "1"), stub("--fault", "http-500", "--echo-auth")
    down = f"http://127.0.0.1:{free_port()}"
    tokens = {"ACCEL_ENDPOINT_TOKEN_FAST": TOKEN, "ACCEL_ENDPOINT_TOKEN_ECHO": TOKEN}
    args = ["run", "--phase", "serving", "--models", "bert", "--hardware", "cpu", "--json",
            "--endpoint", "echo=" + echoing.url + "@stub", "--endpoint", f"down={down}@stub"]  # fmt: skip

    first = accel(tmp_path, *args, "--endpoint", f"fast={fast.url}@stub", env=tokens)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    report = report_json(tmp_path, summary)
    rows = {(r["model_type"], r["hardware"]): r for r in report["rows"]}
    assert rows[("bert", "cpu")]["status"] == STATUS_DONE
    assert rows[("stub", "api:fast")]["status"] == STATUS_DONE and rows[("stub", "api:fast")]["p50_s"] > 0
    assert rows[("stub", "api:fast")]["source"] == "served:stub" and rows[("bert", "cpu")]["source"] == "type:bert"
    assert rows[("stub", "api:down")]["error_class"] == "endpoint-down"
    assert rows[("stub", "api:echo")]["error_class"] == "endpoint-check"
    assert {h["name"] for h in report["by_hardware"]} == {"cpu", "api:fast", "api:down", "api:echo"}
    markdown = Path(summary["report_files"]["md"]).read_text()
    assert "api:fast" in markdown and "| cpu |" in markdown

    slow = stub("--tokens", "8", "--delay-ms", "12")
    second = accel(tmp_path, *args, "--endpoint", f"fast={slow.url}@stub", env=tokens)
    assert second.returncode == 0, second.stderr
    comparison = report_json(tmp_path, json.loads(second.stdout))["comparison"]
    regressions = {(c["model_type"], c["hardware"]) for c in comparison["regressions"]}
    assert regressions >= {("stub", "api:fast")}, json.dumps(comparison)
    with duckdb.connect(str(tmp_path / "results.duckdb"), read_only=True) as conn:
        history = browse.model_history(conn, "stub", hardware=["api:fast"])
    assert [p["status"] for p in history] == [STATUS_DONE, STATUS_DONE]
    assert history[1]["p50_s"] > history[0]["p50_s"] > 0
    assert_no_token_in_clear(tmp_path, first.stdout, first.stderr, second.stdout, second.stderr)

"""Endpoints in a phase run, the planning half: ``NAME=URL[@MODEL]`` parsed strictly, one ``api:NAME`` job each.

Pure logic (no server): the parser, the model column, the job contract on the wire (no token in it), the
planner, the queue an endpoint job goes to, and ``accel run --endpoint`` refusing bad values in one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from accelerate_core import wire
from accelerate_core.config import Settings
from accelerate_core.constants import JOB_KIND_TEST
from accelerate_core.contracts import EndpointJob, JobSpec, job_key, parse_job_key
from accelerate_core.endpoint.targets import SERVED, parse_endpoint, parse_endpoints, served_model_type
from accelerate_core.errors import ConfigError, ContractError
from scheduler.plan import PlanOptions, plan_run

CLI = "import sys\nfrom scheduler.cli import main\nsys.exit(main(sys.argv[1:]))"


def test_name_url_and_model_are_split_at_the_first_at_after_the_host():
    job = parse_endpoint("local=http://127.0.0.1:8000@/tmp/models/tiny-chat")
    assert (job.name, job.url, job.model) == ("local", "http://127.0.0.1:8000", "/tmp/models/tiny-chat")
    assert job.hardware == "api:local"
    hub = parse_endpoint("vllm=https://gpu.example:443/v1@meta-llama/Llama-3.1-8B-Instruct")
    assert (hub.url, hub.model) == ("https://gpu.example:443/v1", "meta-llama/Llama-3.1-8B-Instruct")
    bare = parse_endpoint("tgi=http://10.0.0.5:8080")
    assert bare.model == "" and served_model_type(bare) == SERVED


def test_the_model_column_is_the_models_last_part_as_a_valid_name():
    assert served_model_type(EndpointJob("a", "http://h:1", "/tmp/x/tiny-chat-llama/")) == "tiny-chat-llama"
    assert served_model_type(EndpointJob("a", "http://h:1", "org/Llama 3:8b")) == "Llama-3-8b"
    assert served_model_type(EndpointJob("a", "http://h:1", "..")) == SERVED


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("http://127.0.0.1:8000", "has no '='"),
        ("../x=http://127.0.0.1:8000", "is not a valid name"),
        ("a:b=http://127.0.0.1:8000", "is not a valid name"),
        ("[red]=http://127.0.0.1:8000", "is not a valid name"),
        ("x=127.0.0.1:8000", "has no scheme"),
        ("x=ftp://127.0.0.1:8000", "is invalid"),
        ("x=http://127.0.0.1:99999", "invalid port"),
        ("x=http://127.0.0.1:8000@", "empty model"),
        ("x=http://user:hunter2@127.0.0.1:8000", "credentials"),
        ("x=http://127.0.0.1:8000/?key=hunter2@m", "credentials or a query"),
    ],
)
def test_bad_endpoints_are_one_line_naming_the_problem(text, says):
    with pytest.raises(ConfigError) as caught:
        parse_endpoint(text)
    message = str(caught.value)
    assert says in message and "\n" not in message and "hunter2" not in message


def test_the_same_name_twice_is_refused():
    with pytest.raises(ConfigError, match="a more than once"):
        parse_endpoints(["a=http://h:1@m", "b=http://h:2@m", "a=http://h:3@m"])


def test_an_endpoint_job_travels_typed_and_its_hardware_must_match():
    endpoint = EndpointJob("local", "http://127.0.0.1:8000", "m", concurrency=(1, 2))
    key = job_key("r1", "m", endpoint.hardware, JOB_KIND_TEST)
    spec = JobSpec(key=key, run_id="r1", model_type="m", hardware="api:local", kind=JOB_KIND_TEST, endpoint=endpoint)
    message = wire.encode(spec)
    assert message["endpoint"]["concurrency"] == [1, 2]
    assert wire.decode(JobSpec, json.loads(json.dumps(message))) == spec
    assert parse_job_key(key) == ("r1", "m", "api:local", JOB_KIND_TEST)
    with pytest.raises(ContractError, match="api:local"):
        JobSpec(key=key, run_id="r1", model_type="m", hardware="api:other", kind=JOB_KIND_TEST, endpoint=endpoint)
    with pytest.raises(ContractError, match="unknown hardware"):
        JobSpec(key=key, run_id="r1", model_type="m", hardware="api:local", kind=JOB_KIND_TEST)


class _Entry:
    model_type, modality, family, runnable = "bert", "text", "bert", True
    reason_class = reason = None
    param_count = 1_000_000


def test_the_plan_has_one_api_job_per_endpoint_beside_the_model_jobs(monkeypatch):
    monkeypatch.setenv("ACCEL_ENDPOINT_TOKEN_LOCAL", "sk-never-in-a-plan")
    endpoints = parse_endpoints(["local=http://127.0.0.1:8000@/srv/tiny-chat", "remote=http://10.1.1.1:9000@gpt2"])
    options = PlanOptions(phase="2026-q4", models="bert", hardware=("cpu",), endpoints=endpoints)
    plan = plan_run(options, [_Entry()], Settings(), template_for=lambda e, h: None, now=1.8e9, token="abcd")
    by_hw = {j.hardware: j for j in plan.jobs}
    assert set(by_hw) == {"cpu", "api:local", "api:remote"}
    api = by_hw["api:local"]
    assert api.model_type == "tiny-chat" and api.endpoint == endpoints[0] and api.runnable and api.expected_s > 0
    assert plan.params.endpoints == ("api:local", "api:remote")
    assert plan.params.modalities == {"tiny-chat": "text", "gpt2": "text"}
    assert "sk-never-in-a-plan" not in json.dumps(wire.encode(plan))


def test_an_endpoint_job_goes_to_the_api_queue():
    settings = Settings()
    assert settings.queue_for("api:local") == "hw.api" == settings.queue_for("api")
    assert settings.queue_for("cpu") == "hw.cpu"


def test_endpoints_come_from_the_toml_file_too(tmp_path):
    config = tmp_path / "accel.toml"
    config.write_text('endpoints = ["local=http://127.0.0.1:8000@m", "b=http://h:1"]\n')
    assert Settings.load(config, environ={}).endpoints == ("local=http://127.0.0.1:8000@m", "b=http://h:1")
    config.write_text("endpoints = 3\n")
    with pytest.raises(ConfigError, match="not an array of strings"):
        Settings.load(config, environ={})


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("bad/name=http://127.0.0.1:1@m", "--endpoint name 'bad/name' is not a valid name"),
        ("x=http://127.0.0.1:0x1@m", "invalid port"),
        ("x=http://u:hunter2@127.0.0.1:1", "credentials"),
    ],
)
def test_accel_run_refuses_a_bad_endpoint_in_one_line_exit_2(tmp_path, value, says):
    env = {**os.environ, "ACCEL_RESULTS_DB": str(tmp_path / "r.duckdb"), "ACCEL_BROKER_URL": ""}
    done = subprocess.run(
        [sys.executable, "-c", CLI, "run", "--phase", "p", "--models", "bert", "--endpoint", value],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "hunter2" not in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "r.duckdb").exists()


def test_a_bad_endpoint_in_the_toml_file_names_the_file_in_one_line_exit_2(tmp_path):
    config = tmp_path / "accel.toml"
    config.write_text('endpoints = ["bad/name=http://127.0.0.1:1@m"]\n')
    env = {**os.environ, "ACCEL_RESULTS_DB": str(tmp_path / "r.duckdb"), "ACCEL_BROKER_URL": "",
           "ACCEL_CONFIG": str(config)}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", CLI, "run", "--phase", "p", "--models", "bert"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(config) in lines[0] and "'bad/name' is not a valid name" in lines[0]

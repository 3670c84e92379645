"""The job body (``constants.JOB_ENTRY``) in a real fork server: results and their error classes.

Each case carries its own small template, so the classification rules are exercised on real pytest runs
in forked children: a passing test, a failing assertion, an exception in the forward test, a failing
fixture (build), a missing dependency, a broken template; and the runner's own outcomes (time limit)
mapped by ``outcome_to_result``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from accelerate_core import wire
from accelerate_core.config import BenchConfig
from accelerate_core.constants import (
    ERR_BUILD,
    ERR_FORWARD,
    ERR_MISSING_DEPENDENCY,
    ERR_RENDER,
    ERR_TEST_FAILED,
    ERR_TIMEOUT,
    JOB_ENTRY,
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_TIMEOUT,
)
from accelerate_core.contracts import JobLimits, JobResult, JobSpec, TemplateRef, job_key
from accelerate_core.job_outcome import outcome_to_result
from accelerate_core.runner import ForkServer
from templates_db.model import sha256_text

RUN = "jobbody-20260101T000000-0000"

PASSING = """
def test_forward():
    assert {{ model_type | pyrepr }} == "bert"

def test_benchmark():
    import json, os
    from accelerate_core.constants import BENCH_OUT_ENV
    from accelerate_core import bench
    from accelerate_core.contracts import Measurement
    m = Measurement(metric="latency", unit="s", samples=[0.01, 0.02], n=2, p50=0.015)
    bench.write_measurements(os.environ[BENCH_OUT_ENV], [m], {"host": "test"})
"""
ASSERTION = "def test_forward():\n    assert 1 == 2, 'outputs differ'\n"
FORWARD = "def test_forward():\n    raise RuntimeError('mat1 and mat2 shapes cannot be multiplied')\n"
# An assert inside library code (transformers validates inputs so) is the model failing, not the test.
LIBRARY_ASSERT = "def test_forward():\n    import torch\n    torch._assert(False, 'Padding_idx must be in range')\n"
BUILD = (
    "import pytest\n\n@pytest.fixture\ndef model():\n    raise ValueError('bad config')\n\n"
    "def test_forward(model):\n    pass\n"
)
MISSING = "def test_forward():\n    import natten_not_installed_here  # noqa: F401\n"
BROKEN = "def test_forward():\n    assert {{ no_such_variable }}\n"
SLEEPER = "def test_forward():\n    import time\n    time.sleep(60)\n"


def _spec(body: str, *, name: str = "case", model_type: str = "bert", limit: float = 60.0) -> JobSpec:
    template = TemplateRef(name=name, sha=sha256_text(body), body=body)
    return JobSpec(
        key=job_key(RUN, model_type, "cpu", "test") + name,
        run_id=RUN,
        model_type=model_type,
        hardware="cpu",
        kind="test",
        template=template,
        limits=JobLimits(soft_s=limit / 2, hard_s=limit, mem_cap_mb=4096),
        bench=BenchConfig(warmup=0, min_iters=1, min_duration_s=0.0, max_duration_s=0.1),
    )


@pytest.fixture(scope="module")
def server() -> Iterator[ForkServer]:
    with ForkServer(JOB_ENTRY, max_children=2) as runner:
        yield runner


def _run(server: ForkServer, spec: JobSpec) -> JobResult:
    outcome = server.run(
        spec.key, wire.encode(spec), time_limit_s=spec.limits.hard_s, mem_cap_mb=spec.limits.mem_cap_mb
    )
    return outcome_to_result(spec, outcome, "test-worker", "test-host")


def test_a_passing_test_is_done_with_its_measurements_and_source(server: ForkServer) -> None:
    result = _run(server, _spec(PASSING))
    assert result.status == STATUS_DONE, result.error_message
    assert (result.tests_passed, result.tests_failed) == (2, 0)
    assert [m.metric for m in result.measurements] == ["latency"]
    assert result.measurements[0].samples == (0.01, 0.02)
    assert result.environment["host"] == "test"
    assert result.generated_source is not None and "'bert' == \"bert\"" in result.generated_source
    assert result.worker_id == "test-worker" and result.template_sha == sha256_text(PASSING)


@pytest.mark.parametrize(
    ("body", "error_class", "error_type", "text"),
    [
        (ASSERTION, ERR_TEST_FAILED, "AssertionError", "outputs differ"),
        (FORWARD, ERR_FORWARD, "RuntimeError", "shapes cannot be multiplied"),
        (LIBRARY_ASSERT, ERR_FORWARD, "AssertionError", "Padding_idx"),
        (BUILD, ERR_BUILD, "ValueError", "bad config"),
        (MISSING, ERR_MISSING_DEPENDENCY, "ModuleNotFoundError", "natten_not_installed_here"),
        (BROKEN, ERR_RENDER, "TemplateInvalidError", "no_such_variable"),
    ],
    ids=["assertion", "forward", "library-assert", "build", "missing-dependency", "render"],
)
def test_a_failing_model_is_a_classified_result(
    server: ForkServer, body: str, error_class: str, error_type: str, text: str
) -> None:
    result = _run(server, _spec(body))
    assert result.status == STATUS_FAILED
    assert (result.error_class, result.error_type) == (error_class, error_type), result.error_message
    assert text in (result.error_message or "")


def test_a_job_past_its_hard_limit_is_a_timeout_result(server: ForkServer) -> None:
    result = _run(server, _spec(SLEEPER, limit=2.0))
    assert (result.status, result.error_class) == (STATUS_TIMEOUT, ERR_TIMEOUT)
    assert result.duration_s is not None and 1.5 < result.duration_s < 30


def test_a_dry_job_is_done_without_a_model(server: ForkServer) -> None:
    spec = JobSpec(key=job_key(RUN, "bert", "cpu", "dry"), run_id=RUN, model_type="bert", hardware="cpu", kind="dry")
    result = _run(server, spec)
    assert result.status == STATUS_DONE and result.generated_source is None

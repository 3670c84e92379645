"""A served model's job in a phase run (``JobSpec.endpoint``): probe, functional check, then benchmark.

:func:`run_endpoint_job` is the one body of that job for both executors (the local one and an
``accel worker --hardware api`` node). It runs in the executor's own process, not in a fork-server child:
it is an HTTP client (no torch, nothing to isolate), and it reads the bearer token from *this* process's
environment (``ACCEL_ENDPOINT_TOKEN_<NAME>``), which job children never see. The token is never in the job
message, and every text of the result (message, environment) goes through the target's redaction.

The result, one row ``api:NAME``:

- the server does not answer (``probe``): ``failed``, ``endpoint-down``, the request's class in the message;
- the functional check fails: ``failed``, ``endpoint-check`` (the check is a test: ``tests_failed == 1``);
- no benchmark request succeeds: ``failed``, ``endpoint-bench``;
- else ``done``: ``tests_passed`` counts the check and the benchmark, the measurements are the benchmark's
  (TTFT, ITL, TPOT, end-to-end ``latency`` with raw samples, tokens/s, requests/s; ``batch_size`` is the
  concurrency), and failed requests by class are in the environment.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import httpx2

from accelerate_core.config import endpoint_token, redact_url
from accelerate_core.constants import (
    ERR_ENDPOINT_BENCH,
    ERR_ENDPOINT_CHECK,
    ERR_ENDPOINT_DOWN,
    ERR_WORKER,
    STATUS_DONE,
)
from accelerate_core.constants import STATUS_FAILED as FAILED
from accelerate_core.contracts import EndpointJob, JobResult, JobSpec, Measurement
from accelerate_core.endpoint.bench import bench_endpoint, probe_endpoint
from accelerate_core.endpoint.check import CheckResult, check_endpoint
from accelerate_core.endpoint.classify import classify, describe, one_line
from accelerate_core.endpoint.report import EndpointReport
from accelerate_core.endpoint.spec import EndpointBenchConfig, EndpointTarget, Secret
from accelerate_core.errors import AccelerateError

__all__ = ["run_endpoint_job"]

logger = logging.getLogger(__name__)


def run_endpoint_job(
    spec: JobSpec, *, worker_id: str, host: str, attempt: int = 1, environ: Mapping[str, str] | None = None
) -> JobResult:
    """Check and benchmark the endpoint of ``spec``; every failure is a classified result, never an exception.

    Args:
        spec: a job whose ``endpoint`` is set.
        worker_id, host, attempt: who ran it, recorded with the result.
        environ: where the token is read (default ``os.environ``; tests pass a dict).
    """
    job = spec.endpoint
    if job is None:
        raise ValueError(f"job {spec.key} is not an endpoint job")
    started = time.time()
    token = endpoint_token(job.name, environ=environ)
    target = EndpointTarget(name=job.name, url=job.url, model=job.model or "-", token=Secret(token) if token else None)
    run = _Run(spec, target, started, worker_id=worker_id, host=host, attempt=attempt)
    try:
        return run.execute(job)
    except AccelerateError as e:  # e.g. a URL this worker's checks refuse
        return run.failed(ERR_ENDPOINT_CHECK, type(e).__name__, str(e), passed=0)
    except Exception as e:  # ours, not the server's: still a row, so the phase ends
        logger.exception("endpoint job %s could not be run", spec.key)
        return run.failed(ERR_WORKER, type(e).__name__, f"the endpoint job could not be run: {e}", passed=0)


class _Run:
    """One endpoint job under way: its target (token inside) and how to make its result."""

    def __init__(self, spec: JobSpec, target: EndpointTarget, started: float, **who: Any) -> None:
        self.spec = spec
        self.target = target
        self.started = started
        self.who = who
        self.environment: dict[str, Any] = {"endpoint": target.describe()}

    def execute(self, job: EndpointJob) -> JobResult:
        down = asyncio.run(probe_endpoint(self.target, job.timeout_s))
        if down is not None:
            return self.failed(ERR_ENDPOINT_DOWN, down[0], f"{down[0]}: {down[1]}", passed=0)
        if not job.model:
            listed = _first_model(self.target, job.timeout_s)
            if isinstance(listed, CheckResult):
                return self.failed(ERR_ENDPOINT_CHECK, "CheckFailed", listed.reason, passed=0)
            self.target = replace(self.target, model=listed)
            self.environment["endpoint"] = self.target.describe()
        check = check_endpoint(self.target, timeout_s=job.timeout_s)
        self.environment["check"] = check.to_dict()
        if not check.ok:
            return self.failed(ERR_ENDPOINT_CHECK, "CheckFailed", check.reason, passed=0)
        report = bench_endpoint(self.target, _bench_config(job))
        self.environment.update(report.environment)
        self.environment["bench"] = _bench_summary(report)
        if report.ok == 0:
            errors = ", ".join(f"{n} {cls}" for cls, n in sorted(report.error_totals().items())) or "none sent"
            return self.failed(ERR_ENDPOINT_BENCH, "BenchFailed", f"no benchmark request succeeded: {errors}", passed=1)
        measurements = tuple(_measurement(row) for row in report.measurements())
        return self.result(STATUS_DONE, tests_passed=2, measurements=measurements)

    def failed(self, error_class: str, error_type: str, message: str, *, passed: int) -> JobResult:
        text = one_line(self.target.redact(message))
        return self.result(FAILED, error_class=error_class, error_type=error_type, error_message=text,
                           tests_passed=passed, tests_failed=1)  # fmt: skip

    def result(self, status: str, **fields_: Any) -> JobResult:
        environment = json.loads(self.target.redact(json.dumps(self.environment, default=str)))
        return JobResult.for_spec(
            self.spec,
            status=status,
            started_at=self.started,
            finished_at=time.time(),
            device_name=f"{redact_url(self.target.url)} {self.target.model}",
            environment=environment,
            worker_id=self.who["worker_id"],
            host=self.who["host"],
            attempt=self.who["attempt"],
            **fields_,
        )


def _bench_config(job: EndpointJob) -> EndpointBenchConfig:
    return EndpointBenchConfig(
        concurrency=job.concurrency,
        requests=job.requests,
        prompt_tokens=job.prompt_tokens,
        max_tokens=job.max_tokens,
        timeout_s=job.timeout_s,
    )


def _bench_summary(report: EndpointReport) -> dict[str, Any]:
    """What the row keeps of the benchmark besides its measurements: settings and failed requests by class."""
    return {
        "config": report.config,
        "sent": report.sent,
        "ok": report.ok,
        "errors": report.error_totals(),
        "stream_options_include_usage": report.include_usage,
        "prompts_counted_by": report.prompts_counted_by,
    }


def _measurement(row: Mapping[str, Any]) -> Measurement:
    """A benchmark's measurement row (its keys are ``Measurement``'s fields) as the contract."""
    return Measurement(**{**row, "samples": tuple(float(s) for s in row["samples"])})


def _first_model(target: EndpointTarget, timeout_s: float) -> str | CheckResult:
    """The first model id the server lists (``GET /v1/models``), or why there is none."""
    headers = {"Authorization": f"Bearer {target.token.reveal()}"} if target.token is not None else {}
    try:
        response = httpx2.get(target.models_url, headers=headers, timeout=timeout_s, trust_env=False)
        response.raise_for_status()
        data = response.json().get("data") or []
        model = str(data[0]["id"])
    except Exception as exc:
        return CheckResult(False, f"no model given and none listed: {classify(exc)} ({one_line(describe(exc))})")
    return model

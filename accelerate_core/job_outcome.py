"""A job's outcome in the job runner turned into the :class:`~accelerate_core.contracts.JobResult` that is recorded.

Both executors (the local one in ``scheduler.local`` and the Celery task in ``workers.tasks``) run a job
through the fork server and get a ``ChildOutcome`` back. A job whose child returned normally carries its
own result, encoded (``workers.job.job_entry`` never raises for a model failure); a child that was killed (time
limit, memory cap), crashed or raised an infrastructure error has no result of its own, and one is made
here from the outcome. Keeping this in one place means both executors record the same row for the same
outcome.

A job message (or a job's result) that cannot be decoded is not a vanished job either:
:func:`undecodable_result` makes its row from the job key alone (``version-skew``, ``unsigned-job``,
``bad-signature`` or ``worker-error``).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Protocol

from accelerate_core import wire
from accelerate_core.constants import (
    ERR_CRASHED,
    ERR_TIMEOUT,
    ERR_VERSION_SKEW,
    ERR_WORKER,
    HARDWARE_KINDS,
    JOB_TIMINGS_KEY,
    STATUS_FAILED,
    STATUS_TIMEOUT,
)
from accelerate_core.contracts import JobResult, JobSpec, parse_job_key
from accelerate_core.errors import AccelerateError, ContractError, SignatureError, VersionSkewError


class Outcome(Protocol):
    """What :func:`outcome_to_result` reads of ``accelerate_core.runner.ChildOutcome``."""

    @property
    def job_id(self) -> str: ...
    @property
    def ok(self) -> bool: ...
    @property
    def value(self) -> dict[str, Any] | None: ...
    @property
    def error_class(self) -> str | None: ...
    @property
    def error_type(self) -> str | None: ...
    @property
    def error_message(self) -> str | None: ...
    @property
    def duration_s(self) -> float: ...
    @property
    def peak_rss_mb(self) -> float | None: ...
    @property
    def exit_signal(self) -> int | None: ...
    @property
    def entry_s(self) -> float | None: ...


def outcome_to_result(
    spec: JobSpec,
    outcome: Outcome,
    worker_id: str | None,
    host: str | None,
    *,
    attempt: int = 1,
    now: float | None = None,
) -> JobResult:
    """The result to record for ``spec`` given the runner's ``outcome``.

    Args:
        spec: the job that ran.
        outcome: the fork server's report of the child.
        worker_id: the executor's id (a Celery worker name, or ``local-<pid>``).
        host: the machine's host name.
        attempt: the delivery attempt (Celery redeliveries count up).
        now: the clock (unix seconds) used as the finish time of a child that left no result.

    Returns:
        The child's own result stamped with the worker, host and attempt when the child returned one;
        otherwise a ``timeout`` or ``failed`` result carrying the outcome's error class and message. Either
        way its ``environment[JOB_TIMINGS_KEY]`` holds the runner's stages too (:func:`runner_timings`).
    """
    if outcome.ok and outcome.value is not None:
        try:
            result = wire.decode(JobResult, outcome.value)
        except ContractError as e:
            result = _infrastructure_result(spec, outcome, worker_id, host, attempt, now, malformed=str(e))
        else:
            result = replace(result, worker_id=worker_id, host=host, attempt=attempt)
    else:
        result = _infrastructure_result(spec, outcome, worker_id, host, attempt, now)
    timings = {**(result.environment.get(JOB_TIMINGS_KEY) or {}), **runner_timings(outcome)}
    return replace(result, environment={**result.environment, JOB_TIMINGS_KEY: timings})


def runner_timings(outcome: Outcome) -> dict[str, float]:
    """The runner's stages of one job, in seconds: ``child_s`` (fork to exit), ``entry_s`` (the job body) and
    ``runner_s`` (the rest: fork, box, environment, result write, exit: the fixed cost of every job)."""
    child_s = float(outcome.duration_s or 0.0)
    out = {"child_s": round(child_s, 4)}
    if outcome.entry_s is not None:
        out["entry_s"] = round(outcome.entry_s, 4)
        out["runner_s"] = round(max(0.0, child_s - outcome.entry_s), 4)
    return out


def _infrastructure_result(
    spec: JobSpec,
    outcome: Outcome,
    worker_id: str | None,
    host: str | None,
    attempt: int,
    now: float | None,
    *,
    malformed: str | None = None,
) -> JobResult:
    finished = time.time() if now is None else now
    duration = float(outcome.duration_s or 0.0)
    error_class = outcome.error_class or ERR_CRASHED
    message = outcome.error_message or _describe(outcome)
    if malformed is not None:
        error_class, message = ERR_CRASHED, f"the job returned a malformed result: {malformed}"
    status = STATUS_TIMEOUT if error_class == ERR_TIMEOUT else STATUS_FAILED
    environment: dict[str, Any] = {}
    if outcome.peak_rss_mb is not None:
        environment["peak_rss_mb"] = outcome.peak_rss_mb
    return JobResult.for_spec(
        spec,
        status=status,
        started_at=finished - duration,
        finished_at=finished,
        error_class=error_class,
        error_type=outcome.error_type,
        error_message=message,
        worker_id=worker_id,
        host=host,
        environment=environment,
        attempt=attempt,
    )


def _describe(outcome: Outcome) -> str:
    if outcome.exit_signal:
        return f"the job's process died from signal {outcome.exit_signal}"
    return "the job's process ended without a result"


def undecodable_result(
    key: object,
    error: ContractError,
    *,
    worker_id: str | None,
    host: str | None,
    now: float | None = None,
) -> JobResult | None:
    """The row of a job whose message or result could not be decoded, or None when ``key`` names no job.

    A :class:`VersionSkewError` (another schema major) is recorded ``version-skew``, its message naming both
    versions; a :class:`SignatureError` ``unsigned-job`` or ``bad-signature``; any other decoding error
    ``worker-error`` (see :func:`keyed_result`).

    Args:
        key: the job key (a job message's task id; a result's ``key``).
        error: why it could not be decoded.
        worker_id: the recording process.
        host: its host name.
        now: the clock (unix seconds).
    """
    if isinstance(error, SignatureError):
        error_class = error.error_class
    else:
        error_class = ERR_VERSION_SKEW if isinstance(error, VersionSkewError) else ERR_WORKER
    return keyed_result(key, STATUS_FAILED, error_class, str(error), error_type=type(error).__name__,
                        worker_id=worker_id, host=host, now=now)  # fmt: skip


def keyed_result(
    key: object,
    status: str,
    error_class: str,
    message: str,
    *,
    error_type: str | None = None,
    worker_id: str | None,
    host: str | None,
    now: float | None = None,
) -> JobResult | None:
    """The terminal row of a job known by its key alone, or None when ``key`` names no job.

    The job is named by its key (``contracts.parse_job_key``), so this works whatever its message held: a
    message that cannot be decoded, a task body that raised, a job revoked before it ran.

    Args:
        key: the job key (a job message's task id; a result's ``key``).
        status: the terminal status to record.
        error_class: the row's error class.
        message: what happened, and what to do.
        error_type: the exception's class name, when an exception was the cause.
        worker_id: the recording process.
        host: its host name.
        now: the clock (unix seconds).
    """
    identity = parse_job_key(key) if isinstance(key, str) else None
    if identity is None:
        return None
    stamp = time.time() if now is None else now
    run_id, model_type, target, kind = identity
    kind_of, _, model = target.partition(".")
    hardware = kind_of if kind_of in HARDWARE_KINDS and model else target  # a key names kind.model for a targeted job
    try:
        return JobResult(
            key=str(key),
            run_id=run_id,
            model_type=model_type,
            hardware=hardware,
            kind=kind,
            status=status,
            error_class=error_class,
            error_type=error_type,
            error_message=message,
            started_at=stamp,
            finished_at=stamp,
            duration_s=0.0,
            worker_id=worker_id,
            host=host,
        )
    except AccelerateError:  # the key's names are not names (a forged run id): nothing safe to record
        return None

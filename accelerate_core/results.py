"""Turning what the job runner returns into the :class:`~accelerate_core.contracts.JobResult` that is recorded.

Both executors (the local one in ``scheduler.local`` and the Celery task in ``workers.tasks``) run a job
through the fork server and get a ``ChildOutcome`` back. A job whose child returned normally carries its
own result (``workers.job.execute`` never raises for a model failure); a child that was killed (time
limit, memory cap), crashed or raised an infrastructure error has no result of its own, and one is made
here from the outcome. Keeping this in one place means both executors record the same row for the same
outcome.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Protocol

from accelerate_core.constants import (
    ERR_CRASHED,
    ERR_TIMEOUT,
    STATUS_FAILED,
    STATUS_TIMEOUT,
)
from accelerate_core.contracts import JobResult, JobSpec
from accelerate_core.errors import ConfigError


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
        otherwise a ``timeout`` or ``failed`` result carrying the outcome's error class and message.
    """
    if outcome.ok and outcome.value is not None:
        try:
            result = JobResult.from_dict(outcome.value)
        except ConfigError as e:
            return _infrastructure_result(spec, outcome, worker_id, host, attempt, now, malformed=str(e))
        return replace(result, worker_id=worker_id, host=host, attempt=attempt)
    return _infrastructure_result(spec, outcome, worker_id, host, attempt, now)


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

"""Names, keys and units shared by every part of the fleet, defined once.

The scheduler and the workers never import each other: they agree only on what is written here and in
:mod:`accelerate_core.contracts`.
"""

from __future__ import annotations

from typing import Final

HARDWARE_KINDS: Final = ("cpu", "cuda", "rocm", "mps")
"""Every hardware kind a worker can be pinned to, in order of preference for accelerators last."""

QUEUE_PREFIX: Final = "hw."
"""A hardware kind's Celery queue is ``QUEUE_PREFIX + kind`` (``hw.cpu``, ``hw.cuda``, ...)."""

RESULTS_QUEUE: Final = "results"
"""Celery queue consumed only by the results writer (concurrency 1)."""

TASK_RUN_JOB: Final = "accel.run_job"
"""Task name: run one planned job (payload: ``JobSpec.to_dict()``) on a pinned worker."""

TASK_RECORD_RESULT: Final = "accel.record_result"
"""Task name: the writer records one finished job (payload: ``JobResult.to_dict()``)."""

TASK_RECORD_RUN: Final = "accel.record_run"
"""Task name: the writer records a run and its planned jobs (payload: ``RunPlan.to_dict()``)."""

TASK_REGISTER_WORKER: Final = "accel.register_worker"
"""Task name: the writer records a worker's inventory (payload: ``WorkerInfo.to_dict()``)."""

JOB_KIND_TEST: Final = "test"
"""Job kind: generate the model's test from its template, run it and its benchmark."""

JOB_KIND_DRY: Final = "dry"
"""Job kind: no model at all; measures the fleet's own overhead (enqueue to stored row)."""

JOB_KINDS: Final = (JOB_KIND_TEST, JOB_KIND_DRY)
"""Every job kind the planner can emit."""

STATUS_QUEUED: Final = "queued"
STATUS_RUNNING: Final = "running"
STATUS_DONE: Final = "done"
STATUS_FAILED: Final = "failed"
STATUS_TIMEOUT: Final = "timeout"
STATUS_SKIPPED: Final = "skipped"
TERMINAL_STATUSES: Final = frozenset({STATUS_DONE, STATUS_FAILED, STATUS_TIMEOUT, STATUS_SKIPPED})
"""A job with one of these statuses is finished; a phase is done when every job has one."""

# Error classes recorded with a failed job (``JobResult.error_class``).
ERR_TIMEOUT: Final = "timeout"
ERR_OOM: Final = "out-of-memory"
ERR_MISSING_DEPENDENCY: Final = "missing-dependency"
ERR_BUILD: Final = "build-error"
ERR_FORWARD: Final = "forward-error"
ERR_TEST_FAILED: Final = "test-failed"
ERR_RENDER: Final = "render-error"
ERR_CRASHED: Final = "crashed"
ERR_REDELIVERY_CAP: Final = "redelivery-cap"
ERR_UNSUPPORTED: Final = "unsupported"
ERR_PROCESS_LIMIT: Final = "process-limit"
ERR_FILE_SIZE: Final = "file-size-limit"
ERROR_CLASSES: Final = (
    ERR_TIMEOUT,
    ERR_OOM,
    ERR_MISSING_DEPENDENCY,
    ERR_BUILD,
    ERR_FORWARD,
    ERR_TEST_FAILED,
    ERR_RENDER,
    ERR_CRASHED,
    ERR_REDELIVERY_CAP,
    ERR_UNSUPPORTED,
    ERR_PROCESS_LIMIT,
    ERR_FILE_SIZE,
)
"""Every error class a job result may carry."""

ENV_PREFIX: Final = "ACCEL_"
"""Every setting can be given as an environment variable with this prefix (see ``config``)."""

BENCH_OUT_ENV: Final = "ACCEL_BENCH_OUT"
"""Environment variable naming the JSON file a generated benchmark test writes its measurements to."""

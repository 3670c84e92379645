"""Names, keys and units shared by every part of the fleet, defined once.

The scheduler and the workers never import each other: they agree only on what is written here and in
:mod:`accelerate_core.contracts`.
"""

from __future__ import annotations

import re
from typing import Final

HARDWARE_KINDS: Final = ("cpu", "cuda", "rocm", "mps")
"""Every hardware kind a worker can be pinned to, in order of preference for accelerators last."""

TORCH_DEVICE: Final = {"cpu": "cpu", "cuda": "cuda", "rocm": "cuda", "mps": "mps"}
"""The torch device type of each hardware kind (ROCm builds of torch call their GPUs ``cuda``)."""

API_HARDWARE: Final = "api"
"""The kind of a served-model target: its jobs go to queue ``QUEUE_PREFIX + "api"`` (``accel worker --hardware api``)
and its rows have hardware ``api:NAME`` (``contracts.EndpointJob.hardware``), one per endpoint of the run."""

WORKER_KINDS: Final = (*HARDWARE_KINDS, API_HARDWARE)
"""What a worker node can serve: a hardware kind, or ``api`` (served endpoints, no device)."""


def hardware_kind(hardware: str) -> str:
    """The kind of a row's hardware: ``api`` for ``api:NAME``, else the hardware itself (its queue's suffix)."""
    return API_HARDWARE if hardware.startswith(f"{API_HARDWARE}:") else hardware


QUEUE_PREFIX: Final = "hw."
"""A hardware kind's Celery queue is ``QUEUE_PREFIX + kind`` (``hw.cpu``, ``hw.cuda``, ...); one device model's is
``QUEUE_PREFIX + kind + "." + slug`` (``hw.cuda.h100-80gb-hbm3``, see ``accelerate_core.backends.device_model``)."""

DEVICE_MODEL_PATTERN: Final = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$", re.ASCII)
"""A device model slug: lower-case letters and digits in words joined by single hyphens."""

RESULTS_QUEUE: Final = "results"
"""Celery queue consumed only by the results writer (concurrency 1)."""

TASK_RUN_JOB: Final = "accel.run_job"
"""Task name: run one planned job (kwargs ``spec``: an encoded ``JobSpec``) on a pinned worker."""

TASK_RECORD_RESULT: Final = "accel.record_result"
"""Task name: the writer records finished jobs (kwargs ``result`` or ``results``: encoded ``JobResult``)."""

TASK_RECORD_RUN: Final = "accel.record_run"
"""Task name: the writer records a run and its planned jobs (kwargs ``plan``: an encoded ``RunPlan``)."""

TASK_CANCEL_RUN: Final = "accel.cancel_run"
"""Task name: the writer cancels a run (kwargs ``run_id``): its unfinished jobs recorded ``cancelled``, the pending
ones revoked, the run finished and reported (``accel cancel``)."""

TASK_REGISTER_WORKER: Final = "accel.register_worker"
"""Task name: the writer records a worker's inventory (kwargs ``info``: an encoded ``WorkerInfo``)."""

JOB_ENTRY: Final = "workers.job:job_entry"
"""The fork server's entry for one job (an encoded ``JobSpec`` in, an encoded ``JobResult`` out), the same for
the local executor and the Celery workers."""

STATUS_KEY_PREFIX: Final = "acc:status:"
"""Redis key prefix: ``acc:status:<run id>`` holds the writer's latest status snapshot of the run (JSON)."""

STATUS_TTL_S: Final = 30 * 24 * 3600
"""How long a status snapshot lives in Redis, in seconds."""

DELIVERIES_PREFIX: Final = "acc:deliveries:"
"""Redis key prefix: ``acc:deliveries:<job key>`` counts the redeliveries of one job (our redelivery cap).

Redis marks every message it restores (worker lost, visibility timeout) as ``redelivered``; only those
deliveries are counted, so the common first delivery costs no round trip."""

DELIVERIES_TTL_S: Final = 7 * 24 * 3600
"""How long a delivery counter lives, in seconds. Keys hold the run id, so a counter never outlives its
use; a delivery after the result was sent (the worker died before acknowledging) counts, as it should."""

NODE_INSPECT_COMMAND: Final = "accel_node"
"""Celery inspect command every worker node answers with its ``NodeReport`` (``accel workers``)."""

NODE_ANSWER_PURPOSE: Final = "accel_node.answer"
"""What a node's signed answer to :data:`NODE_INSPECT_COMMAND` is signed for (with the broadcast's challenge)."""

NODE_CHALLENGE_HEX: Final = 32
"""Hex characters of the random challenge a broadcast carries; a node signs its answer with it, so an answer
recorded earlier cannot be replayed to a later broadcast."""

WRITER_PROCESSING_KEY: Final = "acc:writer:processing"
"""Redis list holding the batch the writer is writing (deleted once the batch is committed)."""

WRITER_LOCK_KEY: Final = "acc:writer:lock"
"""Redis key of the one-writer lock (a redis-py ``Lock``: a random owner token, renewed by the live writer;
who holds it is in its heartbeat, ``WRITER_HEARTBEAT_KEY``)."""

WRITER_HEARTBEAT_KEY: Final = "acc:writer:heartbeat"
"""Redis key of the live writer's heartbeat (an encoded ``WriterHeartbeat``); it expires when the writer dies."""

WRITER_HEARTBEAT_EVERY_S: Final = 1.0
"""How often the writer publishes its heartbeat, in seconds."""

WRITER_HEARTBEAT_TTL_S: Final = 10
"""The heartbeat's lifetime, in seconds: no heartbeat for this long means no writer is alive."""

WRITER_STATES: Final = ("writing", "waiting-lock", "waiting-store", "store-failing")
"""What a live writer is doing (``WriterHeartbeat.state``)."""

DEAD_LETTER_KEY: Final = "acc:writer:dead-letters"
"""Redis list of the messages the writer could not decode or apply (newest first), each with its reason."""

DEAD_LETTER_COUNT_KEY: Final = "acc:writer:dead-letter-count"
"""Redis counter of every message ever dead-lettered (the list keeps the latest ``DEAD_LETTER_KEEP``)."""

DEAD_LETTER_MAX_CHARS: Final = 16_384
"""How much of a dead-lettered message is kept, in characters."""

DEAD_LETTER_KEEP: Final = 10_000
"""How many dead letters the list keeps; older ones are dropped from it (the counter keeps counting)."""

RESENDS_PREFIX: Final = "acc:resends:"
"""Redis key prefix: ``acc:resends:<job key>`` counts how often the reconciler re-sent a job whose message
vanished (past ``reconcile_resends`` it is recorded ``lost``); it lives as long as a delivery counter."""

RECONCILE_REQUESTS_KEY: Final = "acc:reconcile:requests"
"""Redis set of run ids the writer reconciles at its next loop (``accel run --resume RUN`` on a fleet)."""

RECONCILE_REPLY_PREFIX: Final = "acc:reconcile:reply:"
"""Redis key prefix: ``acc:reconcile:reply:<run id>`` holds the writer's last reconciliation of the run (JSON
``ReconcileReport``)."""

RECONCILE_REPLY_TTL_S: Final = 24 * 3600
"""How long a reconciliation reply lives in Redis, in seconds."""

DISPATCH_PREFIX: Final = "acc:dispatch:"
"""Redis key prefix: ``acc:dispatch:<run id>`` is live while a scheduler sends the run's jobs (value: its
``host:pid``); the reconciler leaves such a run alone, since its jobs are missing only because they are not sent
yet. The scheduler refreshes it while sending and deletes it when done; a killed one lets it expire."""

DISPATCH_TTL_S: Final = 15
"""Lifetime of a dispatch key, in seconds: a scheduler stopped (killed) longer than this counts as gone."""

DISPATCH_REFRESH_S: Final = 3.0
"""How often a dispatching scheduler renews its dispatch key, in seconds (well inside ``DISPATCH_TTL_S``)."""

KOMBU_UNACKED_KEY: Final = "unacked"
"""Redis hash where kombu keeps each delivered, unacknowledged message (``[payload, exchange, routing key]``)
until its worker acknowledges it or the visibility timeout restores it to its queue."""

KOMBU_PRIORITY_QUEUES: Final = ("", "\x06\x163", "\x06\x166", "\x06\x169")
"""The suffixes of the Redis lists behind one kombu queue (its priority steps): ``hw.cpu``, ``hw.cpu\\x06\\x163``..."""

JOB_KIND_TEST: Final = "test"
"""Job kind: generate the model's test from its template, run it and its benchmark."""

JOB_KIND_DRY: Final = "dry"
"""Job kind: no model at all; measures the fleet's own overhead (enqueue to stored row)."""

JOB_KINDS: Final = (JOB_KIND_TEST, JOB_KIND_DRY)
"""Every job kind the planner can emit."""

SIZE_TINY: Final = "tiny"
"""Model size: the architecture shrunk to a tiny config (few layers, small widths), random weights."""

SIZE_FULL: Final = "full"
"""Model size: the architecture at its default configuration (real dimensions), random weights, no download."""

MODEL_SIZES: Final = (SIZE_TINY, SIZE_FULL)
"""Every model size a job or ``accel bench`` can build."""

DTYPES: Final = ("float32", "bfloat16", "float16")
"""Every dtype a job or ``accel bench`` can run a model in (``--dtype``), float32 first (the default)."""

ATTN_IMPLEMENTATIONS: Final = ("sdpa", "eager", "flex_attention", "flash_attention_2", "flash_attention_3")
"""Attention implementations a job may ask for (``--attn``); one a model or this install lacks is a skipped row."""

COMPILE_OFF: Final = "off"
"""``--compile off``: the eager model (a run may time it beside compiled ones: ``--compile off,inductor``)."""

COMPILE_BACKENDS: Final = ("inductor", "aot_eager", "eager", "cudagraphs")
"""``torch.compile`` backends a job may ask for (``--compile``; ``off`` is the eager model); one that cannot run
here (inductor without a C compiler) is a skipped row."""

SOURCE_TYPE: Final = "type"
"""Model source: a model type of the installed transformers, built from its config with random weights."""

SOURCE_DIR: Final = "dir"
"""Model source: a local checkpoint directory (``save_pretrained`` layout, weights from safetensors)."""

SOURCE_HUB: Final = "hub"
"""Model source: a hub id (``org/name``) resolved offline from the local Hugging Face cache."""

SOURCE_KINDS: Final = (SOURCE_TYPE, SOURCE_DIR, SOURCE_HUB)
"""Every kind of model source (``accelerate_core.sources``)."""

STATUS_QUEUED: Final = "queued"
"""Job status: planned and recorded, not started yet."""
STATUS_RUNNING: Final = "running"
"""Job status: an executor started it."""
STATUS_DONE: Final = "done"
"""Terminal job status: every generated test passed."""
STATUS_FAILED: Final = "failed"
"""Terminal job status: it ran and failed (its ``error_class`` says how)."""
STATUS_TIMEOUT: Final = "timeout"
"""Terminal job status: killed at its hard time limit."""
STATUS_SKIPPED: Final = "skipped"
"""Terminal job status: planned but not run (its ``error_class`` is the skip reason's class)."""
STATUS_LOST: Final = "lost"
"""Terminal job status: its message vanished and no executor will run it (recorded by a reconciler)."""
STATUS_CANCELLED: Final = "cancelled"
"""Terminal job status: the run was cancelled before the job finished."""
TERMINAL_STATUSES: Final = frozenset(
    {STATUS_DONE, STATUS_FAILED, STATUS_TIMEOUT, STATUS_SKIPPED, STATUS_LOST, STATUS_CANCELLED}
)
"""A job with one of these statuses is finished; a phase is done when every job has one."""
JOB_STATUSES: Final = (STATUS_QUEUED, STATUS_RUNNING, *sorted(TERMINAL_STATUSES))
"""Every status a job row can have."""

RUN_PLANNED: Final = "planned"
"""Run status: recorded, its executor has not started it."""
RUN_RUNNING: Final = "running"
"""Run status: its executor (the local one, or the fleet's writer) is recording its results."""
RUN_INTERRUPTED: Final = "interrupted"
"""Run status: a local run was stopped before every job had a terminal row (``accel run --resume``)."""
RUN_COMPLETE: Final = "complete"
"""Run status: every planned job has a terminal row and the report was written."""
RUN_STATUSES: Final = (RUN_PLANNED, RUN_RUNNING, RUN_INTERRUPTED, RUN_COMPLETE)
"""Every status a run can have."""

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
ERR_WORKER: Final = "worker-error"
"""The worker itself failed to run the job (an exception in the task body, a malformed job message)."""
ERR_VERSION_SKEW: Final = "version-skew"
"""The job or its result was written by an incompatible schema version (the message names both)."""
ERR_REVOKED: Final = "revoked"
"""The job was revoked through Celery (Flower's revoke, ``celery control revoke``): recorded ``cancelled``."""
ERR_MESSAGE_LOST: Final = "message-lost"
"""The job's message vanished from the broker more often than the reconciler re-sends it: recorded ``lost``."""
ERR_NOT_IN_CACHE: Final = "not-in-cache"
"""A hub id is not in the local Hugging Face cache (the row's message names the command that fetches it)."""
ERR_ENDPOINT_DOWN: Final = "endpoint-down"
"""A served endpoint did not answer (refused, unreachable, timed out): the message names the request's class."""
ERR_ENDPOINT_CHECK: Final = "endpoint-check"
"""A served endpoint answered, but its functional check failed (no text, usage not adding up, stream disagreeing)."""
ERR_ENDPOINT_BENCH: Final = "endpoint-bench"
"""A served endpoint passed its check but no benchmark request succeeded (the message names the classes)."""
ERR_UNSIGNED: Final = "unsigned-job"
"""A job message without a fleet signature: refused, nothing run (see ``accelerate_core.signing``)."""
ERR_BAD_SIGNATURE: Final = "bad-signature"
"""A job message whose signature is not the fleet key's (forged or altered): refused, nothing run."""
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
    ERR_WORKER,
    ERR_VERSION_SKEW,
    ERR_REVOKED,
    ERR_MESSAGE_LOST,
    ERR_NOT_IN_CACHE,
    ERR_ENDPOINT_DOWN,
    ERR_ENDPOINT_CHECK,
    ERR_ENDPOINT_BENCH,
    ERR_UNSIGNED,
    ERR_BAD_SIGNATURE,
)
"""Every error class a job result may carry."""

ENV_PREFIX: Final = "ACCEL_"
"""Every setting can be given as an environment variable with this prefix (see ``config``)."""

LIMITS_CLAMPED_KEY: Final = "limits_clamped"
"""Key of a job result's ``environment``: why the worker ran the job with a shorter hard limit than it carried
(its own would have reached the worker's visibility timeout, see ``limits.fit_hard_s``)."""

JOB_TIMINGS_KEY: Final = "job_timings"
"""Key of a job result's ``environment``: seconds per stage of the job (``render_s``, ``build_s``, ``loop_s``...
from the child; ``entry_s``, ``child_s``, ``runner_s`` from the executor), summed per stage in the report."""

LOOPS_KEY: Final = "loops"
"""Key of a job result's ``environment``: how each timing loop of its benchmark ended, one entry per loop
(``metric``, ``batch_size``, ``seq_len``, ``stopped_by``, ``n``, ``warmup``, ``loop_s``, ``ci_rel``: see
``accelerate_core.bench.measure.Samples.loop_record``), summarised per metric and ending in the report."""

BENCH_OUT_ENV: Final = "ACCEL_BENCH_OUT"
"""Environment variable naming the JSON file a generated benchmark test writes its measurements to."""

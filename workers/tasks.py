"""The fleet's Celery tasks: thin wrappers that decode a payload, call the core and send plain data on.

- ``accel.run_job`` (queues ``hw.<kind>``): checks the job's fleet signature (:mod:`accelerate_core.signing`:
  an unsigned or forged job runs nothing and is recorded ``unsigned-job`` / ``bad-signature``), counts the
  delivery (our redelivery cap), runs the job (a ``dry`` job inline; a ``test`` job in a child of this
  process's fork server), turns the outcome into a :class:`~accelerate_core.contracts.JobResult` and pushes
  it onto the writer's queue as the ``record_result`` message Celery would send (:func:`send_result`).
- ``accel.record_result``, ``accel.record_run``, ``accel.register_worker`` (queue ``results``): sent
  by name here and by the scheduler; the writer (:mod:`workers.writer`), the one process that opens the
  results DB, takes them off their queue in batches itself, so they are not Celery tasks of any worker.

Every payload is a contract encoded by :mod:`accelerate_core.wire`. A job message this worker cannot decode
is still answered with a result: ``version-skew`` (another schema major; both versions named) or
``worker-error`` (malformed), keyed by the task id (the job key), so no planned job vanishes. So is an
exception anywhere in the task body (``worker-error``: Celery would reject the message without requeue),
and a job revoked through Celery (Flower's revoke) is recorded ``cancelled`` (``revoked``) by the worker
that drops it. The labels a
task also takes (``model_type``, ``hardware``, ...) are there for Flower only.
"""

from __future__ import annotations

import itertools
import logging
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from accelerate_core import celery_message, signing, wire
from accelerate_core.config import Settings
from accelerate_core.constants import (
    API_HARDWARE,
    DELIVERIES_PREFIX,
    DELIVERIES_TTL_S,
    ERR_REDELIVERY_CAP,
    ERR_REVOKED,
    ERR_TIMEOUT,
    ERR_WORKER,
    JOB_ENTRY,
    JOB_KIND_DRY,
    LIMITS_CLAMPED_KEY,
    STATUS_CANCELLED,
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_TIMEOUT,
    TASK_RECORD_RESULT,
    TASK_REGISTER_WORKER,
    TASK_RUN_JOB,
)
from accelerate_core.contracts import JobLimits, JobResult, JobSpec, WorkerInfo
from accelerate_core.errors import ContractError
from accelerate_core.job_outcome import keyed_result, undecodable_result
from accelerate_core.limits import backstop_limits, fit_hard_s
from workers import pinning

if TYPE_CHECKING:
    import redis
    from celery import Celery, Task

    from accelerate_core.runner import ForkServer
    from accelerate_core.signing import FleetKey

logger = logging.getLogger(__name__)


class DeliveryCounter:
    """Counts the deliveries of each job in Redis, so a job that kills its worker is not run forever."""

    def __init__(self, client: redis.Redis, ttl_s: int = DELIVERIES_TTL_S) -> None:
        self.client = client
        self.ttl_s = ttl_s

    def count(self, key: str) -> int:
        """Count one more redelivery of job ``key`` and return the total so far (1 on the first).

        A full broker (``maxmemory``) is waited out: counting is no reason to fail the job.
        """
        from workers.transport import wait_out_full_broker

        def incr() -> int:
            pipe = self.client.pipeline(transaction=True)
            pipe.incr(DELIVERIES_PREFIX + key)
            pipe.expire(DELIVERIES_PREFIX + key, self.ttl_s)
            n, _ = pipe.execute()
            return int(n)

        return wait_out_full_broker(incr, f"count a redelivery of job {key}")

    def clear(self, key: str) -> None:
        """Forget job ``key``'s deliveries (its result has been sent)."""
        self.client.delete(DELIVERIES_PREFIX + key)


@dataclass
class _ProcessState:
    """What one pool process keeps between jobs: built lazily, after the pool forked it."""

    runner: ForkServer | None = None
    redis: dict[str, redis.Redis] = field(default_factory=dict)
    """A connection per broker URL (one in a worker; tests talk to several brokers from one process)."""


_state = _ProcessState()


def _redis(settings: Settings) -> redis.Redis:
    from accelerate_core import broker

    url = broker.require_url(settings)
    if url not in _state.redis:
        _state.redis[url] = broker.connect(url, reply_timeout_s=10)
    return _state.redis[url]


def _runner() -> ForkServer:
    # A prefork pool process is daemonic and cannot have multiprocessing children: the fork server
    # is a plain subprocess, started on this process's first test job.
    if _state.runner is None:
        from accelerate_core.runner import ForkServer

        _state.runner = ForkServer(JOB_ENTRY)
    return _state.runner


def close_runner(**_: Any) -> None:
    """Stop this process's fork server (and its children), if it started one."""
    if _state.runner is not None:
        _state.runner.close()
        _state.runner = None


@dataclass(frozen=True)
class WorkerContext:
    """Who runs a job and how: identity, delivery counting and the fork server (injected for tests)."""

    settings: Settings
    worker_id: str
    host: str
    deliveries: DeliveryCounter
    runner: Callable[[], ForkServer] = _runner


def handle_delivery(spec: JobSpec, ctx: WorkerContext, *, redelivered: bool = True) -> JobResult:
    """Run one delivered job and return the result to record (never raises for a job failure).

    Args:
        spec: the job.
        ctx: who runs it.
        redelivered: the broker marked this delivery as a redelivery. A first delivery is attempt 1
            and costs no Redis round trip; a redelivery counts in Redis, and is attempt ``count + 1``.
    """
    attempt = ctx.deliveries.count(spec.key) + 1 if redelivered else 1
    if attempt > ctx.settings.redelivery_cap:
        logger.warning("job %s delivered %d times: recording redelivery-cap", spec.key, attempt)
        return capped_result(spec, ctx, attempt)
    spec, clamped = fit_limits(spec, ctx.settings.visibility_timeout_s)
    result = _run(spec, ctx, attempt)
    if clamped is None:
        return result
    return replace(result, environment={**result.environment, LIMITS_CLAMPED_KEY: clamped})


def fit_limits(spec: JobSpec, visibility_s: float) -> tuple[JobSpec, str | None]:
    """``spec`` with a hard limit that ends before this worker's visibility timeout, and why it was cut (None: it fit).

    The limits travel with the job from where the run was planned; the visibility timeout is this worker's.
    """
    hard_s = fit_hard_s(spec.limits.hard_s, visibility_s)
    if hard_s == spec.limits.hard_s:
        return spec, None
    old = spec.limits
    soft_s = min(old.soft_s, hard_s * old.soft_s / old.hard_s)
    why = (
        f"hard limit cut from {old.hard_s:.0f} s to {hard_s:.0f} s: with its Celery backstop it reached this "
        f"worker's visibility timeout ({visibility_s:.0f} s), and a second worker could have run it meanwhile; "
        f"give the workers time_limits.{spec.kind}.hard_s >= {old.hard_s:.0f} (their visibility timeout follows)"
    )
    logger.warning("job %s: %s", spec.key, why)
    return replace(spec, limits=JobLimits(soft_s=soft_s, hard_s=hard_s, mem_cap_mb=old.mem_cap_mb)), why


def _run(spec: JobSpec, ctx: WorkerContext, attempt: int) -> JobResult:
    if spec.kind == JOB_KIND_DRY:
        return dry_result(spec, ctx, attempt)
    if spec.endpoint is not None:
        return _run_endpoint(spec, ctx, attempt)
    return _run_in_child(spec, ctx, attempt)


def _run_endpoint(spec: JobSpec, ctx: WorkerContext, attempt: int) -> JobResult:
    """A served endpoint's job, in this process: its token is in this worker's environment, never in the job."""
    from accelerate_core.endpoint.job import run_endpoint_job

    return run_endpoint_job(spec, worker_id=ctx.worker_id, host=ctx.host, attempt=attempt)


def _run_in_child(spec: JobSpec, ctx: WorkerContext, attempt: int) -> JobResult:
    from celery.exceptions import SoftTimeLimitExceeded

    from accelerate_core.job_outcome import outcome_to_result

    env = pinning.current().device_env()
    env["TOKENIZERS_PARALLELISM"] = "false"
    started = time.time()
    limits = spec.limits
    try:
        outcome = ctx.runner().run(
            spec.key, wire.encode(spec), env=env, time_limit_s=limits.hard_s, mem_cap_mb=limits.mem_cap_mb
        )
    except SoftTimeLimitExceeded:
        # Celery's backstop fired: the runner should have killed the child long before.
        ctx.runner().cancel(spec.key)
        return _failure(spec, ctx, attempt, started, ERR_TIMEOUT, "Celery soft time limit reached (runner hung?)")
    return outcome_to_result(spec, outcome, ctx.worker_id, ctx.host, attempt=attempt)


def dry_result(spec: JobSpec, ctx: WorkerContext, attempt: int) -> JobResult:
    """A ``dry`` job: no model; measures the fleet itself. ``spec.sleep_s`` stands in for work."""
    started = time.time()
    if spec.sleep_s > 0:
        time.sleep(spec.sleep_s)
    finished = time.time()
    return JobResult.for_spec(
        spec,
        status=STATUS_DONE,
        started_at=started,
        finished_at=finished,
        worker_id=ctx.worker_id,
        host=ctx.host,
        attempt=attempt,
    )


def capped_result(spec: JobSpec, ctx: WorkerContext, attempt: int) -> JobResult:
    """The result of a job delivered more than ``redelivery_cap`` times: failed, not run again."""
    message = (
        f"delivered {attempt} times (cap {ctx.settings.redelivery_cap}): each earlier delivery lost its worker; "
        "run this model alone with `accel bench` to see why"
    )
    return _failure(spec, ctx, attempt, time.time(), ERR_REDELIVERY_CAP, message)


def _failure(spec: JobSpec, ctx: WorkerContext, attempt: int, started: float, error_class: str, msg: str) -> JobResult:
    finished = time.time()
    return JobResult.for_spec(
        spec,
        status=STATUS_TIMEOUT if error_class == ERR_TIMEOUT else STATUS_FAILED,
        started_at=started,
        finished_at=finished,
        error_class=error_class,
        error_message=msg,
        worker_id=ctx.worker_id,
        host=ctx.host,
        attempt=attempt,
    )


def result_labels(result: JobResult) -> dict[str, Any]:
    """What Flower shows of a ``record_result`` task (the full result is too long to read)."""
    return {"key": result.key, "status": result.status, "error_class": result.error_class}


SEND_RETRY_FIRST_S = 0.5
"""First wait before sending a result again that the broker refused, in seconds (then doubling)."""

SEND_RETRY_MAX_S = 30.0
"""Longest wait between two tries of sending one result, in seconds."""


def send_result(settings: Settings, result: JobResult, *, sleep: Callable[[float], None] = time.sleep) -> None:
    """Push ``result`` onto the writer's queue (``results``), signed with the fleet key, until the broker takes it.

    One ``LPUSH`` of the message Celery would send by name (:func:`accelerate_core.celery_message.build`), on
    this process's own connection: the writer takes ``results`` off the list itself, so no Celery publish is
    needed to reach it.

    A full broker (``maxmemory``, e.g. while the writer is down) or a lost connection refuses the send: it is
    tried again with backoff, never given up (the job's message stays unacknowledged meanwhile, so nothing is
    lost whatever happens to this process). Celery's soft time limit, should it fire meanwhile, is ignored:
    its hard limit ends this pool process and the job is redelivered.

    Raises:
        Exception: a failure that is not the broker being full or unreachable.
    """
    from celery.exceptions import SoftTimeLimitExceeded

    from accelerate_core import broker

    signed = signing.require_key(settings).envelope(TASK_RECORD_RESULT, "result", wire.encode(result))
    queue = settings.results_queue
    message = celery_message.build(TASK_RECORD_RESULT, signed, queue=queue, kwargsrepr=repr(result_labels(result)))
    delay = SEND_RETRY_FIRST_S
    for attempt in itertools.count(1):
        try:
            _redis(settings).lpush(queue, message)  # the writer records signed results only
            return
        except Exception as e:
            if not (broker.is_transient(e) or isinstance(e, SoftTimeLimitExceeded)):
                raise
            logger.warning("job %s: the broker refused its result (try %d: %s); again in %.1f s", result.key,
                           attempt, str(e).split("\n")[0][:200] or type(e).__name__, delay)  # fmt: skip
        try:
            sleep(delay)
        except SoftTimeLimitExceeded:
            logger.warning("job %s: Celery's soft limit fired while its result waited for the broker", result.key)
        delay = min(SEND_RETRY_MAX_S, delay * 2)


def worker_info(node: str, pin: pinning.Pinning) -> WorkerInfo:
    """This node's inventory, read without touching a device (NVML / sysfs probes, never CUDA)."""
    from accelerate_core.backends import require

    if pin.hardware == API_HARDWARE:  # served endpoints: this node is an HTTP client, its device is remote
        host, name = socket.gethostname(), "served endpoints (HTTP client)"
        return WorkerInfo(node, host, API_HARDWARE, device_name=name, versions=_versions(), started_at=time.time())

    device = require(pin.hardware, [pin.device_index] if pin.hardware in ("cuda", "rocm") else None)[0]
    return WorkerInfo(
        worker_id=node,
        host=socket.gethostname(),
        hardware=pin.hardware,
        device_index=pin.device_index if pin.hardware in ("cuda", "rocm") else None,
        device_name=device.name,
        memory_mb=device.total_memory_mb,
        driver=device.driver_version,
        versions=_versions(),
        started_at=time.time(),
    )


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for dist in ("torch", "transformers", "celery", "accelerate-fleet"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def register(app: Celery, settings: Settings) -> None:
    """Register the fleet's tasks on ``app``."""
    _register_run_job(app, settings)


def _register_run_job(app: Celery, settings: Settings) -> None:
    # The task's own limits are the backstop of the longest job kind; each message carries its job's.
    soft, hard = backstop_limits(settings.longest_hard_limit_s)
    key = signing.require_key(settings)  # a worker without the fleet key runs nothing

    @app.task(  # type: ignore[untyped-decorator]
        name=TASK_RUN_JOB,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        soft_time_limit=soft,
        time_limit=hard,
        typing=False,
    )
    def run_job(self: Task, *_args: Any, **kwargs: Any) -> dict[str, Any]:
        # No named ``spec`` parameter: a message of another schema (other keyword names) still reaches this
        # body and becomes a result row, instead of a TypeError that Celery would drop.
        node = str(self.request.hostname or pinning.current().node_name())
        task_id = str(self.request.id)
        result = task_result(task_id, kwargs, settings, node, key=key, redelivered=_redelivered(self.request))
        if result is not None:
            send_result(settings, result)
            return result_labels(result) | {"duration_s": result.duration_s, "attempt": result.attempt}
        return {"dropped": task_id}


def task_result(
    task_id: str, kwargs: Mapping[str, Any], settings: Settings, node: str, *, key: FleetKey, redelivered: bool
) -> JobResult | None:
    """The result a ``run_job`` delivery sends: :func:`run_message`'s, or a ``worker-error`` row if anything raised.

    Anything raised in a task body (Redis down while counting the delivery, a bug) would make Celery reject
    the message without requeue: the job would vanish. Its row says why instead.
    """
    host = socket.gethostname()
    try:
        ctx = WorkerContext(settings, node, host, DeliveryCounter(_redis(settings)))
        return run_message(task_id, kwargs, ctx, key=key, redelivered=redelivered)
    except Exception as e:
        logger.exception("job %s: the task body failed", task_id)
        message = f"the worker could not run the job: {e}"
        return keyed_result(task_id, STATUS_FAILED, ERR_WORKER, message, error_type=type(e).__name__, worker_id=node,
                            host=host)  # fmt: skip


def _redelivered(request: Any) -> bool:
    info = request.delivery_info or {}
    return bool(info.get("redelivered") or getattr(request, "redelivered", False))


def run_message(
    task_id: str, kwargs: Mapping[str, Any], ctx: WorkerContext, *, key: FleetKey, redelivered: bool
) -> JobResult | None:
    """The result of one ``run_job`` message: its job's, or one saying why it could not be run.

    The message's signature is checked first: an unsigned or forged job runs nothing and is recorded
    ``unsigned-job`` or ``bad-signature`` (keyed by its task id), so its run still completes.

    Args:
        task_id: the message's task id (the job key).
        kwargs: its keyword arguments: the encoded job under ``spec``, its signature under ``sig``.
        ctx: who runs it.
        key: the fleet key that must have signed it.
        redelivered: the broker marked it as a redelivery.

    Returns:
        None only for a message that names no job at all (its task id is not a job key whose names are
        valid): logged, nothing to record.
    """
    try:
        spec = wire.decode(JobSpec, key.open(TASK_RUN_JOB, "spec", kwargs))
    except ContractError as e:  # a SignatureError too: unsigned or forged, refused before anything is read
        logger.error("job message %s refused, nothing run: %s", task_id, e)
        return undecodable_result(task_id, e, worker_id=ctx.worker_id, host=ctx.host)
    try:
        return handle_delivery(spec, ctx, redelivered=redelivered)
    except Exception as e:
        # Not a job failure (those are results) but ours, e.g. the fork server would not start:
        # record it, so the phase still ends, and keep the traceback in the worker's log.
        logger.exception("job %s could not be run", spec.key)
        return _failure(spec, ctx, 1, time.time(), ERR_WORKER, f"the worker could not run the job: {e}")


def revoked_result(
    task_id: str, node: str, *, terminated: bool, expired: bool, signum: object = None
) -> JobResult | None:
    """The ``cancelled`` row of a job revoked through Celery (None for a task that is no job).

    A revoked job's message is acknowledged and dropped by the worker that meets it, and every live worker
    remembers the revoke, so re-sending it (same task id) would be dropped again: its row says so instead.
    """
    if expired:
        how = "its message expired before a worker took it"
    elif terminated:
        how = f"revoked and terminated while it ran (signal {signum})"
    else:
        how = "revoked before it ran"
    message = f"{how} (Flower's revoke or `celery control revoke`); run it again in a new run"
    return keyed_result(task_id, STATUS_CANCELLED, ERR_REVOKED, message, worker_id=node, host=socket.gethostname())


def record_revoked(settings: Settings, node: str) -> Callable[..., None]:
    """A ``task_revoked`` signal handler that sends the row of each revoked job to the writer."""

    def on_revoked(request: Any = None, terminated: bool = False, signum: object = None, expired: bool = False,
                   **_: Any) -> None:  # fmt: skip
        task_id = str(getattr(request, "id", "") or "")
        try:
            result = revoked_result(task_id, node, terminated=terminated, expired=expired, signum=signum)
            if result is not None:
                logger.warning("job %s was revoked: recording it %s", task_id, result.status)
                send_result(settings, result)
        except Exception:
            logger.exception("could not record revoked job %s", task_id)

    return on_revoked


def announce(app: Celery, settings: Settings, node: str) -> None:
    """Send this node's inventory to the writer, signed with the fleet key (called once the worker is ready).

    Raises:
        ConfigError: no fleet key (the writer records signed registrations only).
    """
    from workers import node as node_report

    key = signing.require_key(settings)
    info = worker_info(node, pinning.current())
    node_report.remember(info)
    app.send_task(
        TASK_REGISTER_WORKER,
        kwargs=key.envelope(TASK_REGISTER_WORKER, "info", wire.encode(info)),
        queue=settings.results_queue,
        kwargsrepr=repr({"worker_id": info.worker_id, "hardware": info.hardware, "device": info.device_name}),
    )


__all__ = [
    "DeliveryCounter",
    "WorkerContext",
    "announce",
    "handle_delivery",
    "record_revoked",
    "register",
    "revoked_result",
    "run_message",
    "task_result",
]

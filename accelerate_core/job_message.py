"""A job's message to its hardware queue, built once for everyone who sends one (scheduler and reconciler).

``accel.run_job`` by name to ``hw.<kind>`` (``hw.<kind>.<device model>`` for a job that targets one), the
encoded :class:`~accelerate_core.contracts.JobSpec` and its fleet signature as its keyword arguments (``spec``,
``sig``: :mod:`accelerate_core.signing`), the job key as the Celery task id (a job sent twice is still one row)
and Celery's time limits from the job's own (:mod:`accelerate_core.limits`). The sender is any Celery app (this
module never imports Celery: :class:`TaskSender` is what it needs of one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from accelerate_core import wire
from accelerate_core.constants import TASK_RUN_JOB
from accelerate_core.limits import backstop_limits

if TYPE_CHECKING:
    from accelerate_core.config import Settings
    from accelerate_core.contracts import JobSpec
    from accelerate_core.signing import FleetKey

__all__ = ["TaskSender", "job_labels", "job_queue", "send_job"]


class TaskSender(Protocol):
    """What :func:`send_job` needs of a Celery app."""

    def send_task(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Send a task by name (Celery's ``app.send_task``)."""


def job_queue(settings: Settings, spec: JobSpec) -> str:
    """The queue of ``spec``: its kind's (``hw.cuda``), or its device model's (``hw.cuda.h100-80gb-hbm3``)."""
    kind_queue = settings.queue_for(spec.hardware)
    return kind_queue if spec.device_model is None else f"{kind_queue}.{spec.device_model}"


def job_labels(spec: JobSpec) -> dict[str, Any]:
    """What Flower shows of a job (the full spec, template body included, is too long to read)."""
    return {"model_type": spec.model_type, "hardware": spec.target, "kind": spec.kind, "run_id": spec.run_id}


def send_job(
    app: TaskSender, settings: Settings, spec: JobSpec, *, key: FleetKey, producer: Any = None, queue: Any = None
) -> None:
    """Send ``spec``, signed with the fleet key, to its hardware queue (task id = job key).

    Args:
        app: the sending Celery app.
        settings: the queue names.
        spec: the job.
        key: the fleet key (workers run only jobs it signed: :mod:`accelerate_core.signing`).
        producer: a kombu producer to reuse across many sends (None: the app acquires one).
        queue: another queue (a name or a kombu ``Queue``: ``accel run --dry`` sends to each node's own).
    """
    soft, hard = backstop_limits(spec.limits.hard_s)
    app.send_task(
        TASK_RUN_JOB,
        kwargs=key.envelope(TASK_RUN_JOB, "spec", wire.encode(spec)),
        task_id=spec.key,
        queue=queue if queue is not None else job_queue(settings, spec),
        soft_time_limit=soft,
        time_limit=hard,
        kwargsrepr=repr(job_labels(spec)),
        producer=producer,
    )

"""Payload schemas shared by the scheduler, the workers, the job runner and the store.

Everything that crosses a process boundary (Celery message, fork-server pipe, DuckDB row) is one of
these dataclasses turned into plain JSON with ``to_dict()`` and read back with ``from_dict()``, which
validates and raises :class:`~accelerate_core.errors.ConfigError` on a malformed payload. JSON only:
pickle would let anyone who reaches the broker run code.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Self

from accelerate_core.constants import HARDWARE_KINDS, JOB_KINDS, TERMINAL_STATUSES
from accelerate_core.errors import ConfigError
from accelerate_core.names import check_name


def job_key(run_id: str, model_type: str, hardware: str, kind: str) -> str:
    """The deterministic key of a job: the same run/model/hardware/kind always gives the same key.

    Used as the Celery task id and the primary key of the ``jobs`` table, so a redelivered job
    never makes a second row.
    """
    digest = hashlib.sha1(f"{run_id}\0{model_type}\0{hardware}\0{kind}".encode()).hexdigest()[:12]
    return f"{run_id}:{model_type}:{hardware}:{kind}:{digest}"


class _Payload:
    """Mixin: JSON round trip with validation of unknown and missing keys."""

    def to_dict(self) -> dict[str, Any]:
        """Return plain JSON-serialisable data."""
        return asdict(self)  # type: ignore[call-overload, no-any-return]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Build from ``to_dict()`` output; raises ConfigError on a malformed payload."""
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__} payload must be an object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"{cls.__name__} payload has unknown keys {sorted(unknown)}")
        try:
            return cls(**data)
        except TypeError as e:
            raise ConfigError(f"{cls.__name__} payload is malformed: {e}") from e


@dataclass(frozen=True, slots=True)
class TemplateRef(_Payload):
    """A template as it travels to a worker: the body goes with it, so no worker needs the templates DB."""

    name: str
    sha: str
    body: str
    version: int = 1

    def __post_init__(self) -> None:
        check_name(self.name, "TemplateRef.name")


@dataclass(frozen=True, slots=True)
class JobSpec(_Payload):
    """One planned job: what a worker (or the local executor) needs to run it, and nothing else."""

    key: str
    run_id: str
    model_type: str
    hardware: str
    kind: str
    template: dict[str, Any] | None = None  # TemplateRef.to_dict(); None for kind "dry"
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    seq_lens: list[int] = field(default_factory=lambda: [16])
    soft_limit_s: float = 120.0
    hard_limit_s: float = 180.0
    mem_cap_mb: int = 6144
    expected_s: float = 0.0
    bench: dict[str, Any] = field(default_factory=dict)  # BenchConfig overrides (warmup, min_iters, ...)

    def __post_init__(self) -> None:
        check_name(self.run_id, "JobSpec.run_id")
        check_name(self.model_type, "JobSpec.model_type")
        if self.hardware not in HARDWARE_KINDS:
            raise ConfigError(f"unknown hardware {self.hardware!r}: use one of {', '.join(HARDWARE_KINDS)}")
        if self.kind not in JOB_KINDS:
            raise ConfigError(f"unknown job kind {self.kind!r}: use one of {', '.join(JOB_KINDS)}")

    def template_ref(self) -> TemplateRef | None:
        """The template carried by this job, if any."""
        return TemplateRef.from_dict(self.template) if self.template else None


@dataclass(frozen=True, slots=True)
class Measurement(_Payload):
    """One measured metric at one shape. ``samples`` are the raw values; stats summarise them."""

    metric: str  # "latency", "throughput", "load_time", "first_call", "peak_memory", "tokens_per_s"
    unit: str  # "s", "samples/s", "tokens/s", "MiB"
    batch_size: int = 1
    seq_len: int = 0
    samples: list[float] = field(default_factory=list)
    n: int = 0
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    mean: float | None = None
    stdev: float | None = None


@dataclass(frozen=True, slots=True)
class JobResult(_Payload):
    """The outcome of one job, as returned by the runner and recorded by the writer."""

    key: str
    run_id: str
    model_type: str
    hardware: str
    kind: str
    status: str  # one of TERMINAL_STATUSES
    error_class: str | None = None  # one of constants.ERROR_CLASSES when status != "done"
    error_type: str | None = None  # the exception class name, e.g. "RuntimeError"
    error_message: str | None = None
    started_at: float | None = None  # unix seconds
    finished_at: float | None = None
    duration_s: float | None = None
    worker_id: str | None = None
    host: str | None = None
    device_name: str | None = None
    template_name: str | None = None
    template_sha: str | None = None
    generated_source: str | None = None
    tests_passed: int = 0
    tests_failed: int = 0
    measurements: list[dict[str, Any]] = field(default_factory=list)  # Measurement.to_dict() each
    environment: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1

    @classmethod
    def for_spec(cls, spec: JobSpec, *, status: str, started_at: float, finished_at: float, **fields_: Any) -> Self:
        """A result of ``spec``: its identity and template copied, the duration taken from the two times."""
        template = spec.template or {}
        fields_.setdefault("template_name", template.get("name"))
        fields_.setdefault("template_sha", template.get("sha"))
        return cls(
            key=spec.key,
            run_id=spec.run_id,
            model_type=spec.model_type,
            hardware=spec.hardware,
            kind=spec.kind,
            status=status,
            started_at=started_at,
            finished_at=finished_at,
            duration_s=round(finished_at - started_at, 4),
            **fields_,
        )

    def __post_init__(self) -> None:
        check_name(self.run_id, "JobResult.run_id")
        check_name(self.model_type, "JobResult.model_type")
        if self.status not in TERMINAL_STATUSES:
            raise ConfigError(f"JobResult status {self.status!r} is not terminal: {sorted(TERMINAL_STATUSES)}")


@dataclass(frozen=True, slots=True)
class RunPlan(_Payload):
    """A run and its planned jobs, recorded (status ``queued``) before any job is sent."""

    run_id: str
    phase: str
    created_at: float
    params: dict[str, Any]
    jobs: list[dict[str, Any]]  # JobSpec.to_dict() each
    code_version: str = ""

    def __post_init__(self) -> None:
        check_name(self.run_id, "RunPlan.run_id")
        check_name(self.phase, "RunPlan.phase")

    def job_specs(self) -> list[JobSpec]:
        """The planned jobs as :class:`JobSpec`."""
        return [JobSpec.from_dict(j) for j in self.jobs]


@dataclass(frozen=True, slots=True)
class WorkerInfo(_Payload):
    """A worker's identity and inventory, registered with the writer when it starts."""

    worker_id: str
    host: str
    hardware: str
    device_index: int | None = None
    device_name: str | None = None
    memory_mb: int | None = None
    driver: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    started_at: float = 0.0

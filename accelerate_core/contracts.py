"""The contracts shared by the scheduler, the workers, the job runner and the store: typed, frozen, nested.

Inside a process everything that crosses a boundary is one of these objects, never a dict. They become
JSON only at a process edge (a broker message, the fork-server pipe, a DuckDB JSON column, a status
snapshot), and only through :mod:`accelerate_core.wire`, which holds the schema version and the one
decoding rule. JSON only: pickle would let anyone who reaches the broker run code.

Changing a contract (see ``wire``): a new field *with a default* is a minor change (bump
``wire.SCHEMA_MINOR``; an older reader ignores it and logs it once); renaming, removing or retyping a field,
or adding one without a default, is a major change (bump ``wire.SCHEMA_MAJOR``; an older reader records
``version-skew`` rows instead of guessing).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Self

from accelerate_core.config import BenchConfig
from accelerate_core.constants import (
    API_HARDWARE,
    ATTN_IMPLEMENTATIONS,
    COMPILE_BACKENDS,
    DEVICE_MODEL_PATTERN,
    DTYPES,
    ERR_UNSUPPORTED,
    HARDWARE_KINDS,
    JOB_KIND_TEST,
    JOB_KINDS,
    MODEL_SIZES,
    SIZE_TINY,
    SOURCE_KINDS,
    SOURCE_TYPE,
    STATUS_SKIPPED,
    TERMINAL_STATUSES,
)
from accelerate_core.errors import ContractError
from accelerate_core.names import check_name

__all__ = [
    "ActiveJob",
    "BenchConfig",
    "BenchReport",
    "BenchRequest",
    "EndpointJob",
    "FailureRow",
    "JobLimits",
    "JobResult",
    "JobSpec",
    "Makespan",
    "Measurement",
    "ModelSource",
    "NodeReport",
    "ReconcileReport",
    "RunParams",
    "RunPlan",
    "RunRecord",
    "SkipReason",
    "StatusSnapshot",
    "TemplateRef",
    "WorkerInfo",
    "WriterHeartbeat",
    "check_attn",
    "check_compile",
    "check_dtype",
    "check_size",
    "job_key",
    "parse_job_key",
]


def check_size(size: str) -> str:
    """``size`` if it is a model size (``tiny``, ``full``).

    Raises:
        ContractError: any other value (one line naming the choices).
    """
    if size not in MODEL_SIZES:
        raise ContractError(f"model size {size!r} is unknown: use one of {', '.join(MODEL_SIZES)}")
    return size


def check_dtype(dtype: str) -> str:
    """``dtype`` if it is a canonical dtype name a job can run in (``float32``, ``bfloat16``, ``float16``).

    Raises:
        ContractError: any other value, aliases included (the CLI normalises them first).
    """
    if dtype not in DTYPES:
        raise ContractError(f"dtype {dtype!r} is unknown: use one of {', '.join(DTYPES)}")
    return dtype


def check_attn(attn: str | None) -> str | None:
    """``attn`` if it is None (the model's default) or one of :data:`~accelerate_core.constants.ATTN_IMPLEMENTATIONS`.

    Raises:
        ContractError: any other value (a hub kernel name included: it would be downloaded).
    """
    if attn is not None and attn not in ATTN_IMPLEMENTATIONS:
        raise ContractError(f"attention {attn!r} is unknown: use one of {', '.join(ATTN_IMPLEMENTATIONS)}")
    return attn


def check_compile(backend: str | None) -> str | None:
    """``backend`` if it is None (not compiled) or one of :data:`~accelerate_core.constants.COMPILE_BACKENDS`.

    Raises:
        ContractError: any other value.
    """
    if backend is not None and backend not in COMPILE_BACKENDS:
        raise ContractError(f"compile backend {backend!r} is unknown: use off or one of {', '.join(COMPILE_BACKENDS)}")
    return backend


def job_key(run_id: str, model_type: str, hardware: str, kind: str) -> str:
    """The deterministic key of a job: the same run/model/hardware/kind always gives the same key.

    Used as the Celery task id and the primary key of the ``jobs`` table, so a redelivered job
    never makes a second row.
    """
    digest = hashlib.sha1(f"{run_id}\0{model_type}\0{hardware}\0{kind}".encode()).hexdigest()[:12]
    return f"{run_id}:{model_type}:{hardware}:{kind}:{digest}"


def parse_job_key(key: str) -> tuple[str, str, str, str] | None:
    """``(run_id, model_type, hardware, kind)`` of a job key, checked against its digest; None if it is not one.

    Lets a reader that cannot decode a job's message still name the job (a ``version-skew`` row).
    """
    parts = key.split(":")
    n = len(parts)
    for i in range(1, n - 3):
        for j in range(i + 1, n - 2):
            run_id, model, hardware = ":".join(parts[:i]), ":".join(parts[i:j]), ":".join(parts[j : n - 2])
            if job_key(run_id, model, hardware, parts[n - 2]) == key:
                return run_id, model, hardware, parts[n - 2]
    return None


@dataclass(frozen=True, slots=True)
class TemplateRef:
    """A template as it travels to a worker: the body goes with it, so no worker needs the templates DB."""

    name: str
    sha: str
    body: str
    version: int = 1

    def __post_init__(self) -> None:
        check_name(self.name, "TemplateRef.name")


@dataclass(frozen=True, slots=True)
class JobLimits:
    """What the runner allows one job: wall-clock limits in seconds (soft < hard) and a memory cap in MiB."""

    soft_s: float = 120.0
    hard_s: float = 180.0
    mem_cap_mb: int = 6144

    def __post_init__(self) -> None:
        if not 0 < self.soft_s < self.hard_s:
            raise ContractError(f"job limits soft_s={self.soft_s} hard_s={self.hard_s} invalid: need 0 < soft < hard")
        if self.mem_cap_mb < 1:
            raise ContractError(f"job limits mem_cap_mb={self.mem_cap_mb} invalid: give a positive number of MiB")


@dataclass(frozen=True, slots=True)
class SkipReason:
    """Why a planned job is not run: its error class (``unsupported``, ``missing-dependency``, ...) and a line."""

    reason_class: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where a job's model comes from (``accelerate_core.sources`` resolves a name into one).

    Attributes:
        kind: ``type``, ``dir`` or ``hub``.
        ref: the name as given: the model type, the directory, the hub id.
        model_type: the architecture (``config.json``'s ``model_type``); empty for a hub id not in the cache.
        label: the valid name its rows carry (the type, the directory's name, ``org--name``).
        revision: the snapshot's commit sha of a hub id, a digest of a directory's config and weights.
        path: the local directory the weights are read from (a hub id's snapshot folder).
    """

    kind: str
    ref: str
    model_type: str
    label: str
    revision: str | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ContractError(f"model source kind {self.kind!r} is unknown: use one of {', '.join(SOURCE_KINDS)}")
        check_name(self.label, "ModelSource.label")
        if self.model_type:
            check_name(self.model_type, "ModelSource.model_type")

    @property
    def available(self) -> bool:
        """True when the model can be built here: a type, a directory, or a hub id found in the cache."""
        return self.kind == SOURCE_TYPE or self.path is not None


@dataclass(frozen=True, slots=True)
class EndpointJob:
    """A served model to check and benchmark (``accel run --endpoint NAME=URL[@MODEL]``): its rows are ``api:NAME``.

    Never the token: the executor reads ``ACCEL_ENDPOINT_TOKEN_<NAME>`` from its own environment.

    Attributes:
        name: the endpoint's name (a valid name: it becomes part of the hardware column and job key).
        url: the server's base URL (validated by ``accelerate_core.endpoint.EndpointTarget``).
        model: the request's ``model`` field; empty: the first model the server lists (``/v1/models``).
        concurrency: the closed-loop concurrency levels of the benchmark.
        requests: requests per level (after the warm-up).
        prompt_tokens: prompt length of each request; ``max_tokens``: output tokens asked for.
        timeout_s: the deadline of each request.
    """

    name: str
    url: str
    model: str = ""
    concurrency: tuple[int, ...] = (1, 4)
    requests: int = 16
    prompt_tokens: int = 32
    max_tokens: int = 16
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        check_name(self.name, "endpoint name")
        if not self.url:
            raise ContractError(f"endpoint {self.name} has no URL: give NAME=http://HOST:PORT[@MODEL]")
        if not self.concurrency or min(self.concurrency) < 1 or self.requests < 1:
            raise ContractError(f"endpoint {self.name}: concurrency levels and requests must be >= 1")
        if self.prompt_tokens < 1 or self.max_tokens < 1 or not self.timeout_s > 0:
            raise ContractError(f"endpoint {self.name}: prompt/max tokens must be >= 1 and the timeout > 0")

    @property
    def hardware(self) -> str:
        """The hardware column of this endpoint's rows: ``api:NAME``."""
        return f"{API_HARDWARE}:{self.name}"


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One planned job: what a worker (or the local executor) needs to run it, and nothing else.

    Attributes:
        template: the test template it renders (None for a ``dry`` job and for a job not run).
        bench: the benchmark shapes and loop the generated test uses.
        limits: the runner's time limits and memory cap.
        expected_s: the planner's expected duration (0 for a job not run).
        skip: why the job is not run; None for a job to run.
        sleep_s: a ``dry`` job sleeps this long, standing in for work (fleet benchmarks and tests).
        source: where the model comes from (None in a job planned before sources: the model type
            ``model_type``). ``model_type`` is then the row's name: the source's label plus each axis that is
            not its default (``bert.bfloat16``, ``acme--tiny-gpt2``); :attr:`architecture` is what is built.
        size: ``tiny`` or ``full`` (a model type's size; a checkpoint is what it is).
        dtype: the parameters' dtype.
        endpoint: a served model's job (hardware ``api:NAME``): its functional check, then its benchmark.
        attn: the attention implementation (``sdpa``, ``eager``, ...); None keeps the model's default.
        device_model: the one device model to run on (a slug, ``h100-80gb-hbm3``): the job goes to that model's
            queue (``hw.cuda.h100-80gb-hbm3``) instead of its kind's; None takes any device of the kind.
        compile_backend: the ``torch.compile`` backend the benchmark times (None: the eager model).
    """

    key: str
    run_id: str
    model_type: str
    hardware: str
    kind: str
    template: TemplateRef | None = None
    bench: BenchConfig = field(default_factory=BenchConfig)
    limits: JobLimits = field(default_factory=JobLimits)
    expected_s: float = 0.0
    skip: SkipReason | None = None
    sleep_s: float = 0.0
    source: ModelSource | None = None
    size: str = SIZE_TINY
    dtype: str = "float32"
    endpoint: EndpointJob | None = None
    attn: str | None = None
    device_model: str | None = None
    compile_backend: str | None = None

    def __post_init__(self) -> None:
        check_name(self.run_id, "JobSpec.run_id")
        check_name(self.model_type, "JobSpec.model_type")
        check_size(self.size)
        check_dtype(self.dtype)
        check_attn(self.attn)
        check_compile(self.compile_backend)
        if self.endpoint is not None:
            if self.hardware != self.endpoint.hardware:
                raise ContractError(f"an endpoint job's hardware is {self.endpoint.hardware!r}, not {self.hardware!r}")
        elif self.hardware not in HARDWARE_KINDS:
            raise ContractError(f"unknown hardware {self.hardware!r}: use one of {', '.join(HARDWARE_KINDS)}")
        if self.kind not in JOB_KINDS:
            raise ContractError(f"unknown job kind {self.kind!r}: use one of {', '.join(JOB_KINDS)}")
        if self.device_model is not None and (
            self.endpoint is not None or not DEVICE_MODEL_PATTERN.match(self.device_model)
        ):
            raise ContractError(f"device model {self.device_model!r} is not a device model slug of a hardware kind")

    @property
    def target(self) -> str:
        """Where the job runs: its hardware kind, or ``kind.model`` when it targets one device model (its key's)."""
        return self.hardware if self.device_model is None else f"{self.hardware}.{self.device_model}"

    @property
    def runnable(self) -> bool:
        """True when the job is to be run (it has no skip reason)."""
        return self.skip is None

    @property
    def architecture(self) -> str:
        """The model type the job builds (its source's, else ``model_type``)."""
        return self.source.model_type if self.source is not None and self.source.model_type else self.model_type


@dataclass(frozen=True, slots=True)
class Measurement:
    """One measured metric at one shape. ``samples`` are the raw values; the stats summarise them."""

    metric: str  # "latency", "throughput", "load_time", "first_call", "peak_memory", "tokens_per_s", "ttft", "itl"
    unit: str  # "s", "samples/s", "tokens/s", "MiB"
    batch_size: int = 1
    seq_len: int = 0
    samples: tuple[float, ...] = ()
    n: int = 0
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    mean: float | None = None
    stdev: float | None = None


@dataclass(frozen=True, slots=True)
class JobResult:
    """The outcome of one job, as returned by the runner and recorded by the writer.

    ``environment`` is free-form JSON (versions, device, timings of the job's steps).
    """

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
    measurements: tuple[Measurement, ...] = ()
    environment: Mapping[str, Any] = field(default_factory=dict)
    attempt: int = 1

    def __post_init__(self) -> None:
        check_name(self.run_id, "JobResult.run_id")
        check_name(self.model_type, "JobResult.model_type")
        if self.status not in TERMINAL_STATUSES:
            raise ContractError(f"JobResult status {self.status!r} is not terminal: {sorted(TERMINAL_STATUSES)}")

    @classmethod
    def for_spec(cls, spec: JobSpec, *, status: str, started_at: float, finished_at: float, **fields_: Any) -> Self:
        """A result of ``spec``: its identity and template copied, the duration taken from the two times."""
        if spec.template is not None:
            fields_.setdefault("template_name", spec.template.name)
            fields_.setdefault("template_sha", spec.template.sha)
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

    @classmethod
    def skipped(cls, spec: JobSpec, *, now: float) -> Self:
        """The ``skipped`` result of a planned job that is not run, with its classified reason."""
        reason = spec.skip or SkipReason(ERR_UNSUPPORTED)
        return cls.for_spec(
            spec,
            status=STATUS_SKIPPED,
            started_at=now,
            finished_at=now,
            error_class=reason.reason_class,
            error_message=reason.reason,
        )


@dataclass(frozen=True, slots=True)
class Makespan:
    """One invocation of the local executor (a run and each resume): what the report's efficiency uses."""

    slots: int
    wall_s: float
    busy_s: float
    startup_s: float = 0.0
    ran: int = 0
    status: str = ""

    @property
    def efficiency(self) -> float:
        """Job time / (slots x wall time), 0 when nothing ran."""
        return round(self.busy_s / (self.slots * self.wall_s), 4) if self.wall_s > 0 and self.slots > 0 else 0.0


@dataclass(frozen=True, slots=True)
class RunParams:
    """How a run was planned and what its executors recorded about it (the ``runs.params`` column).

    Attributes:
        models: the ``--models`` spec as given (``all``, ``a,b``, ``@file``).
        modality: the ``--modality`` filter, if any.
        hardware: the hardware kinds planned for.
        kind: the job kind (``test`` or ``dry``).
        bench: the benchmark settings every job carries.
        n_jobs: planned jobs, skipped ones included.
        n_skipped: planned jobs that are not run.
        expected_work_s: the sum of the jobs' expected durations.
        history_used: past durations from the store ordered the jobs (else size estimates did).
        dtypes: the dtypes every model runs in (``--dtype``); ``size``: the model types' size (``--size``);
            ``attns``: the attention implementations asked for (``--attn``; empty: each model's default);
            ``compiles``: the ``torch.compile`` backends asked for (``--compile``; ``off`` is the eager model).
        slots: jobs at once of the executor (the status's time left divides by it); None when unknown.
        makespan: one entry per local executor invocation.
        synthetic: made-up numbers (``accelerate_core.store.synthetic``); the report says so.
        modalities: model type -> modality, for models the catalog does not know (synthetic runs, served models).
        endpoints: the hardware column of each served endpoint planned for (``api:NAME``).
    """

    models: str = "all"
    modality: str | None = None
    hardware: tuple[str, ...] = ("cpu",)
    kind: str = JOB_KIND_TEST
    bench: BenchConfig = field(default_factory=BenchConfig)
    n_jobs: int = 0
    n_skipped: int = 0
    expected_work_s: float = 0.0
    history_used: bool = False
    dtypes: tuple[str, ...] = ("float32",)
    size: str = SIZE_TINY
    attns: tuple[str, ...] = ()
    compiles: tuple[str, ...] = ()
    slots: int | None = None
    makespan: tuple[Makespan, ...] = ()
    synthetic: bool = False
    modalities: Mapping[str, str] = field(default_factory=dict)
    endpoints: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RunPlan:
    """A run and its planned jobs, recorded (status ``queued``) before any job is sent."""

    run_id: str
    phase: str
    created_at: float
    params: RunParams
    jobs: tuple[JobSpec, ...]
    code_version: str = ""

    def __post_init__(self) -> None:
        check_name(self.run_id, "RunPlan.run_id")
        check_name(self.phase, "RunPlan.phase")

    def runnable(self) -> tuple[JobSpec, ...]:
        """The jobs to run, in plan order."""
        return tuple(j for j in self.jobs if j.skip is None)

    def skipped_results(self, *, now: float) -> tuple[JobResult, ...]:
        """The ``skipped`` results of the jobs that are not run."""
        return tuple(JobResult.skipped(j, now=now) for j in self.jobs if j.skip is not None)

    def compact(self) -> RunPlan:
        """This plan as its run message carries it: each distinct template's body once (a run's jobs share a
        few templates, and a body is ~6 KB), on the last job that uses it; the other jobs carry the template's
        name and sha with an empty body. The last, so that a writer of any version, which stores the last job's
        template of each sha, stores the body; :meth:`templates` reads them back."""
        last = {j.template.sha: i for i, j in enumerate(self.jobs) if j.template is not None}
        keep = set(last.values())
        jobs = tuple(
            j if j.template is None or i in keep else replace(j, template=replace(j.template, body=""))
            for i, j in enumerate(self.jobs)
        )
        return replace(self, jobs=jobs)

    def templates(self) -> tuple[TemplateRef, ...]:
        """Each distinct template of the jobs, with its body (of a :meth:`compact` plan too)."""
        found: dict[str, TemplateRef] = {}
        for t in (j.template for j in self.jobs if j.template is not None):
            if t.body or t.sha not in found:
                found[t.sha] = t
        return tuple(found.values())


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A recorded run, as the store reads it back."""

    run_id: str
    phase: str
    created_at: float
    params: RunParams
    code_version: str
    status: str
    updated_at: float


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker's identity and inventory, registered with the writer when it starts."""

    worker_id: str
    host: str
    hardware: str
    device_index: int | None = None
    device_name: str | None = None
    memory_mb: int | None = None
    driver: str | None = None
    versions: Mapping[str, str] = field(default_factory=dict)
    started_at: float = 0.0


@dataclass(frozen=True, slots=True)
class ActiveJob:
    """A job a worker node is running now: its key (the task id) and when it started (unix seconds)."""

    key: str
    started_at: float | None = None


@dataclass(frozen=True, slots=True)
class NodeReport:
    """A live worker node's answer to ``accel workers`` (the inspect command ``constants.NODE_INSPECT_COMMAND``).

    Attributes:
        node: its Celery node name; ``pid``: its main process; ``queues``: the queues it consumes.
        active: the jobs it runs now; ``processed``: the tasks it took since it started.
        uptime_s: seconds since it started; ``at``: its clock when it answered (unix seconds).
        info: its inventory (hardware, device, versions), None before it has probed it.
    """

    node: str
    pid: int = 0
    queues: tuple[str, ...] = ()
    active: tuple[ActiveJob, ...] = ()
    processed: int = 0
    uptime_s: float = 0.0
    at: float = 0.0
    info: WorkerInfo | None = None


@dataclass(frozen=True, slots=True)
class FailureRow:
    """One failed job as a status lists it (latest first)."""

    model_type: str
    hardware: str
    status: str
    error_class: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    finished_at: float | None = None


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    """What one reconciliation of a run found and did (the writer's reply to ``accel run --resume`` on a fleet).

    Attributes:
        known: the run is in the results store (False: nothing else is meaningful).
        unfinished: planned jobs without a terminal row; ``in_flight``: of those, with a live message (queued,
            delivered and unacknowledged) or a result on its way to the writer.
        resent: jobs sent again (task id = job key); ``lost``: jobs recorded ``lost`` (re-sent too often);
            ``skipped``: ``skipped`` rows the scheduler never got to send.
        missing: jobs without a message seen for the first time (re-sent if still missing at the next pass).
    """

    run_id: str
    known: bool = True
    unfinished: int = 0
    in_flight: int = 0
    resent: int = 0
    lost: int = 0
    skipped: int = 0
    missing: int = 0
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    """A run's progress: what ``accel status`` shows, the local executor's and the writer's snapshots hold.

    Attributes:
        total: planned jobs; ``terminal``: those with a terminal row; ``phase_done``: all of them.
        by_status: job count per status; ``by_hardware``: per target (a hardware kind, or ``kind.model`` for
            jobs of one device model: ``JobSpec.target``), counts per status and ``total``.
        failures: the latest failures (at most ``store.reads.FAILURES_SHOWN``); ``failures_total`` counts all.
        work_s_left: the expected work left in seconds; ``expected_s_left``: that divided by the run's slots.
        elapsed_s: since the first job started; ``updated_at``: when this snapshot was taken (unix seconds).
        report_dir: where the writer wrote the report of a completed run; ``report_error`` when it could not.
        round_trip_s: ``dry`` jobs done, per worker node: the longest time from the run's planning (just before
            it was sent) to the node finishing one (seconds): each node's round trip in ``accel run --dry``.
    """

    run_id: str
    phase: str
    status: str
    total: int = 0
    terminal: int = 0
    phase_done: bool = False
    by_status: Mapping[str, int] = field(default_factory=dict)
    by_hardware: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    failures: tuple[FailureRow, ...] = ()
    failures_total: int = 0
    work_s_left: float = 0.0
    expected_s_left: float = 0.0
    elapsed_s: float = 0.0
    updated_at: float = 0.0
    report_dir: str | None = None
    report_error: str | None = None
    round_trip_s: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WriterHeartbeat:
    """The results writer's liveness and lag, as it publishes them to Redis (see ``accelerate_core.liveness``).

    Attributes:
        host, pid: where the writer runs; ``started_at``: when it started (unix seconds).
        at: when this heartbeat was published (unix seconds).
        state: ``writing`` (it holds the lock and the store), ``waiting-lock`` (another writer's lock is
            live), ``waiting-store`` (the results DB is held by another process) or ``store-failing``
            (commits fail: a full disk, say; ``last_error`` says why, the batch is kept and retried).
        backlog: messages waiting for it (the ``results`` queue plus the batch it claimed).
        oldest_s: how long the oldest waiting result has been finished, in seconds (None: none waiting).
        dead_letters: malformed messages it set aside (``accel dead-letters``).
        duplicates: late results it ignored because their job already had a terminal row.
        api_url: where its results service answers, when it hosts one.
        last_error: the last commit failure, while ``state`` is ``store-failing``.
    """

    host: str
    pid: int
    started_at: float
    at: float
    state: str = "writing"
    backlog: int = 0
    oldest_s: float | None = None
    dead_letters: int = 0
    duplicates: int = 0
    api_url: str | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the writer could not decode or apply, set aside for inspection (``accel dead-letters``).

    Attributes:
        at: when it was set aside (unix seconds).
        reason: why, in one line.
        message: the message as text (undecodable bytes replaced), cut at ``DEAD_LETTER_MAX_CHARS``.
        task: its task name, when it could be read.
        run_id: the run it names, when it could be read.
    """

    at: float
    reason: str
    message: str
    task: str | None = None
    run_id: str | None = None


@dataclass(frozen=True, slots=True)
class BenchRequest:
    """``accel bench``'s job for the fork server: one model type on one hardware kind, measured by ``bench``.

    ``size`` is ``tiny`` (the shrunk config) or ``full`` (the default config, random weights, no download);
    ``dtype`` the parameters' dtype (``float32``, ``bfloat16``, ``float16``); ``source`` a checkpoint directory
    or cached hub id to load instead (``model_type`` is then its architecture).
    """

    model_type: str
    hardware: str
    bench: BenchConfig = field(default_factory=BenchConfig)
    size: str = SIZE_TINY
    dtype: str = "float32"
    source: ModelSource | None = None
    attn: str | None = None
    compile_backend: str | None = None

    def __post_init__(self) -> None:
        check_size(self.size)
        check_dtype(self.dtype)
        check_attn(self.attn)
        check_compile(self.compile_backend)


@dataclass(frozen=True, slots=True)
class BenchReport:
    """What ``accel bench``'s child measured, or the one-line ``usage_error`` (a bad type, missing hardware)."""

    model_type: str
    hardware: str
    usage_error: str | None = None
    model_class: str | None = None
    param_count: int | None = None
    size: str = SIZE_TINY
    dtype: str = "float32"
    source: str | None = None
    attn: str | None = None
    compile_backend: str | None = None
    generative: bool = False
    image_size: int | None = None
    measurements: tuple[Measurement, ...] = ()
    environment: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

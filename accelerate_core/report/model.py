"""What a run's report says, as plain dataclasses; Markdown, HTML and JSON all render this one model."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from accelerate_core.contracts import RunRecord

UNKNOWN_MODALITY = "unknown modality"
"""The modality shown for a model the run params and the catalog say nothing about."""


@dataclass(slots=True)
class WorkerRow:
    """A worker that ran jobs of the run: its hardware and library versions."""

    worker_id: str
    host: str | None
    hardware: str | None
    device_name: str | None = None
    device_index: int | None = None
    memory_mb: int | None = None
    driver: str | None = None
    versions: dict[str, Any] = field(default_factory=dict)
    jobs: int = 0


@dataclass(slots=True)
class ImportTiming:
    """One self-benchmark row (module load time and the like), in seconds."""

    section: str
    name: str
    n: int
    median_s: float | None
    stdev_s: float | None
    min_s: float | None
    max_s: float | None
    host: str | None = None


@dataclass(slots=True)
class StageTiming:
    """One stage of the run's jobs (render, build, loop, the runner's fixed cost...): seconds over the jobs."""

    stage: str
    jobs: int
    total_s: float
    mean_s: float
    p50_s: float
    p90_s: float
    max_s: float


@dataclass(slots=True)
class LoopEnding:
    """The run's timing loops of one metric (``latency``, ``generate``) that ended one way (``converged``,
    ``max-duration``...): how many, and the median samples, seconds and p50 precision of those loops."""

    metric: str
    stopped_by: str
    loops: int
    p50_n: float
    p50_loop_s: float
    p50_ci_rel: float | None
    p90_ci_rel: float | None


@dataclass(slots=True)
class ShapeStats:
    """Latency and throughput of one model on one hardware kind at one shape; a generative model's (or endpoint's)
    p50 time to first token (``ttft_s``, the prefill) and per-token decode latency (``itl_s``); a compiled job's
    compile time at that shape (``compile_s``, apart from the latency loop)."""

    batch_size: int
    seq_len: int
    p50_s: float | None
    p90_s: float | None
    n: int = 0
    throughput: float | None = None
    throughput_unit: str | None = None
    ttft_s: float | None = None
    itl_s: float | None = None
    compile_s: float | None = None


@dataclass(slots=True)
class ModelRow:
    """One model on one hardware kind: its status and headline figures (at its smallest shape)."""

    model_type: str
    modality: str
    hardware: str
    status: str
    error_class: str | None = None
    attempts: int = 0
    duration_s: float | None = None
    p50_s: float | None = None
    p90_s: float | None = None
    throughput: float | None = None
    throughput_unit: str | None = None
    peak_memory_mib: float | None = None
    load_time_s: float | None = None
    batch_size: int | None = None
    seq_len: int | None = None
    template_sha: str | None = None
    shapes: list[ShapeStats] = field(default_factory=list)
    source: str | None = None
    dtype: str = "float32"
    attn: str | None = None
    ttft_s: float | None = None
    itl_s: float | None = None
    compile_backend: str | None = None
    compile_s: float | None = None


@dataclass(slots=True)
class SpeedUp:
    """Median speed-up of an accelerator over CPU (CPU p50 / accelerator p50) for models run on both."""

    accelerator: str
    median: float
    models: int


@dataclass(slots=True)
class GroupSummary:
    """Counts and pass rate of a group of jobs (one modality, one hardware kind, or all).

    ``pass_rate`` is done / (total - skipped - pending): skipped jobs were never meant to run, and
    pending ones have not finished yet.
    """

    name: str
    total: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    pending: int = 0
    pass_rate: float | None = None
    speedups: list[SpeedUp] = field(default_factory=list)


@dataclass(slots=True)
class FailureMessage:
    """One distinct failure message (its first line) and the jobs that failed with it."""

    message: str
    count: int
    jobs: list[str]
    error_type: str | None = None


@dataclass(slots=True)
class FailureGroup:
    """The failed jobs of one error class, grouped by message."""

    error_class: str
    count: int
    messages: list[FailureMessage]


@dataclass(slots=True)
class Efficiency:
    """Makespan efficiency: sum of job durations / (slots x wall time of the run)."""

    slots: int | None
    busy_s: float
    wall_s: float
    efficiency: float | None
    note: str = ""


@dataclass(slots=True)
class Change:
    """The change of one model's p50 latency at one shape against the baseline."""

    model_type: str
    hardware: str
    batch_size: int
    seq_len: int
    baseline_p50_s: float
    current_p50_s: float
    change: float  # current / baseline - 1 (+0.3 = 30% slower)
    p_value: float | None
    verdict: str  # "regression", "improvement", "noise" (beyond the threshold, not significant), "untested"


@dataclass(slots=True)
class Comparison:
    """The run against its baseline run."""

    baseline_run_id: str
    threshold: float
    alpha: float
    compared: int = 0
    regressions: list[Change] = field(default_factory=list)
    improvements: list[Change] = field(default_factory=list)
    within_noise: list[Change] = field(default_factory=list)
    new: list[dict[str, str]] = field(default_factory=list)
    missing: list[dict[str, str]] = field(default_factory=list)
    newly_failing: list[dict[str, Any]] = field(default_factory=list)
    newly_passing: list[dict[str, str]] = field(default_factory=list)
    not_comparable: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class Report:
    """Everything the report of one run says."""

    run: RunRecord
    generated_at: float
    synthetic: bool
    totals: GroupSummary
    rows: list[ModelRow]
    by_modality: list[GroupSummary]
    by_hardware: list[GroupSummary]
    failures: list[FailureGroup]
    efficiency: Efficiency
    skipped: list[FailureGroup] = field(default_factory=list)
    workers: list[WorkerRow] = field(default_factory=list)
    import_timings: list[ImportTiming] = field(default_factory=list)
    import_timings_note: str = ""
    stages: list[StageTiming] = field(default_factory=list)
    loop_endings: list[LoopEnding] = field(default_factory=list)
    comparison: Comparison | None = None
    baseline_note: str = ""

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.run.run_id

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data (non-finite floats become None: JSON has no inf or NaN)."""
        out: dict[str, Any] = plain(self)
        return out


def plain(value: Any) -> Any:
    """Dataclasses, lists and dicts as plain JSON data; much cheaper than ``asdict`` (no deep copies)."""
    names = getattr(value, "__dataclass_fields__", None)
    if names is not None:
        return {name: plain(getattr(value, name)) for name in names}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

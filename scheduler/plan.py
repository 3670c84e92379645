"""Planning a run: catalog architectures x hardware kinds -> an ordered :class:`~accelerate_core.contracts.RunPlan`.

Everything here is a pure function of its arguments (the catalog index, past durations, a template
lookup, a clock): no torch, no DuckDB, no device, no file written. :mod:`scheduler.planning_inputs` gathers
those inputs and calls :func:`plan_run`; the local and the remote executor both run the plan it returns.

Rules:

* every selected catalog architecture gets one job per compatible hardware kind, keyed by
  :func:`~accelerate_core.contracts.job_key`, so the same run/model/hardware/kind is always the same job;
* an architecture the catalog marks not runnable (or that no template covers) is still planned: it is
  recorded ``skipped`` with its classified reason (``JobSpec.skip``), so every architecture appears in the
  report with a status;
* a model whose input has no sequence axis (``no_sequence``: images, audio, a time-series window) is measured at
  the first ``--seq`` only; its other lengths are ``skipped`` rows saying why and naming the measured row, not
  duplicate measurements of one input;
* jobs are ordered longest-expected-first: the expected time is the model's past duration on that
  hardware when the store has one, else an estimate from its size and modality (:func:`estimate_seconds`),
  so the slowest jobs never end up last and the makespan stays close to ``total work / slots``.
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from accelerate_core.bench.shapes import SEQ_NOT_APPLICABLE
from accelerate_core.config import BenchConfig
from accelerate_core.constants import (
    COMPILE_OFF,
    ERR_UNSUPPORTED,
    HARDWARE_KINDS,
    JOB_KIND_DRY,
    JOB_KIND_TEST,
    JOB_KINDS,
    SIZE_TINY,
    SOURCE_TYPE,
)
from accelerate_core.contracts import (
    EndpointJob,
    JobLimits,
    JobSpec,
    RunParams,
    RunPlan,
    SkipReason,
    TemplateRef,
    check_attn,
    check_compile,
    check_dtype,
    check_size,
    job_key,
)
from accelerate_core.errors import ConfigError, ContractError, HardwareUnavailableError
from accelerate_core.selection import MODELS_FLAG, RunnableEntry, Target, select_models

if TYPE_CHECKING:
    from accelerate_core.backends import Inventory
    from accelerate_core.config import Settings

PHASE_LOOP: Final[dict[str, Any]] = {
    "warmup": 2,
    "min_iters": 10,
    "min_duration_s": 0.3,
    "max_duration_s": 2.0,
    "p50_ci_rel": 0.01,
}
"""Benchmark loop of a phase run: short enough for ~2 s per architecture, long enough for a stable p50
(``benchmarks/bench_phase_p50.py`` compares it with a long measurement). Two warm-up calls: the generated test's
``test_forward`` and ``test_generate`` have already made the first call of each. At least 10 timed calls; the
loop then runs to 0.3 s unless the p50's 95% interval is already within +-1% (the precision rule of
:func:`accelerate_core.bench.measure`: a fast, steady model stops sooner, a noisy one measures as long as
before), and never past 2 s. Each loop's ending is recorded with the result and summarised in the report."""

_BASE_S: Final[dict[str, float]] = {
    "text": 1.2,
    "vision": 1.5,
    "audio": 1.7,
    "video": 2.5,
    "multimodal": 2.2,
    "time-series": 0.5,
}
"""Mean seconds of one job by modality (render, build, test, benchmark loop) in a full CPU run on 2 cores."""

_S_PER_MPARAM: Final = 0.05
"""Extra seconds per million parameters of the tiny model (bigger tiny models run slower forwards)."""

_RUN_ID_SAFE = re.compile(r"[^A-Za-z0-9._]+")


class CatalogEntry(RunnableEntry, Protocol):
    """What the planner reads of a catalog index entry (``accelerate_core.catalog.index.IndexEntry``): what a
    selection reads (:class:`accelerate_core.selection.RunnableEntry`), its family and its size."""

    @property
    def family(self) -> str: ...
    @property
    def param_count(self) -> int | None: ...


TemplateLookup = Callable[[CatalogEntry, str], TemplateRef | None]
"""``(entry, hardware) -> TemplateRef`` (the most specific template), or None when none covers it."""


@dataclass(frozen=True, slots=True)
class PlanOptions:
    """What a run plans: which phase, models, modality, hardware kinds, job kind, dtypes, model size and served
    endpoints; ``device_models`` names the one device model (slug) a kind's jobs target, when one is; ``picks``
    (``--hardware best``) gives each model (by label) its one ``(kind, device model or None)``."""

    phase: str
    models: str = "all"
    models_where: str = MODELS_FLAG
    """How errors name the selection: ``--models``, or the TOML ``models`` key it came from."""
    modality: str | None = None
    hardware: tuple[str, ...] = ("cpu",)
    kind: str = JOB_KIND_TEST
    dtypes: tuple[str, ...] = ("float32",)
    size: str = SIZE_TINY
    endpoints: tuple[EndpointJob, ...] = ()
    attns: tuple[str, ...] = ()
    batches: tuple[int, ...] = ()
    seqs: tuple[int, ...] = ()
    device_models: Mapping[str, str] = field(default_factory=dict)
    picks: Mapping[str, tuple[str, str | None]] = field(default_factory=dict)
    compiles: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if any(isinstance(v, bool) or v < 1 for v in (*self.batches, *self.seqs)):
            raise ConfigError("--batch and --seq take positive integers, e.g. --batch 1,8 --seq 128")
        try:
            for dtype in self.dtypes:
                check_dtype(dtype)
            for attn in self.attns:
                check_attn(attn)
            for backend in self.compiles:
                check_compile(None if backend == COMPILE_OFF else backend)
            check_size(self.size)
        except ContractError as e:
            raise ConfigError(str(e)) from e
        if not self.dtypes:
            raise ConfigError("no dtype to plan for: pass --dtype float32 (or e.g. float32,bfloat16)")
        if not self.phase or not _RUN_ID_SAFE.sub("", self.phase):
            raise ConfigError(f"phase {self.phase!r} is invalid: give a name such as 2026-q4")
        if self.kind not in JOB_KINDS:
            raise ConfigError(f"job kind {self.kind!r} is unknown: use one of {', '.join(JOB_KINDS)}")
        if not self.hardware:
            raise ConfigError("no hardware kind to plan for: pass --hardware auto or e.g. cpu,cuda")
        for hw in self.hardware:
            if hw not in HARDWARE_KINDS:
                raise ConfigError(f"hardware {hw!r} is unknown: use auto or some of {', '.join(HARDWARE_KINDS)}")


def new_run_id(phase: str, now: float, token: str | None = None) -> str:
    """A run id ``<phase>-<yyyymmddThhmmss>-<4 hex>`` (UTC); ``token`` fixes the hex part for tests."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    safe = _RUN_ID_SAFE.sub("-", phase).strip("-")
    return f"{safe}-{stamp}-{token if token is not None else secrets.token_hex(2)}"


def estimate_seconds(entry: CatalogEntry) -> float:
    """Expected duration of a job without history: a fixed cost per modality plus a size term."""
    base = _BASE_S.get(entry.modality, 1.5)
    mparams = (entry.param_count or 0) / 1e6
    return round(base + _S_PER_MPARAM * mparams, 3)


def plan_run(
    options: PlanOptions,
    index: Sequence[CatalogEntry],
    settings: Settings,
    *,
    template_for: TemplateLookup | None = None,
    past_durations: Mapping[str, Mapping[str, float]] | None = None,
    now: float | None = None,
    token: str | None = None,
    code_version: str = "",
    base_dir: Path | None = None,
    inventory: Inventory | None = None,
    no_sequence: Collection[str] = frozenset(),
) -> RunPlan:
    """Plan a run: one job per selected architecture and hardware kind, longest expected first.

    Args:
        options: phase, models spec, modality, hardware kinds (already resolved, see
            :func:`resolve_hardware`) and job kind.
        index: the light catalog index (``accelerate_core.catalog.index.load_index()``).
        settings: time limits, memory cap and benchmark shapes of the jobs.
        template_for: the template lookup; required for ``test`` jobs.
        past_durations: ``{hardware: {model_type: seconds}}`` from the store (empty: size estimates).
        now: the clock (unix seconds), for the run id and ``created_at``.
        token: fixes the run id's random part (tests).
        code_version: recorded with the run.
        base_dir: where a relative ``@file`` is read from.
        inventory: the devices the jobs will run on, when known (a local run): a model that no device of
            a kind can run (``accelerate_core.backends.assess``: memory, dtype) is skipped on that kind.
        no_sequence: model types whose input has no sequence axis
            (``accelerate_core.bench.shapes.has_sequence_axis``): measured at the first ``--seq`` only.

    Returns:
        The plan; a job that is not run carries its reason (``JobSpec.skip``).

    Raises:
        ConfigError, UnknownModelError: the selection is invalid or empty.
    """
    created = time.time() if now is None else now
    run_id = new_run_id(options.phase, created, token)
    targets = select_models(index, options.models, options.modality, where=options.models_where, base_dir=base_dir)
    if options.kind == JOB_KIND_TEST and template_for is None:
        raise ConfigError("planning test jobs needs the templates store: run `accel templates sync` first")
    jobs: list[JobSpec] = []
    modalities: dict[str, str] = {}
    first_seq = _seqs(options, settings.bench)[0]
    for hw in options.hardware:
        history = (past_durations or {}).get(hw, {})
        for target in targets:
            pick = options.picks.get(target.source.label)
            if options.picks and (pick is None or pick[0] != hw):
                continue  # --hardware best: the model runs on its pick only
            for axes in _axes(options, settings.bench, target):
                spec = _plan_job(run_id, target, axes, hw, options.kind, settings, template_for, history)
                spec = _targeted(spec, pick[1] if pick else options.device_models.get(hw))
                if spec.skip is None and target.entry is not None and target.entry.model_type in no_sequence:
                    spec = _measured_once(spec, target, axes, first_seq)
                if spec.skip is None and options.kind == JOB_KIND_TEST and inventory is not None:
                    assert target.entry is not None  # a runnable job has its catalog entry
                    skip = incompatibility(target.entry, hw, inventory, axes.dtype)
                    spec = spec if skip is None else replace(spec, skip=skip, expected_s=0.0)
                jobs.append(spec)
                if target.entry is not None and spec.model_type != target.entry.model_type:
                    modalities[spec.model_type] = target.entry.modality  # a row the catalog does not name
    jobs += [endpoint_spec(run_id, e, settings, past_durations or {}) for e in options.endpoints]
    modalities.update({j.model_type: "text" for j in jobs if j.endpoint is not None})
    ordered = tuple(order_jobs(jobs))
    params = replace(_plan_params(options, settings, ordered, history_used=bool(past_durations)),
                     modalities=modalities)  # fmt: skip
    return RunPlan(
        run_id=run_id,
        phase=options.phase,
        created_at=created,
        params=params,
        jobs=ordered,
        code_version=code_version,
    )


@dataclass(frozen=True, slots=True)
class Axes:
    """The axes of one job beside model and hardware: dtype, model size, attention implementation and shape.

    ``batch``/``seq`` None: the settings' shapes (``bench.batch_sizes``/``bench.seq_lens``), all in one job.
    """

    dtype: str = "float32"
    size: str = SIZE_TINY
    attn: str | None = None
    batch: int | None = None
    seq: int | None = None
    compile_backend: str | None = None

    def row_name(self, label: str) -> str:
        """``label`` plus each axis that is not its default: ``bert``, ``bert.full.bfloat16``, ``bert.eager.b8``."""
        parts = [
            label,
            *([self.size] if self.size != SIZE_TINY else []),
            *([self.dtype] if self.dtype != "float32" else []),
            *([self.attn] if self.attn is not None else []),
            *([f"b{self.batch}"] if self.batch is not None else []),
            *([f"s{self.seq}"] if self.seq is not None else []),
            *([f"compile-{self.compile_backend}"] if self.compile_backend is not None else []),
        ]
        return ".".join(parts)

    def bench(self, base: BenchConfig, batches: tuple[int, ...] = (), seqs: tuple[int, ...] = ()) -> BenchConfig:
        """``base`` measuring this job's shape only (when it has one; else ``batches``/``seqs`` when given)."""
        batches = (self.batch,) if self.batch is not None else batches
        seqs = (self.seq,) if self.seq is not None else seqs
        return replace(base, batch_sizes=batches or base.batch_sizes, seq_lens=seqs or base.seq_lens)


def _seqs(options: PlanOptions, base: BenchConfig) -> list[int | None]:
    """The ``--seq`` axis in the order asked; the settings' only length is None (no axis), as is no ``--seq``."""
    return list(dict.fromkeys(None if (s,) == base.seq_lens else s for s in options.seqs)) or [None]


def _axes(options: PlanOptions, base: BenchConfig, target: Target[CatalogEntry]) -> list[Axes]:
    """Every combination of the axes asked for, for one model; a shape equal to the settings' only one is no axis
    (``--batch 1`` plans the rows a plain run plans)."""
    size = options.size if target.source.kind == SOURCE_TYPE else SIZE_TINY
    batches = [None if (b,) == base.batch_sizes else b for b in options.batches] or [None]
    seqs = _seqs(options, base)
    compiles = [None if c == COMPILE_OFF else c for c in options.compiles] or [None]
    combos = itertools.product(options.dtypes, options.attns or (None,), dict.fromkeys(batches), seqs,
                               dict.fromkeys(compiles))  # fmt: skip
    return [Axes(dtype, size, attn, batch, seq, backend) for dtype, attn, batch, seq, backend in combos]


def _skip_reason(
    target: Target[CatalogEntry], hardware: str, template_for: TemplateLookup | None
) -> tuple[SkipReason | None, TemplateRef | None]:
    """Why a test job of ``target`` is not run (None: it is), and the template it renders."""
    skip = target.skip()
    if skip is not None or target.entry is None:
        return skip, None
    template = template_for(target.entry, hardware) if template_for is not None else None
    if template_for is not None and template is None:
        return SkipReason(ERR_UNSUPPORTED, f"no template covers {target.entry.model_type}"), None
    return None, template


def _plan_job(
    run_id: str,
    target: Target[CatalogEntry],
    axes: Axes,
    hardware: str,
    kind: str,
    settings: Settings,
    template_for: TemplateLookup | None,
    history: Mapping[str, float],
) -> JobSpec:
    """One job; ``skip`` says why when it is not to be run."""
    skip: SkipReason | None = None
    template: TemplateRef | None = None
    if kind == JOB_KIND_TEST:
        skip, template = _skip_reason(target, hardware, template_for)
    name = axes.row_name(target.source.label)
    expected = 0.0
    if skip is None and kind != JOB_KIND_DRY and target.entry is not None:
        expected = float(history.get(name) or estimate_seconds(target.entry))
    limit = settings.time_limit(kind)
    return JobSpec(
        key=job_key(run_id, name, hardware, kind),
        run_id=run_id,
        model_type=name,
        hardware=hardware,
        kind=kind,
        template=template,
        bench=axes.bench(job_bench(settings, kind)),
        limits=JobLimits(soft_s=limit.soft_s, hard_s=limit.hard_s, mem_cap_mb=settings.mem_cap_mb),
        expected_s=round(expected, 3),
        skip=skip,
        source=target.source,
        size=axes.size,
        dtype=axes.dtype,
        attn=axes.attn,
        compile_backend=axes.compile_backend,
    )


def _measured_once(spec: JobSpec, target: Target[CatalogEntry], axes: Axes, first_seq: int | None) -> JobSpec:
    """``spec`` of a model whose input has no sequence axis: run at the first ``--seq``, else a ``skipped`` row
    naming the row that measures that one input (every length would measure it again)."""
    if axes.seq == first_seq or target.entry is None:
        return spec
    measured = replace(axes, seq=first_seq).row_name(target.source.label)
    entry = target.entry
    why = (f"{SEQ_NOT_APPLICABLE} {entry.model_type}: its {entry.modality} input has no sequence axis, so every "
           f"length is the same input, measured once as {measured}")  # fmt: skip
    return replace(spec, skip=SkipReason(ERR_UNSUPPORTED, why), expected_s=0.0)


def _targeted(spec: JobSpec, model: str | None) -> JobSpec:
    """``spec`` sent to one device model's queue: the model is in the job and in its key (another job than the
    same model's on any device of the kind)."""
    if model is None:
        return spec
    return replace(spec, device_model=model, key=job_key(spec.run_id, spec.model_type, f"{spec.hardware}.{model}",
                                                         spec.kind))  # fmt: skip


def endpoint_spec(
    run_id: str, endpoint: EndpointJob, settings: Settings, past_durations: Mapping[str, Mapping[str, float]]
) -> JobSpec:
    """The job of one served endpoint: a ``test`` job on hardware ``api:NAME`` carrying the endpoint (no token)."""
    from accelerate_core.endpoint.targets import served_model_type

    model_type = served_model_type(endpoint)
    past = past_durations.get(endpoint.hardware, {}).get(model_type)
    limit = settings.time_limit(JOB_KIND_TEST)
    return JobSpec(
        key=job_key(run_id, model_type, endpoint.hardware, JOB_KIND_TEST),
        run_id=run_id,
        model_type=model_type,
        hardware=endpoint.hardware,
        kind=JOB_KIND_TEST,
        limits=JobLimits(soft_s=limit.soft_s, hard_s=limit.hard_s, mem_cap_mb=settings.mem_cap_mb),
        expected_s=round(float(past or estimate_endpoint_seconds(endpoint)), 3),
        endpoint=endpoint,
    )


def estimate_endpoint_seconds(endpoint: EndpointJob) -> float:
    """Expected duration of an endpoint job without history: its requests at a nominal 20 ms per token."""
    requests = 3 + endpoint.requests * len(endpoint.concurrency)  # the check's 2 and the warm-up's
    per_request = 0.02 * (endpoint.max_tokens + 1)
    return round(1.0 + requests * per_request / max(1, min(endpoint.concurrency)), 3)


def incompatibility(
    entry: CatalogEntry, hardware: str, inventory: Inventory, dtype: str = "float32"
) -> SkipReason | None:
    """The skip reason when no device of ``hardware`` in ``inventory`` can run ``entry``, else None.

    The rules are ``accelerate_core.backends.select_hardware``'s (kind allowed, dtype, memory with headroom).
    A kind the inventory does not have is not judged here (a fleet's workers may have it).
    """
    from accelerate_core.backends import ModelRequirements, assess

    devices = inventory.of(hardware)
    if not devices:
        return None
    needs = ModelRequirements(model_type=entry.model_type, param_count=entry.param_count, dtype=dtype)
    candidates = [assess(needs, d) for d in devices]
    if any(c.ok for c in candidates):
        return None
    why = "; ".join(f"{c.device.label}: {', '.join(c.reasons)}" for c in candidates)
    return SkipReason(ERR_UNSUPPORTED, f"no {hardware} device can run {entry.model_type} ({why})")


def job_bench(settings: Settings, kind: str) -> BenchConfig:
    """The benchmark settings a job carries: the settings' shapes, with the short :data:`PHASE_LOOP` for tests."""
    return replace(settings.bench, **PHASE_LOOP) if kind == JOB_KIND_TEST else settings.bench


def order_jobs(jobs: Iterable[JobSpec]) -> list[JobSpec]:
    """Longest expected first; jobs that are not run go last; ties broken by model type then hardware."""
    return sorted(jobs, key=lambda j: (j.skip is not None, -j.expected_s, j.model_type, j.hardware))


def _plan_params(options: PlanOptions, settings: Settings, jobs: Sequence[JobSpec], *, history_used: bool) -> RunParams:
    return RunParams(
        models=options.models,
        modality=options.modality,
        hardware=options.hardware,
        kind=options.kind,
        bench=Axes().bench(job_bench(settings, options.kind), options.batches, options.seqs),
        n_jobs=len(jobs),
        n_skipped=sum(1 for j in jobs if j.skip is not None),
        expected_work_s=round(sum(j.expected_s for j in jobs), 1),
        history_used=history_used,
        dtypes=options.dtypes,
        size=options.size,
        endpoints=tuple(e.hardware for e in options.endpoints),
        attns=options.attns,
        compiles=options.compiles,
    )


def resolve_hardware(spec: str | Sequence[str], available: Sequence[str], *, local: bool = True) -> tuple[str, ...]:
    """Resolve ``--hardware``: ``auto`` -> the kinds this machine has; else the kinds listed, validated.

    Args:
        spec: ``"auto"``, ``"cpu,cuda"`` or a sequence of kinds.
        available: the hardware kinds detected here (``accelerate_core.backends.detect()``).
        local: the jobs run on this machine, so every kind asked for must be available; a fleet run
            (``local=False``) may plan for kinds only its workers have.

    Raises:
        ConfigError: an unknown kind, or none at all.
        HardwareUnavailableError: a local run asks for a kind this machine does not have.
    """
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [s.strip() for s in spec]
    items = [s for s in items if s]
    if not items or items == ["auto"]:
        kinds = [k for k in HARDWARE_KINDS if k in available]
        return tuple(kinds) if kinds else ("cpu",)
    for kind in items:
        if kind not in HARDWARE_KINDS:
            raise ConfigError(f"hardware {kind!r} is unknown: use auto or some of {', '.join(HARDWARE_KINDS)}")
        if local and kind not in available:
            raise HardwareUnavailableError(
                f"hardware {kind!r} is not present on this machine (found {', '.join(available) or 'none'}): "
                "use --hardware auto, or run on a fleet with --broker"
            )
    return tuple(dict.fromkeys(items))


def resolve_targets(
    spec: str, available: Sequence[str], known_models: Callable[[str], Sequence[str]], *, local: bool = True
) -> tuple[tuple[str, ...], dict[str, str]]:
    """Resolve ``--hardware`` with device models: ``cpu,cuda:h100`` -> ``(("cpu", "cuda"), {"cuda": "h100-..."})``.

    Args:
        spec: kinds as :func:`resolve_hardware` takes them, each optionally ``kind:model`` (a slug, a prefix or
            a part of one).
        available: the hardware kinds here (a local run) or on the fleet.
        known_models: a kind's known device models (this machine's; on a fleet, the live nodes').

    Raises:
        ConfigError: a model no known one matches (the line lists them), several models of one kind.
        HardwareUnavailableError: as :func:`resolve_hardware`.
    """
    from accelerate_core.backends.device_model import match_model

    kinds: list[str] = []
    models: dict[str, str] = {}
    for item in (s.strip() for s in spec.split(",")):
        kind, sep, wanted = item.partition(":")
        if sep and kind in models:
            raise ConfigError(f"--hardware names two device models of {kind}: give one {kind}:MODEL per run")
        if sep and kind in HARDWARE_KINDS:
            models[kind] = match_model(kind, wanted, known_models(kind))
        kinds.append(kind if sep else item)
    return resolve_hardware(kinds, available, local=local), models

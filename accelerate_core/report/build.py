"""Building the report of one run: resolve the baseline, read both runs, summarise, compare, return."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from accelerate_core.constants import API_HARDWARE, STATUS_DONE, STATUS_SKIPPED, TERMINAL_STATUSES, hardware_kind
from accelerate_core.errors import ConfigError
from accelerate_core.report.collect import Pair, RunData, collect_import_timings, collect_run, collect_workers
from accelerate_core.report.compare import DEFAULT_ALPHA, DEFAULT_THRESHOLD, compare_runs
from accelerate_core.report.modality import resolve_modalities
from accelerate_core.report.model import (
    Efficiency,
    FailureGroup,
    FailureMessage,
    GroupSummary,
    ModelRow,
    Report,
    SpeedUp,
)
from accelerate_core.report.stages import collect_loop_endings, collect_stages
from accelerate_core.report.stats import median_or_none, pass_rate

if TYPE_CHECKING:
    from accelerate_core.contracts import Makespan
    from accelerate_core.store import ResultsStore

CPU = "cpu"
FAILURE_JOBS_LISTED = 20
"""How many jobs each failure message names (the count covers all of them)."""


def build_report(
    store: ResultsStore,
    run_id: str,
    baseline_run_id: str | None = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    modalities: Mapping[str, str] | None = None,
    use_catalog: bool = True,
    now: float | None = None,
) -> Report:
    """The report of ``run_id``, compared with ``baseline_run_id`` (default: the previous run of its phase).

    Raises:
        UnknownRunError: either run is not in the store.
        ConfigError: the baseline is the run itself, or the threshold/alpha are out of range.
    """
    if not 0 <= threshold < 10 or not 0 < alpha < 1:
        raise ConfigError(f"threshold={threshold} alpha={alpha} invalid: need 0 <= threshold < 10 and 0 < alpha < 1")
    data = collect_run(store, run_id)
    models = sorted({m for m, _ in data.jobs})
    modality = resolve_modalities(
        models, data.run.params.modalities, modalities, store_path=store.path, use_catalog=use_catalog
    )
    rows = [_row(pair, data, modality) for pair in sorted(data.jobs)]
    timings, timings_note = collect_import_timings(store, run_id)
    totals, by_modality, by_hardware = _summaries(rows)
    report = Report(
        run=data.run,
        generated_at=time.time() if now is None else now,
        synthetic=data.run.params.synthetic,
        totals=totals,
        rows=rows,
        by_modality=by_modality,
        by_hardware=by_hardware,
        failures=_failures(data),
        skipped=_failures(data, frozenset({STATUS_SKIPPED})),
        efficiency=_efficiency(data),
        workers=collect_workers(store, run_id, data),
        import_timings=timings,
        import_timings_note=timings_note,
        stages=collect_stages(store, run_id),
        loop_endings=collect_loop_endings(store, run_id),
    )
    _attach_baseline(store, report, data, baseline_run_id, threshold=threshold, alpha=alpha)
    return report


def _attach_baseline(
    store: ResultsStore, report: Report, data: RunData, baseline_run_id: str | None, *, threshold: float, alpha: float
) -> None:
    run_id, phase = report.run_id, data.run.phase
    if baseline_run_id == run_id:
        raise ConfigError(f"the baseline of run {run_id} cannot be the run itself: pick an earlier run")
    baseline_id = baseline_run_id or store.previous_run(phase, run_id)
    if baseline_id is None:
        report.baseline_note = f"no earlier run of phase {phase!r} to compare with"
        return
    baseline = collect_run(store, baseline_id)
    report.comparison = compare_runs(store, data, baseline, threshold=threshold, alpha=alpha)


def _row(pair: Pair, data: RunData, modality: Mapping[str, str]) -> ModelRow:
    job = data.jobs[pair]
    row = ModelRow(
        model_type=pair[0],
        modality=modality[pair[0]],
        hardware=pair[1],
        status=job.status,
        error_class=job.error_class,
        attempts=job.attempts,
        duration_s=job.duration_s,
        template_sha=job.template_sha,
        source=job.source or _default_source(pair),
        dtype=job.dtype or "float32",
        attn=job.attn,
        compile_backend=job.compile_backend,
        peak_memory_mib=data.peak_memory.get(pair),
        load_time_s=data.load_time.get(pair),
        shapes=data.shapes.get(pair, []),
    )
    if row.shapes:
        first = row.shapes[0]
        row.batch_size, row.seq_len = first.batch_size, first.seq_len
        row.p50_s, row.p90_s = first.p50_s, first.p90_s
        row.throughput, row.throughput_unit = first.throughput, first.throughput_unit
        row.ttft_s, row.itl_s, row.compile_s = first.ttft_s, first.itl_s, first.compile_s
    return row


def _default_source(pair: Pair) -> str:
    """A row planned without a source: a served endpoint's (hardware ``api:NAME``) or a model type built here."""
    return f"served:{pair[0]}" if hardware_kind(pair[1]) == API_HARDWARE else f"type:{pair[0]}"


Ratios = dict[tuple[str, str], float]
"""(model type, accelerator) -> that model's speed-up over CPU."""


def _summary(name: str, rows: list[ModelRow], ratios: Ratios) -> GroupSummary:
    g = GroupSummary(name=name, total=len(rows))
    for r in rows:
        if r.status == STATUS_DONE:
            g.done += 1
        elif r.status == STATUS_SKIPPED:
            g.skipped += 1
        elif r.status in TERMINAL_STATUSES:
            g.failed += 1
        else:
            g.pending += 1
    g.pass_rate = pass_rate(g.done, g.total, g.skipped, g.pending)
    g.speedups = _speedups({r.model_type for r in rows}, ratios)
    return g


def _summaries(rows: list[ModelRow]) -> tuple[GroupSummary, list[GroupSummary], list[GroupSummary]]:
    """The totals, the per-modality and the per-hardware summaries."""
    ratios = _speedup_ratios(rows)
    by_modality: dict[str, list[ModelRow]] = {}
    by_hardware: dict[str, list[ModelRow]] = {}
    for r in rows:
        by_modality.setdefault(r.modality, []).append(r)
        by_hardware.setdefault(r.hardware, []).append(r)
    hardware = []
    for name in sorted(by_hardware):
        g = _summary(name, by_hardware[name], {})
        g.speedups = _speedups({m for m, _ in ratios}, {k: v for k, v in ratios.items() if k[1] == name})
        hardware.append(g)
    modality = [_summary(name, by_modality[name], ratios) for name in sorted(by_modality)]
    return _summary("all", rows, ratios), modality, hardware


def _speedup_ratios(rows: list[ModelRow]) -> Ratios:
    """Per model and accelerator: the median over shared shapes of CPU p50 / accelerator p50."""
    cpu = {r.model_type: r for r in rows if r.hardware == CPU and r.status == STATUS_DONE}
    out: Ratios = {}
    for r in rows:
        base = cpu.get(r.model_type)
        if r.hardware == CPU or base is None or r.status != STATUS_DONE:
            continue
        ref = {(s.batch_size, s.seq_len): s.p50_s for s in base.shapes}
        ratios = []
        for s in r.shapes:
            b = ref.get((s.batch_size, s.seq_len))
            if s.p50_s and b:
                ratios.append(b / s.p50_s)
        m = median_or_none(ratios)
        if m is not None:
            out[(r.model_type, r.hardware)] = m
    return out


def _speedups(models: set[str], ratios: Ratios) -> list[SpeedUp]:
    """Median over ``models`` of each accelerator's speed-up."""
    per_acc: dict[str, list[float]] = {}
    for (model, acc), ratio in ratios.items():
        if model in models:
            per_acc.setdefault(acc, []).append(ratio)
    return [SpeedUp(acc, float(median_or_none(v) or 0.0), len(v)) for acc, v in sorted(per_acc.items())]


_FAILED = TERMINAL_STATUSES - {STATUS_DONE, STATUS_SKIPPED}


def _failures(data: RunData, statuses: frozenset[str] = _FAILED) -> list[FailureGroup]:
    """Jobs with one of ``statuses``, grouped by error class, then by the first line of their message."""
    by_class: dict[str, dict[str, FailureMessage]] = {}
    for (model, hw), job in sorted(data.jobs.items()):
        if job.status not in statuses:
            continue
        klass = job.error_class or job.status
        lines = (job.error_message or "").strip().splitlines()
        message = lines[0][:500] if lines else "(no message)"
        group = by_class.setdefault(klass, {})
        entry = group.setdefault(message, FailureMessage(message, 0, [], job.error_type))
        entry.count += 1
        if len(entry.jobs) < FAILURE_JOBS_LISTED:
            entry.jobs.append(f"{model}@{hw}")
    out = []
    for klass, messages in by_class.items():
        ordered = sorted(messages.values(), key=lambda m: (-m.count, m.message))
        out.append(FailureGroup(klass, sum(m.count for m in ordered), ordered))
    return sorted(out, key=lambda g: (-g.count, g.error_class))


def _efficiency(data: RunData) -> Efficiency:
    """Sum of job durations / (slots x wall time).

    The executor's own records (``params.makespan``: one entry per invocation, so a resumed run does
    not count the time it lay interrupted) win; else the job timeline (first start to last finish).
    """
    recorded = _recorded_makespan(data.run.params.makespan)
    if recorded is not None:
        return recorded
    jobs = [j for j in data.jobs.values() if j.duration_s is not None]
    busy = sum(j.duration_s or 0.0 for j in jobs)
    starts = [j.started_at for j in jobs if j.started_at is not None]
    ends = [j.finished_at for j in jobs if j.finished_at is not None]
    wall = max(ends) - min(starts) if starts and ends else 0.0
    slots = data.run.params.slots if data.run.params.slots and data.run.params.slots > 0 else None
    if slots is None:
        return Efficiency(None, busy, wall, None, "the executor recorded no slot count (params.slots)")
    if wall <= 0:
        return Efficiency(slots, busy, wall, None, "no job has both a start and a finish time yet")
    return Efficiency(slots, busy, wall, busy / (slots * wall))


def _recorded_makespan(entries: Sequence[Makespan]) -> Efficiency | None:
    if not entries:
        return None
    busy = sum(e.busy_s for e in entries)
    capacity = sum(e.slots * e.wall_s for e in entries)
    wall = sum(e.wall_s for e in entries)
    slots = max(e.slots for e in entries)
    if capacity <= 0:
        return None
    note = f"as recorded by the executor over {len(entries)} invocations" if len(entries) > 1 else ""
    return Efficiency(slots, busy, wall, busy / capacity, note)

"""The report's tables as plain text cells, shared by the Markdown and HTML renderers.

Cells are raw text here; each renderer escapes them for its own format.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from accelerate_core.report.model import Change, Comparison, FailureGroup, GroupSummary, Report

CPU = "cpu"
STAGES_NOTE = (
    "Seconds per stage over the run's jobs. A job's child: render, pytest start (session, collection, import of "
    "the generated test), build (fixtures), forward, generate, loop (the benchmark), teardown; pytest is their "
    "session total. The runner: entry (the job body) and runner (fork, box, result write, exit); child is both."
)

LOOPS_NOTE = (
    "How the benchmark's timing loops ended: converged (the p50's distribution-free 95% interval within the "
    "precision asked), max-duration (cut at the time cap), min-iters-and-duration (no precision rule). "
    "CI: the interval's half-width over the p50, at the loop's end."
)

NOT_COMPARABLE = "Not comparable: template, device model or versions changed"
"""The heading of the models whose figures the comparison leaves out (``Comparison.not_comparable``)."""


@dataclass(frozen=True, slots=True)
class Table:
    """A titled table: header cells and rows of text cells."""

    headers: tuple[str, ...]
    rows: Sequence[tuple[str, ...]]


def fmt_s(value: float | None) -> str:
    """Seconds with a unit that keeps three significant figures (``1.23 ms``)."""
    if value is None:
        return "-"
    if value == 0:
        return "0 s"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value * 1e9:.3g} ns"


def fmt_num(value: float | None, unit: str | None = None) -> str:
    """A number with three significant figures and an optional unit."""
    if value is None:
        return "-"
    return f"{value:.3g}" + (f" {unit}" if unit else "")


def fmt_pct(value: float | None) -> str:
    """A fraction as a percentage (``0.5`` -> ``50.0%``)."""
    return "-" if value is None else f"{100 * value:.1f}%"


def fmt_change(value: float) -> str:
    """A relative change with its sign (``+30.0%``)."""
    return f"{100 * value:+.1f}%"


def fmt_time(ts: float | None) -> str:
    """A unix time as UTC text."""
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def overview(report: Report) -> Table:
    """The run's facts and headline figures."""
    run, t, eff = report.run, report.totals, report.efficiency
    rows = [
        ("run", run.run_id),
        ("phase", run.phase),
        ("status", run.status),
        ("created", fmt_time(run.created_at)),
        ("code version", run.code_version or "-"),
        ("jobs", f"{t.total} ({t.done} done, {t.failed} failed, {t.skipped} skipped, {t.pending} pending)"),
        ("pass rate", fmt_pct(t.pass_rate)),
        (
            "makespan efficiency",
            f"{fmt_pct(eff.efficiency)} (busy {eff.busy_s:.1f} s / "
            f"({eff.slots or '?'} slots x wall {eff.wall_s:.1f} s))" + (f": {eff.note}" if eff.note else ""),
        ),
        ("generated", fmt_time(report.generated_at)),
    ]
    if report.synthetic:
        rows.insert(0, ("data", "SYNTHETIC: made-up numbers for tests and benchmarks, not measurements"))
    return Table(("fact", "value"), rows)


def workers(report: Report) -> Table:
    """The workers, their hardware and library versions."""
    rows = [
        (
            w.worker_id,
            w.host or "-",
            w.hardware or "-",
            w.device_name or "-",
            "-" if w.memory_mb is None else f"{w.memory_mb} MiB",
            w.driver or "-",
            ", ".join(f"{k} {v}" for k, v in sorted(w.versions.items())) or "-",
            str(w.jobs),
        )
        for w in report.workers
    ]
    return Table(("worker", "host", "hardware", "device", "memory", "driver", "versions", "jobs"), rows)


def import_timings(report: Report) -> Table:
    """The self-benchmark rows (module load times)."""
    rows = [
        (t.section, t.name, str(t.n), fmt_s(t.median_s), fmt_s(t.stdev_s), fmt_s(t.min_s), fmt_s(t.max_s))
        for t in report.import_timings
    ]
    return Table(("section", "name", "n", "median", "stdev", "min", "max"), rows)


def stages(report: Report) -> Table:
    """Where the job time went: each stage's total over the jobs, and its spread per job."""
    rows = [
        (s.stage, str(s.jobs), fmt_s(s.total_s), fmt_s(s.mean_s), fmt_s(s.p50_s), fmt_s(s.p90_s), fmt_s(s.max_s))
        for s in report.stages
    ]
    return Table(("stage", "jobs", "total", "mean", "p50", "p90", "max"), rows)


def loop_endings(report: Report) -> Table:
    """How the benchmark's timing loops ended, per metric: count, median samples and seconds, p50 precision."""
    rows = [
        (
            e.metric,
            e.stopped_by,
            str(e.loops),
            f"{e.p50_n:g}",
            fmt_s(e.p50_loop_s),
            _pct(e.p50_ci_rel),
            _pct(e.p90_ci_rel),
        )
        for e in report.loop_endings
    ]
    return Table(("loop", "stopped by", "loops", "samples p50", "seconds p50", "p50 CI p50", "p50 CI p90"), rows)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"+-{100 * value:.1f}%"


def summaries(groups: list[GroupSummary], label: str) -> Table:
    """Per-group counts, pass rate and median speed-up of each accelerator over CPU."""
    rows = []
    for g in groups:
        speed = "; ".join(f"{s.accelerator} x{s.median:.2f} ({s.models} models)" for s in g.speedups) or "-"
        rows.append(
            (
                g.name,
                str(g.total),
                str(g.done),
                str(g.failed),
                str(g.skipped),
                str(g.pending),
                fmt_pct(g.pass_rate),
                speed,
            )
        )
    return Table((label, "jobs", "done", "failed", "skipped", "pending", "pass rate", "median speed-up vs cpu"), rows)


def changes(items: list[Change]) -> Table:
    """Flagged (or noisy) p50 latency changes against the baseline."""
    rows = [
        (
            c.model_type,
            c.hardware,
            f"{c.batch_size}x{c.seq_len}",
            fmt_s(c.baseline_p50_s),
            fmt_s(c.current_p50_s),
            fmt_change(c.change),
            "-" if c.p_value is None else f"{c.p_value:.3g}",
        )
        for c in items
    ]
    return Table(("model", "hardware", "shape", "baseline p50", "p50", "change", "Mann-Whitney p"), rows)


def models(report: Report) -> Table:
    """The model x hardware table."""
    rows = [
        (
            r.model_type,
            r.modality,
            r.source or "-",
            r.dtype,
            r.attn or "default",
            "-" if r.compile_backend is None else f"{r.compile_backend} {fmt_s(r.compile_s)}",
            r.hardware,
            r.status + (f" ({r.error_class})" if r.error_class and r.status != "done" else ""),
            "-" if r.batch_size is None else f"{r.batch_size}x{r.seq_len}",
            fmt_s(r.p50_s),
            fmt_s(r.p90_s),
            fmt_num(r.throughput, r.throughput_unit),
            fmt_s(r.ttft_s),
            fmt_s(r.itl_s),
            fmt_num(r.peak_memory_mib, "MiB"),
            fmt_s(r.load_time_s),
        )
        for r in report.rows
    ]
    headers = ("model", "modality", "source", "dtype", "attention", "compile", "hardware", "status", "shape", "p50",
               "p90", "throughput", "ttft", "decode/token", "peak memory", "load")  # fmt: skip
    return Table(headers, rows)


def newly_failing(c: Comparison) -> Table:
    """Models that passed in the baseline and fail now."""
    rows = [
        (f["model_type"], f["hardware"], f["status"], f["error_class"] or "-", f["error_message"] or "-")
        for f in c.newly_failing
    ]
    return Table(("model", "hardware", "status", "error class", "message"), rows)


def not_comparable(c: Comparison) -> Table:
    """Models whose template, device model, torch or transformers changed since the baseline (not compared)."""
    rows = [(n["model_type"], n["hardware"], str(n.get("reason") or "template changed")) for n in c.not_comparable]
    return Table(("model", "hardware", "what changed (baseline -> this run)"), rows)


def failure_messages(group: FailureGroup) -> Table:
    """The distinct messages of one error class, with the jobs that failed with each."""
    rows = [
        (str(m.count), m.error_type or "-", m.message, ", ".join(m.jobs) + (" ..." if m.count > len(m.jobs) else ""))
        for m in group.messages
    ]
    return Table(("count", "type", "message", "jobs"), rows)

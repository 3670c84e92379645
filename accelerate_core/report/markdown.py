"""The report as Markdown (pipe tables; every cell and heading escaped so no text can become markup)."""

from __future__ import annotations

from accelerate_core.report import tables
from accelerate_core.report.model import Comparison, FailureGroup, Report
from accelerate_core.report.tables import Table

_MD_ESCAPES = str.maketrans(
    {c: "\\" + c for c in "\\`*_[]!|~#"} | {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": " ", "\n": " "}
)
"""Backslash-escapes the characters of inline Markdown (code spans, emphasis, links and images, table pipes,
strikethrough, heading closers), turns HTML's brackets into entities and line breaks into spaces."""


def md_cell(text: str) -> str:
    """Escape text for a table cell or a heading: it renders as the same literal text, never as markup.

    No code span, emphasis, link, image, raw HTML or extra table cell can come out of it; ``://`` is
    escaped too, so a URL in an error message is not turned into a link by GFM's autolinker.
    """
    return text.translate(_MD_ESCAPES).replace("://", ":\\/\\/")


def md_table(table: Table) -> str:
    """A pipe table (or a line saying there is nothing)."""
    if not table.rows:
        return "_none_\n"
    lines = ["| " + " | ".join(md_cell(h) for h in table.headers) + " |"]
    lines.append("|" + "|".join("---" for _ in table.headers) + "|")
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines) + "\n"


def render_markdown(report: Report) -> str:
    """The whole report as one Markdown document."""
    out = [f"# Report of run {md_cell(report.run_id)} (phase {md_cell(report.run.phase)})\n"]
    if report.synthetic:
        out.append("> **SYNTHETIC DATA**: this run was generated for tests or benchmarks; nothing here was measured.\n")
    out += ["## Overview\n", md_table(tables.overview(report))]
    out += ["## Workers\n", md_table(tables.workers(report))]
    if report.import_timings:
        note = f"_{md_cell(report.import_timings_note)}_\n" if report.import_timings_note else ""
        out += ["## Module loading\n", note, md_table(tables.import_timings(report))]
    if report.stages:
        out += ["## Job stages\n", f"_{md_cell(tables.STAGES_NOTE)}_\n", md_table(tables.stages(report))]
    if report.loop_endings:
        out += ["## Loop endings\n", f"_{md_cell(tables.LOOPS_NOTE)}_\n", md_table(tables.loop_endings(report))]
    out += ["## By hardware\n", md_table(tables.summaries(report.by_hardware, "hardware"))]
    out += ["## By modality\n", md_table(tables.summaries(report.by_modality, "modality"))]
    out += _comparison(report)
    out += _failures(report)
    out += ["## Models x hardware\n", md_table(tables.models(report))]
    return "\n".join(out)


def _comparison(report: Report) -> list[str]:
    c: Comparison | None = report.comparison
    if c is None:
        return ["## Comparison\n", f"_{md_cell(report.baseline_note or 'no baseline')}_\n"]
    out = [
        f"## Comparison with run {md_cell(c.baseline_run_id)}\n",
        f"p50 latency changes beyond {100 * c.threshold:.0f}% and significant by a two-sided Mann-Whitney U "
        f"test (p < {c.alpha:g}) on the raw samples; {c.compared} shapes compared, "
        f"{len(c.within_noise)} beyond the threshold but within the noise.\n",
        f"### Regressions ({len(c.regressions)})\n",
        md_table(tables.changes(c.regressions)),
        f"### Improvements ({len(c.improvements)})\n",
        md_table(tables.changes(c.improvements)),
    ]
    out += _pairs("New", c.new) + _pairs("Missing (in the baseline, not in this run)", c.missing)
    out += [f"### Newly failing ({len(c.newly_failing)})\n", md_table(tables.newly_failing(c))]
    out += _pairs("Newly passing", c.newly_passing)
    out += [f"### {tables.NOT_COMPARABLE} ({len(c.not_comparable)})\n", md_table(tables.not_comparable(c))]
    return out


def _pairs(title: str, pairs: list[dict[str, str]]) -> list[str]:
    items = ", ".join(md_cell(f"{p['model_type']}@{p['hardware']}") for p in pairs) or "_none_"
    return [f"### {title} ({len(pairs)})\n", items + "\n"]


def _failures(report: Report) -> list[str]:
    out = _groups("Failures by error class", report.failures)
    if report.skipped:
        out += _groups("Skipped (not run) by reason", report.skipped)
    return out


def _groups(title: str, groups: list[FailureGroup]) -> list[str]:
    out = [f"## {title}\n"]
    if not groups:
        return [*out, "_none_\n"]
    for group in groups:
        out += [
            f"### {md_cell(group.error_class)} ({group.count})\n",
            md_table(tables.failure_messages(group)),
        ]
    return out

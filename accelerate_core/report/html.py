"""The report as one self-contained HTML page: inline CSS and inline SVG plots, no script, no network.

Every piece of text that comes from the store (model names, error messages, hosts, versions) is passed
through :func:`html.escape`; the page's Content-Security-Policy forbids scripts and remote loads too.
"""

from __future__ import annotations

from html import escape

from accelerate_core.report import svg, tables
from accelerate_core.report.model import Comparison, FailureGroup, Report
from accelerate_core.report.tables import Table

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0;font-size:12px;background:#fff}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}th{background:#eee}
.synthetic{background:#fff3cd;border:1px solid #e0b000;padding:8px;font-weight:bold}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plot{border:1px solid #ddd}
.s-done{color:#2e7d32}.s-failed,.s-timeout{color:#c62828}.s-skipped{color:#777}
.note{color:#555;font-style:italic}
"""
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def html_table(table: Table, *, status_col: int | None = None) -> str:
    """An escaped HTML table (or a note saying there is nothing)."""
    if not table.rows:
        return '<p class="note">none</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in table.headers)
    body = []
    for row in table.rows:
        cells = []
        for i, cell in enumerate(row):
            cls = f' class="s-{escape(cell.split(" ")[0])}"' if i == status_col else ""
            cells.append(f"<td{cls}>{escape(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(report: Report) -> str:
    """The whole report as one HTML document."""
    title = f"Report of run {report.run_id} (phase {report.run.phase})"
    parts = [f"<h1>{escape(title)}</h1>"]
    if report.synthetic:
        parts.append(
            '<p class="synthetic">SYNTHETIC DATA: generated for tests or benchmarks; nothing was measured.</p>'
        )
    parts += ["<h2>Overview</h2>", html_table(tables.overview(report)), _plots(report)]
    parts += ["<h2>Workers</h2>", html_table(tables.workers(report))]
    if report.import_timings:
        parts += ["<h2>Module loading</h2>", _note(report.import_timings_note)]
        parts.append(html_table(tables.import_timings(report)))
        parts.append(_timings_plot(report))
    if report.stages:
        parts += ["<h2>Job stages</h2>", _note(tables.STAGES_NOTE), html_table(tables.stages(report))]
    if report.loop_endings:
        parts += ["<h2>Loop endings</h2>", _note(tables.LOOPS_NOTE), html_table(tables.loop_endings(report))]
    parts += ["<h2>By hardware</h2>", html_table(tables.summaries(report.by_hardware, "hardware"))]
    parts += ["<h2>By modality</h2>", html_table(tables.summaries(report.by_modality, "modality"))]
    parts += _comparison(report)
    parts += _failures(report)
    parts += ["<h2>Models x hardware</h2>", html_table(tables.models(report), status_col=3)]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>' if text else ""


def _plots(report: Report) -> str:
    hw = report.by_hardware
    charts = [
        svg.stacked_bars(
            "Jobs by status and hardware",
            [g.name for g in hw],
            [
                ("done", svg.STATUS_COLOURS["done"], [g.done for g in hw]),
                ("failed/timeout", svg.STATUS_COLOURS["failed"], [g.failed for g in hw]),
                ("skipped", svg.STATUS_COLOURS["skipped"], [g.skipped for g in hw]),
                ("pending", svg.STATUS_COLOURS["pending"], [g.pending for g in hw]),
            ],
        )
    ]
    by_hw: dict[str, list[float]] = {}
    for r in report.rows:
        if r.p50_s:
            by_hw.setdefault(r.hardware, []).append(r.p50_s)
    series = [
        (name, svg.SERIES_COLOURS[i % len(svg.SERIES_COLOURS)], v) for i, (name, v) in enumerate(sorted(by_hw.items()))
    ]
    charts.append(svg.histogram("p50 latency at the smallest shape", series, "seconds"))
    speed = _speedup_series(report)
    if speed:
        charts.append(svg.histogram("Speed-up over CPU per model (smallest shape)", speed, "CPU p50 / accelerator p50"))
    if report.comparison is not None:
        charts.append(_comparison_plot(report.comparison))
    return '<div class="plots">' + "".join(charts) + "</div>"


def _speedup_series(report: Report) -> list[svg.Series]:
    cpu = {r.model_type: r.p50_s for r in report.rows if r.hardware == "cpu" and r.status == "done" and r.p50_s}
    per_acc: dict[str, list[float]] = {}
    for r in report.rows:
        base = cpu.get(r.model_type)
        if r.hardware != "cpu" and r.status == "done" and r.p50_s and base:
            per_acc.setdefault(r.hardware, []).append(base / r.p50_s)
    colours = svg.SERIES_COLOURS
    return [(hw, colours[(i + 1) % len(colours)], v) for i, (hw, v) in enumerate(sorted(per_acc.items()))]


def _comparison_plot(c: Comparison) -> str:
    colour = {"regression": "#d62728", "improvement": "#2ca02c"}
    points = [
        (
            ch.baseline_p50_s,
            ch.current_p50_s,
            colour.get(ch.verdict, "#999999"),
            f"{ch.model_type}@{ch.hardware} {ch.batch_size}x{ch.seq_len}: {100 * ch.change:+.1f}% ({ch.verdict})",
        )
        for ch in c.regressions + c.improvements + c.within_noise
    ]
    return svg.scatter(
        f"p50 latency changes beyond {100 * c.threshold:.0f}%",
        points,
        "baseline p50 (s)",
        "p50 (s)",
        subtitle=f"vs {c.baseline_run_id}; red: regression, green: improvement, grey: noise",
    )


def _timings_plot(report: Report) -> str:
    rows = [t for t in report.import_timings if t.median_s is not None][:30]
    return svg.hbars(
        "Median load time", [t.name for t in rows], [1000 * (t.median_s or 0.0) for t in rows], "#1f77b4", "ms"
    )


def _comparison(report: Report) -> list[str]:
    c = report.comparison
    if c is None:
        return ["<h2>Comparison</h2>", _note(report.baseline_note or "no baseline")]
    out = [
        f"<h2>Comparison with run {escape(c.baseline_run_id)}</h2>",
        f"<p>p50 latency changes beyond {100 * c.threshold:.0f}% and significant by a two-sided Mann-Whitney U test "
        f"(p &lt; {c.alpha:g}) on the raw samples; {c.compared} shapes compared, {len(c.within_noise)} beyond the "
        "threshold but within the noise.</p>",
        f"<h3>Regressions ({len(c.regressions)})</h3>",
        html_table(tables.changes(c.regressions)),
        f"<h3>Improvements ({len(c.improvements)})</h3>",
        html_table(tables.changes(c.improvements)),
    ]
    for title, pairs in (("New", c.new), ("Missing (in the baseline, not in this run)", c.missing)):
        out += [f"<h3>{title} ({len(pairs)})</h3>", _pair_list(pairs)]
    out += [f"<h3>Newly failing ({len(c.newly_failing)})</h3>", html_table(tables.newly_failing(c))]
    out += [f"<h3>Newly passing ({len(c.newly_passing)})</h3>", _pair_list(c.newly_passing)]
    out += [
        f"<h3>{tables.NOT_COMPARABLE} ({len(c.not_comparable)})</h3>",
        html_table(tables.not_comparable(c)),
    ]
    return out


def _pair_list(pairs: list[dict[str, str]]) -> str:
    if not pairs:
        return '<p class="note">none</p>'
    return "<p>" + ", ".join(escape(f"{p['model_type']}@{p['hardware']}") for p in pairs) + "</p>"


def _failures(report: Report) -> list[str]:
    out = _groups("Failures by error class", report.failures)
    if report.skipped:
        out += _groups("Skipped (not run) by reason", report.skipped)
    return out


def _groups(title: str, groups: list[FailureGroup]) -> list[str]:
    out = [f"<h2>{escape(title)}</h2>"]
    if not groups:
        return [*out, '<p class="note">none</p>']
    for group in groups:
        out += [
            f"<h3>{escape(group.error_class)} ({group.count})</h3>",
            html_table(tables.failure_messages(group)),
        ]
    return out

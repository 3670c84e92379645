"""``accel report`` and ``accel runs list|show|export``: read finished (or running) runs from the store.

Every command here reads through :mod:`scheduler.results`: the results DB opened read-only, or, while a
writer holds it, the writer's results service; the output is the same either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from accelerate_core import wire
from scheduler.cli.common import emit_json, out, state
from scheduler.cli.outputs import out_folder

runs_app = typer.Typer(help="Runs in the results store: list, show, export.", no_args_is_help=True)


def _run_name(value: str | None) -> str | None:
    """A RUN argument or ``--baseline``, checked before any store is opened (one line, exit 2)."""
    from accelerate_core.names import check_name

    return value if value is None else check_name(value, "RUN")


_RunArg = Annotated[str, typer.Argument(help="A run id (or 'latest')", metavar="RUN", callback=_run_name)]
_JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON")]


def report(
    ctx: typer.Context,
    run_id: _RunArg,
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline", help="Compare with this run (default: previous run of the phase)", callback=_run_name
        ),
    ] = None,
    formats: Annotated[str, typer.Option("--format", help="Comma list of md, html, json")] = "md,html,json",
    out_dir: Annotated[Path | None, typer.Option("--out", help="Folder (default: <reports_dir>/<RUN>)")] = None,
    threshold: Annotated[float, typer.Option("--threshold", help="Smallest p50 change flagged (fraction)")] = 0.10,
    as_json: _JsonOpt = False,
) -> None:
    """Write the aggregate report of a run (Markdown, HTML with plots, JSON) and print where."""
    from accelerate_core.report import parse_formats, write_documents
    from scheduler.results import report_documents

    settings = state(ctx).settings
    found = report_documents(settings, run_id, baseline, parse_formats(formats), threshold)
    rid = found.run_id
    paths = write_documents(found.texts, out_folder(out_dir or settings.reports_dir / rid))
    summary = _summary(found.data)
    if as_json:
        emit_json({"run_id": rid, "files": {k: str(v) for k, v in paths.items()}, "summary": summary})
        return
    for fmt, path in paths.items():
        out.print(f"{fmt:5} {path}", markup=False)
    out.print(_summary_line(summary), markup=False)


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of a report's data (``Report.to_dict()``, the JSON report's content)."""
    t, c = report["totals"], report["comparison"]
    return {
        "jobs": t["total"],
        "done": t["done"],
        "failed": t["failed"],
        "skipped": t["skipped"],
        "pending": t["pending"],
        "pass_rate": t["pass_rate"],
        "efficiency": report["efficiency"]["efficiency"],
        "baseline": c["baseline_run_id"] if c else None,
        "regressions": len(c["regressions"]) if c else 0,
        "improvements": len(c["improvements"]) if c else 0,
        "missing": len(c["missing"]) if c else 0,
        "newly_failing": len(c["newly_failing"]) if c else 0,
        "synthetic": report["synthetic"],
    }


def _summary_line(s: dict[str, Any]) -> str:
    rate = "-" if s["pass_rate"] is None else f"{100 * s['pass_rate']:.1f}%"
    line = f"{s['done']}/{s['jobs']} done, pass rate {rate}"
    if s["baseline"]:
        line += (
            f"; vs {s['baseline']}: {s['regressions']} regressions, {s['improvements']} improvements, "
            f"{s['newly_failing']} newly failing, {s['missing']} missing"
        )
    return line


@runs_app.command("list")
def list_runs(ctx: typer.Context, as_json: _JsonOpt = False) -> None:
    """List the runs in the store, newest first, with their job counts."""
    from scheduler.results import run_listings

    settings = state(ctx).settings
    runs = run_listings(settings)
    if as_json:
        emit_json([{**wire.encode(r.run), "jobs": r.jobs, "terminal": r.terminal, "done": r.done, "failed": r.failed}
                   for r in runs])  # fmt: skip
        return
    from accelerate_core.report.tables import fmt_time
    from scheduler.cli.text import PlainTable

    table = PlainTable("run", "phase", "created", "status", "jobs", "done", "failed", "finished")
    for r in runs:
        table.add_row(
            r.run.run_id, r.run.phase, fmt_time(r.run.created_at), r.run.status,
            str(r.jobs), str(r.done), str(r.failed), str(r.terminal),
        )  # fmt: skip
    out.print(table)
    out.print(f"{len(runs)} runs in {settings.results_db}", markup=False)


@runs_app.command("show")
def show_run(ctx: typer.Context, run_id: _RunArg, as_json: _JsonOpt = False) -> None:
    """Show one run: parameters, counts by status and hardware, failures so far, time left."""
    from scheduler.results import run_with_progress

    run, prog = run_with_progress(state(ctx).settings, run_id)
    rid = run.run_id
    if as_json:
        emit_json({"run": wire.encode(run), "progress": wire.encode(prog)})
        return
    out.print(f"run {rid}  phase {run.phase}  status {run.status}  code {run.code_version or '-'}", markup=False)
    out.print(f"{prog.terminal}/{prog.total} jobs finished; expected {prog.expected_s_left:.0f}s left", markup=False)
    for hw, counts in sorted(prog.by_hardware.items()):
        detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k != "total")
        out.print(f"  {hw:6} {counts['total']:5} jobs: {detail}", markup=False)
    if prog.failures_total:
        out.print(f"{prog.failures_total} failures (latest first):", markup=False)
        for f in prog.failures[:20]:
            message = f.error_message.splitlines()[0] if f.error_message else ""
            out.print(f"  {f.model_type}@{f.hardware} {f.error_class or f.status}: {message}", markup=False)


@runs_app.command("export")
def export_run(
    ctx: typer.Context,
    run_id: _RunArg,
    fmt: Annotated[
        str, typer.Option("--format", help="parquet, csv or optimum (benchmark_report.json per job)")
    ] = "parquet",
    out_dir: Annotated[Path | None, typer.Option("--out", help="Folder (default: <reports_dir>/<RUN>/export)")] = None,
    as_json: _JsonOpt = False,
) -> None:
    """Export a run's rows (runs, jobs, measurements, workers) as Parquet or CSV files, or optimum-benchmark reports."""
    from accelerate_core.errors import ConfigError
    from accelerate_core.store import EXPORT_FORMATS

    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"--format {fmt!r} is invalid: use one of {', '.join(EXPORT_FORMATS)}")
    from scheduler.results import export_files

    settings = state(ctx).settings

    def folder(rid: str) -> Path:
        return out_folder(out_dir or settings.reports_dir / rid / "export")

    files = export_files(settings, run_id, fmt, folder)
    if as_json:
        emit_json({k: str(v) for k, v in files.items()})
        return
    for table, path in files.items():
        out.print(f"{table:13} {path}", markup=False)  # a table, or an optimum report's job folder


def register(app: typer.Typer) -> None:
    """Add ``report`` and ``runs`` to the root app."""
    app.command("report")(report)
    app.add_typer(runs_app, name="runs")

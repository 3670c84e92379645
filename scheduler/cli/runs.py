"""``accel report`` and ``accel runs list|show|export``: read finished (or running) runs from the store.

Every command here opens the results store read-only; while a writer holds the file, DuckDB lets no
one else in and the command says so in one line (``accel status`` reads the writer's snapshot instead).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from accelerate_core import wire
from scheduler.cli.common import emit_json, out, state

if TYPE_CHECKING:
    from accelerate_core.config import Settings
    from accelerate_core.store import ResultsStore, RunListing

runs_app = typer.Typer(help="Runs in the results store: list, show, export.", no_args_is_help=True)
LATEST = "latest"
"""A RUN argument that names the newest run."""


def _run_name(value: str | None) -> str | None:
    """A RUN argument or ``--baseline``, checked before any store is opened (one line, exit 2)."""
    from accelerate_core.names import check_name

    return value if value is None else check_name(value, "RUN")


_RunArg = Annotated[str, typer.Argument(help="A run id (or 'latest')", metavar="RUN", callback=_run_name)]
_JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON")]


def _open(settings: Settings) -> ResultsStore:
    from accelerate_core.store import ResultsStore

    return ResultsStore.open(settings.results_db, read_only=True)


def _resolve(store: ResultsStore, run_id: str) -> str:
    from accelerate_core.errors import UnknownRunError

    if run_id != LATEST:
        return store.get_run(run_id).run_id
    found = store.latest_run()
    if found is None:
        raise UnknownRunError(f"the results store {store.path} has no runs yet: start one with `accel run`")
    return found


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
    from accelerate_core.report import build_report, parse_formats, write_report

    settings = state(ctx).settings
    chosen = parse_formats(formats)
    with _open(settings) as store:
        rid = _resolve(store, run_id)
        base = _resolve(store, baseline) if baseline else None
        built = build_report(store, rid, base, threshold=threshold)
    paths = write_report(built, out_dir or settings.reports_dir / rid, chosen)
    summary = _summary(built)
    if as_json:
        emit_json({"run_id": rid, "files": {k: str(v) for k, v in paths.items()}, "summary": summary})
        return
    for fmt, path in paths.items():
        out.print(f"{fmt:5} {path}", markup=False)
    out.print(_summary_line(summary), markup=False)


def _summary(built: Any) -> dict[str, Any]:
    t, c = built.totals, built.comparison
    return {
        "jobs": t.total,
        "done": t.done,
        "failed": t.failed,
        "skipped": t.skipped,
        "pending": t.pending,
        "pass_rate": t.pass_rate,
        "efficiency": built.efficiency.efficiency,
        "baseline": c.baseline_run_id if c else None,
        "regressions": len(c.regressions) if c else 0,
        "improvements": len(c.improvements) if c else 0,
        "missing": len(c.missing) if c else 0,
        "newly_failing": len(c.newly_failing) if c else 0,
        "synthetic": built.synthetic,
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
    from accelerate_core.store import ResultsStore

    settings = state(ctx).settings
    if not settings.results_db.is_file():
        runs: list[RunListing] = []
    else:
        with ResultsStore.open(settings.results_db, read_only=True) as store:
            runs = store.list_runs()
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
    with _open(state(ctx).settings) as store:
        rid = _resolve(store, run_id)
        run, prog = store.get_run(rid), store.run_progress(rid)
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
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv")] = "parquet",
    out_dir: Annotated[Path | None, typer.Option("--out", help="Folder (default: <reports_dir>/<RUN>/export)")] = None,
    as_json: _JsonOpt = False,
) -> None:
    """Export a run's rows (runs, jobs, measurements, workers) as Parquet or CSV files."""
    from accelerate_core.errors import ConfigError
    from accelerate_core.store import EXPORT_FORMATS

    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"--format {fmt!r} is invalid: use one of {', '.join(EXPORT_FORMATS)}")
    settings = state(ctx).settings
    with _open(settings) as store:
        rid = _resolve(store, run_id)
        files = store.export_run(rid, out_dir or settings.reports_dir / rid / "export", fmt)
    if as_json:
        emit_json({k: str(v) for k, v in files.items()})
        return
    for table, path in files.items():
        out.print(f"{table:13} {path}", markup=False)


def register(app: typer.Typer) -> None:
    """Add ``report`` and ``runs`` to the root app."""
    app.command("report")(report)
    app.add_typer(runs_app, name="runs")

"""`accel templates ...` (the versioned template store) and `accel generate` (one test file per architecture).

Heavy imports (DuckDB, jinja2, the catalog) happen inside the commands, so ``import scheduler`` stays light.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from accelerate_core.constants import HARDWARE_KINDS
from accelerate_core.errors import ConfigError
from accelerate_core.names import check_name
from scheduler.cli import outputs
from scheduler.cli.common import EXIT_JOB_FAILED, ModelsOpt, emit_json, err, out, progress, state

if TYPE_CHECKING:
    from templates_db.generate import GenerateReport
    from templates_db.model import TemplateVersion
    from templates_db.store import TemplateStore

templates_app = typer.Typer(
    name="templates", help="The versioned jinja2 test templates (their own DuckDB file).", no_args_is_help=True
)

HardwareOpt = Annotated[str, typer.Option("--hardware", help=f"hardware kind: {', '.join(HARDWARE_KINDS)}")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of text")]


def register(app: typer.Typer) -> None:
    """Add ``templates ...`` and ``generate`` to the root app."""
    app.add_typer(templates_app, name="templates")
    app.command("generate", help="Write one validated pytest file per runnable architecture.")(generate)


def _store(ctx: typer.Context) -> TemplateStore:
    from templates_db.store import TemplateStore

    return TemplateStore(state(ctx).settings.templates_db)


def _check_hardware(hardware: str) -> str:
    if hardware not in HARDWARE_KINDS:
        raise ConfigError(f"--hardware {hardware!r} is unknown: use one of {', '.join(HARDWARE_KINDS)}")
    return hardware


def _latest_or_sync(store: TemplateStore) -> list[TemplateVersion]:
    """The latest versions; an empty store is first seeded with the shipped templates."""
    latest = store.list()
    if not latest:
        err.print(f"accel: {store.path} has no templates yet: loading the shipped ones", markup=False)
        store.sync_shipped()
        latest = store.list()
    return latest


def _row(v: TemplateVersion) -> str:
    return f"{v.name:<20} v{v.version:<4} {v.scope_label:<28} {v.hardware:<5} {v.sha256[:12]}  {v.note}"


@templates_app.command("list")
def list_templates(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the latest version of every template."""
    latest = _store(ctx).list()
    if as_json:
        emit_json([v.to_dict(body=False) for v in latest])
        return
    if not latest:
        err.print("no templates: run `accel templates sync` to load the shipped ones", markup=False)
    for v in latest:
        out.print(_row(v), markup=False)


@templates_app.command("show")
def show(
    ctx: typer.Context,
    name: str,
    version: Annotated[int | None, typer.Option("--version", help="version number (default: latest)")] = None,
    sha: Annotated[str | None, typer.Option("--sha", help="sha256 or a prefix of it")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print a template's body (the latest version, or the one asked for)."""
    v = _store(ctx).get(check_name(name, "NAME"), version=version, sha=sha)
    if as_json:
        emit_json(v.to_dict())
    else:
        sys.stdout.write(v.body)


@templates_app.command("add")
def add(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="the .j2 template file")],
    name: Annotated[str, typer.Option("--name", help="template name (a new name, or a new version of one)")],
    scope: Annotated[str, typer.Option("--scope", help="default | modality | family | model_type")],
    scope_value: Annotated[str | None, typer.Option("--scope-value", help="the modality/family/type")] = None,
    hardware: Annotated[str, typer.Option("--hardware", help="any | cpu | cuda | rocm | mps")] = "any",
    note: Annotated[str, typer.Option("--note", help="a note kept with this version")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Validate a template (render + pytest --collect-only) and store it as a new version."""
    check_name(name, "--name")
    if scope_value is not None:
        check_name(scope_value, "--scope-value")
    try:
        body = file.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read template file {file} ({e.strerror}): check the path") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"template file {file} is not UTF-8 (byte {e.start}): save it as UTF-8") from e
    if scope == "model_type" and scope_value:
        from accelerate_core.catalog.index import find, load_index

        find(load_index(), scope_value)  # a typo would make a template that never matches: refuse it
    version, added = _store(ctx).add_version(name, body, scope, scope_value, hardware, note)
    if as_json:
        emit_json({**version.to_dict(body=False), "added": added})
    elif added:
        out.print(f"added {version.name} v{version.version} ({version.sha256[:12]})", markup=False)
    else:
        out.print(f"unchanged: {version.name} v{version.version} has this body already", markup=False)


@templates_app.command("history")
def history(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """List every version of a template, oldest first."""
    versions = _store(ctx).history(check_name(name, "NAME"))
    if as_json:
        emit_json([v.to_dict(body=False) for v in versions])
        return
    from datetime import UTC, datetime

    for v in versions:
        when = datetime.fromtimestamp(v.created_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        out.print(f"v{v.version:<4} {v.sha256[:12]}  {when}  {v.note}", markup=False)


@templates_app.command("diff")
def diff(ctx: typer.Context, name: str, v1: int, v2: int) -> None:
    """Show a unified diff between two versions of a template."""
    sys.stdout.write(_store(ctx).diff(check_name(name, "NAME"), v1, v2))


@templates_app.command("render")
def render(
    ctx: typer.Context,
    model_type: Annotated[str, typer.Argument(metavar="TYPE", help="a model type, e.g. bert")],
    hardware: HardwareOpt = "cpu",
    out_file: Annotated[Path | None, typer.Option("--out", help="write here instead of stdout")] = None,
) -> None:
    """Render the test file of one architecture with the template lookup would pick."""
    from templates_db.context import job_context
    from templates_db.model import pick
    from templates_db.render import render_job

    settings = state(ctx).settings
    _check_hardware(hardware)
    if out_file is not None:
        out_file = outputs.out_file(out_file)
    context = job_context(check_name(model_type, "TYPE"), hardware, settings.bench)
    version = pick(_latest_or_sync(_store(ctx)), model_type, context["modality"], context["family"], hardware)
    source = render_job(version.to_ref(), context)
    if out_file is None:
        sys.stdout.write(source)
    else:
        out_file.write_text(source, encoding="utf-8")
        err.print(f"wrote {out_file} ({version.name} v{version.version})", markup=False)


@templates_app.command("sync")
def sync(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Load the templates shipped with the package (unchanged files add no version)."""
    outcomes = _store(ctx).sync_shipped()
    if as_json:
        emit_json([o.to_dict() for o in outcomes])
        return
    for o in outcomes:
        what = "added" if o.added else "unchanged"
        out.print(f"{what:<9} {o.name} v{o.version} ({o.sha256[:12]}) from {o.file}", markup=False)


def generate(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Option("--out", help="folder to write test_<type>.py files into")],
    models: ModelsOpt = None,
    hardware: HardwareOpt = "cpu",
    as_json: JsonOpt = False,
) -> None:
    """Write one validated pytest file per runnable model (types, checkpoint dirs, cached hub ids); list the others
    with their reason."""
    from accelerate_core.catalog.index import load_index
    from accelerate_core.selection import models_spec, select_models
    from templates_db.generate import generate_files

    settings = state(ctx).settings
    _check_hardware(hardware)
    out_dir = outputs.out_folder(out_dir)
    spec, where = models_spec(models, settings)
    targets = select_models(load_index(), spec, where=where)
    latest = _latest_or_sync(_store(ctx))
    with progress(len(targets), f"generate ({hardware})") as bar:
        task = bar.tasks[0].id
        report = generate_files(
            targets,
            latest,
            hardware=hardware,
            out_dir=out_dir,
            bench=settings.bench,
            on_model=lambda t: bar.update(task, advance=1, detail=t),
        )
    if as_json:
        emit_json(report.to_dict())
    else:
        _print_report(report)
    if report.failed:
        raise typer.Exit(EXIT_JOB_FAILED)


def _print_report(report: GenerateReport) -> None:
    out.print(
        f"wrote {len(report.written)} test files to {report.out_dir} ({report.hardware}); "
        f"{len(report.skipped)} not runnable, {len(report.failed)} failed",
        markup=False,
    )
    for item in report.skipped:
        out.print(f"  skipped {item['model_type']}: {item['reason_class']}: {item['reason']}", markup=False)
    for item in report.failed:
        err.print(f"  failed  {item['model_type']}: {item['error']}", markup=False)

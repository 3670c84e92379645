"""``accel models list|show|check``: browse the model catalog and sweep every architecture."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from scheduler.cli.common import ModelsOpt, emit_json, err, out, progress, state
from scheduler.cli.outputs import out_file as checked_out_file

models_app = typer.Typer(
    help="The model catalog: every transformers architecture as a tiny model.", no_args_is_help=True
)


@models_app.command("list")
def list_models(
    modality: Annotated[
        str | None, typer.Option("--modality", "-m", help="Only this modality (text, vision, ...)")
    ] = None,
    size: Annotated[
        str, typer.Option("--size", help="param_count of the tiny model, or full (the default config's)")
    ] = "tiny",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """List every model type of the installed transformers with its modality, family, class and parameter count
    (counted on the meta device once, then cached)."""
    from accelerate_core.catalog.index import MODALITIES, load_index
    from accelerate_core.errors import ConfigError
    from accelerate_core.param_counts import load_param_counts

    if modality is not None and modality not in MODALITIES:
        raise ConfigError(f"unknown modality {modality!r}: use one of {', '.join(MODALITIES)}")
    entries = [e for e in load_index() if modality is None or e.modality == modality]
    with err.status(f"counting {size} parameters (once; cached)...", spinner="dots") as status:

        def progress(done: int, total: int) -> None:  # shown on a terminal only (rich draws nothing elsewhere)
            status.update(f"counting {size} parameters: {done}/{total} types (once; cached, kept if interrupted)...")

        counts = load_param_counts([e.model_type for e in entries], size, progress=progress)
    if as_json:
        emit_json([{**e.to_dict(), "param_count": counts[e.model_type], "size": size} for e in entries])
        return
    from scheduler.cli.text import PlainTable

    table = PlainTable("model type", "modality", "family", "class", f"params ({size})", "runnable")
    for e in entries:
        why = f"{e.reason_class} (via {e.tested_through})" if e.tested_through else e.reason_class
        count = counts[e.model_type]
        params = "-" if count is None else f"{count:,}"
        table.add_row(e.model_type, e.modality, e.family, e.model_class or "-", params, "yes" if e.runnable else why)
    out.print(table)
    out.print(f"{len(entries)} model types", markup=False)


@models_app.command("show")
def show_model(
    model_type: Annotated[str, typer.Argument(help="A model type, e.g. bert")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Show one model type: catalog facts and its tiny config."""
    from accelerate_core.catalog.context import template_context
    from accelerate_core.names import check_name

    ctx = template_context(check_name(model_type, "MODEL_TYPE"))
    if as_json:
        emit_json(ctx)
        return
    for key in ("model_type", "modality", "family", "model_class", "config_class", "main_input_name", "generative"):
        out.print(f"{key:16} {ctx[key]}", markup=False)
    out.print(
        f"{'runnable':16} {ctx['runnable']}" + (f" ({ctx['reason_class']}: {ctx['reason']})" if ctx["reason"] else ""),
        markup=False,
    )
    if ctx["needs"]:
        out.print(f"{'needs':16} {', '.join(ctx['needs'])}", markup=False)
    out.print("tiny config:", markup=False)
    out.print(json.dumps(ctx["config"], indent=2, sort_keys=True), markup=False)


def _print_summary(summary: dict[str, Any]) -> None:
    from scheduler.cli.text import PlainTable

    through = summary.get("passed_through_parent", 0)
    out.print(
        f"{summary['passed']} of {summary['total']} model types passed in {summary['wall_s']:.0f}s"
        f" ({summary['passed'] - through} by their own forward pass, {through} as components run in a parent's)",
        markup=False,
    )
    table = PlainTable("modality", "passed", "total")
    for name, counts in summary["by_modality"].items():
        table.add_row(name, str(counts["pass"]), str(counts["total"]))
    out.print(table)
    if summary["by_reason_class"]:
        reasons = PlainTable("not passing: reason class", "types")
        for name, count in summary["by_reason_class"].items():
            reasons.add_row(str(name), str(count))
        out.print(reasons)


@models_app.command("check")
def check_models(
    ctx: typer.Context,
    models: ModelsOpt = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Types checked at once")] = 2,
    out_file: Annotated[Path | None, typer.Option("--out", help="Write per-type outcomes JSON here")] = None,
    timeout_s: Annotated[float, typer.Option("--timeout", min=1.0, help="Seconds per type before it is killed")] = 60.0,
    mem_cap_mb: Annotated[float, typer.Option("--mem-cap-mb", min=64.0, help="Resident memory cap per type")] = 6144.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON")] = False,
) -> None:
    """Build and run every architecture (each isolated; checkpoint dirs and cached hub ids with their own weights),
    then print counts per modality and failure class."""
    from accelerate_core.catalog.check import count_outcomes, run_check
    from accelerate_core.catalog.index import load_index
    from accelerate_core.selection import models_spec, select_models

    if out_file is not None:
        out_file = checked_out_file(out_file)
    spec, where = models_spec(models, state(ctx).settings)
    targets = select_models(load_index(), spec, where=where)
    start = time.perf_counter()
    with progress(len(targets), "models check") as bar:

        def advance(row: dict[str, Any]) -> None:
            bar.update(bar.task_ids[0], advance=1, detail=f"{row['model_type']}: {row['status']}")

        rows = run_check(targets, jobs=jobs, timeout_s=timeout_s, mem_cap_mb=mem_cap_mb, on_row=advance)
    summary = count_outcomes(rows)
    summary["wall_s"] = round(time.perf_counter() - start, 2)
    if out_file is not None:
        out_file.write_text(json.dumps({"summary": summary, "outcomes": rows}, indent=1, sort_keys=True, default=str))
    if as_json:
        emit_json(summary)
    else:
        _print_summary(summary)


def register(app: typer.Typer) -> None:
    """Add ``accel models ...`` to the root app."""
    app.add_typer(models_app, name="models")

"""``accel detect``, ``accel selfbench`` and ``accel config show``: the machine, the core's own speed, the settings.

Each command loads the settings first, so a bad ``ACCEL_*`` value or TOML file ends it with one
line and exit 2 before anything else runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from scheduler.cli.common import EXIT_JOB_FAILED, emit_json, err, out, state
from scheduler.cli.outputs import out_folder

if TYPE_CHECKING:
    from accelerate_core.backends import Inventory
    from accelerate_core.config import Settings

config_app = typer.Typer(help="Inspect the settings (defaults < TOML file < ACCEL_* variables).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``detect``, ``selfbench`` and the ``config`` group to the root app."""
    app.command("detect")(detect_command)
    app.command("selfbench")(selfbench_command)
    config_app.command("show")(config_show_command)
    app.add_typer(config_app, name="config")


def detect_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="print the inventory as JSON")] = False,
) -> None:
    """Show this machine's hardware: every CPU, CUDA, ROCm and MPS device, and why a kind is missing."""
    state(ctx).settings  # noqa: B018 - validates the configuration first (one line, exit 2)
    from accelerate_core.backends import detect

    inventory = detect()
    if as_json:
        emit_json(inventory.to_dict())
        return
    _print_inventory(inventory)


def _print_inventory(inventory: Inventory) -> None:
    from scheduler.cli.text import PlainTable

    table = PlainTable(title=f"Hardware on {inventory.host} ({inventory.system} {inventory.machine})")
    for column in ("Device", "Name", "Memory (MiB)", "Driver", "Runtime", "Capability / arch", "Cores / threads"):
        table.add_column(column)
    for d in inventory.devices:
        capability = d.compute_capability or d.arch or "-"
        cores = f"{d.cores} / {d.threads}" if d.kind == "cpu" else "-"
        memory = str(d.total_memory_mb) if d.total_memory_mb is not None else "-"
        table.add_row(d.label, d.name, memory, d.driver_version or "-", d.runtime_version or "-", capability, cores)
    out.print(table)
    for note in inventory.notes:
        out.print(f"  {note}", markup=False, style="dim")


def selfbench_command(
    ctx: typer.Context,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="report folder (default: <reports_dir>/selfbench)")
    ] = None,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="fresh interpreters per module")] = 15,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="fresh interpreters per parallel scenario")] = 3,
    quick: Annotated[bool, typer.Option("--quick", help="a few seconds: fewer repeats and rounds")] = False,
    record: Annotated[bool, typer.Option("--record/--no-record", help="also store the rows in the results DB")] = True,
    check: Annotated[bool, typer.Option("--check", help="exit 1 when a target is missed")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the results as JSON")] = False,
) -> None:
    """Measure how fast and thread-safely accelerate_core loads; write a Markdown and a JSON report."""
    from dataclasses import replace

    from accelerate_core.selfbench import SelfbenchConfig, run_selfbench, timing_rows
    from accelerate_core.selfbench_report import write_selfbench

    settings = state(ctx).settings
    folder = out_folder(out_dir or settings.reports_dir / "selfbench")
    config = SelfbenchConfig.quick() if quick else replace(SelfbenchConfig(), repeats=repeats, parallel_rounds=rounds)
    results = run_selfbench(config, on_step=None if as_json else _step)
    paths = write_selfbench(results, folder)
    if record:
        _record(settings, timing_rows(results))
    if as_json:
        emit_json(results)
    else:
        _print_summary(results, paths)
    if check and not results["summary"]["passed"]:
        raise typer.Exit(EXIT_JOB_FAILED)


def _step(message: str) -> None:
    err.print(f"selfbench: {message}", markup=False)


def _record(settings: Settings, rows: list[dict[str, Any]]) -> None:
    """Store the rows when the results store is installed and free; never fail the benchmark over it."""
    import importlib.util

    if importlib.util.find_spec("accelerate_core.store") is None:
        return
    from accelerate_core.errors import AccelerateError

    store_module = importlib.import_module("accelerate_core.store")
    store_cls = getattr(store_module, "ResultsStore", None)
    if store_cls is None or not hasattr(store_cls, "record_import_timings"):
        return
    try:
        settings.results_db.parent.mkdir(parents=True, exist_ok=True)
        with store_cls.open(settings.results_db) as store:
            store.record_import_timings(rows)
    except AccelerateError as e:
        err.print(f"selfbench: rows not stored ({e})", markup=False)


def _print_summary(results: dict[str, Any], paths: dict[str, Path]) -> None:
    s = results["summary"]
    rates = ", ".join(f"{k} {v:.1%}" for k, v in s["parallel_success_rates"].items())
    out.print(
        f"import accelerate_core: {s['import_ms']:.2f} ms (target < {s['target_import_ms']} ms, "
        f"original {s['original_import_ms']} ms); over a bare interpreter's wall time "
        f"{s['import_over_bare_wall_ms']:.2f} ms (paired median), {s['import_over_bare_min_wall_ms']:.2f} ms (min)",
        markup=False,
    )
    out.print(f"parallel loading success: {rates}", markup=False)
    out.print(f"heavy modules imported: {', '.join(s['heavy_modules_imported']) or 'none'}", markup=False)
    out.print(f"{'PASS' if s['passed'] else 'FAIL'} in {results['duration_s']:.1f} s", markup=False)
    out.print(f"report: {paths['md']}  json: {paths['json']}", markup=False)


def config_show_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="print the settings as JSON")] = False,
) -> None:
    """Show the effective settings (passwords redacted) and where each came from."""
    settings = state(ctx).settings
    described = settings.describe()
    if as_json:
        emit_json(described)
        return
    from scheduler.cli.text import PlainTable

    table = PlainTable("Setting", "Value", "Source", title="Settings (defaults < TOML file < ACCEL_* variables)")
    for key, value in described.items():
        table.add_row(key, _flat(value), settings.source_of(key))
    out.print(table)


def _flat(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_flat(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)

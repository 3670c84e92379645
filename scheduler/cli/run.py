"""``accel run`` (plan and run a phase: locally, or on a fleet with a broker) and ``accel status``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from accelerate_core.constants import RUN_COMPLETE, STATUS_DONE
from scheduler.cli.common import EXIT_JOB_FAILED, EXIT_OK, ModelsOpt, emit_json, err, fail, is_tty, out, state

if TYPE_CHECKING:
    from accelerate_core.config import Settings
    from accelerate_core.contracts import EndpointJob, RunPlan
    from scheduler.dry import DryRun
    from scheduler.local import RunSummary
    from scheduler.status import RunStatus

EXIT_INTERRUPTED = 130
"""``accel run`` stopped by SIGINT/SIGTERM: finished results kept, the run marked ``interrupted``."""


def register(app: typer.Typer) -> None:
    """Add ``run`` and ``status`` to the root app."""
    app.command("run")(run_command)
    app.command("status")(status_command)


def run_command(
    ctx: typer.Context,
    phase: Annotated[str | None, typer.Option("--phase", help="phase line of the run, e.g. 2026-q4")] = None,
    models: ModelsOpt = None,
    modality: Annotated[str | None, typer.Option("--modality", help="only this modality (text, vision, ...)")] = None,
    hardware: Annotated[
        str,
        typer.Option(
            "--hardware", help="auto (what this machine has), kinds (cpu,cuda), a device model (cuda:h100) or best"
        ),
    ] = "auto",
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", min=1, help="jobs at once (default: cores)")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="run only the unfinished jobs of RUN")] = None,
    broker: Annotated[str | None, typer.Option("--broker", help="Redis URL: run on the fleet")] = None,
    wait: Annotated[
        bool,
        typer.Option("--wait", help="with a broker: wait for the phase to finish (a stall ends it: one line, exit 1)"),
    ] = False,
    dry: Annotated[
        bool, typer.Option("--dry", help="smoke test: one dry job through each live node (--wait: round trips)")
    ] = False,
    dtype: Annotated[str, typer.Option("--dtype", help="dtypes, e.g. float32,bfloat16 (float16 too)")] = "float32",
    size: Annotated[str, typer.Option("--size", help="model types: tiny, or full (default config, random weights)")] = (
        "tiny"
    ),
    endpoint: Annotated[
        list[str] | None,
        typer.Option("--endpoint", help="a served model to test too: NAME=URL[@MODEL] (repeatable; rows api:NAME)"),
    ] = None,
    attn: Annotated[str | None, typer.Option("--attn", help="attention implementations, e.g. sdpa,eager")] = None,
    batch: Annotated[str | None, typer.Option("--batch", help="batch sizes, one job each, e.g. 1,8")] = None,
    seq: Annotated[str | None, typer.Option("--seq", help="sequence lengths, one job each, e.g. 128,512")] = None,
    compile_: Annotated[
        str | None, typer.Option("--compile", help="torch.compile backends, e.g. inductor or off,inductor")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Plan a phase-end run over the selected architectures and run it; write its report."""
    from accelerate_core.names import check_name

    settings = state(ctx).settings
    axes = {**parse_axes(dtype, size, attn, batch, seq), "compiles": parse_compiles(compile_)}
    if broker:
        settings = settings.with_overrides(broker_url=broker, source="--broker")
    if jobs:
        settings = settings.with_overrides(concurrency=jobs, source="--jobs")
    if dry:
        _run_dry(settings, phase, resume, wait, as_json)
    if resume is None and not phase:
        raise fail("give --phase NAME for a new run (or --resume RUN)")
    if resume is not None:
        check_name(resume, "--resume")
    if phase is not None:
        check_name(phase, "--phase")
    endpoints = _endpoints(settings, endpoint)
    if settings.broker_url:
        _run_remote(settings, phase, models, modality, hardware, endpoints, resume, wait, as_json, axes)
        return
    from scheduler.local import run_local

    if resume is not None:
        summary = run_local(settings, resume_run_id=resume, show_progress=is_tty() and not as_json)
    else:
        plan = _plan(settings, phase or "", models, modality, hardware, endpoints, local=True, axes=axes)
        if not as_json:
            _print_plan(plan, settings.effective_concurrency())
        summary = run_local(settings, plan, show_progress=is_tty() and not as_json)
    _print_summary(summary, as_json)
    raise typer.Exit(EXIT_OK if summary.status == RUN_COMPLETE else EXIT_INTERRUPTED)


def parse_axes(dtype: str, size: str, attn: str | None, batch: str | None, seq: str | None) -> dict[str, Any]:
    """The axis options of :class:`~scheduler.plan.PlanOptions` from the command line (each bad one: one line)."""
    from scheduler.cli.bench import parse_sizes

    return {"dtypes": parse_dtypes(dtype), "size": size, "attns": parse_attns(attn),
            "batches": parse_sizes(batch, "--batch") or (), "seqs": parse_sizes(seq, "--seq") or ()}  # fmt: skip


def parse_compiles(raw: str | None) -> tuple[str, ...]:
    """``--compile off,inductor`` -> ``("off", "inductor")``; None -> ``()`` (the eager model only).

    Raises:
        ConfigError: a backend that is not known (one line naming the choices).
    """
    from accelerate_core.constants import COMPILE_BACKENDS, COMPILE_OFF
    from accelerate_core.errors import ConfigError

    if raw is None:
        return ()
    names = [part.strip() for part in raw.split(",") if part.strip()]
    choices = (COMPILE_OFF, *COMPILE_BACKENDS)
    if not names or any(n not in choices for n in names):
        raise ConfigError(f"--compile {raw!r} is invalid: give some of {', '.join(choices)}, e.g. off,inductor")
    return tuple(dict.fromkeys(names))


def parse_dtypes(raw: str) -> tuple[str, ...]:
    """``--dtype float32,bf16`` -> ``("float32", "bfloat16")`` (aliases normalised, duplicates dropped).

    Raises:
        ConfigError: a dtype that is not float32, bfloat16 or float16 (one line naming it).
    """
    from accelerate_core.backends import normalize_dtype
    from accelerate_core.constants import DTYPES
    from accelerate_core.errors import ConfigError

    names = [normalize_dtype(part.strip()) for part in raw.split(",") if part.strip()]
    wrong = [n for n in names if n not in DTYPES]
    if not names or wrong:
        raise ConfigError(f"--dtype {raw!r} is invalid: give some of {', '.join(DTYPES)}, e.g. float32,bfloat16")
    return tuple(dict.fromkeys(names))


def _endpoints(settings: Settings, given: list[str] | None) -> tuple[EndpointJob, ...]:
    """``--endpoint`` values (they replace the settings' ``endpoints``), checked: one line and exit 2 when bad."""
    if not given and not settings.endpoints:
        return ()
    from accelerate_core.endpoint.targets import parse_endpoints

    if given:
        return parse_endpoints(given, "--endpoint")
    return parse_endpoints(settings.endpoints, f"{settings.source_of('endpoints')}: endpoints")


def parse_attns(raw: str | None) -> tuple[str, ...]:
    """``--attn sdpa,eager`` -> ``("sdpa", "eager")``; None -> ``()`` (each model's default).

    Raises:
        ConfigError: an attention implementation that is not known (one line naming the choices).
    """
    from accelerate_core.constants import ATTN_IMPLEMENTATIONS
    from accelerate_core.errors import ConfigError

    if raw is None:
        return ()
    names = [part.strip() for part in raw.split(",") if part.strip()]
    if not names or any(n not in ATTN_IMPLEMENTATIONS for n in names):
        raise ConfigError(f"--attn {raw!r} is invalid: give some of {', '.join(ATTN_IMPLEMENTATIONS)}, e.g. sdpa,eager")
    return tuple(dict.fromkeys(names))


def _plan(
    settings: Settings,
    phase: str,
    models: str | None,
    modality: str | None,
    hardware: str,
    endpoints: tuple[EndpointJob, ...],
    *,
    local: bool,
    axes: Mapping[str, Any] | None = None,
) -> RunPlan:
    from scheduler.cli.plan import plan_options
    from scheduler.planning_inputs import plan_with_stores

    options, _ = plan_options(settings, phase, models, modality, hardware, endpoints, local=local, axes=axes)
    return plan_with_stores(settings, options, local=local, base_dir=Path.cwd(), code_version=_code_version())


def _run_remote(
    settings: Settings,
    phase: str | None,
    models: str | None,
    modality: str | None,
    hardware: str,
    endpoints: tuple[EndpointJob, ...],
    resume: str | None,
    wait: bool,
    as_json: bool,
    axes: Mapping[str, Any],
) -> None:
    import importlib

    from scheduler.results import page_url

    # The fleet's dispatcher: imported only when a broker is configured (it imports celery).
    remote = importlib.import_module("scheduler.remote")
    if resume is not None:
        _resume_remote(settings, resume, wait, as_json)
        return
    plan = _plan(settings, phase or "", models, modality, hardware, endpoints, local=False, axes=axes)
    warn_without_writer(settings)
    page = page_url(settings, plan.run_id)
    if page and not as_json:
        out.print(f"run {plan.run_id}: results at {page}", markup=False)
    run_id = str(remote.run_remote(settings, plan, wait=wait))
    if as_json:
        emit_json({"run_id": run_id, "jobs": len(plan.jobs), "broker": True, "waited": wait, "page_url": page})
    else:
        out.print(
            f"run {run_id}: {len(plan.jobs)} jobs sent to the fleet; follow it with `accel status {run_id}`",
            markup=False,
        )


def _resume_remote(settings: Settings, run_id: str, wait: bool, as_json: bool) -> None:
    """``accel run --resume RUN`` on a fleet: the writer re-sends the run's jobs that lost their message."""
    import importlib

    from accelerate_core import reconcile

    remote = importlib.import_module("scheduler.remote")
    report = remote.resume_remote(settings, run_id)
    line = (
        f"run {run_id}: {reconcile.describe(report)}"
        if report is not None
        else f"run {run_id}: no live writer answered the resume; it is served once `accel writer` runs"
    )
    if not as_json:
        err.print(line, markup=False)
    snapshot = remote.follow_with_bar(settings, run_id, report.unfinished if report else 0) if wait else None
    if as_json:
        from accelerate_core import wire

        emit_json({"run_id": run_id, "broker": True, "waited": wait,
                   "reconciled": wire.encode(report) if report is not None else None,
                   "status": snapshot.status if snapshot is not None else None})  # fmt: skip
    elif snapshot is not None:
        out.print(f"run {run_id} {snapshot.status}: {snapshot.terminal}/{snapshot.total} finished", markup=False)


NO_WRITER_WARNING = (
    "accel run: warning: no writer is alive on this broker: the run and its results wait in the queue until one "
    "starts (accel writer)"
)
"""The one line ``accel run`` prints on a fleet whose writer is not running."""


def warn_without_writer(settings: Settings) -> None:
    """Print :data:`NO_WRITER_WARNING` when no writer's heartbeat is on the broker."""
    from scheduler.nodes import writer_heartbeat

    if writer_heartbeat(settings) is None:
        err.print(NO_WRITER_WARNING, markup=False)


def _run_dry(settings: Settings, phase: str | None, resume: str | None, wait: bool, as_json: bool) -> None:
    """``accel run --dry``: one dry job through each live node; exits 0 when every node answered (or no --wait)."""
    from accelerate_core.names import check_name

    if resume is not None:
        raise fail("--dry starts a new run: drop --resume")
    if not settings.broker_url:
        raise fail("--dry sends a dry job to each live worker node: it needs a fleet (ACCEL_BROKER_URL or --broker)")
    from scheduler.dry import DRY_PHASE, run_dry

    warn_without_writer(settings)
    result = run_dry(settings, phase=check_name(phase or DRY_PHASE, "--phase"), wait=wait)
    if as_json:
        emit_json(result.to_json())
    else:
        _print_dry(result)
    raise typer.Exit(EXIT_OK if result.ok else EXIT_JOB_FAILED)


def _print_dry(result: DryRun) -> None:
    out.print(f"run {result.run_id}: a dry job sent to each of {len(result.trips)} live nodes", markup=False)
    if not result.waited:
        out.print(f"follow it with `accel status {result.run_id}`; --wait shows each node's round trip", markup=False)
        return
    from scheduler.cli.text import PlainTable

    table = PlainTable("node", "hardware", "round trip", "status")
    for t in result.trips:
        trip = f"{1000 * t.round_trip_s:.1f} ms" if t.round_trip_s is not None else "-"
        table.add_row(t.node, t.hardware, trip, t.status)
    out.print(table)
    answered = sum(t.status == STATUS_DONE for t in result.trips)
    line = f"{answered}/{len(result.trips)} nodes answered; {result.wall_s:.1f} s in all"
    out.print(line + (f"; report: {result.report_dir}" if result.report_dir else ""), markup=False)


def _print_plan(plan: RunPlan, slots: int) -> None:
    p = plan.params
    err.print(
        f"run {plan.run_id}: {p.n_jobs} jobs ({p.n_jobs - p.n_skipped} to run, {p.n_skipped} skipped) on "
        f"{', '.join((*p.hardware, *p.endpoints))}, {slots} at a time; "
        f"expected ~{p.expected_work_s / max(1, slots) / 60:.1f} min",
        markup=False,
    )


def _print_summary(summary: RunSummary, as_json: bool) -> None:
    if as_json:
        emit_json(summary.to_dict())
        return
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.counts.items()))
    out.print(f"run {summary.run_id} {summary.status}: {counts}", markup=False)
    out.print(
        f"wall {summary.wall_s:.1f} s, {summary.ran} jobs run on {summary.slots} slots, "
        f"makespan efficiency {summary.efficiency:.2f}",
        markup=False,
    )
    if summary.report_dir is not None:
        main = summary.report_files.get("md") or summary.report_files.get("html") or str(summary.report_dir)
        out.print(f"report: {main}", markup=False)
    elif summary.status != RUN_COMPLETE:
        out.print(f"resume with: accel run --resume {summary.run_id}", markup=False)


def _code_version() -> str:
    from accelerate_core import __version__

    return __version__


def status_command(
    ctx: typer.Context,
    run_id: Annotated[str | None, typer.Argument(help="the run (default: the latest)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the status as JSON")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="read it again until the run is done (Ctrl-C leaves)")] = False,
    every: Annotated[float, typer.Option("--every", min=0.1, max=3600, help="--watch: seconds between reads")] = 2.0,
) -> None:
    """Progress of a run per hardware, its failures so far and the expected time left."""
    from dataclasses import replace

    from accelerate_core.names import check_name
    from scheduler.status import format_status, run_status, writer_state

    if run_id is not None:
        check_name(run_id, "RUN")
    if watch and as_json:
        raise fail("--watch redraws the status for a person: drop --json (or poll `accel status --json`)")
    settings = state(ctx).settings
    if watch:
        from scheduler.cli.watch import watch as watch_status

        def read() -> RunStatus:
            return replace(run_status(settings, run_id), writer=writer_state(settings))

        watch_status(read, format_status, every_s=every, live=out.is_terminal)
        return
    status = replace(run_status(settings, run_id), writer=writer_state(settings))
    if as_json:
        emit_json(status.to_json())
        return
    for line in format_status(status):
        out.print(line, markup=False)

"""``accel cancel RUN``: end a fleet run now; its unfinished jobs recorded ``cancelled``, its report written."""

from __future__ import annotations

from typing import Annotated

import typer

from accelerate_core import wire
from scheduler.cli.common import emit_json, fail, out, state


def register(app: typer.Typer) -> None:
    """Add ``cancel`` to the root app."""
    app.command("cancel")(cancel_command)


def cancel_command(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="the run to cancel", metavar="RUN")],
    broker: Annotated[str | None, typer.Option("--broker", help="Redis URL (default: the settings')")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the outcome as JSON")] = False,
) -> None:
    """Cancel a fleet run: pending jobs revoked, unfinished ones recorded cancelled, the run ended and reported."""
    from accelerate_core.names import check_name
    from scheduler.cancel import cancel_run

    check_name(run_id, "RUN")
    settings = state(ctx).settings
    if broker:
        settings = settings.with_overrides(broker_url=broker, source="--broker")
    if not settings.broker_url:
        raise fail("accel cancel ends a fleet run: set ACCEL_BROKER_URL or give --broker (a local run stops on Ctrl-C)")
    done = cancel_run(settings, run_id)
    snap = done.snapshot
    if as_json:
        emit_json({"run_id": run_id, "already_finished": done.already_finished, "cancelled": done.cancelled,
                   "status": wire.encode(snap)})  # fmt: skip
        return
    if done.already_finished:
        out.print(f"run {run_id} had already finished ({snap.status}): nothing to cancel", markup=False)
        return
    counts = ", ".join(f"{n} {s}" for s, n in sorted(snap.by_status.items()))
    out.print(f"run {run_id} cancelled: {counts}", markup=False)
    out.print(f"report: {snap.report_dir}" if snap.report_dir else f"report failed: {snap.report_error}", markup=False)

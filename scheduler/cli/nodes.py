"""``accel workers``: the fleet's live nodes with their hardware, versions, queues and running jobs."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer

from scheduler.cli.common import emit_json, out, state

if TYPE_CHECKING:
    from accelerate_core.config import Settings
    from accelerate_core.contracts import NodeReport


def register(app: typer.Typer) -> None:
    """Add ``workers`` to the root app."""
    app.command("workers")(workers_command)


def workers_command(
    ctx: typer.Context,
    broker: Annotated[str | None, typer.Option("--broker", help="Redis URL (default: the settings')")] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, max=60, help="seconds to wait for the nodes' answers")
    ] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="print the nodes as JSON")] = False,
) -> None:
    """List the live worker nodes (hardware, device, versions, queues, active jobs) and the writer."""
    from scheduler.nodes import live_fleet

    fleet = live_fleet(_settings(ctx, broker), timeout)
    if as_json:
        emit_json(fleet.to_json())
        return
    from scheduler.cli.text import PlainTable

    now = time.time()
    table = PlainTable("node", "hardware", "device", "torch", "transformers", "accel", "queues", "active", "seen")
    for node in fleet.nodes:
        table.add_row(*_row(node, now))
    if fleet.nodes:
        out.print(table)
    from accelerate_core.liveness import describe

    out.print(f"{len(fleet.nodes)} live nodes; {describe(fleet.writer)}", markup=False)
    if fleet.unverified:
        out.print(
            f"{len(fleet.unverified)} more answered without the fleet's signature, left out (another ACCEL_FLEET_KEY, "
            f"an older version, or not a fleet node): {', '.join(fleet.unverified)}",
            markup=False,
        )
    if not fleet.checked:
        out.print("no ACCEL_FLEET_KEY here: the nodes' answers are listed unverified", markup=False)


def _settings(ctx: typer.Context, broker: str | None) -> Settings:
    settings = state(ctx).settings
    return settings.with_overrides(broker_url=broker, source="--broker") if broker else settings


def _row(node: NodeReport, now: float) -> list[str]:
    info = node.info
    versions = info.versions if info is not None else {}
    device = (
        "-" if info is None else f"{info.device_name or '-'}" + (f" ({info.memory_mb} MiB)" if info.memory_mb else "")
    )
    active = ", ".join(job.key.split(":")[1] if job.key.count(":") >= 3 else job.key for job in node.active)
    seen = f"{max(0.0, now - node.at):.1f} s ago" if node.at else "-"
    return [
        node.node,
        info.hardware if info is not None else "-",
        device,
        versions.get("torch", "-"),
        versions.get("transformers", "-"),
        versions.get("accelerate-fleet", "-"),
        ",".join(node.queues) or "-",
        active or "-",
        seen,
    ]

"""``accel plan``, and the ``--hardware`` of planning: kinds, ``kind:model`` targets and ``best``.

``--hardware`` takes ``auto`` (what this machine, or the fleet's live nodes, have), kinds (``cpu,cuda``), one device
model of a kind (``cuda:h100``: a slug, a prefix or a part of one, matched against the models known now) or
``best``: per model the fastest target that passed last time, else a rule (``scheduler.best``). ``accel plan
--explain`` shows per model where it runs and why, without running anything.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from scheduler.cli.common import ModelsOpt, emit_json, fail, out, state

if TYPE_CHECKING:
    from accelerate_core.config import Settings
    from accelerate_core.contracts import EndpointJob, RunPlan
    from scheduler.best import Available, Choice
    from scheduler.plan import PlanOptions

BEST = "best"
"""``--hardware best``."""


def register(app: typer.Typer) -> None:
    """Add ``plan`` to the root app."""
    app.command("plan")(plan_command)


def plan_command(
    ctx: typer.Context,
    models: ModelsOpt = None,
    modality: Annotated[str | None, typer.Option("--modality", help="only this modality (text, vision, ...)")] = None,
    hardware: Annotated[
        str, typer.Option("--hardware", help="auto, kinds (cpu,cuda), a device model (cuda:h100) or best")
    ] = "auto",
    broker: Annotated[str | None, typer.Option("--broker", help="Redis URL: plan for the fleet's live nodes")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="per model: where it runs and why")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the plan (and the reasons) as JSON")] = False,
) -> None:
    """Plan a run without running it: its jobs per hardware and, with --explain, each model's hardware and why."""
    from scheduler.planning_inputs import plan_with_stores

    settings = state(ctx).settings
    if broker:
        settings = settings.with_overrides(broker_url=broker, source="--broker")
    local = not settings.broker_url
    options, choices = plan_options(settings, "plan", models, modality, hardware, (), local=local)
    plan = plan_with_stores(settings, options, local=local, base_dir=Path.cwd())
    reasons = [c.to_dict() for c in choices] or _asked(plan, hardware)
    counts: dict[str, int] = {}
    for job in plan.jobs:
        counts[job.target] = counts.get(job.target, 0) + 1
    if as_json:
        emit_json({"jobs": len(plan.jobs), "by_hardware": counts, **({"explain": reasons} if explain else {})})
        return
    if explain:
        from scheduler.cli.text import PlainTable

        table = PlainTable("model", "hardware", "why")
        for r in reasons:
            table.add_row(r["model"], r["hardware"], r["why"])
        out.print(table)
    shown = ", ".join(f"{n} on {hw}" for hw, n in sorted(counts.items()))
    out.print(f"{len(plan.jobs)} jobs planned: {shown}", markup=False)


def _asked(plan: RunPlan, hardware: str) -> list[dict[str, Any]]:
    """Per model, the targets the run was asked for (``--hardware`` other than ``best``)."""
    targets: dict[str, list[str]] = {}
    for job in plan.jobs:
        targets.setdefault(job.model_type, []).append(job.target)
    why = f"asked for: --hardware {hardware}"
    return [
        {"model": m, "hardware": ",".join(t), "source": "asked", "why": why, "seen": []} for m, t in targets.items()
    ]


def plan_options(
    settings: Settings,
    phase: str,
    models: str | None,
    modality: str | None,
    hardware: str,
    endpoints: tuple[EndpointJob, ...],
    *,
    local: bool,
    axes: Mapping[str, Any] | None = None,
) -> tuple[PlanOptions, list[Choice]]:
    """The run's options with ``--models`` (else the settings' models) and ``--hardware`` resolved; for ``best``,
    each model's :class:`Choice` too."""
    from accelerate_core.selection import models_spec
    from scheduler.plan import PlanOptions, resolve_targets

    spec = hardware.strip()
    selection, where = models_spec(models, settings)
    base = PlanOptions(phase=phase, models=selection, models_where=where, modality=modality, endpoints=endpoints,
                       **(axes or {}))  # fmt: skip
    if spec == BEST:
        from scheduler.best import apply_choices
        from scheduler.planning_inputs import best_choices

        choices = best_choices(settings, base, available(settings, local), base_dir=Path.cwd())
        return apply_choices(base, choices), choices
    if local:
        kinds: Sequence[str] = _local().kinds
    elif spec in ("", "auto"):
        kinds = _live(settings).kinds
    else:
        kinds = ()
    resolved, device_models = resolve_targets(spec, kinds, _known_models(settings, local), local=local)
    return PlanOptions(**{**_fields(base), "hardware": resolved, "device_models": device_models}), []


def _fields(options: PlanOptions) -> dict[str, Any]:
    from dataclasses import fields

    return {f.name: getattr(options, f.name) for f in fields(options)}


def available(settings: Settings, local: bool) -> Available:
    """The targets that can run jobs now: this machine's devices, or the kinds and models live nodes consume."""
    return _local() if local else _live(settings)


def _local() -> Available:
    """This machine's kinds and device models (names from detection: no device is opened)."""
    from accelerate_core.backends import detect
    from accelerate_core.backends.device_model import recorded_model
    from scheduler.best import Available

    found = detect()
    kinds = found.kinds()
    return Available(tuple(kinds), {k: tuple(sorted({recorded_model(d.name) for d in found.of(k)})) for k in kinds})


def _live(settings: Settings, *, required: bool = True) -> Available:
    from accelerate_core.backends.device_model import models_in_queues
    from accelerate_core.constants import HARDWARE_KINDS
    from scheduler.best import Available

    remote = importlib.import_module("scheduler.remote")  # imports celery: only for a fleet
    queues = [q for node in remote.live_queues(settings).values() for q in node]
    kinds = tuple(k for k in HARDWARE_KINDS if settings.queue_for(k) in queues)
    if not kinds and required:
        raise fail(
            "--hardware auto found no live worker on the broker: start one (accel worker --hardware cpu) "
            "or name the kinds to plan for, e.g. --hardware cpu,cuda"
        )
    return Available(kinds, {k: tuple(models_in_queues(settings.queue_for(k), queues)) for k in kinds})


def _known_models(settings: Settings, local: bool) -> Callable[[str], list[str]]:
    """A kind's known device models (asked only for a ``kind:model`` target): this machine's, or the live nodes'."""

    def known(kind: str) -> list[str]:
        found = _local() if local else _live(settings, required=False)
        return list(found.models.get(kind, ()))

    return known

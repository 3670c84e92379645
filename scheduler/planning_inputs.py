"""What the planner needs from the outside world, gathered in one place so that ``scheduler.plan`` stays pure.

:func:`plan_with_stores` reads the catalog index (no torch here; with several ``--seq``, the main inputs it
records), the templates store (syncing the shipped templates into an empty one: the one write of planning), the
results store's past durations (from the file, or through the writer's results service while it holds the file)
and, for a local run, this machine's devices; then it calls :func:`scheduler.plan.plan_run`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from accelerate_core.constants import JOB_KIND_TEST
from scheduler.plan import CatalogEntry, PlanOptions, TemplateLookup, plan_run

if TYPE_CHECKING:
    from accelerate_core.catalog.overrides import Override
    from accelerate_core.config import Settings
    from accelerate_core.contracts import RunPlan, TemplateRef
    from accelerate_core.hardware_history import Seen
    from scheduler.best import Available, Choice

logger = logging.getLogger(__name__)

__all__ = [
    "best_choices",
    "hardware_history",
    "no_sequence_types",
    "past_durations",
    "plan_with_stores",
    "template_lookup",
]


def plan_with_stores(
    settings: Settings,
    options: PlanOptions,
    *,
    local: bool = True,
    base_dir: Path | None = None,
    code_version: str = "",
) -> RunPlan:
    """Gather the planner's inputs (catalog index, templates, past durations, devices) and plan a run."""
    from accelerate_core.backends import detect
    from accelerate_core.catalog.index import load_index

    index = load_index()
    inventory = detect() if local else None
    template_for = template_lookup(settings) if options.kind == JOB_KIND_TEST else None
    history = past_durations(settings, (*options.hardware, *(e.hardware for e in options.endpoints)))
    return plan_run(
        options,
        index,
        settings,
        template_for=template_for,
        past_durations=history,
        code_version=code_version,
        base_dir=base_dir,
        inventory=inventory,
        no_sequence=no_sequence_types(index) if len(set(options.seqs)) > 1 else frozenset(),
    )


def no_sequence_types(index: Sequence[CatalogEntry]) -> frozenset[str]:
    """The model types whose input has no sequence axis, from their modality and the main input the cached index
    records (``accelerate_core.bench.shapes.has_sequence_axis``); a type the exceptions table gives its own inputs
    (a builder, extra inputs, fillers) is taken to have one."""
    from accelerate_core.bench.shapes import has_sequence_axis
    from accelerate_core.catalog.index import load_extras
    from accelerate_core.catalog.overrides import override_for

    extras = load_extras()
    return frozenset(
        e.model_type
        for e in index
        if not has_sequence_axis(e.modality, extras.get(e.model_type, {}).get("main_input_name"))
        and not _own_inputs(override_for(e.model_type))
    )


def _own_inputs(override: Override) -> bool:
    return bool(override.inputs or override.extra_inputs or override.input_args)


def template_lookup(settings: Settings) -> TemplateLookup:
    """A lookup over the latest templates in ``settings.templates_db`` (shipped ones synced into an empty store)."""
    from accelerate_core.errors import TemplateNotFoundError
    from templates_db.model import pick
    from templates_db.store import TemplateStore

    store = TemplateStore(settings.templates_db)
    versions = store.list() if settings.templates_db.exists() else []
    if not versions:
        logger.info("templates store %s is empty: syncing the shipped templates", settings.templates_db)
        store.sync_shipped(collect=False)
        versions = store.list()

    def lookup(entry: CatalogEntry, hardware: str) -> TemplateRef | None:
        try:
            return pick(versions, entry.model_type, entry.modality, entry.family, hardware).to_ref()
        except TemplateNotFoundError:
            return None

    return lookup


def past_durations(settings: Settings, hardware: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{hardware: {model_type: median seconds}}`` from the results store (or the writer's results service
    while it holds the store); empty when neither can be read."""
    from accelerate_core.errors import BrokerError, StoreError
    from scheduler import results

    try:
        return results.past_durations(settings, hardware)
    except (StoreError, BrokerError) as e:
        logger.warning("no past durations (%s): ordering by size estimates", e)
        return {}


def hardware_history(settings: Settings) -> dict[str, list[Seen]]:
    """Each model's latest result per hardware target, fastest first (from the store, or the writer's results
    service while it holds the store); empty when neither can be read (``--hardware best`` falls back to rules)."""
    from accelerate_core.errors import BrokerError, StoreError
    from accelerate_core.hardware_history import group_rows, latest_outcomes
    from scheduler import results

    try:
        return results.read_results(
            settings,
            lambda store: latest_outcomes(store.query),
            lambda api: group_rows(api.json("/api/hardware-history")),
            missing=dict,
        )
    except (StoreError, BrokerError) as e:
        logger.warning("no hardware history (%s): --hardware best follows the rules", e)
        return {}


def best_choices(
    settings: Settings, options: PlanOptions, available: Available, *, base_dir: Path | None = None
) -> list[Choice]:
    """``--hardware best``: each selected model's target (one history query, then one lookup per model)."""
    from accelerate_core.catalog.index import load_index
    from accelerate_core.selection import select_models
    from scheduler.best import choose

    targets = select_models(load_index(), options.models, options.modality, where=options.models_where,
                            base_dir=base_dir)  # fmt: skip
    history = hardware_history(settings)
    return [
        choose(t.source.label, t.entry.param_count if t.entry is not None else None, history, available)
        for t in targets
    ]

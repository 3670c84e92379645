"""What each endpoint and page shows, as plain data read from one :class:`~accelerate_core.service.source.ReadView`.

The JSON API returns these dicts as they are; the pages render the same dicts. Nothing here knows HTTP. The
store's contracts (runs, status snapshots) become JSON here, through :mod:`accelerate_core.wire`: this is the
process edge where they leave.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelerate_core import wire
from accelerate_core.constants import RUN_PLANNED, RUN_RUNNING, STATUS_DONE, STATUS_SKIPPED, TERMINAL_STATUSES
from accelerate_core.errors import ConfigError, UnknownRunError
from accelerate_core.report.stats import pass_rate
from accelerate_core.store import browse

if TYPE_CHECKING:
    from accelerate_core.service.source import ReadView
    from accelerate_core.store import RunListing

LATEST = "latest"
"""A run id that names the newest run."""
LIVE_STATUSES = (RUN_PLANNED, RUN_RUNNING)
"""Run statuses of a run still in progress (its pages refresh themselves)."""


def resolve_run(view: ReadView, run_id: str) -> str:
    """``run_id`` itself when the store has it, the newest run for ``latest``.

    Raises:
        UnknownRunError: no such run (or no run at all).
    """
    if run_id != LATEST:
        return view.store.get_run(run_id).run_id
    found = view.store.latest_run()
    if found is None:
        raise UnknownRunError(f"results store {view.store.path} has no runs yet: start one with `accel run`")
    return found


def status_pass_rate(by_status: Mapping[str, int]) -> float | None:
    """The pass rate of jobs counted by status: done / judged (None before any verdict)."""
    total = sum(by_status.values())
    pending = sum(n for s, n in by_status.items() if s not in TERMINAL_STATUSES)
    return pass_rate(by_status.get(STATUS_DONE, 0), total, by_status.get(STATUS_SKIPPED, 0), pending)


def runs_index(view: ReadView) -> list[dict[str, Any]]:
    """Every run, newest first, with its counts, pass rate and whether it is live."""
    out = []
    for r in view.store.list_runs():
        skipped = r.terminal - r.done - r.failed
        out.append(
            {
                **wire.encode(r.run),
                "jobs": r.jobs,
                "terminal": r.terminal,
                "done": r.done,
                "failed": r.failed,
                "pass_rate": pass_rate(r.done, r.jobs, skipped, r.jobs - r.terminal),
                "live": r.run.status in LIVE_STATUSES,
            }
        )
    return out


_LISTING_KEYS = ("jobs", "terminal", "done", "failed", "pass_rate", "live")


def listing_of(item: Mapping[str, Any]) -> RunListing:
    """A :class:`~accelerate_core.store.RunListing` back from one item of :func:`runs_index` (the CLI's side).

    Raises:
        ContractError: the item is not one.
    """
    from accelerate_core.contracts import RunRecord
    from accelerate_core.errors import ContractError
    from accelerate_core.store import RunListing

    try:
        counts = [int(item[k]) for k in _LISTING_KEYS[:4]]
    except (KeyError, TypeError, ValueError) as e:
        raise ContractError(f"a run of the results service has no job counts ({e})") from e
    run = wire.decode(RunRecord, {k: v for k, v in item.items() if k not in _LISTING_KEYS})
    return RunListing(run, *counts)


def run_detail(view: ReadView, run_id: str) -> dict[str, Any]:
    """One run: its row, its progress (counts by status and hardware, failures, time left) and pass rate."""
    rid = resolve_run(view, run_id)
    run = view.store.get_run(rid)
    progress = view.store.run_progress(rid)
    return {
        "run": wire.encode(run),
        "progress": wire.encode(progress),
        "pass_rate": status_pass_rate(progress.by_status),
        "live": run.status in LIVE_STATUSES,
        "previous_run": view.store.previous_run(run.phase, rid),
    }


@dataclass(frozen=True, slots=True)
class ResultsQuery:
    """Filters and page of a run's results; a filter left None is not applied."""

    statuses: tuple[str, ...] | None = None
    hardware: tuple[str, ...] | None = None
    modalities: tuple[str, ...] | None = None
    models: tuple[str, ...] | None = None
    limit: int = 100
    offset: int = 0

    @classmethod
    def from_args(cls, arg: Callable[[str], list[str]]) -> ResultsQuery:
        """Build from query arguments: ``arg(name)`` gives every value of ``name`` (comma lists split).

        Raises:
            ConfigError: ``limit`` or ``offset`` is not an integer.
        """

        def values(name: str) -> tuple[str, ...] | None:
            found = tuple(v.strip() for raw in arg(name) for v in raw.split(",") if v.strip())
            return found or None

        return cls(
            statuses=values("status"),
            hardware=values("hardware"),
            modalities=values("modality"),
            models=values("model"),
            limit=integer_arg("limit", arg("limit"), 100),
            offset=integer_arg("offset", arg("offset"), 0),
        )


ARG_INT_MAX = 10**15 - 1
"""The largest magnitude a query argument's integer may have (15 digits: a limit, an offset, a count of runs)."""


def integer_arg(name: str, given: list[str], default: int) -> int:
    """The last value of a query argument as an integer, ``default`` when absent.

    Raises:
        ConfigError: it is not an integer, or not within ``ARG_INT_MAX`` of 0.
    """
    if not given or not given[-1].strip():
        return default
    try:
        value = int(given[-1])
    except ValueError as e:
        raise ConfigError(f"{name}={given[-1]!r} is not an integer") from e
    if not -ARG_INT_MAX <= value <= ARG_INT_MAX:  # DuckDB's BIGINT would overflow: a 500, not a 400
        raise ConfigError(f"{name}={given[-1][:32]!r} is out of range: give an integer of at most 15 digits")
    return value


def results(view: ReadView, run_id: str, query: ResultsQuery) -> dict[str, Any]:
    """One page of a run's results, filtered; each item carries its model's modality."""
    rid = resolve_run(view, run_id)
    modality = _modalities(view, rid)
    models = query.models
    if query.modalities is not None:
        of_modality = tuple(m for m, mod in modality.items() if mod in query.modalities)
        models = of_modality if models is None else tuple(m for m in models if m in of_modality)
    page = browse.run_results(
        view.conn, rid, statuses=query.statuses, hardware=query.hardware, models=models,
        limit=query.limit, offset=query.offset,
    )  # fmt: skip
    for item in page["items"]:
        item["modality"] = modality.get(item["model_type"])
    page["modalities"] = sorted(set(modality.values()))
    return page


def _modalities(view: ReadView, run_id: str) -> dict[str, str]:
    from accelerate_core.report.modality import resolve_modalities

    models = browse.run_models(view.conn, run_id)
    params = view.store.get_run(run_id).params
    return resolve_modalities(models, params.modalities, store_path=view.store.path)


def history(
    view: ReadView, model_type: str, *, hardware: Sequence[str] | None = None, runs: int = 50
) -> dict[str, Any]:
    """A model across its latest runs (oldest first), one point per run and hardware kind.

    Raises:
        UnknownModelError: the store has no job of that model type.
    """
    from accelerate_core.errors import UnknownModelError

    points = browse.model_history(view.conn, model_type, hardware=hardware, runs=runs)
    if not points and hardware is None:
        raise UnknownModelError(f"model {model_type!r} is in no run of the results store: check the name")
    return {"model_type": model_type, "hardware": sorted({p["hardware"] for p in points}), "points": points}


def compare_runs(
    view: ReadView, run_id: str, baseline: str | None, *, threshold: float | None = None
) -> dict[str, Any]:
    """The run against ``baseline`` (default: the previous run of its phase), as the report compares them.

    Raises:
        ConfigError: no baseline is given and the run has no earlier run of its phase, or it is the run itself.
    """
    from accelerate_core.report.collect import collect_run
    from accelerate_core.report.compare import DEFAULT_THRESHOLD
    from accelerate_core.report.compare import compare_runs as compare
    from accelerate_core.report.model import plain

    rid = resolve_run(view, run_id)
    current = collect_run(view.store, rid)
    base_id = resolve_run(view, baseline) if baseline else view.store.previous_run(current.run.phase, rid)
    if base_id is None:
        raise ConfigError(f"run {rid} has no earlier run of phase {current.run.phase!r}: give ?baseline=RUN")
    if base_id == rid:
        raise ConfigError(f"the baseline of run {rid} cannot be the run itself: pick an earlier run")
    chosen = DEFAULT_THRESHOLD if threshold is None else threshold
    comparison = compare(view.store, current, collect_run(view.store, base_id), threshold=chosen)
    return {"run_id": rid, **plain(comparison)}


def hardware(view: ReadView, run_id: str, a: str | None = None, b: str | None = None) -> dict[str, Any]:
    """Every hardware kind of a run side by side per model; with ``a`` and ``b``, ``b`` against ``a``."""
    matrix = browse.hardware_matrix(view.conn, resolve_run(view, run_id))
    if a is None and b is None:
        return matrix
    if a is None or b is None:
        raise ConfigError("compare two hardware kinds: give both ?a=KIND&b=KIND (or neither for all side by side)")
    return browse.compare_hardware(matrix, a, b)


def report_document(
    view: ReadView, run_id: str, fmt: str, reports_dir: Path, *, baseline: str | None = None,
    threshold: float | None = None,
) -> tuple[str, str]:  # fmt: skip
    """The run's report as ``fmt`` text and where it came from (``"file"`` or ``"built"``).

    A finished run's report file in ``reports_dir`` is served as it is when it is newer than the run's last
    change and no other ``baseline`` or ``threshold`` than the file's defaults is asked; anything else (a live
    run, no file, an older file, other options) is built from the store now.
    """
    from accelerate_core.report import DEFAULT_THRESHOLD, build_report, parse_formats, render_report

    chosen = parse_formats(fmt)[0]
    rid = resolve_run(view, run_id)
    run = view.store.get_run(rid)
    base = resolve_run(view, baseline) if baseline else None
    given = threshold if threshold is not None else DEFAULT_THRESHOLD
    saved = _saved_report(reports_dir, rid, chosen) if base is None and given == DEFAULT_THRESHOLD else None
    if saved is not None and run.status not in LIVE_STATUSES and saved.stat().st_mtime >= run.updated_at:
        return saved.read_text(encoding="utf-8"), "file"
    return render_report(build_report(view.store, rid, base, threshold=given), chosen), "built"


def export_document(view: ReadView, run_id: str, table: str, fmt: str) -> bytes:
    """One table of the run's export (``accel runs export``) as the bytes of a ``fmt`` file."""
    import tempfile

    from accelerate_core.store.export import export_table

    rid = resolve_run(view, run_id)
    with tempfile.TemporaryDirectory(prefix="accel-export-") as tmp:
        return export_table(view.conn, rid, table, Path(tmp) / f"{table}.{fmt}", fmt).read_bytes()


def past_durations(view: ReadView, hardware: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{hardware: {model_type: median seconds}}`` over every run (the planner's longest-first order)."""
    return {hw: view.store.past_durations(hw) for hw in hardware}


def hardware_history(view: ReadView) -> list[list[Any]]:
    """Each model's latest verdict per hardware target, fastest first (``accelerate_core.hardware_history``)."""
    from accelerate_core.hardware_history import as_rows, latest_outcomes

    return as_rows(latest_outcomes(view.store.query))


def _saved_report(reports_dir: Path, run_id: str, fmt: str) -> Path | None:
    root = reports_dir.resolve()
    path = (root / run_id / f"report.{fmt}").resolve()
    return path if path.is_relative_to(root) and path.is_file() else None

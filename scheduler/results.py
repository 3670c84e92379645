"""Where the CLI reads results: the local results DB, or the results service of the writer that holds it.

DuckDB lets no other process open a file that one holds read-write, and on a fleet the writer always does
(and the machine running ``accel`` may have no copy at all). So each reading command has one function
here that picks the source and returns the same typed data from either; the command formats it one way:

- ``results_url`` set (``ACCEL_RESULTS_URL``): always the service at that URL;
- else the local DB when it can be opened;
- else (held by a writer, or not on this machine) the service the live writer advertises in its heartbeat
  (:func:`accelerate_core.liveness.read_writer`);
- else the local DB's own error (held by process N, or missing).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from accelerate_core import wire
from accelerate_core.errors import StoreLockedError, UnknownRunError

if TYPE_CHECKING:
    from accelerate_core.config import Settings
    from accelerate_core.contracts import RunRecord, StatusSnapshot
    from accelerate_core.service.client import ResultsClient
    from accelerate_core.store import ResultsStore, RunListing

logger = logging.getLogger(__name__)
T = TypeVar("T")

LATEST = "latest"
"""A run id that names the newest run."""


def results_api(settings: Settings) -> ResultsClient | None:
    """The results service to read through: ``results_url``, else the one the live writer advertises; or None."""
    from accelerate_core.service.client import ResultsClient

    url = settings.results_url or advertised_url(settings)
    return ResultsClient(url, settings.serve_token) if url else None


def advertised_url(settings: Settings) -> str | None:
    """The URL of the results service the fleet's live writer advertises in its heartbeat (None: none, no broker).

    Raises:
        BrokerError: the broker is configured but cannot be read.
    """
    if not settings.broker_url:
        return None
    import redis

    from accelerate_core import broker, liveness

    client = broker.connect(settings.broker_url)
    try:
        beat = liveness.read_writer(client)
    except redis.RedisError as e:
        raise broker.broker_error(settings.broker_url, e) from e
    finally:
        client.close()
    return beat.api_url if beat is not None else None


def page_url(settings: Settings, run_id: str) -> str | None:
    """The web page of a run on the known results service (None when none is known, or the broker is down)."""
    from accelerate_core.errors import BrokerError

    try:
        api = results_api(settings)
    except BrokerError as e:
        logger.info("no results page for run %s: %s", run_id, e)
        return None
    return api.page_url(run_id) if api is not None else None


def read_results(
    settings: Settings,
    local: Callable[[ResultsStore], T],
    remote: Callable[[ResultsClient], T],
    *,
    missing: Callable[[], T] | None = None,
) -> T:
    """``local(store)`` over the local DB, or ``remote(client)`` over the results service (see the module doc).

    Args:
        settings: where the DB and the service are.
        local: reads the DB opened read-only.
        remote: reads the same through the service.
        missing: the answer when there is no DB here and no service either (None: the DB's error).

    Raises:
        StoreLockedError: the DB is held and no service is advertised.
        StoreError: the DB is missing (and ``missing`` is None), or the service cannot be reached.
    """
    from accelerate_core.store import ResultsStore

    if settings.results_url:
        return remote(_api(settings))
    if not settings.results_db.is_file():
        api = results_api(settings)
        if api is not None:
            return remote(api)
        if missing is not None:
            return missing()
    try:
        with ResultsStore.open(settings.results_db, read_only=True) as store:
            return local(store)
    except StoreLockedError as locked:
        api = results_api(settings)
        if api is None:
            raise StoreLockedError(f"{locked} (no writer advertises a results service to read through)") from locked
        logger.info("%s: reading through %s", locked, api.url)
    return remote(api)


def _api(settings: Settings) -> ResultsClient:
    api = results_api(settings)
    assert api is not None  # results_url is set
    return api


def resolve_run(store: ResultsStore, run_id: str) -> str:
    """``run_id`` itself when the store has it, the newest run for ``latest``.

    Raises:
        UnknownRunError: no such run (or no run at all).
    """
    if run_id != LATEST:
        return store.get_run(run_id).run_id
    found = store.latest_run()
    if found is None:
        raise UnknownRunError(f"the results store {store.path} has no runs yet: start one with `accel run`")
    return found


def _run_path(run_id: str) -> str:
    from urllib.parse import quote

    return f"/api/runs/{quote(run_id, safe='')}"


def run_listings(settings: Settings) -> list[RunListing]:
    """Every run, newest first, with its job counts (``accel runs list``); none when there is no store."""
    from accelerate_core.service.views import listing_of

    return read_results(
        settings,
        lambda store: store.list_runs(),
        lambda api: [listing_of(item) for item in api.json("/api/runs")["runs"]],
        missing=list,
    )


def run_with_progress(settings: Settings, run_id: str) -> tuple[RunRecord, StatusSnapshot]:
    """One run and its progress (``accel runs show``)."""
    from accelerate_core.contracts import RunRecord, StatusSnapshot

    def local(store: ResultsStore) -> tuple[RunRecord, StatusSnapshot]:
        rid = resolve_run(store, run_id)
        return store.get_run(rid), store.run_progress(rid)

    def remote(api: ResultsClient) -> tuple[RunRecord, StatusSnapshot]:
        found = api.json(_run_path(run_id))
        return wire.decode(RunRecord, found["run"]), wire.decode(StatusSnapshot, found["progress"])

    return read_results(settings, local, remote)


@dataclass(frozen=True, slots=True)
class ReportDocuments:
    """A run's report rendered in the formats asked for, and its data (the JSON report's content)."""

    run_id: str
    texts: dict[str, str]
    data: dict[str, Any]


def report_documents(
    settings: Settings, run_id: str, baseline: str | None, formats: Sequence[str], threshold: float
) -> ReportDocuments:
    """The report of ``run_id`` against ``baseline`` rendered as ``formats`` (``accel report``)."""
    from accelerate_core.report import build_report, render_report

    def local(store: ResultsStore) -> ReportDocuments:
        rid = resolve_run(store, run_id)
        built = build_report(store, rid, resolve_run(store, baseline) if baseline else None, threshold=threshold)
        return ReportDocuments(rid, {f: render_report(built, f) for f in formats}, built.to_dict())

    def remote(api: ResultsClient) -> ReportDocuments:
        def fetch(rid: str, fmt: str) -> str:
            return api.text(f"/runs/{rid}/report.{fmt}", baseline=baseline, threshold=repr(threshold))

        as_json = fetch(run_id, "json")  # first: it names the run 'latest' stands for
        data = json.loads(as_json)
        rid = str(data["run"]["run_id"])
        return ReportDocuments(rid, {f: as_json if f == "json" else fetch(rid, f) for f in formats}, data)

    return read_results(settings, local, remote)


def export_files(settings: Settings, run_id: str, fmt: str, out_dir: Callable[[str], Path]) -> dict[str, Path]:
    """Export the run's rows as ``fmt`` files in ``out_dir(run id)`` (``accel runs export``); the files by table."""
    from accelerate_core.store.export import export_tables, save_table

    def local(store: ResultsStore) -> dict[str, Path]:
        rid = resolve_run(store, run_id)
        return store.export_run(rid, out_dir(rid), fmt)

    def remote(api: ResultsClient) -> dict[str, Path]:
        rid = str(api.json(_run_path(run_id))["run"]["run_id"])
        folder = out_dir(rid)
        folder.mkdir(parents=True, exist_ok=True)
        written: dict[str, Path] = {}
        for table in export_tables(fmt):
            written |= save_table(table, fmt, api.content(f"{_run_path(rid)}/export/{table}.{fmt}"), folder)
        return written

    return read_results(settings, local, remote)


def past_durations(settings: Settings, hardware: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{hardware: {model_type: median seconds}}`` over every run (the planner's order); empty when there is none."""

    def remote(api: ResultsClient) -> dict[str, dict[str, float]]:
        found = api.json("/api/durations", hardware=",".join(hardware))
        return {str(hw): {str(m): float(s) for m, s in by_model.items()} for hw, by_model in found.items()}

    return read_results(settings, lambda store: {hw: store.past_durations(hw) for hw in hardware}, remote, missing=dict)

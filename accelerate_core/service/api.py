"""The JSON API, the report documents and ``/metrics``: thin handlers over :mod:`accelerate_core.service.views`."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any

from accelerate_core.errors import ConfigError
from accelerate_core.service import views
from accelerate_core.service.cache import Answer
from accelerate_core.service.metrics import CONTENT_TYPE, WriterProbe, metrics_text
from accelerate_core.service.source import ReadView
from accelerate_core.service.web import CSP, BaseHandler, Route, as_json
from accelerate_core.store import browse


def _float(name: str, raw: str | None) -> float | None:
    if raw is None or not raw.strip():
        return None
    try:
        return float(raw)
    except ValueError as e:
        raise ConfigError(f"{name}={raw!r} is not a number") from e


class ApiIndex(BaseHandler):
    """``GET /api``: every endpoint, with what it returns."""

    def get(self) -> None:
        """List the routes of the API and the pages."""
        from accelerate_core.service.pages import PAGES

        self.send_json({"endpoints": [{"path": p, "returns": doc} for p, _, doc in ROUTES + PAGES]})


def _runs(view: ReadView) -> dict[str, Any]:
    return {"runs": views.runs_index(view)}


class Runs(BaseHandler):
    """``GET /api/runs``."""

    async def get(self) -> None:
        """Every run, newest first."""
        await self.respond(as_json, _runs)


class Run(BaseHandler):
    """``GET /api/runs/RUN``."""

    async def get(self, run_id: str) -> None:
        """One run with its progress."""
        await self.respond(as_json, views.run_detail, run_id)


class Results(BaseHandler):
    """``GET /api/runs/RUN/results``."""

    async def get(self, run_id: str) -> None:
        """A filtered page of the run's results."""
        query = self.parse(views.ResultsQuery.from_args, self.arg_list)
        await self.respond(as_json, views.results, run_id, query)


class Compare(BaseHandler):
    """``GET /api/runs/RUN/compare``."""

    async def get(self, run_id: str) -> None:
        """The run against a baseline run."""
        threshold = self.parse(_float, "threshold", self.get_query_argument("threshold", None))
        baseline = self.get_query_argument("baseline", None) or None
        await self.respond(as_json, views.compare_runs, run_id, baseline, threshold=threshold)


class Hardware(BaseHandler):
    """``GET /api/runs/RUN/hardware``."""

    async def get(self, run_id: str) -> None:
        """Every hardware kind side by side, or ``?a=&b=`` against each other."""
        a = self.get_query_argument("a", None) or None
        b = self.get_query_argument("b", None) or None
        await self.respond(as_json, views.hardware, run_id, a, b)


class History(BaseHandler):
    """``GET /api/models/MODEL/history``."""

    async def get(self, model_type: str) -> None:
        """The model across its latest runs."""
        hardware = self.parse(views.ResultsQuery.from_args, self.arg_list).hardware
        runs = self.parse(views.integer_arg, "runs", self.arg_list("runs"), 50)
        await self.respond(as_json, views.history, model_type, hardware=hardware, runs=runs)


_CONTENT_TYPES = {
    "md": "text/markdown; charset=utf-8",
    "html": "text/html; charset=utf-8",
    "json": "application/json; charset=utf-8",
}
_STYLE = re.compile(r"<style>(.*?)</style>", re.S)


def report_csp(page: str) -> str:
    """The CSP of a report page: :data:`CSP` with ``style-src`` the hashes of the page's own style blocks."""
    hashes = [
        f"'sha256-{base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()}'"
        for block in _STYLE.findall(page)
    ]
    return CSP.replace("style-src 'self'", "style-src " + (" ".join(hashes) or "'none'"))


def _report(
    view: ReadView, run_id: str, fmt: str, reports_dir: Path, baseline: str | None, threshold: float | None
) -> Answer:
    text, origin = views.report_document(view, run_id, fmt, reports_dir, baseline=baseline, threshold=threshold)
    headers = [("X-Accel-Report", origin)]
    if fmt == "html":
        headers.append(("Content-Security-Policy", report_csp(text)))
    return Answer(text.encode(), _CONTENT_TYPES[fmt], tuple(headers))


class Report(BaseHandler):
    """``GET /runs/RUN/report.FMT``: the report document (from its file when fresh, else built now)."""

    async def get(self, run_id: str, fmt: str) -> None:
        """The report of the run as Markdown, HTML or JSON (``?baseline=RUN&threshold=0.1`` as ``accel report``)."""
        threshold = self.parse(_float, "threshold", self.get_query_argument("threshold", None))
        baseline = self.get_query_argument("baseline", None) or None
        await self.respond(_report, run_id, fmt, self.ctx.config.reports_dir, baseline, threshold)


EXPORT_TYPES = {
    "parquet": "application/vnd.apache.parquet",
    "csv": "text/csv; charset=utf-8",
    "optimum": "application/json",
}
"""The content type of each export format."""


def _export(view: ReadView, run_id: str, table: str, fmt: str) -> Answer:
    return Answer(views.export_document(view, run_id, table, fmt), EXPORT_TYPES[fmt])


class Export(BaseHandler):
    """``GET /api/runs/RUN/export/TABLE.FMT``: one table of the run's export, as ``accel runs export`` writes it."""

    CACHED = False  # files can be large: never kept in the answer cache

    async def get(self, run_id: str, table: str, fmt: str) -> None:
        """The table's rows of the run as a Parquet or CSV file, or the optimum-benchmark reports as JSON."""
        await self.respond(_export, run_id, table, fmt)


class Durations(BaseHandler):
    """``GET /api/durations?hardware=cpu,cuda``: past durations for the planner."""

    async def get(self) -> None:
        """Median seconds of each model's finished jobs per hardware kind, over every run."""
        hardware = self.parse(views.ResultsQuery.from_args, self.arg_list).hardware or ()
        await self.respond(as_json, views.past_durations, hardware)


class HardwareHistory(BaseHandler):
    """``GET /api/hardware-history``: each model's latest result per hardware target (``--hardware best``)."""

    async def get(self) -> None:
        """Rows of model, kind, device model, status, p50 seconds and run, each model's fastest first."""
        await self.respond(as_json, views.hardware_history)


def _scrape(view: ReadView, latest: int, unfinished: int, writer: WriterProbe | None) -> Answer:
    counts = browse.job_counts(view.conn, latest=latest, unfinished_max=unfinished)
    return Answer(metrics_text(counts, writer() if writer is not None else None), CONTENT_TYPE)


class Metrics(BaseHandler):
    """``GET /metrics``: Prometheus text (behind the token like everything else)."""

    CACHED = False  # the writer's backlog and lag move between commits

    async def get(self) -> None:
        """Jobs by run, hardware and status; pass rates; the writer's backlog and lag when hosted by it."""
        config = self.ctx.config
        await self.respond(_scrape, config.metrics_runs, config.metrics_unfinished, self.ctx.hooks.writer)


ROUTES: list[Route] = [
    ("/api", ApiIndex, "this list"),
    ("/api/runs", Runs, "every run, newest first, with job counts and pass rate"),
    ("/api/runs/{run}", Run, "one run ('latest' works) with its progress by status and hardware and failures"),
    (
        "/api/runs/{run}/results",
        Results,
        "the run's results; ?status=&hardware=&modality=&model= (comma lists), ?limit=&offset=",
    ),
    ("/api/runs/{run}/compare", Compare, "the run against ?baseline=RUN (default: previous run of its phase)"),
    ("/api/runs/{run}/hardware", Hardware, "every hardware kind side by side per model; ?a=cpu&b=cuda: b vs a"),
    ("/api/models/{model}/history", History, "the model across its latest ?runs=50 runs, oldest first"),
    ("/api/runs/{run}/export/{table}.{export}", Export, "a table as csv or parquet, or benchmark_reports.optimum"),
    ("/api/durations", Durations, "median past seconds of each model per ?hardware=cpu,cuda (planning order)"),
    ("/api/hardware-history", HardwareHistory, "each model's latest result per kind and device model (best hardware)"),
    ("/runs/{run}/report.{fmt}", Report, "the run's report as Markdown, HTML or JSON; ?baseline=RUN&threshold="),
    ("/metrics", Metrics, "Prometheus metrics of recent and unfinished runs"),
]
"""The API's routes."""

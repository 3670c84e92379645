"""The web pages: run index, run page, model history, hardware side by side; rendered on the server.

Templates are jinja2 with autoescape on for every template, so text from the store (model names, error
messages, hosts) is always escaped; the one thing marked safe is SVG drawn by
:mod:`accelerate_core.report.svg`, which escapes its own labels. Pages carry no script; those of a live
run ask the browser to reload them with a ``Refresh`` header (no JavaScript, allowed by the CSP).
"""

from __future__ import annotations

import functools
from collections import Counter
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from markupsafe import Markup

from accelerate_core.report import svg
from accelerate_core.report.tables import fmt_pct, fmt_s, fmt_time
from accelerate_core.service import views
from accelerate_core.service.cache import Answer
from accelerate_core.service.source import ReadView
from accelerate_core.service.web import HTML_TYPE, BaseHandler, Route

BAR_W = 160
"""Width in pixels of a run's progress bar on the index."""


def _url_part(value: Any) -> str:
    return quote(str(value), safe="")


@functools.cache
def environment() -> jinja2.Environment:
    """The pages' jinja2 environment: package templates, autoescape everywhere, undefined names fail."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("accelerate_core.service", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(seconds=fmt_s, pct=fmt_pct, when=fmt_time, part=_url_part)
    return env


@functools.cache
def stylesheet() -> bytes:
    """The pages' one stylesheet (served at /static/accel.css)."""
    return resources.files("accelerate_core.service").joinpath("static/accel.css").read_bytes()


def render(template: str, **context: Any) -> str:
    """Render one page template."""
    return environment().get_template(template).render(**context)


def _bar(done: int, failed: int, jobs: int) -> dict[str, float]:
    scale = BAR_W / jobs if jobs else 0.0
    return {"done": done * scale, "failed": failed * scale, "width": BAR_W}


def page(html: str, *, refresh_s: int | None = None) -> Answer:
    """A page answer; with ``refresh_s`` (a live run's page) the browser reloads it that often."""
    headers = (("Refresh", str(refresh_s)),) if refresh_s else ()
    return Answer(html.encode(), HTML_TYPE, headers)


def index_page(view: ReadView, refresh_s: int) -> Answer:
    """The run index, reloading itself while a run is live."""
    runs = views.runs_index(view)
    for run in runs:
        run["bar"] = _bar(run["done"], run["failed"], run["jobs"])
    live = any(r["live"] for r in runs)
    return page(render("index.html", title="Runs", runs=runs, live=live), refresh_s=refresh_s if live else None)


def run_page(view: ReadView, run_id: str, query: views.ResultsQuery, refresh_s: int) -> Answer:
    """One run: progress, failures so far, links, and a filtered page of its results."""
    detail = views.run_detail(view, run_id)
    rid = detail["run"]["run_id"]
    results = views.results(view, rid, query)
    filters = {k: ",".join(v) for k, v in
               (("status", query.statuses), ("hardware", query.hardware), ("modality", query.modalities),
                ("model", query.models)) if v}  # fmt: skip
    nav = {
        "prev": _page_link(filters, query.limit, query.offset - query.limit) if query.offset > 0 else None,
        "next": _page_link(filters, query.limit, query.offset + query.limit)
        if query.offset + query.limit < results["total"]
        else None,
    }
    html = render("run.html", title=f"Run {rid}", d=detail, page=results, filters=filters, nav=nav)
    return page(html, refresh_s=refresh_s if detail["live"] else None)


def _page_link(filters: dict[str, str], limit: int, offset: int) -> str:
    return "?" + urlencode({**filters, "limit": limit, "offset": max(offset, 0)})


def _plotted_shape(points: list[dict[str, Any]]) -> tuple[int, int] | None:
    """The shape most points have (ties: the smallest), whose p50 the history plot follows."""
    seen = Counter((s["batch_size"], s["seq_len"]) for p in points for s in p["shapes"] if s["p50_s"] is not None)
    if not seen:
        return None
    return min(seen, key=lambda shape: (-seen[shape], shape))


def history_plot(data: dict[str, Any]) -> str:
    """The history plot: p50 at one shape over runs, a series per hardware kind, marks where things changed."""
    points = data["points"]
    runs = list(dict.fromkeys(p["run_id"] for p in points))
    at = {r: i for i, r in enumerate(runs)}
    shape = _plotted_shape(points)
    series = []
    for k, hw in enumerate(data["hardware"]):
        pts: list[svg.TimePoint] = []
        for p in (p for p in points if p["hardware"] == hw):
            value = next((s["p50_s"] for s in p["shapes"] if (s["batch_size"], s["seq_len"]) == shape), None)
            pts.append((at[p["run_id"]], value, _tip(p, value)))
        series.append((hw, svg.SERIES_COLOURS[k % len(svg.SERIES_COLOURS)], pts))
    marks = [(at[p["run_id"]], f"{p['hardware']}: " + "; ".join(_change(c) for c in p["changes"]))
             for p in points if p["changes"]]  # fmt: skip
    where = f" at batch {shape[0]} x seq {shape[1]}" if shape else ""
    return svg.timeline(f"p50 latency of {data['model_type']}{where}", runs, series, marks, "p50 (s)")


def _tip(p: dict[str, Any], value: float | None) -> str:
    shown = fmt_s(value) if value is not None else p["status"]
    return f"{p['run_id']} {p['hardware']}: {shown} on {p['device_name'] or '?'}"


def _change(c: dict[str, Any]) -> str:
    return f"{c['what']} {c['from'] or '-'} -> {c['to'] or '-'}"


def history_page(view: ReadView, model_type: str) -> Answer:
    """A model's history: the plot and a row per run and hardware kind."""
    data = views.history(view, model_type)
    plot = Markup(history_plot(data))  # drawn by svg, which escapes every label
    return page(render("history.html", title=f"History of {model_type}", data=data, plot=plot, change=_change))


def hardware_page(view: ReadView, run_id: str) -> Answer:
    """Every hardware kind of a run side by side, per model, with the speed-up over the first (CPU)."""
    matrix = views.hardware(view, run_id)
    base = matrix["hardware"][0] if matrix["hardware"] else None
    for m in matrix["models"]:
        ref = m["cells"].get(base, {}).get("p50_s") if base else None
        for cell in m["cells"].values():
            cell["speedup"] = ref / cell["p50_s"] if ref and cell["p50_s"] else None
    return page(render("hardware.html", title=f"Hardware of run {matrix['run_id']}", m=matrix, base=base))


class PageHandler(BaseHandler):
    """A page: HTML answers, HTML errors."""

    def render_error(self, status_code: int, message: str) -> None:
        """An error page (escaped like everything else)."""
        self.set_header("Content-Type", HTML_TYPE)
        self.finish(render("error.html", title=f"Error {status_code}", status=status_code, message=message))


class IndexPage(PageHandler):
    """``GET /``."""

    async def get(self) -> None:
        """The run index."""
        await self.respond(index_page, self.ctx.config.refresh_s)


class RunPage(PageHandler):
    """``GET /runs/RUN``."""

    async def get(self, run_id: str) -> None:
        """The run page."""
        query = self.parse(views.ResultsQuery.from_args, self.arg_list)
        await self.respond(run_page, run_id, query, self.ctx.config.refresh_s)


class HistoryPage(PageHandler):
    """``GET /models/MODEL``."""

    async def get(self, model_type: str) -> None:
        """A model's history page."""
        await self.respond(history_page, model_type)


class HardwarePage(PageHandler):
    """``GET /runs/RUN/hardware``."""

    async def get(self, run_id: str) -> None:
        """The hardware comparison page."""
        await self.respond(hardware_page, run_id)


class Stylesheet(BaseHandler):
    """``GET /static/accel.css``."""

    def get(self) -> None:
        """The stylesheet."""
        self.set_header("Content-Type", "text/css; charset=utf-8")
        self.set_header("Cache-Control", "max-age=3600")
        self.finish(stylesheet())


PAGES: list[Route] = [
    ("/", IndexPage, "page: every run, live ones with status and pass rate (reloads itself while one runs)"),
    ("/runs/{run}", RunPage, "page: one run, its progress, failures and results (filters, pages)"),
    ("/runs/{run}/hardware", HardwarePage, "page: every hardware kind of the run side by side per model"),
    ("/models/{model}", HistoryPage, "page: the model's p50 over runs, device and version changes marked"),
    ("/static/accel.css", Stylesheet, "the pages' stylesheet"),
]
"""The pages' routes (same shape as ``api.ROUTES``)."""

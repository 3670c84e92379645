"""The results pages in headless Chromium, served by a real service: plots, escaping, no script, readable."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from accelerate_core.report.svg import SERIES_COLOURS
from tests.support.browser import dump_dom, pixels_near, screenshot
from tests.support.results_service import RICH, RUNS, XSS, build_store, running_service

pytestmark = pytest.mark.browser

MARK_COLOUR = "#e08000"
DONE_GREEN = "#2e7d32"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("pages")
    with running_service(build_store(root / "results.duckdb", live_last=True)) as service:
        yield service.url, root


def test_history_plot_has_one_point_per_run_and_marks_the_changes(site: tuple[str, Path]) -> None:
    # Given three runs of bert on cpu and cuda; the third with torch (both) and the device (cuda) changed
    url, root = site
    # When Chromium renders bert's history page
    dom = dump_dom(f"{url}/models/bert", root / "profile")
    # Then the plot has exactly three points per hardware kind, one per run, in run order
    for hw in ("cpu", "cuda"):
        runs = re.findall(rf'<circle data-x="([^"]+)" data-series="{hw}"', dom)
        assert runs == list(RUNS), (hw, runs)
    # And one dashed mark per hardware kind where something changed, saying what
    marks = re.findall(r'<line data-mark="([^"]+)"', dom)
    assert marks == ["cpu: torch 2.12.0 -&gt; 2.13.0",
                     "cuda: device Synthetic CUDA -&gt; Synthetic H100; torch 2.12.0 -&gt; 2.13.0"]  # fmt: skip
    # And the screenshot shows both series and the marks in their colours
    img = screenshot(f"{url}/models/bert", root / "history.png", root / "profile", "1280,1000")
    assert pixels_near(img, SERIES_COLOURS[0]) > 150 and pixels_near(img, SERIES_COLOURS[1]) > 150
    assert pixels_near(img, MARK_COLOUR, tol=30) > 60


def test_markup_from_the_store_stays_text_on_every_page(site: tuple[str, Path]) -> None:
    # Given a model named <script>alert(1)</script> (a store from before names were checked), an error
    # message holding it and rich markup, and a device name holding it
    url, root = site
    doms = {}
    for path in (f"/runs/{RUNS[1]}", f"/models/{quote(XSS, safe='')}", f"/runs/{RUNS[1]}/hardware"):
        # When Chromium parses each page
        doms[path] = dump_dom(url + path, root / "profile")
        # Then no script element exists; the name is shown as text
        assert "<script" not in doms[path].lower(), path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in doms[path], path
    # And the error message (failures so far, results) and a device name keep their markup as text too
    assert doms[f"/runs/{RUNS[1]}"].count(f"{RICH} &lt;script&gt;alert(1)&lt;/script&gt; failed") == 2
    assert "&lt;script&gt;alert(1)&lt;/script&gt; GPU" in doms[f"/runs/{RUNS[1]}/hardware"]


def test_run_index_shows_progress_bars_of_live_and_finished_runs(site: tuple[str, Path]) -> None:
    url, root = site
    img = screenshot(url + "/", root / "index.png", root / "profile", "1280,1000")
    assert len(img.getcolors(maxcolors=1 << 20) or []) > 30, "the screenshot is (nearly) blank"
    assert pixels_near(img, DONE_GREEN) > 3 * 12 * 50  # three bars, 12 px high, the done parts
    assert pixels_near(img, "#c62828") > 2 * 12 * 10  # the failed parts of the finished runs

"""The HTML report opens in headless Chromium and its inline SVG plots render (no network, no JS)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from accelerate_core.report import build_report, write_report
from accelerate_core.report.svg import SERIES_COLOURS, STATUS_COLOURS
from accelerate_core.store import ResultsStore
from accelerate_core.store.synthetic import SyntheticRun
from tests.support.browser import pixels_near, screenshot

pytestmark = pytest.mark.browser


def test_html_report_renders_its_plots_in_chromium(tmp_path: Path) -> None:
    # Given a report with two runs (so every plot has data), a failure and an escaped model name
    models = ("bert", "gpt2", "vit", "whisper", "bold")
    runs = [SyntheticRun(r, phase="q4", models=models, hardware=("cpu", "cuda"), created_at=t) for r, t in
            (("base", 1.0), ("cur", 2.0))]  # fmt: skip
    db = tmp_path / "results.duckdb"
    with ResultsStore.open(db) as store:
        for i, run in enumerate(runs):
            store.record_run(run.plan())
            store.record_results(
                [run.result(m, "cpu", latency=0.01 * (1 + i * (m == "bert"))) for m in models]
                + [run.result(m, "cuda", latency=0.002) for m in models[:-1]]
                + [run.result(models[-1], "cuda", status="failed")]
            )
    with duckdb.connect(str(db)) as conn:  # names are checked on the way in; an older store may hold this one
        conn.execute("UPDATE jobs SET model_type = '<b>bold</b>' WHERE model_type = 'bold'")
    with ResultsStore.open(db, read_only=True) as store:
        paths = write_report(build_report(store, "cur", use_catalog=False), tmp_path / "report", ("html",))
    assert "&lt;b&gt;bold&lt;/b&gt;" in paths["html"].read_text()
    # When Chromium renders the page
    img = screenshot(paths["html"].as_uri(), tmp_path / "shot.png", tmp_path / "profile")
    # Then the page is not blank, and the plots' own colours are painted
    colours = img.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50, "the screenshot is (nearly) blank"
    assert pixels_near(img, STATUS_COLOURS["done"]) > 2000  # status bars
    assert pixels_near(img, STATUS_COLOURS["failed"]) > 100  # the failed segment
    assert pixels_near(img, SERIES_COLOURS[0]) > 200  # latency histogram (cpu series)
    assert pixels_near(img, SERIES_COLOURS[1]) > 200  # latency histogram (cuda) and the regression dots

"""The aggregate report on real DuckDB files: comparison gating, listings, escaping, formats, CLI."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import duckdb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accelerate_core.errors import ConfigError
from accelerate_core.report import build_report, parse_formats, write_report
from accelerate_core.report.html import render_html
from accelerate_core.report.markdown import render_markdown
from accelerate_core.report.stats import mann_whitney_p
from accelerate_core.store import ResultsStore
from accelerate_core.store.synthetic import SyntheticRun
from scheduler.cli import main

TIGHT = [0.0100, 0.0101, 0.0099, 0.0100, 0.0102]
WIDE = [0.004, 0.010, 0.019, 0.006, 0.015]  # p50 0.010, spread across 5x


def _run(run_id: str, created: float, models=("bert", "gpt2", "vit"), **kw) -> SyntheticRun:
    mods = {"bert": "text", "gpt2": "text", "vit": "vision"}
    return SyntheticRun(run_id, phase="2026-q4", models=models, created_at=created, modalities=mods, **kw)


@pytest.fixture
def store(tmp_path: Path):
    with ResultsStore.open(tmp_path / "results.duckdb") as s:
        yield s


def _record(store: ResultsStore, run: SyntheticRun, latencies: dict[str, list[float]], **kw) -> None:
    store.record_run(run.plan())
    store.record_results([run.result(m, hw, latency=latencies[m], **kw) for m in run.models for hw in run.hardware])


def test_a_tight_30pct_slowdown_is_flagged_and_a_noisy_one_is_not(store: ResultsStore) -> None:
    # Given a baseline, then a run where bert is 30% slower with tight samples and gpt2 30% slower but noisy
    base, cur = _run("base", 1000.0), _run("cur", 2000.0)
    _record(store, base, {"bert": TIGHT, "gpt2": WIDE, "vit": TIGHT})
    _record(store, cur, {"bert": [x * 1.3 for x in TIGHT], "gpt2": [x * 1.3 for x in WIDE], "vit": TIGHT})
    # When the report is built (the baseline defaults to the previous run of the phase)
    report = build_report(store, "cur", use_catalog=False)
    c = report.comparison
    # Then only bert is a regression; gpt2 is beyond the threshold but within the noise
    assert c is not None and c.baseline_run_id == "base"
    assert [(r.model_type, round(r.change, 2)) for r in c.regressions] == [("bert", 0.3)]
    assert c.regressions[0].p_value is not None and c.regressions[0].p_value < 0.05
    assert [n.model_type for n in c.within_noise] == ["gpt2"] and c.within_noise[0].p_value >= 0.05
    assert c.improvements == [] and c.compared == 3


def test_a_significant_change_below_the_threshold_is_not_flagged(store: ResultsStore) -> None:
    base, cur = _run("base", 1.0, models=("bert",)), _run("cur", 2.0, models=("bert",))
    _record(store, base, {"bert": TIGHT})
    _record(store, cur, {"bert": [x * 1.05 for x in TIGHT]})
    assert mann_whitney_p([(TIGHT, [x * 1.05 for x in TIGHT])])[0] < 0.05  # real, but small
    c = build_report(store, "cur", use_catalog=False).comparison
    assert c is not None and not c.regressions and not c.within_noise
    c = build_report(store, "cur", threshold=0.01, use_catalog=False).comparison
    assert c is not None and [r.model_type for r in c.regressions] == ["bert"]


def test_improvements_new_missing_newly_failing_and_not_comparable(store: ResultsStore) -> None:
    base = _run("base", 1.0, models=("bert", "gpt2", "vit", "whisper"))
    _record(store, base, {m: TIGHT for m in base.models})
    cur = _run("cur", 2.0, models=("bert", "gpt2", "vit", "llama"))
    store.record_run(cur.plan())
    store.record_results(
        [
            cur.result("bert", "cpu", latency=[x * 0.5 for x in TIGHT]),
            cur.result("gpt2", "cpu", status="failed", error=("out-of-memory", "MemoryError", "ran out\nat line 3")),
            cur.result("vit", "cpu", latency=[x * 2 for x in TIGHT], template_sha="f" * 40),
            cur.result("llama", "cpu", latency=TIGHT),
        ]
    )
    c = build_report(store, "cur", "base", use_catalog=False).comparison
    assert c is not None
    assert [(i.model_type, round(i.change, 2)) for i in c.improvements] == [("bert", -0.5)]
    assert c.missing == [{"model_type": "whisper", "hardware": "cpu"}]
    assert c.new == [{"model_type": "llama", "hardware": "cpu"}]
    assert [(f["model_type"], f["error_class"], f["error_message"]) for f in c.newly_failing] == [
        ("gpt2", "out-of-memory", "ran out")
    ]
    # vit doubled, but its template changed: not compared at all
    assert [n["model_type"] for n in c.not_comparable] == ["vit"]
    assert not c.regressions


def test_missing_model_is_listed_in_markdown_and_html(store: ResultsStore) -> None:
    base, cur = _run("base", 1.0, models=("bert", "whisper")), _run("cur", 2.0, models=("bert",))
    _record(store, base, {"bert": TIGHT, "whisper": TIGHT})
    _record(store, cur, {"bert": TIGHT})
    report = build_report(store, "cur", use_catalog=False)
    md, page = render_markdown(report), render_html(report)
    assert "### Missing (in the baseline, not in this run) (1)\n\nwhisper@cpu" in md
    assert re.search(r"Missing \(in the baseline, not in this run\) \(1\)</h3>\s*<p>whisper@cpu</p>", page)


def test_no_earlier_run_means_no_comparison(store: ResultsStore) -> None:
    _record(store, _run("only", 1.0), {"bert": TIGHT, "gpt2": TIGHT, "vit": TIGHT})
    report = build_report(store, "only", use_catalog=False)
    assert report.comparison is None and "no earlier run" in report.baseline_note
    with pytest.raises(ConfigError):
        build_report(store, "only", "only", use_catalog=False)


def test_html_and_markdown_escape_model_names_and_errors(tmp_path: Path) -> None:
    evil = "<script>alert('x')</script>"
    run = _run("cur", 1.0, models=("gpt2", "bert"), hardware=("cpu",))
    with ResultsStore.open(tmp_path / "results.duckdb") as store:
        store.record_run(run.plan())
        store.record_results(
            [
                run.result("gpt2", "cpu", latency=TIGHT),
                run.result("bert", "cpu", status="failed", error=("forward-error", "ValueError", f"bad {evil} | x")),
            ]
        )
    # Names are checked on the way in now; a store written before that (or by hand) may still hold this one
    with duckdb.connect(str(tmp_path / "results.duckdb")) as conn:
        conn.execute("UPDATE jobs SET model_type = ? WHERE model_type = 'gpt2'", [evil])
    with ResultsStore.open(tmp_path / "results.duckdb", read_only=True) as store:
        report = build_report(store, "cur", use_catalog=False)
    page, md = render_html(report), render_markdown(report)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<script" not in md.lower() and "bad &lt;script&gt;" in md and "\\| x" in md
    assert "script-src" not in page and "default-src 'none'" in page  # and no script may run anyway


def test_tables_summaries_speedups_failures_and_efficiency(store: ResultsStore) -> None:
    run = _run("cur", 1.0, hardware=("cpu", "cuda"), shapes=((1, 16), (4, 16)), slots=2)
    store.record_run(run.plan())
    results = []
    for i, m in enumerate(run.models):
        results.append(run.result(m, "cpu", latency=0.01, start=10.0 + i, duration=2.0))
        if m == "vit":
            err = ("forward-error", "RuntimeError", "shape mismatch\ntraceback...")
            results.append(run.result(m, "cuda", status="failed", error=err, start=10.0 + i, duration=1.0))
        else:
            results.append(run.result(m, "cuda", latency=0.0025, start=10.0 + i, duration=1.0))
    store.record_results(results)
    report = build_report(store, "cur", use_catalog=False)
    bert_cpu = next(r for r in report.rows if (r.model_type, r.hardware) == ("bert", "cpu"))
    assert (bert_cpu.batch_size, bert_cpu.seq_len) == (1, 16) and len(bert_cpu.shapes) == 2
    assert bert_cpu.p50_s == pytest.approx(0.01, rel=0.03) and bert_cpu.throughput == pytest.approx(100, rel=0.03)
    assert bert_cpu.peak_memory_mib == 104.0 and bert_cpu.load_time_s is not None
    hw = {g.name: g for g in report.by_hardware}
    assert hw["cuda"].pass_rate == pytest.approx(2 / 3) and hw["cpu"].pass_rate == 1.0
    assert [(s.accelerator, s.models) for s in hw["cuda"].speedups] == [("cuda", 2)]
    assert hw["cuda"].speedups[0].median == pytest.approx(4.0, rel=0.05)
    assert {g.name: g.total for g in report.by_modality} == {"text": 4, "vision": 2}
    assert [(f.error_class, f.count, f.messages[0].message, f.messages[0].jobs) for f in report.failures] == [
        ("forward-error", 1, "shape mismatch", ["vit@cuda"])
    ]
    # busy 3x2 + 3x1 = 9 s over wall 10..14 = 4 s on 2 slots
    assert report.efficiency.efficiency == pytest.approx(9.0 / (2 * 4.0))


def test_efficiency_prefers_the_executors_records_across_resumes(store: ResultsStore) -> None:
    run = _run("cur", 1.0, models=("bert",))
    plan = run.plan()
    from dataclasses import replace

    from accelerate_core.contracts import Makespan

    makespan = (Makespan(slots=2, wall_s=10.0, busy_s=18.0), Makespan(slots=2, wall_s=5.0, busy_s=6.0))
    store.record_run(plan)
    store.update_run_params(plan.run_id, replace(plan.params, makespan=makespan))
    store.record_results([run.result("bert", "cpu", start=0.0, duration=1.0)])
    eff = build_report(store, "cur", use_catalog=False).efficiency
    assert eff.efficiency == pytest.approx(24.0 / 30.0) and eff.wall_s == 15.0 and "2 invocations" in eff.note


def test_skipped_jobs_are_listed_by_reason_not_as_failures(store: ResultsStore) -> None:
    run = _run("cur", 1.0, models=("bert", "gpt2"))
    store.record_run(run.plan())
    reason = ("missing-dependency", None, "needs the timm library")
    store.record_results([run.result("bert", "cpu"), run.result("gpt2", "cpu", status="skipped", error=reason)])
    report = build_report(store, "cur", use_catalog=False)
    assert report.failures == [] and report.totals.pass_rate == 1.0
    assert [(g.error_class, g.messages[0].message, g.messages[0].jobs) for g in report.skipped] == [
        ("missing-dependency", "needs the timm library", ["gpt2@cpu"])
    ]
    assert "## Skipped (not run) by reason" in render_markdown(report)


def test_modality_degrades_to_unknown(store: ResultsStore) -> None:
    run = SyntheticRun("cur", models=("bert", "mystery"), modalities={"bert": "text"})
    _record(store, run, {"bert": TIGHT, "mystery": TIGHT})
    report = build_report(store, "cur", use_catalog=False)
    assert {r.model_type: r.modality for r in report.rows} == {"bert": "text", "mystery": "unknown modality"}
    report = build_report(store, "cur", modalities={"mystery": "audio"}, use_catalog=False)
    assert {r.model_type: r.modality for r in report.rows}["mystery"] == "audio"


def test_module_loading_section_only_with_timings(store: ResultsStore) -> None:
    _record(store, SyntheticRun("cur"), {"bert": TIGHT, "gpt2": TIGHT})
    assert "Module loading" not in render_markdown(build_report(store, "cur", use_catalog=False))
    store.record_import_timings([{"name": "accelerate_core", "samples": [0.01, 0.02, 0.015]}])
    report = build_report(store, "cur", use_catalog=False)
    assert [t.name for t in report.import_timings] == ["accelerate_core"] and report.import_timings_note
    assert "## Module loading" in render_markdown(report) and "Median load time" in render_html(report)


def test_write_report_all_formats_and_synthetic_label(store: ResultsStore, tmp_path: Path) -> None:
    _record(store, SyntheticRun("cur"), {"bert": TIGHT, "gpt2": TIGHT})
    paths = write_report(build_report(store, "cur", use_catalog=False), tmp_path / "out")
    assert sorted(paths) == ["html", "json", "md"] and not list((tmp_path / "out").glob("*.tmp"))
    data = json.loads(paths["json"].read_text())
    assert data["synthetic"] is True and data["totals"]["done"] == 2
    assert "SYNTHETIC" in paths["md"].read_text() and "SYNTHETIC" in paths["html"].read_text()
    assert parse_formats("md, json") == ("md", "json")
    with pytest.raises(ConfigError):
        parse_formats("md,pdf")


def test_cli_report_runs_list_show_export(tmp_path: Path, monkeypatch, capsys) -> None:
    db = tmp_path / "results.duckdb"
    monkeypatch.setenv("ACCEL_RESULTS_DB", str(db))
    monkeypatch.setenv("ACCEL_REPORTS_DIR", str(tmp_path / "reports"))
    with ResultsStore.open(db) as s:
        _record(s, _run("base", 1.0), {"bert": TIGHT, "gpt2": TIGHT, "vit": TIGHT})
        _record(s, _run("cur", 2.0), {"bert": [x * 1.3 for x in TIGHT], "gpt2": TIGHT, "vit": TIGHT})
    capsys.readouterr()
    assert main(["report", "latest", "--json", "--format", "md,json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["run_id"] == "cur" and got["summary"]["regressions"] == 1 and sorted(got["files"]) == ["json", "md"]
    assert Path(got["files"]["md"]).is_file()
    assert main(["runs", "list", "--json"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == ["cur", "base"]
    assert main(["runs", "show", "base", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["progress"]["by_status"] == {"done": 3}
    assert main(["runs", "export", "cur", "--format", "csv", "--out", str(tmp_path / "x"), "--json"]) == 0
    with Path(json.loads(capsys.readouterr().out)["jobs"]).open() as fh:
        assert [row["model_type"] for row in csv.DictReader(fh)] == ["bert", "gpt2", "vit"]
    assert main(["report", "nope"]) == 2
    assert "not in the results store" in capsys.readouterr().err


_SAMPLES = st.lists(st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0]) | st.floats(0.001, 10.0), min_size=2, max_size=12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(_SAMPLES, _SAMPLES), min_size=1, max_size=6))
def test_mann_whitney_p_is_scipys_to_the_bit(pairs: list[tuple[list[float], list[float]]]) -> None:
    from scipy.stats import mannwhitneyu

    # The same batches as mann_whitney_p makes (pairs of equal sample counts), straight through scipy
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (a, b) in enumerate(pairs):
        groups.setdefault((len(a), len(b)), []).append(i)
    expected: list[float | None] = [None] * len(pairs)
    for idx in groups.values():
        x = np.asarray([pairs[i][0] for i in idx])
        y = np.asarray([pairs[i][1] for i in idx])
        with np.errstate(all="ignore"):
            p = mannwhitneyu(x, y, axis=1, alternative="two-sided").pvalue
        for i, value in zip(idx, np.atleast_1d(p), strict=True):
            expected[i] = float(value) if math.isfinite(float(value)) else 1.0
    assert mann_whitney_p(pairs) == expected


def test_another_device_model_or_torch_version_is_listed_not_compared(store: ResultsStore) -> None:
    from dataclasses import replace

    # Given a baseline on an A100 under torch 2.4, then a run where bert moved to an H100 and gpt2 to torch 2.5,
    # each twice as slow (a regression, were they compared), and vit unchanged on the same model and versions
    def on(result, device: str, torch: str):  # type: ignore[no-untyped-def]
        env = {**result.environment, "device_model": device, "torch": torch}
        return replace(result, device_name=f"NVIDIA {device}", environment=env)

    base, cur = _run("base", 1.0), _run("cur", 2.0)
    store.record_run(base.plan())
    store.record_results([on(base.result(m, "cpu", latency=TIGHT), "a100-sxm4-40gb", "2.4.0") for m in base.models])
    store.record_run(cur.plan())
    slow = [x * 2 for x in TIGHT]
    store.record_results([
        on(cur.result("bert", "cpu", latency=slow), "h100-80gb-hbm3", "2.4.0"),
        on(cur.result("gpt2", "cpu", latency=slow), "a100-sxm4-40gb", "2.5.1"),
        on(cur.result("vit", "cpu", latency=TIGHT), "a100-sxm4-40gb", "2.4.0"),
    ])  # fmt: skip
    # When compared
    report = build_report(store, "cur", "base", use_catalog=False)
    c = report.comparison
    # Then neither bert nor gpt2 is a regression: both are listed with what changed; vit is compared
    assert c is not None and not c.regressions and c.compared == 1
    assert {n["model_type"]: n["reason"] for n in c.not_comparable} == {
        "bert": "device model a100-sxm4-40gb -> h100-80gb-hbm3",
        "gpt2": "torch 2.4.0 -> 2.5.1",
    }
    # and the Markdown report says so
    md = render_markdown(report)
    assert "### Not comparable: template, device model or versions changed (2)" in md
    assert "| bert | cpu | device model a100-sxm4-40gb -&gt; h100-80gb-hbm3 |" in md  # renders as ->


def test_a_served_endpoint_that_moved_address_is_still_compared_with_its_past() -> None:
    from dataclasses import replace

    from accelerate_core.report.collect import JobFact
    from accelerate_core.report.compare import changes

    # Given the same endpoint api:fast before and after it moved to another port (its device name is its address)
    base = JobFact(
        job_key="k", kind="test", status="done", error_class=None, error_type=None, error_message=None,
        attempts=1, duration_s=1.0, started_at=0.0, finished_at=1.0, template_sha="t", worker_id="w", host="h",
        device_name="http://127.0.0.1:4001 stub",
    )  # fmt: skip
    moved = replace(base, device_name="http://127.0.0.1:4002 stub")
    # Then it is comparable, while a device row whose device name changed is not
    assert changes(moved, base, served=True) == []
    on_device = replace(base, device_name="NVIDIA A100-SXM4-40GB")
    assert changes(replace(on_device, device_name="NVIDIA H100 80GB HBM3"), on_device)

"""The report's job stages: what each job recorded under ``environment["job_timings"]``, summed per stage."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from accelerate_core.constants import JOB_TIMINGS_KEY, LOOPS_KEY
from accelerate_core.job_outcome import outcome_to_result
from accelerate_core.report import build_report
from accelerate_core.report.html import render_html
from accelerate_core.report.markdown import render_markdown
from accelerate_core.report.stages import summarise_loops, summarise_stages
from accelerate_core.runner import ChildOutcome
from accelerate_core.store import ResultsStore
from accelerate_core.store.synthetic import SyntheticRun


def test_stages_come_in_job_order_with_sums_and_nearest_rank_percentiles() -> None:
    jobs = [{"loop_s": float(i), "render_s": 0.5, "zeta_s": 1, "bad": "x", "flag": True} for i in range(1, 11)]
    stages = summarise_stages([*jobs, "not a mapping"])  # type: ignore[list-item]
    assert [s.stage for s in stages] == ["render", "loop", "zeta"]
    loop = stages[1]
    assert (loop.jobs, loop.total_s, loop.mean_s, loop.max_s) == (10, 55.0, 5.5, 10.0)
    assert (loop.p50_s, loop.p90_s) == (5.0, 9.0)


def test_a_child_outcome_adds_the_runner_stages_to_the_jobs_own() -> None:
    run = SyntheticRun("r1", phase="p", models=("bert",))
    own = run.result("bert", "cpu")
    own = replace(own, environment={**own.environment, JOB_TIMINGS_KEY: {"render_s": 0.1}})
    from accelerate_core import wire

    outcome = ChildOutcome("k", ok=True, value=wire.encode(own), duration_s=0.5, entry_s=0.4)
    spec = run.plan().jobs[0]
    timings = outcome_to_result(spec, outcome, "w", "h").environment[JOB_TIMINGS_KEY]
    assert timings == {"render_s": 0.1, "child_s": 0.5, "entry_s": 0.4, "runner_s": pytest.approx(0.1)}
    killed = ChildOutcome.crashed("k", "died", duration_s=2.0)  # no entry time: only the child's life
    assert outcome_to_result(spec, killed, "w", "h").environment[JOB_TIMINGS_KEY] == {"child_s": 2.0}


def test_the_report_shows_job_stages_in_markdown_html_and_json(tmp_path: Path) -> None:
    run = SyntheticRun("cur", phase="p", models=("bert", "gpt2"))
    results = [run.result(m, "cpu") for m in run.models]
    results = [replace(r, environment={JOB_TIMINGS_KEY: {"build_s": 0.2, "loop_s": 1.5}}) for r in results]
    with ResultsStore.open(tmp_path / "results.duckdb") as store:
        store.record_run(run.plan())
        store.record_results(results)
        report = build_report(store, "cur", use_catalog=False)
    assert [(s.stage, s.jobs, s.total_s) for s in report.stages] == [("build", 2, 0.4), ("loop", 2, 3.0)]
    assert "## Job stages" in render_markdown(report) and "<h2>Job stages</h2>" in render_html(report)
    assert json.loads(json.dumps(report.to_dict()))["stages"][1]["total_s"] == 3.0


def test_loop_endings_are_counted_per_metric_and_ending_with_median_samples_and_precision() -> None:
    loops = [
        {"metric": "latency", "stopped_by": "converged", "n": 10, "loop_s": 0.01, "ci_rel": 0.004},
        {"metric": "latency", "stopped_by": "converged", "n": 30, "loop_s": 0.05, "ci_rel": 0.009},
        {"metric": "latency", "stopped_by": "min-iters-and-duration", "n": 50, "loop_s": 0.3, "ci_rel": None},
        {"metric": "generate", "stopped_by": "max-duration", "n": 4, "loop_s": 2.1, "ci_rel": None},
        {"metric": "latency", "n": "x"},  # not a loop record: ignored
    ]
    endings = summarise_loops(loops)
    assert [(e.metric, e.stopped_by, e.loops) for e in endings] == [
        ("generate", "max-duration", 1),
        ("latency", "converged", 2),
        ("latency", "min-iters-and-duration", 1),
    ]
    converged = endings[1]
    assert (converged.p50_n, converged.p50_loop_s) == (10.0, 0.01)  # nearest rank, as the stages
    assert (converged.p50_ci_rel, converged.p90_ci_rel) == (0.004, 0.009)
    assert endings[0].p50_ci_rel is None


def test_the_report_shows_loop_endings_from_the_results_environment(tmp_path: Path) -> None:
    run = SyntheticRun("cur", phase="p", models=("bert", "gpt2"))
    loop = {"metric": "latency", "batch_size": 1, "seq_len": 16, "stopped_by": "converged", "n": 12, "warmup": 2,
            "loop_s": 0.02, "ci_rel": 0.008}  # fmt: skip
    results = [replace(r, environment={LOOPS_KEY: [loop]}) for r in (run.result(m, "cpu") for m in run.models)]
    with ResultsStore.open(tmp_path / "results.duckdb") as store:
        store.record_run(run.plan())
        store.record_results(results)
        report = build_report(store, "cur", use_catalog=False)
    assert [(e.metric, e.stopped_by, e.loops, e.p50_ci_rel) for e in report.loop_endings] == [
        ("latency", "converged", 2, 0.008)
    ]
    markdown = render_markdown(report)
    assert "## Loop endings" in markdown and "+-0.8%" in markdown
    assert "<h2>Loop endings</h2>" in render_html(report)

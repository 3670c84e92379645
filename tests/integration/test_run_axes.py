"""``accel run`` over the shape axes (``--batch``, ``--seq``): one real run on the embedded default, tiny BERT and
GPT-2, a shape each model takes and one past their 512 learned positions (a ``skipped`` row, not a failure); and
``--compile off,eager`` (slow): an eager and a compiled row, the compile time apart from the loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from accelerate_core import wire
from accelerate_core.config import Settings
from accelerate_core.constants import ERR_UNSUPPORTED, STATUS_DONE, STATUS_SKIPPED
from accelerate_core.contracts import JobSpec
from accelerate_core.store import ResultsStore
from scheduler.planning_inputs import template_lookup
from tests.support.cli import seed_catalog_index

QUICK = """
[bench]
warmup = 1
min_iters = 3
min_duration_s = 0.0
max_duration_s = 1.0
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Settings]:
    """A folder with the catalog index, the synced templates and a quick benchmark loop; its settings."""
    folder = tmp_path_factory.mktemp("axes")
    seed_catalog_index(folder)
    settings = Settings(results_db=folder / "results.duckdb", templates_db=folder / "templates.duckdb",
                        reports_dir=folder / "reports")  # fmt: skip
    template_lookup(settings)
    (folder / "accel.toml").write_text(QUICK)
    return folder, settings


def _accel_run(root: tuple[Path, Settings], *args: str) -> tuple[dict[str, Any], Settings]:
    folder, settings = root
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
    env.update(ACCEL_RESULTS_DB=str(settings.results_db), ACCEL_TEMPLATES_DB=str(settings.templates_db),
               ACCEL_REPORTS_DIR=str(settings.reports_dir), ACCEL_CONCURRENCY="2")  # fmt: skip
    argv = [sys.executable, "-m", "scheduler", "--config", str(folder / "accel.toml"), "run", "--phase", "axes",
            "--hardware", "cpu", "--json", *args]  # fmt: skip
    done = subprocess.run(argv, env=env, cwd=folder, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), settings


@pytest.fixture(scope="module")
def run(root: tuple[Path, Settings]) -> tuple[dict[str, Any], Settings]:
    """One ``accel run --models bert,gpt2,vit --batch 2 --seq 8,600``; its ``--json`` summary and settings."""
    return _accel_run(root, "--models", "bert,gpt2,vit", "--batch", "2", "--seq", "8,600")


def _jobs(settings: Settings, run_id: str) -> dict[str, tuple[JobSpec, str, str | None, str | None, str | None]]:
    with ResultsStore.open(settings.results_db, read_only=True) as store:
        rows = store.query(
            "SELECT spec, status, error_class, error_message, generated_source FROM jobs WHERE run_id = ?", [run_id]
        )
    return {
        spec.model_type: (spec, status, error_class, message, source)
        for raw, status, error_class, message, source in rows
        for spec in [wire.decode(JobSpec, json.loads(raw))]
    }


def _report(settings: Settings, run_id: str) -> dict[str, Any]:
    return json.loads((Path(settings.reports_dir) / run_id / "report.json").read_text())  # type: ignore[no-any-return]


def test_each_shape_is_a_row_measured_at_that_shape_by_the_generated_test(run) -> None:
    summary, settings = run
    jobs = _jobs(settings, summary["run_id"])

    assert set(jobs) == {"bert.b2.s8", "bert.b2.s600", "gpt2.b2.s8", "gpt2.b2.s600", "vit.b2.s8", "vit.b2.s600"}
    for name in ("bert.b2.s8", "gpt2.b2.s8"):
        spec, status, error_class, message, source = jobs[name]
        assert status == STATUS_DONE, (name, error_class, message)
        assert (spec.bench.batch_sizes, spec.bench.seq_lens) == ((2,), (8,))
        assert source is not None and "BATCH_SIZE = 2" in source and "SEQ_LEN = 8" in source
    rows = {r["model_type"]: r for r in _report(settings, summary["run_id"])["rows"]}
    assert (rows["bert.b2.s8"]["batch_size"], rows["bert.b2.s8"]["seq_len"]) == (2, 8)


def test_a_shape_past_the_model_positions_is_a_skipped_row_with_its_reason(run) -> None:
    summary, settings = run
    jobs = _jobs(settings, summary["run_id"])

    for name in ("bert.b2.s600", "gpt2.b2.s600"):
        _, status, error_class, message, _ = jobs[name]
        assert (status, error_class) == (STATUS_SKIPPED, ERR_UNSUPPORTED), (name, message)
        assert message is not None and "seq 600 exceeds its 512 positions" in message


@pytest.mark.slow  # ~40 s at load 10 on 2 cores (dynamo tracing); tests/unit/test_compile_time.py is the fast check
def test_a_compiled_job_times_its_compile_apart_from_the_loop(root) -> None:
    # Given tiny BERT; When a run times it eager and compiled (dynamo's eager backend: no C compiler needed)
    summary, settings = _accel_run(root, "--models", "bert", "--seq", "8", "--compile", "off,eager")
    jobs = _jobs(settings, summary["run_id"])
    # Then each is a row, and the generated test compiles only the compiled one
    assert {name: (status, spec.compile_backend) for name, (spec, status, *_) in jobs.items()} == {
        "bert.s8": (STATUS_DONE, None), "bert.s8.compile-eager": (STATUS_DONE, "eager"),
    }  # fmt: skip
    source = jobs["bert.s8.compile-eager"][4]
    assert source is not None and "COMPILE = 'eager'" in source
    # And the compiled row's compile time is its own figure, apart from the latency loop; the eager row has none
    with ResultsStore.open(settings.results_db, read_only=True) as store:
        rows = store.query(
            """SELECT j.model_type, list(m.metric ORDER BY m.metric) FROM measurements m JOIN jobs j USING (job_key)
               WHERE m.run_id = ? AND m.metric IN ('compile_time', 'latency') GROUP BY ALL""",
            [summary["run_id"]],
        )
    found = dict(rows)
    assert found == {"bert.s8": ["latency"], "bert.s8.compile-eager": ["compile_time", "latency"]}
    report = {r["model_type"]: r for r in _report(settings, summary["run_id"])["rows"]}
    compiled = report["bert.s8.compile-eager"]
    assert compiled["compile_backend"] == "eager" and compiled["compile_s"] > 0
    assert report["bert.s8"]["compile_s"] is None


def test_a_vision_model_is_measured_once_and_its_other_seq_is_a_skipped_row_saying_why(run) -> None:
    from accelerate_core.bench.shapes import SEQ_NOT_APPLICABLE

    summary, settings = run
    jobs = _jobs(settings, summary["run_id"])
    # Then ViT (pixels: no sequence axis) is measured at the first seq only
    spec, status, error_class, message, _ = jobs["vit.b2.s8"]
    assert status == STATUS_DONE, (error_class, message)
    assert (spec.bench.batch_sizes, spec.bench.seq_lens) == ((2,), (8,))
    # And its other seq is a skipped row, not a second measurement of the same input
    _, status, error_class, message, source = jobs["vit.b2.s600"]
    assert (status, error_class, source) == (STATUS_SKIPPED, ERR_UNSUPPORTED, None)
    assert message is not None and message.startswith(f"{SEQ_NOT_APPLICABLE} vit: its vision input")
    assert message.endswith("measured once as vit.b2.s8")
    with ResultsStore.open(settings.results_db, read_only=True) as store:
        query = "SELECT count(DISTINCT job_key) FROM measurements JOIN jobs USING (job_key, run_id) WHERE run_id = ?"
        (measured,) = store.query(f"{query} AND model_type LIKE 'vit%'", [summary["run_id"]])[0]
    assert measured == 1
    # And report.json says the same
    rows = {r["model_type"]: r for r in _report(settings, summary["run_id"])["rows"]}
    assert rows["vit.b2.s8"]["status"] == STATUS_DONE and rows["vit.b2.s600"]["status"] == STATUS_SKIPPED

"""The reads behind the results service: pages of results, a model's history, hardware side by side, metrics.

A real DuckDB file with three synthetic runs (tests/support/results_service.py); no HTTP here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from accelerate_core.errors import ConfigError, UnknownModelError, UnknownRunError
from accelerate_core.service import ReadSource, WriterFigures, views
from accelerate_core.service.metrics import metrics_text
from accelerate_core.service.source import ReadView, read_view
from accelerate_core.store import ResultsStore, browse
from accelerate_core.store.synthetic import SyntheticRun
from tests.support.results_service import MODELS, RUNS, XSS, build_store


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_store(tmp_path_factory.mktemp("browse") / "results.duckdb")


@pytest.fixture
def view(db: Path) -> Iterator[ReadView]:
    source = ReadSource.open(db)
    with read_view(source) as v:
        yield v
    source.close()


def test_results_filter_by_status_hardware_model_and_modality(view: ReadView) -> None:
    # When the failed results of the last run are asked for; Then only gpt2 on cuda, with its message
    page = views.results(view, "latest", views.ResultsQuery(statuses=("failed",)))
    assert [(i["model_type"], i["hardware"]) for i in page["items"]] == [("gpt2", "cuda")]
    assert page["total"] == 1 and XSS in page["items"][0]["error_message"]
    # And hardware/model filters combine; an unknown modality matches nothing
    both = views.results(view, RUNS[0], views.ResultsQuery(hardware=("cpu",), models=("bert", "vit")))
    assert [(i["model_type"], i["hardware"]) for i in both["items"]] == [("bert", "cpu"), ("vit", "cpu")]
    assert both["items"][0]["shapes"][0]["batch_size"] == 1 and both["items"][0]["shapes"][1]["batch_size"] == 4
    assert views.results(view, RUNS[0], views.ResultsQuery(modalities=("audio",)))["total"] == 0
    vision = views.results(view, RUNS[0], views.ResultsQuery(modalities=("vision",), hardware=("cuda",)))
    assert [(i["model_type"], i["modality"]) for i in vision["items"]] == [("vit", "vision")]
    unknown = views.results(view, RUNS[0], views.ResultsQuery(modalities=("unknown modality",)))
    assert {i["model_type"] for i in unknown["items"]} == {XSS} and unknown["total"] == 2
    assert unknown["modalities"] == ["text", "unknown modality", "vision"]


def test_results_are_paginated(view: ReadView) -> None:
    pages = [views.results(view, RUNS[1], views.ResultsQuery(limit=3, offset=o)) for o in (0, 3, 6, 9)]
    keys = [i["job_key"] for p in pages for i in p["items"]]
    assert [len(p["items"]) for p in pages] == [3, 3, 2, 0]
    assert len(set(keys)) == len(MODELS) * 2 and all(p["total"] == 8 for p in pages)
    with pytest.raises(ConfigError, match="limit=0"):
        views.results(view, RUNS[1], views.ResultsQuery(limit=0))


def test_query_arguments_are_parsed_into_filters() -> None:
    args = {"status": ["done,failed", "timeout"], "model": [" bert "], "limit": ["5"], "hardware": [""]}
    query = views.ResultsQuery.from_args(lambda name: args.get(name, []))
    assert query == views.ResultsQuery(statuses=("done", "failed", "timeout"), models=("bert",), limit=5)
    with pytest.raises(ConfigError, match="offset='x' is not an integer"):
        views.ResultsQuery.from_args(lambda name: ["x"] if name == "offset" else [])


def test_history_has_one_point_per_run_and_hardware_oldest_first_with_changes(view: ReadView) -> None:
    # When bert's history is read
    data = views.history(view, "bert")
    points = data["points"]
    # Then: three runs x two hardware kinds, oldest first, each with its p50 per shape and versions
    assert [(p["run_id"], p["hardware"]) for p in points] == [(r, hw) for r in RUNS for hw in ("cpu", "cuda")]
    cpu = [p["p50_s"] for p in points if p["hardware"] == "cpu"]
    assert cpu == sorted(cpu) and cpu[0] == pytest.approx(0.02, rel=0.05)  # 0.02 s, then +25% per run
    assert points[0]["versions"] == {"torch": "2.12.0", "transformers": "synthetic"}
    # And the third run records what changed against the second, per hardware kind
    changes = {p["hardware"]: p["changes"] for p in points if p["run_id"] == RUNS[2]}
    assert changes["cpu"] == [{"what": "torch", "from": "2.12.0", "to": "2.13.0"}]
    assert {"what": "device", "from": "Synthetic CUDA", "to": "Synthetic H100"} in changes["cuda"]
    assert all(p["changes"] == [] for p in points if p["run_id"] != RUNS[2])
    # And a window of runs keeps the latest ones, a hardware filter one kind
    assert [p["run_id"] for p in views.history(view, "bert", hardware=("cuda",), runs=2)["points"]] == list(RUNS[1:])
    with pytest.raises(UnknownModelError, match="'nope' is in no run"):
        views.history(view, "nope")


def test_hardware_side_by_side_and_one_against_another(view: ReadView) -> None:
    matrix = views.hardware(view, RUNS[0])
    assert matrix["hardware"] == ["cpu", "cuda"] and len(matrix["models"]) == len(MODELS)
    pair = views.hardware(view, RUNS[0], "cpu", "cuda")
    by_model = {m["model_type"]: m for m in pair["models"]}
    assert by_model["bert"]["speedup"] == pytest.approx(4.0, rel=0.1)  # 0.02 s on cpu, 0.005 s on cuda
    assert by_model["gpt2"]["speedup"] is None and by_model["gpt2"]["cuda"]["status"] == "failed"
    assert pair["compared"] == len(MODELS) - 1 and pair["median_speedup"] == pytest.approx(4.0, rel=0.1)
    with pytest.raises(ConfigError, match="it ran \\['cpu', 'cuda'\\]"):
        views.hardware(view, RUNS[0], "cpu", "rocm")


def test_comparison_of_two_runs_reuses_the_report_logic(view: ReadView) -> None:
    # The second run against the first (same devices, same torch): its models are compared, each 25% slower
    compared = views.compare_runs(view, RUNS[1], None)
    assert compared["baseline_run_id"] == RUNS[0] and compared["compared"] > 0
    assert {c["model_type"] for c in compared["regressions"]} <= set(MODELS)
    # The third run moved torch 2.12.0 -> 2.13.0 (and cuda to another device): listed, not compared
    moved = views.compare_runs(view, RUNS[2], None)
    assert moved["baseline_run_id"] == RUNS[1] and moved["compared"] == 0 and not moved["regressions"]
    assert moved["not_comparable"] and all("torch 2.12.0 -> 2.13.0" in n["reason"] for n in moved["not_comparable"])
    assert views.compare_runs(view, RUNS[2], RUNS[0])["baseline_run_id"] == RUNS[0]
    with pytest.raises(ConfigError, match="no earlier run of phase 'q4'"):
        views.compare_runs(view, RUNS[0], None)
    with pytest.raises(UnknownRunError):
        views.compare_runs(view, "nope", None)


def test_runs_index_and_detail_carry_the_pass_rate(view: ReadView) -> None:
    runs = views.runs_index(view)
    assert [r["run_id"] for r in runs] == list(reversed(RUNS))
    assert runs[0]["pass_rate"] == pytest.approx(7 / 8) and not runs[0]["live"]
    detail = views.run_detail(view, "latest")
    assert detail["pass_rate"] == pytest.approx(7 / 8) and detail["previous_run"] == RUNS[1]


def test_metrics_cover_only_recent_and_unfinished_runs(tmp_path: Path) -> None:
    # Given ten runs, the two oldest still unfinished
    with ResultsStore.open(tmp_path / "many.duckdb") as store:
        for i in range(10):
            run = SyntheticRun(f"r{i}", models=("bert",), created_at=1000.0 + i)
            store.record_run(run.plan())
            if i >= 2:
                store.record_results([run.result("bert", "cpu")])
                store.set_run_status(run.run_id, "complete")
    # When the metrics are read for the latest 3 runs plus at most 1 unfinished run
    source = ReadSource.open(tmp_path / "many.duckdb")
    with read_view(source) as v:
        counts = browse.job_counts(v.conn, latest=3, unfinished_max=1)
    source.close()
    text = metrics_text(counts, WriterFigures(backlog=7, lag_s=1.5)).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    # Then the per-run series are those four runs only; the run count covers all ten
    runs = {s.labels["run_id"] for s in families["accel_jobs"].samples}
    assert runs == {"r9", "r8", "r7", "r1"}
    assert {s.labels["status"]: s.value for s in families["accel_runs"].samples} == {"complete": 8, "planned": 2}
    rates = {s.labels["run_id"]: s.value for s in families["accel_run_pass_rate"].samples}
    assert rates == {"r9": 1.0, "r8": 1.0, "r7": 1.0}  # r1 has no verdict yet
    assert families["accel_writer_backlog_messages"].samples[0].value == 7
    assert families["accel_writer_lag_seconds"].samples[0].value == 1.5
    # And without a writer (accel serve) its figures are absent
    assert "accel_writer" not in metrics_text(counts).decode()


def test_a_read_view_never_commits_even_on_the_writers_connection(tmp_path: Path) -> None:
    # Given the writer's read-write store and a source over its own connection
    with ResultsStore.open(tmp_path / "w.duckdb") as writer:
        writer.record_run(SyntheticRun("r", models=("bert",)).plan())
        source = ReadSource.open(tmp_path / "w.duckdb")  # a cursor of the writer's connection
        # When a request's view runs a write
        with read_view(source) as v:
            v.conn.execute("DELETE FROM jobs")
            assert v.conn.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
        # Then it is rolled back: the writer still sees its job, and the store object refuses writes outright
        assert writer.query("SELECT count(*) FROM jobs") == [(1,)]
        with read_view(source) as v, pytest.raises(Exception, match="open read-only"):
            v.store.set_run_status("r", "complete")
        source.close()
        assert writer.query("SELECT status FROM runs") == [("planned",)]


def test_the_writers_source_holds_no_transaction_so_commits_free_their_memory(tmp_path: Path) -> None:
    # Given the writer's read-write store and the service's source over its own connection (kept all run long)
    with ResultsStore.open(tmp_path / "w.duckdb") as writer:
        writer.record_run(SyntheticRun("r", models=("bert",)).plan())
        source = ReadSource.open(tmp_path / "w.duckdb")
        # When the writer commits and then checkpoints
        writer.set_run_status("r", "running")
        # Then no transaction of the idle source is open: one would pin every later commit's undo memory
        # (the writer grew ~25 KB per job recorded, issue 11) and DuckDB would refuse the checkpoint
        writer.query("CHECKPOINT")
        source.close()

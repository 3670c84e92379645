"""The results store on real DuckDB files: schema, idempotent ingest, reads, snapshot, export."""

from __future__ import annotations

import csv
import json
import time
from dataclasses import replace
from pathlib import Path

import duckdb
import pytest

from accelerate_core.contracts import Makespan, Measurement, SkipReason, WorkerInfo
from accelerate_core.errors import ConfigError, StoreError, StoreLockedError, UnknownRunError
from accelerate_core.store import SCHEMA_VERSION, ResultsStore, read_status_snapshot, schema
from accelerate_core.store.synthetic import SyntheticRun

RUN = SyntheticRun("run-a", models=("bert", "gpt2", "t5"), hardware=("cpu", "cuda"), shapes=((1, 16), (4, 16)))


@pytest.fixture
def store(tmp_path: Path):
    with ResultsStore.open(tmp_path / "results.duckdb") as s:
        yield s


def _count(store: ResultsStore, table: str) -> int:
    return int(store.query(f"SELECT count(*) FROM {table}")[0][0])


def test_new_file_gets_the_schema_and_its_version(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "results.duckdb"
    with ResultsStore.open(path) as s:
        assert s.schema_version() == SCHEMA_VERSION
    with ResultsStore.open(path) as s:  # reopening migrates nothing twice
        assert s.query("SELECT count(*) FROM schema_version")[0][0] == SCHEMA_VERSION


def test_an_older_file_is_migrated_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a file written at the current schema, with a run in it
    path = tmp_path / "results.duckdb"
    with ResultsStore.open(path) as s:
        s.record_run(RUN.plan())
    # When a newer code version with one more migration opens it
    step = schema.Migration(SCHEMA_VERSION + 1, "jobs.note", ("ALTER TABLE jobs ADD COLUMN note VARCHAR",))
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, step))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", step.version)
    with ResultsStore.open(path) as s:
        # Then the step ran once, is recorded, and the data is still there
        assert s.schema_version() == step.version
        assert s.query("SELECT count(note), count(*) FROM jobs") == [(0, 6)]
        assert s.query("SELECT description FROM schema_version ORDER BY version DESC LIMIT 1") == [("jobs.note",)]


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "results.duckdb"
    ResultsStore.open(path).close()
    conn = duckdb.connect(str(path))
    conn.execute("INSERT INTO schema_version VALUES (999, 'future', 0)")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        ResultsStore.open(path)


def test_same_batch_twice_keeps_row_counts_and_raises_attempts(store: ResultsStore) -> None:
    # Given a planned run and one batch of results
    store.record_run(RUN.plan())
    batch = [RUN.result(m, hw) for m in ("bert", "gpt2") for hw in ("cpu", "cuda")]
    store.record_results(batch)
    jobs, meas = _count(store, "jobs"), _count(store, "measurements")
    # When the same batch (a redelivery) and the same plan are recorded again
    store.record_results(batch)
    store.record_run(RUN.plan())
    # Then no row is added, and every job of the batch counts two attempts
    assert (_count(store, "jobs"), _count(store, "measurements")) == (jobs, meas) == (6, 4 * 7)
    attempts = dict(store.query("SELECT model_type || '@' || hardware, attempts FROM jobs"))
    assert attempts["bert@cpu"] == attempts["gpt2@cuda"] == 2
    assert attempts["t5@cpu"] == 0


def test_duplicates_inside_one_batch_make_one_row(store: ResultsStore) -> None:
    result = RUN.result("bert", "cpu")
    assert store.record_results([result, result, result]) == 1
    assert store.query("SELECT count(*), max(attempts) FROM jobs") == [(1, 3)]


def test_the_first_terminal_result_wins_and_a_late_duplicate_only_raises_attempts(store: ResultsStore) -> None:
    # Given a job recorded done with its measurements
    assert store.record_results([RUN.result("bert", "cpu", latency=0.01)]) == 1
    # When a late duplicate arrives (a redelivery that failed this time, with other timings)
    assert store.record_results([RUN.result("bert", "cpu", latency=0.05, status="failed")]) == 0
    # Then the first result's row and measurements stay; only attempts counts the duplicate
    rows = store.query("SELECT p50, len(samples) FROM measurements WHERE metric = 'latency' AND batch_size = 1")
    assert len(rows) == 1
    assert rows[0][0] == pytest.approx(0.01, rel=0.05)
    assert rows[0][1] == RUN.samples
    assert store.query("SELECT status, attempts FROM jobs") == [("done", 2)]


def test_a_real_result_replaces_a_lost_row(store: ResultsStore) -> None:
    # Given a job the reconciler recorded lost (its message vanished)
    store.record_results([RUN.result("bert", "cpu", status="lost")])
    # When its real result arrives after all, Then it is written over the lost row
    assert store.record_results([RUN.result("bert", "cpu")]) == 1
    assert store.query("SELECT status FROM jobs") == [("done",)]


def test_running_then_result_counts_one_attempt(store: ResultsStore) -> None:
    store.record_run(RUN.plan())
    assert store.mark_running([RUN.key("bert", "cpu")], "w-1", time.time()) == 1
    assert store.run_progress("run-a").by_status["running"] == 1
    store.record_results([RUN.result("bert", "cpu")])
    assert store.query("SELECT status, attempts, worker_id FROM jobs WHERE model_type='bert' AND hardware='cpu'") == [
        ("done", 1, "synthetic-cpu-0")
    ]
    # a terminal job is not sent back to running by a late duplicate message
    assert store.mark_running([RUN.key("bert", "cpu")], "w-2", time.time()) == 0


def _with_measurement(result, m: Measurement):  # type: ignore[no-untyped-def]
    return replace(result, measurements=(*result.measurements, m))


def test_a_malformed_batch_writes_nothing(store: ResultsStore) -> None:
    good = RUN.result("bert", "cpu")
    bad = _with_measurement(RUN.result("gpt2", "cpu"), Measurement(metric="latency", unit=""))  # no unit
    with pytest.raises(ConfigError, match="unit"):
        store.record_results([good, bad])
    bad = _with_measurement(RUN.result("gpt2", "cpu"), Measurement("latency", "s", batch_size="one"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="malformed"):
        store.record_results([good, bad])
    assert _count(store, "jobs") == 0


def test_a_batch_failing_inside_duckdb_is_rolled_back_whole(store: ResultsStore) -> None:
    # Given a batch whose jobs upsert succeeds but whose measurements cannot be cast
    good = RUN.result("bert", "cpu")
    bad = _with_measurement(RUN.result("gpt2", "cpu"), Measurement("latency", "s", samples=("not a number",)))  # type: ignore[arg-type]
    # When it is recorded, Then the store error says so and neither job nor measurement was kept
    with pytest.raises(StoreError, match="rolled back"):
        store.record_results([good, bad])
    assert (_count(store, "jobs"), _count(store, "measurements")) == (0, 0)
    store.record_results([good])  # and the store is usable afterwards
    assert _count(store, "jobs") == 1


def test_progress_counts_jobs_of_one_device_model_under_its_target(store: ResultsStore) -> None:
    # Given a run whose cuda jobs target the h100 device model (they wait on hw.cuda.h100, not hw.cuda)
    plan = RUN.plan()
    jobs = tuple(replace(j, device_model="h100") if j.hardware == "cuda" else j for j in plan.jobs)
    store.record_run(replace(plan, jobs=jobs))
    # Then the progress counts them under the target the stall check names a queue for
    progress = store.run_progress("run-a")
    assert progress.by_hardware["cuda.h100"] == {"total": 3, "queued": 3} and "cuda" not in progress.by_hardware
    assert progress.by_hardware["cpu"]["total"] == 3


def test_progress_unfinished_and_phase_done(store: ResultsStore) -> None:
    store.record_run(RUN.plan())
    store.record_results([RUN.result("bert", "cpu"), RUN.result("gpt2", "cpu", status="failed")])
    progress = store.run_progress("run-a")
    assert progress.total == 6 and progress.terminal == 2
    assert progress.by_hardware["cpu"] == {"total": 3, "done": 1, "failed": 1, "queued": 1}
    assert progress.failures_total == 1 and progress.failures[0].model_type == "gpt2"
    assert progress.expected_s_left == pytest.approx(4 * 1.0 / RUN.slots)
    left = store.unfinished_jobs("run-a")
    assert sorted((s.model_type, s.hardware) for s in left) == [
        ("bert", "cuda"),
        ("gpt2", "cuda"),
        ("t5", "cpu"),
        ("t5", "cuda"),
    ]
    assert left[0].template is not None and left[0].template.body == "# synthetic\n"
    # a resumed job is the planned one: everything but the template comes from its spec column
    planned = {j.key: j for j in RUN.plan().jobs}
    assert all(job == planned[job.key] for job in left)
    assert not store.is_phase_done("run-a")
    store.record_results(
        [RUN.result(m, hw) for m in ("bert", "gpt2", "t5") for hw in ("cuda",)]
        + [RUN.result("t5", "cpu", status="skipped")]
    )
    assert store.is_phase_done("run-a")


def test_runs_previous_and_status(store: ResultsStore) -> None:
    for i, run_id in enumerate(("old", "mid", "new")):
        store.record_run(SyntheticRun(run_id, phase="2026-q4", created_at=1000.0 + i).plan())
    store.record_run(SyntheticRun("other", phase="2027-q1", created_at=999.0).plan())
    assert store.previous_run("2026-q4", "new") == "mid"
    assert store.previous_run("2026-q4", "old") is None
    assert [r.run.run_id for r in store.list_runs()] == ["new", "mid", "old", "other"]
    store.set_run_status("new", "complete")
    assert store.get_run("new").status == "complete"
    with pytest.raises(UnknownRunError):
        store.set_run_status("nope", "complete")
    with pytest.raises(ConfigError):
        store.set_run_status("new", "finished")


def test_past_durations_are_medians(store: ResultsStore) -> None:
    for i, d in enumerate((1.0, 3.0, 10.0)):
        run = SyntheticRun(f"r{i}")
        store.record_results([run.result("bert", "cpu", duration=d)])
    assert store.past_durations("cpu") == {"bert": 3.0}
    assert store.past_durations("cuda") == {}


def test_workers_register_and_refresh(store: ResultsStore) -> None:
    info = WorkerInfo("w-1", "host-a", "cuda", 0, "H100", 81920, "550.1", {"torch": "2.13.0"})
    store.register_worker(info)
    store.register_worker(info)
    assert store.query("SELECT worker_id, registrations, versions->>'torch' FROM workers") == [("w-1", 2, "2.13.0")]


def test_status_snapshot_round_trip(store: ResultsStore, tmp_path: Path) -> None:
    store.record_run(RUN.plan())
    path = store.write_status_snapshot("run-a", tmp_path / "status")
    assert not list(path.parent.glob("*.tmp"))
    snap = read_status_snapshot("run-a", tmp_path / "status")
    assert snap == store.run_progress("run-a", now=snap.updated_at)
    assert snap.total == 6 and snap.by_status == {"queued": 6}
    with pytest.raises(StoreError, match="no status snapshot"):
        read_status_snapshot("other", tmp_path / "status")


def test_export_parquet_and_csv(store: ResultsStore, tmp_path: Path) -> None:
    store.record_run(RUN.plan())
    store.record_results([RUN.result("bert", "cpu")])
    files = store.export_run("run-a", tmp_path / "pq", "parquet")
    got = duckdb.connect().execute(f"SELECT count(*), max(len(samples)) FROM '{files['measurements']}'").fetchone()
    assert got == (7, RUN.samples)
    files = store.export_run("run-a", tmp_path / "csv", "csv")
    with files["jobs"].open() as fh:
        assert len(list(csv.DictReader(fh))) == 6
    with files["measurements"].open() as fh:
        first = next(csv.DictReader(fh))
    assert len(json.loads(first["samples"])) in (RUN.samples, 1)
    with pytest.raises(ConfigError):
        store.export_run("run-a", tmp_path / "x", "xlsx")
    with pytest.raises(UnknownRunError):
        store.export_run("nope", tmp_path / "x", "csv")


def test_import_timings_from_samples(store: ResultsStore) -> None:
    assert store.record_import_timings([{"name": "accelerate_core", "samples": [0.3, 0.1, 0.2], "python": "3.11"}]) == 1
    assert store.query("SELECT name, n, median_s, min_s, extra->>'python' FROM import_timings") == [
        ("accelerate_core", 3, 0.2, 0.1, "3.11")
    ]
    with pytest.raises(ConfigError):
        store.record_import_timings([{"name": "x"}])


def test_second_writer_in_the_same_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "results.duckdb"
    with ResultsStore.open(path) as writer:
        with pytest.raises(StoreLockedError, match="already open read-write in this process"):
            ResultsStore.open(path)
        writer.record_run(RUN.plan())
        with ResultsStore.open(path, read_only=True) as reader:  # shares the writer's database
            assert reader.list_runs()[0].jobs == 6
            with pytest.raises(StoreError, match="read-only"):
                reader.record_run(RUN.plan())
    with ResultsStore.open(path) as again:  # the file is free once closed
        assert again.get_run("run-a").phase == "synthetic"


def test_read_only_on_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        ResultsStore.open(tmp_path / "none.duckdb", read_only=True)


def test_unusable_paths_give_store_errors(tmp_path: Path) -> None:
    (tmp_path / "junk.duckdb").write_text("not a database")
    (tmp_path / "file").write_text("")
    for path in (tmp_path / "junk.duckdb", tmp_path / "file" / "under-a-file.duckdb"):
        with pytest.raises(StoreError, match="results store"):
            ResultsStore.open(path)


def test_memory_store_has_the_same_api() -> None:
    with ResultsStore.memory() as s:
        s.record_run(RUN.plan())
        assert s.run_progress("run-a").total == 6


def test_run_params_change_only_through_update_run_params(store: ResultsStore) -> None:
    # Given a recorded run
    plan = RUN.plan()
    store.record_run(plan)
    # When the same run is recorded again with other params, nothing changes
    store.record_run(replace(plan, params=replace(plan.params, slots=99)))
    assert store.get_run("run-a").params == plan.params
    # When its executor records its figures, Then exactly those are stored
    figures = replace(plan.params, makespan=(Makespan(slots=2, wall_s=10.0, busy_s=15.0),))
    store.update_run_params("run-a", figures)
    assert store.get_run("run-a").params == figures and figures.makespan[0].efficiency == 0.75
    with pytest.raises(UnknownRunError):
        store.update_run_params("nope", figures)


def _legacy_store(path: Path) -> None:
    """A schema-1 file as the code before the versioned wire format wrote it."""
    conn = duckdb.connect(str(path))
    conn.execute(schema._VERSION_TABLE)
    for statement in schema.MIGRATIONS[0].statements:
        conn.execute(statement)
    conn.execute("INSERT INTO schema_version VALUES (1, 'v1', 0)")
    params = {"models": "bert,blt", "modality": None, "hardware": ["cpu"], "kind": "test", "n_jobs": 2,
              "bench": {"warmup": 5, "min_iters": 10, "min_duration_s": 0.3, "max_duration_s": 2.0, "new_tokens": 4},
              "batch_sizes": [1, 4], "seq_lens": [16], "n_skipped": 1, "expected_work_s": 1.2, "history_used": False,
              "skipped": {"k-blt": {"reason_class": "component", "reason": "a sub-model"}}, "slots": 2,
              "makespan": [{"run_id": "old", "status": "complete", "slots": 2, "wall_s": 4.0,
                            "busy_s": 6.0}]}  # fmt: skip
    conn.execute("INSERT INTO runs VALUES ('old', 'p', 1.0, ?, '0.1', 'complete', 2.0)", [json.dumps(params)])
    for key, model in (("k-bert", "bert"), ("k-blt", "blt")):
        spec = {"key": key, "run_id": "old", "model_type": model, "hardware": "cpu", "kind": "test",
                "template": None, "batch_sizes": [1, 4], "seq_lens": [16], "soft_limit_s": 60.0,
                "hard_limit_s": 90.0, "mem_cap_mb": 2048, "expected_s": 1.2, "bench": {"warmup": 5}}  # fmt: skip
        conn.execute(
            "INSERT INTO jobs (job_key, run_id, model_type, hardware, kind, status, attempts, spec, updated_at) "
            "VALUES (?, 'old', ?, 'cpu', 'test', 'queued', 0, ?, 0)",
            [key, model, json.dumps(spec)],
        )
    conn.close()


def test_a_store_from_before_the_wire_format_is_upgraded_on_first_read(tmp_path: Path) -> None:
    # Given a schema-1 file with unversioned params and specs
    path = tmp_path / "results.duckdb"
    _legacy_store(path)
    # When it is opened read-only (as `accel status` or `accel report` would)
    with ResultsStore.open(path, read_only=True) as store:
        run = store.get_run("old")
        jobs = {j.key: j for j in store.unfinished_jobs("old")}
        version = store.schema_version()
    # Then it was migrated once, and every old value reads back as its contract
    assert version == SCHEMA_VERSION
    assert run.params.slots == 2 and run.params.bench.batch_sizes == (1, 4) and run.params.bench.warmup == 5
    assert run.params.makespan == (Makespan(slots=2, wall_s=4.0, busy_s=6.0, status="complete"),)
    assert jobs["k-bert"].skip is None and jobs["k-bert"].limits.hard_s == 90.0
    assert jobs["k-bert"].bench.batch_sizes == (1, 4) and jobs["k-bert"].limits.mem_cap_mb == 2048
    assert jobs["k-blt"].skip == SkipReason("component", "a sub-model")


def test_a_cancelled_job_stays_cancelled_when_its_late_result_arrives(store: ResultsStore) -> None:
    # Given a job recorded cancelled (accel cancel) while it still ran on a node
    store.record_run(RUN.plan())
    cancelled = replace(RUN.result("bert", "cpu"), status="cancelled", error_class="revoked", measurements=())
    store.record_results([cancelled])
    # When its result comes back late, Then the row and its (absent) measurements stay as the cancel left them
    assert store.record_results([RUN.result("bert", "cpu", latency=0.01)]) == 0
    assert store.query("SELECT status FROM jobs WHERE job_key = ?", [RUN.key("bert", "cpu")]) == [("cancelled",)]
    assert _count(store, "measurements") == 0


def test_dry_round_trips_are_per_node_from_the_runs_planning_to_the_node_finishing(store: ResultsStore) -> None:
    from accelerate_core.contracts import JobResult, JobSpec, RunParams, RunPlan, job_key

    specs = [JobSpec(key=job_key("dry-1", f"n{i}", "cpu", "dry"), run_id="dry-1", model_type=f"n{i}", hardware="cpu",
                     kind="dry") for i in range(3)]  # fmt: skip
    store.record_run(RunPlan("dry-1", "dry", 1000.0, RunParams(kind="dry", n_jobs=3), tuple(specs)))
    # Given two nodes' results written in one batch (one write time), and a job still queued
    store.record_results([
        JobResult.for_spec(specs[0], status="done", started_at=1000.1, finished_at=1000.25, worker_id="cpu0@a"),
        JobResult.for_spec(specs[1], status="done", started_at=1000.1, finished_at=1000.5, worker_id="cpu1@b"),
    ])  # fmt: skip
    # Then each node's round trip is its own
    assert store.run_progress("dry-1").round_trip_s == {"cpu0@a": pytest.approx(0.25), "cpu1@b": pytest.approx(0.5)}


def test_export_optimum_reports_hold_the_stored_numbers(store: ResultsStore, tmp_path: Path) -> None:
    from accelerate_core.bench.stats import percentile

    store.record_run(RUN.plan())
    store.record_results([RUN.result("bert", "cpu"), RUN.result("gpt2", "cuda")])
    files = store.export_run("run-a", tmp_path / "opt", "optimum")
    assert set(files) == {f"{m}/{hw}/float32/b{b}-s16" for m, hw in (("bert", "cpu"), ("gpt2", "cuda")) for b in (1, 4)}
    for model, hardware, batch, samples, p50, p90, p99, mean in store.query(
        """SELECT j.model_type, j.hardware, m.batch_size, m.samples, m.p50, m.p90, m.p99, m.mean
           FROM measurements m JOIN jobs j USING (job_key) WHERE m.metric = 'latency'"""
    ):
        report = json.loads(files[f"{model}/{hardware}/float32/b{batch}-s16"].read_text())
        latency = report["forward"]["latency"]
        assert latency["unit"] == "s" and latency["values"] == samples and latency["count"] == len(samples)
        assert (latency["p50"], latency["p90"], latency["p99"], latency["mean"]) == (p50, p90, p99, mean)
        assert latency["p95"] == percentile(sorted(samples), 95) and p90 <= latency["p95"] <= p99
        assert report["forward"]["throughput"] == {"unit": "samples/s", "value": batch / mean}
        assert report["forward"]["memory"] == {"unit": "MB", "max_allocated": (100.0 + batch) * 2**20 / 1e6}
    with pytest.raises(ConfigError):
        store.export_run("run-a", tmp_path / "x", "optimum-x")


def test_an_optimum_bundle_cannot_write_outside_its_folder(tmp_path: Path) -> None:
    from accelerate_core.store.export import save_table

    with pytest.raises(StoreError, match="outside"):
        save_table("benchmark_reports", "optimum", b'{"../../evil/benchmark_report.json": {}}', tmp_path / "o")
    with pytest.raises(StoreError, match="not JSON"):
        save_table("benchmark_reports", "optimum", b"<html>", tmp_path / "o")
    assert not (tmp_path / "evil").exists()

"""The results store's ingest branches: rows that exist are updated, the others inserted; measurements are
replaced only where a result wrote some; statistics are computed only where a measurement lacks them."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

import pytest

from accelerate_core.bench.stats import sample_stats
from accelerate_core.contracts import Measurement
from accelerate_core.store import ResultsStore
from accelerate_core.store.synthetic import SyntheticRun

RUN = SyntheticRun("run-i", models=("bert", "gpt2", "t5"), hardware=("cpu",), shapes=((1, 16),))
OTHER = SyntheticRun("run-unplanned", models=("bert",), hardware=("cpu",), shapes=((1, 16),))
SAMPLES = (0.5, 0.1, 0.4, 0.2, 0.3, 0.9)


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    with ResultsStore.open(tmp_path / "results.duckdb") as s:
        yield s


def _measured(store: ResultsStore, key: str) -> list[tuple[object, ...]]:
    return store.query("SELECT metric, samples FROM measurements WHERE job_key = ? ORDER BY metric", [key])


def test_a_result_over_a_lost_row_that_has_measurements_replaces_them(store: ResultsStore) -> None:
    # Given a job recorded lost with a measurement of its own (a result wrote that row)
    key = RUN.key("bert", "cpu")
    stale = Measurement("latency", "s", 1, 16, (9.0, 9.0), 2, 9.0, 9.0, 9.0, 9.0, 0.0)
    store.record_results([replace(RUN.result("bert", "cpu", status="lost"), measurements=(stale,))])
    assert _measured(store, key) == [("latency", [9.0, 9.0])]
    # When its real result arrives
    done = RUN.result("bert", "cpu")
    assert store.record_results([done]) == 1
    # Then the lost row's measurement is gone and exactly the result's measurements are kept
    assert sorted(_measured(store, key)) == sorted((m.metric, list(m.samples)) for m in done.measurements)
    assert store.query("SELECT status, attempts FROM jobs") == [("done", 2)]


def test_one_batch_updates_planned_and_running_rows_and_inserts_unplanned_ones(store: ResultsStore) -> None:
    # Given a planned run, one of its jobs marked running, and a run that was never planned
    store.record_run(RUN.plan())
    store.mark_running([RUN.key("gpt2", "cpu")], "w-1", time.time())
    # When one batch holds results for a planned, a running and an unplanned job
    batch = [RUN.result("bert", "cpu"), RUN.result("gpt2", "cpu"), OTHER.result("bert", "cpu", status="failed")]
    assert store.record_results(batch) == 3
    # Then each has one row: the planned ones keep their spec, the unplanned one has none; one attempt each
    rows = store.query("SELECT run_id, model_type, status, attempts, spec IS NOT NULL FROM jobs ORDER BY ALL")
    assert rows == [
        ("run-i", "bert", "done", 1, True),
        ("run-i", "gpt2", "done", 1, True),
        ("run-i", "t5", "queued", 0, True),
        ("run-unplanned", "bert", "failed", 1, False),
    ]
    assert store.query("SELECT count(DISTINCT job_key), count(*) FROM measurements") == [(2, 8)]


def test_statistics_are_computed_only_where_a_measurement_lacks_them(store: ResultsStore) -> None:
    # Given one measurement without statistics, one with a NaN p50, and a batch whose statistics are all given
    bare = Measurement("latency", "s", 1, 16, SAMPLES, len(SAMPLES))
    nan_p50 = Measurement("throughput", "1/s", 1, 16, SAMPLES, 6, math.nan, 7.0, 8.0, 5.0, 1.0)
    given = Measurement("latency", "s", 1, 16, SAMPLES, 6, 1.0, 2.0, 3.0, 4.0, 5.0)  # as sent, not recomputed
    store.record_results([replace(RUN.result("bert", "cpu"), measurements=(bare, nan_p50))])
    store.record_results([replace(RUN.result("gpt2", "cpu"), measurements=(given,))])
    # Then the missing ones are computed from the samples, as the runner computes them, and the given ones kept
    stats = store.query(
        "SELECT model_type, metric, p50, p90, p99, mean, stdev FROM measurements JOIN jobs USING (job_key) ORDER BY ALL"
    )
    want = sample_stats(SAMPLES)
    (bert_latency, bert_throughput, gpt2_latency) = stats
    assert bert_latency[2:] == pytest.approx([want[k] for k in ("p50", "p90", "p99", "mean", "stdev")])
    assert bert_throughput[2:] == pytest.approx([want["p50"], 7.0, 8.0, 5.0, 1.0])
    assert gpt2_latency == ("gpt2", "latency", 1.0, 2.0, 3.0, 4.0, 5.0)

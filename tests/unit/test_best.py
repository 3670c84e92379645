"""``--hardware best`` on a real DuckDB file: the fastest target that passed last time, else the rule; and
``accel plan --explain`` saying so."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from accelerate_core.contracts import JobResult
from accelerate_core.hardware_history import latest_outcomes
from accelerate_core.store import ResultsStore
from accelerate_core.store.synthetic import SyntheticRun
from scheduler.best import SMALL_MODEL_PARAMS, Available, choose
from tests.support.cli import accel, seed_catalog_index

MODELS = ("bert", "gpt2")


def _on(result: JobResult, device: str) -> JobResult:
    return replace(result, environment={**result.environment, "device_model": device})


def _seed(path: Path) -> None:
    """An A100 run, then an H100 run (bert fastest there; gpt2 fastest there once, but it failed there last)."""
    with ResultsStore.open(path) as store:
        runs = [
            (SyntheticRun("r1", "p", models=MODELS, hardware=("cpu", "cuda"), created_at=1.0), "a100", 0.004),
            (SyntheticRun("r2", "p", models=MODELS, hardware=("cuda",), created_at=2.0), "h100", 0.002),
            (SyntheticRun("r3", "p", models=("gpt2",), hardware=("cuda",), created_at=3.0), "h100", 0.001),
        ]
        for run, device, p50 in runs:
            store.record_run(run.plan())
            for model in run.models:
                for hw in run.hardware:
                    failed = run.run_id == "r3"
                    result = run.result(model, hw, latency=p50 if hw == "cuda" else 0.05, spread=0.0,
                                        status="failed" if failed else "done")  # fmt: skip
                    store.record_results([_on(result, device if hw == "cuda" else "xeon")])


@pytest.fixture
def history(tmp_path: Path) -> dict[str, list]:  # type: ignore[type-arg]
    _seed(tmp_path / "results.duckdb")
    with ResultsStore.open(tmp_path / "results.duckdb") as store:
        return latest_outcomes(store.query)


EVERYTHING = Available(("cpu", "cuda"), {"cpu": ("xeon",), "cuda": ("a100", "h100")})


def test_the_fastest_target_that_passed_last_time_wins(history: dict[str, list]) -> None:  # type: ignore[type-arg]
    # Given bert fastest on the H100, and gpt2 fastest on the H100 but failing there in its latest run
    bert, gpt2 = choose("bert", 10**8, history, EVERYTHING), choose("gpt2", 10**8, history, EVERYTHING)
    # Then bert runs on the H100 and gpt2 on the A100, each saying why with the p50s it saw
    assert (bert.target, bert.source) == ("cuda:h100", "history") and "p50 2 ms (run r2)" in bert.why
    assert (gpt2.target, gpt2.source) == ("cuda:a100", "history") and "p50 4 ms (run r1)" in gpt2.why
    assert [(s.target, s.status) for s in gpt2.seen] == [("cuda:a100", "done"), ("cpu:xeon", "done"),
                                                         ("cuda:h100", "failed")]  # fmt: skip


def test_a_target_no_live_node_offers_is_passed_over(history: dict[str, list]) -> None:  # type: ignore[type-arg]
    # Given no H100 node live now, Then bert goes to the A100; and with no cuda node at all, to the cpu
    assert choose("bert", None, history, Available(("cpu", "cuda"), {"cuda": ("a100",)})).target == "cuda:a100"
    assert choose("bert", None, history, Available(("cpu",))).target == "cpu:xeon"


def test_cold_start_follows_the_rule_by_kind_and_size() -> None:
    # Given no history at all
    big = choose("llama", 10**9, {}, EVERYTHING)
    small = choose("tiny", SMALL_MODEL_PARAMS - 1, {}, EVERYTHING)
    # Then a big model goes to the preferred accelerator, a small one to the cpu, each saying it is the rule
    assert (big.target, big.source) == ("cuda", "rule") and "no history; rule cuda > rocm > mps > cpu" in big.why
    assert (small.target, small.source) == ("cpu", "rule") and "small model" in small.why


def test_a_decision_takes_well_under_a_millisecond(history: dict[str, list]) -> None:  # type: ignore[type-arg]
    # Given the history of 5000 models (the query's answer is in memory), When each model's target is chosen
    many = {f"m{i}": history["gpt2"] for i in range(5000)}
    started = time.perf_counter()
    choices = [choose(m, 10**8, many, EVERYTHING) for m in many]
    per_model = (time.perf_counter() - started) / len(many)
    # Then each decision took under 1 ms (the budget), on a loaded machine too
    assert per_model < 1e-3 and {c.target for c in choices} == {"cuda:a100"}


def test_plan_explain_json_names_each_models_hardware_and_why(tmp_path: Path) -> None:
    # Given a results DB with cpu history for bert and gpt2 (this machine has a cpu only)
    seed_catalog_index(tmp_path)
    _seed(tmp_path / "results.duckdb")
    env = {"ACCEL_RESULTS_DB": str(tmp_path / "results.duckdb"), "ACCEL_DEVICE_MODEL": "xeon",
           "ACCEL_TEMPLATES_DB": str(tmp_path / "templates.duckdb")}  # fmt: skip
    # When `accel plan --hardware best --explain --json` plans bert, gpt2 and vit
    done = accel("plan", "--models", "bert,gpt2,vit", "--hardware", "best", "--explain", "--json", cwd=tmp_path,
                 env=env)  # fmt: skip
    # Then bert and gpt2 run on the cpu from history, vit (never run) by the rule
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    why = {e["model"]: (e["hardware"], e["source"]) for e in found["explain"]}
    assert why == {"bert": ("cpu:xeon", "history"), "gpt2": ("cpu:xeon", "history"), "vit": ("cpu", "rule")}
    assert found["jobs"] == 3 and found["by_hardware"] == {"cpu.xeon": 2, "cpu": 1}
    # and an unknown device model is one line, exit 2
    bad = accel("plan", "--models", "bert", "--hardware", "cpu:h100", cwd=tmp_path, env=env)
    assert bad.returncode == 2 and bad.stderr.splitlines() == [
        "accel: error: --hardware cpu:h100 names no known device model: known cpu:xeon"
    ]

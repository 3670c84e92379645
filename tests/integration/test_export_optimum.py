"""``accel runs export RUN --format optimum`` after a real local ``accel run``: the reports hold the store's numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from accelerate_core.bench.stats import percentile
from accelerate_core.store import ResultsStore

REPO = Path(__file__).resolve().parents[2]


def _accel(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scheduler", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_optimum_export_of_a_local_run(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
    env.update(ACCEL_RESULTS_DB=str(tmp_path / "results.duckdb"), ACCEL_TEMPLATES_DB=str(tmp_path / "t.duckdb"),
               ACCEL_REPORTS_DIR=str(tmp_path / "reports"))  # fmt: skip
    # Given a local run of two tiny models on the CPU
    done = _accel("run", "--phase", "opt", "--models", "bert,gpt2", "--hardware", "cpu", "-j", "2", "--json", env=env)
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    # When it is exported as optimum-benchmark reports
    done = _accel("runs", "export", run_id, "--format", "optimum", "--out", str(tmp_path / "opt"), "--json", env=env)
    assert done.returncode == 0, done.stderr
    files = {folder: Path(path) for folder, path in json.loads(done.stdout).items()}
    # Then each latency row of the store is one benchmark_report.json with its numbers, p95 from its samples
    with ResultsStore.open(tmp_path / "results.duckdb", read_only=True) as store:
        rows = store.query(
            """SELECT j.model_type, m.batch_size, m.seq_len, m.samples, m.p50, m.p90, m.p99, m.mean, m.n
               FROM measurements m JOIN jobs j USING (job_key) WHERE m.run_id = ? AND m.metric = 'latency'""",
            [run_id],
        )
        tokens = dict(store.query(
            """SELECT j.model_type, m.mean FROM measurements m JOIN jobs j USING (job_key)
               WHERE m.run_id = ? AND m.metric = 'tokens_per_s'""", [run_id]))  # fmt: skip
    assert set(tokens) == {"gpt2"}  # a generative model's throughput is its tokens/s, as optimum-benchmark's
    assert {r[0] for r in rows} == {"bert", "gpt2"}
    assert set(files) == {f"{model}/cpu/float32/b{batch}-s{seq}" for model, batch, seq, *_ in rows}
    for model, batch, seq, samples, p50, p90, p99, mean, n in rows:
        report = json.loads(files[f"{model}/cpu/float32/b{batch}-s{seq}"].read_text())
        latency = report["forward"]["latency"]
        assert (latency["p50"], latency["p90"], latency["p99"], latency["mean"], latency["count"]) == (
            p50, p90, p99, mean, n
        )  # fmt: skip
        assert latency["values"] == samples and latency["p95"] == percentile(sorted(samples), 95)
        expected = {"unit": "tokens/s", "value": tokens[model]} if model in tokens else {
            "unit": "samples/s", "value": batch / mean
        }  # fmt: skip
        assert report["forward"]["throughput"] == expected
        assert report["forward"]["memory"]["unit"] == "MB" and report["forward"]["memory"]["max_allocated"] > 0
        # And a generative model's shape has optimum-benchmark's generation split, an encoder's none
        if model in tokens:
            prefill, per_token = report["prefill"]["latency"], report["per_token"]["latency"]
            assert prefill["count"] >= 1 and prefill["mean"] > 0 and report["prefill"]["throughput"]["value"] > 0
            assert per_token["count"] >= prefill["count"] and min(per_token["values"]) > 0
            assert report["decode"]["throughput"] == {"unit": "tokens/s", "value": batch / per_token["mean"]}
        else:
            assert not {"prefill", "decode", "per_token"} & set(report)
    # And the run's report shows the time to first token and the per-token decode latency of gpt2 only
    report_rows = json.loads((tmp_path / "reports" / run_id / "report.json").read_text())["rows"]
    split = {r["model_type"]: (r["ttft_s"], r["itl_s"]) for r in report_rows}
    assert split["bert"] == (None, None)
    assert split["gpt2"][0] > 0 and split["gpt2"][1] > 0

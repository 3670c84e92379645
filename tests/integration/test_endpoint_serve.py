"""``accel endpoint bench`` and ``check`` against a real ``transformers serve`` (the ``serving`` extra).

The server is a real process on a free loopback port, serving a tiny Llama and a BPE tokenizer both
made offline by the session fixture (``tests/support/chat_model.py``), started once and killed at the end.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from tests.support.chat_model import ServeProcess, build_in_child
from tests.support.cli import seed_catalog_index
from tests.support.redis_server import free_port

CLI = "import sys\nfrom scheduler.cli import main\nsys.exit(main(sys.argv[1:]))"
MAX_TOKENS = 12


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """``transformers serve DIR`` with the tiny chat model, ready to answer."""
    workdir = tmp_path_factory.mktemp("serve")
    server = ServeProcess(build_in_child(workdir / "tiny-chat-llama"), free_port(), workdir / "serve.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def accel(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CLI, "endpoint", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def bench_json(served: ServeProcess) -> dict:
    """One ``accel endpoint bench URL --model DIR --concurrency 1,4 --json`` run, shared by the tests."""
    model = str(served.model_dir)
    done = accel(
        "bench", served.url, "--model", model, "--concurrency", "1,4", "--requests", "8",
        "--max-tokens", str(MAX_TOKENS), "--prompt-tokens", "24", "--tokenizer", model, "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_bench_reports_ttft_itl_and_tokens_per_s_at_1_and_4(bench_json):
    levels = bench_json["levels"]
    assert [level["concurrency"] for level in levels] == [1, 4]
    for level in levels:
        assert level["sent"] == level["ok"] == 8 and level["errors"] == {}
        assert level["ttft_s"]["p50"] > 0 and level["ttft_s"]["n"] == 8
        assert level["itl_s"]["p50"] > 0 and level["itl_s"]["n"] >= 8
        assert level["e2e_s"]["p99"] >= level["e2e_s"]["p50"] >= level["ttft_s"]["p50"]
        assert level["output_tokens_per_s"] > 0 and level["requests_per_s"] > 0
        # The model has no EOS: every request generates exactly max_tokens, as the server's usage says.
        assert all(s["output_tokens"] == MAX_TOKENS for s in level["samples"])
        assert len(level["samples"]) == 8 and all(s["ok"] for s in level["samples"])


def test_prompt_lengths_are_checked_against_the_servers_count(bench_json):
    assert bench_json["prompts_counted_by"] == "tokenizer"
    samples = [s for level in bench_json["levels"] for s in level["samples"]]
    assert all(20 <= s["prompt_tokens"] <= 24 for s in samples)
    # The server counts the same message tokens plus a fixed chat-template overhead.
    overhead = {s["server_prompt_tokens"] - s["prompt_tokens"] for s in samples}
    assert len(overhead) == 1 and 0 < overhead.pop() < 20


def test_four_clients_really_overlap_at_concurrency_4(bench_json):
    spans = sorted((s["start_s"], s["start_s"] + s["e2e_s"]) for s in bench_json["levels"][1]["samples"])
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))


def test_the_table_and_the_functional_check(served):
    model = str(served.model_dir)
    table = accel("bench", served.url, "--model", model, "--requests", "2", "--max-tokens", "4", "--warmup", "1")
    assert table.returncode == 0, table.stderr
    assert "TTFT ms p50/p90/p99" in table.stdout and "out tok/s" in table.stdout
    check = accel("check", served.url, "--model", model, "--json")
    assert check.returncode == 0, check.stdout + check.stderr
    assert json.loads(check.stdout)["ok"] is True


def test_a_phase_run_lists_the_served_model_as_api_rows_beside_cpu(served, tmp_path):
    """The Done-when run: ``accel run`` on the embedded default, one CPU model plus the served model.

    One CPU model is enough to show the served model's row beside a local one: a second (gpt2 here before) cost
    another build and benchmark in the child and proved nothing more (the local run itself has its own tests).
    """
    token = "sk-serve-phase-0123456789abcdef"
    seed_catalog_index(tmp_path)  # runs from tmp_path: give it the checkout's index instead of a fresh build
    env = {**os.environ, "ACCEL_RESULTS_DB": str(tmp_path / "results.duckdb"), "ACCEL_BROKER_URL": "",
           "ACCEL_REPORTS_DIR": str(tmp_path / "reports"), "ACCEL_TEMPLATES_DB": str(tmp_path / "templates.duckdb"),
           "ACCEL_CONCURRENCY": "1", "ACCEL_ENDPOINT_TOKEN_TINY": token}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", CLI, "run", "--phase", "serve-phase", "--models", "bert", "--hardware", "cpu",
         "--endpoint", f"tiny={served.url}@{served.model_dir}", "--json"],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    report = json.loads(Path(summary["report_files"]["json"]).read_text())
    rows = {(r["model_type"], r["hardware"]): r for r in report["rows"]}
    assert rows[("bert", "cpu")]["status"] == "done" and set(rows) == {("bert", "cpu"), ("tiny-chat-llama", "api:tiny")}
    served_row = rows[("tiny-chat-llama", "api:tiny")]
    assert served_row["status"] == "done" and served_row["p50_s"] > 0
    assert {h["name"] for h in report["by_hardware"]} == {"cpu", "api:tiny"}
    markdown = Path(summary["report_files"]["md"]).read_text()
    assert "api:tiny" in markdown and "tiny-chat-llama" in markdown
    with duckdb.connect(str(tmp_path / "results.duckdb"), read_only=True) as conn:
        sql = "SELECT DISTINCT m.metric FROM measurements m JOIN jobs j USING (job_key) WHERE j.hardware = 'api:tiny'"
        metrics = {m for (m,) in conn.execute(sql).fetchall()}
    assert {"ttft", "itl", "latency", "tokens_per_s"} <= metrics
    for path in [tmp_path / "results.duckdb", *(tmp_path / "reports").rglob("*")]:
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
    assert token not in done.stdout + done.stderr

"""The writer scale benchmark (benchmarks/bench_writer_scale.py) at a tiny size: its JSON, and nothing lost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_writer_scale.py"


def bench(*args: str, timeout_s: float = 300) -> dict[str, Any]:
    done = subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, done.stderr[-3000:]
    out: dict[str, Any] = json.loads(done.stdout)
    return out


def check_nothing_lost(out: dict[str, Any]) -> None:
    legs = [out["drain"], *out["paced"], *([out["saturate"]] if out["saturate"] else [])]
    for leg in legs:
        assert leg["committed"] == leg.get("sent", leg.get("results")), leg
    assert out["lost"] == 0
    assert out["committed_in_store"] == out["sent"] > 0
    assert out["dead_letters"] == 0 and out["duplicates"] == 0


@pytest.mark.redis
def test_tiny_run_reports_every_figure_and_loses_nothing() -> None:
    out = bench("--workers", "2", "--interval", "0.05", "--duration", "0.3", "--drain", "30", "--saturate", "0",
                "--procs", "1")  # fmt: skip
    check_nothing_lost(out)
    assert out["benchmark"] == "writer_scale" and out["synthetic_results"] is True
    drain = out["drain"]
    assert drain["results"] == 30 and drain["writer_results_per_s"] > 0
    # A queued result is its message (signed JSON of 10 measurements) plus Redis's overhead.
    assert drain["redis_bytes_per_queued_result"] >= drain["result_message_bytes"] > 1000
    assert drain["redis_bytes_per_queued_job"] > 0
    (leg,) = out["paced"]
    assert leg["workers"] == 2 and leg["sent"] == 12 and leg["offered_per_s"] == 40.0
    assert isinstance(leg["bounded"], bool) and leg["backlog_max"] >= 0 and leg["oldest_age_max_s"] >= 0
    holds = out["fleet_one_writer_holds"]
    assert holds["workers"] == int(out["writer_max_results_per_s"] * holds["job_s"])
    assert out["load_avg_1m_start"] >= 0 and out["cpu_count"] >= 1


def test_bad_arguments_are_one_line_and_exit_2() -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--workers", "0,x"], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert "--workers wants positive integers" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
@pytest.mark.redis
def test_default_sweep_finds_a_bounded_fleet_and_loses_nothing() -> None:
    out = bench(timeout_s=1800)
    check_nothing_lost(out)
    assert out["largest_bounded_workers"] >= 1
    assert [leg["workers"] for leg in out["paced"]] == [1, 8, 32, 128]

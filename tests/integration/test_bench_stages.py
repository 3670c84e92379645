"""The stage benchmarks and the writer's decode benchmark run end to end and print figures that add up (a few dry
jobs: the fork server's start dominates, hence ``slow``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _bench(name: str, *args: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / name), *args], cwd=REPO, capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    data: dict[str, object] = json.loads(out.stdout)
    return data


@pytest.mark.slow
def test_bench_dry_job_splits_a_dry_jobs_cost() -> None:
    data = _bench("bench_dry_job.py", "--jobs", "6", "--server-jobs", "3")
    local = data["local_executor"]
    assert isinstance(local, dict) and local["jobs"] == 6
    parts = local["breakdown_ms"]
    assert parts["child"] > parts["runner"] > 0 and parts["entry"] > 0
    assert local["per_job_ms"] == pytest.approx(parts["child"] + parts["server"], abs=0.05)
    assert data["fork_floor"]["fork_exit_wait_ms"]["p50"] > 0  # type: ignore[index]


def test_bench_full_run_refuses_a_bad_slot_count_in_one_line() -> None:
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_full_run.py"), "--slots", "0"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0 and "--slots" in out.stderr


def test_bench_decode_splits_the_writers_cost_per_result() -> None:
    data = _bench("bench_decode.py", "--results", "20", "--rounds", "1")
    us = data["us_per_result"]
    assert isinstance(us, dict) and min(us.values()) > 0
    assert us["total"] == pytest.approx(us["envelope"] + us["verify"] + us["decode"], abs=0.2)
    assert data["message_bytes"] > 10_000  # type: ignore[operator]

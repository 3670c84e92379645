"""``deploy/scripts/gpu-check.sh`` run for real on the CPU (``ACCEL_GPU_CHECK_HARDWARE=cpu``): the same steps as
on a GPU machine (detect, bench, a pinned-worker fleet run on its own redis-server, the optimum export, the
summary) with the tests' Python and two tiny models; then stopped mid-run, it leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.processes import wait_for

pytestmark = pytest.mark.redis

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "scripts" / "gpu-check.sh"


def _env(out: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
    env.update(OUT=str(out), ACCEL_GPU_CHECK_HARDWARE="cpu", ACCEL_GPU_CHECK_PYTHON=sys.executable,
               ACCEL_GPU_CHECK_STEP_S="400", PYTHONPATH=str(REPO))  # fmt: skip
    return env | extra


def _ours(out: Path) -> list[int]:
    """Processes whose environment names ``out``: what the script started (and did not end)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(out).encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_the_check_runs_every_step_and_writes_the_summary(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(SCRIPT)], env=_env(out), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stderr, (out / "steps.tsv").read_text())
    summary = json.loads((out / "summary.json").read_text())
    steps = {s["step"]: s["exit"] for s in summary["steps"]}
    assert steps == dict.fromkeys(("torch", "pytest_gpu", "detect", "bench", "fleet", "export"), 0)
    assert summary["detect"] and summary["torch"]["torch"]
    assert summary["bench"]["model"] == "bert" and summary["bench"]["latency_p50_s"] > 0
    assert summary["bench"]["param_count"] > 0
    fleet = summary["fleet"]
    assert fleet["by_status"] == {"done": 2} and {j["model"] for j in fleet["jobs"]} == {"bert", "gpt2"}
    assert all(j["latency_p50_s"] > 0 for j in fleet["jobs"])
    assert summary["optimum_reports"] == 2 and len(list((out / "optimum").rglob("benchmark_report.json"))) == 2
    assert "| fleet | 0 |" in (out / "summary.md").read_text()
    assert _ours(out) == []  # redis-server, the writer and the worker are gone


def test_stopped_mid_run_it_leaves_nothing_running(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(["bash", str(SCRIPT)], env=_env(out), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        # When the fleet is up (the worker has logged) and the run is under way, the script gets SIGTERM
        wait_for(lambda: (out / "worker.log").is_file() and (out / "fleet.err").is_file(), 300, "the fleet step")
        assert len(_ours(out)) >= 3
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
    # Then within a while every process it started has ended
    deadline = time.monotonic() + 60
    while _ours(out) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _ours(out) == []


def test_an_unknown_hardware_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = subprocess.run(["bash", str(SCRIPT)], env=_env(tmp_path, ACCEL_GPU_CHECK_HARDWARE="tpu"),
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "use cuda, rocm or cpu" in done.stderr

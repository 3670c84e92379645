"""`accel status` reads the results DB, or the holder's snapshot while another process holds the DB."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from accelerate_core.catalog.index import IndexEntry
from accelerate_core.config import Settings
from accelerate_core.contracts import JobResult, RunPlan, TemplateRef
from accelerate_core.errors import StoreLockedError, UnknownRunError
from accelerate_core.store import ResultsStore
from scheduler.plan import PlanOptions, plan_run
from scheduler.status import format_status, run_status


def _entry(name: str, runnable: bool = True) -> IndexEntry:
    return IndexEntry(model_type=name, modality="text", family="encoder", model_class=None, config_class="C",
                      runnable=runnable, reason_class=None if runnable else "component", reason="a part")  # fmt: skip


def _recorded_run(settings: Settings) -> RunPlan:
    """A run of four jobs: one skipped, one done, one failed, one still queued."""
    index = [_entry("bert"), _entry("gpt2"), _entry("vit"), _entry("blt_patcher", runnable=False)]
    ref = TemplateRef(name="t", sha="0" * 64, body="def test_x():\n    pass\n")
    plan = plan_run(PlanOptions(phase="st", models="all"), index, settings, template_for=lambda e, hw: ref,
                    now=1_790_000_000.0, token="abcd")  # fmt: skip
    jobs = plan.runnable()
    done = JobResult(key=jobs[0].key, run_id=plan.run_id, model_type=jobs[0].model_type, hardware="cpu",
                     kind="test", status="done", duration_s=1.0, finished_at=1.0)  # fmt: skip
    failed = JobResult(key=jobs[1].key, run_id=plan.run_id, model_type=jobs[1].model_type, hardware="cpu",
                       kind="test", status="failed", error_class="forward-error", error_message="boom",
                       duration_s=2.0, finished_at=2.0)  # fmt: skip
    settings.results_db.parent.mkdir(parents=True, exist_ok=True)
    with ResultsStore.open(settings.results_db) as store:
        store.record_run(plan)
        store.record_results([*plan.skipped_results(now=1.0), done, failed])
    return plan


def test_status_reads_the_db_and_names_failures(settings: Settings) -> None:
    plan = _recorded_run(settings)
    status = run_status(settings)  # latest run
    assert status.snapshot.run_id == plan.run_id and status.source == "db"
    assert status.snapshot.by_status == {"done": 1, "failed": 1, "queued": 1, "skipped": 1}
    lines = format_status(status)
    assert "2/4 finished" not in lines[0] and "3/4 finished" in lines[0]
    assert any("forward-error: boom" in line for line in lines)
    assert any(line.strip().startswith("expected time left") for line in lines)
    with pytest.raises(UnknownRunError):
        run_status(settings, "no-such-run")


def test_status_falls_back_to_the_snapshot_while_another_process_holds_the_db(settings: Settings) -> None:
    plan = _recorded_run(settings)
    holder = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from accelerate_core.store import ResultsStore
        with ResultsStore.open(Path({str(settings.results_db)!r})) as store:
            store.write_status_snapshot({plan.run_id!r}, Path({str(settings.results_db.parent)!r}))
            print("held", flush=True)
            sys.stdin.readline()
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(StoreLockedError):
            ResultsStore.open(settings.results_db, read_only=True).close()
        status = run_status(settings)  # latest snapshot, no run id given
        assert status.source == "snapshot" and status.snapshot.run_id == plan.run_id
        assert status.snapshot.terminal == 3 and status.snapshot.total == 4
        assert status.snapshot_path is not None and status.to_json()["snapshot_path"] == status.snapshot_path
    finally:
        proc.communicate("\n", timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # and the DB again once the holder is gone
        try:
            assert run_status(settings, plan.run_id).source == "db"
            break
        except StoreLockedError:
            time.sleep(0.1)
    else:
        raise AssertionError("the results DB stayed locked after its holder exited")


def test_no_store_at_all_is_a_one_line_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UnknownRunError, match="accel run"):
        run_status(Settings(results_db=tmp_path / "none" / "results.duckdb"))


def test_status_watch_reads_again_until_ctrl_c_which_exits_0(settings: Settings, tmp_path: Path) -> None:
    # Given a run with a job still queued, watched by `accel status --watch` writing to a file (no terminal)
    plan = _recorded_run(settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
    env.update(ACCEL_RESULTS_DB=str(settings.results_db), ACCEL_REPORTS_DIR=str(settings.reports_dir))
    log = tmp_path / "watch.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "scheduler", "status", plan.run_id, "--watch", "--every", "0.2"],
                                stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "expected time left" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.5)  # several more reads: the unchanged status is not printed again
        # When Ctrl-C arrives
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Then it leaves with exit 0, having printed the status once, without a traceback or control codes
    text = log.read_text()
    assert code == 0, text
    assert text.count(f"run {plan.run_id}") == 1 and "3/4 finished" in text, text
    assert "Traceback" not in text and "\x1b" not in text

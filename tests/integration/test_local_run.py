"""`accel run` on the embedded default, end to end: real fork server, real DuckDB file, real report.

One in-process run of a few architectures across modalities, then the kill tests: a subprocess
``accel run`` stopped by SIGINT, and another killed by SIGKILL, each completed by ``--resume`` with
exactly one row per planned job.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from accelerate_core import wire
from accelerate_core.config import Settings
from accelerate_core.constants import STATUS_DONE, TERMINAL_STATUSES
from accelerate_core.contracts import StatusSnapshot
from accelerate_core.report.stages import collect_loop_endings, collect_stages
from accelerate_core.store import ResultsStore, read_status_snapshot, snapshot_dir
from scheduler.local import run_local
from scheduler.plan import PlanOptions
from scheduler.planning_inputs import plan_with_stores, template_lookup
from scheduler.status import RunStatus, format_status, run_status

REPO = Path(__file__).resolve().parents[2]
ACCEL = [sys.executable, "-m", "scheduler"]

# Across modalities: text encoder, text decoder (generate), vision, audio, multimodal, time series.
SIX = ["bert", "gpt2", "vit", "whisper", "clip", "patchtst"]
# For the kill tests: enough small jobs (~0.5 s each) that a run is surely stopped mid-way.
KILL_SET = [
    "bert", "gpt2", "vit", "distilbert", "roberta", "albert", "electra", "deit", "opt", "bloom", "beit", "xglm",
    "xlm", "nomic_bert", "altclip", "siglip2", "aimv2", "resnet", "gptj", "bart", "marian", "mobilenet_v2",
    "tipsv2", "deepseek_v3",
]  # fmt: skip


@pytest.fixture(scope="module")
def templates_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One templates store for the module, synced once (syncing validates against the catalog)."""
    path = tmp_path_factory.mktemp("templates") / "templates.duckdb"
    template_lookup(Settings(templates_db=path))
    return path


@pytest.fixture
def run_settings(tmp_path: Path, templates_db: Path) -> Settings:
    return Settings(
        results_db=tmp_path / "data" / "results.duckdb",
        templates_db=templates_db,
        reports_dir=tmp_path / "reports",
        concurrency=2,
    )


def _env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ACCEL_RESULTS_DB=str(settings.results_db),
        ACCEL_TEMPLATES_DB=str(settings.templates_db),
        ACCEL_REPORTS_DIR=str(settings.reports_dir),
        ACCEL_CONCURRENCY="2",
    )
    env.pop("ACCEL_BROKER_URL", None)
    return env


def _rows(settings: Settings, run_id: str) -> list[tuple[str, str, int]]:
    with ResultsStore.open(settings.results_db, read_only=True) as store:
        return [
            (str(k), str(s), int(n))
            for k, s, n in store.query(
                "SELECT job_key, any_value(status), count(*) FROM jobs WHERE run_id = ? GROUP BY job_key", [run_id]
            )
        ]


def test_local_run_records_every_job_and_writes_the_report(run_settings: Settings) -> None:
    # Given a plan of six architectures across modalities
    plan = plan_with_stores(run_settings, PlanOptions(phase="it", models=",".join(SIX)), base_dir=REPO)
    assert len(plan.jobs) == len(SIX)
    # When it runs locally on two slots
    summary = run_local(run_settings, plan, slots=2)
    # Then every job has one terminal row, most pass with measurements, and the report exists
    assert summary.status == "complete"
    rows = _rows(run_settings, plan.run_id)
    assert sorted(r[0] for r in rows) == sorted(j.key for j in plan.jobs)
    assert all(n == 1 and status in TERMINAL_STATUSES for _, status, n in rows)
    assert summary.counts.get(STATUS_DONE, 0) >= 5, summary.counts
    assert 0 < summary.efficiency <= 1.0
    assert 0 < summary.store_s < summary.wall_s
    with ResultsStore.open(run_settings.results_db, read_only=True) as store:
        # Every job records its stages; running marks are batched, and a finished job keeps its own row
        stages = {s.stage: s for s in collect_stages(store, plan.run_id)}
        endings = collect_loop_endings(store, plan.run_id)
        attempts = store.query("SELECT DISTINCT attempts FROM jobs WHERE run_id = ?", [plan.run_id])
        latency = store.query(
            "SELECT count(DISTINCT job_key) FROM measurements WHERE run_id = ? AND metric = 'latency' AND p50 > 0",
            [plan.run_id],
        )[0][0]
        params = store.get_run(plan.run_id).params
        source = store.query("SELECT generated_source FROM jobs WHERE run_id = ? AND status = 'done'", [plan.run_id])
    assert latency == summary.counts[STATUS_DONE]
    assert stages["child"].jobs == stages["runner"].jobs == len(SIX) and attempts == [(1,)]
    assert stages["loop"].jobs == stages["build"].jobs == summary.counts[STATUS_DONE]
    assert stages["render"].total_s > 0 and stages["pytest"].total_s > stages["loop"].total_s
    # Each done job's latency loop says how it ended (precise p50, duration rule or time cap) and how precise it is
    assert sum(e.loops for e in endings if e.metric == "latency") == summary.counts[STATUS_DONE]
    assert {e.stopped_by for e in endings} <= {"converged", "min-iters-and-duration", "max-duration"}
    assert all(e.p50_n >= 1 and (e.p50_ci_rel is None or e.p50_ci_rel >= 0) for e in endings)
    assert params.makespan[-1].efficiency == summary.efficiency and params.slots == 2
    assert all("def test_forward" in s for (s,) in source)
    assert summary.report_dir is not None
    assert {p.suffix for p in summary.report_dir.iterdir()} >= {".md", ".html", ".json"}
    # And `accel status` on the finished run reads the DB
    out = subprocess.run([*ACCEL, "status", plan.run_id, "--json"], env=_env(run_settings), cwd=REPO,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["source"] == "db" and status["phase_done"] and status["total"] == len(SIX)
    snap = wire.decode(
        StatusSnapshot, {k: v for k, v in status.items() if k not in ("source", "snapshot_path", "writer", "page_url")}
    )
    assert any("cpu:" in line for line in format_status(RunStatus(snap, "db")))
    # And the snapshot (what `accel status` reads while another process holds the DB) shows the end too
    snapshot = read_status_snapshot(plan.run_id, snapshot_dir(run_settings))
    assert snapshot.status == "complete" and snapshot.phase_done, snapshot


@pytest.fixture
def kill_models(tmp_path: Path) -> Path:
    path = tmp_path / "models.txt"
    path.write_text("# kill-test set\n" + "\n".join(KILL_SET) + "\n", encoding="utf-8")
    return path


def _start(settings: Settings, models: Path) -> subprocess.Popen[str]:
    argv = [*ACCEL, "run", "--phase", "kill", "--models", f"@{models}", "--hardware", "cpu", "--jobs", "2"]
    return subprocess.Popen(argv, env=_env(settings), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip


def _wait_for_progress(settings: Settings, proc: subprocess.Popen[str], finished: int) -> dict[str, object]:
    """Poll `accel status --json` (the DB is held: it reads the snapshot) until ``finished`` jobs are done."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        out = subprocess.run([*ACCEL, "status", "--json"], env=_env(settings), cwd=REPO,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        if out.returncode == 0:
            status: dict[str, object] = json.loads(out.stdout)
            if int(str(status.get("terminal", 0))) >= finished:
                return status
        time.sleep(0.3)
    raise AssertionError("the run made no progress within 120 s")


def _resume_and_check(settings: Settings, run_id: str) -> None:
    out = subprocess.run([*ACCEL, "run", "--resume", run_id, "--json"], env=_env(settings), cwd=REPO,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["status"] == "complete"
    rows = _rows(settings, run_id)
    assert len(rows) == len(KILL_SET)  # none lost
    assert all(n == 1 for _, _, n in rows)  # none doubled
    assert all(status in TERMINAL_STATUSES for _, status, _ in rows)
    assert (settings.reports_dir / run_id).is_dir()
    with ResultsStore.open(settings.results_db, read_only=True) as store:
        params = store.get_run(run_id).params
    assert params.makespan[-1].status == "complete" and params.slots == 2
    assert summary["efficiency"] == params.makespan[-1].efficiency


@pytest.fixture
def reaper() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_sigint_stops_cleanly_and_resume_completes(
    run_settings: Settings, kill_models: Path, reaper: list[subprocess.Popen[str]]
) -> None:
    # Given a run in a subprocess that has finished a few jobs (seen by `accel status` while it runs)
    proc = _start(run_settings, kill_models)
    reaper.append(proc)
    status = _wait_for_progress(run_settings, proc, finished=2)
    assert status["source"] == "snapshot" and status["status"] == "running"
    run_id = str(status["run_id"])
    # When it gets SIGINT as Ctrl-C sends it: to its whole process group (fork server included)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    # Then it exits 130, the run is marked interrupted, finished results are kept and some jobs are left
    assert proc.returncode == 130, stderr
    with ResultsStore.open(run_settings.results_db, read_only=True) as store:
        assert store.get_run(run_id).status == "interrupted"
    statuses = [s for _, s, _ in _rows(run_settings, run_id)]
    assert sum(s in TERMINAL_STATUSES for s in statuses) >= 2
    assert any(s not in TERMINAL_STATUSES for s in statuses)
    # And --resume completes it with exactly one row per job; both invocations' makespans are kept
    _resume_and_check(run_settings, run_id)
    with ResultsStore.open(run_settings.results_db, read_only=True) as store:
        makespans = store.get_run(run_id).params.makespan
    assert [m.status for m in makespans] == ["interrupted", "complete"]


def test_sigkill_of_the_parent_then_resume_completes(
    run_settings: Settings, kill_models: Path, reaper: list[subprocess.Popen[str]]
) -> None:
    # Given a run in a subprocess that has finished a few jobs
    proc = _start(run_settings, kill_models)
    reaper.append(proc)
    run_id = str(_wait_for_progress(run_settings, proc, finished=2)["run_id"])
    # When the parent is killed outright (no chance to clean up)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # Then the store opens again (the lock died with it) and --resume completes the run, no row doubled
    _resume_and_check(run_settings, run_id)


def test_status_of_an_unknown_run_exits_2_with_one_line(run_settings: Settings) -> None:
    from accelerate_core.errors import UnknownRunError

    with pytest.raises(UnknownRunError):
        run_status(run_settings)
    out = subprocess.run([*ACCEL, "status", "no-such-run"], env=_env(run_settings), cwd=REPO,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip().startswith("accel: error:") and len(out.stderr.strip().splitlines()) == 1

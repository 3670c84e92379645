"""The CLI reads results while a live writer holds the DB: through the results service the writer hosts.

Real processes: a redis-server, ``accel writer`` (holding the DuckDB file read-write and serving its results
on a loopback port behind a token), and ``accel`` commands as a user runs them. Each command's output through
the service is compared with the same command's output over the file read directly, before the writer took it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from accelerate_core.config import Settings
from scheduler.planning_inputs import hardware_history, past_durations
from tests.support import http, processes
from tests.support.cli import seed_catalog_index
from tests.support.fleet_key import FLEET_KEY_HEX
from tests.support.processes import wait_for
from tests.support.redis_server import RedisServer, free_port
from tests.support.results_service import HARDWARE, RUNS, build_store

pytestmark = pytest.mark.redis

REPO = Path(__file__).resolve().parents[2]
TOKEN = "writer-api-token"
REPORT = ("report", RUNS[-1], "--format", "json,md", "--baseline", RUNS[0])
CSV = ("runs", "export", RUNS[-1], "--format", "csv")
OPTIMUM = ("runs", "export", RUNS[-1], "--format", "optimum")


@dataclass
class Setup:
    base: Path
    env: dict[str, str]
    url: str
    local: dict[str, Any]
    durations: dict[str, dict[str, float]]
    history: dict[str, Any]


def _accel(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scheduler", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def _ok(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _read_all(env: dict[str, str], cwd: Path, tag: str) -> dict[str, Any]:
    """Every reading command's JSON answer, reports and exports into folders named by ``tag``."""
    run = RUNS[-1]
    return {
        "list": _ok(_accel("runs", "list", "--json", env=env, cwd=cwd)),
        "show": _ok(_accel("runs", "show", run, "--json", env=env, cwd=cwd)),
        "report": _ok(_accel(*REPORT, "--out", f"rep-{tag}", "--json", env=env, cwd=cwd)),
        "export": _ok(_accel("runs", "export", "latest", "--out", f"exp-{tag}", "--json", env=env, cwd=cwd)),
        "csv": _ok(_accel(*CSV, "--out", f"csv-{tag}", "--json", env=env, cwd=cwd)),
        "optimum": _ok(_accel(*OPTIMUM, "--out", f"opt-{tag}", "--json", env=env, cwd=cwd)),
    }


def _answers(url: str) -> bool:
    try:
        return http.get(url)[0] == 401  # it asks for the token
    except OSError:
        return False


@pytest.fixture(scope="module")
def setup(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    redis_server.fresh()
    base = tmp_path_factory.mktemp("through-writer")
    db = build_store(base / "results.duckdb")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
    env.update(ACCEL_BROKER_URL=redis_server.url, ACCEL_RESULTS_DB=str(db), ACCEL_REPORTS_DIR=str(base / "reports"),
               ACCEL_SERVE_PORT=str(port), ACCEL_SERVE_TOKEN=TOKEN, ACCEL_FLEET_KEY=FLEET_KEY_HEX)  # fmt: skip
    local = _read_all(env, base, "local")  # Given what each command says over the file itself
    durations = past_durations(Settings.load(environ=env), HARDWARE)
    history = hardware_history(Settings.load(environ=env))
    writer = processes.start([sys.executable, "-m", "scheduler", "writer"], env=env, cwd=REPO,
                             log=base / "writer.log")  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(f"{url}/api"), 60, "the writer's results service")
        yield Setup(base, env, url, local, durations, history)
    finally:
        processes.stop(writer)


def test_a_db_held_by_a_process_that_serves_nothing_is_refused_in_one_line(tmp_path: Path) -> None:
    # Given a process holding a DB read-write that advertises no results service
    db = build_store(tmp_path / "results.duckdb", runs=RUNS[:1])
    code = f"import duckdb,time; c=duckdb.connect({str(db)!r}); print('held', flush=True); time.sleep(120)"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
        # When the CLI lists runs; Then one line names the holder and that no service is advertised
        done = _accel("runs", "list", "--json", env={**env, "ACCEL_RESULTS_DB": str(db)}, cwd=tmp_path)
        assert done.returncode == 1 and "is held read-write by" in done.stderr, done.stderr
        assert "no writer advertises a results service" in done.stderr and "Traceback" not in done.stderr
    finally:
        holder.kill()
        holder.wait()


def test_reading_commands_answer_through_the_writer_as_over_the_file(setup: Setup) -> None:
    # When each command runs while the writer holds the DB (the service found from the writer's heartbeat)
    through = _read_all(setup.env, setup.base, "api")
    # Then runs list and runs show print what they printed over the file
    assert through["list"] == setup.local["list"] and len(through["list"]) == len(RUNS)
    assert through["show"]["run"] == setup.local["show"]["run"]
    clock = {"elapsed_s": 0, "updated_at": 0}  # read at the time of asking
    assert {**through["show"]["progress"], **clock} == {**setup.local["show"]["progress"], **clock}
    # And report writes the same report (built now, so only its time differs) and the same summary
    assert through["report"]["summary"] == setup.local["report"]["summary"]
    assert through["report"]["summary"]["baseline"] == RUNS[0]
    assert set(through["report"]["files"]) == {"json", "md"}
    api_json, local_json = (json.loads(Path(setup.base, f["json"]).read_text())
                            for f in (through["report"]["files"], setup.local["report"]["files"]))  # fmt: skip
    assert {**api_json, "generated_at": 0} == {**local_json, "generated_at": 0}
    assert api_json["run"]["run_id"] == RUNS[-1] and api_json["comparison"]["baseline_run_id"] == RUNS[0]
    # And export writes every table: CSV byte for byte, Parquet with the same rows
    assert set(through["export"]) == {"runs", "jobs", "measurements", "workers"}
    for table, path in through["csv"].items():
        assert Path(setup.base, path).read_bytes() == Path(setup.base, setup.local["csv"][table]).read_bytes()
    # And the optimum reports are the same files, one per job and shape
    assert set(through["optimum"]) == set(setup.local["optimum"]) and through["optimum"]
    for folder, path in through["optimum"].items():
        assert Path(setup.base, path).read_bytes() == Path(setup.base, setup.local["optimum"][folder]).read_bytes()
    for table, path in through["export"].items():
        rows = [duckdb.sql(f"SELECT * FROM '{Path(setup.base, p)}' ORDER BY ALL").fetchall()
                for p in (path, setup.local["export"][table])]  # fmt: skip
        assert rows[0] == rows[1] and (rows[0] or table == "workers")


def test_the_writer_advertises_its_service_in_its_heartbeat(setup: Setup) -> None:
    import redis

    from accelerate_core import liveness

    client = redis.Redis.from_url(setup.env["ACCEL_BROKER_URL"])
    beat = liveness.read_writer(client)
    client.close()
    assert beat is not None and beat.api_url == setup.url


def test_status_reads_through_the_writer_and_prints_the_run_page(setup: Setup) -> None:
    # When accel status runs against the held DB with the service given by ACCEL_RESULTS_URL (no broker asked)
    env = {k: v for k, v in setup.env.items() if k != "ACCEL_BROKER_URL"} | {"ACCEL_RESULTS_URL": setup.url}
    status = _ok(_accel("status", "--json", env=env, cwd=setup.base))
    # Then it is the latest run's progress, from the service, with its page
    assert status["run_id"] == RUNS[-1] and status["source"] == "results service"
    assert status["page_url"] == f"{setup.url}/runs/{RUNS[-1]}"
    text = _accel("status", RUNS[0], env=env, cwd=setup.base)
    assert text.returncode == 0 and f"page: {setup.url}/runs/{RUNS[0]}" in text.stdout, text.stderr
    assert http.get(f"{setup.url}/runs/{RUNS[0]}")[0] == 401  # the page is behind the token too


def test_a_missing_token_or_an_unknown_run_is_one_line(setup: Setup) -> None:
    env = {**setup.env, "ACCEL_RESULTS_URL": setup.url}
    # When the token is absent; Then exit 2 naming the setting
    done = _accel("runs", "list", env={k: v for k, v in env.items() if k != "ACCEL_SERVE_TOKEN"}, cwd=setup.base)
    assert done.returncode == 2 and "set ACCEL_SERVE_TOKEN" in done.stderr and "Traceback" not in done.stderr
    # When the run is unknown; Then the same one line as over the file
    done = _accel("runs", "show", "nope", env=env, cwd=setup.base)
    assert done.returncode == 2 and "nope" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_writer_bound_off_loopback_without_a_token_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
    env.update(ACCEL_SERVE_HOST="0.0.0.0", ACCEL_RESULTS_DB=str(tmp_path / "r.duckdb"))
    done = _accel("writer", env=env, cwd=tmp_path)
    assert done.returncode == 2 and "refusing to serve results on 0.0.0.0 without a token" in done.stderr
    assert not (tmp_path / "r.duckdb").exists()


def test_fleet_planning_reads_past_durations_through_the_writer(setup: Setup) -> None:
    # Given past durations of every model on cpu and cuda in the held DB
    assert set(setup.durations) == set(HARDWARE) and all(len(d) == 4 for d in setup.durations.values())
    # When the planner asks for them while the writer holds the DB; Then it gets the same ones through the service
    assert past_durations(Settings.load(environ=setup.env), HARDWARE) == setup.durations


def test_best_hardware_reads_the_hardware_history_through_the_writer(setup: Setup) -> None:
    # Given each model's latest result per target in the held DB, read over the file before the writer took it
    assert setup.history and all(seen for seen in setup.history.values())
    # When --hardware best asks for it while the writer holds the DB; Then the service gives the same, in order
    assert hardware_history(Settings.load(environ=setup.env)) == setup.history


def test_metrics_carry_the_writers_backlog_and_lag(setup: Setup) -> None:
    status, body = http.get(f"{setup.url}/metrics", auth=("reader", TOKEN))
    text = body.decode()
    assert status == 200 and "accel_writer_backlog_messages 0.0" in text
    assert "accel_writer_lag_seconds 0.0" in text and "accel_writer_dead_letters 0.0" in text


def test_run_on_the_fleet_prints_its_page(setup: Setup) -> None:
    # Given a catalog index where `accel run` looks; When a run is sent to the fleet (this test runs last)
    seed_catalog_index(setup.base)
    done = _accel("run", "--phase", "pages", "--models", "bert", "--hardware", "cpu", env=setup.env, cwd=setup.base)
    # Then it planned with the past durations (read through the writer) and names the run's page, then served
    assert done.returncode == 0, done.stderr
    assert "no past durations" not in done.stderr
    line = next(ln for ln in done.stdout.splitlines() if "results at" in ln)
    run_id, page = line.split()[1].rstrip(":"), line.split()[-1]
    assert page == f"{setup.url}/runs/{run_id}"
    wait_for(lambda: http.get(f"{page}", auth=("reader", TOKEN))[0] == 200, 60, "the new run's page")


def test_a_writer_whose_port_is_taken_writes_on_without_a_service(redis_server: RedisServer, tmp_path: Path) -> None:
    import socket

    import redis

    from accelerate_core import liveness

    # Given the service's port is taken by another process (and a broker DB of its own: no other writer there)
    url = redis_server.url.rsplit("/", 1)[0] + "/7"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
        env.update(ACCEL_BROKER_URL=url, ACCEL_RESULTS_DB=str(tmp_path / "r.duckdb"),
                   ACCEL_SERVE_PORT=str(taken.getsockname()[1]), ACCEL_FLEET_KEY=FLEET_KEY_HEX)  # fmt: skip
        # When a writer starts; Then it writes on: its heartbeat says so and advertises no service
        writer = processes.start([sys.executable, "-m", "scheduler", "writer"], env=env, cwd=REPO,
                                 log=tmp_path / "writer.log")  # fmt: skip
        log = tmp_path / "writer.log"
        try:
            wait_for(lambda: "results on no service" in log.read_text(), 120, "the writer ready without a service")
            client = redis.Redis.from_url(url)
            beat = liveness.read_writer(client)
            client.close()
            assert beat is not None and beat.state == "writing" and beat.api_url is None
        finally:
            processes.stop(writer)
    assert "results service not started (cannot listen on 127.0.0.1:" in log.read_text()

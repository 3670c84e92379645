"""The README's fleet recipe, run verbatim on loopback: Redis, the writer, a worker and Flower, then a run.

The block is taken from README.md as it is and run by bash in a fresh folder (the data directory; ``deploy``
links to this checkout's). Only what must differ on a shared machine is substituted: the broker's port
(``--port`` added to the ``redis-server`` line, the URL's 6379), Flower's port (``ACCEL_FLOWER_PORT`` in the
environment) and the models (``--models all`` becomes two tiny ones). One line is added at its end: it
saves the ``ACCEL_*`` variables the block exported (its secrets are made by ``openssl rand``), so the test's
own commands use the same. The catalog index is seeded into
the folder, as a cache. Then, on that live fleet: Flower's pages and metrics, the Grafana dashboard's
queries, the compose worker healthcheck, and what a wrong or missing broker password says.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support import http, processes
from tests.support.cli import seed_catalog_index
from tests.support.redis_server import free_port

pytestmark = pytest.mark.redis

REPO = Path(__file__).resolve().parents[2]
MODELS = "bert,gpt2"
EXPORTS = "recipe-exports.env"


def fleet_block() -> str:
    """The bash block under the README's "On a fleet" heading."""
    text = (REPO / "README.md").read_text()
    section = text.split("### On a fleet", 1)[1]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, "README.md has no bash block under '### On a fleet'"
    return match.group(1)


def substituted(block: str, port: int) -> str:
    """The block with this test's broker port and small model list; everything else as written."""
    assert block.count("redis-server deploy/redis.conf") == 1 and block.count(":6379/") == 1
    assert block.count("--models all") == 1
    block = block.replace("redis-server deploy/redis.conf", f"redis-server deploy/redis.conf --port {port}")
    block = block.replace(":6379/", f":{port}/").replace("--models all", f"--models {MODELS}")
    return f"{block}env | grep '^ACCEL_' > {EXPORTS}\n"


def _exports(where: Path) -> dict[str, str]:
    """The ``ACCEL_*`` variables the block exported (the test's own commands use the same)."""
    path = where / EXPORTS
    lines = path.read_text().splitlines() if path.is_file() else []
    return dict(line.split("=", 1) for line in lines if "=" in line)


@dataclass
class Recipe:
    where: Path
    env: dict[str, str]
    exports: dict[str, str]
    flower_port: int
    done: subprocess.CompletedProcess[str]

    def accel_env(self) -> dict[str, str]:
        return {**self.env, **self.exports}


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recipe]:
    where = tmp_path_factory.mktemp("readme-fleet")
    (where / "deploy").symlink_to(REPO / "deploy")
    seed_catalog_index(where)
    port, flower_port = free_port(), free_port()
    script = substituted(fleet_block(), port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}", ACCEL_FLOWER_PORT=str(flower_port))
    log = where / "recipe.log"  # a file, not a pipe: the background processes keep their stdout open
    proc = processes.start(["bash", "-e", "-c", script], env=env, cwd=where, log=log)
    try:
        proc.wait(timeout=600)
        done = subprocess.CompletedProcess(proc.args, proc.returncode, log.read_text(errors="replace"))
        yield Recipe(where, env, _exports(where), flower_port, done)
    finally:
        processes.stop(proc)  # Redis, writer, worker and Flower, left in the background by the block


def test_the_readme_fleet_recipe_completes_a_run_with_its_report(recipe: Recipe) -> None:
    assert recipe.done.returncode == 0, recipe.done.stdout[-4000:]
    run_id = re.search(r"^run (\S+): \d+ jobs sent to the fleet", recipe.done.stdout, re.M)
    assert run_id, recipe.done.stdout[-4000:]
    report = recipe.where / "reports" / run_id.group(1) / "report.md"
    assert report.is_file(), sorted(p.name for p in (recipe.where / "reports").rglob("*"))
    text = report.read_text()
    assert all(model in text for model in MODELS.split(",")), text[:2000]
    assert (recipe.where / "appendonlydir").is_dir()  # the broker's AOF went to the working directory


def _flower(recipe: Recipe, path: str, *, auth: bool) -> tuple[int, bytes]:
    credentials = ("admin", recipe.exports["ACCEL_FLOWER_PASSWORD"]) if auth else None
    return http.get(f"http://127.0.0.1:{recipe.flower_port}{path}", auth=credentials)


def test_flower_of_the_recipe_asks_for_the_password_but_serves_metrics_without(recipe: Recipe) -> None:
    assert _flower(recipe, "/api/workers", auth=False)[0] == 401
    status, body = _flower(recipe, "/api/workers?refresh=1", auth=True)
    assert status == 200 and any(name.startswith("cpu0@") for name in json.loads(body)), body[:500]
    status, metrics = _flower(recipe, "/metrics", auth=False)  # why deploy/README keeps Flower on loopback
    assert status == 200 and b"flower_events_total" in metrics


def _metric_names(exposition: str) -> set[str]:
    """Every series name Flower's /metrics can carry: sampled names, and each family's (histogram suffixes)."""
    names = {line.split("{", 1)[0].split(" ", 1)[0] for line in exposition.splitlines() if line and line[0] != "#"}
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.M):
        names.add(family)
        if kind == "histogram":
            names |= {f"{family}_bucket", f"{family}_sum", f"{family}_count"}
    return names


def test_the_grafana_dashboard_queries_only_metrics_flower_exports(recipe: Recipe) -> None:
    status, metrics = _flower(recipe, "/metrics", auth=False)
    assert status == 200
    exported = _metric_names(metrics.decode())
    dashboard = json.loads((REPO / "deploy" / "grafana-dashboard.json").read_text())
    assert dashboard["panels"] and len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\b(flower_[a-z_]+)", target["expr"]))
            assert names, (panel["title"], target["expr"])
            assert names <= exported, (panel["title"], sorted(names - exported))
            used |= names
    assert {"flower_worker_online", "flower_events_total", "flower_task_runtime_seconds_bucket"} <= used


def test_the_compose_worker_healthcheck_answers_for_the_live_node_only(recipe: Recipe) -> None:
    compose = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())
    check = compose["services"]["worker-cpu"]["healthcheck"]["test"][1].replace("$$", "$")
    healthy = subprocess.run(
        ["sh", "-c", check], cwd=recipe.where, env=recipe.accel_env(), capture_output=True, text=True, timeout=120
    )
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    dead = check.replace("cpu0@", "cpu9@").replace("--timeout 10", "--timeout 2")  # a node that is not running
    unhealthy = subprocess.run(
        ["sh", "-c", dead], cwd=recipe.where, env=recipe.accel_env(), capture_output=True, text=True, timeout=120
    )
    assert unhealthy.returncode != 0


@pytest.mark.parametrize("password", ["wrong-password", None])
def test_a_wrong_or_missing_broker_password_is_one_line(recipe: Recipe, password: str | None) -> None:
    env = recipe.accel_env()
    env.pop("ACCEL_BROKER_PASSWORD")
    if password is not None:
        env["ACCEL_BROKER_PASSWORD"] = password
    done = subprocess.run(["accel", "writer"], cwd=recipe.where, env=env, capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1 and lines[0].startswith("accel: error: "), done.stderr
    assert recipe.exports["ACCEL_BROKER_PASSWORD"] not in done.stderr and "wrong-password" not in done.stderr
    assert "password" in lines[0], lines[0]

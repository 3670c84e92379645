"""deploy/ cannot run here (no Docker, no systemd): check what can be checked by reading it.

The compose file parses and wires the services as the fleet needs; the broker config keeps queued work
(AOF, noeviction); and every ``accel`` command named anywhere in deploy/ exists in the CLI.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from scheduler.cli import app

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _accel_commands() -> set[str]:
    names = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
    names |= {g.name or "" for g in app.registered_groups}
    return {n.replace("_", "-") for n in names if n}


def _named_commands(text: str) -> set[str]:
    # `accel worker`, "accel", "worker" (exec form), .venv/bin/accel writer
    found = set(re.findall(r"\baccel[\"']?,?\s+[\"']?([a-z][a-z-]*)", text))
    return found - {"fleet", "data"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_has_the_fleet_services(compose: dict) -> None:
    services = compose["services"]
    assert {"redis", "writer", "worker-cpu", "worker-cuda", "flower"} <= set(services)
    assert services["writer"]["command"] == ["accel", "writer"]
    assert services["worker-cpu"]["command"][:4] == ["accel", "worker", "--hardware", "cpu"]


def test_compose_redis_uses_the_shipped_config(compose: dict) -> None:
    redis = compose["services"]["redis"]
    assert redis["command"] == ["redis-server", "/usr/local/etc/redis/redis.conf"]
    assert any(v.startswith("./redis.conf:") for v in redis["volumes"])
    conf = (DEPLOY / "redis.conf").read_text()
    settings = dict(line.split(None, 1) for line in conf.splitlines() if line and not line.startswith("#"))
    assert settings["appendonly"] == "yes"
    assert settings["maxmemory-policy"] == "noeviction"


def test_compose_cuda_worker_reserves_gpus_and_flower_is_on_loopback(compose: dict) -> None:
    cuda = compose["services"]["worker-cuda"]
    devices = cuda["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert cuda["command"][:4] == ["accel", "worker", "--hardware", "cuda"]
    flower = compose["services"]["flower"]
    assert all(str(p).startswith("127.0.0.1:") for p in flower["ports"])
    dockerfiles = {s["build"]["dockerfile"] for s in compose["services"].values() if "build" in s}
    for dockerfile in dockerfiles:
        assert (DEPLOY.parent / dockerfile).is_file()


def test_every_accel_command_named_in_deploy_exists() -> None:
    known = _accel_commands()
    files = [p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix not in (".sh",) and "scripts" not in p.parts]
    named: dict[str, set[str]] = {}
    for path in files:
        for cmd in _named_commands(path.read_text()):
            named.setdefault(cmd, set()).add(path.name)
    assert {"worker", "writer", "flower", "run"} <= set(named)
    missing = {cmd: sorted(where) for cmd, where in named.items() if cmd not in known}
    assert not missing, f"deploy/ names accel commands that do not exist: {missing}"


def test_systemd_units_do_not_restart_a_refusal() -> None:
    for unit in ("accel-worker@.service", "accel-writer.service", "accel-flower.service"):
        text = (DEPLOY / "systemd" / unit).read_text()
        assert "RestartPreventExitStatus=2" in text and "EnvironmentFile=/etc/accel/accel.env" in text
        assert re.search(r"^ExecStart=\S+/accel (worker|writer|flower)\b", text, re.M)

"""deploy/ checked by the tools that know its formats, and its shell snippets run for real.

- compose.yaml against the compose-spec JSON schema (``check-jsonschema``, which ships it), then what the
  fleet needs of it: one env file for every service, ``init``, no fixed host name, worker healthchecks,
  the ROCm devices and groups, and no password anywhere but deploy/accel.env;
- the systemd units with ``systemd-analyze verify`` (in a scratch root holding the install paths);
- the Dockerfiles with ``hadolint``;
- the broker's start command of compose and of accel-redis.service, run with a real redis-server: it
  takes the password from ACCEL_BROKER_PASSWORD and refuses to start without one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from scheduler.cli import app
from tests.support.redis_server import free_port

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
UNITS = DEPLOY / "systemd"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    found = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    assert found, f"{name} is missing: bash deploy/scripts/test.sh installs it"
    return found


def _accel_commands() -> set[str]:
    names = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
    names |= {g.name or "" for g in app.registered_groups}
    return {n.replace("_", "-") for n in names if n}


def _named_commands(text: str) -> set[str]:
    # `accel worker`, "accel", "worker" (exec form), .venv/bin/accel writer
    found = set(re.findall(r"\baccel[\"']?,?[ \t]+[\"']?([a-z][a-z-]*)", text))
    return found - {"fleet", "data", "user", "is", "process", "processes"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_matches_the_compose_spec_schema() -> None:
    done = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_services_share_one_env_file_init_and_no_fixed_host(compose: dict) -> None:
    services = compose["services"]
    assert {"redis", "writer", "worker-cpu", "worker-cuda", "worker-rocm", "flower"} <= set(services)
    for name, service in services.items():
        assert service["env_file"] == ["accel.env"], name
        assert service["init"] is True, name
        assert service.get("hostname") in (None, "${ACCEL_HOST:-}"), f"{name}: a fixed hostname collides across hosts"
    assert services["writer"]["command"] == ["accel", "writer"]
    assert services["worker-cpu"]["command"] == ["accel", "worker", "--hardware", "cpu"]


def test_compose_workers_have_a_healthcheck_that_pings_their_node(compose: dict) -> None:
    for kind in ("cpu", "cuda", "rocm"):
        test = compose["services"][f"worker-{kind}"]["healthcheck"]["test"]
        assert test[0] == "CMD-SHELL" and f'inspect ping -d "{kind}0@$$(hostname)"' in test[1], test


def test_compose_rocm_profile_passes_the_devices_and_groups_amd_documents(compose: dict) -> None:
    rocm = compose["services"]["worker-rocm"]
    assert rocm["profiles"] == ["rocm"] and rocm["command"][-1] == "rocm"
    assert set(rocm["devices"]) == {"/dev/kfd", "/dev/dri"}
    assert rocm["group_add"] == ["video", "${ACCEL_RENDER_GID:-render}"]
    cuda = compose["services"]["worker-cuda"]
    assert cuda["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_flower_is_published_on_loopback_only(compose: dict) -> None:
    assert all(str(p).startswith("127.0.0.1:") for p in compose["services"]["flower"]["ports"])


def test_no_password_is_written_anywhere_but_the_env_file() -> None:
    env = dict(
        line.split("=", 1) for line in (DEPLOY / "accel.env.example").read_text().splitlines() if "=" in line[:40]
    )
    assert env["ACCEL_BROKER_PASSWORD"] == "" and env["ACCEL_FLOWER_PASSWORD"] == ""  # refused until set
    assert env["ACCEL_FLEET_KEY"] == ""  # workers refuse to start until it is set
    assert "@" not in env["ACCEL_BROKER_URL"]
    for path in [DEPLOY / "compose.yaml", DEPLOY / "redis.conf", *UNITS.rglob("*.service"), REPO / "README.md"]:
        text = path.read_text()
        assert not re.search(r"^requirepass\s", text, re.M), path
        assert not re.search(r"redis://:[^@$\s]+@", text), f"{path} writes a broker password into a URL"


def test_redis_conf_keeps_queued_work_and_sets_no_data_dir() -> None:
    conf = (DEPLOY / "redis.conf").read_text()
    settings = dict(line.split(None, 1) for line in conf.splitlines() if line and not line.startswith("#"))
    assert settings["appendonly"] == "yes" and settings["maxmemory-policy"] == "noeviction"
    assert "dir" not in settings and settings["bind"] == "127.0.0.1"


def test_dockerfiles_pass_hadolint() -> None:
    dockerfiles = sorted(DEPLOY.glob("Dockerfile.*"))
    assert len(dockerfiles) == 3
    done = subprocess.run([_tool("hadolint"), *map(str, dockerfiles)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    for dockerfile in dockerfiles:
        text = dockerfile.read_text()
        assert "--require-hashes -r requirements.lock" in text and "pip install --no-cache-dir --no-deps ." in text
    assert "--groups video,render accel" in (DEPLOY / "Dockerfile.rocm").read_text()


def test_dockerignore_keeps_the_venv_data_and_secrets_out_of_the_context() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".venv", ".git", "accel-data", "reports", "deploy/accel.env"} <= ignored


def _scratch_root(tmp_path: Path) -> Path:
    """A root for systemd-analyze: the host's unit library, our units, and the install paths they name."""
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    shutil.copytree(UNITS, root / "etc/systemd/system")
    accel = root / "opt/accel/.venv/bin/accel"  # where the units expect the project: installed there on a host
    accel.parent.mkdir(parents=True)
    accel.write_text("#!/bin/sh\n")
    accel.chmod(0o755)
    for binary in ("/bin/sh", "/usr/bin/redis-server"):  # the host's real ones, where the units name them
        assert Path(binary).exists(), f"{binary} is missing: apt-get install redis-server"
        (root / binary[1:]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(binary, root / binary[1:])
    return root


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    root = _scratch_root(tmp_path)
    units = ["accel-redis.service", "accel-writer.service", "accel-flower.service"]
    units += [f"accel-worker@{kind}.service" for kind in ("cpu", "cuda", "rocm")]
    done = subprocess.run(
        [_tool("systemd-analyze"), "verify", f"--root={root}", *units], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), done.stdout + done.stderr


def test_systemd_units_read_the_env_file_and_do_not_restart_a_refusal() -> None:
    for unit in sorted(UNITS.glob("*.service")):
        text = unit.read_text()
        assert "RestartPreventExitStatus=2" in text and "EnvironmentFile=/etc/accel/accel.env" in text, unit
        assert "User=accel" in text, unit
    rocm = (UNITS / "accel-worker@rocm.service.d" / "rocm.conf").read_text()
    assert re.search(r"^SupplementaryGroups=video render$", rocm, re.M)


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


# -- the broker's start command, as compose and systemd write it, run for real -------------------------


def _compose_broker_command(compose: dict, conf: Path, data: Path, port: int) -> list[str]:
    command = [part.replace("$$", "$") for part in compose["services"]["redis"]["command"]]
    script = command[2].replace("/usr/local/etc/redis/redis.conf", str(conf)).replace("--dir /data", f"--dir {data}")
    return [command[0], command[1], f"{script} --port {port} --bind 127.0.0.1"]


def _unit_broker_command(conf: Path, data: Path, port: int) -> list[str]:
    exec_start = next(
        line.split("=", 1)[1] for line in (UNITS / "accel-redis.service").read_text().splitlines()
        if line.startswith("ExecStart=")
    )  # fmt: skip
    script = exec_start.split(" -c ", 1)[1].strip("'").replace("$$", "$")
    script = script.replace("/opt/accel/deploy/redis.conf", str(conf)).replace("/var/lib/accel/redis", str(data))
    script = script.replace("/usr/bin/redis-server", shutil.which("redis-server") or "redis-server")
    return ["/bin/sh", "-c", f"{script} --port {port} --bind 127.0.0.1"]


def _ping(port: int, password: str) -> str:
    env = {**os.environ, "REDISCLI_AUTH": password}
    done = subprocess.run(
        ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True, timeout=10, env=env, check=False
    )
    return done.stdout.strip() + done.stderr.strip()


@pytest.mark.parametrize("how", ["compose", "systemd"])
def test_the_broker_starts_with_the_one_password_and_refuses_none(compose: dict, tmp_path: Path, how: str) -> None:
    port = free_port()
    conf = DEPLOY / "redis.conf"
    if how == "compose":
        command = _compose_broker_command(compose, conf, tmp_path, port)
    else:
        command = _unit_broker_command(conf, tmp_path, port)
    # Given no password: it refuses to start, in one line naming the variable, exit 2 (no restart loop)
    refused = subprocess.run(command, capture_output=True, text=True, timeout=30, env={"PATH": os.environ["PATH"]})
    assert refused.returncode == 2 and "set ACCEL_BROKER_PASSWORD in" in refused.stderr, refused.stderr
    # Given the examples' placeholder: refused the same way
    placeholder = {"PATH": os.environ["PATH"], "ACCEL_BROKER_PASSWORD": "change-me-broker-password"}
    refused = subprocess.run(command, capture_output=True, text=True, timeout=30, env=placeholder)
    assert refused.returncode == 2 and "is a placeholder: set your own" in refused.stderr, refused.stderr
    # Given one: it serves with AOF in the data dir, asks clients for that password
    env = {"PATH": os.environ["PATH"], "ACCEL_BROKER_PASSWORD": "pw-from-env-file", "ACCEL_FLEET_KEY": "ab" * 32}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while _ping(port, "pw-from-env-file") != "PONG" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _ping(port, "pw-from-env-file") == "PONG"
        # the env file's fleet key is not handed to the broker (sh execs redis-server: same pid)
        assert b"ACCEL_FLEET_KEY" not in Path(f"/proc/{proc.pid}/environ").read_bytes()
        assert "NOAUTH" in _ping(port, "") and "WRONGPASS" in _ping(port, "wrong")
        assert (tmp_path / "appendonlydir").is_dir()
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_env_file_names_each_broker_roles_password_empty() -> None:
    from accelerate_core.acl import ROLES, role_env

    text = (DEPLOY / "accel.env.example").read_text()
    env = dict(line.split("=", 1) for line in text.splitlines() if "=" in line[:40] and not line.startswith("#"))
    assert {k: v for k, v in env.items() if k.startswith("ACCEL_BROKER_PASSWORD_")} == {role_env(r): "" for r in ROLES}
    assert all(role_env(r) in (DEPLOY / "README.md").read_text() for r in ROLES)

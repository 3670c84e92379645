"""``accel serve`` as a user runs it: a real process, a real port, real HTTP; refusals in one line, exit 2."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.results_service import RUNS, build_store

ACCEL = Path(sys.executable).with_name("accel")


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
    return {**base, **(extra or {})}


def _command(*args: str) -> list[str]:
    return [*([str(ACCEL)] if ACCEL.exists() else [sys.executable, "-m", "scheduler"]), *args]


@contextmanager
def serving(db: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``accel serve --db DB --port 0 ARGS`` running; yields its URL (read from its first line)."""
    proc = subprocess.Popen(_command("serve", "--db", str(db), "--port", "0", *args), cwd=db.parent,
                            env=_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"on (http://\S+) ", line)
        assert found, (line, proc.stderr.read() if proc.poll() is not None else "")
        yield found.group(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def _status(url: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_store(tmp_path_factory.mktemp("serve") / "results.duckdb")


def test_serve_answers_on_loopback_and_stops_on_sigterm(db: Path) -> None:
    # Given `accel serve` over a local DB; When a client asks for the runs; Then it gets them
    with serving(db) as url:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{url}/api/runs", timeout=30) as r:
            assert [run["run_id"] for run in json.load(r)["runs"]] == list(reversed(RUNS))
        # And meanwhile the CLI still reads the same DB (read-only openers share it)
        env = _env({"ACCEL_RESULTS_DB": str(db)})
        listed = subprocess.run(_command("runs", "list", "--json"), cwd=db.parent, env=env, capture_output=True,
                                text=True, timeout=120)  # fmt: skip
        assert listed.returncode == 0 and len(json.loads(listed.stdout)) == len(RUNS), listed.stderr
        # And a second serve on the same port is told so in one line
        port = url.rsplit(":", 1)[1]
        done = subprocess.run(_command("serve", "--db", str(db), "--port", port), cwd=db.parent, env=_env(),
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in done.stderr
        assert "pick another --port" in done.stderr and "Traceback" not in done.stderr


def test_a_non_loopback_bind_needs_a_token(db: Path) -> None:
    # When serve is asked for every interface without a token; Then one line, exit 2, nothing served
    done = subprocess.run(_command("serve", "--db", str(db), "--host", "0.0.0.0"), cwd=db.parent, env=_env(),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stdout
    assert done.stderr.strip().splitlines() == [
        "accel: error: refusing to serve results on 0.0.0.0 without a token: set ACCEL_SERVE_TOKEN "
        "(or serve_token in accel.toml), or bind to 127.0.0.1"
    ]
    # And with ACCEL_SERVE_TOKEN it serves, asking every client for the token
    with serving(db, "--host", "0.0.0.0", env={"ACCEL_SERVE_TOKEN": "s3cret"}) as url:
        local = url.replace("0.0.0.0", "127.0.0.1")
        assert _status(f"{local}/api/runs") == 401
        assert _status(f"{local}/api/runs", token="wrong") == 401
        assert _status(f"{local}/api/runs", token="s3cret") == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--db", "absent.duckdb"), "no results store at absent.duckdb: run `accel run` first, or pass --db PATH"),
        (("--port", "70000"), "port 70000 is invalid"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    done = subprocess.run(_command("serve", *args), cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1

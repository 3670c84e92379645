"""Only the fleet's jobs run: the forged-job attack, sent straight to a real Redis, on a real prefork worker.

Anyone who can write to the broker can queue ``accel.run_job`` with a template whose body is their code
(its ``sha`` is theirs to compute). Here the attacker's code writes a marker file. Unsigned, signed with
another key, or signed and then altered, it is refused: a row (``unsigned-job`` / ``bad-signature``) goes
to the writer's queue so the run still completes, the worker logs one line, and the marker never appears.
The same job signed with the fleet key runs and writes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from accelerate_core import wire
from accelerate_core.constants import (
    ERR_BAD_SIGNATURE,
    ERR_UNSIGNED,
    STATUS_DONE,
    STATUS_FAILED,
    TASK_RECORD_RESULT,
    TASK_RUN_JOB,
)
from accelerate_core.contracts import BenchConfig, JobLimits, JobResult, JobSpec, TemplateRef, job_key
from accelerate_core.signing import FleetKey
from templates_db.model import sha256_text
from tests.support import processes
from tests.support.fleet_key import FLEET_KEY, FLEET_KEY_HEX
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.redis

REPO = Path(__file__).resolve().parents[2]
NODE = "cpu0@signed-jobs"
RUN = "signed-jobs"


@pytest.fixture(scope="module")
def worker(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real prefork worker node (``python -m workers worker``) holding the fleet key."""
    redis_server.fresh()
    where = tmp_path_factory.mktemp("signed-worker")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
    env.update(ACCEL_BROKER_URL=redis_server.url, ACCEL_FLEET_KEY=FLEET_KEY_HEX)
    argv = [sys.executable, "-m", "workers", "worker", "--hardware", "cpu", "--node", NODE]
    proc = processes.start(argv, env=env, cwd=REPO, log=where / "worker.log")
    try:
        yield {"url": redis_server.url, "log": str(where / "worker.log")}
    finally:
        processes.stop(proc)


def _attack(marker: Path, name: str) -> JobSpec:
    """The attacker's job: a template whose body writes ``marker`` when the worker collects it."""
    body = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n\ndef test_x():\n    pass\n"
    run_id = f"{RUN}-{name}"
    return JobSpec(
        key=job_key(run_id, "bert", "cpu", "test"),
        run_id=run_id,
        model_type="bert",
        hardware="cpu",
        kind="test",
        template=TemplateRef(name=name, sha=sha256_text(body), body=body),
        limits=JobLimits(soft_s=60, hard_s=120, mem_cap_mb=4096),
        bench=BenchConfig(warmup=0, min_iters=1, min_duration_s=0.0, max_duration_s=0.1),
    )


def _send(url: str, spec: JobSpec, kwargs: dict[str, Any]) -> None:
    """``send_task`` as an attacker with broker access would: a bare Celery client, no fleet code."""
    from celery import Celery

    app = Celery("attacker", broker=url, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"])
    try:
        app.send_task(TASK_RUN_JOB, kwargs=kwargs, task_id=spec.key, queue="hw.cpu")
    finally:
        app.close()


def _result(url: str, key: str, timeout_s: float = 180) -> JobResult:
    """The result the worker sent to the writer's queue for job ``key``, its fleet signature checked."""
    import redis

    from workers.writer import decode_message

    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for raw in client.lrange("results", 0, -1):
            task, kwargs = decode_message(raw)
            if task == TASK_RECORD_RESULT and kwargs.get("result", {}).get("key") == key:
                # signed by the worker with the fleet key (the writer records nothing else)
                return wire.decode(JobResult, FLEET_KEY.open(TASK_RECORD_RESULT, "result", kwargs))
        time.sleep(0.3)
    raise AssertionError(f"no result for {key} within {timeout_s} s")


def test_an_unsigned_job_is_refused_with_a_row_and_runs_nothing(worker: dict[str, str], tmp_path: Path) -> None:
    marker = tmp_path / "unsigned.txt"
    spec = _attack(marker, "unsigned")
    # Given the attacker's job sent straight to Redis, unsigned
    _send(worker["url"], spec, {"spec": wire.encode(spec)})
    # Then the worker records it as unsigned-job, and the attacker's code never ran
    result = _result(worker["url"], spec.key)
    assert (result.status, result.error_class, result.worker_id) == (STATUS_FAILED, ERR_UNSIGNED, NODE)
    assert not marker.exists()
    log = Path(worker["log"]).read_text(errors="replace")
    assert f"job message {spec.key} refused, nothing run: an unsigned accel.run_job message" in log


def test_a_job_signed_with_another_key_or_altered_after_signing_is_refused(
    worker: dict[str, str], tmp_path: Path
) -> None:
    # Given a job signed with a key that is not the fleet's
    marker = tmp_path / "other-key.txt"
    spec = _attack(marker, "otherkey")
    _send(worker["url"], spec, FleetKey(os.urandom(32)).envelope(TASK_RUN_JOB, "spec", wire.encode(spec)))
    # And a fleet-signed harmless job whose template was swapped for the attacker's after signing
    tampered_marker = tmp_path / "tampered.txt"
    evil = _attack(tampered_marker, "tampered")
    harmless = wire.encode(_attack(tmp_path / "never-used.txt", "tampered"))
    kwargs = FLEET_KEY.envelope(TASK_RUN_JOB, "spec", harmless)
    kwargs["spec"] = wire.encode(evil)
    _send(worker["url"], evil, kwargs)
    # Then both are bad-signature rows and neither ran
    for job, path in ((spec, marker), (evil, tampered_marker)):
        result = _result(worker["url"], job.key)
        assert (result.status, result.error_class) == (STATUS_FAILED, ERR_BAD_SIGNATURE), result.error_message
        assert not path.exists()


def test_the_same_job_signed_with_the_fleet_key_runs(worker: dict[str, str], tmp_path: Path) -> None:
    marker = tmp_path / "signed.txt"
    spec = _attack(marker, "signed")
    # Given the same kind of job, signed with the fleet key
    _send(worker["url"], spec, FLEET_KEY.envelope(TASK_RUN_JOB, "spec", wire.encode(spec)))
    # Then it runs: its code wrote the marker, and its row is done
    result = _result(worker["url"], spec.key)
    assert result.status == STATUS_DONE, (result.error_class, result.error_message)
    assert marker.read_text() == "ran"


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (None, "no fleet key: set ACCEL_FLEET_KEY"),
        ("change-me", "ACCEL_FLEET_KEY='***' is not hex"),
        ("ab" * 16, "ACCEL_FLEET_KEY='***' is 16 bytes: give at least 32"),
    ],
)
def test_a_worker_without_a_usable_key_refuses_to_start(redis_url: str, key: str | None, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
    env["ACCEL_BROKER_URL"] = redis_url
    if key is not None:
        env["ACCEL_FLEET_KEY"] = key
    for argv in (["-m", "workers", "worker", "--hardware", "cpu"], ["-m", "scheduler", "worker"]):
        done = subprocess.run([sys.executable, *argv], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], done.stderr
        assert "change-me" not in done.stderr


def test_signatures_survive_the_json_round_trip_and_cover_every_field() -> None:
    spec = wire.encode(_attack(Path("/tmp/x"), "roundtrip"))
    spec["bench"]["min_duration_s"] = 0.1 + 0.2  # a float whose shortest repr is long
    spec["template"]["body"] += "# é \u2028 \U0001f600"
    kwargs = FLEET_KEY.envelope(TASK_RUN_JOB, "spec", spec)
    # a JSON round trip (the broker) keeps it valid
    FLEET_KEY.open(TASK_RUN_JOB, "spec", json.loads(json.dumps(kwargs)))
    # any change of any value, and the same signature for another task, is not
    from accelerate_core.errors import SignatureError

    for changed in ({**spec, "model_type": "gpt2"}, {**spec, "limits": {**spec["limits"], "hard_s": 1e9}}):
        with pytest.raises(SignatureError, match="not the fleet key's"):
            FLEET_KEY.open(TASK_RUN_JOB, "spec", {**kwargs, "spec": changed})
    with pytest.raises(SignatureError, match="not the fleet key's"):
        FLEET_KEY.open(TASK_RECORD_RESULT, "spec", kwargs)
    for bad in ("", "zz" * 32, 7, ["x"]):
        with pytest.raises(SignatureError, match="not the fleet key's"):
            FLEET_KEY.open(TASK_RUN_JOB, "spec", {**kwargs, "sig": bad})

"""The job box against hostile jobs: real fork servers, real forks, real files, real memory."""

from __future__ import annotations

import os
import secrets

import pytest

from accelerate_core.runner import ForkServer

ENTRY = "tests.support.entries:dispatch"
CAP_MB = 2000
SECRET_PASSWORD = "s3cret-broker-pw"
SECRET_FLOWER = "s3cret-flower-pw"


@pytest.mark.parametrize("mode", ["fork", "spawn"])
def test_no_secret_of_the_caller_reaches_a_job(monkeypatch: pytest.MonkeyPatch, mode: str):
    token = secrets.token_hex(16)
    monkeypatch.setenv("ACCEL_BROKER_URL", f"redis://:{SECRET_PASSWORD}@10.0.0.5:6379/0")
    monkeypatch.setenv("ACCEL_FLOWER_PASSWORD", SECRET_FLOWER)
    monkeypatch.setenv("SECRET_TOKEN", token)
    monkeypatch.setenv("HF_TOKEN", token + "hf")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    with ForkServer(ENTRY, preload=(), mode=mode) as fs:
        outcome = fs.run("env", {"do": "environ"}, env={"OMP_NUM_THREADS": "1"}, time_limit_s=60, mem_cap_mb=CAP_MB)

    assert outcome.ok, outcome
    assert outcome.value is not None
    seen = repr(outcome.value)
    for secret in (SECRET_PASSWORD, SECRET_FLOWER, token, "ACCEL_BROKER_URL", "ACCEL_FLOWER_PASSWORD", "SECRET_TOKEN"):
        assert secret not in seen
    environ = outcome.value["environ"]
    assert environ["OMP_NUM_THREADS"] == "1" and environ["TRANSFORMERS_OFFLINE"] == "1"
    assert environ["PATH"] == os.environ["PATH"]

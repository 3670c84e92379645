"""TLS to the broker works and verifies by default, on both channels, against a real ``redis-server --tls-port``.

The fleet meets Redis through two clients: redis-py (connection checks, the writer, delivery counts, status)
and Celery's kombu (jobs, results, broadcasts). A bare ``rediss://`` URL is verified by redis-py but not by
kombu, which falls back to ``CERT_NONE``; the settings add ``ssl_cert_reqs=required`` so both verify. The
certificates are made here with the openssl command: a CA, a server certificate for 127.0.0.1 signed by it,
and a second CA that signed nothing of this server's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from accelerate_core import broker, wire
from accelerate_core.config import Settings
from accelerate_core.constants import JOB_KIND_DRY, TASK_RECORD_RESULT
from accelerate_core.contracts import JobResult, JobSpec, RunParams, RunPlan, job_key
from accelerate_core.errors import BrokerError
from scheduler.remote import dispatch, live_nodes
from tests.support import processes
from tests.support.fleet_key import FLEET_KEY_HEX
from tests.support.redis_server import free_port

pytestmark = pytest.mark.redis

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "tls-broker-pw-4f1c"
NODE = "cpu0@tls-test"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(where: Path) -> None:
    """``ca.pem``, ``server.pem``/``server.key`` (127.0.0.1 and localhost, signed by ca) and ``other-ca.pem``."""
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=accel test {ca}",
                 "-keyout", f"{ca}.key", "-out", f"{ca}.pem", cwd=where)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
             "-out", "server.csr", cwd=where)  # fmt: skip
    (where / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "san.ext", "-out", "server.pem", cwd=where)  # fmt: skip


@dataclass
class TlsBroker:
    where: Path
    port: int
    proc: subprocess.Popen[bytes]

    def settings(self, ca: str = "ca.pem", **extra: str) -> Settings:
        url = f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.where / ca}"
        return Settings.load(environ={"ACCEL_BROKER_URL": url, "ACCEL_BROKER_PASSWORD": PASSWORD, **extra})


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    where = tmp_path_factory.mktemp("tls")
    make_certificates(where)
    port = free_port()
    argv = [shutil.which("redis-server") or "redis-server", "--port", "0", "--tls-port", str(port),
            "--bind", "127.0.0.1", "--tls-cert-file", "server.pem", "--tls-key-file", "server.key",
            "--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no", "--requirepass", PASSWORD,
            "--save", "", "--dir", str(where)]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=where, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tls = TlsBroker(where, port, proc)
    try:
        processes.wait_for(lambda: _answers(tls.settings()), 15, "redis-server over TLS")
        yield tls
    finally:
        proc.terminate()
        proc.wait(10)


def _answers(settings: Settings) -> bool:
    try:
        broker.check(broker.require_url(settings))
    except BrokerError:
        return False
    return True


def test_a_bare_rediss_url_is_verified_on_both_channels() -> None:
    import redis.connection
    from kombu.utils.url import url_to_parts

    url = Settings.load(environ={"ACCEL_BROKER_URL": "rediss://fleet.example:6380/0"}).broker_url or ""
    assert url == "rediss://fleet.example:6380/0?ssl_cert_reqs=required"
    assert redis.connection.parse_url(url)["ssl_cert_reqs"] == "required"
    assert url_to_parts(url).query == {"ssl_cert_reqs": "required"}


def test_redis_py_verifies_the_server_certificate(tls_broker: TlsBroker) -> None:
    # Given the CA that signed the server: connected, and the password is still asked for
    client = broker.connect(broker.require_url(tls_broker.settings()))
    assert client.ping() is True
    client.close()
    # Given another CA: refused in one line, before any password is sent
    with pytest.raises(BrokerError, match=rf"^cannot reach redis at rediss://127\.0\.0\.1:{tls_broker.port} ") as e:
        broker.check(broker.require_url(tls_broker.settings("other-ca.pem")))
    assert "certificate verify failed" in str(e.value) and PASSWORD not in str(e.value)


def test_celery_kombu_verifies_the_server_certificate(tls_broker: TlsBroker) -> None:
    from scheduler.celery_client import client_app

    # Given the right CA: kombu connects and a message goes through
    app = client_app(tls_broker.settings())
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)
            queue = conn.SimpleQueue("tls-probe")
            queue.put({"hello": "tls"})
            assert queue.get(timeout=5).payload == {"hello": "tls"}
            queue.close()
    finally:
        app.close()
    # Given another CA: kombu refuses the handshake (it did not fall back to CERT_NONE)
    wrong = client_app(tls_broker.settings("other-ca.pem"))
    try:
        with wrong.connection_for_write() as conn, pytest.raises(Exception, match="certificate verify failed"):
            conn.ensure_connection(max_retries=0, timeout=5)
    finally:
        wrong.close()


def test_a_worker_takes_a_signed_job_over_tls_and_sends_its_result(tls_broker: TlsBroker, tmp_path: Path) -> None:
    # Given a real prefork worker connected over TLS
    settings = tls_broker.settings(ACCEL_FLEET_KEY=FLEET_KEY_HEX)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
    env.update(ACCEL_BROKER_URL=settings.broker_url or "", ACCEL_FLEET_KEY=FLEET_KEY_HEX)
    argv = [sys.executable, "-m", "workers", "worker", "--hardware", "cpu", "--node", NODE]
    proc = processes.start(argv, env=env, cwd=REPO, log=tmp_path / "worker.log")
    try:
        processes.wait_for(lambda: NODE in live_nodes(settings, 1.0), 120, "the worker over TLS")
        # When a dry job is dispatched through the scheduler's Celery client
        spec = JobSpec(key=job_key("tls-run", "m0", "cpu", "dry"), run_id="tls-run", model_type="m0",
                       hardware="cpu", kind=JOB_KIND_DRY)  # fmt: skip
        plan = RunPlan(run_id="tls-run", phase="tls", created_at=time.time(), params=RunParams(), jobs=(spec,))
        assert dispatch(settings, plan) == 1
        # Then its result arrives on the writer's queue, read back with redis-py over TLS
        result = processes.wait_for(lambda: _result(settings, spec.key), 120, "the job's result")
        assert result.status == "done" and result.worker_id == NODE
    finally:
        processes.stop(proc)


def _result(settings: Settings, key: str) -> JobResult | None:
    from workers.writer import decode_message

    client = broker.connect(broker.require_url(settings))
    try:
        for raw in client.lrange(settings.results_queue, 0, -1):
            task, kwargs = decode_message(raw)
            if task == TASK_RECORD_RESULT and kwargs.get("result", {}).get("key") == key:
                return wire.decode(JobResult, kwargs["result"])
    finally:
        client.close()
    return None

"""The results service as a client meets it: a real server on a free port, queried over real HTTP (urllib)."""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from accelerate_core.service import ReadSource, ServiceConfig, WriterFigures
from accelerate_core.service.host import HostHooks
from accelerate_core.service.server import ResultsService
from accelerate_core.store import ResultsStore
from accelerate_core.store.synthetic import SyntheticRun
from tests.support.results_service import MODELS, RICH, RUNS, XSS, build_store, running_service


class Answer:
    """One HTTP answer: status, headers, body."""

    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def fetch(url: str, *, method: str = "GET", headers: dict[str, str] | None = None) -> Answer:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return Answer(r.status, r.headers, r.read())
    except urllib.error.HTTPError as e:
        return Answer(e.code, e.headers, e.read())


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_store(tmp_path_factory.mktemp("service") / "results.duckdb", live_last=True)


@pytest.fixture(scope="module")
def url(db: Path) -> Iterator[str]:
    with running_service(db) as service:
        yield service.url


def test_runs_list_and_one_run(url: str) -> None:
    runs = fetch(f"{url}/api/runs").json()["runs"]
    assert [r["run_id"] for r in runs] == list(reversed(RUNS))
    assert runs[0]["live"] and runs[0]["jobs"] == 8 and runs[0]["terminal"] == 3
    one = fetch(f"{url}/api/runs/{RUNS[1]}").json()
    assert one["run"]["status"] == "complete" and one["progress"]["by_hardware"]["cuda"]["failed"] == 1
    assert one["pass_rate"] == pytest.approx(7 / 8) and one["previous_run"] == RUNS[0]
    assert fetch(f"{url}/api/runs/latest").json()["run"]["run_id"] == RUNS[2]


def test_results_filtered_and_paginated(url: str) -> None:
    failed = fetch(f"{url}/api/runs/{RUNS[1]}/results?status=failed").json()
    assert [(i["model_type"], i["hardware"]) for i in failed["items"]] == [("gpt2", "cuda")]
    assert failed["items"][0]["error_message"] == f"{RICH} {XSS} failed"
    page = fetch(f"{url}/api/runs/{RUNS[1]}/results?hardware=cpu,cuda&modality=text&limit=2&offset=2").json()
    assert page["total"] == 4 and [(i["model_type"], i["hardware"]) for i in page["items"]] == [
        ("gpt2", "cpu"),
        ("gpt2", "cuda"),
    ]
    assert fetch(f"{url}/api/runs/{RUNS[1]}/results?model=bert,vit").json()["total"] == 4


def test_history_comparisons_and_reports(url: str) -> None:
    history = fetch(f"{url}/api/models/bert/history?hardware=cpu").json()
    assert [p["run_id"] for p in history["points"]] == list(RUNS)
    assert history["points"][2]["changes"] == [{"what": "torch", "from": "2.12.0", "to": "2.13.0"}]
    xss = fetch(f"{url}/api/models/{urllib.parse.quote(XSS, safe='')}/history").json()
    assert xss["model_type"] == XSS and len(xss["points"]) == 4  # 2 runs x 2 kinds: the live run has not reached it
    compared = fetch(f"{url}/api/runs/{RUNS[1]}/compare").json()
    assert compared["baseline_run_id"] == RUNS[0] and compared["compared"] == (len(MODELS) * 2 - 1) * 2
    pair = fetch(f"{url}/api/runs/{RUNS[1]}/hardware?a=cpu&b=cuda").json()
    assert pair["median_speedup"] == pytest.approx(4.0, rel=0.1)
    report = fetch(f"{url}/runs/{RUNS[1]}/report.json")
    assert report.headers["X-Accel-Report"] == "built" and report.json()["run"]["run_id"] == RUNS[1]
    md = fetch(f"{url}/runs/{RUNS[1]}/report.md")
    assert md.headers["Content-Type"].startswith("text/markdown") and md.text.startswith(f"# Report of run {RUNS[1]}")


def test_the_report_file_is_served_when_fresh(tmp_path: Path) -> None:
    # Given a finished run whose report file was written after it finished (as the writer does)
    db = build_store(tmp_path / "results.duckdb", runs=("r1",))
    target = tmp_path / "reports" / "r1" / "report.md"
    target.parent.mkdir(parents=True)
    target.write_text("# the saved report\n")
    with running_service(db) as service:
        # When its Markdown report is asked for; Then the file is served as it is
        saved = fetch(f"{service.url}/runs/r1/report.md")
        assert (saved.headers["X-Accel-Report"], saved.text) == ("file", "# the saved report\n")
        # And a run id that climbs out of the reports folder is not a run
        assert fetch(f"{service.url}/runs/..%2F..%2Fetc/report.md").status == 404


def test_html_report_has_a_csp_with_its_own_style_hash(url: str) -> None:
    page = fetch(f"{url}/runs/{RUNS[1]}/report.html")
    csp = page.headers["Content-Security-Policy"]
    assert page.status == 200 and "style-src 'sha256-" in csp and "script" not in csp and "default-src 'none'" in csp


def test_metrics_without_a_writer(url: str) -> None:
    answer = fetch(f"{url}/metrics")
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(answer.text)}
    samples = families["accel_jobs"].samples
    jobs = {(s.labels["run_id"], s.labels["hardware"], s.labels["status"]): s.value for s in samples}
    assert jobs[(RUNS[1], "cuda", "failed")] == 1 and jobs[(RUNS[2], "cuda", "queued")] == 3
    assert {s.labels["run_id"] for s in families["accel_run_pass_rate"].samples} == set(RUNS)
    assert "accel_writer_backlog_messages" not in families


def test_bad_requests_get_one_line_answers(url: str) -> None:
    cases = [
        ("/api/runs/nope", 404, "run 'nope' is not in the results store"),
        ("/api/models/nope/history", 404, "model 'nope' is in no run"),
        (f"/api/runs/{RUNS[1]}/results?limit=x", 400, "limit='x' is not an integer"),
        (f"/api/runs/{RUNS[1]}/results?limit=100000", 400, "limit=100000"),
        (f"/api/runs/{RUNS[1]}/results?offset={10**23}", 400, "offset='100000000000000000000000' is out of range"),
        ("/api/models/bert/history?runs=-99999999999999999999", 400, "is out of range"),
        (f"/api/runs/{RUNS[0]}/compare", 400, "no earlier run of phase"),
        (f"/api/runs/{RUNS[1]}/hardware?a=cpu", 400, "give both"),
        ("/no/such/thing", 404, "no such page or endpoint"),
        (f"/runs/{RUNS[1]}/report.pdf", 404, "no such page"),
    ]
    for path, status, message in cases:
        answer = fetch(url + path)
        assert answer.status == status, (path, answer.text)
        assert message in answer.json()["error"] and "Traceback" not in answer.text
    page = fetch(f"{url}/runs/nope")
    assert page.status == 404 and "text/html" in page.headers["Content-Type"]
    assert "is not in the results store" in page.text


def test_read_only_by_construction_every_other_method_is_refused(url: str, db: Path) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"):
        assert fetch(f"{url}/api/runs", method=method).status == 405


def test_every_answer_carries_the_security_headers(url: str) -> None:
    for path in ("/", f"/runs/{RUNS[0]}", "/api/runs", "/metrics", "/nope"):
        headers = fetch(url + path).headers
        assert headers["Content-Security-Policy"].startswith("default-src 'none'"), path
        assert "script-src" not in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY"


def test_pages_of_live_runs_ask_for_a_reload(url: str, tmp_path: Path) -> None:
    assert fetch(url + "/").headers["Refresh"] == "10"
    assert fetch(f"{url}/runs/{RUNS[2]}").headers["Refresh"] == "10"
    assert fetch(f"{url}/runs/{RUNS[1]}").headers["Refresh"] is None
    done = build_store(tmp_path / "done.duckdb", runs=("r1",))
    with running_service(done) as service:
        assert fetch(service.url + "/").headers["Refresh"] is None


def test_a_token_is_required_when_configured(db: Path) -> None:
    # Given a service with a token
    config = ServiceConfig(port=0, token="s3cret")
    with running_service(db, config) as service:
        for path in ("/api/runs", "/", "/metrics", "/nope", "/static/accel.css"):
            # Then without it (or with a wrong one) every path answers 401 with a basic-auth challenge
            denied = fetch(service.url + path)
            assert denied.status == 401 and denied.headers["WWW-Authenticate"].startswith("Basic realm=")
            assert fetch(service.url + path, headers={"Authorization": "Bearer wrong"}).status == 401
        # And with it, as a bearer token or a basic-auth password, the answer is 200
        basic = "Basic " + base64.b64encode(b"me:s3cret").decode()
        for header in ("Bearer s3cret", basic):
            assert fetch(service.url + "/api/runs", headers={"Authorization": header}).status == 200


def test_a_slow_read_never_stalls_other_requests(db: Path) -> None:
    # Given a service whose writer probe (run in the read pool, like every store read) takes 2 s
    def slow_probe() -> WriterFigures:
        time.sleep(2.0)
        return WriterFigures(backlog=3, lag_s=0.5)

    source = ReadSource.open(db)
    with ResultsService(source, ServiceConfig(port=0), hooks=HostHooks(writer=slow_probe)) as service:
        slow: dict[str, Answer] = {}
        thread = threading.Thread(target=lambda: slow.update(answer=fetch(service.url + "/metrics")))
        thread.start()
        time.sleep(0.2)
        # When other requests arrive meanwhile; Then they are answered long before the slow one
        started = time.monotonic()
        for _ in range(5):
            assert fetch(service.url + "/api/runs").status == 200
        assert time.monotonic() - started < 1.5
        thread.join()
    source.close()
    assert "accel_writer_backlog_messages 3.0" in slow["answer"].text


def test_hosted_by_the_writer_reads_see_each_commit_while_it_ingests(tmp_path: Path) -> None:
    # Given the writer's store, open read-write in this process, and the service over its own connection,
    # its answers cached per commit (the store's version is the writer's count of commits)
    run = SyntheticRun("live", models=tuple(f"m{i}" for i in range(40)))
    commits = [0]
    with ResultsStore.open(tmp_path / "results.duckdb") as writer:
        writer.record_run(run.plan())
        source = ReadSource.open(tmp_path / "results.duckdb")
        with ResultsService(source, ServiceConfig(port=0), hooks=HostHooks(version=lambda: commits[0])) as service:
            seen = []
            for i in range(0, 40, 10):
                # When the writer commits a batch; Then the next read sees it
                writer.record_results([run.result(m, "cpu") for m in run.models[i : i + 10]])
                commits[0] += 1
                seen.append(fetch(f"{service.url}/api/runs/live").json()["progress"]["terminal"])
                # And asking again before the next commit is answered from the cache
                assert fetch(f"{service.url}/api/runs/live").json()["progress"]["terminal"] == seen[-1]
            assert service.cache.hits == 4
        source.close()
    assert seen == [10, 20, 30, 40]


def _threads_have_priorities_of_their_own() -> bool:
    """Whether this kernel gives a thread a priority of its own (Linux does; some sandboxes keep one per process)."""
    if not sys.platform.startswith("linux"):
        return False
    base = os.getpriority(os.PRIO_PROCESS, 0)
    seen: list[int] = []

    def probe() -> None:
        tid = threading.get_native_id()
        try:
            os.setpriority(os.PRIO_PROCESS, tid, min(19, base + 1))
        except OSError:
            return
        seen.append(os.getpriority(os.PRIO_PROCESS, tid))

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return base < 19 and seen == [base + 1] and os.getpriority(os.PRIO_PROCESS, 0) == base


@pytest.mark.skipif(not _threads_have_priorities_of_their_own(), reason="this kernel keeps one priority per process")
def test_the_service_threads_yield_the_cpu_to_their_host(db: Path) -> None:
    # Given a service started by this thread, that has answered a request (its read threads exist)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    before = set(threading.enumerate())
    with running_service(db) as service:
        assert fetch(f"{service.url}/api/runs").status == 200
        ours = [t for t in set(threading.enumerate()) - before if t.name.startswith(("accel-read", "accel-results"))]
        # Then each of its threads runs nicer than the host's own (the writer's ingest goes first)
        nice = [os.getpriority(os.PRIO_PROCESS, t.native_id or 0) for t in ours]
    assert len(ours) >= 2 and nice == [min(19, base + ServiceConfig().read_nice)] * len(ours)
    # And the host's own priority is untouched
    assert os.getpriority(os.PRIO_PROCESS, 0) == base


def test_reads_rest_while_the_host_is_busy_and_not_otherwise(db: Path) -> None:
    # Given a host that says it is busy (the writer has a backlog), then one that is idle
    source = ReadSource.open(db)
    for busy, rests in ((True, True), (False, False)):
        config = ServiceConfig(port=0, read_threads=1, read_share=0.5)
        with ResultsService(source, config, hooks=HostHooks(busy=lambda b=busy: b)) as service:
            # When a few requests are answered (each by the one read thread)
            for _ in range(3):
                assert fetch(f"{service.url}/api/runs").status == 200
            # Then the thread rested between them only while the host was busy
            assert (service.budget.rested_s > 0) is rests
    source.close()

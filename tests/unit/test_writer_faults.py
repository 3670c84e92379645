"""The writer under bad input and a failing store: dead letters, the rest written, nothing dropped unseen."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from accelerate_core import celery_message, dead_letters, wire
from accelerate_core.config import Settings
from accelerate_core.constants import ERR_WORKER, STATUS_DONE, TASK_RECORD_RESULT, TASK_RECORD_RUN
from accelerate_core.contracts import DeadLetter, JobResult
from accelerate_core.errors import StoreWriteError
from accelerate_core.signing import FleetKey
from accelerate_core.store import ResultsStore
from tests.faults.harness import dry_plan
from tests.faults.scenarios_writer import _envelope, _result_message, malformed_messages
from tests.support.fleet_key import FLEET_KEY
from workers import writer


def _done(plan_job: object) -> JobResult:
    return JobResult.for_spec(plan_job, status=STATUS_DONE, started_at=1.0, finished_at=2.0, worker_id="cpu0@h",  # type: ignore[arg-type]
                              host="h", attempt=1)  # fmt: skip


def test_each_malformed_kind_is_dead_lettered_and_the_rest_of_the_batch_is_written(tmp_path: Path) -> None:
    # Given a batch: a run, one message of each malformed kind, then valid results of the run's other jobs
    plan = dry_plan("run-bad", 4)
    bad = malformed_messages(plan)
    good = [_result_message(wire.encode(_done(j))) for j in plan.jobs[2:]]
    raws = [
        _envelope(TASK_RECORD_RUN, FLEET_KEY.envelope(TASK_RECORD_RUN, "plan", wire.encode(plan))),
        *bad.values(),
        *good,
    ]
    letters: list[DeadLetter] = []
    with ResultsStore.memory() as store:
        w = writer.ResultWriter(store, Settings(reports_dir=tmp_path / "reports", results_db=tmp_path / "r.duckdb"),
                                dead_letter=letters.append, key=FLEET_KEY)  # fmt: skip
        # When the writer applies it
        writer.process_batch(w, raws)
        rows = dict(store.query("SELECT job_key, coalesce(error_class, status) FROM jobs WHERE run_id = 'run-bad'"))
        strangers = store.query("SELECT count(*) FROM jobs WHERE run_id <> 'run-bad'")[0][0]
    # Then every malformed message is a dead letter, counted, with its reason
    assert len(letters) == len(bad) == w.state.dead_letters
    assert all(d.reason for d in letters)
    reasons = [d.reason.split(":")[0] for d in letters]
    assert reasons.count("unsigned") == reasons.count("bad-signature") == 1  # the false failures, refused
    assert {d.task for d in letters} >= {TASK_RECORD_RESULT, TASK_RECORD_RUN, "accel.no_such_task", None}
    # And the two that name a planned job make its row; the valid results are written (not the false failures
    # of the last job sent before its real result); the stranger is not
    assert rows[plan.jobs[0].key] == rows[plan.jobs[1].key] == ERR_WORKER
    assert rows[plan.jobs[2].key] == rows[plan.jobs[3].key] == STATUS_DONE
    assert strangers == 0
    # And the run completed
    assert w.reported.keys() == {"run-bad"}


class _FullDisk(ResultsStore):
    def record_results(self, results: object) -> int:  # type: ignore[override]
        raise StoreWriteError("could not record 1 job results: the commit failed (File too large)")


def test_a_batch_the_store_cannot_commit_is_kept_not_dropped_nor_dead_lettered(tmp_path: Path) -> None:
    plan = dry_plan("run-full", 1)
    letters: list[DeadLetter] = []
    with ResultsStore.memory() as mem:
        store = _FullDisk(mem._conn, ":memory:", read_only=False)  # type: ignore[arg-type]
        store.record_run(plan)
        w = writer.ResultWriter(store, Settings(reports_dir=tmp_path / "reports"), dead_letter=letters.append,
                                key=FLEET_KEY)  # fmt: skip
        w._runs.add(plan.run_id)
        raws = [_result_message(wire.encode(_done(plan.jobs[0])))]
        # When the one-row batch cannot be committed, Then the failure reaches the loop (which keeps the batch)
        with pytest.raises(StoreWriteError):
            writer.process_batch(w, raws)
    assert letters == []


@pytest.mark.redis
def test_dead_letters_are_kept_newest_first_and_counted(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    assert dead_letters.count(client) == 0 and dead_letters.read(client) == []
    for i in range(3):
        dead_letters.push(client, dead_letters.letter(b"\xff" + str(i).encode(), f"reason {i}", now=float(i)))
    found = dead_letters.read(client, limit=2)
    assert dead_letters.count(client) == 3
    assert [d.reason for d in found] == ["reason 2", "reason 1"] and found[0].message == "\ufffd2"


def test_a_workers_canonical_result_is_checked_over_its_bytes_and_every_bad_one_still_refused(tmp_path: Path) -> None:
    # Given a run's results as workers push them (canonical bodies): one good, and one each unsigned, forged
    # (another key), and altered after signing (a signed payload whose bytes were changed: status flipped)
    plan = dry_plan("run-raw", 4)
    first, second, third, fourth = (wire.encode(_done(j)) for j in plan.jobs)

    def pushed(kwargs: dict[str, object]) -> bytes:
        return celery_message.build(TASK_RECORD_RESULT, kwargs, queue="results", kwargsrepr="{}")

    altered = pushed(FLEET_KEY.envelope(TASK_RECORD_RESULT, "result", third))
    body = base64.b64decode(json.loads(altered)["body"]).replace(b'"status":"done"', b'"status":"failed"')
    altered = json.dumps({**json.loads(altered), "body": base64.b64encode(body).decode()}).encode()
    other_key = FleetKey(bytes(32))
    raws = [
        _envelope(TASK_RECORD_RUN, FLEET_KEY.envelope(TASK_RECORD_RUN, "plan", wire.encode(plan))),
        pushed(FLEET_KEY.envelope(TASK_RECORD_RESULT, "result", first)),
        pushed({"result": second}),
        pushed(other_key.envelope(TASK_RECORD_RESULT, "result", fourth)),
        altered,
    ]
    assert celery_message.signed_payload(body, "result") is not None  # the altered one takes the fast path
    letters: list[DeadLetter] = []
    with ResultsStore.memory() as store:
        w = writer.ResultWriter(store, Settings(reports_dir=tmp_path / "reports", results_db=tmp_path / "r.duckdb"),
                                dead_letter=letters.append, key=FLEET_KEY)  # fmt: skip
        # When the writer applies them
        writer.process_batch(w, raws)
        rows = dict(store.query("SELECT job_key, status FROM jobs WHERE run_id = 'run-raw'"))
    # Then the good one is recorded; the unsigned, forged and altered ones are dead-lettered, each saying why
    assert rows[plan.jobs[0].key] == STATUS_DONE
    assert all(rows[j.key] == "queued" for j in plan.jobs[1:])
    assert [d.reason.split(":")[0] for d in letters] == ["unsigned", "bad-signature", "bad-signature"]


def test_signed_payload_reads_only_a_canonical_body() -> None:
    kwargs = FLEET_KEY.envelope(TASK_RECORD_RESULT, "result", {"v": "1.6", "a": [1.5, "é"]})
    canonical = wire.canonical([[], kwargs, {"chain": None}])
    payload, data, signature = celery_message.signed_payload(canonical, "result") or (None, b"", "")
    assert payload == {"v": "1.6", "a": [1.5, "é"]} and data == wire.canonical(payload)
    assert FLEET_KEY.signs(TASK_RECORD_RESULT, data, signature)
    assert celery_message.signed_payload(json.dumps([[], kwargs, {}]), "result") is None  # kombu's own layout
    assert celery_message.signed_payload(canonical + b" ", "result") is None
    assert celery_message.signed_payload(canonical, "results") is None

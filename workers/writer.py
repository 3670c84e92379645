"""The results writer: the one process that opens the results DuckDB file read-write.

It consumes the ``results`` queue alone (concurrency 1) and records runs, job results and worker
inventories through :class:`~accelerate_core.store.ResultsStore`, in batches. The messages are
ordinary Celery task messages (``accel.record_result``, ``accel.record_run``, ``accel.register_worker``):
the scheduler sends them by name, workers push their results as one ``LPUSH`` of the same message
(:func:`accelerate_core.celery_message.build`). The writer takes them off the queue many at a
time (lingering :data:`LINGER_S` for a fuller batch) instead of one per Celery delivery: a DuckDB
write costs a fixed 10-50 ms whatever its size, and Celery's Redis consumer costs two Redis
transactions per message, so one-at-a-time intake could never keep up with the workers.

Intake is the reliable-queue pattern on the same Redis list that kombu fills: one Lua call moves up
to ``BATCH_MAX`` messages from ``results`` to a processing list, the batch is written in one upsert,
and only then is the processing list deleted (the batch's acknowledgement). A writer that dies
mid-batch loses nothing: the next one writes the processing list first, and the upsert by job key
never makes a second row. Messages are handled in queue order, so a run is recorded before its
results. A lock (:class:`workers.keeper.WriterLock`) keeps a second writer off the same broker, and the
writer checks it still holds it before each claim and each write (fencing).

After each batch the writer checks the runs it touched: a run whose every job has a terminal row is
*done* (counted in the store, no Celery chords): ``accelerate_core.finish.finish_run`` marks it
``complete`` and writes its report, as the local executor does. A status snapshot of each touched run is
published (throttled) to Redis key ``acc:status:<run>`` and as a file next to the results DB, for
``accel status`` while this process holds the file.

Every ``record_result``, ``record_run`` and ``cancel_run`` message must be signed with the fleet key
(:mod:`accelerate_core.signing`): an unsigned or forged one is dead-lettered (reason ``unsigned: ...`` or
``bad-signature: ...``) and nothing of it is applied; the rest of its batch is. Payloads decode by
:mod:`accelerate_core.wire`'s one rule. A result or run this writer cannot decode is
still recorded when its job keys can be read: as ``version-skew`` rows (another schema major, both
versions named) or ``worker-error`` rows, never a vanished message.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelerate_core import celery_message, dead_letters, wire
from accelerate_core.config import Settings
from accelerate_core.constants import (
    ERR_REVOKED,
    ERR_UNSIGNED,
    RUN_RUNNING,
    STATUS_CANCELLED,
    TASK_CANCEL_RUN,
    TASK_RECORD_RESULT,
    TASK_RECORD_RUN,
    TASK_REGISTER_WORKER,
    WRITER_PROCESSING_KEY,
)
from accelerate_core.contracts import DeadLetter, JobResult, RunParams, RunPlan, StatusSnapshot, WorkerInfo
from accelerate_core.errors import (
    ConfigError,
    ContractError,
    LockLostError,
    SignatureError,
    StoreError,
    StoreLockedError,
    StoreWriteError,
    UnknownRunError,
)
from accelerate_core.finish import finish_run
from accelerate_core.job_outcome import undecodable_result
from accelerate_core.names import check_name
from accelerate_core.store.snapshot import snapshot_dir, write_snapshot
from workers.keeper import WriterLock, WriterState

if TYPE_CHECKING:
    import redis

    from accelerate_core.signing import FleetKey
    from accelerate_core.store import ResultsStore

logger = logging.getLogger(__name__)

BATCH_MAX = 1000
"""Most messages taken off the ``results`` queue (and written) in one batch."""

WAIT_S = 1.0
"""How long an idle writer blocks waiting for the next message, in seconds (bounds its stop time)."""

LINGER_S = 0.25
"""How long a writer that claimed less than a full batch waits for more before writing it, in seconds.

A write costs a fixed 10-50 ms of the writer's CPU whatever its size: without a pause a writer that keeps up
claims one or two results at a time and spends its CPU (which the workers share on a small machine) on
near-empty commits. The claimed messages wait in the processing list meanwhile, as during the write itself."""

RETRY_MIN_S = 0.5
"""The first pause before a failed batch is tried again, in seconds; it doubles with each failure."""

RETRY_MAX_S = 8.0
"""The longest pause between two tries of a failed batch, in seconds."""

REPORT_RETRY_S = 5.0
"""Least time between two tries to finish a run whose report could not be written, in seconds."""

SNAPSHOT_EVERY_S = 1.0
"""Least time between two status snapshots of one run, in seconds."""

WRITER_ID = "writer"
"""The ``worker_id`` of the rows the writer makes itself (results it could not decode)."""

Publish = Callable[[StatusSnapshot], None]
"""Stores one status snapshot where ``accel status`` finds it (Redis in the fleet)."""

# Move up to ARGV[1] messages from the queue's tail (its oldest) to the processing list, atomically.
_CLAIM_LUA = """
local out = {}
for i = 1, tonumber(ARGV[1]) do
  local v = redis.call('RPOPLPUSH', KEYS[1], KEYS[2])
  if not v then break end
  out[i] = v
end
return out
"""


# Delete the processing list when it holds exactly the settled batch (1), else leave it (0).
_SETTLE_LUA = """
if redis.call('LLEN', KEYS[1]) == tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


class ResultWriter:
    """Records what arrives on the ``results`` queue; writes results in batches; finishes runs.

    Args:
        store: the results store, opened read-write by this process.
        settings: where reports and snapshots go.
        publish: where a run's status snapshot is published besides the file (Redis in the fleet).
        clock: a monotonic clock (tests pass their own).
        state: what the writer is doing, for its heartbeat (the keeper publishes it).
        fence: called before each write; raises :class:`LockLostError` once this writer lost its lock.
        dead_letter: where a message it cannot use is kept (Redis in the fleet); it is counted either way.
        key: the fleet key that must have signed each run message (``record_run``): the reconciler re-sends
            a recorded run's jobs signed, so a forged run would otherwise be a way to get a job signed.
    """

    def __init__(
        self,
        store: ResultsStore,
        settings: Settings,
        *,
        publish: Publish | None = None,
        clock: Callable[[], float] = time.monotonic,
        state: WriterState | None = None,
        fence: Callable[[], None] | None = None,
        dead_letter: Callable[[DeadLetter], None] | None = None,
        revoke: Callable[[list[str]], None] | None = None,
        key: FleetKey,
    ) -> None:
        self.key = key
        self.dead_letter = dead_letter
        self.revoke = revoke
        self.store = store
        self.state = state or WriterState()
        self.fence = fence or (lambda: None)
        self.settings = settings
        self.publish = publish
        self.clock = clock
        self._held: list[JobResult] = []
        self._snapshot_at: dict[str, float] = {}
        self.reported: dict[str, Path] = {}
        self.report_errors: dict[str, str] = {}
        self._runs: set[str] = set()
        self.commits = 0
        """Batches and runs committed so far: the store's version for the results service's answer cache."""
        self.committed_at = -1e9
        """When (``clock``) the last commit was: the service's reads yield to ingest for a while after it."""
        self._reports_tried = -1e9

    def handle(self, task: str, kwargs: dict[str, Any]) -> None:
        """Apply one message (a task name and its keyword arguments); results are held for :meth:`flush`.

        A result that cannot be decoded is recorded as its job's ``worker-error``/``version-skew`` row when
        its job key can be read, and set aside as a dead letter either way.

        Raises:
            ContractError: the message is not one the writer knows, or it cannot be decoded and names no job,
                or it is a result, run, cancel or register_worker message not signed with the fleet key
                (:class:`SignatureError`).
        """
        # An unsigned or forged message raises SignatureError before anything of it is read: dead-lettered,
        # nothing recorded, cancelled, re-sent or registered (a forged node would pose as hardware in the reports).
        if task == TASK_RECORD_RESULT:
            self._hold(self._signed_results(kwargs))
        elif task == TASK_RECORD_RUN:
            self._run_message(self.key.open(TASK_RECORD_RUN, "plan", kwargs))
        elif task == TASK_CANCEL_RUN:
            self.cancel_run(check_name(self.key.open(TASK_CANCEL_RUN, "run_id", kwargs), "cancel_run.run_id"))
        elif task == TASK_REGISTER_WORKER:
            info = wire.decode(WorkerInfo, self.key.open(TASK_REGISTER_WORKER, "info", kwargs))
            self.fence()
            self.store.register_worker(info)
        else:
            raise ContractError(f"the writer got a {task!r} message: only record_* and register_worker go to results")

    def handle_body(self, task: str, body: bytes | str) -> None:
        """:meth:`handle` a message by its task name and (not yet parsed) body.

        A worker's result (a canonical body, :func:`accelerate_core.celery_message.build`) whose signature is the
        fleet key's over its payload's bytes as received is parsed once and not encoded again to be checked;
        any other message, a forged one too, is parsed whole and checked by :meth:`handle` (which says why not).
        """
        payload = signed_result(self.key, body) if task == TASK_RECORD_RESULT else None
        if payload is not None:
            self._hold([payload])
        else:
            self.handle(task, body_kwargs(body))

    def _hold(self, payloads: list[object]) -> None:
        for payload in payloads:
            row = self._result(payload)
            if row is not None:
                self._held.append(row)

    def set_aside(
        self, message: bytes | str, reason: str, *, task: str | None = None, run_id: str | None = None
    ) -> None:
        """Dead-letter ``message`` (counted, kept for ``accel dead-letters``); the batch goes on."""
        self.state.dead_letters += 1
        logger.error("writer: dead-lettered a %s message: %s", task or "results", reason)
        if self.dead_letter is not None:
            self.dead_letter(dead_letters.letter(message, reason, task=task, run_id=run_id))

    def _signed_results(self, kwargs: dict[str, Any]) -> list[object]:
        """The results of a ``record_result`` message once its signature is checked: one under ``result`` (a
        worker's), or a list under ``results`` (skipped and lost rows); only the signed one of the two is read.

        Raises:
            SignatureError: unsigned or forged.
            ContractError: signed, but ``result`` is not an object or ``results`` not a list.
        """
        name = "result" if "result" in kwargs else "results"
        signed = self.key.open(TASK_RECORD_RESULT, name, kwargs)
        if name == "result" and isinstance(signed, dict):
            return [signed]
        if name == "results" and isinstance(signed, list):
            return signed
        raise ContractError(f"a record_result message whose {name!r} is a {type(signed).__name__}")

    def _result(self, payload: object) -> JobResult | None:
        try:
            return wire.decode(JobResult, payload)
        except ContractError as e:
            key = payload.get("key") if isinstance(payload, dict) else None
            row = undecodable_result(key, e, worker_id=WRITER_ID, host=socket.gethostname())
            text = json.dumps(payload, default=str)
            self.set_aside(text, str(e), task=TASK_RECORD_RESULT, run_id=row.run_id if row else None)
            if row is not None:
                logger.error("the result of job %s cannot be decoded: recording %s", key, row.error_class)
            return row

    def _run_message(self, payload: object) -> None:
        try:
            plan = wire.decode(RunPlan, payload)
        except ContractError as e:
            if not self._record_undecodable_run(payload, e):
                raise
            return
        self.record_run(plan)

    def _record_undecodable_run(self, payload: object, error: ContractError) -> bool:
        """Record a run message that cannot be decoded: the run by its id, each job it names as a row."""
        data: dict[str, Any] = payload if isinstance(payload, dict) else {}
        jobs = data.get("jobs")
        host = socket.gethostname()
        rows = [undecodable_result(j.get("key"), error, worker_id=WRITER_ID, host=host)
                for j in (jobs if isinstance(jobs, list) else []) if isinstance(j, dict)]  # fmt: skip
        found = [r for r in rows if r is not None]
        if not found:
            return False
        logger.error("run message of %s cannot be decoded (%s): recording %d job rows", found[0].run_id, error,
                     len(found))  # fmt: skip
        phase = data.get("phase")
        params = RunParams(n_jobs=len(found))
        self.record_run(
            RunPlan(found[0].run_id, phase if isinstance(phase, str) else "unknown", time.time(), params, ())
        )
        self._held.extend(found)
        return True

    def record_run(self, plan: RunPlan) -> None:
        """Record a run and its planned jobs (``queued``); idempotent."""
        self.flush()  # results held so far belong to earlier messages: keep queue order
        self.fence()
        self.store.record_run(plan)
        self.store.set_run_status(plan.run_id, RUN_RUNNING)
        self._runs.add(plan.run_id)
        self._after_commit({plan.run_id}, force_snapshot=True)

    def cancel_run(self, run_id: str) -> list[str]:
        """Record every unfinished job of ``run_id`` ``cancelled`` and revoke them; the run then ends and is reported.

        A job running now goes on where it runs; its late result is a duplicate of a terminal row and ignored.

        Returns:
            The keys cancelled (none for a run that had already finished).

        Raises:
            UnknownRunError: the store has no such run.
        """
        self.flush()  # results that came before the cancel count
        self.store.get_run(run_id)
        now = time.time()
        message = "the run was cancelled (accel cancel) before this job finished"
        host = socket.gethostname()
        rows = [
            JobResult.for_spec(spec, status=STATUS_CANCELLED, started_at=now, finished_at=now, error_class=ERR_REVOKED,
                               error_message=message, worker_id=WRITER_ID, host=host)
            for spec in self.store.unfinished_jobs(run_id)
        ]  # fmt: skip
        self._held.extend(rows)
        self.flush()
        keys = [r.key for r in rows]
        if keys and self.revoke is not None:
            self.revoke(keys)
        logger.info("run %s cancelled: %d unfinished jobs recorded cancelled and revoked", run_id, len(keys))
        return keys

    def flush(self) -> int:
        """Write every held result in one upsert, then finish the runs it completes; return the rows.

        Results for a run the store does not know, and rows the store refuses on their own while it
        writes the others (poison), are dead-lettered; the rest of the batch is written.

        Raises:
            StoreError: the store cannot write (every row refused, or a commit failed: a full disk); the
                caller keeps the batch unacknowledged and tries it again.
        """
        if not self._held:
            return 0
        self.fence()
        rows, self._held = self._held, []
        rows = self._of_known_runs(rows)
        final = self.store.final_keys([r.key for r in rows])
        try:
            written = self.store.record_results(rows)
        except StoreWriteError:
            raise
        except (StoreError, ConfigError) as e:
            logger.error("writing a batch of %d results failed (%s): writing them one at a time", len(rows), e)
            written = self._record_one_by_one(rows)
        self._count_duplicates(len(rows) - written)
        self._after_commit({r.run_id for r in rows}, changed={r.run_id for r in rows if r.key not in final})
        return len(rows)

    def _count_duplicates(self, n: int) -> None:
        """Late results of jobs that already had their final row: counted, never written over it."""
        if n > 0:
            self.state.duplicates += n
            logger.info("writer: %d late duplicate results kept out (first terminal result wins)", n)

    def _of_known_runs(self, rows: Sequence[JobResult]) -> list[JobResult]:
        """``rows`` of runs the store knows; the others are dead-lettered (no run message came before them)."""
        unseen = sorted({r.run_id for r in rows} - self._runs)
        if unseen:
            found = self.store.query("SELECT run_id FROM runs WHERE list_contains(?, run_id)", [unseen])
            self._runs.update(str(f[0]) for f in found)
        kept = []
        for row in rows:
            if row.run_id in self._runs:
                kept.append(row)
            else:
                reason = f"a result for run {row.run_id!r}, which the results store does not know"
                self.set_aside(json.dumps(wire.encode(row)), reason, task=TASK_RECORD_RESULT, run_id=row.run_id)
        return kept

    def _record_one_by_one(self, rows: Sequence[JobResult]) -> int:
        written = accepted = 0
        refused: list[tuple[JobResult, str]] = []
        for row in rows:
            try:
                written += self.store.record_results([row])
                accepted += 1
            except StoreWriteError:
                raise
            except (StoreError, ConfigError) as e:
                refused.append((row, str(e)))
        if accepted == 0 and refused:
            raise StoreError(f"the results store refused every row of the batch ({refused[0][1]}): retrying")
        for row, reason in refused:  # the store took the others: these are poison, never retried
            self.set_aside(json.dumps(wire.encode(row)), f"the results store refused it: {reason}",
                           task=TASK_RECORD_RESULT, run_id=row.run_id)  # fmt: skip
        return written + len(refused)

    def _after_commit(
        self, run_ids: set[str], *, force_snapshot: bool = False, changed: set[str] | None = None
    ) -> None:
        """Finish the runs the commit completed, rewrite the report of a reported run whose rows ``changed``
        (all of ``run_ids`` when None), and publish their snapshots."""
        self.commits += 1
        self.committed_at = self.clock()
        changed = run_ids if changed is None else changed
        for run_id in sorted(run_ids):
            done = False
            try:
                fresh = run_id not in self.reported or run_id in changed
                done = fresh and self.store.is_phase_done(run_id)
                if done:
                    self._finish_run(run_id)
            except (OSError, StoreError) as e:  # a full disk, say: retried by retry_reports
                logger.error("finishing run %s failed (%s): trying again every %.0f s", run_id, e, REPORT_RETRY_S)
                self.report_errors[run_id] = f"{type(e).__name__}: {e}"
            except Exception as e:
                logger.exception("finishing run %s failed", run_id)
                self.report_errors[run_id] = f"{type(e).__name__}: {e}"
            try:
                self._snapshot(run_id, force=force_snapshot or done)
            except OSError as e:
                logger.warning("the status snapshot of run %s failed: %s", run_id, e)
            except Exception:
                logger.exception("the status snapshot of run %s failed", run_id)

    def retry_reports(self) -> None:
        """Finish again the runs whose finishing failed (a full disk), every :data:`REPORT_RETRY_S` at most."""
        now = self.clock()
        if not self.report_errors or now - self._reports_tried < REPORT_RETRY_S:
            return
        self._reports_tried = now
        for run_id in sorted(self.report_errors):
            try:
                self._finish_run(run_id)
            except (OSError, StoreError) as e:
                self.report_errors[run_id] = f"{type(e).__name__}: {e}"
                continue
            del self.report_errors[run_id]
            self._after_commit({run_id}, force_snapshot=True)

    def _finish_run(self, run_id: str) -> None:
        finish_run(self.store, run_id, self.settings.reports_dir)
        self.reported[run_id] = self.settings.reports_dir / run_id
        logger.info("run %s complete: report in %s", run_id, self.reported[run_id])

    def _snapshot(self, run_id: str, *, force: bool) -> None:
        now = self.clock()
        if not force and now - self._snapshot_at.get(run_id, -1e9) < SNAPSHOT_EVERY_S:
            return
        self._snapshot_at[run_id] = now
        snapshot = self.store.run_progress(run_id)
        if run_id in self.reported:
            snapshot = replace(snapshot, report_dir=str(self.reported[run_id]))
        elif run_id in self.report_errors:
            snapshot = replace(snapshot, report_error=self.report_errors[run_id])
        write_snapshot(snapshot, snapshot_dir(self.settings))
        if self.publish is not None:
            self.publish(snapshot)


def open_store(path: Path, state: WriterState, stop: threading.Event) -> ResultsStore | None:
    """Open the results DB read-write; while another process holds it, wait (saying so once) until ``stop``.

    A writer that stalled and lost its lock may still hold the file on this machine until it notices
    and exits; the new writer waits for it rather than exiting.
    """
    from accelerate_core.store import ResultsStore

    said = False
    while not stop.is_set():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            store = ResultsStore.open(path)
        except StoreLockedError as e:
            if not said:
                logger.warning("writer: %s; waiting for it", e)
                said = True
            state.state = "waiting-store"
            stop.wait(0.5)
            continue
        state.state = "writing"
        return store
    return None


def redis_publisher(client: redis.Redis) -> Publish:
    """A :data:`Publish` that stores each run's snapshot at ``acc:status:<run>`` in Redis."""
    import redis as redis_lib

    from accelerate_core import broker

    def publish(snapshot: StatusSnapshot) -> None:
        try:
            broker.publish_status(client, snapshot)
        except redis_lib.RedisError as e:
            logger.warning("cannot publish the status of run %s to redis: %s", snapshot.run_id, e)

    return publish


def redis_dead_letters(client: redis.Redis, state: WriterState) -> Callable[[DeadLetter], None]:
    """A dead-letter sink that keeps each letter in Redis (``accel dead-letters``) and its count in ``state``."""
    import redis as redis_lib

    def keep(dead: DeadLetter) -> None:
        try:
            state.dead_letters = dead_letters.push(client, dead)
        except redis_lib.RedisError as e:
            logger.warning("cannot keep a dead letter in redis (%s): %s", e, dead.message[:500])

    return keep


def decode_message(raw: bytes) -> tuple[str, dict[str, Any]]:
    """The task name and keyword arguments of one kombu/Celery (protocol 2, JSON) message.

    Raises:
        ContractError: not a JSON Celery task message (pickle and other encodings are refused).
    """
    task, body = message_body(raw)
    return task, body_kwargs(body)


def message_body(raw: bytes) -> tuple[str, bytes | str]:
    """The task name and the (JSON, not yet parsed) body of one kombu/Celery (protocol 2, JSON) message.

    Raises:
        ContractError: not a JSON Celery task message (pickle and other encodings are refused).
    """
    try:
        envelope = json.loads(raw)
        if envelope.get("content-type") != "application/json":
            raise ValueError(f"content type {envelope.get('content-type')!r} is not JSON")
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        return str(envelope["headers"]["task"]), body
    except (ValueError, KeyError, TypeError) as e:
        raise _not_celery(e) from e


def signed_result(key: FleetKey, body: bytes | str) -> dict[str, Any] | None:
    """The result of a ``record_result`` body as a worker sends it (canonical:
    :func:`accelerate_core.celery_message.build`) when ``key`` signed its bytes as they are; None for any other body,
    a forged one too (:func:`body_kwargs` and :meth:`ResultWriter.handle` read it whole and say why).
    """
    found = celery_message.signed_payload(body, "result")
    if found is None or not isinstance(found[0], dict) or not key.signs(TASK_RECORD_RESULT, found[1], found[2]):
        return None
    return found[0]


def body_kwargs(body: bytes | str) -> dict[str, Any]:
    """The keyword arguments of a :func:`message_body`.

    Raises:
        ContractError: not a JSON Celery protocol 2 body.
    """
    try:
        _args, kwargs, _embed = json.loads(body)
        return dict(kwargs)
    except (ValueError, KeyError, TypeError) as e:
        raise _not_celery(e) from e


def _not_celery(e: Exception) -> ContractError:
    return ContractError(f"a message on the results queue is not a JSON Celery task ({e})")


@dataclass
class Intake:
    """Takes messages off the ``results`` queue in batches, reliably (see the module docstring)."""

    client: redis.Redis
    queue: str
    processing_key: str = WRITER_PROCESSING_KEY

    def claim(
        self,
        limit: int = BATCH_MAX,
        wait_s: float = 0.0,
        *,
        linger_s: float = 0.0,
        pause: Callable[[float], object] = time.sleep,
    ) -> list[bytes]:
        """The next batch in queue order: a batch left by a dead writer first, else up to ``limit`` new ones.

        Blocks up to ``wait_s`` for the first message when the queue is empty; with fewer than ``limit`` new
        ones, pauses ``linger_s`` once (with ``pause``) and claims what came meanwhile too (:data:`LINGER_S`).
        """
        left: list[bytes] = list(self.client.lrange(self.processing_key, 0, -1))  # type: ignore[arg-type]
        if left:
            return left[::-1]
        batch = self._claim(limit)
        if not batch and wait_s > 0:
            first: bytes | None = self.client.brpoplpush(self.queue, self.processing_key, timeout=wait_s)  # type: ignore[assignment]
            if first is None:
                return []
            batch = [first, *self._claim(limit - 1)]
        if batch and len(batch) < limit and linger_s > 0:
            pause(linger_s)
            batch += self._claim(limit - len(batch))
        return batch

    def _claim(self, limit: int) -> list[bytes]:
        return list(self.client.eval(_CLAIM_LUA, 2, self.queue, self.processing_key, limit) or [])  # type: ignore[arg-type]

    def settle(self, batch: Sequence[bytes]) -> None:
        """Acknowledge the claimed ``batch``: it is committed.

        Exactly those messages leave the processing list: anything else there (a stalled writer's
        claim, made as it woke up after losing its lock) stays for the next claim.
        """
        if not self.client.eval(_SETTLE_LUA, 1, self.processing_key, len(batch)):
            pipe = self.client.pipeline(transaction=True)
            for raw in batch:
                pipe.lrem(self.processing_key, -1, raw)  # type: ignore[arg-type]
            pipe.execute()


def process_batch(w: ResultWriter, raws: Sequence[bytes]) -> int:
    """Apply a claimed batch in order and write its results; return the messages applied.

    A message that cannot be decoded or applied (malformed, of the wrong shape, a run the store does
    not know) is dead-lettered: it would fail the same way forever. A store that cannot write raises,
    and the whole batch is kept.
    """
    applied = 0
    for raw in raws:
        task = None
        try:
            task, body = message_body(raw)
            w.handle_body(task, body)
            applied += 1
        except SignatureError as e:  # the reason says which: `unsigned: ...` or `bad-signature: ...`
            w.set_aside(raw, f"{'unsigned' if e.error_class == ERR_UNSIGNED else e.error_class}: {e}", task=task)
        except (ContractError, UnknownRunError, ConfigError) as e:
            w.set_aside(raw, str(e), task=task)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            w.set_aside(raw, f"the message has the wrong shape ({type(e).__name__}: {e})", task=task)
    w.flush()
    return applied


def serve(
    w: ResultWriter,
    intake: Intake,
    stop: threading.Event,
    *,
    lock: WriterLock | None = None,
    reconcile: Callable[[], object] | None = None,
) -> int:
    """The writer's loop: claim a batch, apply it, commit, acknowledge; until ``stop`` is set.

    A store that cannot commit (a full disk) and a broker that fails are logged and retried with
    backoff (:data:`RETRY_MIN_S` doubling to :data:`RETRY_MAX_S`); the claimed batch stays
    unacknowledged meanwhile, so nothing is lost and nothing behind it is skipped.
    ``reconcile`` (``workers.reconciler.Reconciler.tick``) is called after every loop, between batches.

    Returns:
        The number of messages applied.

    Raises:
        LockLostError: ``lock`` is another writer's now (checked before each claim and each write).
    """
    import redis as redis_lib

    total = 0
    pause = RETRY_MIN_S
    failing_since: float | None = None
    while not stop.is_set():
        try:
            if lock is not None:
                lock.check()
            raws = intake.claim(BATCH_MAX, wait_s=WAIT_S, linger_s=LINGER_S, pause=stop.wait)
            if raws:
                total += process_batch(w, raws)
                intake.settle(raws)
            if failing_since is not None:
                logger.info("writer: writing again after %.0f s; nothing was lost", time.monotonic() - failing_since)
            w.state.state, w.state.last_error, failing_since = "writing", None, None
            pause = RETRY_MIN_S
            w.retry_reports()
            if reconcile is not None:
                reconcile()
        except LockLostError:
            raise
        except (StoreError, redis_lib.RedisError) as e:
            if isinstance(e, StoreError):
                w.state.state, w.state.last_error = "store-failing", str(e)
            if failing_since is None:  # one line per outage, not one per try
                failing_since = time.monotonic()
                logger.error("writer: %s; keeping the batch unacknowledged and retrying until it is written", e)
            stop.wait(pause)
            pause = min(pause * 2, RETRY_MAX_S)
    return total


def celery_revoker(settings: Settings) -> Callable[[list[str]], None]:
    """A revoke of job keys broadcast to every live worker node (they drop those messages when they meet them)."""
    from celery import Celery

    from accelerate_core import broker

    app = Celery("accel-writer", set_as_current=False)
    app.conf.update(broker_url=broker.require_url(settings), accept_content=["json"], task_serializer="json")

    def revoke(keys: list[str]) -> None:
        try:
            app.control.revoke(keys)
        except Exception:  # kombu raises its own errors; the rows are written, the workers' own will be ignored
            logger.exception("could not broadcast the revoke of %d jobs", len(keys))

    return revoke

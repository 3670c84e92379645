"""Reconciliation's agreements on the broker: which jobs have a live message, resume requests and their replies.

The results store, not the broker, is the source of truth of a run: every planned job must end with one
terminal row. A job's message can vanish (the scheduler killed mid-dispatch, a message rejected by a worker,
a Redis that kept nothing on disk), so the writer's reconciler (``workers.reconciler``) compares the jobs
without a terminal row with what the broker still holds of them:

- a job message **queued** on one of its hardware queue's Redis lists (``hw.cpu`` and its priority lists);
- a job message **delivered and not acknowledged** (kombu's ``unacked`` hash: a worker holds or runs it, or
  the visibility timeout will put it back on its queue);
- a **result** on its way to the writer (the ``results`` queue, or the batch the writer is writing).

:func:`read_inflight` reads all of them in one Redis transaction, so a message moving from one to the next
meanwhile is never missed. What it cannot see is a message a worker has popped and not yet recorded as
unacknowledged (a few milliseconds): the reconciler therefore acts only on a job missing at two passes.

A run whose scheduler is still sending its jobs is never reconciled: its unsent jobs are missing from the broker
only because they are not sent yet (a 10,000-job run takes longer than two passes to send). The scheduler holds
a :class:`DispatchMark` (``acc:dispatch:<run>``, a short lifetime it renews while sending, deleted when all are
sent); :func:`dispatching` tells the reconciler the mark is live. A scheduler killed mid-dispatch stops renewing
it, so the mark expires and its run is reconciled again.

``accel run --resume RUN`` on a fleet cannot open the store (the writer holds it), so it asks the writer:
:func:`request` adds the run to ``acc:reconcile:requests``; the writer reconciles it at its next loop and
:func:`publish_reply` stores a :class:`~accelerate_core.contracts.ReconcileReport` that :func:`read_reply`
returns.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from accelerate_core import wire
from accelerate_core.celery_message import envelope, task_kwargs
from accelerate_core.constants import (
    DELIVERIES_TTL_S,
    DISPATCH_PREFIX,
    DISPATCH_REFRESH_S,
    DISPATCH_TTL_S,
    KOMBU_PRIORITY_QUEUES,
    KOMBU_UNACKED_KEY,
    RECONCILE_REPLY_PREFIX,
    RECONCILE_REPLY_TTL_S,
    RECONCILE_REQUESTS_KEY,
    RESENDS_PREFIX,
    TASK_RECORD_RESULT,
    TASK_RUN_JOB,
    WRITER_PROCESSING_KEY,
)
from accelerate_core.contracts import ReconcileReport
from accelerate_core.errors import ContractError

if TYPE_CHECKING:
    import redis

__all__ = [
    "DispatchMark",
    "InFlight",
    "count_resend",
    "describe",
    "dispatching",
    "publish_reply",
    "read_inflight",
    "read_reply",
    "request",
    "take_requests",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InFlight:
    """The job keys the broker still holds something of.

    Attributes:
        jobs: keys of job messages queued or delivered and unacknowledged.
        results: keys of results on their way to the writer (the ``results`` queue and the batch it writes).
    """

    jobs: frozenset[str] = frozenset()
    results: frozenset[str] = frozenset()

    def holds(self, key: str) -> bool:
        """True when the broker has a message of job ``key`` or its result."""
        return key in self.jobs or key in self.results


def read_inflight(client: redis.Redis, job_queues: Sequence[str], results_queue: str) -> InFlight:
    """What the broker holds now of every job, read in one transaction.

    Args:
        client: the broker.
        job_queues: the hardware queues (``hw.cpu``, ...), without their priority suffixes.
        results_queue: the writer's queue.
    """
    lists = [q + suffix for q in job_queues for suffix in KOMBU_PRIORITY_QUEUES]
    pipe = client.pipeline(transaction=True)
    for name in lists:
        pipe.lrange(name, 0, -1)
    pipe.hvals(KOMBU_UNACKED_KEY)
    pipe.lrange(results_queue, 0, -1)
    pipe.lrange(WRITER_PROCESSING_KEY, 0, -1)
    replies = pipe.execute()
    queued = [raw for reply in replies[: len(lists)] for raw in reply]
    unacked = [_unacked_payload(raw) for raw in replies[len(lists)]]
    envelopes = [e for e in map(envelope, [*queued, *unacked]) if e is not None]
    results = [e for e in map(envelope, [*replies[-2], *replies[-1]]) if e is not None]
    return InFlight(
        jobs=frozenset(str(e["headers"].get("id")) for e in envelopes if e["headers"].get("task") == TASK_RUN_JOB),
        results=frozenset(_result_keys(results)),
    )


def _unacked_payload(raw: bytes) -> bytes | dict[str, Any]:
    try:
        entry = json.loads(raw)
        return entry[0] if isinstance(entry, list) and entry and isinstance(entry[0], dict) else b""
    except ValueError:
        return b""


def _result_keys(messages: Iterable[dict[str, Any]]) -> Iterator[str]:
    for message in messages:
        if message["headers"].get("task") != TASK_RECORD_RESULT:
            continue
        try:
            kwargs = task_kwargs(message)
        except ContractError:
            continue  # the writer dead-letters it; it names no result we could count on
        rows = ([kwargs["result"]] if kwargs.get("result") else []) + list(kwargs.get("results") or [])
        yield from (str(r["key"]) for r in rows if isinstance(r, dict) and "key" in r)


def count_resend(client: redis.Redis, key: str) -> int:
    """Count one more re-send of job ``key`` and return the total so far (1 on the first)."""
    pipe = client.pipeline(transaction=True)
    pipe.incr(RESENDS_PREFIX + key)
    pipe.expire(RESENDS_PREFIX + key, DELIVERIES_TTL_S)
    n, _ = pipe.execute()
    return int(n)


def request(client: redis.Redis, run_id: str) -> None:
    """Ask the writer to reconcile ``run_id`` at its next loop (its previous reply is dropped first)."""
    pipe = client.pipeline(transaction=True)
    pipe.delete(RECONCILE_REPLY_PREFIX + run_id)
    pipe.sadd(RECONCILE_REQUESTS_KEY, run_id)
    pipe.execute()


def take_requests(client: redis.Redis) -> list[str]:
    """The runs whose reconciliation was asked for, removed from the request set (the writer)."""
    pipe = client.pipeline(transaction=True)
    pipe.smembers(RECONCILE_REQUESTS_KEY)
    pipe.delete(RECONCILE_REQUESTS_KEY)
    members, _ = pipe.execute()
    return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)


def publish_reply(client: redis.Redis, report: ReconcileReport) -> None:
    """Store the writer's reconciliation of a run for :func:`read_reply`."""
    text = json.dumps(wire.encode(report), sort_keys=True)
    client.set(RECONCILE_REPLY_PREFIX + report.run_id, text, ex=RECONCILE_REPLY_TTL_S)


def read_reply(client: redis.Redis, run_id: str) -> ReconcileReport | None:
    """The writer's last reconciliation of ``run_id`` (None before one, or when it is unreadable)."""
    raw = client.get(RECONCILE_REPLY_PREFIX + run_id)
    if raw is None:
        return None
    try:
        return wire.decode(ReconcileReport, json.loads(raw))  # type: ignore[arg-type]
    except (ValueError, ContractError) as e:
        logger.warning("the reconciliation reply of run %s in redis is unreadable: %s", run_id, e)
        return None


def describe(report: ReconcileReport) -> str:
    """One line: what a reconciliation of a run found and did."""
    if not report.known:
        return f"run {report.run_id} is not in the results store: check `accel runs list`"
    return (
        f"{report.unfinished} unfinished, {report.in_flight} in flight, {report.resent} re-sent, "
        f"{report.lost} recorded lost, {report.skipped} skipped, {report.missing} without a message yet "
        "(re-sent at the next pass if still missing)"
    )


@dataclass
class DispatchMark:
    """The mark a scheduler holds on a run while it sends its jobs: the reconciler leaves the run alone.

    :meth:`start` before the run's first message, :meth:`refresh` after each job sent (it writes at most
    every ``DISPATCH_REFRESH_S``), :meth:`done` once every job is sent (or sending failed).
    """

    client: redis.Redis
    run_id: str
    clock: Callable[[], float] = time.monotonic
    _renewed_at: float = field(default=-1e18, init=False)

    @property
    def key(self) -> str:
        return DISPATCH_PREFIX + self.run_id

    def start(self) -> None:
        """Mark the run as being dispatched by this process (``host:pid``)."""
        self.client.set(self.key, f"{socket.gethostname()}:{os.getpid()}", ex=DISPATCH_TTL_S)
        self._renewed_at = self.clock()

    def refresh(self) -> None:
        """Renew the mark when ``DISPATCH_REFRESH_S`` passed since the last renewal."""
        if self.clock() - self._renewed_at >= DISPATCH_REFRESH_S:
            self.start()

    def done(self) -> None:
        """Remove the mark: the run's jobs are sent, the reconciler may now act on the ones that vanish."""
        self.client.delete(self.key)


def dispatching(client: redis.Redis, run_id: str) -> str | None:
    """Who is still sending ``run_id``'s jobs (``host:pid``), or None when no scheduler is."""
    raw = client.get(DISPATCH_PREFIX + run_id)
    return None if raw is None else raw.decode() if isinstance(raw, bytes) else str(raw)

"""Fault scenarios of reconciliation (registered with ``harness.fault``): jobs whose worker, dispatcher or message
is gone still end with one terminal row, and the run completes with its report.

- ``worker-nodes-killed-and-stalled``: of three nodes, one killed (main process, pool and fork server) and one
  stopped (SIGSTOP) mid-job at once; the third finishes every job, the victims' too once the (shortened)
  visibility timeout hands them back; woken (SIGCONT), the stalled node's late result is a counted duplicate
  and it goes on serving;
- ``scheduler-kill-9-mid-dispatch``: the dispatching process killed after some of its jobs were sent; then
  ``accel run --resume RUN --wait`` (the writer re-sends the rest) ends when the run is complete;
- ``scheduler-stopped-mid-dispatch``: the dispatching process stopped (SIGSTOP) for several reconcile passes:
  its run's unsent jobs are not re-sent (they would run twice) while it holds its dispatch mark; after SIGCONT
  it sends the rest and the run completes;
- ``job-revoked``: a queued job revoked as Flower does (``control.revoke``): the worker that drops it
  records it ``cancelled`` (``revoked``);
- ``job-rejected``: a job message the worker rejects (an unregistered task name): the reconciler finds the
  message gone and sends the job again.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time
from dataclasses import replace
from typing import Any

from accelerate_core import liveness
from accelerate_core.config import Settings
from accelerate_core.constants import RESENDS_PREFIX, TASK_RUN_JOB
from accelerate_core.contracts import RunPlan
from tests.faults.harness import REPO, FaultOutcome, Fleet, dry_plan, fault
from tests.support import processes

COMPLETE_S = 120.0
"""How long a scenario's run may take to complete once the fault is over, in seconds (a loaded machine)."""

FAST_RECONCILE = {"ACCEL_RECONCILE_EVERY_S": "1"}
"""The writer's reconciliation pass every second (the default, 30 s, is for real fleets)."""

SHORT_LIMITS = {"ACCEL_DRY_SOFT_S": "2", "ACCEL_DRY_HARD_S": "3", "ACCEL_TEST_SOFT_S": "3", "ACCEL_TEST_HARD_S": "4"}
"""Short time limits, so the broker's visibility timeout (derived from them) is short too."""


NODES_3 = ("cpu0", "cpu1", "cpu2")
"""The nodes of the node-fault scenario: cpu0 is killed, cpu1 stalled, cpu2 finishes the run."""


def _configure(fleet: Fleet, env: dict[str, str]) -> None:
    fleet.env.update(env)
    fleet.settings = Settings.load(environ=fleet.env)


def _running(fleet: Fleet, node_prefix: str) -> str | None:
    """The key of a job that node ``node_prefix@...`` runs now, if any."""
    from scheduler.celery_client import client_app

    app = client_app(fleet.settings)
    try:
        active = app.control.inspect(timeout=1.0).active() or {}
    finally:
        app.close()
    for node, tasks in active.items():
        if node.startswith(node_prefix + "@") and tasks:
            return str(tasks[0].get("id"))
    return None


@fault("worker-nodes-killed-and-stalled")
def worker_nodes_killed_and_stalled(fleet: Fleet) -> FaultOutcome:
    """Of three worker nodes, one is killed (``kill -9`` of the whole node) and one stopped (SIGSTOP) mid-job, at
    once; the third finishes every job, both victims' included, once the visibility timeout hands them back (one
    wait serves both faults). Then SIGCONT: the stalled node's late result is a counted duplicate (the first
    kept), and it serves the next run."""
    _configure(fleet, SHORT_LIMITS | FAST_RECONCILE)
    fleet.writer()
    for index, name in enumerate(NODES_3):
        fleet.worker(name, "--devices", str(index))
    plan = dry_plan("faults-node-kill-stall", 12, sleep_s=1.5)
    fleet.dispatch(plan)
    killed = fleet.wait_for(lambda: _running(fleet, "cpu0"), 60, "cpu0 to run a job")
    stalled = fleet.wait_for(lambda: _running(fleet, "cpu1"), 60, "cpu1 to run a job")
    started = time.monotonic()
    fleet.kill("cpu0")
    fleet.stop("cpu1")
    try:
        done = fleet.wait_complete(plan.run_id, COMPLETE_S)
    finally:
        fleet.cont("cpu1")
    after = dry_plan("faults-node-kill-stall-after", 6, sleep_s=0.2)
    fleet.dispatch(after)
    served = fleet.wait_complete(after.run_id, COMPLETE_S)
    alive = fleet.procs["cpu1"].poll() is None
    late = liveness.read_writer(fleet.redis())
    outcome = fleet.outcome("worker-nodes-killed-and-stalled", plan, started, completed=done and served and alive)
    workers = _workers_of(fleet, after.run_id)
    duplicates = late.duplicates if late else None
    note = (f"killed mid-job: {killed}; stalled mid-job: {stalled}; cpu1 alive after SIGCONT: {alive}; the next "
            f"run completed: {served}, on {sorted(workers)}; duplicates counted: {duplicates}")  # fmt: skip
    return replace(outcome, completed=outcome.completed and any(w.startswith("cpu1@") for w in workers), note=note)


def _workers_of(fleet: Fleet, run_id: str) -> set[str]:
    """The worker ids of ``run_id``'s rows."""
    from accelerate_core.store import ResultsStore

    with ResultsStore.open(fleet.settings.results_db, read_only=True) as store:
        return {str(w) for (w,) in store.query("SELECT DISTINCT worker_id FROM jobs WHERE run_id = ?", [run_id])}


_SLOW_DISPATCH = textwrap.dedent(
    """
    import sys, time
    from accelerate_core.config import Settings
    from scheduler.celery_client import client_app
    from scheduler.remote import dispatch
    from tests.faults.harness import dry_plan

    class Slow:
        # The scheduler's client app, pausing before each job so the kill lands mid-dispatch.
        def __init__(self, app):
            self.app = app
        def send_task(self, *args, **kwargs):
            time.sleep(0.3)
            print("sent", kwargs.get("task_id"), flush=True)
            return self.app.send_task(*args, **kwargs)
        def producer_or_acquire(self):
            return self.app.producer_or_acquire()
        def close(self):
            self.app.close()

    settings = Settings.load()
    dispatch(settings, dry_plan(sys.argv[1], int(sys.argv[2])), app=Slow(client_app(settings)))
    """
)


@fault("scheduler-kill-9-mid-dispatch")
def scheduler_kill(fleet: Fleet) -> FaultOutcome:
    """kill -9 of the dispatching scheduler after 3 of 12 jobs; then ``accel run --resume RUN --wait``.

    The writer's periodic pass is off (an hour apart), so only the resume can send the nine jobs again.
    """
    _configure(fleet, {"ACCEL_RECONCILE_EVERY_S": "3600"})
    fleet.writer()
    fleet.worker()
    run_id, n = "faults-dispatch-kill", 12
    plan = dry_plan(run_id, n)  # the same plan (keys) the dispatching process builds
    log = fleet.logs / "dispatch.log"
    proc = processes.start([sys.executable, "-c", _SLOW_DISPATCH, run_id, str(n)], env=fleet.env, cwd=REPO, log=log)
    fleet.wait_for(lambda: log.read_text().count("sent ") >= 3, 60, "3 jobs dispatched")
    started = time.monotonic()
    os.killpg(proc.pid, signal.SIGKILL)
    processes.stop(proc, timeout_s=5)
    sent = log.read_text().count("sent ")
    resumed = fleet.accel("run", "--resume", run_id, "--wait", timeout_s=COMPLETE_S)
    done = resumed.returncode == 0 and fleet.wait_complete(run_id, 30)
    note = f"killed after {sent}/{n} sent; resume exit {resumed.returncode}: {resumed.stderr.strip()[-300:]}"
    return fleet.outcome("scheduler-kill-9-mid-dispatch", plan, started, completed=done, note=note)


STOPPED_S = 6.0
"""How long ``scheduler-stopped-mid-dispatch`` keeps the scheduler stopped: six reconcile passes, well inside the
dispatch mark's lifetime (``DISPATCH_TTL_S``, renewed every ``DISPATCH_REFRESH_S`` while sending)."""


@fault("scheduler-stopped-mid-dispatch")
def scheduler_stopped(fleet: Fleet) -> FaultOutcome:
    """SIGSTOP of the dispatching scheduler after 3 of 12 jobs for six reconcile passes, then SIGCONT.

    The run is recorded and nine of its jobs have no message, but its scheduler still holds its dispatch mark:
    the reconciler must not re-send them (they would run twice). Every re-send counts as a duplicate here.
    """
    from accelerate_core import reconcile

    _configure(fleet, FAST_RECONCILE)
    fleet.writer()
    fleet.worker()
    run_id, n = "faults-dispatch-stop", 12
    plan = dry_plan(run_id, n)
    log = fleet.logs / "dispatch-stop.log"
    proc = processes.start([sys.executable, "-c", _SLOW_DISPATCH, run_id, str(n)], env=fleet.env, cwd=REPO, log=log)
    fleet.wait_for(lambda: log.read_text().count("sent ") >= 3, 60, "3 jobs dispatched")
    started = time.monotonic()
    client = fleet.redis()
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        fleet.wait_for(lambda: fleet.status(run_id), 60, "the writer to record the run")
        time.sleep(STOPPED_S)
        marked = reconcile.dispatching(client, run_id) is not None  # the stop stayed inside the mark's life
        resent_while_stopped = _resent(client, plan)
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
    sent = fleet.wait_for(lambda: proc.poll() is not None and log.read_text().count("sent "), 120, "dispatch end")
    done = fleet.wait_complete(run_id, COMPLETE_S)
    resent = _resent(client, plan)
    client.close()
    outcome = fleet.outcome("scheduler-stopped-mid-dispatch", plan, started, completed=done and marked,
                            note=f"stopped {STOPPED_S:.0f} s after 3/{n} sent (mark live: {marked}); {sent} sent; "
                                 f"re-sent {resent_while_stopped} while stopped, {resent} in all")  # fmt: skip
    from dataclasses import replace

    return replace(outcome, duplicated=outcome.duplicated + resent)


def _resent(client: Any, plan: RunPlan) -> int:
    """How many of ``plan``'s jobs the reconciler re-sent (each re-send of a job still to be sent runs it twice)."""
    return int(client.exists(*[RESENDS_PREFIX + j.key for j in plan.jobs]))


@fault("job-revoked")
def job_revoked(fleet: Fleet) -> FaultOutcome:
    """A queued job revoked as Flower's revoke does it: recorded ``cancelled``, and the run completes."""
    from scheduler.celery_client import client_app

    _configure(fleet, FAST_RECONCILE)
    fleet.writer()
    fleet.worker()
    plan = dry_plan("faults-revoked", 6, sleep_s=0.5)
    fleet.dispatch(plan)
    victim = plan.jobs[-1].key  # the last one sent: still queued behind five half-second jobs
    started = time.monotonic()
    app = client_app(fleet.settings)
    try:
        app.control.revoke(victim)
    finally:
        app.close()
    done = fleet.wait_complete(plan.run_id, COMPLETE_S)
    outcome = fleet.outcome("job-revoked", plan, started, completed=done)
    return _with_row_note(fleet, outcome, victim)


@fault("job-rejected")
def job_rejected(fleet: Fleet) -> FaultOutcome:
    """A job message the worker rejects (its task name is unregistered there): re-sent by the reconciler."""
    _configure(fleet, FAST_RECONCILE)
    fleet.writer()
    plan = dry_plan("faults-rejected", 6)
    fleet.dispatch(plan)  # no worker yet: every message waits on hw.cpu
    victim = plan.jobs[2].key
    client = fleet.redis()
    queue = fleet.settings.queue_for("cpu")
    for i, raw in enumerate(client.lrange(queue, 0, -1)):
        message = json.loads(raw)
        if message["headers"]["id"] == victim:
            message["headers"]["task"] = TASK_RUN_JOB + "_unregistered"
            client.lset(queue, i, json.dumps(message))
    started = time.monotonic()
    fleet.worker()
    done = fleet.wait_complete(plan.run_id, COMPLETE_S)
    outcome = fleet.outcome("job-rejected", plan, started, completed=done)
    return _with_row_note(fleet, outcome, victim)


def _with_row_note(fleet: Fleet, outcome: FaultOutcome, key: str) -> FaultOutcome:
    """``outcome`` with the victim job's row (status, error class, attempt) in its note."""
    from dataclasses import replace

    from accelerate_core.store import ResultsStore

    with ResultsStore.open(fleet.settings.results_db, read_only=True) as store:
        rows = store.query("SELECT status, error_class, attempts FROM jobs WHERE job_key = ?", [key])
    return replace(outcome, note=f"{key}: {rows[0] if rows else 'no row'}")


__all__ = ["job_rejected", "job_revoked", "scheduler_kill", "scheduler_stopped", "worker_nodes_killed_and_stalled"]

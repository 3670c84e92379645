"""Fault scenarios of the results writer (registered with ``harness.fault``)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import psutil

from accelerate_core import liveness, wire
from accelerate_core.constants import STATUS_DONE, TASK_RECORD_RESULT, TASK_RECORD_RUN, WRITER_PROCESSING_KEY
from accelerate_core.contracts import JobResult, JobSpec, RunParams, RunPlan
from tests.faults.harness import FaultOutcome, Fleet, dry_plan, fault
from tests.support.fleet_key import FLEET_KEY

COMPLETE_S = 90.0
"""How long a scenario's run may take to complete once the fault is over, in seconds (a loaded machine)."""


@fault("none")
def no_fault(fleet: Fleet) -> FaultOutcome:
    """The baseline: a writer and one worker node, 20 dry jobs, nothing goes wrong."""
    fleet.writer()
    fleet.worker()
    plan = dry_plan("faults-none", 20)
    started = time.monotonic()
    fleet.dispatch(plan)
    done = fleet.wait_complete(plan.run_id, COMPLETE_S)
    return fleet.outcome("none", plan, started, completed=done)


def _claimed(fleet: Fleet) -> bool:
    """True while the writer holds a claimed, unacknowledged batch."""
    return bool(fleet.redis().llen(WRITER_PROCESSING_KEY))


KILLED_LOCK_TTL_S = 12
"""The killed writer's lock lifetime in writer-kill-9, in seconds."""


@fault("writer-kill-9")
def writer_killed_mid_batch(fleet: Fleet) -> FaultOutcome:
    """``kill -9`` of the writer mid-batch, then ``accel writer`` again at once: it waits for the lock, then
    writes the dead writer's batch first."""
    # A lock that outlives the new writer's start-up on a loaded machine, so it must wait (and say so).
    fleet.writer(env={"ACCEL_WRITER_LOCK_TTL_S": str(KILLED_LOCK_TTL_S)})
    fleet.worker("cpu0", "--concurrency", "2")
    # Results must still be flowing once the first ones show (snapshots come 1 s apart): 60 x 0.2 s on two pool
    # processes is 6 s of them. At 0.05 s a node that no longer publishes events per job finished the run before
    # a batch was caught, and the writer was killed idle, between batches.
    plan = dry_plan("faults-writer-kill", 60, sleep_s=0.2)
    fleet.dispatch(plan)
    fleet.wait_for(lambda: (s := fleet.status(plan.run_id)) is not None and s.terminal >= 5, COMPLETE_S, "results")
    started = time.monotonic()
    mid_batch = _wait_quietly(lambda: _claimed(fleet), 10.0)
    fleet.kill("writer")
    fleet.writer("writer2", wait=False)
    done = fleet.wait_complete(plan.run_id, COMPLETE_S)
    waited = "waiting for its lock to expire" in fleet.log("writer2")
    note = f"killed {'mid-batch' if mid_batch else 'between batches'}; the new writer waited for the lock: {waited}"
    return fleet.outcome("writer-kill-9", plan, started, completed=done and waited, note=note)


@fault("writer-stall")
def writer_stalled_past_its_lock(fleet: Fleet) -> FaultOutcome:
    """SIGSTOP of the writer past its lock's lifetime while a second writer starts, then SIGCONT: the stalled
    one finds it lost the lock and stops without writing; the second writes everything."""
    fleet.writer("writer")
    fleet.worker("cpu0", "--concurrency", "2")
    plan = dry_plan("faults-writer-stall", 60, sleep_s=0.05)
    fleet.dispatch(plan)
    fleet.wait_for(lambda: (s := fleet.status(plan.run_id)) is not None and s.terminal >= 5, COMPLETE_S, "results")
    started = time.monotonic()
    stalled_pid = _writer_pid(fleet)
    fleet.stop("writer")
    fleet.writer("writer2", wait=False)
    fleet.wait_for(lambda: _writer_pid(fleet) not in (None, stalled_pid), COMPLETE_S, "the second writer's lock")
    fleet.cont("writer")
    first_exit = fleet.wait_for(lambda: fleet.procs["writer"].poll() is not None, COMPLETE_S, "the stalled writer")
    done = fleet.wait_complete(plan.run_id, COMPLETE_S)
    lost_line = "lost its lock" in fleet.log("writer")
    one_writer = first_exit is not None and fleet.procs["writer"].returncode == 1 and lost_line
    note = f"stalled writer exited {fleet.procs['writer'].returncode}, saying it lost its lock: {lost_line}"
    return fleet.outcome("writer-stall", plan, started, completed=done and one_writer, note=note)


def _writer_pid(fleet: Fleet) -> int | None:
    beat = liveness.read_writer(fleet.redis())
    return None if beat is None else beat.pid


def _wait_quietly(check: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``check`` closely until true; False past ``timeout_s`` (the fault goes ahead either way)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.005)
    return False


def _envelope(task: str, kwargs: dict[str, Any]) -> bytes:
    """A Celery (protocol 2, JSON) message as kombu puts it on a Redis list."""
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    body = base64.b64encode(json.dumps([[], kwargs, embed]).encode()).decode()
    return json.dumps({
        "body": body, "content-encoding": "utf-8", "content-type": "application/json",
        "headers": {"lang": "py", "task": task, "id": str(uuid.uuid4())},
        "properties": {"body_encoding": "base64", "delivery_tag": str(uuid.uuid4()), "priority": 0},
    }).encode()  # fmt: skip


def malformed_messages(plan: RunPlan) -> dict[str, bytes]:
    """One message of each malformed kind, by kind (two name jobs of ``plan``: those become rows too)."""
    now = time.time()
    done = JobResult.for_spec(plan.jobs[0], status=STATUS_DONE, started_at=now, finished_at=now, host="nowhere")
    result = wire.encode(done)
    stranger = wire.encode(
        replace(done, key=dry_plan("faults-no-such-run", 1).jobs[0].key, run_id="faults-no-such-run")
    )
    garbled = json.loads(_envelope(TASK_RECORD_RESULT, {}))
    garbled["body"] = "%%% not base64 %%%"
    # a false failure of another planned job, unsigned (an older worker, or anyone on the broker) and forged
    false = {**result, "key": plan.jobs[-1].key, "model_type": plan.jobs[-1].model_type, "status": "failed"}
    return {
        "not-json": b"\x80\x81 this is not JSON",
        "undecodable-body": json.dumps(garbled).encode(),
        "unknown-run": _result_message(stranger),
        "unknown-key": _result_message({**result, "colour": "blue"}),
        "wrong-types": _result_message({**result, "key": plan.jobs[1].key, "attempt": "3"}),
        "bad-run-message": _envelope(TASK_RECORD_RUN, FLEET_KEY.envelope(TASK_RECORD_RUN, "plan", 42)),
        "unknown-task": _envelope("accel.no_such_task", {"x": 1}),
        "unsigned-result": _envelope(TASK_RECORD_RESULT, {"result": false}),
        "forged-result": _envelope(TASK_RECORD_RESULT, {"result": false, "sig": "ab" * 32}),
    }


def _result_message(result: dict[str, Any]) -> bytes:
    """A ``record_result`` message signed with the fleet key, as a worker sends it."""
    return _envelope(TASK_RECORD_RESULT, FLEET_KEY.envelope(TASK_RECORD_RESULT, "result", result))


@fault("malformed-results")
def malformed_results(fleet: Fleet) -> FaultOutcome:
    """Each kind of malformed message on ``results`` mid-run: each is dead-lettered, the rest is written, the run
    completes (the two that name a planned job record it as a ``worker-error`` row; an unsigned and a forged
    false failure of a planned job are dead-lettered and its real result is its row)."""
    fleet.writer()
    fleet.worker()
    plan = dry_plan("faults-malformed", 20, sleep_s=0.05)
    started = time.monotonic()
    fleet.dispatch(plan)
    bad = malformed_messages(plan)
    fleet.redis().lpush(fleet.settings.results_queue, *bad.values())
    done = fleet.wait_complete(plan.run_id, COMPLETE_S)
    listed = fleet.accel("dead-letters", "--json", "--limit", "100")
    count = json.loads(listed.stdout)["count"] if listed.returncode == 0 else -1
    note = f"{count} of {len(bad)} malformed messages dead-lettered ({', '.join(bad)})"
    return fleet.outcome("malformed-results", plan, started, completed=done and count == len(bad), note=note)


FULL_S = 4.0
"""How long the disk stays full in the full-disk scenarios, in seconds."""


def _fill_disk(pid: int) -> Callable[[], None]:
    """Make every file write of process ``pid`` past its first byte fail (``RLIMIT_FSIZE``: EFBIG, as a full
    disk would); return the function that gives the space back."""
    proc = psutil.Process(pid)
    before = proc.rlimit(psutil.RLIMIT_FSIZE)
    proc.rlimit(psutil.RLIMIT_FSIZE, (1, before[1]))
    return lambda: proc.rlimit(psutil.RLIMIT_FSIZE, before)


@fault("full-disk-fleet")
def full_disk_under_the_writer(fleet: Fleet) -> FaultOutcome:
    """The disk under the results DB fills mid-run, then space returns: the writer says so in one line, keeps
    its batch, and writes everything once it can; the run completes."""
    writer = fleet.writer()
    fleet.worker("cpu0", "--concurrency", "2")
    plan = dry_plan("faults-full-fleet", 40, sleep_s=0.1)
    fleet.dispatch(plan)
    fleet.wait_for(lambda: (s := fleet.status(plan.run_id)) is not None and s.terminal >= 3, COMPLETE_S, "results")
    started = time.monotonic()
    give_back = _fill_disk(writer.pid)
    failing = _wait_quietly(lambda: _writer_state(fleet) == "store-failing", COMPLETE_S)
    time.sleep(FULL_S)
    give_back()
    done = fleet.wait_complete(plan.run_id, COMPLETE_S)
    lines = [ln for ln in fleet.log("writer").splitlines() if "the commit failed" in ln]
    clear = failing and len(lines) == 1 and "Traceback" not in fleet.log("writer")
    note = f"heartbeat said store-failing: {failing}; {len(lines)} line(s): {lines[0][-160:] if lines else ''}"
    return fleet.outcome("full-disk-fleet", plan, started, completed=done and clear, note=note)


def _writer_state(fleet: Fleet) -> str | None:
    beat = liveness.read_writer(fleet.redis())
    return None if beat is None else beat.state


LOCAL_LINE = "retrying until it writes again"
"""What the local run's one line about a store that cannot write says."""

LOCAL_MODELS = "bert,gpt2"
"""The local full-disk run's models (tiny, quick to build)."""


@fault("full-disk-local")
def full_disk_under_a_local_run(fleet: Fleet) -> FaultOutcome:
    """The disk under the results DB fills during a local ``accel run`` (no broker), then space returns: one
    line, no traceback, the run completes with every job recorded once."""
    env = {"ACCEL_BROKER_URL": "", "ACCEL_BROKER_PASSWORD": ""}
    run = fleet.spawn("local-run", "run", "--phase", "faults-local", "--models", LOCAL_MODELS, "--hardware", "cpu",
                      "--jobs", "2", "--json", env=env)  # fmt: skip
    # The fork server starts after the run is recorded; its jobs must keep their own file limits.
    fleet.wait_for(lambda: _fork_server_up(run.pid) or run.poll() is not None, COMPLETE_S, "the local fork server")
    started = time.monotonic()
    give_back = _fill_disk(run.pid)
    _wait_quietly(lambda: LOCAL_LINE in fleet.log("local-run") or run.poll() is not None, COMPLETE_S)
    time.sleep(FULL_S)
    give_back()
    fleet.wait_for(lambda: run.poll() is not None, COMPLETE_S * 2, "the local run to end")
    output = fleet.log("local-run")
    lines = [ln for ln in output.splitlines() if LOCAL_LINE in ln]
    run_id = json.loads(output[output.index("{") :])["run_id"] if "{" in output else ""
    plan = RunPlan(run_id, "faults-local", 0.0, RunParams(), tuple(_planned(fleet, run_id)))
    clear = run.returncode == 0 and len(lines) == 1 and "Traceback" not in output and len(plan.jobs) == 2
    note = f"exit {run.returncode}; {len(lines)} line(s) about the store: {lines[0][-160:] if lines else ''}"
    return fleet.outcome("full-disk-local", plan, started, completed=clear, note=note)


def _fork_server_up(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).children())
    except psutil.NoSuchProcess:
        return False


def _planned(fleet: Fleet, run_id: str) -> list[JobSpec]:
    """The run's planned jobs as the store lists them (the local run planned them itself)."""
    from accelerate_core.store import ResultsStore

    with ResultsStore.open(fleet.settings.results_db, read_only=True) as store:
        keys = [k for (k,) in store.query("SELECT job_key FROM jobs WHERE run_id = ?", [run_id])]
    return [JobSpec(key=k, run_id=run_id, model_type=k.split(":")[1], hardware="cpu", kind="test") for k in keys]


def _push_results(fleet: Fleet, *results: JobResult) -> None:
    fleet.redis().lpush(fleet.settings.results_queue,
                        *(_result_message(wire.encode(r)) for r in results))  # fmt: skip


@fault("late-duplicates")
def late_duplicates(fleet: Fleet) -> FaultOutcome:
    """A run completes with one job recorded ``lost``; then that job's real result and a redelivered (failed)
    duplicate of a done job arrive: the real result replaces ``lost`` and the report is rewritten; the
    duplicate only raises a counter, the first terminal result stays."""
    fleet.writer()
    fleet.worker()
    plan = dry_plan("faults-late", 10)
    late_job, done_job = plan.jobs[-1], plan.jobs[0]
    now = time.time()
    fleet.redis().lpush(
        fleet.settings.results_queue,
        _envelope(TASK_RECORD_RUN, FLEET_KEY.envelope(TASK_RECORD_RUN, "plan", wire.encode(plan))),
    )
    _push_results(fleet, JobResult.for_spec(late_job, status="lost", started_at=now, finished_at=now,
                                            error_class="message-lost", worker_id="reconciler"))  # fmt: skip
    fleet.dispatch(replace(plan, jobs=plan.jobs[:-1]))
    first = fleet.wait_complete(plan.run_id, COMPLETE_S)
    report = fleet.settings.reports_dir / plan.run_id / "report.json"
    written_at = report.stat().st_mtime_ns if report.is_file() else 0
    started = time.monotonic()
    _push_results(fleet, JobResult.for_spec(late_job, status=STATUS_DONE, started_at=now, finished_at=time.time()),
                  JobResult.for_spec(done_job, status="failed", started_at=now, finished_at=time.time(),
                                     error_class="crashed"))  # fmt: skip
    counted = _wait_quietly(lambda: (b := liveness.read_writer(fleet.redis())) is not None and b.duplicates >= 1, 30)
    rewritten = _wait_quietly(lambda: report.is_file() and report.stat().st_mtime_ns > written_at, 30)
    outcome = fleet.outcome("late-duplicates", plan, started, completed=first and counted and rewritten)
    from accelerate_core.store import ResultsStore

    with ResultsStore.open(fleet.settings.results_db, read_only=True) as store:
        kept = store.query("SELECT status FROM jobs WHERE job_key = ?", [done_job.key]) == [(STATUS_DONE,)]
    note = f"duplicate counted: {counted}; first result kept: {kept}; report rewritten: {rewritten}"
    return replace(outcome, completed=outcome.completed and kept, note=note)

"""Fault scenarios of the results writer (registered with ``harness.fault``)."""

from __future__ import annotations

import time
from collections.abc import Callable

from accelerate_core import liveness
from accelerate_core.constants import WRITER_PROCESSING_KEY
from tests.faults.harness import FaultOutcome, Fleet, dry_plan, fault

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


@fault("writer-kill-9")
def writer_killed_mid_batch(fleet: Fleet) -> FaultOutcome:
    """``kill -9`` of the writer mid-batch, then ``accel writer`` again at once: it waits for the lock, then
    writes the dead writer's batch first."""
    fleet.writer()
    fleet.worker("cpu0", "--concurrency", "2")
    plan = dry_plan("faults-writer-kill", 60, sleep_s=0.05)
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

"""Fault scenarios of the broker (registered with ``harness.fault``): Redis restarted or full mid-run, and still
every planned job ends with one terminal row, no worker node exits, and the run completes with its report.

- ``redis-restart-aof``: Redis stopped and started again mid-run, with its AOF (the fleet's setting): the
  nodes and the writer reconnect, the queued and unacknowledged jobs come back from the AOF;
- ``redis-restart-no-persistence``: Redis keeping nothing on disk (every node warns so at start) restarted
  mid-run: every queued and unacknowledged job message is gone; ``accel run --resume RUN --wait`` sends the
  jobs without a terminal row again and the run completes;
- ``redis-stalled``: Redis stopped (SIGSTOP) mid-run for longer than the writer's lock lives, then SIGCONT: every
  client's socket is open but nothing answers; the nodes and the writer wait or reconnect (none exits for
  good: a writer that finds its lock gone stops and its supervisor starts it again), and the run completes;
- ``redis-full-writer-down``: the writer down and Redis filled to ``maxmemory`` (``noeviction``) while the
  nodes run jobs: every result and acknowledgement is refused; the nodes wait (none exits), and once memory
  is freed and the writer started the run completes.
"""

from __future__ import annotations

import os
import shutil
import signal
import time

from accelerate_core.constants import WRITER_LOCK_KEY
from tests.faults.harness import FaultOutcome, Fleet, dry_plan, fault
from tests.support.broker_memory import fill_broker, free_broker

COMPLETE_S = 120.0
"""How long a scenario's run may take to complete once the fault is over, in seconds (a loaded machine)."""

FULL_FOR_S = 8.0
"""How long the broker stays full, in seconds: long enough for every node to meet it more than once."""

NODES = ("cpu0", "cpu1")


def _start_nodes(fleet: Fleet) -> dict[str, int]:
    """Two worker nodes; their pids, to prove afterwards that neither exited."""
    return {name: fleet.worker(name).pid for name in NODES}


def _nodes_alive(fleet: Fleet, pids: dict[str, int]) -> None:
    """Raise naming the node that exited (or was replaced) since it started."""
    for name, pid in pids.items():
        proc = fleet.procs.get(name)
        if proc is None or proc.pid != pid or proc.poll() is not None:
            raise AssertionError(f"worker node {name} exited during the fault:\n{fleet.log(name)[-3000:]}")


def _supervise_writer(fleet: Fleet) -> str:
    """Do what the writer's supervisor does (``Restart=on-failure`` in deploy/systemd, compose's restart policy).

    A Redis that lost its data lost the writer's lock too: the writer cannot tell that from another writer
    having taken it, so it stops (exit 1) rather than risk two writers. Return what happened, for the row.
    """
    writer = fleet.procs["writer"]
    fleet.wait_for(lambda: writer.poll() is not None or fleet.redis().exists(WRITER_LOCK_KEY), 60,
                   "the writer to stop, or to hold its lock again")  # fmt: skip
    if writer.poll() is None:
        return "the writer kept its lock"
    fleet.writer()
    return f"the writer stopped (exit {writer.returncode}) when its lock vanished; restarted as its supervisor would"


def _terminal(fleet: Fleet, run_id: str) -> int:
    snap = fleet.status(run_id)
    return snap.terminal if snap is not None else 0


@fault("redis-restart-aof")
def redis_restart_aof(fleet: Fleet) -> FaultOutcome:
    """Redis stopped and started again (same port, its AOF) while two nodes run a run's jobs."""
    fleet.writer()
    pids = _start_nodes(fleet)
    plan = dry_plan("faults-redis-restart-aof", 40, sleep_s=0.3)
    fleet.dispatch(plan)
    fleet.wait_for(lambda: _terminal(fleet, plan.run_id) >= 5, 60, "the first results")
    started = time.monotonic()
    fleet.redis_server.stop()
    fleet.redis_server.start()
    done = fleet.wait_complete(plan.run_id, COMPLETE_S)
    _nodes_alive(fleet, pids)
    return fleet.outcome("redis-restart-aof", plan, started, completed=done)


@fault("redis-restart-no-persistence")
def redis_restart_no_persistence(fleet: Fleet) -> FaultOutcome:
    """Redis without AOF or RDB restarted mid-run (its data gone), then ``accel run --resume RUN --wait``."""
    fleet.redis().config_set("appendonly", "no")  # and no save rules (the harness's Redis has none)
    fleet.writer()
    pids = _start_nodes(fleet)
    if not all("keeps nothing on disk" in fleet.log(name) for name in NODES):
        raise AssertionError(f"a node did not warn that the broker keeps nothing on disk:\n{fleet.log('cpu0')}")
    plan = dry_plan("faults-redis-restart-nopersist", 40, sleep_s=0.3)
    fleet.dispatch(plan)
    fleet.wait_for(lambda: _terminal(fleet, plan.run_id) >= 5, 60, "the first results")
    started = time.monotonic()
    fleet.redis_server.stop()
    shutil.rmtree(fleet.redis_server.workdir / "appendonlydir", ignore_errors=True)  # what a diskless Redis keeps
    fleet.redis_server.start()
    note = _supervise_writer(fleet)
    resumed = fleet.accel("run", "--resume", plan.run_id, "--wait", timeout_s=COMPLETE_S)
    if resumed.returncode != 0:
        raise AssertionError(f"accel run --resume --wait exited {resumed.returncode}: {resumed.stderr[-2000:]}")
    done = fleet.wait_complete(plan.run_id, COMPLETE_S)
    _nodes_alive(fleet, pids)
    return fleet.outcome("redis-restart-no-persistence", plan, started, completed=done, note=note)


STALLED_FOR_S = 20.0
"""How long Redis stays stopped, in seconds: past the writer lock's lifetime and several worker heartbeats."""


@fault("redis-stalled")
def redis_stalled(fleet: Fleet) -> FaultOutcome:
    """Redis SIGSTOPped mid-run for ``STALLED_FOR_S``, then SIGCONT (a paused VM, a swapped-out or fork-stalled
    server): connections stay open and nothing answers."""
    fleet.writer()
    pids = _start_nodes(fleet)
    plan = dry_plan("faults-redis-stalled", 40, sleep_s=0.3)
    fleet.dispatch(plan)
    fleet.wait_for(lambda: _terminal(fleet, plan.run_id) >= 5, 60, "the first results")
    server = fleet.redis_server.proc
    assert server is not None
    started = time.monotonic()
    os.kill(server.pid, signal.SIGSTOP)
    try:
        time.sleep(STALLED_FOR_S)
    finally:
        os.kill(server.pid, signal.SIGCONT)
    note = _supervise_writer(fleet)
    done = fleet.wait_complete(plan.run_id, COMPLETE_S)
    _nodes_alive(fleet, pids)
    return fleet.outcome("redis-stalled", plan, started, completed=done, note=note)


@fault("redis-full-writer-down")
def redis_full_writer_down(fleet: Fleet) -> FaultOutcome:
    """The writer down, Redis at ``maxmemory`` while two nodes run jobs; then memory freed and the writer back."""
    pids = _start_nodes(fleet)
    plan = dry_plan("faults-redis-full", 20, sleep_s=0.5)
    fleet.dispatch(plan)  # recorded once the writer starts: its record_run waits on the results queue
    client = fleet.redis()
    started = time.monotonic()
    fill_broker(client)
    time.sleep(FULL_FOR_S)
    _nodes_alive(fleet, pids)
    refused = sum(fleet.log(name).count("the broker refused its result") for name in NODES)
    if refused == 0:
        raise AssertionError("no node met the full broker: the fault was not injected")
    free_broker(client)
    fleet.writer()
    done = fleet.wait_complete(plan.run_id, COMPLETE_S)
    _nodes_alive(fleet, pids)
    return fleet.outcome("redis-full-writer-down", plan, started, completed=done, note=f"{refused} sends refused")

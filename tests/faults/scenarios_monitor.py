"""Fault scenarios of the monitor (registered with ``harness.fault``): Flower stalled or killed mid-run changes
nothing of the run, and Flower itself comes back.

- ``flower-stalled-then-killed``: Flower stopped (SIGSTOP) while a run's jobs send their task events, so its
  event connection stops reading; the run completes without it and the broker's memory stays bounded (Redis
  drops a subscriber whose output buffer passes ``client-output-buffer-limit pubsub``); woken, Flower answers
  its health check again; then ``kill -9`` of Flower mid-run, and a second run completes as well.
"""

from __future__ import annotations

import time
import urllib.request

from tests.faults.harness import FaultOutcome, Fleet, dry_plan, fault
from tests.support.redis_server import free_port

COMPLETE_S = 120.0
"""How long a scenario's run may take to complete once the fault is over, in seconds (a loaded machine)."""

BROKER_GROWTH_MAX = 64 * 2**20
"""The most the broker's memory may grow while Flower is stalled (32 MiB is Redis's hard pub/sub buffer limit)."""


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def _used_memory(fleet: Fleet) -> int:
    return int(fleet.redis().info("memory")["used_memory"])


@fault("flower-stalled-then-killed")
def flower_stalled_then_killed(fleet: Fleet) -> FaultOutcome:
    """Flower SIGSTOPped for a whole run, then SIGCONT (it answers again), then kill -9 during a second run."""
    fleet.writer()
    fleet.worker("cpu0")
    port = free_port()
    fleet.spawn("flower", "flower", "--port", str(port), env={"ACCEL_FLOWER_PASSWORD": "flower-fault-pw"})
    fleet.wait_for(lambda: _healthy(port), 90, "flower's health check")
    before = _used_memory(fleet)
    fleet.stop("flower")
    plan = dry_plan("faults-flower-stalled", 60)
    started = time.monotonic()
    fleet.dispatch(plan)
    done = fleet.wait_complete(plan.run_id, COMPLETE_S)
    growth = _used_memory(fleet) - before
    fleet.cont("flower")
    back = fleet.wait_for(lambda: _healthy(port), 60, "flower to answer after SIGCONT")
    second = dry_plan("faults-flower-killed", 20, sleep_s=0.1)
    fleet.dispatch(second)
    fleet.kill("flower")
    done_second = fleet.wait_complete(second.run_id, COMPLETE_S)
    ok = done and done_second and bool(back) and growth < BROKER_GROWTH_MAX
    note = (f"broker memory {growth / 2**20:+.1f} MiB while flower was stalled; flower healthy after SIGCONT: "
            f"{bool(back)}; the run after its kill -9 completed: {done_second}")  # fmt: skip
    return fleet.outcome("flower-stalled-then-killed", plan, started, completed=ok, note=note)

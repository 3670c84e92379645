"""Fault scenarios of the results writer (registered with ``harness.fault``)."""

from __future__ import annotations

import time

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

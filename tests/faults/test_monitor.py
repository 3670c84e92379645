"""The monitor's faults (Flower stalled, killed) on real processes: every planned job ends once, the run completes."""

from __future__ import annotations

import pytest

from tests.faults import scenarios_monitor
from tests.faults.harness import SCENARIOS, Fleet

pytestmark = pytest.mark.redis

NAMES = [name for name, fn in SCENARIOS.items() if fn.__module__ == scenarios_monitor.__name__]


@pytest.mark.parametrize("name", NAMES)
def test_fault_loses_and_doubles_nothing_and_the_run_completes(fleet: Fleet, name: str) -> None:
    # Given a fleet of real processes, When the fault is injected during a run
    outcome = SCENARIOS[name](fleet)
    # Then every planned job has exactly one terminal row and the run completed with its report
    assert outcome.ok, outcome

"""Reconciliation's faults on real processes, and ``accel run --wait`` never waiting forever.

Each scenario of ``scenarios_recon`` asserts every planned job has exactly one terminal row and the run
completed with its report. The stall tests start ``accel run --wait`` with a part of the fleet missing and
expect one line saying what to start, and exit status 1 (the run did not complete), within seconds
(``ACCEL_STALL_S=3``).
"""

from __future__ import annotations

import pytest

from accelerate_core.constants import ERR_REVOKED, STATUS_CANCELLED
from tests.faults import scenarios_recon
from tests.faults.harness import SCENARIOS, Fleet

pytestmark = pytest.mark.redis

NAMES = [n for n, fn in SCENARIOS.items() if fn.__module__ == scenarios_recon.__name__ and n != "job-revoked"]
"""This module's scenarios (``job-revoked`` has its own test, which also checks the row it leaves)."""


@pytest.mark.parametrize("name", NAMES)
def test_fault_loses_and_doubles_nothing_and_the_run_completes(fleet: Fleet, name: str) -> None:
    # Given a fleet of real processes, When the fault is injected during a run
    outcome = SCENARIOS[name](fleet)
    # Then every planned job has exactly one terminal row and the run completed with its report
    assert outcome.ok, outcome


def test_a_revoked_job_is_recorded_cancelled_by_the_worker_that_dropped_it(fleet: Fleet) -> None:
    outcome = scenarios_recon.job_revoked(fleet)
    assert outcome.ok, outcome
    assert f"'{STATUS_CANCELLED}', '{ERR_REVOKED}'" in outcome.note, outcome.note


def _run_until_stalled(fleet: Fleet) -> str:
    """Run ``accel run --wait`` with ``ACCEL_STALL_S=3``; check it stalls (exit 1, no traceback); its last line."""
    fleet.env.update(ACCEL_STALL_S="3")
    result = fleet.accel("run", "--phase", "stall", "--models", "bert", "--hardware", "cpu", "--wait", timeout_s=180)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "accel run --resume" in last and " --wait`" in last, last
    return last


def test_wait_with_no_writer_says_to_start_one_and_exits_1(fleet: Fleet) -> None:
    # Given a worker but no writer, When a run is started with --wait
    fleet.worker()
    last = _run_until_stalled(fleet)
    # Then it ends with one line naming the missing writer and what to do
    assert "no live writer" in last and "accel writer" in last


def test_wait_with_no_worker_for_the_queue_says_which_to_start_and_status_shows_the_writer(fleet: Fleet) -> None:
    # Given a writer but no worker consuming hw.cpu, When a run is started with --wait
    fleet.writer()
    last = _run_until_stalled(fleet)
    # Then it names the queue and the command that serves it
    assert "wait on hw.cpu" in last and "accel worker --hardware cpu" in last
    # and `accel status` shows the live writer and its lag
    run_id = last.split("run ", 1)[1].split(" ", 1)[0]
    status = fleet.accel("status", run_id)
    assert status.returncode == 0, status.stderr
    assert "writer: writing on" in status.stdout and "backlog 0" in status.stdout

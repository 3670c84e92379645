"""Cancel a fleet run: the writer records its unfinished jobs ``cancelled``, revokes them and writes the report.

The scheduler cannot open the results store (the writer holds it), so it asks the writer: ``accel.cancel_run``
on the ``results`` queue, handled in queue order after the results sent before it. The writer's status
snapshot of the run then says it is done and where its report is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from accelerate_core import signing
from accelerate_core.config import Settings
from accelerate_core.constants import STATUS_CANCELLED, TASK_CANCEL_RUN
from accelerate_core.contracts import StatusSnapshot
from accelerate_core.errors import BrokerError, ConfigError, UnknownRunError

CANCEL_WAIT_S = 60.0
"""How long ``accel cancel`` waits for the writer to confirm, in seconds."""

POLL_S = 0.2
"""How often the run's status snapshot is read meanwhile, in seconds."""


@dataclass(frozen=True, slots=True)
class Cancelled:
    """What a cancel did: the run's final snapshot, and whether it had finished before (nothing to cancel)."""

    snapshot: StatusSnapshot
    already_finished: bool

    @property
    def cancelled(self) -> int:
        """Jobs recorded ``cancelled`` (by this cancel, or a revoke before it)."""
        return int(self.snapshot.by_status.get(STATUS_CANCELLED, 0))


def cancel_run(settings: Settings, run_id: str, *, wait_s: float = CANCEL_WAIT_S) -> Cancelled:
    """Ask the writer to cancel ``run_id`` and wait until it is done and reported.

    Raises:
        UnknownRunError: the broker has no status of that run (the writer never recorded it).
        ConfigError: no writer is alive (the cancel would only wait in the queue), or no fleet key to sign it.
        BrokerError: the broker is unreachable, or the writer did not finish the run within ``wait_s``.
    """
    from scheduler.celery_client import client_app
    from scheduler.nodes import writer_heartbeat
    from scheduler.remote import read_status

    before = read_status(settings, run_id)
    if before is None:
        raise UnknownRunError(f"run {run_id} is not known on this broker: see `accel runs list`")
    if before.phase_done:
        return Cancelled(before, already_finished=True)
    if writer_heartbeat(settings) is None:
        raise ConfigError(f"no writer is alive to cancel run {run_id}: start `accel writer`, then cancel again")
    key = signing.require_key(settings)  # the writer applies signed cancels only
    app = client_app(settings, sent_events=False)
    try:
        app.send_task(TASK_CANCEL_RUN, kwargs=key.envelope(TASK_CANCEL_RUN, "run_id", run_id),
                      queue=settings.results_queue)  # fmt: skip
    finally:
        app.close()
    return Cancelled(_wait_reported(settings, run_id, wait_s), already_finished=False)


def _wait_reported(settings: Settings, run_id: str, wait_s: float) -> StatusSnapshot:
    from scheduler.remote import read_status

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        snap = read_status(settings, run_id)
        if snap is not None and snap.phase_done and (snap.report_dir or snap.report_error):
            return snap
        time.sleep(POLL_S)
    raise BrokerError(
        f"the writer did not finish run {run_id} within {wait_s:.0f} s: see `accel workers` and `accel status {run_id}`"
    )

"""``accel run --dry``: the fleet's smoke test, one ``dry`` job through each live node.

A dry job runs no model (the node answers it inline), so it exercises the fleet itself end to end: the
scheduler records the run through the writer and sends one dry job to each live node's own queue (Celery's
``worker_direct``, ``<node>.dq2``), so every node answers, not whichever is free first; the node sends its
result to the writer, which records it like any job and writes the run's report. Under ``wait`` each
node's round trip is read from the writer's status snapshot (``StatusSnapshot.round_trip_s``: from the
run's planning, just before it was sent, to the node finishing its job).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from accelerate_core.config import Settings
from accelerate_core.constants import HARDWARE_KINDS, JOB_KIND_DRY, STATUS_DONE
from accelerate_core.contracts import JobSpec, NodeReport, RunParams, RunPlan, StatusSnapshot, job_key
from accelerate_core.errors import ConfigError

DRY_PHASE = "dry"
"""The phase of a dry run when ``--phase`` is not given."""

DRY_WAIT_S = 60.0
"""How long ``accel run --dry --wait`` waits for every node's answer, in seconds."""

POLL_S = 0.05
"""How often ``--wait`` reads the dry run's status snapshot, in seconds."""

NO_ANSWER = "no answer"
"""A node's status when its dry job came back neither done nor failed within the wait."""


@dataclass(frozen=True, slots=True)
class NodeTrip:
    """One node's dry job: its hardware, its round trip in seconds (None: not back) and its job's status."""

    node: str
    hardware: str
    round_trip_s: float | None = None
    status: str = NO_ANSWER


@dataclass(frozen=True, slots=True)
class DryRun:
    """A dry run sent (and, under ``waited``, followed until done or ``DRY_WAIT_S``)."""

    run_id: str
    trips: tuple[NodeTrip, ...]
    waited: bool
    wall_s: float = 0.0
    report_dir: str | None = None

    @property
    def ok(self) -> bool:
        """Every node's dry job is done (True when not waited for: nothing is known to have failed)."""
        return not self.waited or all(t.status == STATUS_DONE for t in self.trips)

    def to_json(self) -> dict[str, Any]:
        """What ``accel run --dry --json`` prints."""
        return {
            "run_id": self.run_id,
            "waited": self.waited,
            "ok": self.ok,
            "wall_s": round(self.wall_s, 3),
            "report_dir": self.report_dir,
            "nodes": [
                {"node": t.node, "hardware": t.hardware, "round_trip_s": t.round_trip_s, "status": t.status}
                for t in self.trips
            ],
        }


def node_hardware(node: NodeReport, settings: Settings) -> str | None:
    """The hardware kind ``node`` runs jobs on: its inventory's, else the kind whose queue it consumes."""
    if node.info is not None and node.info.hardware in HARDWARE_KINDS:
        return node.info.hardware
    return next((kind for kind in HARDWARE_KINDS if settings.queue_for(kind) in node.queues), None)


def dry_model(node: str) -> str:
    """The dry job's model name for ``node`` (``cpu0@host`` -> ``cpu0.host``: both parts are valid names)."""
    return node.replace("@", ".")


def dry_plan(nodes: Sequence[NodeReport], settings: Settings, phase: str, now: float) -> tuple[RunPlan, dict[str, str]]:
    """One dry job per node that runs jobs, and the node each job key goes to.

    Raises:
        ConfigError: no node runs jobs (none is live, or none consumes a hardware queue).
    """
    from scheduler.plan import new_run_id

    run_id = new_run_id(phase, now)
    targets: dict[str, tuple[str, str]] = {}
    for node in nodes:
        hardware = node_hardware(node, settings)
        if hardware is not None:
            targets[job_key(run_id, dry_model(node.node), hardware, JOB_KIND_DRY)] = (node.node, hardware)
    if not targets:
        raise ConfigError("--dry found no live worker node: start one (accel worker --hardware cpu) and try again")
    jobs = tuple(
        JobSpec(key=key, run_id=run_id, model_type=dry_model(node), hardware=hw, kind=JOB_KIND_DRY)
        for key, (node, hw) in targets.items()
    )
    kinds = tuple(sorted({hw for _, hw in targets.values()}))
    params = RunParams(models=",".join(j.model_type for j in jobs), hardware=kinds, kind=JOB_KIND_DRY,
                       n_jobs=len(jobs), slots=len(jobs))  # fmt: skip
    return RunPlan(run_id, phase, now, params, jobs), {key: node for key, (node, _) in targets.items()}


def run_dry(settings: Settings, *, phase: str = DRY_PHASE, wait: bool, wait_s: float = DRY_WAIT_S) -> DryRun:
    """Send one dry job to each live node; under ``wait``, follow the run and read each node's round trip.

    Raises:
        ConfigError: no live node runs jobs.
        BrokerError: the broker is unreachable.
    """
    from celery.utils.nodenames import worker_direct

    from scheduler.nodes import live_fleet
    from scheduler.remote import dispatch

    nodes = live_fleet(settings).nodes  # takes the whole broadcast timeout: the round trips start after it
    now = time.time()
    plan, target = dry_plan(nodes, settings, phase, now)
    started = time.monotonic()
    dispatch(settings, plan, route=lambda spec: worker_direct(target[spec.key]))
    if not wait:
        return DryRun(plan.run_id, _trips(plan, target, None), waited=False)
    snap = _follow(settings, plan.run_id, wait_s)
    wall = time.monotonic() - started
    return DryRun(plan.run_id, _trips(plan, target, snap), True, wall, snap.report_dir if snap else None)


def _follow(settings: Settings, run_id: str, wait_s: float) -> StatusSnapshot | None:
    """The run's snapshot once it is done and reported, or the last one seen when ``wait_s`` passed."""
    from scheduler.remote import read_status

    deadline = time.monotonic() + wait_s
    snap = None
    while time.monotonic() < deadline:
        snap = read_status(settings, run_id) or snap
        if snap is not None and snap.phase_done and (snap.report_dir or snap.report_error):
            break
        time.sleep(POLL_S)
    return snap


def _trips(plan: RunPlan, target: dict[str, str], snap: StatusSnapshot | None) -> tuple[NodeTrip, ...]:
    failed = {f.model_type: f.status for f in (snap.failures if snap else ())}
    trips = []
    for spec in plan.jobs:
        node = target[spec.key]
        seconds = snap.round_trip_s.get(node) if snap else None
        status = STATUS_DONE if seconds is not None else failed.get(spec.model_type, NO_ANSWER)
        trips.append(NodeTrip(node, spec.hardware, seconds, status))
    return tuple(sorted(trips, key=lambda t: t.node))


__all__ = ["DRY_WAIT_S", "DryRun", "NodeTrip", "dry_plan", "run_dry"]

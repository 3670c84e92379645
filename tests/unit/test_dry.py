"""``accel run --dry``'s plan (one dry job per live node that runs jobs) and how a node's answer is read."""

from __future__ import annotations

import pytest

from accelerate_core.config import Settings
from accelerate_core.contracts import FailureRow, NodeReport, StatusSnapshot, WorkerInfo
from accelerate_core.errors import ConfigError
from scheduler.dry import NO_ANSWER, _trips, dry_plan


def _nodes() -> list[NodeReport]:
    return [
        NodeReport(node="cuda0@gpu1", queues=("hw.cuda",), info=WorkerInfo("cuda0@gpu1", "gpu1", "cuda")),
        NodeReport(node="cpu0@box", queues=("hw.cpu",)),  # an older node: no inventory, its queue says cpu
        NodeReport(node="odd@box", queues=("custom",)),  # consumes no hardware queue: not a job node
    ]


def test_one_dry_job_per_node_that_runs_jobs_each_routed_to_that_node() -> None:
    plan, target = dry_plan(_nodes(), Settings(), "dry", now=1_700_000_000.0)
    assert plan.phase == "dry" and plan.params.kind == "dry" and plan.params.n_jobs == 2
    assert {(j.model_type, j.hardware, j.kind) for j in plan.jobs} == {
        ("cuda0.gpu1", "cuda", "dry"),
        ("cpu0.box", "cpu", "dry"),
    }
    assert sorted(target.values()) == ["cpu0@box", "cuda0@gpu1"] and set(target) == {j.key for j in plan.jobs}
    assert all(j.runnable and j.key.startswith(plan.run_id + ":") for j in plan.jobs)


def test_no_node_that_runs_jobs_is_one_line() -> None:
    with pytest.raises(ConfigError, match="no live worker node"):
        dry_plan([NodeReport(node="odd@box", queues=("custom",))], Settings(), "dry", now=0.0)


def test_each_node_is_done_failed_or_silent_by_the_writers_snapshot() -> None:
    nodes = [NodeReport(node=f"cpu{i}@box", queues=("hw.cpu",)) for i in range(3)]
    plan, target = dry_plan(nodes, Settings(), "dry", now=0.0)
    snap = StatusSnapshot(
        run_id=plan.run_id,
        phase="dry",
        status="running",
        round_trip_s={"cpu0@box": 0.012},
        failures=(FailureRow("cpu1.box", "cpu", "failed", "worker-error"),),
    )
    trips = {t.node: t for t in _trips(plan, target, snap)}
    assert (trips["cpu0@box"].status, trips["cpu0@box"].round_trip_s) == ("done", 0.012)
    assert (trips["cpu1@box"].status, trips["cpu1@box"].round_trip_s) == ("failed", None)
    assert trips["cpu2@box"].status == NO_ANSWER
    assert all(t.status == NO_ANSWER for t in _trips(plan, target, None))

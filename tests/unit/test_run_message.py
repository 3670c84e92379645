"""A run message carries each distinct template's body once, and the writer still stores every body."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from accelerate_core import celery_message, wire
from accelerate_core.constants import TASK_RECORD_RUN
from accelerate_core.contracts import RunPlan, TemplateRef
from accelerate_core.store import ResultsStore
from accelerate_core.store.synthetic import SyntheticRun
from tests.support.fleet_key import FLEET_KEY

ROOT = Path(__file__).resolve().parents[2]
BODY = (ROOT / "templates_db" / "shipped" / "default.j2").read_text()
TEMPLATES = (TemplateRef("default", "a" * 64, BODY), TemplateRef("vision", "b" * 64, BODY + "# vision\n", version=2))


def _plan(jobs: int) -> RunPlan:
    """A ``jobs``-job run whose jobs take turns between two templates the size of the shipped one."""
    plan = SyntheticRun("r1", models=[f"m{i:05d}" for i in range(jobs)]).plan()
    return replace(plan, jobs=tuple(replace(j, template=TEMPLATES[i % 2]) for i, j in enumerate(plan.jobs)))


def _message_bytes(plan: RunPlan) -> int:
    """The bytes of ``plan``'s signed run message on the results queue, as the scheduler sends it."""
    kwargs = FLEET_KEY.envelope(TASK_RECORD_RUN, "plan", wire.encode(plan))
    return len(celery_message.build(TASK_RECORD_RUN, kwargs, queue="results", kwargsrepr="{}"))


def test_a_1000_job_run_message_carries_each_template_once() -> None:
    # Given a 1,000-job plan over two ~6 KB templates
    plan = _plan(1000)
    # When it is compacted for its run message
    compact = plan.compact()
    # Then the message is a ninth of the full one (8.7 MB before, 0.9 MB after), and every body is read back
    full, small = _message_bytes(plan), _message_bytes(compact)
    assert full > 7_000_000
    assert small < full / 8 and small < 1_000_000
    assert sum(1 for j in compact.jobs if j.template and j.template.body) == 2
    assert compact.templates() == plan.templates() == TEMPLATES
    assert [replace(j, template=None) for j in compact.jobs] == [replace(j, template=None) for j in plan.jobs]


def test_an_older_writer_keeping_the_last_jobs_template_per_sha_still_gets_every_body() -> None:
    compact = _plan(7).compact()
    older = {j.template.sha: j.template for j in compact.jobs if j.template is not None}
    assert tuple(older.values()) == TEMPLATES


def test_the_store_records_the_bodies_of_a_compact_plan_and_resume_sends_them(tmp_path: Path) -> None:
    # Given the writer's store records a compact plan decoded from its message
    plan = _plan(5)
    decoded = wire.decode(RunPlan, wire.encode(plan.compact()))
    with ResultsStore.open(tmp_path / "results.duckdb") as store:
        store.record_run(decoded)
        # When the unfinished jobs are read back to be sent again (accel run --resume)
        again = store.unfinished_jobs(plan.run_id)
    # Then each carries its template's full body
    assert sorted((j.key, j.template) for j in again) == sorted((j.key, j.template) for j in plan.jobs)

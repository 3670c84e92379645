"""Planning a run: selection, keys, hardware, ordering, skipped entries (pure functions, no torch)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from accelerate_core import wire
from accelerate_core.catalog.index import IndexEntry
from accelerate_core.config import Settings
from accelerate_core.constants import JOB_KIND_DRY, STATUS_SKIPPED
from accelerate_core.contracts import JobLimits, RunPlan, SkipReason, TemplateRef, job_key
from accelerate_core.errors import ConfigError, HardwareUnavailableError, UnknownModelError
from accelerate_core.selection import parse_models
from scheduler.plan import (
    PHASE_LOOP,
    PlanOptions,
    estimate_seconds,
    new_run_id,
    plan_run,
    resolve_hardware,
)

NOW = 1_790_000_000.0


def _entry(name: str, modality: str = "text", params: int | None = 100_000, runnable: bool = True) -> IndexEntry:
    return IndexEntry(
        model_type=name,
        modality=modality,
        family="encoder",
        model_class=f"{name.title()}Model",
        config_class=f"{name.title()}Config",
        runnable=runnable,
        reason_class=None if runnable else "component",
        reason=None if runnable else f"{name} is a sub-model, tested through its parent",
        param_count=params,
    )


INDEX = [
    _entry("bert"),
    _entry("gpt2", params=5_000_000),
    _entry("vit", modality="vision", params=2_000_000),
    _entry("whisper", modality="audio", params=1_000_000),
    _entry("blt_patcher", runnable=False),
]


def _template(entry: object, hardware: str) -> TemplateRef:
    return TemplateRef(name="default", sha="abc123", body="def test_x():\n    pass\n")


def _plan(settings: Settings, **kwargs: object) -> RunPlan:
    options = PlanOptions(
        phase="2026-q4",
        models=str(kwargs.pop("models", "all")),
        modality=kwargs.pop("modality", None),  # type: ignore[arg-type]
        hardware=tuple(kwargs.pop("hardware", ("cpu",))),  # type: ignore[arg-type]
    )
    return plan_run(options, INDEX, settings, template_for=_template, now=NOW, token="beef", **kwargs)  # type: ignore[arg-type]


def test_run_id_has_phase_utc_stamp_and_hex() -> None:
    # Given a phase with unsafe characters and a fixed clock
    run_id = new_run_id("2026 q4/rc", NOW)
    # Then the id is <phase>-<yyyymmddThhmmss>-<4 hex>
    phase, stamp, token = run_id.rsplit("-", 2)
    assert phase == "2026-q4-rc"
    assert stamp == "20260921T141320"
    assert len(token) == 4 and int(token, 16) >= 0


def test_keys_are_deterministic_and_cover_every_architecture(settings: Settings) -> None:
    # When the same selection is planned twice with the same run id
    first, second = _plan(settings), _plan(settings)
    # Then the keys are the same and each is job_key(run, model, hardware, kind)
    assert [j.key for j in first.jobs] == [j.key for j in second.jobs]
    assert {j.key for j in first.jobs} == {job_key(first.run_id, e.model_type, "cpu", "test") for e in INDEX}
    assert first.run_id == "2026-q4-20260921T141320-beef"


def test_skipped_entries_are_planned_with_their_reason(settings: Settings) -> None:
    # Given a catalog entry that is not runnable
    plan = _plan(settings)
    # Then it is planned, listed as skipped, last, and not among the jobs to run
    last = plan.jobs[-1]
    assert last.model_type == "blt_patcher" and last.template is None and last.expected_s == 0.0
    assert last.skip is not None and last.skip.reason_class == "component"
    assert "blt_patcher" not in {j.model_type for j in plan.runnable()}
    results = plan.skipped_results(now=NOW)
    assert [(r.model_type, r.status, r.error_class) for r in results] == [("blt_patcher", STATUS_SKIPPED, "component")]
    assert "sub-model" in (results[0].error_message or "")
    assert plan.params.n_skipped == 1 and plan.params.n_jobs == len(INDEX)


def test_plan_survives_a_json_round_trip(settings: Settings) -> None:
    import json

    plan = _plan(settings)
    again = wire.decode(RunPlan, json.loads(json.dumps(wire.encode(plan))))
    assert again == plan
    assert again.skipped_results(now=NOW) == plan.skipped_results(now=NOW)


def test_models_list_and_file(settings: Settings, tmp_path: Path) -> None:
    # Given a models file with comments, blank lines and a comma-separated line
    models = tmp_path / "models.txt"
    models.write_text("# demo\nvit\n\nbert, whisper  # three\n", encoding="utf-8")
    # Then @file and a list select exactly those, in that order of appearance
    assert parse_models(f"@{models}") == ["vit", "bert", "whisper"]
    assert parse_models("@models.txt", base_dir=tmp_path) == ["vit", "bert", "whisper"]
    assert parse_models("all") is None
    plan = _plan(settings, models="bert,gpt2")
    assert sorted(j.model_type for j in plan.jobs) == ["bert", "gpt2"]


def test_bad_selections_fail_with_one_line(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(UnknownModelError, match="not_a_model"):
        _plan(settings, models="bert,not_a_model")
    with pytest.raises(ConfigError, match="cannot be read"):
        parse_models(f"@{tmp_path / 'missing.txt'}")
    with pytest.raises(ConfigError, match="modality 'smell'"):
        _plan(settings, modality="smell")
    with pytest.raises(ConfigError, match="empty"):
        _plan(settings, models="bert", modality="vision")


def test_modality_filter(settings: Settings) -> None:
    plan = _plan(settings, modality="vision")
    assert [j.model_type for j in plan.jobs] == ["vit"]


def test_order_without_history_follows_the_size_estimate(settings: Settings) -> None:
    # Given no past durations
    plan = _plan(settings)
    expected = [j.expected_s for j in plan.jobs[:-1]]
    # Then jobs are longest expected first, and the estimate grows with size within a modality
    assert expected == sorted(expected, reverse=True)
    assert estimate_seconds(INDEX[1]) > estimate_seconds(INDEX[0])
    assert plan.params.history_used is False


def test_order_with_history_follows_past_durations(settings: Settings) -> None:
    # Given past durations where bert (small) was the slowest on cpu
    history = {"cpu": {"bert": 30.0, "vit": 0.5, "gpt2": 1.0, "whisper": 2.0}}
    plan = _plan(settings, past_durations=history)
    # Then bert goes first and the expected times are the past durations
    assert [j.model_type for j in plan.jobs] == ["bert", "whisper", "gpt2", "vit", "blt_patcher"]
    assert plan.jobs[0].expected_s == 30.0
    assert plan.params.history_used is True


def test_jobs_carry_template_limits_and_phase_bench(settings: Settings) -> None:
    plan = _plan(settings)
    job = plan.runnable()[0]
    assert job.template == _template(None, "cpu")
    limit = settings.time_limit("test")
    assert job.limits == JobLimits(soft_s=limit.soft_s, hard_s=limit.hard_s, mem_cap_mb=settings.mem_cap_mb)
    # The phase's short loop, with the settings' shapes; the run records the same settings
    assert (job.bench.warmup, job.bench.min_iters) == (PHASE_LOOP["warmup"], PHASE_LOOP["min_iters"])
    assert job.bench.batch_sizes == settings.bench.batch_sizes and job.bench.seq_lens == settings.bench.seq_lens
    assert plan.params.bench == job.bench


def test_two_hardware_kinds_double_the_jobs_with_distinct_keys(settings: Settings) -> None:
    plan = _plan(settings, hardware=("cpu", "cuda"))
    assert len(plan.jobs) == 2 * len(INDEX)
    assert len({j.key for j in plan.jobs}) == len(plan.jobs)


def test_dry_jobs_need_no_template(settings: Settings) -> None:
    options = PlanOptions(phase="fleet", models="bert,vit", kind=JOB_KIND_DRY)
    plan = plan_run(options, INDEX, settings, now=NOW)
    assert {j.kind for j in plan.jobs} == {JOB_KIND_DRY}
    assert all(j.template is None for j in plan.jobs)
    assert plan.skipped_results(now=NOW) == ()
    assert plan.runnable() == plan.jobs


def test_test_jobs_need_the_templates(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="templates"):
        plan_run(PlanOptions(phase="p"), INDEX, settings)


def test_hardware_resolution() -> None:
    assert resolve_hardware("auto", ["cpu"]) == ("cpu",)
    assert resolve_hardware("auto", ["cuda", "cpu"]) == ("cpu", "cuda")
    assert resolve_hardware("cpu,cpu", ["cpu"]) == ("cpu",)
    assert resolve_hardware("cuda", ["cpu"], local=False) == ("cuda",)
    with pytest.raises(HardwareUnavailableError, match="cuda"):
        resolve_hardware("cpu,cuda", ["cpu"])
    with pytest.raises(ConfigError, match="tpu"):
        resolve_hardware("tpu", ["cpu"])


def test_planning_imports_no_torch_or_duckdb() -> None:
    # The scheduler process plans without the heavy libraries (checked in a clean interpreter).
    import subprocess

    code = "import scheduler.plan, sys; print(sorted(m for m in ('torch','duckdb','transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_model_no_device_can_hold_is_skipped_on_that_kind(settings: Settings) -> None:
    # Given a cpu with 64 MiB and a model of 100M parameters (~570 MiB in float32)
    from accelerate_core.backends import DeviceInfo, Inventory

    big = _entry("huge", params=100_000_000)
    inventory = Inventory.of_devices([DeviceInfo(kind="cpu", index=0, name="tiny", total_memory_mb=64)])
    options = PlanOptions(phase="p", models="huge,bert")
    plan = plan_run(options, [*INDEX, big], settings, template_for=_template, now=NOW, inventory=inventory)
    # Then it is planned, but skipped as unsupported with the device's reason; bert still runs
    (result,) = plan.skipped_results(now=NOW)
    assert result.model_type == "huge" and result.error_class == "unsupported"
    assert "MiB" in (result.error_message or "")
    assert [j.model_type for j in plan.runnable()] == ["bert"]
    huge = next(j for j in plan.jobs if j.model_type == "huge")
    assert huge.skip == SkipReason("unsupported", result.error_message) and huge.expected_s == 0.0


def test_a_device_model_target_is_in_each_jobs_key_queue_and_message() -> None:
    from accelerate_core.job_message import job_queue
    from accelerate_core.job_outcome import keyed_result
    from scheduler.plan import resolve_targets

    # Given --hardware cpu:lab (a prefix of the one cpu model known) beside cuda
    kinds, models = resolve_targets("cpu:lab,cuda", ["cpu", "cuda"], lambda kind: {"cpu": ["lab-box-7"]}[kind])
    assert (kinds, models) == (("cpu", "cuda"), {"cpu": "lab-box-7"})
    # When planned
    settings = Settings()
    options = PlanOptions(phase="p", models="bert", hardware=kinds, device_models=models)
    plan = plan_run(options, INDEX, settings, template_for=_template, now=NOW, token="beef")
    cpu, cuda = sorted(plan.jobs, key=lambda j: j.hardware)
    # Then the cpu job targets the model (its queue, its key), the cuda job any cuda node
    assert (cpu.device_model, cpu.target) == ("lab-box-7", "cpu.lab-box-7")
    assert job_queue(settings, cpu) == "hw.cpu.lab-box-7"
    assert cpu.key == job_key(plan.run_id, "bert", "cpu.lab-box-7", "test")
    assert (cuda.device_model, job_queue(settings, cuda)) == (None, "hw.cuda")
    assert wire.decode(type(cpu), wire.encode(cpu)) == cpu
    # and a row made from the key alone (a job whose message could not be read) keeps the kind as its hardware
    row = keyed_result(cpu.key, status="failed", error_class="worker-error", message="x", worker_id="w", host="h")
    assert row is not None and row.hardware == "cpu"
    # and two models of one kind, or an unknown kind, are one line
    with pytest.raises(ConfigError, match="two device models of cpu"):
        resolve_targets("cpu:a,cpu:b", ["cpu"], lambda kind: ["a", "b"])
    with pytest.raises(ConfigError, match="'gpu' is unknown"):
        resolve_targets("gpu:a", ["cpu"], lambda kind: [])

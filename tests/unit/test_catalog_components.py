"""Components: which parent tests a sub-config, proof that its modules ran, and the rows that follow."""

from __future__ import annotations

from typing import Any

from accelerate_core.catalog import components


def test_holders_map_each_sub_config_type_to_the_types_holding_it() -> None:
    configs = [
        ("sam", {"model_type": "sam", "prompt_encoder_config": {"model_type": "sam_prompt_encoder"}}),
        ("sam_hq", {"model_type": "sam_hq", "prompt_encoder_config": {"model_type": "sam_hq_prompt_encoder"}}),
        ("edgetam", {"vision_config": {"model_type": "x", "deep": {"model_type": "sam_prompt_encoder"}}}),
    ]
    held = components.holders(configs)
    assert held["sam_prompt_encoder"] == ["sam", "edgetam"] and held["x"] == ["edgetam"]


def test_parent_is_the_runnable_holder_with_the_closest_name() -> None:
    # Given a component held by a runnable type and by types that cannot run
    holding = ["sam3_video", "sam3", "other"]
    runnable = {"sam3": True, "sam3_video": False, "other": True}.__getitem__
    # Then the runnable holder sharing the longest name prefix is its parent
    assert components.find_parent("sam3_geometry_encoder", holding, runnable) == "sam3"
    # And a component held only by types that cannot run still names one (its row says why)
    assert components.find_parent("sam2_video_mask_decoder", ["sam2_video"], lambda t: False) == "sam2_video"
    assert components.find_parent("lonely", [], runnable) is None


def _row(model_type: str, status: str, **extra: Any) -> dict[str, Any]:
    return {"model_type": model_type, "status": status, "reason_class": None, "reason": None, **extra}


def test_a_component_passes_only_when_its_parent_passed_and_ran_it() -> None:
    parent = _row("sam", "pass", components_run=["sam_prompt_encoder"])
    ran = _row("sam_prompt_encoder", "skipped", reason_class="component", tested_through="sam")
    idle = _row("sam_mask_decoder", "skipped", reason_class="component", tested_through="sam")
    orphan = _row("sam2_prompt_encoder", "skipped", reason_class="component", tested_through="sam2")
    rows = {r["model_type"]: r for r in components.resolve([parent, ran, idle, orphan])}
    assert rows["sam_prompt_encoder"]["status"] == "pass" and "ran in sam's" in rows["sam_prompt_encoder"]["reason"]
    assert rows["sam_prompt_encoder"]["reason_class"] == "component"  # still listed as a component
    assert rows["sam_mask_decoder"]["status"] == "skipped" and "did not run it" in rows["sam_mask_decoder"]["reason"]
    assert "not checked in this run" in rows["sam2_prompt_encoder"]["reason"]


def test_a_component_of_a_failing_parent_stays_untested_with_the_parents_reason() -> None:
    parent = _row("sam2", "fail", reason_class="forward-error", reason="RuntimeError: shapes")
    child = _row("sam2_mask_decoder", "skipped", reason_class="component", tested_through="sam2")
    (_, row) = components.resolve([parent, child])
    assert row["status"] == "skipped" and "forward-error: RuntimeError: shapes" in row["reason"]


def test_watch_records_the_sub_config_types_whose_modules_ran() -> None:
    import torch
    from transformers import PretrainedConfig

    class Config(PretrainedConfig):
        model_type = "outer"

    class PartConfig(PretrainedConfig):
        model_type = "part"

    class Part(torch.nn.Module):  # named after its config class, holds no config: found by name
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1

    class Unused(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = PretrainedConfig()
            self.config.model_type = "unused"

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    class Outer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = Config()
            self.config.part_config = PartConfig()
            self.part, self.unused = Part(), Unused()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.part(x)

    model = Outer()
    with components.watch(model) as ran:
        model(torch.zeros(1))
    assert ran == {"part"}
    model(torch.zeros(1))  # the hooks are gone after the block
    assert ran == {"part"} and not model.part._forward_pre_hooks

"""Names that become paths and keys: one pattern, every transformers model type admitted, every attack refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accelerate_core import wire
from accelerate_core.contracts import JobResult, JobSpec, RunPlan
from accelerate_core.errors import ConfigError, ContractError
from accelerate_core.names import NAME_MAX, check_name, check_node_name, is_name

HOSTILE = [
    "",
    ".",
    "..",
    "../../etc/x",
    "a/b",
    "a\\b",
    "a..b",
    ".hidden",
    "-flag",
    "q4[/x]",
    "[red]x[/red]",
    "a|b",
    "![img](http://x)",
    "<script>alert(1)</script>",
    "a b",
    "a:b",
    "a\nb",
    "a\x00b",
    "é",
    "x" * (NAME_MAX + 1),
]


def test_every_transformers_model_type_is_a_name() -> None:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    bad = [name for name in CONFIG_MAPPING_NAMES if not is_name(name)]
    assert len(CONFIG_MAPPING_NAMES) > 500 and bad == []


@pytest.mark.parametrize("name", ["bert", "gpt_neox", "xlm-roberta", "2026-q4", "q4-20260101T000000-ab12", "v1.2"])
def test_ordinary_names_pass(name: str) -> None:
    assert check_name(name, "--phase") == name


@pytest.mark.parametrize("value", [*HOSTILE, None, 3, b"bert", ["bert"]])
def test_hostile_names_are_one_line_naming_the_source(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        check_name(value, "--phase")
    message = str(info.value)
    assert message.startswith("--phase ") and "\n" not in message and "\x00" not in message


def test_node_names_are_two_names_around_one_at() -> None:
    assert check_node_name("cpu0@host-1.example", "worker") == "cpu0@host-1.example"
    for bad in ("cpu0", "cpu0@", "@h", "a@b@c", "cpu0@../x", "[x]@h"):
        with pytest.raises(ConfigError, match="node name"):
            check_node_name(bad, "worker")


@given(st.text(max_size=200))
def test_any_text_is_a_name_or_one_config_error_and_a_name_stays_inside_its_folder(text: str) -> None:
    base = Path("/srv/reports")
    try:
        name = check_name(text, "run id")
    except ConfigError as e:
        assert "\n" not in str(e)
        return
    assert (base / name).resolve().parent == base
    assert not any(c in name for c in "/\\[]|<>`!:\x00 ")


@pytest.mark.parametrize("run_id", ["../../etc/x", "q4[/x]"])
def test_messages_refuse_bad_run_ids_phases_and_model_types(run_id: str) -> None:
    v = wire.SCHEMA_VERSION
    spec = {"v": v, "key": "k", "run_id": "r1", "model_type": "bert", "hardware": "cpu", "kind": "dry"}
    with pytest.raises(ContractError, match=r"JobSpec\.run_id"):
        wire.decode(JobSpec, {**spec, "run_id": run_id})
    with pytest.raises(ContractError, match=r"JobSpec\.model_type"):
        wire.decode(JobSpec, {**spec, "model_type": run_id})
    with pytest.raises(ContractError, match=r"JobResult\.run_id"):
        wire.decode(JobResult, {**spec, "run_id": run_id, "status": "done"})
    with pytest.raises(ContractError, match=r"RunPlan\.phase"):
        wire.decode(RunPlan, {"v": v, "run_id": "r1", "phase": run_id, "created_at": 0.0, "params": {}, "jobs": []})
    with pytest.raises(ContractError, match=r"RunPlan\.run_id"):
        wire.decode(RunPlan, {"v": v, "run_id": run_id, "phase": "q4", "created_at": 0.0, "params": {}, "jobs": []})
    # and the contracts refuse them when built in a process, too
    with pytest.raises(ConfigError, match=r"JobSpec\.run_id"):
        JobSpec(key="k", run_id=run_id, model_type="bert", hardware="cpu", kind="dry")

"""The one ``--models`` parser and the one pick from the catalog (accelerate_core.selection)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from accelerate_core.errors import ConfigError, UnknownModelError
from accelerate_core.selection import parse_models, select_entries


@dataclass(frozen=True)
class _Entry:
    model_type: str
    modality: str


INDEX = [_Entry("bert", "text"), _Entry("vit", "vision"), _Entry("gpt2", "text"), _Entry("whisper", "audio")]


@pytest.mark.parametrize("spec", ["all", "ALL", "  all  "])
def test_all_means_every_type(spec: str) -> None:
    assert parse_models(spec) is None
    assert select_entries(INDEX, parse_models(spec)) == INDEX


def test_a_list_keeps_its_order_and_drops_duplicates_and_blanks() -> None:
    assert parse_models(" vit, bert ,,vit, ") == ["vit", "bert"]


def test_a_file_with_comments_blank_lines_and_commas(tmp_path: Path) -> None:
    # Given a models file with a comment line, a blank line, a trailing comment and a comma-separated line
    models = tmp_path / "models.txt"
    models.write_text("# the demo set\nvit\n\nbert, whisper  # two more\n# vit again\nvit\n", encoding="utf-8")
    # When it is parsed by absolute path, or relative to a base folder
    # Then both give the names in order of appearance, once each
    assert parse_models(f"@{models}") == ["vit", "bert", "whisper"]
    assert parse_models("@models.txt", base_dir=tmp_path) == ["vit", "bert", "whisper"]


@pytest.mark.parametrize("spec", ["", "  ", ",,", "# only a comment"])
def test_an_empty_selection_is_one_line_config_error(spec: str) -> None:
    with pytest.raises(ConfigError, match="names no model") as info:
        parse_models(spec)
    assert "\n" not in str(info.value)


def test_a_file_of_comments_only_names_no_model(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="names no model"):
        parse_models(f"@{empty}")


@pytest.mark.parametrize("content", [None, b"\xff\xfe\x00bert"])
def test_an_unreadable_file_is_one_line_config_error(tmp_path: Path, content: bytes | None) -> None:
    # Given a models file that is missing, or is not text
    path = tmp_path / "models.txt"
    if content is not None:
        path.write_bytes(content)
    # When it is parsed; Then one line names the file and says what to check
    with pytest.raises(ConfigError) as info:
        parse_models(f"@{path}")
    message = str(info.value)
    assert message.startswith(f"models file {path} cannot be read (") and message.endswith("check the @file path")
    assert "\n" not in message


def test_a_folder_is_not_a_models_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        parse_models(f"@{tmp_path}")


def test_select_entries_in_the_order_named() -> None:
    assert [e.model_type for e in select_entries(INDEX, ["whisper", "bert"])] == ["whisper", "bert"]


def test_unknown_names_are_listed_in_one_error() -> None:
    with pytest.raises(UnknownModelError, match="nope, nada: see `accel models list`"):
        select_entries(INDEX, ["bert", "nope", "nada"])


def test_modality_filter_unknown_and_empty() -> None:
    assert [e.model_type for e in select_entries(INDEX, None, "text")] == ["bert", "gpt2"]
    with pytest.raises(ConfigError, match="modality 'smell' is unknown"):
        select_entries(INDEX, None, "smell")
    with pytest.raises(ConfigError, match="selection is empty"):
        select_entries(INDEX, ["vit"], "audio")


def test_the_flag_wins_then_the_settings_models_then_all(tmp_path: Path) -> None:
    from accelerate_core.config import Settings
    from accelerate_core.selection import models_spec

    # Given a TOML models key (an array of names) and an ACCEL_MODELS variable (one spec)
    config = tmp_path / "accel.toml"
    config.write_text('models = ["bert", "./ckpt", "org/name"]\n')
    from_file = Settings.load(config, environ={})
    from_env = Settings.load(None, environ={"ACCEL_MODELS": "@models.txt"})
    # Then --models wins, else the settings' selection named by where it came from, else all
    assert models_spec("vit", from_file) == ("vit", "--models")
    assert models_spec(None, from_file) == ("bert,./ckpt,org/name", f"{config}: models")
    assert models_spec(None, from_env) == ("@models.txt", "ACCEL_MODELS")
    assert models_spec(None, Settings()) == ("all", "--models")


@pytest.mark.parametrize("value", ["[]", '["a,b"]', '[""]', "[1]", "true"])
def test_a_bad_toml_models_value_is_one_line_naming_the_key(tmp_path: Path, value: str) -> None:
    from accelerate_core.config import Settings

    config = tmp_path / "accel.toml"
    config.write_text(f"models = {value}\n")
    with pytest.raises(ConfigError, match=r"accel\.toml: models") as info:
        Settings.load(config, environ={})
    assert "\n" not in str(info.value)

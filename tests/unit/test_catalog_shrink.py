"""The shrinker and the exceptions table: pure data, no torch."""

from __future__ import annotations

import pytest

from accelerate_core.catalog import overrides, shrink
from accelerate_core.catalog.index import REASON_CLASSES
from accelerate_core.errors import ConfigError


def test_widths_heads_and_layers_shrink_consistently() -> None:
    # Given a llama-sized config
    big = {
        "hidden_size": 4096,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "num_hidden_layers": 32,
        "intermediate_size": 11008,
        "vocab_size": 32000,
        "max_position_embeddings": 4096,
    }
    # When shrunk
    tiny = shrink.shrink_config(big)
    # Then heads divide the width, GQA stays GQA and every size is small
    assert tiny["hidden_size"] == 32 and tiny["num_attention_heads"] == 4 and tiny["num_key_value_heads"] == 2
    assert tiny["hidden_size"] % tiny["num_attention_heads"] == 0
    assert tiny["num_hidden_layers"] == 2 and tiny["intermediate_size"] == 64
    assert tiny["vocab_size"] == 1024 and tiny["max_position_embeddings"] == 512
    assert big["hidden_size"] == 4096  # the input is not changed


def test_vocab_keeps_special_token_ids_inside() -> None:
    tiny = shrink.shrink_config({"vocab_size": 152064, "image_token_id": 151655, "hidden_size": 64})
    assert tiny["vocab_size"] == 151656


def test_hybrid_models_keep_one_layer_of_each_type_and_cut_per_layer_fields() -> None:
    kinds = ["mamba"] * 7 + ["attention"] + ["mamba"] * 8
    tiny = shrink.shrink_config(
        {
            "num_hidden_layers": 16,
            "layer_types": kinds,
            "per_layer": list(range(16)),
            "per_layer_config": {"07": {"head_dim": 512}},
        }
    )
    assert sorted(set(tiny["layer_types"])) == ["attention", "mamba"]
    assert tiny["num_hidden_layers"] == len(tiny["layer_types"]) == len(tiny["per_layer"]) == 2
    assert tiny["per_layer_config"] == {"01": {"head_dim": 8}}  # per-layer overrides shrink too


def test_backbone_outputs_point_at_existing_stages() -> None:
    tiny = shrink.shrink_config(
        {
            "num_hidden_layers": 12,
            "out_indices": [3, 6, 9, 12],
            "out_features": ["stage3", "stage6", "stage9", "stage12"],
        }
    )
    assert tiny["num_hidden_layers"] == 4
    assert tiny["out_indices"] == [1, 2, 3, 4] and tiny["out_features"][-1] == "stage4"


def test_mrope_section_sums_to_half_the_rotary_dim() -> None:
    tree = {"hidden_size": 32, "num_attention_heads": 4, "rope_parameters": {"rope_theta": 1e6}}
    assert shrink.fix_derived(tree, mrope=True)
    assert sum(tree["rope_parameters"]["mrope_section"]) == 4


def test_linked_widths_follow_the_model_width() -> None:
    tiny = shrink.shrink_config(
        {
            "hidden_size": 512,
            "codebook_dim": 512,
            "image_size": 512,
            "text_config": {"model_type": "x", "hidden_size": 4608},
            "vision_config": {"model_type": "y", "text_hidden_size": 4608},
        }
    )
    assert tiny["codebook_dim"] == 32 and tiny["vision_config"]["text_hidden_size"] == 32
    assert tiny["image_size"] == 224  # images are capped, not tied to widths


def test_group_counts_repeating_a_width_shrink_with_it() -> None:
    # Given a codec whose upsampling is depthwise (groups == width) and a group norm with 32 groups
    tiny = shrink.shrink_config({"hidden_size": 512, "upsample_groups": 512, "num_groups": 32})
    # Then the depthwise groups follow the width, the group norm's count does not
    assert tiny["upsample_groups"] == tiny["hidden_size"] == 32
    assert tiny["num_groups"] == 32


def test_table_fills_a_sub_table_the_default_leaves_none() -> None:
    # Given a default config with no value for a checkpoint setting
    merged = overrides.deep_merge({"blocks": None, "sub": {"model_type": "a", "x": 1}}, {"blocks": {"k": [1, 1, 0]}})
    # Then the table's value fills it, and untouched sub-configs stay
    assert merged == {"blocks": {"k": [1, 1, 0]}, "sub": {"model_type": "a", "x": 1}}
    swapped = overrides.deep_merge({"sub": {"model_type": "a", "x": 1}}, {"sub": {"model_type": "b"}})
    assert swapped == {"sub": {"model_type": "b"}}  # another model type replaces the sub-config whole


def test_exceptions_table_is_well_formed() -> None:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    from accelerate_core.catalog.inputs import builder_names

    table = overrides.load_table()
    named = overrides.table_types()
    assert named, "the table names no type"
    assert not named - set(CONFIG_MAPPING_NAMES), "the table names types transformers does not have"
    for name, entry in [*table["types"].items(), *table["families"].items()]:
        assert entry["reason"].strip(), name
        assert entry.get("skip") in (None, *REASON_CLASSES), name
        assert entry.get("inputs") in (None, *builder_names()), name


def test_a_table_entry_without_reason_is_rejected(tmp_path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[types.bert]\nconfig = { hidden_size = 8 }\n")
    with pytest.raises(ConfigError, match="no reason"):
        overrides.load_table(path)


def test_sizes_the_config_derives_are_derived_from_the_tiny_sizes() -> None:
    from accelerate_core.catalog.describe import tiny_config_dict

    # Given Zamba2, whose config derives its attention and mamba head widths from the model width
    tiny = tiny_config_dict("zamba2")
    # Then the table's `derived` keys follow the tiny width instead of keeping the full-size values
    assert tiny["attention_hidden_size"] == 2 * tiny["hidden_size"]
    assert tiny["mamba_headdim"] * tiny["n_mamba_heads"] == tiny["mamba_expand"] * tiny["hidden_size"]


def test_table_shapes_scale_with_the_batch() -> None:
    from accelerate_core.catalog.inputs import _materialize

    codes = _materialize({"shape": ["B*4", "S"], "dtype": "long", "high": 100}, 2, 3)
    assert tuple(codes.shape) == (8, 3) and int(codes.max()) < 100
    states = _materialize({"full": [{"shape": ["B", 2, "S", 8]}, {"shape": ["B", 2, "S", 8]}]}, 2, 3)
    assert [tuple(t.shape) for t in states["full"]] == [(2, 2, 3, 8)] * 2  # a table of specs: named tensors

"""The light index: every CONFIG_MAPPING type, classified, built in a subprocess and cached."""

from __future__ import annotations

import subprocess
import sys

from accelerate_core.catalog.index import FAMILIES, MODALITIES, REASON_CLASSES, find, load_index
from accelerate_core.errors import UnknownModelError


def test_index_lists_every_model_type_with_a_classification() -> None:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    entries = load_index()
    assert {e.model_type for e in entries} == set(CONFIG_MAPPING_NAMES)
    for e in entries:
        assert e.modality in MODALITIES and e.family in FAMILIES, e
        if not e.runnable:
            assert e.reason_class in REASON_CLASSES and e.reason, e
        else:
            assert e.model_class, e


def test_index_entries_round_trip_and_lookup() -> None:
    entries = load_index()
    bert = find(entries, "bert")
    assert type(bert).from_dict(bert.to_dict()) == bert
    try:
        find(entries, "bertt")
    except UnknownModelError as e:
        assert "\n" not in str(e)
    else:
        raise AssertionError("an unknown type was found")


def test_loading_the_index_does_not_import_torch() -> None:
    load_index()  # make sure the cache exists
    code = (
        "import sys; from accelerate_core.catalog.index import load_index; "
        "n = len(load_index()); "
        "print(n, 'torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) > 800 and out[1:] == ["False", "False"]


def test_template_context_is_json_and_has_the_config() -> None:
    import json

    from accelerate_core.catalog import template_context

    ctx = template_context("gpt2", hardware="cpu")
    json.dumps(ctx)
    assert ctx["generative"] and ctx["main_input_name"] == "input_ids" and ctx["config"]["n_embd"] == 32

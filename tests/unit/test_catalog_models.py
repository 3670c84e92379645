"""A sample of architectures across modalities builds, runs and passes check_outputs (in-process)."""

from __future__ import annotations

import dataclasses

import pytest

from accelerate_core import catalog
from accelerate_core.errors import UnknownModelError

SAMPLE = {
    "bert": ("text", "encoder"),
    "llama": ("text", "decoder"),
    "t5": ("text", "encoder-decoder"),
    "jamba": ("text", "decoder"),
    "vit": ("vision", "encoder"),
    "resnet": ("vision", "encoder"),
    "detr": ("vision", "encoder-decoder"),
    "whisper": ("audio", "encoder-decoder"),
    "wav2vec2": ("audio", "encoder"),
    "videomae": ("video", "encoder"),
    "clip": ("multimodal", "encoder"),
    "llava": ("multimodal", "decoder"),
    "qwen2_vl": ("multimodal", "decoder"),
    "patchtst": ("time-series", "encoder"),
    "time_series_transformer": ("time-series", "encoder-decoder"),
}


@pytest.mark.parametrize("model_type", sorted(SAMPLE))
def test_sample_builds_runs_and_passes_check_outputs(model_type: str) -> None:
    import torch

    # Given the catalog's tiny model and inputs
    built = catalog.build(model_type)
    assert (built.entry.modality, built.entry.family) == SAMPLE[model_type]
    # When it runs one forward pass
    with torch.no_grad():
        outputs = built.model(**built.inputs)
    # Then a batched, finite output exists
    summary = catalog.check_outputs(outputs, 1)
    assert summary["shape"][0] == 1


def test_inputs_are_deterministic() -> None:
    model = catalog.instantiate("bert")
    a = catalog.make_inputs("bert", model, batch_size=2, seq_len=8)
    b = catalog.make_inputs("bert", model, batch_size=2, seq_len=8)
    assert a["input_ids"].shape == (2, 8) and bool((a["input_ids"] == b["input_ids"]).all())


def test_generation_of_a_decoder_and_not_of_an_encoder() -> None:
    import torch

    llama = catalog.instantiate("llama")
    assert catalog.generate_supported(llama)
    ids = catalog.make_inputs("llama", llama)["input_ids"]
    with torch.no_grad():
        out = llama.generate(ids, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape == (1, ids.shape[1] + 3)
    assert not catalog.generate_supported(catalog.instantiate("bert"))


def test_unknown_type_is_one_line_error() -> None:
    with pytest.raises(UnknownModelError) as info:
        catalog.entry("no_such_model")
    assert "\n" not in str(info.value) and "accel models list" in str(info.value)


def test_check_outputs_rejects_missing_batch_and_non_finite() -> None:
    import torch

    with pytest.raises(AssertionError, match="batch dimension"):
        catalog.check_outputs({"logits": torch.zeros(3, 4)}, 1)
    with pytest.raises(AssertionError, match="non-finite"):
        catalog.check_outputs({"logits": torch.tensor([[float("nan")]])}, 1)
    assert (
        catalog.check_outputs({"logits": torch.tensor([[float("-inf")]])}, 1, allow_nonfinite=True)["main"] == "logits"
    )


def test_audio_language_model_gets_audio_and_its_tower_runs() -> None:
    import torch

    from accelerate_core.catalog.components import watch

    # Given an audio-language model the table asks audio inputs for
    built = catalog.build("qwen3_asr")
    token = built.model.config.audio_token_id
    # Then its inputs carry audio features and one placeholder per audio-tower output frame
    assert "input_features" in built.inputs and int((built.inputs["input_ids"] == token).sum()) > 0
    # And its forward pass runs the audio tower (the component qwen3_asr_encoder is checked through it)
    with torch.no_grad(), watch(built.model) as ran:
        built.model(**built.inputs)
    assert "qwen3_asr_encoder" in ran


def test_video_tracker_runs_on_a_prompted_session() -> None:
    import torch

    # Given a SAM video tracker, whose forward reads an inference session instead of tensors
    built = catalog.build("sam3_tracker_video")
    session = built.inputs["inference_session"]
    # Then the session holds the frames and one prompted object, and tracking frame 0 yields its mask
    assert session.num_frames == 2 and session.get_obj_num() == 1
    with torch.no_grad():
        outputs = built.model(**built.inputs)
    assert catalog.check_outputs(outputs, 1)["shape"][0] == 1


def test_a_named_class_is_built_without_the_live_description(monkeypatch: pytest.MonkeyPatch) -> None:
    from accelerate_core.catalog import api
    from accelerate_core.errors import ModelBuildError

    # Given a job that names its class (a generated test does), and a live description that would fail
    bert = catalog.entry("bert")
    name = bert.model_class
    monkeypatch.setattr(api, "describe", lambda model_type: pytest.fail(f"described {model_type}"))
    # When the named class is built, the description is never asked for
    assert type(catalog.instantiate("bert", model_class=name)).__name__ == name
    # Then without a class the description decides, and a type that has none still says why
    classless = dataclasses.replace(bert, model_class=None, reason="a sub-configuration")
    monkeypatch.setattr(api, "describe", lambda model_type: classless)
    with pytest.raises(ModelBuildError, match=r"no model class of its own \(a sub-configuration\)"):
        catalog.instantiate("bert")

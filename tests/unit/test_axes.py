"""The axes of a run beside model and hardware (dtype, size, attention) and model sources in a plan."""

from __future__ import annotations

import pytest

from accelerate_core.catalog.index import IndexEntry
from accelerate_core.config import Settings
from accelerate_core.constants import ERR_NOT_IN_CACHE, ERR_UNSUPPORTED
from accelerate_core.contracts import TemplateRef
from accelerate_core.errors import ConfigError, ModelBuildError
from scheduler.plan import PlanOptions, plan_run

INDEX = [
    IndexEntry(model_type="bert", modality="text", family="encoder", model_class="BertModel",
               config_class="BertConfig", runnable=True, param_count=100_000),
    IndexEntry(model_type="vit", modality="vision", family="encoder", model_class="ViTModel",
               config_class="ViTConfig", runnable=True, param_count=100_000),
]  # fmt: skip


def _template(entry: object, hardware: str) -> TemplateRef:
    return TemplateRef(name="default", sha="abc123", body="def test_x():\n    pass\n")


def _plan(**options: object):  # type: ignore[no-untyped-def]
    return plan_run(PlanOptions(phase="p", **options), INDEX, Settings(), template_for=_template, now=1.0,  # type: ignore[arg-type]
                    token="beef")  # fmt: skip


def test_each_dtype_and_attention_is_its_own_row_and_key() -> None:
    plan = _plan(models="bert", dtypes=("float32", "bfloat16"), attns=("sdpa", "eager"))

    jobs = {j.model_type: j for j in plan.jobs}
    assert set(jobs) == {"bert.sdpa", "bert.eager", "bert.bfloat16.sdpa", "bert.bfloat16.eager"}
    assert len({j.key for j in plan.jobs}) == 4
    job = jobs["bert.bfloat16.eager"]
    assert job.source is not None and (job.dtype, job.attn, job.architecture, job.source.kind) == (
        "bfloat16", "eager", "bert", "type",
    )  # fmt: skip
    assert plan.params.attns == ("sdpa", "eager") and plan.params.dtypes == ("float32", "bfloat16")
    assert plan.params.modalities["bert.bfloat16.eager"] == "text"


def test_full_size_names_its_rows_and_defaults_keep_the_type_name() -> None:
    assert [j.model_type for j in _plan(models="bert", size="full").jobs] == ["bert.full"]
    assert [j.model_type for j in _plan(models="bert").jobs] == ["bert"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"attns": ("flash",)}, "attention 'flash' is unknown"),
        ({"dtypes": ("int8",)}, "dtype 'int8' is unknown"),
        ({"size": "huge"}, "model size 'huge' is unknown"),
    ],
)
def test_unknown_axes_are_one_line_config_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PlanOptions(phase="p", **options)  # type: ignore[arg-type]


def test_a_hub_id_not_in_the_cache_is_a_skipped_row_naming_its_fetch(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    (job,) = _plan(models="acme/nothing").jobs

    assert job.model_type == "acme--nothing" and job.skip is not None
    assert job.skip.reason_class == ERR_NOT_IN_CACHE and "`hf download acme/nothing`" in (job.skip.reason or "")


def test_a_model_switches_attention_and_one_it_cannot_run_is_refused_in_one_line() -> None:
    from accelerate_core.dispatch import build_model

    assert build_model("bert", attn="eager").config._attn_implementation == "eager"
    with pytest.raises(ModelBuildError, match="attention 'flash_attention_2' is not supported by BertModel"):
        build_model("bert", attn="flash_attention_2")


def test_bench_resolves_names_without_the_catalog(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from accelerate_core.errors import UnknownModelError
    from accelerate_core.sources import resolve_source

    assert resolve_source("bert", None).kind == "type"  # the child checks the type as it builds it
    with pytest.raises(UnknownModelError, match="does not exist"):
        resolve_source(str(tmp_path / "nothing"), None)


def test_each_batch_and_seq_is_its_own_row_key_and_shape() -> None:
    # Given the settings' one shape, batch 1 x seq 16; When a run asks for batches 1,2 and seqs 8,16
    plan = _plan(models="bert", batches=(1, 2), seqs=(8, 16))

    # Then each combination is a job measuring that shape only, and the settings' own shape adds no name
    shapes = {j.model_type: (j.bench.batch_sizes, j.bench.seq_lens) for j in plan.jobs}
    assert shapes == {"bert.s8": ((1,), (8,)), "bert": ((1,), (16,)), "bert.b2.s8": ((2,), (8,)),
                      "bert.b2": ((2,), (16,))}  # fmt: skip
    assert len({j.key for j in plan.jobs}) == 4
    assert (plan.params.bench.batch_sizes, plan.params.bench.seq_lens) == ((1, 2), (8, 16))


def test_a_model_without_a_sequence_axis_is_measured_at_the_first_seq_and_skips_the_others() -> None:
    from accelerate_core.bench.shapes import SEQ_NOT_APPLICABLE

    # Given a vision model whose input has no sequence axis, beside a text model; When a run asks for 3 seqs
    plan = plan_run(PlanOptions(phase="p", models="bert,vit", batches=(1, 2), seqs=(8, 16, 32)), INDEX, Settings(),
                    template_for=_template, now=1.0, token="beef", no_sequence={"vit"})  # fmt: skip
    jobs = {j.model_type: j for j in plan.jobs}

    # Then the text model measures every shape, the vision model only the first seq of each batch size
    measured = {name for name, j in jobs.items() if j.skip is None}
    assert measured == {"bert.s8", "bert", "bert.s32", "bert.b2.s8", "bert.b2", "bert.b2.s32", "vit.s8", "vit.b2.s8"}
    # And its other seqs are skipped rows naming the row that measures its one input
    for name, measured_as in {"vit": "vit.s8", "vit.s32": "vit.s8", "vit.b2": "vit.b2.s8",
                              "vit.b2.s32": "vit.b2.s8"}.items():  # fmt: skip
        skip = jobs[name].skip
        assert skip is not None and skip.reason_class == ERR_UNSUPPORTED, name
        assert skip.reason == (f"{SEQ_NOT_APPLICABLE} vit: its vision input has no sequence axis, so every length "
                               f"is the same input, measured once as {measured_as}")  # fmt: skip
        assert jobs[name].expected_s == 0.0
    assert plan.params.n_skipped == 4


def test_the_catalog_names_the_types_whose_input_has_no_sequence_axis() -> None:
    from accelerate_core.bench.shapes import has_sequence_axis
    from accelerate_core.catalog.index import load_index
    from scheduler.planning_inputs import no_sequence_types

    assert not has_sequence_axis("vision", "pixel_values") and not has_sequence_axis("audio", ["input_values"])
    assert has_sequence_axis("multimodal", "pixel_values") and has_sequence_axis("vision", "input_ids")
    assert has_sequence_axis("audio", None)  # not known: a length may matter
    found = no_sequence_types(load_index())
    assert {"vit", "wav2vec2", "whisper", "patchtst", "videomae"} <= found
    assert not found & {"bert", "gpt2", "clip", "layoutlmv2", "musicgen"}


def test_a_bad_shape_is_one_line() -> None:
    with pytest.raises(ConfigError, match="positive integers"):
        PlanOptions(phase="p", batches=(0,))


def test_a_call_past_the_model_positions_is_an_unsupported_shape_and_other_errors_pass() -> None:
    from accelerate_core.bench import SHAPE_UNSUPPORTED, shape_guard
    from accelerate_core.dispatch import build_model

    model = build_model("bert")
    refused = f"{SHAPE_UNSUPPORTED} BertModel: batch 1 x seq 600 exceeds its 512"
    with pytest.raises(ModelBuildError, match=refused), shape_guard(model, 1, 600):
        raise IndexError("index out of range in self")
    with pytest.raises(IndexError), shape_guard(model, 1, 16):
        raise IndexError("a shape the model declares it takes: not a skip")


def test_each_compile_backend_is_its_own_row_and_off_is_the_eager_model() -> None:
    jobs = {j.model_type: j for j in _plan(models="bert", compiles=("off", "inductor")).jobs}

    assert {name: j.compile_backend for name, j in jobs.items()} == {"bert": None, "bert.compile-inductor": "inductor"}
    with pytest.raises(ConfigError, match="compile backend 'tvm' is unknown"):
        PlanOptions(phase="p", compiles=("tvm",))

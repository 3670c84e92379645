"""Device-model slugs and the queues of one device model: always valid names, matched from a short prefix."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accelerate_core.backends.device_model import (
    DEVICE_MODEL_ENV,
    SLUG_PATTERN,
    UNKNOWN_MODEL,
    device_model,
    match_model,
    model_queue,
    models_in_queues,
    recorded_model,
    slug,
)
from accelerate_core.errors import ConfigError
from accelerate_core.names import is_name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", "h100-80gb-hbm3"),
        ("NVIDIA A100-SXM4-40GB", "a100-sxm4-40gb"),
        ("Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", "xeon-gold-6338-2-00ghz"),
        ("AMD Instinct MI300X", "instinct-mi300x"),
        ("Apple M2 Max", "m2-max"),
        ("NVIDIA", UNKNOWN_MODEL),
        ("", UNKNOWN_MODEL),
    ],
)
def test_slug_drops_vendor_words_and_punctuation(name: str, expected: str) -> None:
    assert slug(name) == expected


@given(st.text(max_size=200))
def test_slug_is_always_a_valid_queue_suffix(name: str) -> None:
    # Given any device name at all, When slugged, Then hw.<kind>.<slug> is a valid name and the slug is stable
    s = slug(name)
    assert SLUG_PATTERN.match(s) and len(s) <= 48
    assert is_name(model_queue("hw.cuda", s)) and ":" not in s
    assert slug(s) == s


def test_override_wins_over_detection_and_is_slugged() -> None:
    env = {DEVICE_MODEL_ENV: "  Lab Box #7 "}
    assert device_model("cuda", 3, env) == "lab-box-7"  # no cuda here: the override is not even probed for
    assert recorded_model("NVIDIA H100 80GB HBM3", env) == "lab-box-7"
    assert recorded_model("NVIDIA H100 80GB HBM3", {}) == "h100-80gb-hbm3"


def test_models_in_queues_reads_only_this_kinds_model_queues() -> None:
    queues = ["hw.cuda", "hw.cuda.h100-80gb-hbm3", "hw.cpu.xeon", "hw.cuda.a100-sxm4-40gb", "hw.cuda.Bad_Name"]
    assert models_in_queues("hw.cuda", queues) == ["a100-sxm4-40gb", "h100-80gb-hbm3"]


def test_match_model_exact_then_prefix_then_substring() -> None:
    known = ["h100-80gb-hbm3", "h100-nvl", "a100-sxm4-40gb"]
    assert match_model("cuda", "a100", known) == "a100-sxm4-40gb"
    assert match_model("cuda", "NVL", known) == "h100-nvl"
    assert match_model("cuda", "h100-nvl", known) == "h100-nvl"
    with pytest.raises(ConfigError, match=r"several device models \(h100-80gb-hbm3, h100-nvl\)"):
        match_model("cuda", "h100", known)
    with pytest.raises(ConfigError, match=r"known cuda:a100-sxm4-40gb, cuda:h100-80gb-hbm3, cuda:h100-nvl$"):
        match_model("cuda", "mi300", known)
    with pytest.raises(ConfigError, match="no live node of this kind"):
        match_model("rocm", "mi300", [])

"""Measurement: the stopping rules of the latency loop, the statistics, the measurements file, one real model."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from accelerate_core.bench import (
    STOP_MAX_DURATION,
    STOP_RULES_MET,
    benchmark_model,
    environment,
    measure,
    percentile,
    read_measurements,
    sample_stats,
    write_measurements,
)
from accelerate_core.config import BenchConfig
from accelerate_core.contracts import Measurement
from accelerate_core.errors import ConfigError


class FakeClock:
    """A clock that advances only when the measured call runs."""

    def __init__(self, step_s: float) -> None:
        self.now = 100.0
        self.step_s = step_s
        self.calls = 0

    def __call__(self) -> float:
        return self.now

    def work(self) -> None:
        self.calls += 1
        self.now += self.step_s


def _measure(clock: FakeClock, **kw):
    args = {"warmup": 0, "min_iters": 5, "min_duration_s": 0.2, "max_duration_s": 5.0, **kw}
    return measure(clock.work, clock=clock, **args)


# ---------------------------------------------------------------- stopping rules


def test_fast_calls_run_until_the_minimum_duration():
    clock = FakeClock(step_s=0.01)

    samples = _measure(clock)

    assert len(samples.values) == 20  # 5 calls would be 0.05 s: the 0.2 s rule decides
    assert samples.stopped_by == STOP_RULES_MET
    assert samples.values == pytest.approx([0.01] * 20)


def test_slow_calls_run_until_the_minimum_count():
    clock = FakeClock(step_s=0.1)

    samples = _measure(clock)

    assert len(samples.values) == 5  # 0.2 s is reached after 2 calls: the count rule decides
    assert samples.stopped_by == STOP_RULES_MET


def test_the_maximum_duration_cuts_the_loop_short():
    clock = FakeClock(step_s=1.0)

    samples = _measure(clock, min_iters=100, max_duration_s=3.0)

    assert len(samples.values) == 3
    assert samples.stopped_by == STOP_MAX_DURATION


def test_warmup_calls_run_first_and_are_not_timed():
    clock = FakeClock(step_s=0.1)

    samples = _measure(clock, warmup=3)

    assert clock.calls == 3 + len(samples.values)
    assert samples.warmup == 3 and len(samples.values) == 5


def test_sync_runs_after_warmup_calls_and_around_each_timed_call():
    clock = FakeClock(step_s=0.1)
    events: list[str] = []

    def work() -> None:
        events.append("call")
        clock.work()

    measure(work, sync=lambda: events.append("sync"), clock=clock, warmup=1, min_iters=2, min_duration_s=0,
            max_duration_s=1)  # fmt: skip

    assert events == ["call", "sync", "sync", "call", "sync", "sync", "call", "sync"]


def test_invalid_rules_are_refused():
    with pytest.raises(ValueError, match="min_iters"):
        measure(lambda: None, warmup=0, min_iters=0, min_duration_s=0, max_duration_s=1)


# ---------------------------------------------------------------- statistics


def test_sample_stats_known_samples():
    stats = sample_stats([float(x) for x in range(1, 11)])

    assert stats["n"] == 10
    assert stats["p50"] == pytest.approx(5.5)
    assert stats["p90"] == pytest.approx(9.1)
    assert stats["p99"] == pytest.approx(9.91)
    assert stats["mean"] == pytest.approx(5.5)
    assert stats["stdev"] == pytest.approx(math.sqrt(sum((x - 5.5) ** 2 for x in range(1, 11)) / 9))


def test_percentiles_match_numpy_linear_on_random_samples():
    rng = random.Random(7)
    for n in (1, 2, 3, 17, 100, 1001):
        values = [rng.lognormvariate(0, 1) for _ in range(n)]
        stats = sample_stats(values)
        for q in (50, 90, 99):
            assert stats[f"p{q}"] == pytest.approx(float(np.percentile(values, q, method="linear")))


def test_one_sample_has_zero_stdev_and_no_sample_is_an_error():
    assert sample_stats([0.25]) == {"n": 1, "p50": 0.25, "p90": 0.25, "p99": 0.25, "mean": 0.25, "stdev": 0.0}
    with pytest.raises(ValueError):
        sample_stats([])
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_a_summary_fits_a_measurement():
    m = Measurement(metric="latency", unit="s", samples=[1.0, 2.0], **sample_stats([1.0, 2.0]))
    assert m.p50 == 1.5 and m.n == 2


# ---------------------------------------------------------------- measurements file


def test_measurements_file_round_trips_and_appends(tmp_path: Path):
    path = tmp_path / "m.json"
    first = Measurement(
        metric="latency", unit="s", batch_size=2, seq_len=8, samples=(0.1, 0.3), **sample_stats([0.1, 0.3])
    )
    second = Measurement(metric="peak_memory", unit="MiB", samples=(300.0,), n=1, p50=300.0)

    write_measurements(path, [first], {"torch": "x"})
    write_measurements(path, [second], {"torch": "y"}, append=True)
    back = read_measurements(path)

    assert back.measurements == (first, second)
    assert back.environment == {"torch": "y"}
    assert json.loads(path.read_text())["format"] == "accel-measurements"
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temporary file left behind


def test_malformed_measurements_files_raise_one_clear_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_measurements(tmp_path / "absent.json")
    (tmp_path / "half.json").write_text('{"format": "accel-meas')
    with pytest.raises(ConfigError, match="unreadable"):
        read_measurements(tmp_path / "half.json")
    (tmp_path / "other.json").write_text('{"format": "something-else", "version": 1}')
    with pytest.raises(ConfigError, match="not an accel-measurements"):
        read_measurements(tmp_path / "other.json")
    bogus = {
        "v": "1.0",
        "format": "accel-measurements",
        "environment": {},
        "measurements": [{"metric": "x", "bogus": 1}],
    }
    (tmp_path / "bad.json").write_text(json.dumps(bogus))
    with pytest.raises(ConfigError, match="unknown keys"):
        read_measurements(tmp_path / "bad.json")


# ---------------------------------------------------------------- a real model


def test_benchmark_model_measures_every_shape_with_consistent_throughput():
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
    bench = BenchConfig(batch_sizes=(1, 4), seq_lens=(3,), warmup=1, min_iters=3, min_duration_s=0.0)

    def make_inputs(batch: int, seq: int) -> dict:
        return {"input": torch.randn(batch, seq, 8)}

    found = benchmark_model(model, make_inputs, hardware="cpu", bench=bench, generative=False,
                            load_s=0.5, first_call_s=0.01)  # fmt: skip

    by_key = {(m.metric, m.batch_size): m for m in found}
    assert [m.metric for m in found[:2]] == ["load_time", "first_call"] and found[0].p50 == 0.5
    for batch in (1, 4):
        latency, throughput = by_key["latency", batch], by_key["throughput", batch]
        assert latency.unit == "s" and latency.n >= 3 and len(latency.samples) == latency.n
        assert throughput.samples == pytest.approx([batch / v for v in latency.samples])
        assert by_key["peak_memory", batch].p50 > 10  # MiB of RSS: this process holds torch
    assert ("tokens_per_s", 1) not in by_key


def test_a_generative_model_gets_tokens_per_second_for_a_fixed_number_of_new_tokens():
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=64, eos_token_id=0, pad_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    bench = BenchConfig(batch_sizes=(2,), seq_lens=(4,), warmup=0, min_iters=2, min_duration_s=0.0, new_tokens=3)
    calls: list[int] = []
    generate = model.generate

    def counting_generate(**kwargs):
        result = generate(**kwargs)
        calls.append(result.shape[1] - kwargs["input_ids"].shape[1])
        return result

    model.generate = counting_generate

    def make_inputs(batch: int, seq: int) -> dict:
        return {"input_ids": torch.full((batch, seq), 5), "attention_mask": torch.ones(batch, seq, dtype=torch.long)}

    found = benchmark_model(model, make_inputs, hardware="cpu", bench=bench, generative=True)

    tokens = next(m for m in found if m.metric == "tokens_per_s")
    assert tokens.unit == "tokens/s" and tokens.n >= 2
    assert set(calls) == {3}  # every generate call produced exactly new_tokens tokens (eos cannot stop it early)


def test_an_encoder_decoder_without_start_token_still_generates_exactly_new_tokens():
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(d_model=16, d_ff=32, d_kv=8, num_layers=1, num_heads=2, vocab_size=64)
    model = T5ForConditionalGeneration(config).eval()
    model.generation_config.decoder_start_token_id = None  # as in many tiny random configs
    inputs = {"input_ids": torch.full((1, 4), 5), "decoder_input_ids": torch.zeros((1, 2), dtype=torch.long)}
    bench = BenchConfig(warmup=0, min_iters=1, min_duration_s=0.0, new_tokens=2)
    notes: list[str] = []

    found = benchmark_model(model, lambda b, s: inputs, hardware="cpu", bench=bench, generative=True, notes=notes)

    assert notes == []
    assert any(m.metric == "tokens_per_s" for m in found)


def test_a_broken_generate_leaves_latency_and_a_note():
    import torch

    class NoGenerate(torch.nn.Linear):
        def generate(self, **kwargs):
            raise ValueError("cannot generate")

    bench = BenchConfig(warmup=0, min_iters=1, min_duration_s=0.0)
    notes: list[str] = []

    found = benchmark_model(NoGenerate(4, 4), lambda b, s: {"input": torch.randn(b, 4)}, hardware="cpu",
                            bench=bench, generative=True, notes=notes)  # fmt: skip

    assert {m.metric for m in found} == {"param_count", "latency", "throughput", "peak_memory"}
    assert next(m.p50 for m in found if m.metric == "param_count") == 4 * 4 + 4
    assert len(notes) == 1 and "ValueError: cannot generate" in notes[0]


def test_a_sequence_length_that_changes_no_input_is_measured_once_with_a_note():
    import torch

    from accelerate_core.bench.shapes import SEQ_NOT_APPLICABLE

    bench = BenchConfig(warmup=0, min_iters=1, min_duration_s=0.0, batch_sizes=(1, 2), seq_lens=(8, 32))
    images: list[str] = []
    tokens: list[str] = []

    # Given a model fed a fixed-size input whatever the sequence length, and one fed tokens of that length
    image = benchmark_model(torch.nn.Linear(4, 4), lambda b, s: {"input": torch.randn(b, 4)}, hardware="cpu",
                            bench=bench, generative=False, notes=images, same_input_once=True)  # fmt: skip
    text = benchmark_model(torch.nn.Identity(), lambda b, s: {"input": torch.randn(b, s)}, hardware="cpu",
                           bench=bench, generative=False, notes=tokens, same_input_once=True)  # fmt: skip

    # Then the first is measured at the first length of each batch size only, and a note says why
    assert sorted((m.batch_size, m.seq_len) for m in image if m.metric == "latency") == [(1, 8), (2, 8)]
    assert len(images) == 2 and all(n.startswith(f"{SEQ_NOT_APPLICABLE} Linear") for n in images)
    assert "batch 2 x seq 32 is the input of seq 8" in images[1]
    # And the second at every shape
    assert len([m for m in text if m.metric == "latency"]) == 4 and tokens == []


def test_environment_names_versions_device_and_threads():
    env = environment("cpu")

    assert env["torch"] and env["transformers"] and env["python"]
    assert env["device_name"] == env["cpu_model"] and env["torch_threads"] >= 1
    json.dumps(env)


def test_image_size_is_set_in_nested_sub_configs_too():
    from accelerate_core.bench.job import set_image_size

    config = {"image_size": 224, "vision_config": {"image_size": [224, 224], "patch_size": 16}, "text_config": {}}

    assert set_image_size(config, 64)
    assert config == {"image_size": 64, "vision_config": {"image_size": [64, 64], "patch_size": 16}, "text_config": {}}
    assert not set_image_size({"hidden_size": 32, "text_config": {}}, 64)

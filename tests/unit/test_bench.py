"""Measurement: the stopping rules of the latency loop, the statistics, the measurements file, one real model."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from accelerate_core.bench import (
    STOP_CONVERGED,
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
from accelerate_core.bench.stats import median_ci, median_ci_ranks, median_ci_rel
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
    with pytest.raises(ValueError, match="p50_ci_rel"):
        measure(lambda: None, warmup=0, min_iters=1, min_duration_s=0, max_duration_s=1, p50_ci_rel=0.0)
    with pytest.raises(ConfigError, match="p50_ci_rel"):
        BenchConfig(p50_ci_rel=1.5)


# ---------------------------------------------------------------- the precision rule


class ReplayClock:
    """A clock that advances by the next duration of a sequence each time the measured call runs."""

    def __init__(self, durations: list[float]) -> None:
        self.now = 0.0
        self._left = iter(durations)

    def __call__(self) -> float:
        return self.now

    def work(self) -> None:
        self.now += next(self._left)


def test_a_steady_call_stops_at_min_iters_once_its_p50_is_precise():
    # Given calls of constant duration: the p50's interval has zero width from the first count that has one
    clock = FakeClock(step_s=0.001)
    # When the loop asks for 1 s but also for a p50 within +-1%
    samples = _measure(clock, min_iters=10, min_duration_s=1.0, p50_ci_rel=0.01)
    # Then it stops at min_iters, converged, long before the second of the duration rule
    assert len(samples.values) == 10
    assert samples.stopped_by == STOP_CONVERGED
    assert samples.ci_rel == 0.0
    assert samples.loop_record() == {"stopped_by": "converged", "n": 10, "warmup": 0, "loop_s": 0.01,
                                     "ci_rel": 0.0}  # fmt: skip


def test_a_noisy_call_measures_as_long_as_without_the_rule():
    # Given durations alternating 1 ms and 3 ms: the median's interval spans both, +-50% of the p50
    durations = [0.001, 0.003] * 200
    # When it is measured with and without the precision rule
    clock = ReplayClock(durations)
    with_rule = measure(clock.work, clock=clock, warmup=0, min_iters=10, min_duration_s=0.2, max_duration_s=1.0,
                        p50_ci_rel=0.01)  # fmt: skip
    clock = ReplayClock(durations)
    without = measure(clock.work, clock=clock, warmup=0, min_iters=10, min_duration_s=0.2, max_duration_s=1.0)
    # Then the rule never converges: the loop runs to the duration rule and keeps every sample the old loop kept
    assert with_rule.values == without.values and with_rule.stopped_by == STOP_RULES_MET
    assert with_rule.ci_rel is not None and with_rule.ci_rel > 0.01


def test_a_noisy_call_runs_to_the_time_cap_when_the_duration_rule_is_the_cap():
    rng = random.Random(3)
    durations = [rng.uniform(0.001, 0.01) for _ in range(5000)]
    clock = ReplayClock(durations)
    samples = measure(clock.work, clock=clock, warmup=0, min_iters=10, min_duration_s=2.0, max_duration_s=2.0,
                      p50_ci_rel=0.001)  # fmt: skip
    assert samples.stopped_by == STOP_RULES_MET and sum(samples.values) >= 2.0
    assert samples.ci_rel is not None and samples.ci_rel > 0.001


durations_s = st.lists(st.floats(1e-4, 0.05, allow_nan=False), min_size=1, max_size=300)


def _lasting(durations: list[float], seconds: float = 2.5) -> list[float]:
    """``durations`` repeated until they add up to more than ``seconds`` (past any loop's 2 s cap below)."""
    return durations * (1 + math.ceil(seconds / sum(durations)))


@settings(max_examples=150, deadline=None)
@given(durations=durations_s, target=st.floats(0.001, 0.2), min_iters=st.integers(1, 30))
def test_the_precision_rule_only_ever_stops_a_loop_early_and_only_when_precise(durations, target, min_iters):
    durations = _lasting(durations)  # enough calls for any of the rules below
    rules = {"warmup": 0, "min_iters": min_iters, "min_duration_s": 0.3, "max_duration_s": 2.0}
    clock = ReplayClock(durations)
    without = measure(clock.work, clock=clock, **rules)
    clock = ReplayClock(durations)
    with_rule = measure(clock.work, clock=clock, p50_ci_rel=target, **rules)
    # The rule's samples are the first ones the old loop took: it only ever stops sooner
    assert with_rule.values == without.values[: len(with_rule.values)]
    assert with_rule.ci_rel == median_ci_rel(sorted(with_rule.values))
    if with_rule.stopped_by == STOP_CONVERGED:
        # ... and only with min_iters in and the p50 precise to the target
        assert len(with_rule.values) >= min_iters
        assert with_rule.ci_rel is not None and with_rule.ci_rel <= target
    else:
        assert with_rule.values == without.values and with_rule.stopped_by == without.stopped_by


@settings(max_examples=100, deadline=None)
@given(durations=durations_s, target=st.floats(0.001, 0.2))
@example(durations=[0.001, 0.0001], target=0.125)  # 1.65 s of calls once repeated: the replay ran out before 2 s
def test_a_converged_loop_stops_at_the_first_check_that_finds_its_p50_precise(durations, target):
    durations = _lasting(durations)
    clock = ReplayClock(durations)
    got = measure(clock.work, clock=clock, warmup=0, min_iters=10, min_duration_s=2.0, max_duration_s=2.0,
                  p50_ci_rel=target)  # fmt: skip
    checks = [10]  # at min_iters, then each time the count has grown by a tenth
    while checks[-1] < len(durations):
        checks.append(checks[-1] + max(1, checks[-1] // 10))
    precise = [n for n in checks if _within(median_ci_rel(sorted(durations[:n])), target)]
    if got.stopped_by == STOP_CONVERGED:
        assert len(got.values) == precise[0]
    else:
        assert not precise or sum(durations[: precise[0]]) >= 2.0  # no check found it precise inside the 2 s


def _within(ci_rel: float | None, target: float) -> bool:
    return ci_rel is not None and ci_rel <= target


# ---------------------------------------------------------------- the median's confidence interval


def _binomial_tail(n: int, k: int) -> float:
    """P(B <= k) for B ~ Binomial(n, 1/2), brute force."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 400), confidence=st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_median_ci_ranks_are_the_narrowest_order_statistics_with_the_coverage(n, confidence):
    ranks = median_ci_ranks(n, confidence)
    # Brute force: the interval [x(k), x(n-k+1)] (1-based) covers the median with 1 - 2 P(B <= k-1)
    fits = [k for k in range(1, n // 2 + 1) if 1 - 2 * _binomial_tail(n, k - 1) >= confidence - 1e-12]
    if not fits:
        assert ranks is None
        return
    k = max(fits)
    assert ranks == (k - 1, n - k)


def test_median_ci_of_known_sizes_and_its_relative_half_width():
    assert median_ci_ranks(5) is None and median_ci_ranks(6) == (0, 5)  # 2**-5 > 2.5%: no 95% interval below 6
    assert median_ci_ranks(20) == (5, 14) and median_ci_ranks(100) == (39, 60)  # the textbook table, 1-based +1
    values = [float(x) for x in range(1, 21)]  # median 10.5, interval [x(6), x(15)] = [6, 15]
    assert median_ci(values) == (6.0, 15.0)
    assert median_ci_rel(values) == pytest.approx(4.5 / 10.5)
    assert median_ci_rel([1.0] * 5) is None and median_ci_rel([0.0] * 10) is None


def test_an_empirical_95_interval_covers_the_true_median_at_least_95_times_in_100():
    rng = random.Random(11)
    covered = 0
    for _ in range(2000):
        values = sorted(rng.lognormvariate(0, 0.5) for _ in range(25))  # true median exp(0) = 1
        low, high = median_ci(values) or (math.inf, -math.inf)
        covered += low <= 1.0 <= high
    assert covered / 2000 >= 0.94  # 95.7% exact coverage at n=25, less Monte Carlo error


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

    loops: list[dict] = []
    found = benchmark_model(model, make_inputs, hardware="cpu", bench=bench, generative=True, loops=loops)

    tokens = next(m for m in found if m.metric == "tokens_per_s")
    assert tokens.unit == "tokens/s" and tokens.n >= 2
    # Each loop says how it ended: the forward latency loop, then the generate loop, at the shape
    assert [(x["metric"], x["batch_size"], x["seq_len"], x["stopped_by"]) for x in loops] == [
        ("latency", 2, 4, STOP_RULES_MET), ("generate", 2, 4, STOP_RULES_MET)]  # fmt: skip
    assert loops[1]["n"] == tokens.n and loops[1]["warmup"] == 0
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

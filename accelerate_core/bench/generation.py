"""Generation timing, split as optimum-benchmark splits it: prefill (time to first token) and per-token decode.

Every timed ``generate`` call makes exactly ``new_tokens`` greedy tokens (``min_new_tokens == max_new_tokens``,
so each call does the same work) with a logits processor that stamps the clock as each new token's logits are
ready (optimum-benchmark's per-token latency tracker does the same; on a GPU it waits for the device first).
From one call:

- ``calls``: the whole call, as the latency loop times it (tokens/s is ``batch * new_tokens / call``);
- ``prefill``: call start to the first token's logits: the forward over the prompt, the time to first token;
- ``decode``: the gap between successive tokens' logits, one sample per token after the first: a decode step
  with the KV cache (none when ``new_tokens`` is 1).

Warm-up calls are not kept: only the calls the loop times (:func:`~accelerate_core.bench.measure.measure`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from accelerate_core.bench.measure import Samples, device_timing, measure
from accelerate_core.config import BenchConfig

__all__ = ["GenerationSamples", "StepClock", "generation_kwargs", "time_generation"]


@dataclass(frozen=True, slots=True)
class GenerationSamples:
    """Raw timings of the timed ``generate`` calls, in seconds (see the module docstring); ``loop``: the loop of
    whole calls, with how it ended."""

    calls: list[float]
    prefill: list[float]
    decode: list[float]
    loop: Samples


class StepClock:
    """A logits processor that records when each new token's logits are ready; it leaves the scores alone."""

    def __init__(self, sync: Callable[[], None] | None = None, clock: Callable[[], float] = time.perf_counter) -> None:
        self._sync, self._clock = sync, clock
        self.start = 0.0
        self.stamps: list[float] = []

    def begin(self) -> None:
        """Start one call: forget the last call's stamps and note the start."""
        if self._sync is not None:
            self._sync()
        self.stamps = []
        self.start = self._clock()

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self._sync is not None:
            self._sync()
        self.stamps.append(self._clock())
        return scores

    def split(self) -> tuple[float, list[float]]:
        """The last call's prefill (start to first stamp) and decode gaps (between successive stamps)."""
        if not self.stamps:
            raise ValueError("generate made no token: no logits processor call was stamped")
        gaps = [b - a for a, b in zip(self.stamps, self.stamps[1:], strict=False)]
        return self.stamps[0] - self.start, gaps


def time_generation(model: Any, kwargs: dict[str, Any], hardware: str, bench: BenchConfig) -> GenerationSamples:
    """Time ``model.generate(**kwargs)`` in the latency loop of ``bench``, each call split into prefill and decode.

    Args:
        model: a generative model on the device of ``hardware``.
        kwargs: :func:`generation_kwargs` (a fixed number of new tokens).
        hardware: the hardware kind (device sync and timer).
        bench: the loop's stopping rule.
    """
    from transformers import LogitsProcessorList

    sync, timer = device_timing(hardware)
    step_clock = StepClock(sync)
    processors = LogitsProcessorList([step_clock])
    splits: list[tuple[float, list[float]]] = []

    def generate() -> None:
        step_clock.begin()
        model.generate(**kwargs, logits_processor=processors)
        splits.append(step_clock.split())

    samples = measure(generate, sync=sync, timer=timer, warmup=bench.warmup, min_iters=bench.min_iters,
                      min_duration_s=bench.min_duration_s, max_duration_s=bench.max_duration_s,
                      p50_ci_rel=bench.p50_ci_rel)  # fmt: skip
    timed = splits[len(splits) - len(samples.values) :]  # the warm-up calls came first
    return GenerationSamples(
        calls=samples.values,
        prefill=[p for p, _ in timed],
        decode=[g for _, gaps in timed for g in gaps],
        loop=samples,
    )


def generation_kwargs(model: Any, inputs: dict[str, Any], new_tokens: int) -> dict[str, Any]:
    """``generate`` arguments for exactly ``new_tokens`` greedy tokens from the forward inputs.

    Decoder inputs and labels are dropped (generation makes its own); a tiny random config often has
    no ``decoder_start_token_id``/``pad_token_id``, so 0 stands in where one is missing.
    """
    kwargs = {k: v for k, v in inputs.items() if not k.startswith("decoder_") and k not in ("labels", "use_cache")}
    kwargs.update(min_new_tokens=new_tokens, max_new_tokens=new_tokens, do_sample=False)
    config = getattr(model, "generation_config", None)
    if config is not None:
        if getattr(config, "pad_token_id", None) is None:
            kwargs["pad_token_id"] = _first_int(config, "eos_token_id") or 0
        if (
            getattr(model.config, "is_encoder_decoder", False)
            and getattr(config, "decoder_start_token_id", None) is None
        ):
            kwargs["decoder_start_token_id"] = _first_int(config, "bos_token_id") or kwargs.get("pad_token_id", 0)
    return kwargs


def _first_int(config: Any, name: str) -> int | None:
    value = getattr(config, name, None)
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, int) else None

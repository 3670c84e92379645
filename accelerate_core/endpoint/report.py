"""The benchmark's result: per level TTFT, ITL, TPOT, end-to-end latency, tokens/s, requests/s, errors.

Definitions (as in vLLM's serving benchmark and genai-perf), over the *successful* requests of a level:

- ``ttft_s``: send to the first content event; ``itl_s``: every gap between consecutive content
  events, pooled over requests; ``tpot_s``: per request ``(e2e - ttft) / (output_tokens - 1)``;
  ``e2e_s``: send to the end of the stream. Each as ``n``/``p50``/``p90``/``p99``/``mean``/``stdev``
  (percentiles by linear interpolation, :func:`accelerate_core.bench.stats.sample_stats`);
- ``output_tokens_per_s``: output tokens of the successful requests / the level's wall time;
  ``requests_per_s``: successful requests / wall time;
- ``errors``: failed requests by class; ``sent == ok + sum(errors)`` always.

The raw per-request samples are kept (``samples``) for the report's Mann-Whitney comparison.
:meth:`EndpointReport.measurements` turns the report into measurement rows (``Measurement`` fields:
``batch_size`` is the concurrency, ``seq_len`` the prompt length).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

from accelerate_core.bench.stats import sample_stats
from accelerate_core.endpoint.load import LevelRun
from accelerate_core.endpoint.sample import RequestSample

__all__ = ["EndpointReport", "LevelReport", "level_report"]

_LATENCIES = (("ttft", "ttft_s"), ("itl", "itl_s"), ("tpot", "tpot_s"), ("latency", "e2e_s"))
"""(measurement metric, report key) of each latency; ``latency`` is end to end, as the comparison expects."""


@dataclass(frozen=True, slots=True)
class LevelReport:
    """The figures of one concurrency level (see the module docstring)."""

    concurrency: int
    mode: str
    sent: int
    ok: int
    errors: dict[str, int]
    error_examples: dict[str, str]
    wall_s: float
    late_s: float
    output_tokens: int
    latencies: dict[str, dict[str, Any] | None]
    raw: dict[str, list[float]]
    prompt_tokens: float | None
    server_prompt_tokens: float | None
    samples: list[dict[str, Any]] = field(repr=False)

    @property
    def requests_per_s(self) -> float:
        """Successful requests per second of wall time."""
        return self.ok / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def output_tokens_per_s(self) -> float:
        """Output tokens of successful requests per second of wall time."""
        return self.output_tokens / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, raw samples included."""
        return {
            "concurrency": self.concurrency,
            "mode": self.mode,
            "sent": self.sent,
            "ok": self.ok,
            "errors": dict(self.errors),
            "error_examples": dict(self.error_examples),
            "wall_s": self.wall_s,
            "late_s": self.late_s,
            "output_tokens": self.output_tokens,
            "output_tokens_per_s": self.output_tokens_per_s,
            "requests_per_s": self.requests_per_s,
            **self.latencies,
            "prompt_tokens_mean": self.prompt_tokens,
            "server_prompt_tokens_mean": self.server_prompt_tokens,
            "samples": self.samples,
        }

    def measurements(self, prompt_tokens: int) -> list[dict[str, Any]]:
        """Measurement rows: the four latencies (raw samples kept), tokens/s and requests/s."""
        rows = []
        for metric, key in _LATENCIES:
            stats = self.latencies[key]
            if stats is not None:
                rows.append(_row(metric, "s", self.concurrency, prompt_tokens, self.raw[key], stats))
        for metric, unit, value in (
            ("tokens_per_s", "tokens/s", self.output_tokens_per_s),
            ("requests_per_s", "requests/s", self.requests_per_s),
        ):
            rows.append(_row(metric, unit, self.concurrency, prompt_tokens, [value], sample_stats([value])))
        return rows


def _row(
    metric: str, unit: str, concurrency: int, seq: int, samples: list[float], stats: dict[str, Any]
) -> dict[str, Any]:
    return {"metric": metric, "unit": unit, "batch_size": concurrency, "seq_len": seq, "samples": samples, **stats}


def level_report(run: LevelRun, mode: str) -> LevelReport:
    """Summarise one level's raw samples."""
    good = [s for s in run.samples if s.ok]
    raw = {
        "ttft_s": [s.ttft_s for s in good if s.ttft_s is not None],
        "itl_s": [gap for s in good for gap in s.itl_s],
        "tpot_s": [t for s in good if (t := s.tpot_s) is not None],
        "e2e_s": [s.e2e_s for s in good],
    }
    failed = [s for s in run.samples if not s.ok]
    examples: dict[str, str] = {}
    for s in failed:
        examples.setdefault(str(s.error_class), str(s.error))
    server = [s.usage.prompt_tokens for s in good if s.usage is not None]
    return LevelReport(
        concurrency=run.concurrency,
        mode=mode,
        sent=len(run.samples),
        ok=len(good),
        errors=dict(Counter(str(s.error_class) for s in failed)),
        error_examples=examples,
        wall_s=run.wall_s,
        late_s=run.late_s,
        output_tokens=sum(s.output_tokens for s in good),
        latencies={key: sample_stats(values) if values else None for key, values in raw.items()},
        raw=raw,
        prompt_tokens=fmean(s.prompt_tokens for s in run.samples) if run.samples else None,
        server_prompt_tokens=fmean(server) if server else None,
        samples=[s.to_dict(run.started) for s in sorted(run.samples, key=_order)],
    )


def _order(sample: RequestSample) -> float:
    return sample.started


@dataclass(frozen=True, slots=True)
class EndpointReport:
    """A whole benchmark: the target (never its token), the settings, the warm-up and each level."""

    target: dict[str, Any]
    config: dict[str, Any]
    prompt_tokens: int
    prompts_counted_by: str
    include_usage: bool
    warmup: LevelReport
    levels: list[LevelReport]
    environment: dict[str, Any]

    @property
    def sent(self) -> int:
        """Requests sent over all levels (warm-up excluded)."""
        return sum(level.sent for level in self.levels)

    @property
    def ok(self) -> int:
        """Successful requests over all levels."""
        return sum(level.ok for level in self.levels)

    def error_totals(self) -> dict[str, int]:
        """Failed requests by class over all levels."""
        total: Counter[str] = Counter()
        for level in self.levels:
            total.update(level.errors)
        return dict(total)

    @property
    def all_failed(self) -> bool:
        """True when requests were sent and not one succeeded."""
        return self.sent > 0 and self.ok == 0

    def measurements(self) -> list[dict[str, Any]]:
        """Measurement rows of every level (``batch_size`` = concurrency, ``seq_len`` = prompt tokens)."""
        return [row for level in self.levels for row in level.measurements(self.prompt_tokens)]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (what ``accel endpoint bench --json`` prints)."""
        return {
            "target": self.target,
            "config": self.config,
            "prompts_counted_by": self.prompts_counted_by,
            "stream_options_include_usage": self.include_usage,
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.error_totals(),
            "warmup": {k: v for k, v in self.warmup.to_dict().items() if k in ("sent", "ok", "errors")},
            "levels": [level.to_dict() for level in self.levels],
            "environment": self.environment,
        }

"""The record of one request: :class:`RequestSample` (timings, token counts, or its error class).

Every request a benchmark sends ends as exactly one sample, ok or not, so ``ok + errors == sent``.
Times are seconds from ``time.perf_counter``; ``started`` is absolute (the level turns it into an offset).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["RequestSample", "Usage"]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts the server reported (``usage`` of the last chunk or of a whole completion)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @property
    def adds_up(self) -> bool:
        """True when prompt + completion == total."""
        return self.prompt_tokens + self.completion_tokens == self.total_tokens


@dataclass(frozen=True, slots=True)
class RequestSample:
    """One request's outcome.

    Attributes:
        index: the request's number within its benchmark (prompts are chosen by it).
        started: ``perf_counter`` when the request was sent.
        e2e_s: send to the end of the stream (or to the failure).
        ttft_s: send to the first content token; None when no token arrived.
        itl_s: gaps between consecutive content events (inter-token latency), in arrival order.
        output_tokens: ``usage.completion_tokens`` when the server sent usage, else the content events.
        prompt_tokens: the prompt's length as we counted it (tokenizer or approximation).
        usage: the server's own counts, when it sent them.
        error_class: None when ok, else a class of :mod:`accelerate_core.endpoint.classify`.
        error: a one-line message (the token masked), None when ok.
        status: the HTTP status, None when no response arrived.
    """

    index: int
    started: float
    e2e_s: float
    ttft_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    output_tokens: int = 0
    prompt_tokens: int = 0
    usage: Usage | None = None
    error_class: str | None = None
    error: str | None = None
    status: int | None = None

    @property
    def ok(self) -> bool:
        """True when the request completed without an error."""
        return self.error_class is None

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first: ``(e2e - ttft) / (output_tokens - 1)``; None below 2 tokens."""
        if self.ttft_s is None or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)

    def to_dict(self, origin: float) -> dict[str, Any]:
        """Plain JSON-able values; ``start_s`` is seconds after ``origin`` (the level's start)."""
        return {
            "index": self.index,
            "start_s": self.started - origin,
            "ok": self.ok,
            "error_class": self.error_class,
            "error": self.error,
            "status": self.status,
            "ttft_s": self.ttft_s,
            "e2e_s": self.e2e_s,
            "tpot_s": self.tpot_s,
            "itl_s": self.itl_s,
            "output_tokens": self.output_tokens,
            "prompt_tokens": self.prompt_tokens,
            "server_prompt_tokens": self.usage.prompt_tokens if self.usage else None,
        }

"""``check_endpoint``: does the server answer chat completions correctly, before it is benchmarked?

Three checks on one short greedy (``temperature: 0``) prompt, stopping at the first that fails:

1. a non-streamed completion returns text;
2. its usage adds up (``prompt + completion == total``, ``1 <= completion <= max_tokens``);
3. the same request streamed completes and reports the same completion token count (from its usage,
   or its content events when the server sends no usage).

The result is a pass/fail with a one-line reason (the token never in it), its own test outcome in a
phase run.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from accelerate_core.endpoint.classify import classify, describe, one_line
from accelerate_core.endpoint.client import REJECTS_OPTION, Completion, EndpointClient
from accelerate_core.endpoint.prompts import Prompt, PromptSource
from accelerate_core.endpoint.sample import RequestSample
from accelerate_core.endpoint.spec import EndpointTarget

__all__ = ["CheckResult", "check_endpoint"]

CHECK_PROMPT_TOKENS = 16
CHECK_MAX_TOKENS = 8


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The functional check's verdict: ``ok``, a one-line ``reason``, and the facts behind it."""

    ok: bool
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values."""
        return {"ok": self.ok, "reason": self.reason, "details": dict(self.details)}


def check_endpoint(target: EndpointTarget, *, timeout_s: float = 60.0) -> CheckResult:
    """Run the functional check (from synchronous code; the module docstring lists what it checks)."""
    return asyncio.run(_check(target, timeout_s))


async def _check(target: EndpointTarget, timeout_s: float) -> CheckResult:
    prompt = PromptSource(CHECK_PROMPT_TOKENS)[0]
    async with EndpointClient(target, timeout_s=timeout_s, connections=1) as client:
        try:
            whole = await client.complete(prompt.text, max_tokens=CHECK_MAX_TOKENS, temperature=0)
        except Exception as exc:
            message = one_line(target.redact(describe(exc)))
            return CheckResult(False, f"non-streamed completion failed: {classify(exc)} ({message})")
        verdict = _judge_whole(whole)
        if verdict is not None:
            return verdict
        streamed = await _stream(client, prompt, include_usage=True)
        if streamed.status in REJECTS_OPTION:
            streamed = await _stream(client, prompt, include_usage=False)
    return _judge_streamed(whole, streamed)


async def _stream(client: EndpointClient, prompt: Prompt, *, include_usage: bool) -> RequestSample:
    return await client.stream_chat(
        prompt, index=0, max_tokens=CHECK_MAX_TOKENS, include_usage=include_usage, temperature=0
    )


def _judge_whole(whole: Completion) -> CheckResult | None:
    details = {"text_chars": len(whole.text), "finish_reason": whole.finish_reason}
    if not whole.text.strip():
        return CheckResult(False, "the completion returned no text", details)
    usage = whole.usage
    if usage is None:
        return CheckResult(False, "the completion reported no usage", details)
    if not usage.adds_up or not 1 <= usage.completion_tokens <= CHECK_MAX_TOKENS:
        return CheckResult(
            False,
            f"usage does not add up: prompt {usage.prompt_tokens} + completion {usage.completion_tokens} "
            f"!= total {usage.total_tokens} or completion outside 1-{CHECK_MAX_TOKENS}",
            details,
        )
    return None


def _judge_streamed(whole: Completion, streamed: RequestSample) -> CheckResult:
    assert whole.usage is not None
    details = {"completion_tokens": whole.usage.completion_tokens, "streamed_tokens": streamed.output_tokens}
    if not streamed.ok:
        return CheckResult(False, f"streamed completion failed: {streamed.error_class} ({streamed.error})", details)
    if streamed.output_tokens != whole.usage.completion_tokens:
        return CheckResult(
            False,
            f"streamed and non-streamed token counts differ: {streamed.output_tokens} vs "
            f"{whole.usage.completion_tokens}",
            details,
        )
    return CheckResult(True, f"ok: {whole.usage.completion_tokens} tokens, streamed and whole agree", details)

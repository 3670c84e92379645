"""One HTTP client per benchmark: streamed chat completions, timed per event and classified on failure.

Built on ``httpx2`` (already installed: ``huggingface_hub`` depends on it): an ``AsyncClient`` with one
pooled keep-alive connection per concurrent request. Server-Sent Events are assembled from
``Response.aiter_lines`` (httpx2's line splitter) by :func:`_events`, the part of the SSE format a chat
stream uses: ``data:`` lines joined until a blank line; comments and ``event``/``id``/``retry`` fields
are skipped. httpx2's own ``EventSource`` splits the text into lines a second time in Python, which
doubled our per-event cost over a bare loop; ``benchmarks/bench_endpoint_client.py`` measures what is
left (one ``json.loads`` and one ``perf_counter`` per event) against a bare streaming loop.

Timing of one streamed request:

- ``started``: just before the request is written;
- a *content event* is a chunk whose ``choices[0].delta`` has non-empty ``content`` (or
  ``reasoning_content``); TTFT is the first one's arrival, ITL the gaps between the following ones;
- ``e2e``: the end of the response (after ``[DONE]`` or a ``finish_reason``), read to its last byte
  so the connection goes back to the pool.

The whole request, connect included, runs under one deadline (``timeout_s``). Environment variables
(proxies, ``SSL_CERT_FILE``) are ignored: only ``accelerate_core.config`` reads the environment.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from itertools import pairwise
from time import perf_counter
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx2

from accelerate_core.endpoint.classify import (
    MalformedStreamError,
    StreamErrorEvent,
    TruncatedStreamError,
    classify,
    describe,
    http_class,
    one_line,
)
from accelerate_core.endpoint.sample import RequestSample, Usage

if TYPE_CHECKING:
    from accelerate_core.endpoint.prompts import Prompt
    from accelerate_core.endpoint.spec import EndpointTarget

__all__ = ["REJECTS_OPTION", "Completion", "EndpointClient"]

REJECTS_OPTION = frozenset({400, 422})
"""Statuses with which a server refuses a request field it does not know (``stream_options``)."""

_BODY_PREVIEW_BYTES = 4096
"""How much of an HTTP error response's body is read for its error message (masked, then cut to one line)."""


@dataclass(frozen=True, slots=True)
class Completion:
    """A non-streamed chat completion: its text, finish reason and the server's usage."""

    text: str
    finish_reason: str | None
    usage: Usage | None


class EndpointClient:
    """Sends chat completions to one target; use as ``async with EndpointClient(...) as client``.

    Args:
        target: the server, model and token.
        timeout_s: the deadline of each request, from send to the end of its response.
        connections: the connection pool's size (the highest concurrency it will see).
    """

    def __init__(self, target: EndpointTarget, *, timeout_s: float, connections: int) -> None:
        self.target = target
        self.timeout_s = timeout_s
        headers = {"Accept": "text/event-stream, application/json"}
        if target.token is not None:
            headers["Authorization"] = f"Bearer {target.token.reveal()}"
        self._http = httpx2.AsyncClient(
            headers=headers,
            timeout=httpx2.Timeout(timeout_s),
            limits=httpx2.Limits(max_connections=connections, max_keepalive_connections=connections),
            trust_env=False,
        )

    async def __aenter__(self) -> EndpointClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._http.aclose()

    def body(
        self, text: str, max_tokens: int, *, stream: bool, include_usage: bool = False, **extra: Any
    ) -> dict[str, Any]:
        """The request body of a one-message chat completion (``extra``: e.g. ``temperature``)."""
        body: dict[str, Any] = {
            "model": self.target.model,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens,
            "stream": stream,
            **extra,
        }
        if stream and include_usage:
            body["stream_options"] = {"include_usage": True}
        return body

    async def stream_chat(
        self, prompt: Prompt, *, index: int, max_tokens: int, include_usage: bool, **extra: Any
    ) -> RequestSample:
        """Send one streamed chat completion and return its sample; never raises for a failed request."""
        body = self.body(prompt.text, max_tokens, stream=True, include_usage=include_usage, **extra)
        reader = _StreamReader(started=perf_counter())
        status: int | None = None
        try:
            async with (
                asyncio.timeout(self.timeout_s),
                self._http.stream("POST", self.target.chat_url, json=body) as response,
            ):
                status = response.status_code
                if status >= 400:
                    message = self._line(f"HTTP {status}: {await _preview(response)}")
                    return reader.failed(index, prompt.tokens, http_class(status), message, status)
                await reader.read(response)
        except Exception as exc:  # every failure becomes a classified sample: nothing is lost
            return reader.failed(index, prompt.tokens, classify(exc), self._line(describe(exc)), status)
        return reader.sample(index, prompt.tokens, status)

    def _line(self, text: str) -> str:
        """One line about this target, the token masked first (so a cut never leaves part of it)."""
        return one_line(self.target.redact(text))

    async def complete(self, text: str, *, max_tokens: int, **extra: Any) -> Completion:
        """One non-streamed chat completion.

        Raises:
            httpx2.HTTPError: the request failed (classify it with :func:`~.classify.classify`).
            MalformedStreamError: the answer is not a chat completion.
        """
        async with asyncio.timeout(self.timeout_s):
            response = await self._http.post(
                self.target.chat_url, json=self.body(text, max_tokens, stream=False, **extra)
            )
        response.raise_for_status()
        try:
            data = response.json()
            choice = data["choices"][0]
            return Completion(choice["message"].get("content") or "", choice.get("finish_reason"), _usage(data))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            raise MalformedStreamError(f"not a chat completion: {self._line(response.text)}") from e

    async def probe(self) -> tuple[str, str] | None:
        """GET the model list; None when the server answers at all, else ``(error class, message)``."""
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._http.get(self.target.models_url)
        except Exception as exc:
            return classify(exc), self._line(describe(exc))
        return None


@dataclass(slots=True)
class _StreamReader:
    """The state of one stream being read: content-event arrival times, usage, how it ended."""

    started: float
    times: list[float] = field(default_factory=list)
    usage: Usage | None = None
    finished: bool = False
    ended: float = 0.0

    async def read(self, response: httpx2.Response) -> None:
        """Consume the SSE stream; raise a classifiable error when it is not a complete chat stream."""
        kind = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        if kind != "text/event-stream":
            raise MalformedStreamError(f"the response is {kind or 'untyped'}, not text/event-stream")
        # Read to the end even after [DONE]: a response left unread cannot go back to the pool, and
        # reconnecting for every request would add a TCP handshake to every TTFT.
        async for data in _events(response):
            if data == "[DONE]":
                self.finished = True
            else:
                self._take(data, perf_counter())
        self.ended = perf_counter()
        if not self.finished:
            raise TruncatedStreamError("the stream ended before a finish_reason or [DONE]")

    def _take(self, data: str, now: float) -> None:
        try:
            chunk = json.loads(data)
        except ValueError as e:
            raise MalformedStreamError(f"event data is not JSON: {data}") from e
        if not isinstance(chunk, dict):
            raise MalformedStreamError(f"event data is not a JSON object: {data}")
        if "error" in chunk:
            raise StreamErrorEvent(f"server error in stream: {chunk['error']}")
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise MalformedStreamError(f"chunk has no choices list: {data}")
        if chunk.get("usage"):
            self.usage = _usage(chunk)
        try:
            for choice in choices:
                delta = choice.get("delta") or {}
                if delta.get("content") or delta.get("reasoning_content"):
                    self.times.append(now)
                if choice.get("finish_reason"):
                    self.finished = True
        except AttributeError as e:  # a choice or delta that is not an object
            raise MalformedStreamError(f"chunk choices are malformed: {data}") from e

    def sample(self, index: int, prompt_tokens: int, status: int | None) -> RequestSample:
        """The sample of a stream that completed."""
        times = self.times
        return RequestSample(
            index=index,
            started=self.started,
            e2e_s=self.ended - self.started,
            ttft_s=times[0] - self.started if times else None,
            itl_s=[b - a for a, b in pairwise(times)],
            output_tokens=self.usage.completion_tokens if self.usage else len(times),
            prompt_tokens=prompt_tokens,
            usage=self.usage,
            status=status,
        )

    def failed(self, index: int, prompt_tokens: int, error_class: str, error: str, status: int | None) -> RequestSample:
        """The sample of a request that failed (tokens received before the failure are counted)."""
        return RequestSample(
            index=index,
            started=self.started,
            e2e_s=perf_counter() - self.started,
            output_tokens=len(self.times),
            prompt_tokens=prompt_tokens,
            usage=self.usage,
            error_class=error_class,
            error=error,
            status=status,
        )


async def _events(response: httpx2.Response) -> AsyncIterator[str]:
    """The ``data`` of each Server-Sent Event of ``response``, as soon as its closing blank line arrives."""
    data: list[str] = []
    async for line in response.aiter_lines():
        if line:
            if line.startswith("data:"):
                data.append(line[6:] if line.startswith("data: ") else line[5:])
            continue
        if data:
            yield "\n".join(data)
            data = []
    if data:  # the stream ended without the event's blank line: the event still counts
        yield "\n".join(data)


def _usage(data: dict[str, Any]) -> Usage | None:
    raw = data.get("usage")
    if not isinstance(raw, dict):
        return None
    try:
        return Usage(int(raw["prompt_tokens"]), int(raw["completion_tokens"]), int(raw["total_tokens"]))
    except (KeyError, TypeError, ValueError) as e:
        raise MalformedStreamError(f"usage is malformed: {raw!r}") from e


async def _preview(response: httpx2.Response) -> str:
    """The start of an error response's body, on one line."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= _BODY_PREVIEW_BYTES:
            break
    return b"".join(chunks)[:_BODY_PREVIEW_BYTES].decode("utf-8", "replace").strip() or "(empty body)"

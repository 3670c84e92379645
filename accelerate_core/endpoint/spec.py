"""What a serving benchmark targets and how it loads it: :class:`EndpointTarget`, :class:`EndpointBenchConfig`.

Both are frozen and validated at construction: a bad value raises
:class:`~accelerate_core.errors.ConfigError` with one line saying what to fix (exit 2 in the CLI).
The bearer token travels as a :class:`Secret`, whose ``str``/``repr`` never show it; every text this
package emits about a target (error messages, response bodies) goes through :meth:`EndpointTarget.redact`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from accelerate_core.config import redact_url
from accelerate_core.errors import ConfigError

__all__ = ["ARRIVALS", "EndpointBenchConfig", "EndpointTarget", "Secret"]

CHAT_PATH = "/v1/chat/completions"
"""The OpenAI-compatible streaming chat route, appended to the target's base URL."""

ARRIVALS: tuple[str, ...] = ("poisson", "fixed")
"""Open-loop arrival processes: exponential gaps of mean ``1/rate`` (seeded), or exactly ``1/rate`` apart."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_REDACTED = "***"


@dataclass(frozen=True, slots=True)
class Secret:
    """A credential: ``str()`` and ``repr()`` print ``***``; only :meth:`reveal` gives the value."""

    _value: str = field(repr=False)

    def __str__(self) -> str:
        return _REDACTED

    def __repr__(self) -> str:
        return f"Secret({_REDACTED})"

    def reveal(self) -> str:
        """The clear value, for the Authorization header and nothing else."""
        return self._value

    def redact(self, text: str) -> str:
        """``text`` with the value masked as ``***``: as is, JSON-escaped (``\\/``) and URL-encoded."""
        if not self._value:
            return text
        for form in _forms(self._value):
            text = text.replace(form, _REDACTED)
        return text


def _forms(value: str) -> list[str]:
    """The spellings of a secret a server may echo back, longest first (so no form leaves part of another)."""
    forms = {value, json.dumps(value)[1:-1], value.replace("/", "\\/"), quote(value, safe="")}
    return sorted(forms, key=len, reverse=True)


@dataclass(frozen=True, slots=True)
class EndpointTarget:
    """One OpenAI-compatible server and the model to ask it for.

    Args:
        name: a short id (letters, digits, ``_.-``); phase runs report it as ``api:NAME``.
        url: the server's base URL (``http://host:port``, optionally ending in ``/v1`` or the chat route).
        model: the ``model`` field of each request (what the server serves, e.g. a hub id or a path).
        token: the bearer token, if the server wants one (see ``accelerate_core.config.endpoint_token``).
    """

    name: str
    url: str
    model: str
    token: Secret | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"endpoint name {self.name!r} is invalid: use letters, digits, '_', '.', '-'")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"endpoint URL {redact_url(self.url)!r} is invalid: give http(s)://HOST:PORT of an OpenAI-style server"
            )
        try:
            parts.port  # noqa: B018 -- raises ValueError on a port out of range or not a number
        except ValueError as e:
            raise ConfigError(f"endpoint URL {redact_url(self.url)!r} has an invalid port: give 1-65535") from e
        if parts.password is not None or parts.query or parts.fragment:
            raise ConfigError(
                f"endpoint URL {redact_url(self.url)!r} carries credentials or a query: give the bare base URL "
                "and the token through the environment"
            )
        if not self.model.strip():
            raise ConfigError("endpoint model is empty: give the name the server serves (--model)")

    @property
    def chat_url(self) -> str:
        """The full URL of the streaming chat route."""
        base = self.url.rstrip("/")
        if base.endswith(CHAT_PATH):
            return base
        return base + CHAT_PATH.removeprefix("/v1") if base.endswith("/v1") else base + CHAT_PATH

    @property
    def models_url(self) -> str:
        """The model-listing route, used as a reachability probe."""
        return self.chat_url.removesuffix("/chat/completions") + "/models"

    def redact(self, text: str) -> str:
        """``text`` with the token (if any) masked: apply to anything printed about this target."""
        return self.token.redact(text) if self.token is not None else text

    def describe(self) -> dict[str, Any]:
        """A printable view: name, URL, model and whether a token is used, never the token."""
        return {"name": self.name, "url": redact_url(self.url), "model": self.model, "auth": _auth(self.token)}


def _auth(token: Secret | None) -> str:
    return "bearer" if token is not None else "none"


@dataclass(frozen=True, slots=True)
class EndpointBenchConfig:
    """How to load an endpoint: concurrency levels, how long, prompt and output sizes, arrivals.

    Each concurrency level runs ``requests`` requests (default :meth:`requests_for`) or for
    ``duration_s`` seconds, never both. Closed loop by default (``concurrency`` clients, each sending its
    next request when the last one ends); with ``rate`` it is open loop: requests arrive at ``rate`` per
    second (``arrival`` process) and ``concurrency`` caps how many are in flight.
    ``warmup`` requests (at least one: it also learns whether the server accepts ``stream_options``)
    run first and are not counted. ``timeout_s`` bounds each request from send to the stream's end.
    """

    concurrency: tuple[int, ...] = (1,)
    requests: int | None = None
    duration_s: float | None = None
    prompt_tokens: int = 128
    max_tokens: int = 64
    rate: float | None = None
    arrival: str = "poisson"
    timeout_s: float = 60.0
    warmup: int = 2
    tokenizer: Path | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.concurrency or any(not isinstance(c, int) or c < 1 for c in self.concurrency):
            raise ConfigError(f"concurrency {self.concurrency!r} is invalid: give positive integers, e.g. 1,4,16")
        if self.requests is not None and self.duration_s is not None:
            raise ConfigError("give either --requests or --duration, not both")
        if self.requests is not None and self.requests < 1:
            raise ConfigError(f"requests={self.requests} is invalid: give at least 1 per level")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ConfigError(f"duration={self.duration_s} is invalid: give seconds > 0")
        if self.prompt_tokens < 1 or self.max_tokens < 1:
            raise ConfigError("prompt tokens and max tokens must each be >= 1")
        if self.rate is not None and not self.rate > 0:
            raise ConfigError(f"rate={self.rate} is invalid: give requests per second > 0 (or omit for closed loop)")
        if self.arrival not in ARRIVALS:
            raise ConfigError(f"arrival {self.arrival!r} is invalid: give one of {', '.join(ARRIVALS)}")
        if not self.timeout_s > 0:
            raise ConfigError(f"timeout={self.timeout_s} is invalid: give seconds > 0")
        if self.warmup < 1:
            raise ConfigError(f"warmup={self.warmup} is invalid: give at least 1 (it also probes the server)")
        if self.tokenizer is not None and not (self.tokenizer / "tokenizer.json").is_file():
            raise ConfigError(f"--tokenizer {self.tokenizer} has no tokenizer.json: give a saved fast tokenizer's dir")

    def requests_for(self, concurrency: int) -> int | None:
        """Requests to send at one level: ``requests``, else ``max(16, 4 * concurrency)``; None when timed."""
        if self.duration_s is not None:
            return None
        return self.requests if self.requests is not None else max(16, 4 * concurrency)

    @property
    def mode(self) -> str:
        """``closed-loop`` or ``open-loop <arrival> <rate>/s``."""
        return "closed-loop" if self.rate is None else f"open-loop {self.arrival} {self.rate:g}/s"

    def describe(self) -> dict[str, Any]:
        """The settings as plain JSON-able values."""
        return {
            "concurrency": list(self.concurrency),
            "requests": self.requests,
            "duration_s": self.duration_s,
            "prompt_tokens": self.prompt_tokens,
            "max_tokens": self.max_tokens,
            "rate": self.rate,
            "arrival": self.arrival if self.rate is not None else None,
            "mode": self.mode,
            "timeout_s": self.timeout_s,
            "warmup": self.warmup,
            "tokenizer": str(self.tokenizer) if self.tokenizer else None,
            "seed": self.seed,
        }

"""Endpoints of a phase run: ``NAME=URL[@MODEL]`` (``accel run --endpoint``, the TOML ``endpoints`` list).

:func:`parse_endpoint` turns one such text into an :class:`~accelerate_core.contracts.EndpointJob`, checked
as strictly as ``accel endpoint bench`` checks its target (the name by ``accelerate_core.names``, the URL by
:class:`~accelerate_core.endpoint.spec.EndpointTarget`); :func:`served_model_type` is the model column of
its rows. A bad value is one :class:`~accelerate_core.errors.ConfigError` line (exit 2).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from accelerate_core.config import redact_url
from accelerate_core.contracts import EndpointJob
from accelerate_core.endpoint.spec import EndpointTarget
from accelerate_core.errors import ConfigError
from accelerate_core.names import NAME_MAX, check_name, is_name

__all__ = ["SERVED", "parse_endpoint", "parse_endpoints", "served_model_type"]

SERVED: Final = "served"
"""The model column of an endpoint given without ``@MODEL`` (its model is the first the server lists)."""

_FORM: Final = "give NAME=http://HOST:PORT[@MODEL], e.g. local=http://127.0.0.1:8000@gpt2"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def parse_endpoint(text: str, what: str = "--endpoint") -> EndpointJob:
    """One ``NAME=URL[@MODEL]`` as an endpoint job.

    The model is what follows the first ``@`` after the URL's host (``http://h:8000@org/model``); a URL
    with credentials (``user:pass@host``) is refused: the token comes from ``ACCEL_ENDPOINT_TOKEN_<NAME>``.

    Raises:
        ConfigError: no ``=``, an invalid name, an invalid URL, or an empty model after ``@``.
    """
    name, sep, rest = text.strip().partition("=")
    if not sep:
        raise ConfigError(f"{what} {_shown(text)} has no '=': {_FORM}")
    check_name(name, f"{what} name")
    url, model = _split_model(rest.strip(), what)
    target = EndpointTarget(name=name, url=url, model=model or SERVED)  # validates the URL, never shows a password
    return EndpointJob(name=target.name, url=target.url, model=model)


def parse_endpoints(texts: Iterable[str], what: str = "--endpoint") -> tuple[EndpointJob, ...]:
    """Several endpoints; two with the same name are refused (their rows would be one ``api:NAME``)."""
    jobs = tuple(parse_endpoint(t, what) for t in texts)
    names = [j.name for j in jobs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{what} names {', '.join(twice)} more than once: give each endpoint its own NAME")
    return jobs


def served_model_type(job: EndpointJob) -> str:
    """The model column of an endpoint's rows: the model's last path part as a valid name, else ``served``."""
    last = job.model.rstrip("/").rsplit("/", 1)[-1]
    candidate = _UNSAFE.sub("-", last).replace("..", ".").lstrip("._-")[:NAME_MAX]
    return candidate if is_name(candidate) else SERVED


def _split_model(rest: str, what: str) -> tuple[str, str]:
    scheme, sep, tail = rest.partition("://")
    if not sep:
        raise ConfigError(f"{what} URL {redact_url(rest)!r} has no scheme: {_FORM}")
    host, at, model = tail.partition("@")
    if at and not model.strip():
        raise ConfigError(f"{what} {redact_url(rest)!r} has an empty model after '@': {_FORM}")
    if at and _looks_like_host(model):
        raise ConfigError(f"{what} URL carries credentials (user:pass@host): {_FORM}; the token goes in the env")
    return f"{scheme}://{host}", model.strip()


def _looks_like_host(text: str) -> bool:
    """``host:port...``: what follows the ``@`` of ``user:pass@host:port`` (a model has no port)."""
    head = text.partition("/")[0]
    return bool(re.fullmatch(r"[A-Za-z0-9.-]+:\d+", head))


def _shown(value: str) -> str:
    text = repr(redact_url(value))
    return text if len(text) <= 80 else text[:77] + "..."

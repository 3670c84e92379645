"""The HTTP plumbing every handler shares: access checks, security headers, reads off the IO loop, errors.

A handler never touches DuckDB on the IO loop: :meth:`BaseHandler.respond` makes the whole answer (query,
JSON or HTML) on a fresh read-only view in the service's thread pool, within the read budget, or takes it
from the answer cache; so a slow query holds one pool thread, never the loop, and at most
``read_threads`` queries run at once. Errors of ours become one-line answers with a status
(400 bad input, 404 unknown run or model, 503 store unavailable); anything else is logged and answered
500 without a traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import tornado.ioloop
import tornado.web

from accelerate_core.errors import AccelerateError, ConfigError, ModelError, StoreError, UnknownRunError
from accelerate_core.service import access
from accelerate_core.service.budget import ReadBudget
from accelerate_core.service.cache import Answer, AnswerCache
from accelerate_core.service.config import ServiceConfig
from accelerate_core.service.host import HostHooks
from accelerate_core.service.source import ReadSource, ReadView, read_view
from accelerate_core.store.export import EXPORT_FORMATS, EXPORT_TABLES, OPTIMUM_TABLE

log = logging.getLogger(__name__)
T = TypeVar("T")

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
"""The Content-Security-Policy of every answer: no script at all, nothing from elsewhere, no framing."""

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
"""Headers set on every answer (the report page widens ``style-src`` by the hash of its own style)."""


@dataclass(frozen=True, slots=True)
class ServiceContext:
    """What every handler reads from: the store, configuration, read pool, cache, read budget, host's hooks."""

    source: ReadSource
    config: ServiceConfig
    pool: ThreadPoolExecutor
    cache: AnswerCache
    budget: ReadBudget
    hooks: HostHooks


class Refused(tornado.web.HTTPError):
    """An answer other than 200 with a one-line message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, log_message=None)
        self.message = message


def _status_of(e: AccelerateError) -> int:
    if isinstance(e, UnknownRunError | ModelError):
        return 404
    if isinstance(e, ConfigError):
        return 400
    if isinstance(e, StoreError):
        return 503
    return 500


def _in_view(source: ReadSource, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    with read_view(source) as view:
        return fn(view, *args, **kwargs)


def _read(ctx: ServiceContext, make: Callable[..., Answer], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Answer:
    return ctx.budget.run(functools.partial(_in_view, ctx.source, make, args, kwargs))


JSON_TYPE = "application/json; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"


def to_json(data: Any) -> bytes:
    """JSON of an answer (times stay unix seconds; JSON has no NaN, so none may slip through)."""
    return json.dumps(data, sort_keys=True, default=str, allow_nan=False).encode()


def as_json(view: ReadView, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Answer:
    """``fn(view, ...)`` as a JSON answer (a maker for :meth:`BaseHandler.respond`)."""
    return Answer(to_json(fn(view, *args, **kwargs)), JSON_TYPE)


class BaseHandler(tornado.web.RequestHandler):
    """GET only (tornado answers 405 to every other method), behind the token when one is configured."""

    SUPPORTED_METHODS = ("GET",)  # type: ignore[assignment]
    CACHED = True
    """Whether answers may be cached per store version (False: they depend on more than the store)."""

    def initialize(self, ctx: ServiceContext) -> None:
        """Keep the shared context (tornado passes it from the route)."""
        self.ctx = ctx

    def set_default_headers(self) -> None:
        """The security headers of every answer."""
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)

    def prepare(self) -> None:
        """Refuse a request without the configured token (401, with a basic-auth challenge)."""
        if not access.authorized(self.request.headers.get("Authorization"), self.ctx.config.token):
            raise Refused(401, "this results service needs a token: send Authorization: Bearer TOKEN")

    async def respond(self, make: Callable[..., Answer], *args: Any, **kwargs: Any) -> None:
        """Finish with ``make(view, *args, **kwargs)``, made in the read pool or taken from the cache.

        The answer is cached by (store version, request URI) when the host gives a version and the handler
        is :attr:`CACHED`; our errors become answers of their own and are never cached.
        """
        compute = functools.partial(self._in_pool, make, args, kwargs)
        version = self.ctx.hooks.version
        if version is None or not self.CACHED:
            answer = await compute()
        else:
            answer = await self.ctx.cache.get((version(), self.request.uri), compute)
        self.set_header("Content-Type", answer.content_type)
        for name, value in answer.headers:
            self.set_header(name, value)
        self.finish(answer.body)

    async def _in_pool(self, make: Callable[..., Answer], args: Any, kwargs: Any) -> Answer:
        loop = tornado.ioloop.IOLoop.current()
        try:
            return await loop.run_in_executor(self.ctx.pool, _read, self.ctx, make, args, kwargs)
        except AccelerateError as e:
            raise Refused(_status_of(e), str(e)) from e

    def parse(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` parsing request input; a ConfigError becomes a 400 answer."""
        try:
            return fn(*args)
        except ConfigError as e:
            raise Refused(400, str(e)) from e

    def arg_list(self, name: str) -> list[str]:
        """Every value of query argument ``name``."""
        return self.get_query_arguments(name)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """One line, never a traceback: ours as given, anything unexpected as a generic 500."""
        error = kwargs.get("exc_info", (None, None, None))[1]
        if status_code == 401:  # set here: tornado clears the headers before an error answer
            self.set_header("WWW-Authenticate", access.challenge())
        message = error.message if isinstance(error, Refused) else self._reason_for(status_code, error)
        self.render_error(status_code, message)

    def _reason_for(self, status_code: int, error: BaseException | None) -> str:
        if status_code >= 500 and error is not None and not isinstance(error, tornado.web.HTTPError):
            return "the results service failed on this request: see its log"
        return self._reason

    def render_error(self, status_code: int, message: str) -> None:
        """Write the error body (JSON here; pages override it with HTML)."""
        self.send_json({"error": message, "status": status_code})

    def send_json(self, data: Any) -> None:
        """Finish with small ``data`` as JSON, encoded here (answers read from the store use :meth:`respond`)."""
        self.set_header("Content-Type", JSON_TYPE)
        self.finish(to_json(data))


class NotFound(BaseHandler):
    """Every path no route matches."""

    def prepare(self) -> None:
        """Answer 404 (after the token check, so paths are not probed without it)."""
        super().prepare()
        raise Refused(404, f"no such page or endpoint: {self.request.path} (see /api)")


Route = tuple[str, type[BaseHandler], str]
"""(path, handler, what it answers): the API's and the pages' route tables; ``{run}`` etc. name a segment."""

_SEGMENTS = {
    "{fmt}": "(md|html|json)",
    "{table}": f"({'|'.join((*EXPORT_TABLES, OPTIMUM_TABLE))})",
    "{export}": f"({'|'.join(EXPORT_FORMATS)})",
}
"""Placeholders matching something narrower than one path segment."""


def pattern(path: str) -> str:
    """The tornado pattern of a route path: ``.`` literal, ``{name}`` one path segment (passed to ``get``)."""
    out = re.escape(path).replace(r"\{", "{").replace(r"\}", "}")
    for name in re.findall(r"\{\w+\}", path):
        out = out.replace(name, _SEGMENTS.get(name, "([^/]+)"))
    return out + "$"

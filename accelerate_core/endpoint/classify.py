"""Why a request failed, as one of a few error classes (every failed request gets exactly one).

The classes, from the client's point of view:

=====================  ==========================================================================
``connection-refused``  nothing listens on the port (the server is down)
``connect-error``       any other failure to connect (unknown host, unreachable network, TLS)
``timeout``             the request did not finish within its deadline (slow server, hung stream)
``http-<status>``       the server answered with an HTTP error status (``http-500``, ``http-429``, ...)
``connection-lost``     the connection broke mid-response (server killed or crashed mid-stream)
``truncated-stream``    the stream ended cleanly but before a ``finish_reason`` or ``[DONE]``
``malformed-stream``    the response is not an OpenAI chat-completion stream (not SSE, not JSON, ...)
``stream-error``        the server reported an error inside the stream (``{"error": ...}``)
``client-error``        a bug on our side; the message names the exception
=====================  ==========================================================================
"""

from __future__ import annotations

import errno
from typing import Final

import httpx2

__all__ = [
    "ERR_CLIENT",
    "ERR_CONNECT",
    "ERR_CONNECTION_LOST",
    "ERR_MALFORMED",
    "ERR_REFUSED",
    "ERR_STREAM_ERROR",
    "ERR_TIMEOUT",
    "ERR_TRUNCATED",
    "MalformedStreamError",
    "StreamErrorEvent",
    "TruncatedStreamError",
    "classify",
    "describe",
    "http_class",
    "one_line",
]

ERR_REFUSED: Final = "connection-refused"
ERR_CONNECT: Final = "connect-error"
ERR_TIMEOUT: Final = "timeout"
ERR_CONNECTION_LOST: Final = "connection-lost"
ERR_TRUNCATED: Final = "truncated-stream"
ERR_MALFORMED: Final = "malformed-stream"
ERR_STREAM_ERROR: Final = "stream-error"
ERR_CLIENT: Final = "client-error"

_MESSAGE_CHARS = 200
"""Error messages are cut to this many characters (a server may answer with a whole HTML page)."""


class MalformedStreamError(Exception):
    """Raised inside the client when a stream event is not a chat-completion chunk."""


class StreamErrorEvent(Exception):
    """Raised inside the client when the server sends an error object inside the stream."""


class TruncatedStreamError(Exception):
    """Raised inside the client when a stream ends before a ``finish_reason`` or ``[DONE]``."""


def http_class(status: int) -> str:
    """The error class of an HTTP error status: ``http-<status>``."""
    return f"http-{status}"


def classify(exc: BaseException) -> str:
    """The error class of an exception raised while sending a request or reading its stream."""
    if isinstance(exc, TimeoutError | httpx2.TimeoutException):
        return ERR_TIMEOUT
    if isinstance(exc, httpx2.ConnectError):
        return ERR_REFUSED if _refused(exc) else ERR_CONNECT
    if isinstance(exc, MalformedStreamError | httpx2.DecodingError):
        return ERR_MALFORMED
    if isinstance(exc, StreamErrorEvent):
        return ERR_STREAM_ERROR
    if isinstance(exc, TruncatedStreamError):
        return ERR_TRUNCATED
    if isinstance(exc, httpx2.HTTPStatusError):
        return http_class(exc.response.status_code)
    if isinstance(exc, httpx2.RemoteProtocolError | httpx2.ReadError | httpx2.WriteError | httpx2.CloseError):
        return ERR_CONNECTION_LOST
    if isinstance(exc, httpx2.UnsupportedProtocol | httpx2.ProxyError):
        return ERR_CONNECT
    return ERR_CLIENT


def _refused(exc: BaseException) -> bool:
    """True when a ConnectionRefusedError (ECONNREFUSED) is anywhere in the exception's chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError) or getattr(current, "errno", None) == errno.ECONNREFUSED:
            return True
        current = current.__cause__ or current.__context__
    return False


def describe(exc: BaseException) -> str:
    """``Type: message`` of an exception (``Type`` alone when it has no message)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def one_line(text: str) -> str:
    """``text`` on a single line, cut to 200 characters (mask secrets *before* cutting)."""
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 3] + "..."

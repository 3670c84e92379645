"""Who may read: loopback binds need no secret; any other bind needs a token, checked on every request.

A request carries the token as ``Authorization: Bearer <token>`` (scripts) or as the password of HTTP
basic auth with any user name (browsers ask for it themselves). Tokens are compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress

LOOPBACK_NAMES = ("localhost",)
"""Host names taken as loopback without resolving them (anything else must be a loopback IP literal)."""
REALM = "accel results"
"""The basic-auth realm a browser shows when it asks for the token."""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (``127.0.0.0/8``, ``::1``); False for any other name."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def presented_token(authorization: str | None) -> str | None:
    """The token in an ``Authorization`` header (bearer, or the password of basic auth), else None."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _user, sep, password = decoded.partition(":")
    return password if sep else None


def authorized(authorization: str | None, token: str | None) -> bool:
    """True when no token is configured, or the header presents exactly that token."""
    if token is None:
        return True
    given = presented_token(authorization)
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def challenge() -> str:
    """The ``WWW-Authenticate`` value of a 401 (browsers then prompt for the user and token)."""
    return f'Basic realm="{REALM}", charset="UTF-8"'

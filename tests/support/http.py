"""A real HTTP GET against a server a test started (Flower, the service), with optional basic auth."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request


def get(url: str, *, auth: tuple[str, str] | None = None, timeout_s: float = 20) -> tuple[int, bytes]:
    """``(status, body)`` of ``GET url``; an HTTP error status is returned, not raised (its body empty)."""
    request = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(":".join(auth).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, b""

"""``ResultsClient``: the CLI's side of the results service (stdlib HTTP only: no tornado, no duckdb).

The service answers errors as one JSON line with a status; the client turns them back into ours, so a
command reading through the service fails exactly as it would reading the file: 404 is
:class:`~accelerate_core.errors.UnknownRunError`, 400 a :class:`~accelerate_core.errors.ConfigError`, 401 a
missing or wrong token (a ConfigError naming ``ACCEL_SERVE_TOKEN``), anything else, and a service that
cannot be reached, a :class:`~accelerate_core.errors.StoreError` naming the URL.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from accelerate_core.errors import ConfigError, StoreError, UnknownRunError

TIMEOUT_S = 120.0
"""How long one request may take (a big run's report is built on demand), in seconds."""


class ResultsClient:
    """Reads from the results service at ``url`` (``Authorization: Bearer token`` when a token is given).

    Args:
        url: the service's base URL (``http://host:port``, or a proxy's URL with a path).
        token: the service's token (``serve_token``); None: none sent.
        timeout_s: the limit of one request.
    """

    def __init__(self, url: str, token: str | None = None, *, timeout_s: float = TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"ResultsClient({self.url!r})"

    def page_url(self, run_id: str) -> str:
        """The web page of a run."""
        return f"{self.url}/runs/{urllib.parse.quote(run_id, safe='')}"

    def json(self, path: str, **params: str | None) -> Any:
        """``GET path?params`` decoded from JSON (parameters that are None are left out)."""
        body = self.content(path, **params)
        try:
            return json.loads(body)
        except ValueError as e:
            raise StoreError(f"the results service at {self.url} answered {path} with no JSON ({e})") from e

    def text(self, path: str, **params: str | None) -> str:
        """``GET path?params`` as UTF-8 text."""
        return self.content(path, **params).decode("utf-8")

    def content(self, path: str, **params: str | None) -> bytes:
        """``GET path?params`` as bytes.

        Raises:
            UnknownRunError: 404 (no such run, model or endpoint).
            ConfigError: 400 (bad input), or 401 (no token or a wrong one).
            StoreError: the service cannot be reached, or failed.
        """
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        request = urllib.request.Request(f"{self.url}{path}{'?' + query if query else ''}")
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as e:
            raise self._refused(e.code, e.read()) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise StoreError(
                f"cannot reach the results service at {self.url} ({reason}): is the writer running? "
                "(accel status shows it; ACCEL_RESULTS_URL overrides where it is)"
            ) from e

    def _refused(self, status: int, body: bytes) -> Exception:
        try:
            message = str(json.loads(body)["error"])
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {status}"
        if status == 401:
            return ConfigError(f"the results service at {self.url} asks for a token: set ACCEL_SERVE_TOKEN to it")
        if status == 404:
            return UnknownRunError(message)
        if status == 400:
            return ConfigError(message)
        return StoreError(f"the results service at {self.url} failed: {message}")

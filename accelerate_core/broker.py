"""The broker (Redis) as every fleet process meets it: its URL, one checked connection, one-line errors, and the
run status snapshots the writer publishes there (``acc:status:<run id>``) for ``accel status`` to read.

The scheduler, the workers and the writer all connect through here, so a wrong URL, a missing or wrong
password and an unreachable server read the same everywhere, in one line that names the broker without its
password and says what to do. ``redis`` is imported only when a connection is made: importing this module
costs nothing on a machine without a broker.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from accelerate_core import wire
from accelerate_core.constants import STATUS_KEY_PREFIX, STATUS_TTL_S
from accelerate_core.contracts import StatusSnapshot
from accelerate_core.errors import BrokerError, ConfigError, ContractError

if TYPE_CHECKING:
    import redis

    from accelerate_core.config import Settings

__all__ = [
    "CHECK_TIMEOUT_S",
    "broker_error",
    "check",
    "connect",
    "location",
    "publish_status",
    "read_status",
    "require_url",
]

logger = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 3.0
"""How long a connection check waits for Redis to answer, in seconds."""

_NEEDS_PASSWORD = ("noauth", "authentication required", "hello must be called")
_WRONG_PASSWORD = ("wrongpass", "invalid password", "invalid username-password")


def require_url(settings: Settings) -> str:
    """The broker URL of ``settings``, or a one-line ConfigError saying how to set it."""
    if not settings.broker_url:
        raise ConfigError(
            "no broker configured: set ACCEL_BROKER_URL=redis://HOST:6379/0 (or accel run --broker URL, "
            "or broker_url in accel.toml)"
        )
    return settings.broker_url


def location(url: str) -> str:
    """``scheme://host:port`` of a broker URL: what a message may show of it (never the password)."""
    parts = urlsplit(url)
    try:
        port = parts.port or 6379
    except ValueError:
        port = 6379
    return f"{parts.scheme or 'redis'}://{parts.hostname or 'localhost'}:{port}"


def broker_error(url: str, exc: BaseException) -> BrokerError:
    """Translate a redis/kombu failure into one line naming the broker (never its password) and what to do."""
    where = location(url)
    text = " ".join(_messages(exc)).lower()
    if any(s in text for s in _WRONG_PASSWORD):
        return BrokerError(f"the broker at {where} refused the password: fix the password in ACCEL_BROKER_URL")
    if any(s in text for s in _NEEDS_PASSWORD):
        return BrokerError(
            f"the broker at {where} requires a password: put it in ACCEL_BROKER_URL as "
            f"redis://:PASSWORD@{where.split('://', 1)[1]}/0"
        )
    reason = getattr(exc, "strerror", None) or str(exc).split("\n")[0] or type(exc).__name__
    if "refused" in reason.lower():
        reason = "connection refused"
    return BrokerError(f"cannot reach redis at {where} ({reason}): start redis-server or fix ACCEL_BROKER_URL")


def _messages(exc: BaseException) -> list[str]:
    """The messages of ``exc`` and its causes (kombu wraps redis's errors)."""
    out: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(out) < 8:
        out.append(f"{type(current).__name__} {current}")
        current = current.__cause__ or current.__context__
    return out


def connect(url: str, *, timeout_s: float = CHECK_TIMEOUT_S, reply_timeout_s: float | None = None) -> redis.Redis:
    """A redis-py client of the broker, checked with one PING.

    Args:
        url: the broker URL.
        timeout_s: bounds the connection (and the PING).
        reply_timeout_s: bounds each later reply (default: ``timeout_s``); a writer blocking on the queue
            needs longer than its block time.

    Raises:
        BrokerError: the broker does not answer or refuses the credentials (one line).
    """
    import redis

    client = redis.Redis.from_url(
        url, socket_connect_timeout=timeout_s, socket_timeout=max(timeout_s, reply_timeout_s or timeout_s)
    )
    try:
        client.ping()
    except (redis.RedisError, OSError) as e:
        client.close()
        raise broker_error(url, e) from e
    return client


def check(url: str, timeout_s: float = CHECK_TIMEOUT_S) -> None:
    """Raise :class:`BrokerError` (one line) unless the broker answers a PING."""
    connect(url, timeout_s=timeout_s).close()


def publish_status(client: redis.Redis, snapshot: StatusSnapshot) -> None:
    """Store ``snapshot`` at ``acc:status:<run id>`` (the writer, after each batch).

    Raises:
        redis.RedisError: the broker refused it (the writer logs it and carries on).
    """
    text = json.dumps(wire.encode(snapshot), sort_keys=True)
    client.set(STATUS_KEY_PREFIX + snapshot.run_id, text, ex=STATUS_TTL_S)


def read_status(client: redis.Redis, run_id: str) -> StatusSnapshot | None:
    """The writer's latest snapshot of ``run_id`` (None before its first, or when it is unreadable)."""
    raw = client.get(STATUS_KEY_PREFIX + run_id)
    if raw is None:
        return None
    try:
        return wire.decode(StatusSnapshot, json.loads(raw))  # type: ignore[arg-type]
    except (ValueError, ContractError) as e:
        logger.warning("the status snapshot of run %s in redis is unreadable: %s", run_id, e)
        return None

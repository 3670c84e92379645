"""The broker (Redis) as every fleet process meets it: its URL, one checked connection, one-line errors, and the
run status snapshots the writer publishes there (``acc:status:<run id>``) for ``accel status`` to read.

The scheduler, the workers and the writer all connect through here, so a wrong URL, a missing or wrong
password and an unreachable server read the same everywhere, in one line that names the broker without its
password and says what to do. ``redis`` is imported only when a connection is made: importing this module
costs nothing on a machine without a broker.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final
from urllib.parse import unquote, urlsplit

from accelerate_core import wire
from accelerate_core.constants import STATUS_KEY_PREFIX, STATUS_TTL_S
from accelerate_core.contracts import StatusSnapshot
from accelerate_core.errors import BrokerError, ConfigError, ContractError

if TYPE_CHECKING:
    import redis

    from accelerate_core.config import Settings

__all__ = [
    "CHECK_TIMEOUT_S",
    "DROPPING_POLICIES",
    "PLACEHOLDER_PASSWORDS",
    "Durability",
    "broker_error",
    "check",
    "connect",
    "durability",
    "is_full",
    "is_loopback",
    "is_transient",
    "location",
    "password_problem",
    "publish_status",
    "read_status",
    "require_url",
    "sanity",
    "verify",
]

logger = logging.getLogger(__name__)

PLACEHOLDER_PASSWORDS: Final = frozenset({"...", "password", "secret", "redis", "change-me", "changeme"})
"""Broker passwords refused wherever they are set: the examples' placeholders and the usual guesses."""

CHECK_TIMEOUT_S = 3.0
"""How long a connection check waits for Redis to answer, in seconds."""

DROPPING_POLICIES = ("allkeys-", "volatile-")
"""``maxmemory-policy`` prefixes that evict keys when Redis is full: on a broker that means dropping queued jobs,
their delivery counters or the writer's lock without a word, so every fleet process refuses to start on one."""

_NEEDS_PASSWORD = ("noauth", "authentication required", "hello must be called")
_WRONG_PASSWORD = ("wrongpass", "invalid password", "invalid username-password")


def require_url(settings: Settings) -> str:
    """The broker URL of ``settings``, checked for a usable password, or a one-line ConfigError saying what to do.

    Every fleet process starts through here, so none of them talks to a broker that other machines can reach
    without a password, nor with the placeholder password of the examples.
    """
    if not settings.broker_url:
        raise ConfigError(
            "no broker configured: set ACCEL_BROKER_URL=redis://HOST:6379/0 (or accel run --broker URL, "
            "or broker_url in accel.toml)"
        )
    problem = password_problem(settings.broker_url)
    if problem:
        raise ConfigError(problem)
    return settings.broker_url


def password_problem(url: str) -> str | None:
    """What is wrong with the password of a (valid) broker URL, or None. Never quotes the password.

    A broker on loopback may go without one (a Redis of this machine only); any other needs one, and never
    a placeholder (:data:`PLACEHOLDER_PASSWORDS`, anything starting ``change-me``).
    """
    parts = urlsplit(url)
    password = unquote(parts.password) if parts.password else ""
    if not password:
        if is_loopback(parts.hostname or ""):
            return None
        return (
            f"the broker at {location(url)} is not on loopback and ACCEL_BROKER_PASSWORD is not set: "
            "every machine that reaches it could run the fleet's queues; start Redis with --requirepass and "
            "set the same in ACCEL_BROKER_PASSWORD (openssl rand -hex 24)"
        )
    if password.lower() in PLACEHOLDER_PASSWORDS or password.lower().startswith(("change-me", "changeme")):
        return (
            "ACCEL_BROKER_PASSWORD is the examples' placeholder: set your own, the same for Redis and every "
            "fleet process (openssl rand -hex 24)"
        )
    return None


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    if is_full(exc):
        return BrokerError(
            f"the broker at {where} is full (maxmemory, noeviction) and refuses new work: start `accel writer` "
            "so it drains the results queue, or raise maxmemory"
        )
    reason = getattr(exc, "strerror", None) or str(exc).split("\n")[0] or type(exc).__name__
    if "refused" in reason.lower():
        reason = "connection refused"
    return BrokerError(f"cannot reach redis at {where} ({reason}): start redis-server or fix ACCEL_BROKER_URL")


def _messages(exc: BaseException) -> list[str]:
    """The messages of ``exc`` and its causes (kombu wraps redis's errors)."""
    return [f"{type(e).__name__} {e}" for e in _chain(exc)]


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes (kombu wraps redis's errors; redis-py's transaction errors carry the command's)."""
    out: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(out) < 8:
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


def is_full(exc: BaseException) -> bool:
    """True when ``exc`` is the broker refusing a write because it is at ``maxmemory`` (``noeviction``)."""
    import redis

    return any(isinstance(e, redis.OutOfMemoryError) or "used memory > 'maxmemory'" in str(e) for e in _chain(exc))


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` says the broker is full, restarting or unreachable for now: worth trying again later."""
    import redis

    gone = (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError)
    return is_full(exc) or any(isinstance(e, gone) for e in _chain(exc))


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


@dataclass(frozen=True, slots=True)
class Durability:
    """What a broker does with its data when full or restarted, as far as it lets a client read it.

    Attributes:
        policy: its ``maxmemory-policy`` (None: not readable).
        aof: append-only file on (None: not readable).
        rdb_save: RDB snapshot rules set (None: ``CONFIG GET`` refused, e.g. by an ACL).
    """

    policy: str | None
    aof: bool | None
    rdb_save: bool | None


def durability(client: redis.Redis) -> Durability:
    """Read ``client``'s eviction policy and persistence (``INFO``, and ``CONFIG GET save`` where allowed)."""
    import redis as redis_lib

    info = client.info("memory") | client.info("persistence")
    policy = info.get("maxmemory_policy")
    aof = info.get("aof_enabled")
    try:
        save = client.config_get("save").get("save")
    except redis_lib.ResponseError:  # CONFIG is often renamed or denied by an ACL
        save = None
    return Durability(
        policy=str(policy) if policy is not None else None,
        aof=bool(int(aof)) if aof is not None else None,
        rdb_save=bool(str(save).strip()) if save is not None else None,
    )


def sanity(url: str, found: Durability) -> str | None:
    """Judge a broker's durability: raise on a policy that drops jobs; return a warning line, or None.

    Raises:
        ConfigError: its ``maxmemory-policy`` evicts keys (one line naming the broker and the fix).
    """
    where = location(url)
    if found.policy is not None and found.policy.startswith(DROPPING_POLICIES):
        raise ConfigError(
            f"the broker at {where} has maxmemory-policy {found.policy}, which silently drops queued jobs when "
            "it is full: set maxmemory-policy noeviction (deploy/redis.conf)"
        )
    if found.aof is False and found.rdb_save is False:
        return (
            f"the broker at {where} keeps nothing on disk (appendonly no, no save rules): a restart loses every "
            "queued job; set appendonly yes (deploy/redis.conf), or finish a run with `accel run --resume RUN`"
        )
    return None


def verify(url: str, timeout_s: float = CHECK_TIMEOUT_S) -> None:
    """The start-up check of every fleet process: the broker answers, does not drop jobs, and keeps them.

    Logs one warning line when it keeps nothing on disk.

    Raises:
        BrokerError: the broker does not answer or refuses the credentials.
        ConfigError: its eviction policy drops keys.
    """
    import redis as redis_lib

    client = connect(url, timeout_s=timeout_s)
    try:
        found = durability(client)
    except (redis_lib.RedisError, OSError) as e:
        raise broker_error(url, e) from e
    finally:
        client.close()
    warning = sanity(url, found)
    if warning is not None:
        logger.warning("%s", warning)

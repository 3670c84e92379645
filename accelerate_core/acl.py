"""The broker's Redis ACL users: one per role of the fleet, each allowed only the commands it was seen to use.

Redis 7.0 takes a user from one place only (a ``user`` line in ``redis.conf`` and one from the command line
clash: "Duplicate user found"), and a ``user default`` line in ``redis.conf`` wipes what ``--requirepass``
set. So the users live in an ACL file written at start from the env file's passwords
(``python -m accelerate_core.acl PATH``, mode 0600) and Redis reads it with ``--aclfile PATH``. The file
holds SHA-256 digests of the passwords, never the passwords.

Each process then logs in as its role: ``ACCEL_BROKER_URL=redis://worker@HOST:6379/0`` with that role's
password in ``ACCEL_BROKER_PASSWORD``. The command lists were measured with ``MONITOR`` on a real fleet
(a run through a worker and the writer, ``accel status/workers/runs``, Flower's pages) and completed from
kombu's Redis transport (its restore and mutex paths). Every role is denied ``@admin`` and ``@dangerous``
(``CONFIG``, ``FLUSHALL``, ``DEBUG``, ``SHUTDOWN``, ``MODULE``, ``KEYS``, ...), except ``INFO``, which the
start-up check reads; its ``CONFIG GET save`` is refused (it would also show the passwords) and the check
goes on without it, as it does where ``CONFIG`` is renamed.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from accelerate_core.broker import PLACEHOLDER_PASSWORDS

ROLES: Final = ("scheduler", "worker", "writer", "flower")
"""The fleet's broker users: ``accel run`` and the CLI, the workers, the results writer, Flower."""

ADMIN_ENV: Final = "ACCEL_BROKER_PASSWORD"
"""The ``default`` user's (the operator's) password; without it the ``default`` user is off."""

_CONNECTION: Final = ("hello", "auth", "ping", "select", "quit", "client|setname", "client|getname", "client|id")
_CELERY: Final = (
    # kombu's Redis transport: queues, bindings, fanout (pidbox, events), acks and their restore
    *("lpush", "rpush", "rpop", "brpop", "llen", "del", "exists", "sadd", "srem", "smembers"),
    *("publish", "subscribe", "unsubscribe", "psubscribe", "punsubscribe"),
    *("multi", "exec", "discard", "watch", "unwatch"),
    *("hset", "hget", "hdel", "zadd", "zrem", "zrange", "zrangebyscore", "zrevrangebyscore"),
    *("set", "get", "pexpire", "expire", "time", "eval", "evalsha", "script|load", "script|exists"),
)
_FLOWER_DENIED: Final = ("lpush", "rpush", "rpop")
"""Flower only broadcasts and reads replies: it may not put or take a message of a queue."""

COMMANDS: Final[Mapping[str, tuple[str, ...]]] = {
    "scheduler": (*_CONNECTION, *_CELERY, "info", "lrange"),
    "worker": (*_CONNECTION, *_CELERY, "info"),
    "writer": (
        *(*_CONNECTION, *_CELERY, "info", "incr", "pttl"),
        *("brpoplpush", "rpoplpush", "lindex", "lrange", "lrem", "ltrim", "hvals"),
    ),
    "flower": (*_CONNECTION, *(c for c in _CELERY if c not in _FLOWER_DENIED), "info"),
}
"""What each role may run (all keys, all channels: Celery's reply queues are named by random ids)."""


def role_env(role: str) -> str:
    """The env-file variable holding ``role``'s password: ``ACCEL_BROKER_PASSWORD_WORKER``."""
    return f"{ADMIN_ENV}_{role.upper()}"


def _digest(password: str) -> str:
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def acl_file(passwords: Mapping[str, str], admin_password: str | None) -> str:
    """The ACL file's text: the ``default`` user (the admin password, or off) and one user per role."""
    if admin_password:
        lines = [f"user default on {_digest(admin_password)} ~* &* +@all"]
    else:
        lines = ["user default off nopass resetkeys resetchannels -@all"]
    for role in ROLES:
        allowed = " ".join(f"+{c}" for c in COMMANDS[role])
        lines.append(f"user {role} on {_digest(passwords[role])} ~* &* -@all {allowed}")
    return "\n".join(lines) + "\n"


def _problem(name: str, value: str | None) -> str | None:
    if not value:
        return f"{name} is not set: give each role its own password (openssl rand -hex 24)"
    low = value.lower()
    if low in PLACEHOLDER_PASSWORDS or low.startswith(("change-me", "changeme")):
        return f"{name} is the examples' placeholder: set your own (openssl rand -hex 24)"
    if any(c.isspace() for c in value):
        return f"{name} holds a space: use letters and digits (openssl rand -hex 24)"
    return None


def write(path: Path, environ: Mapping[str, str]) -> None:
    """Write the ACL file for the passwords in ``environ`` to ``path`` (0600, replaced atomically).

    Raises:
        ValueError: a role's password is missing, a placeholder or holds a space (one line, never quoting it).
    """
    passwords = {role: environ.get(role_env(role), "") for role in ROLES}
    for role, value in passwords.items():
        problem = _problem(role_env(role), value)
        if problem:
            raise ValueError(problem)
    admin = environ.get(ADMIN_ENV) or None
    if admin is not None and (problem := _problem(ADMIN_ENV, admin)):
        raise ValueError(problem)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(acl_file(passwords, admin))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """``python -m accelerate_core.acl PATH``: write the broker's ACL file from the environment; 2 on bad input."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m accelerate_core.acl PATH  (writes the broker's ACL file, mode 0600)", file=sys.stderr)
        return 2
    try:
        write(Path(args[0]), os.environ)
    except (ValueError, OSError) as e:
        print(f"accel broker acl: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Typed, frozen, validated settings; the only module that reads ``os.environ`` for configuration.

Sources, later ones winning: built-in defaults < a TOML file (``--config``, ``ACCEL_CONFIG`` or
``./accel.toml``) < ``ACCEL_*`` environment variables. Every value is validated when
:class:`Settings` is constructed; a bad one raises :class:`~accelerate_core.errors.ConfigError` whose
message is one line naming the setting and what to fix. Passwords inside URLs are never printed:
use :func:`redact_url` or :meth:`Settings.describe`.

TOML layout (every key optional)::

    broker_url = "redis://127.0.0.1:6379/0"
    results_db = "accel-data/results.duckdb"
    templates_db = "accel-data/templates.duckdb"
    reports_dir = "reports"
    redelivery_cap = 3
    mem_cap_mb = 6144
    concurrency = 2
    flower_user = "admin"
    flower_password = "secret"
    flower_port = 5555

    [time_limits.test]
    soft_s = 120
    hard_s = 180

    [bench]
    batch_sizes = [1]
    seq_lens = [16]
    warmup = 2
    min_iters = 5
    min_duration_s = 0.2
    max_duration_s = 5.0
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from accelerate_core.constants import ENV_PREFIX, JOB_KIND_DRY, JOB_KIND_TEST, QUEUE_PREFIX, RESULTS_QUEUE
from accelerate_core.errors import ConfigError

_BROKER_SCHEMES = ("redis", "rediss")
DEFAULT_CONFIG_FILE = "accel.toml"
"""Read from the working directory when neither ``--config`` nor ``ACCEL_CONFIG`` names a file."""


def redact_url(url: str | None) -> str:
    """Return ``url`` with any password replaced by ``***`` (safe to print or log)."""
    if not url:
        return "(none)"
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


@dataclass(frozen=True, slots=True)
class TimeLimit:
    """Soft and hard wall-clock limits of one job kind, in seconds (soft < hard)."""

    soft_s: float
    hard_s: float

    def __post_init__(self) -> None:
        if not 0 < self.soft_s < self.hard_s:
            raise ConfigError(
                f"time limit soft_s={self.soft_s} hard_s={self.hard_s} is invalid: need 0 < soft_s < hard_s"
            )


def _default_time_limits() -> dict[str, TimeLimit]:
    return {JOB_KIND_TEST: TimeLimit(120.0, 180.0), JOB_KIND_DRY: TimeLimit(10.0, 20.0)}


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """Benchmark defaults: shapes and the latency loop's stopping rule.

    The loop runs ``warmup`` untimed calls, then timed calls until both ``min_iters`` calls and
    ``min_duration_s`` seconds are reached, stopping early at ``max_duration_s``.
    """

    batch_sizes: tuple[int, ...] = (1,)
    seq_lens: tuple[int, ...] = (16,)
    image_size: int | None = None
    warmup: int = 2
    min_iters: int = 5
    min_duration_s: float = 0.2
    max_duration_s: float = 5.0
    new_tokens: int = 4

    def __post_init__(self) -> None:
        for name in ("batch_sizes", "seq_lens"):
            values = getattr(self, name)
            if not values or any(not isinstance(v, int) or v < 1 for v in values):
                raise ConfigError(f"bench.{name}={values!r} is invalid: give positive integers, e.g. [1, 4]")
        if self.warmup < 0 or self.min_iters < 1 or self.new_tokens < 1:
            raise ConfigError("bench.warmup must be >= 0, bench.min_iters and bench.new_tokens >= 1")
        if not 0 <= self.min_duration_s <= self.max_duration_s:
            raise ConfigError("bench durations invalid: need 0 <= min_duration_s <= max_duration_s")


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of the fleet. Construct with :meth:`load`; pass it explicitly, never globally."""

    broker_url: str | None = None
    results_db: Path = Path("accel-data/results.duckdb")
    templates_db: Path = Path("accel-data/templates.duckdb")
    reports_dir: Path = Path("reports")
    queue_prefix: str = QUEUE_PREFIX
    results_queue: str = RESULTS_QUEUE
    time_limits: Mapping[str, TimeLimit] = field(default_factory=_default_time_limits)
    redelivery_cap: int = 3
    mem_cap_mb: int = 6144
    concurrency: int = 0
    flower_user: str = "admin"
    flower_password: str | None = None
    flower_port: int = 5555
    bench: BenchConfig = field(default_factory=BenchConfig)

    def __post_init__(self) -> None:
        if self.broker_url is not None:
            scheme = urlsplit(self.broker_url).scheme
            if scheme not in _BROKER_SCHEMES or "//" not in self.broker_url:
                raise ConfigError(
                    f"ACCEL_BROKER_URL={redact_url(self.broker_url)!r} is not a Redis URL: "
                    "use redis://HOST:PORT/DB (or unset it for the embedded default)"
                )
        if self.redelivery_cap < 1:
            raise ConfigError(f"redelivery_cap={self.redelivery_cap} is invalid: it must be >= 1")
        if self.mem_cap_mb < 64:
            raise ConfigError(f"mem_cap_mb={self.mem_cap_mb} is invalid: give at least 64 (MiB)")
        if self.concurrency < 0:
            raise ConfigError(f"concurrency={self.concurrency} is invalid: 0 means one per core, else >= 1")
        if not 0 < self.flower_port < 65536:
            raise ConfigError(f"flower_port={self.flower_port} is invalid: give a TCP port 1-65535")
        for kind in (JOB_KIND_TEST, JOB_KIND_DRY):
            if kind not in self.time_limits:
                raise ConfigError(f"time_limits has no entry for job kind {kind!r}: add [time_limits.{kind}]")

    def __repr__(self) -> str:
        return f"Settings({self.describe()!r})"

    def time_limit(self, kind: str) -> TimeLimit:
        """Return the time limits of job ``kind``."""
        try:
            return self.time_limits[kind]
        except KeyError as e:
            raise ConfigError(f"unknown job kind {kind!r}: known kinds are {sorted(self.time_limits)}") from e

    @property
    def longest_hard_limit_s(self) -> float:
        """The longest hard time limit of any job kind (the broker's visibility timeout exceeds it)."""
        return max(t.hard_s for t in self.time_limits.values())

    def queue_for(self, hardware: str) -> str:
        """Return the Celery queue name of a hardware kind."""
        return f"{self.queue_prefix}{hardware}"

    def effective_concurrency(self) -> int:
        """The number of jobs run at once locally: ``concurrency``, or the number of cores if 0."""
        return self.concurrency or (os.cpu_count() or 1)

    def describe(self) -> dict[str, Any]:
        """A printable view of the settings, with every password redacted."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "broker_url":
                value = redact_url(value)
            elif f.name == "flower_password":
                value = "***" if value else None
            elif isinstance(value, Path):
                value = str(value)
            elif f.name == "time_limits":
                value = {k: {"soft_s": v.soft_s, "hard_s": v.hard_s} for k, v in value.items()}
            elif isinstance(value, BenchConfig):
                value = {bf.name: getattr(value, bf.name) for bf in fields(value)}
            out[f.name] = value
        return out

    def with_overrides(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied (validated again)."""
        return replace(self, **changes)

    @classmethod
    def load(cls, config_file: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from defaults, an optional TOML file and ``ACCEL_*`` variables.

        Args:
            config_file: a TOML file; if None, ``ACCEL_CONFIG`` or ``./accel.toml`` when present.
            environ: the environment to read (defaults to ``os.environ``; tests pass a dict).

        Raises:
            ConfigError: a file is missing or malformed, or a value is invalid.
        """
        env = os.environ if environ is None else environ
        data = _read_toml(_config_path(config_file, env))
        data = _merge_env(data, env)
        return _from_mapping(data)


def _config_path(config_file: str | Path | None, env: Mapping[str, str]) -> Path | None:
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist: check the --config path")
        return path
    named = env.get(f"{ENV_PREFIX}CONFIG")
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"ACCEL_CONFIG={named} does not exist: point it at a TOML file or unset it")
        return path
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def _read_toml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML ({e}): fix that line") from e
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read ({e.strerror}): check its permissions") from e


_SCALAR_ENV: dict[str, type] = {
    "broker_url": str,
    "results_db": str,
    "templates_db": str,
    "reports_dir": str,
    "queue_prefix": str,
    "results_queue": str,
    "redelivery_cap": int,
    "mem_cap_mb": int,
    "concurrency": int,
    "flower_user": str,
    "flower_password": str,
    "flower_port": int,
}


def _merge_env(data: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    merged = dict(data)
    for name in _SCALAR_ENV:
        raw = env.get(f"{ENV_PREFIX}{name.upper()}")
        if raw is not None:
            merged[name] = raw
    limits = {k: dict(v) for k, v in dict(merged.get("time_limits", {})).items()}
    for kind in (JOB_KIND_TEST, JOB_KIND_DRY):
        for bound in ("soft_s", "hard_s"):
            raw = env.get(f"{ENV_PREFIX}{kind.upper()}_{bound.upper()}")
            if raw is not None:
                limits.setdefault(kind, {})[bound] = raw
    if limits:
        merged["time_limits"] = limits
    return merged


def _coerce(name: str, raw: Any, kind: type) -> Any:
    if isinstance(raw, kind) and not (kind is int and isinstance(raw, bool)):
        return raw
    if isinstance(raw, str):
        try:
            return kind(raw)
        except ValueError as e:
            raise ConfigError(f"{name}={raw!r} is not a valid {kind.__name__}: fix ACCEL_{name.upper()}") from e
    if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    raise ConfigError(f"{name}={raw!r} has the wrong type: expected {kind.__name__}")


def _from_mapping(data: Mapping[str, Any]) -> Settings:
    unknown = set(data) - set(_SCALAR_ENV) - {"time_limits", "bench"}
    if unknown:
        raise ConfigError(f"unknown setting(s) {sorted(unknown)}: see accelerate_core/config.py for the keys")
    kwargs: dict[str, Any] = {}
    for name, kind in _SCALAR_ENV.items():
        if name in data:
            value = _coerce(name, data[name], kind)
            if name in ("broker_url", "flower_password") and value == "":
                value = None
            kwargs[name] = Path(value) if name in ("results_db", "templates_db", "reports_dir") else value
    if "time_limits" in data:
        kwargs["time_limits"] = _time_limits(data["time_limits"])
    if "bench" in data:
        kwargs["bench"] = _bench(data["bench"])
    return Settings(**kwargs)


def _time_limits(raw: Any) -> dict[str, TimeLimit]:
    if not isinstance(raw, Mapping):
        raise ConfigError("time_limits must be a table: [time_limits.test] soft_s = 120, hard_s = 180")
    limits = _default_time_limits()
    for kind, spec in raw.items():
        base = limits.get(kind, TimeLimit(120.0, 180.0))
        if not isinstance(spec, Mapping):
            raise ConfigError(f"time_limits.{kind} must be a table with soft_s and hard_s")
        soft = _coerce(f"{kind}_soft_s", spec.get("soft_s", base.soft_s), float)
        hard = _coerce(f"{kind}_hard_s", spec.get("hard_s", base.hard_s), float)
        limits[kind] = TimeLimit(soft, hard)
    return limits


def _bench(raw: Any) -> BenchConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError("bench must be a table: [bench] batch_sizes = [1, 4]")
    known = {f.name: f for f in fields(BenchConfig)}
    unknown = set(raw) - set(known)
    if unknown:
        raise ConfigError(f"unknown bench setting(s) {sorted(unknown)}: known are {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        kwargs[key] = tuple(value) if isinstance(value, list) else value
    try:
        return BenchConfig(**kwargs)
    except TypeError as e:
        raise ConfigError(f"bench settings invalid ({e}): check their types") from e

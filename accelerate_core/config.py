"""Typed, frozen, validated settings; the only module that reads ``os.environ`` for configuration.

Sources, later ones winning: built-in defaults < a TOML file (``--config``, ``ACCEL_CONFIG`` or
``./accel.toml``) < ``ACCEL_*`` environment variables < command-line flags (``--broker``, ``--jobs``).
Every value is checked for its type and range when :class:`Settings` is built; a bad one raises
:class:`~accelerate_core.errors.ConfigError` whose message is one line naming where the value came from
(``accel.toml: concurrency = 'x'``, ``ACCEL_CONCURRENCY='x'`` or ``--jobs 0``) and what to fix. Secrets
inside URLs (the password, a ``?password=`` parameter) are never printed: use :func:`redact_url` or
:meth:`Settings.describe`.

TOML layout (every key optional)::

    broker_url = "redis://127.0.0.1:6379/0"
    broker_password = "secret"        # joined to broker_url; see deploy/accel.env.example
    fleet_key = "64+ hex digits"      # signs and checks jobs (openssl rand -hex 32); see accelerate_core/signing.py
    results_db = "accel-data/results.duckdb"
    templates_db = "accel-data/templates.duckdb"
    reports_dir = "reports"
    redelivery_cap = 3
    writer_lock_ttl_s = 15            # a dead writer's lock keeps a new one waiting this long at most
    reconcile_every_s = 30            # the writer re-sends jobs whose message vanished (at two passes)
    reconcile_resends = 3             # ... this often, then records them lost
    stall_s = 900                     # accel run --wait: no job finished for this long is a stall
    mem_cap_mb = 6144
    concurrency = 2
    flower_user = "admin"
    flower_password = "secret"
    flower_port = 5555
    serve_host = "127.0.0.1"
    serve_port = 8765
    serve_token = "secret"
    results_url = "http://writer-host:8765"   # the results API the CLI reads (default: the writer's advertised one)
    endpoints = ["local=http://127.0.0.1:8000@gpt2"]   # accel run --endpoint; tokens: ACCEL_ENDPOINT_TOKEN_<NAME>
    models = ["bert", "./my-checkpoint", "org/name"]  # default of --models: types, checkpoint dirs, cached hub ids
                                      # (or one string: "all", "bert,gpt2", "@models.txt"); ACCEL_MODELS="bert,gpt2"

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
    p50_ci_rel = 0.01                 # also wait for the p50's 95% interval within +-1% (default: no such rule)
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

from accelerate_core.constants import (
    ENV_PREFIX,
    JOB_KIND_DRY,
    JOB_KIND_TEST,
    JOB_KINDS,
    QUEUE_PREFIX,
    RESULTS_QUEUE,
    hardware_kind,
)
from accelerate_core.errors import ConfigError
from accelerate_core.names import NAME_RULE, is_name
from accelerate_core.signing import key_problem

_BROKER_SCHEMES = ("redis", "rediss")
DEFAULT_CONFIG_FILE = "accel.toml"
"""Read from the working directory when neither ``--config`` nor ``ACCEL_CONFIG`` names a file."""

MAX_TIME_LIMIT_S: Final = 7 * 24 * 3600.0
"""The longest hard time limit a job kind may have, in seconds (the broker's visibility timeout exceeds it)."""

BROKER_URL_PARAMS: Final = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
"""The only query parameters a broker URL may carry (TLS, ``rediss://``): Celery's kombu and redis-py both
read these the same way; anything else one of them would misread or refuse."""

_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,252}")


def redact_url(url: str | None) -> str:
    """Return ``url`` with its password and every query value but the TLS options replaced by ``***``.

    Never raises, whatever ``url`` holds (a malformed URL is redacted generously rather than parsed): the
    userinfo runs to the *last* ``@``, so a password holding ``/``, ``?`` or ``#`` is hidden whole.
    """
    if not url:
        return "(none)"
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        userinfo, _, after = rest.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        rest = f"{user}:***@{after}" if colon else f"{userinfo}@{after}"
    head, question, query = rest.partition("?")
    if question:
        query = "&".join(_redact_param(p) for p in query.split("&"))
    return f"{scheme}{sep}{head}{question}{query}"


def _redact_param(param: str) -> str:
    key, equals, _ = param.partition("=")
    return param if not equals or unquote(key) in BROKER_URL_PARAMS else f"{key}=***"


def results_url_problem(url: str) -> str | None:
    """What is wrong with a results service URL and what to do, or None when it is an http(s) URL of a host."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a valid URL: use http://HOST:PORT (an IPv6 host in brackets)"
    if parts.scheme not in ("http", "https") or not is_host(parts.hostname or "") or port == 0:
        return "is not a results service URL: use http://HOST:PORT, e.g. http://127.0.0.1:8765"
    if parts.username or parts.password or parts.query or parts.fragment:
        return "carries credentials, a query or a fragment: give http://HOST:PORT only (the token is ACCEL_SERVE_TOKEN)"
    return None


def broker_url_problem(url: str) -> str | None:
    """What is wrong with a broker URL and what to do, or None when redis-py and kombu read it alike and safely."""
    scheme, sep, _ = url.partition("://")
    if scheme not in _BROKER_SCHEMES or not sep:
        return "is not a Redis URL: use redis://HOST:PORT/DB (or unset it for the embedded default)"
    if "#" in url:
        return "contains '#': percent-encode it (%23) where it is part of the password"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "is not a valid URL: use redis://HOST:PORT/DB, an IPv6 host in brackets ([::1])"
    if "@" in parts.path + parts.query:
        return "has an '@' after the host: percent-encode '/', '?' and '@' in the password (%2F, %3F, %40)"
    try:  # Python's own message would quote the port, which may be a password misread as one
        port = parts.port
    except ValueError:
        return "has an invalid port: give a number 1-65535 after the host, redis://HOST:PORT/DB"
    if not is_host(parts.hostname or ""):
        return "has no valid host: use redis://HOST:PORT/DB, an IPv6 host in brackets ([::1])"
    if port == 0:
        return "has port 0: give the broker's TCP port, 1-65535"
    if parts.path not in ("", "/") and not (parts.path[1:].isascii() and parts.path[1:].isdigit()):
        return "names no database number: end it with /DB, e.g. /0"
    return _query_problem(scheme, parts.query)


def is_host(host: str) -> bool:
    """True for a host name (letters, digits, ``.``, ``_``, ``-``) or an IP address (IPv6 without brackets)."""
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    return _HOST.fullmatch(host) is not None


def _query_problem(scheme: str, query: str) -> str | None:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True) if query else []
    except ValueError:
        return "has a malformed query: write ?key=value&key=value"
    keys = [k for k, _ in pairs]
    if any("pass" in k.lower() for k in keys):
        return "carries a password as a query parameter: put it in the URL instead, redis://:PASSWORD@HOST:PORT/DB"
    unknown = sorted({k for k in keys if k not in BROKER_URL_PARAMS})
    if unknown or len(set(keys)) != len(keys):
        return f"has unknown or repeated parameters {unknown or keys}: only {', '.join(BROKER_URL_PARAMS)}, once each"
    if scheme == "redis" and keys:
        return "sets TLS options on a plain redis:// URL: use rediss:// for TLS"
    if scheme == "rediss" and dict(pairs).get("ssl_cert_reqs", "required") != "required":
        return (
            "asks for TLS without certificate verification: drop ssl_cert_reqs (verified is the default) "
            "and give &ssl_ca_certs=/path/ca.pem for a private CA"
        )
    return None


def with_verified_tls(url: str) -> str:
    """``url`` with ``ssl_cert_reqs=required`` when it is ``rediss://`` and says nothing of verification.

    redis-py verifies a bare ``rediss://`` but Celery's kombu falls back to ``CERT_NONE``; with the option
    spelled out both channels verify the server's certificate (against ``ssl_ca_certs`` or the system CAs).
    """
    parts = urlsplit(url)
    if parts.scheme != "rediss" or "ssl_cert_reqs" in dict(parse_qsl(parts.query)):
        return url
    query = f"{parts.query}&ssl_cert_reqs=required" if parts.query else "ssl_cert_reqs=required"
    return urlunsplit(parts._replace(query=query))


def with_password(url: str, password: str | None) -> str:
    """``url`` carrying ``password`` (``ACCEL_BROKER_PASSWORD``), so a fleet sets its broker password once.

    Redis is started with the same variable (``--requirepass "$ACCEL_BROKER_PASSWORD"``), so the URLs in
    env files, units and commands need no copy of it. A URL that already holds this password is kept.

    Raises:
        ValueError: the URL holds a different password (the message says what to do).
    """
    if not password:
        return url
    parts = urlsplit(url)
    if parts.password is not None:
        if unquote(parts.password) == password:
            return url
        raise ValueError("holds a password and ACCEL_BROKER_PASSWORD another: give it once, in ACCEL_BROKER_PASSWORD")
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:{quote(password, safe='')}@{host}"))


@dataclass(frozen=True, slots=True)
class Source:
    """Where one setting's value came from, so a message about it names the place to fix it."""

    kind: str
    """``file`` (a TOML file), ``env`` (an environment variable) or ``flag`` (a command-line flag)."""
    name: str
    """The file's path, the variable's name or the flag."""

    def subject(self, key: str, value: object) -> str:
        """How a message names the value: ``a.toml: concurrency = 'x'``, ``ACCEL_CONCURRENCY='x'``, ``--jobs 0``."""
        if self.kind == "file":
            return f"{self.name}: {key} = {value!r}"
        if self.kind == "env":
            return f"{self.name}={value!r}"
        return f"{self.name} {value!r}"

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


ENDPOINT_TOKEN_ENV = f"{ENV_PREFIX}ENDPOINT_TOKEN"
"""The bearer token of an endpoint: ``ACCEL_ENDPOINT_TOKEN_<NAME>`` for a named one, this for ``endpoint bench``."""


def endpoint_token(
    name: str | None = None, *, env_var: str | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The bearer token of an endpoint, from the environment only (never a file, so never in a TOML).

    Args:
        name: a named endpoint reads ``ACCEL_ENDPOINT_TOKEN_<NAME>`` (upper case, ``-``/``.`` as ``_``);
            no fallback to another endpoint's token. None reads ``ACCEL_ENDPOINT_TOKEN``.
        env_var: read this variable instead (``--token-env``); it must be set.
        environ: the environment (defaults to ``os.environ``; tests pass a dict).

    Returns:
        The token, or None when none is set (an empty value counts as none).

    Raises:
        ConfigError: ``env_var`` names a variable that is not set.
    """
    env = os.environ if environ is None else environ
    if env_var is not None:
        if env_var not in env:
            raise ConfigError(f"--token-env {env_var}: that environment variable is not set; export it first")
        return env[env_var] or None
    var = ENDPOINT_TOKEN_ENV if name is None else f"{ENDPOINT_TOKEN_ENV}_{re.sub(r'[^A-Za-z0-9]', '_', name).upper()}"
    return env.get(var) or None


@dataclass(frozen=True, slots=True)
class TimeLimit:
    """Soft and hard wall-clock limits of one job kind, in seconds (soft < hard <= a week)."""

    soft_s: float
    hard_s: float

    def __post_init__(self) -> None:
        if not 0 < self.soft_s < self.hard_s <= MAX_TIME_LIMIT_S:
            raise ConfigError(
                f"time limit soft_s={self.soft_s} hard_s={self.hard_s} is invalid: "
                f"need 0 < soft_s < hard_s <= {MAX_TIME_LIMIT_S:.0f}"
            )


def _default_time_limits() -> dict[str, TimeLimit]:
    return {JOB_KIND_TEST: TimeLimit(120.0, 180.0), JOB_KIND_DRY: TimeLimit(10.0, 20.0)}


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """Benchmark defaults: shapes and the latency loop's stopping rule.

    The loop runs ``warmup`` untimed calls, then timed calls until both ``min_iters`` calls and
    ``min_duration_s`` seconds are reached and, with ``p50_ci_rel``, the 95% interval of the p50 is within
    that fraction of it (:func:`accelerate_core.bench.measure`); it stops early at ``max_duration_s``.
    """

    batch_sizes: tuple[int, ...] = (1,)
    seq_lens: tuple[int, ...] = (16,)
    image_size: int | None = None
    warmup: int = 2
    min_iters: int = 5
    min_duration_s: float = 0.2
    max_duration_s: float = 5.0
    new_tokens: int = 4
    p50_ci_rel: float | None = None

    def __post_init__(self) -> None:
        for name in ("batch_sizes", "seq_lens"):
            values = getattr(self, name)
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
                raise ConfigError(f"bench.{name}={values!r} is invalid: give positive integers, e.g. [1, 4]")
        if self.image_size is not None and self.image_size < 1:
            raise ConfigError(f"bench.image_size={self.image_size} is invalid: give a positive number of pixels")
        if self.warmup < 0 or self.min_iters < 1 or self.new_tokens < 1:
            raise ConfigError("bench.warmup must be >= 0, bench.min_iters and bench.new_tokens >= 1")
        if not 0 <= self.min_duration_s <= self.max_duration_s < math.inf:
            raise ConfigError("bench durations invalid: need 0 <= min_duration_s <= max_duration_s, both finite")
        if self.p50_ci_rel is not None and not 0 < self.p50_ci_rel < 1:
            raise ConfigError(f"bench.p50_ci_rel={self.p50_ci_rel} is invalid: give a fraction of the p50, e.g. 0.01")


_INT_RANGES: Final[dict[str, tuple[int, int, str]]] = {
    "redelivery_cap": (1, 1000, "deliveries of one job before it is recorded as failed"),
    "writer_lock_ttl_s": (2, 3600, "seconds a dead writer's lock outlives it"),
    "reconcile_every_s": (1, 86400, "seconds between two of the writer's reconciliation passes"),
    "reconcile_resends": (0, 1000, "re-sends of a job whose message vanished before it is recorded lost"),
    "stall_s": (1, 30 * 86400, "seconds without a finished job before `accel run --wait` reports a stall"),
    "mem_cap_mb": (64, 2**24, "MiB per job"),
    "concurrency": (0, 4096, "jobs at once; 0 means one per core"),
    "flower_port": (1, 65535, "a TCP port"),
    "serve_port": (1, 65535, "a TCP port"),
}


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of the fleet. Construct with :meth:`load`; pass it explicitly, never globally.

    ``sources`` says where each value that is not a default came from (keys like ``concurrency``,
    ``time_limits.test.soft_s``, ``bench.batch_sizes``); messages about a value name it.
    """

    broker_url: str | None = None
    broker_password: str | None = None
    fleet_key: str | None = None
    results_db: Path = Path("accel-data/results.duckdb")
    templates_db: Path = Path("accel-data/templates.duckdb")
    reports_dir: Path = Path("reports")
    queue_prefix: str = QUEUE_PREFIX
    results_queue: str = RESULTS_QUEUE
    time_limits: Mapping[str, TimeLimit] = field(default_factory=_default_time_limits)
    redelivery_cap: int = 3
    writer_lock_ttl_s: int = 15
    reconcile_every_s: int = 30
    reconcile_resends: int = 3
    stall_s: int = 900
    mem_cap_mb: int = 6144
    concurrency: int = 0
    flower_user: str = "admin"
    flower_password: str | None = None
    flower_port: int = 5555
    serve_host: str = "127.0.0.1"
    serve_port: int = 8765
    serve_token: str | None = None
    results_url: str | None = None
    bench: BenchConfig = field(default_factory=BenchConfig)
    endpoints: tuple[str, ...] = ()
    models: str | None = None
    """The default selection of ``--models`` (``accelerate_core.selection``); None: ``all``."""
    sources: Mapping[str, Source] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.broker_url is not None:
            problem = broker_url_problem(self.broker_url)
            if problem:
                raise ConfigError(f"{self._subject('broker_url', redact_url(self.broker_url))} {problem}")
            try:
                url = with_password(self.broker_url, self.broker_password)
                object.__setattr__(self, "broker_url", with_verified_tls(url))
            except ValueError as e:
                raise ConfigError(f"{self._subject('broker_url', redact_url(self.broker_url))} {e}") from None
        for name, (low, high, meaning) in _INT_RANGES.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ConfigError(f"{self._subject(name, value)} is out of range: give {low}..{high} ({meaning})")
        for name in ("queue_prefix", "results_queue"):
            if not is_name(getattr(self, name)):
                raise ConfigError(f"{self._subject(name, getattr(self, name))} is not a valid queue name: {NAME_RULE}")
        self._check_flower_credentials()
        if self.results_url is not None and (problem := results_url_problem(self.results_url)):
            raise ConfigError(f"{self._subject('results_url', redact_url(self.results_url))} {problem}")
        if self.fleet_key is not None and (problem := key_problem(self.fleet_key)):
            raise ConfigError(f"{self._subject('fleet_key', '***')} {problem}")
        for kind in JOB_KINDS:
            if kind not in self.time_limits:
                raise ConfigError(f"time_limits has no entry for job kind {kind!r}: add [time_limits.{kind}]")

    def _check_flower_credentials(self) -> None:
        # Flower splits its basic-auth option on ',' (several users), so a comma in the password would
        # make its tail a credential of its own; ':' separates the user from the password.
        if not self.flower_user or any(c in self.flower_user for c in ":,"):
            raise ConfigError(
                f"{self._subject('flower_user', self.flower_user)} is invalid: give a name without ':' or ','"
            )
        if self.flower_password is not None and "," in self.flower_password:
            source = self.sources.get("flower_password")
            where = source.name if source else "flower_password"
            raise ConfigError(f"{where}: the Flower password contains ',': Flower would split it, pick another")

    def _subject(self, key: str, value: object) -> str:
        source = self.sources.get(key)
        return source.subject(key, value) if source else f"{key}={value!r}"

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

    @property
    def visibility_timeout_s(self) -> int:
        """Redis's visibility timeout on this fleet, in seconds: above every kind's Celery backstop (``limits``)."""
        from accelerate_core.limits import visibility_timeout_s

        return visibility_timeout_s([self.longest_hard_limit_s])

    def queue_for(self, hardware: str) -> str:
        """Return the Celery queue name of a hardware kind (``api`` for a served endpoint's ``api:NAME``)."""
        return f"{self.queue_prefix}{hardware_kind(hardware)}"

    def effective_concurrency(self) -> int:
        """The number of jobs run at once locally: ``concurrency``, or the number of cores if 0."""
        return self.concurrency or (os.cpu_count() or 1)

    def describe(self) -> dict[str, Any]:
        """A printable view of the settings, with every password redacted."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "sources":
                continue
            if f.name == "broker_url":
                value = redact_url(value)
            elif f.name in _SECRETS:
                value = "***" if value else None
            elif isinstance(value, Path):
                value = str(value)
            elif f.name == "time_limits":
                value = {k: {"soft_s": v.soft_s, "hard_s": v.hard_s} for k, v in value.items()}
            elif isinstance(value, BenchConfig):
                value = {bf.name: getattr(value, bf.name) for bf in fields(value)}
            elif f.name == "endpoints":
                value = [redact_url(v) for v in value]
            out[f.name] = value
        return out

    def source_of(self, name: str) -> str:
        """Where a setting (or the keys under ``time_limits`` and ``bench``) came from; ``default`` if nowhere."""
        found = {str(s) for key, s in self.sources.items() if key == name or key.startswith(f"{name}.")}
        return ", ".join(sorted(found)) or "default"

    def with_overrides(self, *, source: str | None = None, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied and validated again.

        Args:
            source: the command-line flag the changes came from (``--jobs``), named by any message about them.
            **changes: settings to replace.
        """
        sources = {k: v for k, v in self.sources.items() if k not in changes}
        if source is not None:
            sources.update(dict.fromkeys(changes, Source("flag", source)))
        return replace(self, **changes, sources=sources)

    @classmethod
    def load(cls, config_file: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from defaults, an optional TOML file and ``ACCEL_*`` variables.

        Args:
            config_file: a TOML file; if None, ``ACCEL_CONFIG`` or ``./accel.toml`` when present.
            environ: the environment to read (defaults to ``os.environ``; tests pass a dict).

        Raises:
            ConfigError: a file is missing or malformed, or a value is invalid (one line naming its source).
        """
        env = os.environ if environ is None else environ
        path = _config_path(config_file, env)
        raw = _flatten(_read_toml(path), Source("file", str(path))) if path is not None else {}
        raw.update(_from_env(env))
        return _build(raw)


def _config_path(config_file: str | Path | None, env: Mapping[str, str]) -> Path | None:
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist or is not a file: check the --config path")
        return path
    named = env.get(f"{ENV_PREFIX}CONFIG")
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"ACCEL_CONFIG={named!r} is not a file: point it at a TOML file or unset it")
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
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 (byte {e.start}): save it as UTF-8") from e
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read ({e.strerror}): check its permissions") from e


# -- reading: every value arrives as (raw value, where it came from) under a dotted key ----------------

Raw = dict[str, tuple[Any, Source]]
_BENCH_FIELDS: Final = tuple(f.name for f in fields(BenchConfig))
_LIMIT_BOUNDS: Final = ("soft_s", "hard_s")


def _flatten(data: Mapping[str, Any], source: Source) -> Raw:
    """The TOML file's values by dotted key; an unknown key or a section that is not a table is refused."""
    out: Raw = {}
    for key, value in data.items():
        if key in _PARSERS:
            out[key] = (value, source)
        elif key == "time_limits":
            for kind, spec in _table(value, "time_limits", source, JOB_KINDS).items():
                for bound, bound_value in _table(spec, f"time_limits.{kind}", source, _LIMIT_BOUNDS).items():
                    out[f"time_limits.{kind}.{bound}"] = (bound_value, source)
        elif key == "bench":
            for name, bench_value in _table(value, "bench", source, _BENCH_FIELDS).items():
                out[f"bench.{name}"] = (bench_value, source)
        else:
            known = ", ".join([*_PARSERS, "time_limits", "bench"])
            raise ConfigError(f"{source.name}: unknown setting {key!r}: the settings are {known}")
    return out


def _table(value: Any, key: str, source: Source, known: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source.subject(key, value)} is not a table: write [{key}] with keys {', '.join(known)}")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ConfigError(f"{source.name}: [{key}] has unknown key(s) {unknown}: the keys are {', '.join(known)}")
    return value


def _from_env(env: Mapping[str, str]) -> Raw:
    out: Raw = {}
    for name in _PARSERS:
        var = f"{ENV_PREFIX}{name.upper()}"
        if var in env:
            out[name] = (env[var], Source("env", var))
    for kind in JOB_KINDS:
        for bound in _LIMIT_BOUNDS:
            var = f"{ENV_PREFIX}{kind.upper()}_{bound.upper()}"
            if var in env:
                out[f"time_limits.{kind}.{bound}"] = (env[var], Source("env", var))
    return out


# -- parsing: one parser per type; text from the environment is parsed, TOML values must have the type --


def _type_name(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array"}
    return names.get(type(value), "a table" if isinstance(value, Mapping) else f"a {type(value).__name__}")


def _as_int(value: object, from_env: bool) -> int:
    if from_env and isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise ValueError("is not an integer: give a whole number") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"is {_type_name(value)}, not an integer: give a whole number without quotes")
    return value


def _as_float(value: object, from_env: bool) -> float:
    if from_env and isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError("is not a number: give seconds, e.g. 120") from None
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"is {_type_name(value)}, not a number: give seconds without quotes, e.g. 120")
    else:
        number = float(value)
    if not math.isfinite(number):
        raise ValueError("is not a finite number")
    return number


def _as_str(value: object, from_env: bool) -> str:
    if not isinstance(value, str):
        raise ValueError(f"is {_type_name(value)}, not a string: put it in quotes")
    return value


def _as_optional_str(value: object, from_env: bool) -> str | None:
    return _as_str(value, from_env) or None


def _as_path(value: object, from_env: bool) -> Path:
    text = _as_str(value, from_env)
    if not text or "\x00" in text:
        raise ValueError("is not a usable path: give a file or folder name")
    return Path(text)


def _as_sizes(value: object, from_env: bool) -> tuple[int, ...]:
    if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        raise ValueError(f"is {_type_name(value)}, not an array of integers: write e.g. [1, 4]")
    return tuple(value)


def _as_strings(value: object, from_env: bool) -> tuple[str, ...]:
    if from_env and isinstance(value, str):
        return tuple(value.split())
    if not isinstance(value, list) or any(not isinstance(v, str) for v in value):
        raise ValueError(f'is {_type_name(value)}, not an array of strings: write e.g. ["local=http://127.0.0.1:8000"]')
    return tuple(value)


def _as_models(value: object, from_env: bool) -> str:
    """A selection: one string (``all``, ``a,b``, ``@file``) or an array of names (types, directories, hub ids)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list) or any(not isinstance(v, str) or not v.strip() or "," in v for v in value):
        raise ValueError(f'is {_type_name(value)}, not an array of model names: write e.g. ["bert", "org/name"]')
    if not value:
        raise ValueError('names no model: write e.g. ["bert", "org/name"], or "all"')
    return ",".join(value)


Parser = Callable[[object, bool], Any]
_PARSERS: Final[dict[str, Parser]] = {
    "broker_url": _as_optional_str,
    "broker_password": _as_optional_str,
    "fleet_key": _as_optional_str,
    "results_db": _as_path,
    "templates_db": _as_path,
    "reports_dir": _as_path,
    "queue_prefix": _as_str,
    "results_queue": _as_str,
    "redelivery_cap": _as_int,
    "writer_lock_ttl_s": _as_int,
    "reconcile_every_s": _as_int,
    "reconcile_resends": _as_int,
    "stall_s": _as_int,
    "mem_cap_mb": _as_int,
    "concurrency": _as_int,
    "flower_user": _as_str,
    "flower_password": _as_optional_str,
    "flower_port": _as_int,
    "serve_host": _as_str,
    "serve_port": _as_int,
    "serve_token": _as_optional_str,
    "results_url": _as_optional_str,
    "endpoints": _as_strings,
    "models": _as_models,
}
"""The top-level settings a TOML file or an ``ACCEL_<NAME>`` variable may set, with their parsers."""

_SECRETS: Final = ("flower_password", "broker_password", "fleet_key", "serve_token")
"""Settings never printed: :meth:`Settings.describe` and error messages show ``***``."""

_BENCH_PARSERS: Final[dict[str, Parser]] = {
    "batch_sizes": _as_sizes,
    "seq_lens": _as_sizes,
    "image_size": _as_int,
    "warmup": _as_int,
    "min_iters": _as_int,
    "min_duration_s": _as_float,
    "max_duration_s": _as_float,
    "new_tokens": _as_int,
    "p50_ci_rel": _as_float,
}


def _parser(key: str) -> Parser:
    if key.startswith("time_limits."):
        return _as_float
    if key.startswith("bench."):
        return _BENCH_PARSERS[key.removeprefix("bench.")]
    return _PARSERS[key]


def _parse(key: str, value: Any, source: Source) -> Any:
    shown = redact_url(value) if key == "broker_url" and isinstance(value, str) else value
    if key in _SECRETS:
        shown = "***"
    try:
        return _parser(key)(value, source.kind == "env")
    except ValueError as e:
        raise ConfigError(f"{source.subject(key, shown)} {e}") from None


@contextmanager
def _located(raw: Raw, prefix: str) -> Iterator[None]:
    """Prefix a ConfigError raised by a nested object with where its values came from."""
    try:
        yield
    except ConfigError as e:
        where = sorted({s.name for key, (_, s) in raw.items() if key.startswith(prefix)})
        raise ConfigError(f"{' and '.join(where) or prefix.rstrip('.')}: {e}") from None


def _build(raw: Raw) -> Settings:
    values = {key: _parse(key, value, source) for key, (value, source) in raw.items()}
    kwargs: dict[str, Any] = {key: v for key, v in values.items() if "." not in key}
    limits = _default_time_limits()
    for kind in JOB_KINDS:
        given = {b: values[f"time_limits.{kind}.{b}"] for b in _LIMIT_BOUNDS if f"time_limits.{kind}.{b}" in values}
        if given:
            with _located(raw, f"time_limits.{kind}."):
                limits[kind] = replace(limits[kind], **given)
    bench = {key.removeprefix("bench."): v for key, v in values.items() if key.startswith("bench.")}
    with _located(raw, "bench."):
        kwargs["bench"] = BenchConfig(**bench)
    return Settings(**kwargs, time_limits=limits, sources={key: source for key, (_, source) in raw.items()})

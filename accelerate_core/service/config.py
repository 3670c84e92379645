"""The results service's configuration: where it listens, its token, its thread pool and its bounds."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from accelerate_core.errors import ConfigError
from accelerate_core.service.access import is_loopback

if TYPE_CHECKING:
    from accelerate_core.config import Settings


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """Where and how the service listens; validated at construction.

    Args:
        host: the address to bind (loopback by default; any other needs ``token``).
        port: the TCP port (0: any free port, read back from :attr:`ResultsService.url`).
        token: the secret every request must present (bearer or basic-auth password); None: none asked.
        reports_dir: where finished runs' report files lie (served as they are when fresh).
        read_threads: threads running store reads; at most this many queries run at once. Two by default,
            so one slow query (a big report) never holds up the rest; up to 4 on hosts of 16+ cores, since
            more on a small host only take CPU from the writer.
        metrics_runs: ``/metrics`` shows the latest this many runs ...
        metrics_unfinished: ... plus up to this many unfinished ones (bounds label cardinality).
        refresh_s: pages of unfinished runs ask the browser to reload after this many seconds.
        cache_mb: answers kept per store version (see :mod:`accelerate_core.service.cache`), in MiB.
        read_share: while the host is busy (the writer has a backlog), reads together take at most this
            share of one core's time (see :mod:`accelerate_core.service.budget`); 0 < read_share.
        read_nice: the service's threads run this much nicer than their host's (Linux), so when the CPU
            is short the host's own work (the writer's ingest) goes first; 0 leaves them as they are.
    """

    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    reports_dir: Path = Path("reports")
    read_threads: int = field(default_factory=lambda: max(2, min(4, (os.cpu_count() or 1) // 4)))
    metrics_runs: int = 5
    metrics_unfinished: int = 20
    refresh_s: int = 10
    cache_mb: int = 64
    read_share: float = 0.2
    read_nice: int = 10

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ConfigError(f"port {self.port} is invalid: give a TCP port 1-65535 (0 picks a free one)")
        if self.token is not None and not self.token.strip():
            raise ConfigError("the service token is empty: set ACCEL_SERVE_TOKEN to a long random string")
        if not is_loopback(self.host) and self.token is None:
            raise ConfigError(
                f"refusing to serve results on {self.host} without a token: set ACCEL_SERVE_TOKEN "
                "(or serve_token in accel.toml), or bind to 127.0.0.1"
            )
        if (
            min(self.read_threads, self.metrics_runs, self.refresh_s) < 1
            or min(self.metrics_unfinished, self.cache_mb) < 0
        ):
            raise ConfigError("read_threads, metrics_runs, refresh_s must be >= 1; metrics_unfinished, cache_mb >= 0")
        if not self.read_share > 0:
            raise ConfigError(f"read_share={self.read_share} is invalid: give a share of one core above 0, e.g. 0.2")
        if not 0 <= self.read_nice <= 19:
            raise ConfigError(f"read_nice={self.read_nice} is invalid: give 0 (as the host) to 19 (nicest)")

    @classmethod
    def from_settings(cls, settings: Settings, *, host: str | None = None, port: int | None = None) -> ServiceConfig:
        """The service's configuration from the fleet's settings; ``host``/``port`` override them."""
        return cls(
            host=settings.serve_host if host is None else host,
            port=settings.serve_port if port is None else port,
            token=settings.serve_token,
            reports_dir=settings.reports_dir,
        )

    def __repr__(self) -> str:
        token = "***" if self.token else None
        return f"ServiceConfig(host={self.host!r}, port={self.port}, token={token!r})"

"""The writer hosts the results service: reads of the store it holds, from its own process.

DuckDB admits one process per file while it is written, so nobody else can read the results while the fleet
runs; the writer therefore serves them (:mod:`accelerate_core.service`) from cursors of its own connection.
It binds ``serve_host:serve_port`` (loopback by default; any other address needs ``serve_token``, or the
writer refuses to start) and advertises the URL it answers on (``results_url`` when set: a proxy's address,
say) so that the CLI finds it. Ingest comes first: an address already in use is logged and the writer
writes on without a service.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from accelerate_core.errors import ConfigError

if TYPE_CHECKING:
    import redis

    from accelerate_core.config import Settings
    from accelerate_core.service import ServiceConfig
    from accelerate_core.service.metrics import WriterProbe
    from workers.keeper import WriterState

logger = logging.getLogger(__name__)

BUSY_FOR_S = 1.0
"""The writer counts as busy (reads then keep to their share of a core) this long after its last commit."""

_UNSPECIFIED = ("0.0.0.0", "::", "")


def advertised_url(settings: Settings, bound: str, port: int) -> str:
    """The URL clients are told: ``results_url`` when set; else the bound one, this host's name for a wildcard bind."""
    if settings.results_url:
        return settings.results_url
    if settings.serve_host in _UNSPECIFIED:
        return f"http://{socket.gethostname()}:{port}"
    return bound


def writer_probe(client: redis.Redis, queue: str, state: WriterState) -> WriterProbe:
    """The writer's figures for ``/metrics``, read on each scrape: backlog and lag from the broker, dead letters.

    A broker that cannot be read makes the scrape fail with one line (a BrokerError), never a stale figure.
    """
    import redis as redis_lib

    from accelerate_core.errors import BrokerError
    from accelerate_core.liveness import results_backlog
    from accelerate_core.service import WriterFigures

    def figures() -> WriterFigures:
        try:
            waiting, oldest_s = results_backlog(client, queue)
        except redis_lib.RedisError as e:
            raise BrokerError(f"the writer cannot read its backlog from the broker ({e})") from e
        return WriterFigures(waiting, oldest_s or 0.0, state.dead_letters)

    return figures


@contextmanager
def hosted_service(
    settings: Settings,
    config: ServiceConfig,
    *,
    version: Callable[[], Hashable],
    last_commit: Callable[[], float],
    writer: WriterProbe | None = None,
) -> Iterator[str | None]:
    """Serve the results of ``settings.results_db`` (which this process holds open) while the block runs.

    Args:
        settings: where the store and the reports are.
        config: the address (built early with ``ServiceConfig.from_settings``, so a bad one stops the writer
            before it takes the lock).
        version: the writer's count of commits (answers are cached until the next one).
        last_commit: the monotonic time of the writer's last commit (reads yield to ingest after it).
        writer: the writer's backlog, lag and dead letters for ``/metrics`` (:func:`writer_probe`).

    Yields:
        The advertised URL, or None when the address could not be bound (logged; ingest goes on).
    """
    from accelerate_core.service import HostHooks, ReadSource
    from accelerate_core.service.server import ResultsService

    source = ReadSource.open(settings.results_db)  # a cursor of this process's own read-write connection
    busy = lambda: time.monotonic() - last_commit() < BUSY_FOR_S  # noqa: E731
    service = ResultsService(source, config, hooks=HostHooks(version=version, writer=writer, busy=busy))
    try:
        try:
            service.start()
        except ConfigError as e:
            logger.error("results service not started (%s); the writer writes on without it", e)
            yield None
            return
        url = advertised_url(settings, service.url, service.port)
        logger.info("results service on %s (advertised as %s)", service.url, url)
        yield url
    finally:
        service.stop()
        source.close()

"""The results service: a read-only HTTP API, web pages and Prometheus metrics over the results store.

DuckDB admits one read-write process per file, and that process (the fleet's results writer, or a local
run) is the only one that can read the file while it writes. So the service is built to live *inside*
whichever process holds the store: it is handed an open connection (:class:`ReadSource`) and an address
(:class:`ServiceConfig`) by its host, and serves every request from a cursor of its own, off the IO loop,
inside a transaction that is always rolled back. ``accel serve`` hosts it over a local DB nobody writes.

Modules: ``config`` (address, token, bounds), ``access`` (loopback binds, credentials), ``source`` (the
connection seam and read-only views), ``host`` (what the hosting process tells the service: the store's
version, the writer's figures, whether it is busy), ``cache`` (answers per store version), ``budget``
(reads yield to a busy host), ``views`` (the data every endpoint and page shows), ``metrics`` (Prometheus
text), ``web``, ``api`` and ``pages`` (HTTP handlers), ``server`` (:class:`ResultsService`: bind, run,
stop). Importing this package imports neither tornado nor duckdb.
"""

from __future__ import annotations

from accelerate_core.service.config import ServiceConfig
from accelerate_core.service.host import HostHooks
from accelerate_core.service.metrics import WriterFigures
from accelerate_core.service.source import ReadSource

__all__ = ["HostHooks", "ReadSource", "ServiceConfig", "WriterFigures"]

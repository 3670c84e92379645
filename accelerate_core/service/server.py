"""``ResultsService``: the results service bound to its host's address, running on a thread of its own.

The host owns the store and the address; the service owns an IO loop thread and a pool of read threads::

    source = ReadSource(conn, path)                 # or ReadSource.open(path) over a local file
    config = ServiceConfig(host="127.0.0.1", port=8765)
    with ResultsService(source, config, hooks=HostHooks(version=..., writer=..., busy=...)) as service:
        print(service.url)                          # the socket is bound by now: errors came from start()
        ...                                         # the host goes on with its own work (ingest)

The socket is bound in :meth:`ResultsService.start`, in the caller's thread, so an address in use is the
caller's one-line error, not a dead thread's traceback.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Self

import tornado.httpserver
import tornado.netutil
import tornado.web

from accelerate_core.errors import ConfigError
from accelerate_core.service.api import ROUTES
from accelerate_core.service.budget import ReadBudget
from accelerate_core.service.cache import AnswerCache
from accelerate_core.service.config import ServiceConfig
from accelerate_core.service.host import HostHooks
from accelerate_core.service.pages import PAGES
from accelerate_core.service.source import ReadSource
from accelerate_core.service.web import NotFound, ServiceContext, pattern

log = logging.getLogger(__name__)


def host_priority_plus(nice: int) -> int | None:
    """The priority ``nice`` steps nicer than the calling (host) thread's; None where threads have none (macOS)."""
    if nice <= 0 or not sys.platform.startswith("linux"):
        return None
    return min(19, os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) + nice)


def yield_to_host(priority: int | None) -> None:
    """Run the calling thread at ``priority`` (from :func:`host_priority_plus`; None: leave it as it is).

    The service's threads call this when they start, so they never take the CPU from the host's own
    threads (the writer's ingest) when both want it. The priority is absolute, not relative: a read thread
    started by the (already nicer) serving thread must not end up nicer still.
    """
    if priority is None:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), priority)
    except OSError as e:  # a sandbox may forbid it; the service works the same, only less politely
        log.info("results service threads keep their priority: %s", e)


def application(ctx: ServiceContext) -> tornado.web.Application:
    """The tornado application of the API and the pages over ``ctx``."""
    handlers = [(pattern(path), handler, {"ctx": ctx}) for path, handler, _ in PAGES + ROUTES]
    return tornado.web.Application(
        handlers,  # type: ignore[arg-type]
        default_handler_class=NotFound,
        default_handler_args={"ctx": ctx},
        serve_traceback=False,
    )


class ResultsService:
    """The results service over ``source``, on ``config``'s address, until :meth:`stop`.

    Args:
        source: the store to read (the host keeps it open while the service runs).
        config: the address, token and bounds.
        hooks: what the hosting process tells the service (:class:`~accelerate_core.service.host.HostHooks`):
            the store's version, the writer's figures, whether it is busy; None: nothing (no cache, no writer).
    """

    def __init__(self, source: ReadSource, config: ServiceConfig, *, hooks: HostHooks | None = None) -> None:
        self.config = config
        hooks = hooks or HostHooks()
        self._priority = host_priority_plus(config.read_nice)
        self._pool = ThreadPoolExecutor(
            config.read_threads,
            thread_name_prefix="accel-read",
            initializer=yield_to_host,
            initargs=(self._priority,),
        )
        self.cache = AnswerCache(config.cache_mb << 20)
        self.budget = ReadBudget(config.read_share, config.read_threads, hooks.busy)
        self._ctx = ServiceContext(source, config, self._pool, self.cache, self.budget, hooks)
        self._sockets: list[socket.socket] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def port(self) -> int:
        """The bound port (the one picked when the configuration asked for 0)."""
        if not self._sockets:
            raise ConfigError("the results service is not started: call start() first")
        return int(self._sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """The service's base URL."""
        host = self.config.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def start(self) -> str:
        """Bind the socket, start serving on a thread of its own, and return the URL.

        Raises:
            ConfigError: the address cannot be bound (in use, not local, not permitted).
        """
        try:
            self._sockets = tornado.netutil.bind_sockets(self.config.port, address=self.config.host)
        except OSError as e:
            hint = "pick another --port" if e.errno == errno.EADDRINUSE else "check --host"
            raise ConfigError(f"cannot listen on {self.config.host}:{self.config.port} ({e.strerror}): {hint}") from e
        self._thread = threading.Thread(target=self._serve, name="accel-results-service", daemon=True)
        self._thread.start()
        self._ready.wait()
        log.info("results service on %s", self.url)
        return self.url

    def _serve(self) -> None:
        yield_to_host(self._priority)
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        server = tornado.httpserver.HTTPServer(application(self._ctx), xheaders=False)
        server.add_sockets(self._sockets)
        self._loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            server.stop()
            loop.run_until_complete(server.close_all_connections())
            loop.close()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving: close the socket and open connections, wait for the reads in flight (idempotent)."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout_s)
        self._loop = None
        self._thread = None
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

"""``accel serve``: the results service (JSON API, pages, Prometheus metrics) over a local results DB.

It opens the DB read-only, so it serves a DB nobody is writing (the embedded default, after or between
runs); while it serves, a local ``accel run`` cannot open the file for writing. The fleet's results
writer hosts the same service over its own connection.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from scheduler.cli.common import out, state


def serve(
    ctx: typer.Context,
    db: Annotated[Path | None, typer.Option("--db", help="Results DB (default: results_db setting)")] = None,
    host: Annotated[
        str | None, typer.Option("--host", help="Address to bind (default 127.0.0.1; others need ACCEL_SERVE_TOKEN)")
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="TCP port (default 8765; 0 picks a free one)")] = None,
) -> None:
    """Serve the results read-only over HTTP: run index, run, model history and hardware pages; /api; /metrics."""
    from accelerate_core.errors import ConfigError
    from accelerate_core.service import ReadSource, ServiceConfig
    from accelerate_core.service.host import LOCAL_FILE
    from accelerate_core.service.server import ResultsService

    settings = state(ctx).settings
    path = db if db is not None else settings.results_db
    config = ServiceConfig.from_settings(settings, host=host, port=port)
    if not path.is_file():
        raise ConfigError(f"no results store at {path}: run `accel run` first, or pass --db PATH")
    source = ReadSource.open(path)
    try:
        # Opened read-only here, the file cannot change while we serve: answers are cached for good.
        with ResultsService(source, config, hooks=LOCAL_FILE) as service:
            auth = "token required" if config.token else "no token: loopback only"
            out.print(f"results of {path} on {service.url} ({auth}); Ctrl-C stops", markup=False)
            _wait_for_signal()
    finally:
        source.close()


def _wait_for_signal() -> None:
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the root app."""
    app.command("serve")(serve)

"""What the process hosting the service tells it about the store and its own work (all optional).

The seam for the fleet's results writer, which holds the store read-write and hosts the service::

    hooks = HostHooks(version=lambda: writer.commits,    # answers are cached until the next commit
                      writer=writer.figures,             # backlog and lag for /metrics
                      busy=lambda: writer.backlog > 0)   # reads yield to ingest while work waits
    ResultsService(ReadSource(conn, path), ServiceConfig(host=..., port=...), hooks=hooks).start()

``accel serve`` reads a file it opened read-only, which nobody can change: :data:`LOCAL_FILE`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from accelerate_core.service.cache import StoreVersion, unchanging
from accelerate_core.service.metrics import WriterProbe


@dataclass(frozen=True, slots=True)
class HostHooks:
    """The hosting process's hooks.

    Args:
        version: the store's version (changes whenever the store may have); None: no answer is cached.
        writer: the writer's intake figures for ``/metrics``; None: there is no writer here.
        busy: True while the host's own work waits (the writer's backlog): reads then keep to
            ``read_share`` of a core; None: never busy.
    """

    version: StoreVersion | None = None
    writer: WriterProbe | None = None
    busy: Callable[[], bool] | None = None


LOCAL_FILE = HostHooks(version=unchanging)
"""A store file this process opened read-only: it cannot change, and nothing else here is busy."""

"""The fleet's live nodes, as ``accel workers`` shows them: one broadcast, bounded by a timeout.

Each live worker node answers the inspect command ``accel_node`` (see ``workers/node.py``) with a
:class:`~accelerate_core.contracts.NodeReport`. A node that answers but not that command (another version)
is still listed, with what Celery's own ``active_queues`` says of it. The writer is not a Celery node: its
heartbeat key says whether it is alive (:func:`accelerate_core.liveness.read_writer`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from accelerate_core import broker, wire
from accelerate_core.config import Settings
from accelerate_core.constants import NODE_INSPECT_COMMAND
from accelerate_core.contracts import NodeReport, WriterHeartbeat
from accelerate_core.errors import ContractError
from scheduler.remote import INSPECT_TIMEOUT_S, client_app, live_queues

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Fleet:
    """The live nodes (sorted by name) and the live writer (None: none alive)."""

    nodes: tuple[NodeReport, ...]
    writer: WriterHeartbeat | None

    def to_json(self) -> dict[str, Any]:
        """What ``accel workers --json`` prints."""
        return {
            "nodes": [wire.encode(n) for n in self.nodes],
            "writer": wire.encode(self.writer) if self.writer is not None else None,
        }


def live_fleet(settings: Settings, timeout_s: float = INSPECT_TIMEOUT_S) -> Fleet:
    """Every live node's report and the writer's heartbeat.

    Raises:
        BrokerError: the broker is unreachable.
    """
    writer = writer_heartbeat(settings)
    return Fleet(tuple(sorted(_reports(settings, timeout_s), key=lambda n: n.node)), writer)


def writer_heartbeat(settings: Settings) -> WriterHeartbeat | None:
    """The live writer's heartbeat on the settings' broker (None: no writer alive).

    Raises:
        BrokerError: the broker is unreachable.
    """
    import redis

    from accelerate_core.liveness import read_writer

    url = broker.require_url(settings)
    client = broker.connect(url)
    try:
        return read_writer(client)
    except redis.RedisError as e:
        raise broker.broker_error(url, e) from e
    finally:
        client.close()


def _reports(settings: Settings, timeout_s: float) -> list[NodeReport]:
    url = broker.require_url(settings)
    app = client_app(settings)
    try:
        replies = app.control.broadcast(NODE_INSPECT_COMMAND, reply=True, timeout=timeout_s) or []
    except Exception as e:  # kombu raises its own connection errors
        raise broker.broker_error(url, e) from e
    finally:
        app.close()
    reports = [_decode(node, body) for reply in replies for node, body in reply.items()]
    return _with_queues_of_older_nodes(settings, reports, timeout_s)


def _decode(node: str, body: object) -> NodeReport:
    try:
        return wire.decode(NodeReport, body)
    except ContractError as e:
        logger.info("node %s answered %s without a report (%s)", node, NODE_INSPECT_COMMAND, e)
        return NodeReport(node=node)


def _with_queues_of_older_nodes(settings: Settings, reports: list[NodeReport], timeout_s: float) -> list[NodeReport]:
    """Fill in the queues of nodes that do not know ``accel_node`` (one more broadcast, only then)."""
    if all(r.queues for r in reports):
        return reports
    queues = live_queues(settings, timeout_s)
    return [r if r.queues else NodeReport(node=r.node, queues=tuple(queues.get(r.node, ()))) for r in reports]

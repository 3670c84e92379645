"""The fleet's live nodes, as ``accel workers`` shows them and plans see them: one broadcast, bounded by a timeout.

Each live worker node answers the inspect command ``accel_node`` (see ``workers/node.py``) with a
:class:`~accelerate_core.contracts.NodeReport` signed with the fleet key over the broadcast's random challenge.
Only such answers count (:func:`node_answers`): anyone who reaches the broker can answer a broadcast, and the
queues a node says it consumes decide where ``--hardware auto``/``best`` and device-model targets send jobs.
An answer that is unsigned, signed with another key, made for another broadcast or under another node's name
is left out and its node named as unverified. Where no fleet key is configured (a read-only ``accel workers``
or ``accel status`` on a machine without it) nothing can be checked: the answers are taken as they are and
:attr:`Answers.checked` says so. The writer is not a Celery node: its heartbeat key says whether it is alive
(:func:`accelerate_core.liveness.read_writer`).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from accelerate_core import broker, signing, wire
from accelerate_core.config import Settings
from accelerate_core.constants import NODE_ANSWER_PURPOSE, NODE_CHALLENGE_HEX, NODE_INSPECT_COMMAND
from accelerate_core.contracts import NodeReport, WriterHeartbeat
from accelerate_core.errors import ContractError
from scheduler.celery_client import INSPECT_TIMEOUT_S, client_app

if TYPE_CHECKING:
    from accelerate_core.signing import FleetKey

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Answers:
    """The live nodes' answers to one broadcast.

    Attributes:
        nodes: the reports signed with the fleet key for this broadcast (every report where ``checked`` is False),
            sorted by node name.
        unverified: the names of nodes whose answer was not (unsigned, another key, replayed, not a report).
        checked: whether signatures were checked (False: no fleet key in these settings).
    """

    nodes: tuple[NodeReport, ...]
    unverified: tuple[str, ...] = ()
    checked: bool = True


@dataclass(frozen=True, slots=True)
class Fleet:
    """The live nodes (sorted by name), the names of nodes whose answers were not verified, and the live writer."""

    nodes: tuple[NodeReport, ...]
    writer: WriterHeartbeat | None
    unverified: tuple[str, ...] = ()
    checked: bool = True

    def to_json(self) -> dict[str, Any]:
        """What ``accel workers --json`` prints."""
        return {
            "nodes": [wire.encode(n) for n in self.nodes],
            "writer": wire.encode(self.writer) if self.writer is not None else None,
            "unverified": list(self.unverified),
            "verified": self.checked,
        }


def live_fleet(settings: Settings, timeout_s: float = INSPECT_TIMEOUT_S) -> Fleet:
    """Every live node's report and the writer's heartbeat.

    Raises:
        BrokerError: the broker is unreachable.
    """
    writer = writer_heartbeat(settings)
    answers = node_answers(settings, timeout_s)
    return Fleet(answers.nodes, writer, answers.unverified, answers.checked)


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


def node_answers(settings: Settings, timeout_s: float = INSPECT_TIMEOUT_S) -> Answers:
    """Every live node's answer to one ``accel_node`` broadcast, checked against the fleet key where there is one.

    Raises:
        BrokerError: the broker is unreachable.
    """
    key = signing.require_key(settings) if settings.fleet_key else None
    challenge = secrets.token_hex(NODE_CHALLENGE_HEX // 2)
    url = broker.require_url(settings)
    app = client_app(settings)
    try:
        replies = app.control.broadcast(
            NODE_INSPECT_COMMAND, arguments={"challenge": challenge}, reply=True, timeout=timeout_s
        )
    except Exception as e:  # kombu raises its own connection errors
        raise broker.broker_error(url, e) from e
    finally:
        app.close()
    nodes, unverified = [], []
    for reply in replies or []:
        for node, body in reply.items():
            report = answer_report(node, body, key, challenge)
            if report is None:
                unverified.append(str(node))
            else:
                nodes.append(report)
    return Answers(tuple(sorted(nodes, key=lambda n: n.node)), tuple(sorted(unverified)), key is not None)


def answer_report(node: str, body: object, key: FleetKey | None, challenge: str) -> NodeReport | None:
    """The report of one answer, or None (with a log line) when it is not one this scheduler can trust."""
    try:
        if not isinstance(body, dict) or "report" not in body:
            raise ContractError("it is not a signed node report (a node of an older version?)")
        if key is not None:
            signed = {"challenge": challenge, "report": body["report"]}
            key.verify(NODE_ANSWER_PURPOSE, signed, body.get(signing.SIGNATURE_KWARG))
        report = wire.decode(NodeReport, body["report"])
        if report.node != node:
            raise ContractError(f"it reports node {report.node!r}")
    except ContractError as e:  # a SignatureError is one
        logger.warning("node %r answered %s but its answer was left out: %s", node, NODE_INSPECT_COMMAND, e)
        return None
    return report

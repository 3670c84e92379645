"""A worker node's answer to ``accel workers``: the Celery inspect command ``accel_node``.

One broadcast reaches every live node; each answers from its main process (never touching a device) with
a :class:`~accelerate_core.contracts.NodeReport`: its queues, the jobs it runs now, how many it took, and
the inventory it registered with the writer when it started (hardware, device, library versions).

The answer is signed with the fleet key over the broadcast's random challenge and the report
(:func:`signed_answer`): the scheduler plans from these answers (``--hardware auto``/``best``, device models),
so one that anyone who reaches the broker could send, or replay from an earlier broadcast, is not taken.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from accelerate_core import wire
from accelerate_core.constants import NODE_ANSWER_PURPOSE, NODE_CHALLENGE_HEX, NODE_INSPECT_COMMAND
from accelerate_core.contracts import ActiveJob, NodeReport, WorkerInfo

if TYPE_CHECKING:
    from accelerate_core.signing import FleetKey

_STARTED = time.time()
_inventory: dict[str, WorkerInfo] = {}
_keys: dict[str, FleetKey] = {}


def remember(info: WorkerInfo) -> None:
    """Keep this node's inventory for its answers (set once it has been probed, at ``worker_ready``)."""
    _inventory["info"] = info


def node_report(node: str, queues: list[str], active: list[ActiveJob], processed: int) -> NodeReport:
    """This node's report now."""
    now = time.time()
    return NodeReport(
        node=node,
        pid=os.getpid(),
        queues=tuple(queues),
        active=tuple(active),
        processed=processed,
        uptime_s=round(now - _STARTED, 3),
        at=now,
        info=_inventory.get("info"),
    )


def signed_answer(key: FleetKey, challenge: object, report: NodeReport) -> dict[str, Any]:
    """``{"report": ..., "sig": ...}``: the report signed with ``key`` for the broadcast's ``challenge``.

    A challenge that is not a string of the expected length is answered with an empty one, which no
    scheduler accepts: the report stays readable, its signature proves nothing.
    """
    nonce = challenge if isinstance(challenge, str) and len(challenge) == NODE_CHALLENGE_HEX else ""
    body = wire.encode(report)
    return {"report": body, "sig": key.sign(NODE_ANSWER_PURPOSE, {"challenge": nonce, "report": body})}


def _answer(state: Any, challenge: object = None, **_: Any) -> dict[str, Any]:
    """The inspect command's body: runs in the node's main process, in its consumer's thread."""
    from celery.utils.nodenames import worker_direct
    from celery.worker import state as worker_state

    consumer = state.consumer
    task_consumer = getattr(consumer, "task_consumer", None)
    own = worker_direct(consumer.hostname).name  # every node has one (worker_direct): not worth listing
    queues = [q.name for q in task_consumer.queues if q.name != own] if task_consumer is not None else []
    active = [ActiveJob(key=str(r.id), started_at=r.time_start) for r in list(worker_state.active_requests)]
    processed = sum(worker_state.total_count.values())
    return signed_answer(_keys["key"], challenge, node_report(consumer.hostname, queues, active, processed))


def register(key: FleetKey) -> None:
    """Register ``accel_node`` with Celery's remote-control panel (once per process), answering signed with ``key``."""
    from celery.worker.control import Panel, inspect_command

    _keys["key"] = key
    if NODE_INSPECT_COMMAND not in Panel.data:
        inspect_command(name=NODE_INSPECT_COMMAND, args=[("challenge", str)])(_answer)

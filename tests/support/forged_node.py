"""A broker user's fake worker node: a bare Celery worker with no fleet code and no fleet key.

It answers the ``accel_node`` broadcast with a report it made up (a CUDA node with an H100): with
``FORGED_KEY_HEX`` set, signed with that key of its own over the broadcast's real challenge (the strongest
forgery someone who reaches the broker can make); without it, the bare report a node answered before answers
were signed. Usage: ``python -m tests.support.forged_node NODE_NAME`` with ``FORGED_BROKER``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import time
from typing import Any

from celery import Celery
from celery.worker.control import inspect_command

QUEUES = ["hw.cuda", "hw.cuda.h100-80gb-hbm3"]

app = Celery("forged", broker=os.environ.get("FORGED_BROKER", "redis://127.0.0.1:1/0"))
app.conf.update(accept_content=["json"], task_serializer="json", worker_hijack_root_logger=False)


@inspect_command(name="accel_node", args=[("challenge", str)])  # type: ignore[untyped-decorator]
def accel_node(state: Any, challenge: object = None, **_: Any) -> dict[str, Any]:
    report = {"node": state.consumer.hostname, "pid": os.getpid(), "queues": QUEUES, "at": time.time()}
    if not os.environ.get("FORGED_KEY_HEX"):
        return report
    signed = json.dumps({"challenge": challenge, "report": report}, sort_keys=True, separators=(",", ":"))
    key = bytes.fromhex(os.environ["FORGED_KEY_HEX"])
    sig = hmac.new(key, b"accel_node.answer\n" + signed.encode(), hashlib.sha256).hexdigest()
    return {"report": report, "sig": sig}


if __name__ == "__main__":
    app.worker_main(["worker", "-n", sys.argv[1], "-Q", "forged", "-P", "solo", "-l", "warning",
                     "--without-mingle", "--without-gossip"])  # fmt: skip

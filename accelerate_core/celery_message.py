"""A Celery task message (protocol 2, JSON) as kombu stores it in a Redis list, read and made without Celery.

The reconciler and the writer's lag reader look into the broker's lists directly: a message there is a JSON
envelope (``headers``: the task name and id; ``body``: ``[args, kwargs, embed]``, base64 when
``properties.body_encoding`` says so). Pickle and other encodings are never decoded.

:func:`build` makes the message ``app.send_task`` would push, for a queue nobody consumes through Celery: the
writer's ``results``, which it takes off the list itself (``workers.writer.Intake``). A worker pushes its result
with one ``LPUSH`` of it on a connection it keeps, instead of a kombu publish (a new Redis client, a declare and
Celery's publish machinery per result: about as much CPU as the rest of a dry job). Its body is canonical JSON
(:func:`accelerate_core.wire.canonical`: what any JSON reader reads alike), so a signed payload in it is the very
bytes its signature covers: :func:`signed_payload` finds them, and the writer checks the signature over them as
they came instead of encoding the payload again (a fifth of its CPU per result).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import socket
import uuid
from typing import Any

from accelerate_core import wire
from accelerate_core.errors import ContractError

__all__ = ["build", "envelope", "signed_payload", "task_kwargs"]

_JSON = json.JSONDecoder()
_SIGNATURE = re.compile(r',"sig":"([0-9a-f]{64})"},', re.ASCII)

_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def build(task: str, kwargs: dict[str, Any], *, queue: str, kwargsrepr: str) -> bytes:
    """The JSON message ``app.send_task(task, kwargs=kwargs, queue=queue, kwargsrepr=kwargsrepr)`` stores in
    ``queue``'s Redis list (priority 0: the list named ``queue``), with a fresh task id."""
    task_id = str(uuid.uuid4())
    body = wire.canonical([[], kwargs, _EMBED])
    headers: dict[str, Any] = {
        "lang": "py", "task": task, "id": task_id, "shadow": None, "eta": None, "expires": None, "group": None,
        "group_index": None, "retries": 0, "timelimit": [None, None], "root_id": task_id, "parent_id": None,
        "argsrepr": "()", "kwargsrepr": kwargsrepr, "origin": f"gen{os.getpid()}@{socket.gethostname()}",
        "ignore_result": None, "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {},
    }  # fmt: skip
    properties = {
        "correlation_id": task_id,
        "reply_to": "",
        "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": queue},
        "priority": 0,
        "body_encoding": "base64",
        "delivery_tag": str(uuid.uuid4()),
    }
    message = {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": properties,
    }
    return json.dumps(message).encode()


def envelope(raw: bytes | str | dict[str, Any]) -> dict[str, Any] | None:
    """The message as a dict whose ``headers`` is a dict, or None when it is not one."""
    try:
        message = raw if isinstance(raw, dict) else json.loads(raw)
    except ValueError:
        return None
    if not isinstance(message, dict) or not isinstance(message.get("headers"), dict):
        return None
    return message


def task_kwargs(message: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of an :func:`envelope`.

    Raises:
        ContractError: the body is not a JSON Celery protocol 2 body.
    """
    if message.get("content-type", "application/json") != "application/json":
        raise ContractError(f"content type {message.get('content-type')!r} is not JSON")
    body = message.get("body")
    try:
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(str(body))
        decoded = json.loads(body or b"null")
    except (ValueError, TypeError, binascii.Error) as e:
        raise ContractError(f"the message body is not JSON ({e})") from e
    if not isinstance(decoded, list) or len(decoded) < 2 or not isinstance(decoded[1], dict):
        raise ContractError("the message body is not a Celery protocol 2 body ([args, kwargs, embed])")
    return decoded[1]


def signed_payload(body: bytes | str, name: str) -> tuple[object, bytes, str] | None:
    """The payload under ``name``, its bytes as they are in ``body`` and its signature, of a canonical protocol 2
    body ``[[],{"<name>":<payload>,"sig":"<hex>"},<embed>]`` (as :func:`build` makes them); None for any other
    body (read it with :func:`task_kwargs`). The payload is parsed from exactly the bytes returned: check the
    signature over them and the payload is what was signed.
    """
    head = f'[[],{{"{name}":'
    try:
        text = body if isinstance(body, str) else body.decode("ascii")
        if not text.startswith(head):
            return None
        payload, end = _JSON.raw_decode(text, len(head))
        signature = _SIGNATURE.match(text, end)
        if signature is None:
            return None
        embed, last = _JSON.raw_decode(text, signature.end())
    except ValueError:  # not ASCII (not canonical), or not JSON: the full parse says why
        return None
    if not isinstance(embed, dict) or text[last:] != "]":
        return None
    return payload, text[len(head) : end].encode("ascii"), signature[1]

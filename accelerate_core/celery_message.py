"""Reading a Celery task message (protocol 2, JSON) as kombu stores it in a Redis list, without Celery.

The reconciler and the writer's lag reader look into the broker's lists directly: a message there is a JSON
envelope (``headers``: the task name and id; ``body``: ``[args, kwargs, embed]``, base64 when
``properties.body_encoding`` says so). Pickle and other encodings are never decoded.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from accelerate_core.errors import ContractError

__all__ = ["envelope", "task_kwargs"]


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

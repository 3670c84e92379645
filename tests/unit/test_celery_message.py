"""The results message a worker pushes itself is the one Celery's ``send_task`` would have pushed."""

from __future__ import annotations

import json

import pytest

from accelerate_core import celery_message
from accelerate_core.config import Settings
from accelerate_core.constants import TASK_RECORD_RESULT
from tests.support.fleet_key import FLEET_KEY_HEX
from workers import writer


@pytest.mark.redis
def test_a_built_message_has_the_shape_of_celerys_own_and_reads_back_the_same(redis_url: str) -> None:
    import redis

    from scheduler.celery_client import client_app

    # Given the same task sent by Celery (by name, no sent event) and built here
    settings = Settings(broker_url=redis_url, fleet_key=FLEET_KEY_HEX)
    kwargs = {"result": {"key": "r:m:cpu:dry:0", "v": "1.0"}, "sig": "ab" * 32}
    app = client_app(settings, sent_events=False)
    app.send_task(TASK_RECORD_RESULT, kwargs=kwargs, queue="results", kwargsrepr="labels")
    app.close()
    client = redis.Redis.from_url(redis_url)
    client.lpush("results", celery_message.build(TASK_RECORD_RESULT, kwargs, queue="results", kwargsrepr="labels"))
    # When both are read off the list
    theirs, ours = (json.loads(raw) for raw in client.lrange("results", 0, -1)[::-1])
    # Then they carry the same headers and properties (ids aside), the same body, and decode alike
    assert set(ours) == set(theirs)
    assert set(ours["headers"]) == set(theirs["headers"])
    assert {k for k in theirs["properties"] if k != "kwargsrepr"} == set(ours["properties"])
    for part, same in (("headers", ("task", "kwargsrepr", "argsrepr", "retries")), ("properties", ("delivery_info",))):
        assert {k: ours[part][k] for k in same} == {k: theirs[part][k] for k in same}
    assert ours["headers"]["id"] == ours["headers"]["root_id"] == ours["properties"]["correlation_id"]
    assert writer.decode_message(json.dumps(ours).encode()) == writer.decode_message(json.dumps(theirs).encode())
    assert celery_message.task_kwargs(ours) == kwargs

"""A node's signed answer to the ``accel_node`` broadcast: what the scheduler takes and what it leaves out.

The answers decide which queues a plan sends jobs to, and anyone who reaches the broker can answer a broadcast.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accelerate_core import wire
from accelerate_core.contracts import NodeReport
from accelerate_core.signing import FleetKey
from scheduler.nodes import answer_report
from tests.support.fleet_key import FLEET_KEY_HEX
from workers.node import signed_answer

KEY = FleetKey(bytes.fromhex(FLEET_KEY_HEX))
OTHER = FleetKey(b"\x01" * 32)
NODE = "cuda0@gpu1"
REPORT = NodeReport(node=NODE, pid=7, queues=("hw.cuda", "hw.cuda.h100-80gb-hbm3"), processed=3, at=1.5)
CHALLENGE = "0123456789abcdef" * 2


def test_a_node_answer_signed_for_this_broadcast_is_taken() -> None:
    assert answer_report(NODE, signed_answer(KEY, CHALLENGE, REPORT), KEY, CHALLENGE) == REPORT


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(signed_answer(KEY, "f" * 32, REPORT), id="replayed-from-another-broadcast"),
        pytest.param(signed_answer(OTHER, CHALLENGE, REPORT), id="another-key"),
        pytest.param({"report": wire.encode(REPORT)}, id="unsigned"),
        pytest.param(wire.encode(REPORT), id="bare-report-of-an-older-node"),
        pytest.param({"report": {"node": NODE, "queues": "hw.cuda"}, "sig": "00" * 32}, id="not-a-report"),
        pytest.param({"error": "No such command"}, id="an-error-reply"),
        pytest.param(None, id="nothing"),
    ],
)
def test_an_answer_not_signed_for_this_broadcast_is_left_out(body: object, caplog: pytest.LogCaptureFixture) -> None:
    assert answer_report(NODE, body, KEY, CHALLENGE) is None
    assert NODE in caplog.text and "left out" in caplog.text


def test_a_signed_answer_under_another_nodes_name_is_left_out() -> None:
    # A real node's answer, forwarded by another node that answers the same broadcast
    assert answer_report("forger@box", signed_answer(KEY, CHALLENGE, REPORT), KEY, CHALLENGE) is None


def test_a_report_changed_after_signing_is_left_out() -> None:
    body = signed_answer(KEY, CHALLENGE, REPORT)
    body["report"]["queues"] = ["hw.cuda", "hw.rocm"]
    assert answer_report(NODE, body, KEY, CHALLENGE) is None


def test_a_challenge_of_the_wrong_shape_is_answered_with_a_signature_no_broadcast_accepts() -> None:
    body = signed_answer(KEY, {"not": "a string"}, REPORT)
    assert answer_report(NODE, body, KEY, CHALLENGE) is None
    assert answer_report(NODE, body, KEY, "") == REPORT  # signed over the empty challenge, which no broadcast sends


def test_without_a_fleet_key_the_report_is_read_unchecked() -> None:
    assert answer_report(NODE, signed_answer(OTHER, "f" * 32, REPORT), None, CHALLENGE) == REPORT


@given(queues=st.lists(st.text(min_size=1, max_size=20), max_size=4), processed=st.integers(0, 2**40))
def test_any_report_survives_the_broker_json_round_trip_with_its_signature(queues: list[str], processed: int) -> None:
    import json

    report = NodeReport(node=NODE, queues=tuple(queues), processed=processed, at=0.1)
    body = json.loads(json.dumps(signed_answer(KEY, CHALLENGE, report)))
    assert answer_report(NODE, body, KEY, CHALLENGE) == report

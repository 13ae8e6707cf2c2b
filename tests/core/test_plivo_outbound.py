"""The pure parts of placing a call on Plivo: the create request's body and Plivo's error answers."""

from __future__ import annotations

import json

from gateway.carriers.base import OutboundRequest
from gateway.carriers.plivo.outbound import _error_text, create_body

BASE = "https://gw.example.com/prefix/"


def request(**fields: object) -> OutboundRequest:
    return OutboundRequest(**{"to": "+14155550123", "from_": "+14155550100", "profile": "reminder",
                              "public_base": BASE, **fields})  # type: ignore[arg-type]


def test_the_body_names_plivo_s_numbers_and_the_gateway_s_callbacks() -> None:
    body = create_body(request())
    assert (body["from"], body["to"]) == ("14155550100", "14155550123")
    assert body["answer_url"] == "https://gw.example.com/prefix/plivo/placed-answer"
    assert (body["ring_url"], body["hangup_url"]) == ("https://gw.example.com/prefix/plivo/ring",
                                                      "https://gw.example.com/prefix/plivo/hangup")
    assert {body[k] for k in ("answer_method", "ring_method", "hangup_method", "machine_detection_method")} == {"POST"}
    assert (body["machine_detection"], body["machine_detection_url"]) == (
        "true", "https://gw.example.com/prefix/plivo/machine")


def test_the_detection_time_fits_the_profile_s_wait_within_plivo_s_bounds() -> None:
    assert create_body(request(machine_wait_s=6.0))["machine_detection_time"] == 6000
    assert create_body(request(machine_wait_s=0.5))["machine_detection_time"] == 2000
    assert create_body(request(machine_wait_s=60))["machine_detection_time"] == 10000


def test_without_detection_the_body_asks_for_none() -> None:
    body = create_body(request(detect_machine=False))
    assert not [key for key in body if key.startswith("machine_detection")]


def test_plivo_s_error_answers_are_read_short() -> None:
    assert _error_text(json.dumps({"api_id": "x", "error": "invalid 'to'\nnumber"})) == "invalid 'to' number"
    assert _error_text(json.dumps({"error": {"to": ["bad"]}})) == '{"to": ["bad"]}'
    assert _error_text("Authentication failed") == "Authentication failed"
    assert _error_text("") == "no detail"
    assert len(_error_text("x" * 1000)) == 200

"""The pure parts of placing a call through Asterisk's ARI: the originate request, ARI's answers and
the dialplan's AMDSTATUS in the gateway's words, the settings and what is missing to place calls."""

from __future__ import annotations

import pytest

from gateway.carriers.asterisk.carrier import AsteriskCarrier
from gateway.carriers.asterisk.outbound import (
    answering_machine,
    channel_url,
    endpoint_for,
    originate_body,
    originate_url,
    placed_state,
    refusal,
    refused,
)
from gateway.carriers.asterisk.settings import AsteriskSettings
from gateway.carriers.base import OutboundRequest
from gateway.config import ConfigError, parse_config
from gateway.core.outbound import ANSWERED_BY

PROFILES = "profiles:\n  main: {model: gpt-realtime}\n"
PLACING = ('asterisk: {username: pbx, password: "${WS}", ari_url: "http://pbx.example.com:8088/", '
           'ari_username: gateway, ari_password: "${ARI}", outbound_endpoint: "PJSIP/{number}@trunk"}\n')
ENV = {"WS": "ws-secret-1", "ARI": "ari-secret-2"}


def request(**fields: object) -> OutboundRequest:
    return OutboundRequest(**{"to": "+14155550123", "from_": "+14155550100", "profile": "main",
                              "public_base": "https://gw.example.com/", **fields})  # type: ignore[arg-type]


def test_the_originate_request_dials_the_endpoint_into_the_dialplan_with_the_chosen_channel_id() -> None:
    config = parse_config(PLACING + PROFILES, env=ENV)
    settings = AsteriskSettings.of(config)
    assert originate_url(settings.ari_url or "") == "http://pbx.example.com:8088/ari/channels"
    assert channel_url(settings.ari_url or "", "a/b c") == "http://pbx.example.com:8088/ari/channels/a%2Fb%20c"
    body = originate_body(settings, request(), "0b0e5f3c-call")
    assert body == {
        "endpoint": "PJSIP/+14155550123@trunk", "context": "gateway-outbound", "extension": "s", "priority": 1,
        "callerId": "+14155550100", "timeout": 30, "channelId": "0b0e5f3c-call",
        "variables": {"GATEWAY_CALL": "0b0e5f3c-call", "GATEWAY_TO": "+14155550123",
                      "GATEWAY_FROM": "+14155550100", "GATEWAY_AMD": "yes"}}
    assert originate_body(settings, request(detect_machine=False), "x")["variables"]["GATEWAY_AMD"] == "no"
    assert "ari-secret-2" not in repr(body)  # the password travels only as the request's credentials


def test_the_endpoint_template_takes_the_number_with_or_without_its_plus() -> None:
    assert endpoint_for("PJSIP/{number}@trunk", "+441632960001") == "PJSIP/+441632960001@trunk"
    assert endpoint_for("PJSIP/00{digits}@trunk", "+441632960001") == "PJSIP/00441632960001@trunk"
    text = PLACING.replace("PJSIP/{number}@trunk", "Local/{digits}@dial-out") + PROFILES
    settings = AsteriskSettings.of(parse_config(text.replace("}\n", ", outbound_context: calls, "
                                                             "outbound_extension: bot, outbound_priority: 3, "
                                                             "ring_timeout_s: 45}\n", 1), env=ENV))
    body = originate_body(settings, request(), "id")
    assert (body["endpoint"], body["context"], body["extension"], body["priority"], body["timeout"]) == (
        "Local/14155550123@dial-out", "calls", "bot", 3, 45)


@pytest.mark.parametrize(("old", "new", "key", "message"), [
    ("PJSIP/{number}@trunk", "PJSIP/trunk", "outbound_endpoint", "expected an ARI endpoint with {number}"),
    ("PJSIP/{number}@trunk", "PJSIP/{number}@{trunk}", "outbound_endpoint",
     "only {number} and {digits} may stand in the endpoint"),
    ("http://pbx.example.com:8088/", "pbx.example.com:8088", "ari_url", "expected a URL starting with https://"),
    ("ari_username: gateway,", "ari_username: gateway, ari_poll_s: 0,", "ari_poll_s", "greater than 0"),
])
def test_bad_outbound_settings_are_clear_config_errors(old: str, new: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(PLACING.replace(old, new) + PROFILES, env=ENV)
    (problem,) = info.value.problems
    assert f"asterisk.{key}" in problem and message in problem


def test_the_ari_password_comes_from_the_environment_only() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(PLACING.replace('"${ARI}"', "literal-password") + PROFILES, env=ENV)
    assert any("asterisk.ari_password: secrets come from the environment only" in p for p in info.value.problems)
    config = parse_config(PLACING + PROFILES, env=ENV)
    assert "ari-secret-2" in AsteriskSettings.of(config).secret_values()  # scrubbed from logs and recordings


def test_what_is_missing_to_place_calls_is_named() -> None:
    assert refusal(parse_config(PLACING + PROFILES, env=ENV)) is None
    assert AsteriskCarrier().outbound_refusal(parse_config(PLACING + PROFILES, env=ENV)) is None
    why = refusal(parse_config(PROFILES, env={}))
    assert why is not None and why.startswith("asterisk needs asterisk.ari_url, asterisk.ari_username, "
                                              "asterisk.ari_password (ASTERISK_ARI_PASSWORD), "
                                              "asterisk.outbound_endpoint")
    assert "media socket credentials" in why
    partial = parse_config(PLACING.replace(' ari_password: "${ARI}",', "") + PROFILES, env=ENV)
    assert refusal(partial) == "asterisk needs asterisk.ari_password (ASTERISK_ARI_PASSWORD) to place calls"
    assert any("Asterisk places no calls without asterisk.ari_password" in n
               for n in AsteriskSettings.of(partial).notes())
    no_media = parse_config(PLACING.replace('username: pbx, password: "${WS}", ', "") + PROFILES, env=ENV)
    assert "media socket credentials" in (refusal(no_media) or "")


@pytest.mark.parametrize(("status", "result"), [
    ("HUMAN", "human"), ("human", "human"), (" MACHINE ", "machine_end_silence"), ("NOTSURE", "unknown"),
    ("HANGUP", "unknown"), ("", "unknown"), (None, "unknown"), ("FAX<script>", "unknown"),
])
def test_amdstatus_in_the_gateway_s_words(status: str | None, result: str) -> None:
    assert answering_machine(status) == result
    assert answering_machine(status) in ANSWERED_BY


@pytest.mark.parametrize(("answer", "state"), [
    ({"id": "x", "state": "Down"}, "queued"), ({"state": "Ringing"}, "ringing"), ({"state": "Up"}, "answered"),
    ({"state": "Weird"}, "queued"), ({"state": 7}, "queued"), (None, "queued"), ([], "queued"),
])
def test_the_originated_channel_s_state_is_the_placed_call_s(answer: object, state: str) -> None:
    assert placed_state(answer) == state


def test_ari_s_error_answers_become_the_api_s_errors() -> None:
    error = refused(401, None, "Authentication required")
    assert error.status == 502 and "ASTERISK_ARI_PASSWORD" in str(error)
    error = refused(400, {"message": "Endpoint must be specified"}, "")
    assert error.status == 400 and str(error) == "Asterisk refused the call (HTTP 400): Endpoint must be specified"
    error = refused(409, {"message": "Channel with given unique ID already exists"}, "")
    assert error.status == 400 and "already exists" in str(error)
    error = refused(500, {"message": "Allocation failed"}, "")
    assert error.status == 502 and "HTTP 500" in str(error) and "Allocation failed" in str(error)
    error = refused(503, None, "<html>\n  Service   Unavailable " + "x" * 1000)
    assert error.status == 502 and "\n" not in str(error) and "Service Unavailable" in str(error)
    assert len(str(error)) < 400

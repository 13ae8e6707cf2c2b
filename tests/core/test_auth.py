"""Carrier authentication: Twilio signatures, call tokens, ACS JWT validator arguments, Event Grid helpers
(ACS JWTs against a JWKS endpoint: tests/sockets/test_acs_jwks.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from typing import Any
from urllib.parse import quote

import pytest
from multidict import MultiDict
from twilio.request_validator import RequestValidator

from gateway.auth import CallTokens, TokenError, public_url_for, secret_matches
from gateway.carriers.acs.auth import AcsJwtValidator, eventgrid_validation_code
from gateway.carriers.twilio.auth import check_twilio_signature, twilio_signature

# ---------------------------------------------------------------------------------------------
# Twilio signatures
# ---------------------------------------------------------------------------------------------

TOKEN = "12345"
VECTOR_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
VECTOR_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}
VECTOR_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="

AUTH_TOKEN = "d1f0c3a5b7e94f2a8c6d0e1f2a3b4c5d"
VOICE_URL = "https://gw.example.com/twilio/voice"
MEDIA_URL = "wss://gw.example.com/twilio/media"
FORM = {"CallSid": "CA0123456789abcdef0123456789abcdef", "From": "+14255550123", "To": "+18005550100",
        "CallStatus": "ringing", "Direction": "inbound"}


def test_twilio_published_vector() -> None:
    assert twilio_signature(TOKEN, VECTOR_URL, VECTOR_PARAMS) == VECTOR_SIGNATURE
    assert check_twilio_signature(TOKEN, VECTOR_URL, VECTOR_PARAMS, VECTOR_SIGNATURE)


def test_twilio_library_signatures_accepted() -> None:
    validator = RequestValidator(AUTH_TOKEN)
    form_sig = validator.compute_signature(VOICE_URL, FORM)
    assert check_twilio_signature(AUTH_TOKEN, VOICE_URL, FORM, form_sig)
    media_sig = validator.compute_signature(MEDIA_URL, {})
    assert check_twilio_signature(AUTH_TOKEN, MEDIA_URL, None, media_sig)
    assert check_twilio_signature(AUTH_TOKEN, MEDIA_URL, {}, media_sig)


def test_twilio_library_accepts_ours() -> None:
    validator = RequestValidator(AUTH_TOKEN)
    assert validator.validate(VOICE_URL, FORM, twilio_signature(AUTH_TOKEN, VOICE_URL, FORM))
    assert validator.validate(MEDIA_URL, {}, twilio_signature(AUTH_TOKEN, MEDIA_URL))
    url = "https://gw.example.com/twilio/voice?route=sales&x=a%20b"
    assert validator.validate(url, FORM, twilio_signature(AUTH_TOKEN, url, FORM))


def test_twilio_repeated_names_match_library() -> None:
    multi = MultiDict([("b", "x"), ("a", "2"), ("a", "1"), ("a", "2")])
    theirs = RequestValidator(AUTH_TOKEN).compute_signature(VOICE_URL, multi)
    assert twilio_signature(AUTH_TOKEN, VOICE_URL, multi) == theirs
    assert twilio_signature(AUTH_TOKEN, VOICE_URL, {"a": ["2", "1"], "b": "x"}) == theirs
    assert check_twilio_signature(AUTH_TOKEN, VOICE_URL, multi, theirs)
    # Order of names must not matter, the values must.
    assert twilio_signature(AUTH_TOKEN, VOICE_URL, {"b": "x", "a": ["1", "2"]}) == theirs
    assert twilio_signature(AUTH_TOKEN, VOICE_URL, {"a": ["1", "3"], "b": "x"}) != theirs


@pytest.mark.parametrize(
    ("token", "url", "params"),
    [
        ("wrong-token", VOICE_URL, FORM),
        (AUTH_TOKEN, VOICE_URL + "?x=1", FORM),
        (AUTH_TOKEN, "https://evil.example.com/twilio/voice", FORM),
        (AUTH_TOKEN, "http://gw.example.com/twilio/voice", FORM),
        (AUTH_TOKEN, VOICE_URL, {**FORM, "To": "+18005550199"}),
        (AUTH_TOKEN, VOICE_URL, {**FORM, "Extra": "1"}),
        (AUTH_TOKEN, VOICE_URL, {k: v for k, v in FORM.items() if k != "From"}),
        (AUTH_TOKEN, VOICE_URL, None),
    ],
)
def test_twilio_tampering_rejected(token: str, url: str, params: dict[str, str] | None) -> None:
    signature = RequestValidator(AUTH_TOKEN).compute_signature(VOICE_URL, FORM)
    assert check_twilio_signature(AUTH_TOKEN, VOICE_URL, FORM, signature)
    assert not check_twilio_signature(token, url, params, signature)


@pytest.mark.parametrize("signature", [None, "", "not-base64!", "é" * 28, VECTOR_SIGNATURE[:-2]])
def test_twilio_bad_signature_values(signature: str | None) -> None:
    assert not check_twilio_signature(TOKEN, VECTOR_URL, VECTOR_PARAMS, signature)


def test_twilio_empty_token_never_matches() -> None:
    assert not check_twilio_signature("", VOICE_URL, FORM, twilio_signature("", VOICE_URL, FORM))


def test_twilio_non_text_param_rejected_not_raised() -> None:
    signature = twilio_signature(AUTH_TOKEN, VOICE_URL, FORM)
    assert not check_twilio_signature(AUTH_TOKEN, VOICE_URL, {**FORM, "f": object()}, signature)  # type: ignore[dict-item]
    assert not check_twilio_signature(AUTH_TOKEN, "https://gw.example.com:port/x", None, signature)


@pytest.mark.parametrize(
    ("signed", "checked"),
    [
        ("https://gw.example.com:443/twilio/voice", "https://gw.example.com/twilio/voice"),
        ("https://gw.example.com/twilio/voice", "https://gw.example.com:443/twilio/voice"),
        ("http://gw.example.com:80/twilio/voice?a=1", "http://gw.example.com/twilio/voice?a=1"),
        ("wss://gw.example.com:443/twilio/media", "wss://gw.example.com/twilio/media"),
        ("wss://gw.example.com/twilio/media", "wss://gw.example.com:443/twilio/media"),
        ("ws://127.0.0.1:80/twilio/media", "ws://127.0.0.1/twilio/media"),
        ("https://gw.example.com:8443/twilio/voice", "https://gw.example.com:8443/twilio/voice"),
    ],
)
def test_twilio_default_port_variants(signed: str, checked: str) -> None:
    signature = twilio_signature(AUTH_TOKEN, signed, FORM)
    assert check_twilio_signature(AUTH_TOKEN, checked, FORM, signature)


@pytest.mark.parametrize(
    ("signed", "checked"),
    [
        ("https://gw.example.com/twilio/voice", "https://gw.example.com:8443/twilio/voice"),
        ("https://gw.example.com:8443/twilio/voice", "https://gw.example.com/twilio/voice"),
        ("https://gw.example.com:80/twilio/voice", "https://gw.example.com/twilio/voice"),
        ("wss://gw.example.com:80/twilio/media", "wss://gw.example.com/twilio/media"),
    ],
)
def test_twilio_other_ports_not_interchangeable(signed: str, checked: str) -> None:
    signature = twilio_signature(AUTH_TOKEN, signed, FORM)
    assert not check_twilio_signature(AUTH_TOKEN, checked, FORM, signature)


@pytest.mark.parametrize(
    ("base", "path", "query", "websocket", "expected"),
    [
        ("https://gw.example.com", "/twilio/voice", "", False, "https://gw.example.com/twilio/voice"),
        ("https://gw.example.com/", "/twilio/voice", "", False, "https://gw.example.com/twilio/voice"),
        ("https://gw.example.com", "/twilio/media", "", True, "wss://gw.example.com/twilio/media"),
        ("http://127.0.0.1:8080", "/twilio/media", "", True, "ws://127.0.0.1:8080/twilio/media"),
        ("https://gw.example.com/prefix/", "/twilio/voice", "a=1&b=2", False,
         "https://gw.example.com/prefix/twilio/voice?a=1&b=2"),
        ("HTTPS://gw.example.com", "twilio/voice", "?a=1", False, "https://gw.example.com/twilio/voice?a=1"),
        ("wss://gw.example.com", "/twilio/voice", "", False, "https://gw.example.com/twilio/voice"),
        ("wss://gw.example.com", "/twilio/media", "", True, "wss://gw.example.com/twilio/media"),
    ],
)
def test_public_url_for(base: str, path: str, query: str, websocket: bool, expected: str) -> None:
    assert public_url_for(base, path, query, websocket=websocket) == expected


@pytest.mark.parametrize("base", ["gw.example.com", "ftp://gw.example.com", "https://", ""])
def test_public_url_for_rejects_bad_base(base: str) -> None:
    with pytest.raises(ValueError):
        public_url_for(base, "/twilio/voice")


def test_public_url_then_library_signature() -> None:
    """A proxy rewrote scheme/host; the check still succeeds against the configured public URL."""
    url = public_url_for("https://gw.example.com/", "/twilio/media", websocket=True)
    signature = RequestValidator(AUTH_TOKEN).compute_signature("wss://gw.example.com/twilio/media", {})
    assert check_twilio_signature(AUTH_TOKEN, url, None, signature)
    assert not check_twilio_signature(AUTH_TOKEN, "http://10.0.0.5:8080/twilio/media", None, signature)


# ---------------------------------------------------------------------------------------------
# Call tokens
# ---------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


KEY = b"0123456789abcdef0123456789abcdef"
CLAIMS = {"call": "CA0123456789abcdef", "to": "+18005550100", "profile": "sales/ünïcode"}


def test_call_token_round_trip() -> None:
    tokens = CallTokens(KEY, clock=FakeClock(1_700_000_000.0))
    token = tokens.issue(CLAIMS, ttl_s=60)
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", token)
    assert quote(token, safe="") == token
    assert tokens.verify(token) == CLAIMS
    # Another replica with the same key accepts it.
    assert CallTokens(KEY, clock=FakeClock(1_700_000_030.0)).verify(token) == CLAIMS


def test_call_token_default_clock_is_wall_time() -> None:
    tokens = CallTokens(KEY)
    token = tokens.issue({"call": "x"}, ttl_s=60)
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert abs(payload["exp"] - (time.time() + 60)) < 5


def test_call_token_expiry() -> None:
    clock = FakeClock(1000.0)
    tokens = CallTokens(KEY, clock=clock)
    token = tokens.issue(CLAIMS, ttl_s=30)
    clock.t = 1029.9
    assert tokens.verify(token) == CLAIMS
    clock.t = 1030.0
    with pytest.raises(TokenError) as caught:
        tokens.verify(token)
    assert caught.value.reason == "expired"


def _resign(payload: dict[str, Any], key: bytes) -> str:
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    sig = base64.urlsafe_b64encode(hmac.new(key, body.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
    return f"{body}.{sig}"


def test_call_token_tampering() -> None:
    clock = FakeClock(1000.0)
    tokens = CallTokens(KEY, clock=clock)
    token = tokens.issue(CLAIMS, ttl_s=30)
    payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=="))
    body["to"] = "+19995550000"
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    longer_life = dict(body, to=CLAIMS["to"], exp=body["exp"] + 3600)
    for bad in (f"{forged}.{signature}", f"{payload}.{flipped}", _resign(longer_life, b"other key")):
        with pytest.raises(TokenError) as caught:
            tokens.verify(bad)
        assert caught.value.reason == "bad signature"
    # Sanity: the same forgery signed with the right key is accepted, so it is the key that matters.
    assert tokens.verify(_resign(longer_life, KEY)) == CLAIMS


def test_call_token_wrong_key() -> None:
    token = CallTokens(KEY).issue(CLAIMS, ttl_s=30)
    with pytest.raises(TokenError) as caught:
        CallTokens(b"another key entirely").verify(token)
    assert caught.value.reason == "bad signature"
    assert token not in str(caught.value)


@pytest.mark.parametrize(
    "garbage",
    ["", ".", "abc", "a.b.c", "!!.??", "abc.", ".abc", "a" * 5000 + ".b", "ab cd.ef", "YQ.YQ=="],
)
def test_call_token_garbage(garbage: str) -> None:
    with pytest.raises(TokenError) as caught:
        CallTokens(KEY).verify(garbage)
    assert caught.value.reason == "malformed"


@pytest.mark.parametrize(
    "payload",
    [[1, 2], {"exp": "soon"}, {"exp": True}, {"call": "x"}, {"call": 5, "exp": 2e9}],
)
def test_call_token_signed_but_malformed(payload: Any) -> None:
    with pytest.raises(TokenError) as caught:
        CallTokens(KEY, clock=FakeClock(1000.0)).verify(_resign(payload, KEY))
    assert caught.value.reason == "malformed"


def test_call_token_names_its_carrier_and_is_spent_once() -> None:
    clock = FakeClock(1000.0)
    tokens = CallTokens(KEY, clock=clock)
    twilio_token = tokens.issue({"call": "CA1"}, ttl_s=30, carrier="twilio")
    assert tokens.verify(twilio_token, carrier="twilio") == {"call": "CA1", "carrier": "twilio"}
    with pytest.raises(TokenError) as caught:
        tokens.verify(twilio_token, carrier="acs")
    assert caught.value.reason == "for another carrier"
    tokens.spend(twilio_token)
    with pytest.raises(TokenError) as caught:
        tokens.spend(twilio_token)
    assert caught.value.reason == "already used"
    tokens.spend(tokens.issue({"call": "CA2"}, ttl_s=30, carrier="twilio"))  # another token: its own use
    clock.t += 30
    with pytest.raises(TokenError) as caught:
        tokens.spend(twilio_token)
    assert caught.value.reason == "expired"
    assert tokens.spend(tokens.issue({"call": "CA3"}, ttl_s=30)) is None
    assert len(tokens._spent) == 1  # the expired ones are forgotten


def test_call_token_issue_arguments() -> None:
    tokens = CallTokens(KEY)
    with pytest.raises(ValueError):
        tokens.issue({"exp": "1"}, ttl_s=30)
    with pytest.raises(ValueError):
        tokens.issue(CLAIMS, ttl_s=0)
    with pytest.raises(TypeError):
        tokens.issue({"n": 1}, ttl_s=30)  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        CallTokens(b"")
    with pytest.raises(TypeError):
        CallTokens("text key")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# ACS JWTs (tokens checked against a JWKS endpoint: tests/sockets/test_acs_jwks.py)
# ---------------------------------------------------------------------------------------------


def test_acs_validator_arguments() -> None:
    with pytest.raises(ValueError):
        AcsJwtValidator("https://example.invalid/keys", audience="")


# ---------------------------------------------------------------------------------------------
# Event Grid
# ---------------------------------------------------------------------------------------------

VALIDATION = [{
    "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
    "topic": "/subscriptions/x/resourceGroups/y/providers/Microsoft.Communication/communicationServices/z",
    "subject": "",
    "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
             "validationUrl": "https://rp-eastus2.eventgrid.azure.net/eventsubscriptions/x/validate?id=1"},
    "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
    "eventTime": "2025-01-01T10:00:00Z",
    "metadataVersion": "1",
    "dataVersion": "2",
}]
INCOMING = [{
    "id": "2d6", "eventType": "Microsoft.Communication.IncomingCall",
    "data": {"incomingCallContext": "ctx", "correlationId": "b6e1", "validationCode": "not-this"},
}]


def test_eventgrid_validation_code() -> None:
    assert eventgrid_validation_code(VALIDATION) == "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"
    assert eventgrid_validation_code(VALIDATION[0]) == "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"
    assert eventgrid_validation_code(INCOMING + VALIDATION) == "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"


@pytest.mark.parametrize(
    "body",
    [
        INCOMING,
        [],
        None,
        "Microsoft.EventGrid.SubscriptionValidationEvent",
        [1, "x", None],
        [{"eventType": "Microsoft.EventGrid.SubscriptionValidationEvent"}],
        [{"eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "data": "code"}],
        [{"eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "data": {"validationCode": 7}}],
        [{"eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "data": {"validationCode": ""}}],
    ],
)
def test_eventgrid_not_a_validation(body: Any) -> None:
    assert eventgrid_validation_code(body) is None


@pytest.mark.parametrize(
    ("expected", "given", "result"),
    [
        (None, None, True),
        (None, "anything", True),
        ("s3cret-value", "s3cret-value", True),
        ("s3cret-value", "s3cret-valuE", False),
        ("s3cret-value", "s3cret-valu", False),
        ("s3cret-value", None, False),
        ("s3cret-value", "", False),
        ("ünï", "ünï", True),
    ],
)
def test_secret_matches(expected: str | None, given: str | None, result: bool) -> None:
    assert secret_matches(expected, given) is result

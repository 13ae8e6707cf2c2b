"""Genesys AudioConnector: the AudioHook codec and the request signature (no sockets).

Messages are written from Genesys's AudioHook protocol documentation; the signature test vector is the
documented example request (wss://audiohook.example.com/api/v1/voicebiometrics/ws)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audio import G711_ULAW
from gateway.call import CLEAR, Call, Hangup, PlayAudio, SendMark
from gateway.carriers.genesys import codec
from gateway.carriers.genesys.auth import (
    AuthError,
    NonceCache,
    decode_client_secret,
    parse_signature_input,
    sign_request,
    verify_request,
)
from gateway.carriers.genesys.carrier import GenesysCarrier
from gateway.config import parse_config
from gateway.wire import WireCall

SESSION = "30b0e395-84d3-4570-ac13-9a62d8f514c0"

# --- the request signature -----------------------------------------------------------------------

DOC_API_KEY = "SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh"
DOC_SECRET = "TXlTdXBlclNlY3JldEtleVRlbGxOby0xITJAMyM0JDU="
DOC_HEADERS = {
    "Host": "audiohook.example.com",
    "Audiohook-Organization-Id": "d7934305-0972-4844-938e-9060eef73d05",
    "Audiohook-Correlation-Id": "e160e428-53e2-487c-977d-96989bf5c99d",
    "Audiohook-Session-Id": SESSION,
    "X-API-KEY": DOC_API_KEY,
    "Signature": "sig1=:NZBwyBHRRyRoeLqy1IzOa9VYBuI8TgMFt2GRDkDuJh4=:",
    "Signature-Input": 'sig1=("@request-target" "@authority" "audiohook-organization-id" "audiohook-session-id" '
                       '"audiohook-correlation-id" "x-api-key");keyid="SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh";'
                       'nonce="VGhpc0lzQVVuaXF1ZU5vbmNl";alg="hmac-sha256";created=1641013200;expires=3282026430',
}
DOC_NOW = 1641013260.0


def _verify(headers: dict[str, str], **kwargs: Any) -> Any:
    options: dict[str, Any] = {"method": "GET", "target": "/api/v1/voicebiometrics/ws",
                               "authorities": ["audiohook.example.com"], "scheme": "wss", "headers": headers,
                               "api_key": DOC_API_KEY, "client_secret": decode_client_secret(DOC_SECRET),
                               "now": DOC_NOW}
    options.update(kwargs)
    return verify_request(**options)


def test_the_documented_example_signature_is_computed_from_the_rfc_9421_signature_base() -> None:
    # the signature base written out by hand, as RFC 9421 defines it for these covered components
    base = "\n".join([
        '"@request-target": /api/v1/voicebiometrics/ws',
        '"@authority": audiohook.example.com',
        '"audiohook-organization-id": d7934305-0972-4844-938e-9060eef73d05',
        f'"audiohook-session-id": {SESSION}',
        '"audiohook-correlation-id": e160e428-53e2-487c-977d-96989bf5c99d',
        f'"x-api-key": {DOC_API_KEY}',
        '"@signature-params": ("@request-target" "@authority" "audiohook-organization-id" "audiohook-session-id" '
        '"audiohook-correlation-id" "x-api-key");keyid="SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh";'
        'nonce="VGhpc0lzQVVuaXF1ZU5vbmNl";alg="hmac-sha256";created=1641013200;expires=3282026430',
    ])
    digest = hmac.new(base64.b64decode(DOC_SECRET), base.encode(), hashlib.sha256).digest()
    assert base64.b64encode(digest).decode() == "NZBwyBHRRyRoeLqy1IzOa9VYBuI8TgMFt2GRDkDuJh4="
    signature = _verify(DOC_HEADERS)
    assert signature.label == "sig1" and signature.param["nonce"] == "VGhpc0lzQVVuaXF1ZU5vbmNl"
    # and the softphone signs exactly as Genesys does
    signed = sign_request(target="/api/v1/voicebiometrics/ws", authority="audiohook.example.com",
                          headers=DOC_HEADERS, api_key=DOC_API_KEY, client_secret=DOC_SECRET, created=1641013200,
                          expires=3282026430, nonce="VGhpc0lzQVVuaXF1ZU5vbmNl")
    assert signed == {"Signature": DOC_HEADERS["Signature"], "Signature-Input": DOC_HEADERS["Signature-Input"]}


def _resigned(created: int, expires: int | None, **header_changes: str) -> dict[str, str]:
    """The documented request, signed again with other times (independently of sign_request)."""
    params = (f';keyid="{DOC_API_KEY}";nonce="n-{created}";alg="hmac-sha256";created={created}'
              + (f";expires={expires}" if expires is not None else ""))
    inner = ('("@request-target" "@authority" "audiohook-organization-id" "audiohook-session-id" '
             '"audiohook-correlation-id" "x-api-key")')
    headers = dict(DOC_HEADERS, **header_changes)
    lines = ['"@request-target": /api/v1/voicebiometrics/ws', '"@authority": audiohook.example.com']
    for name in ("audiohook-organization-id", "audiohook-session-id", "audiohook-correlation-id", "x-api-key"):
        value = next(v for k, v in headers.items() if k.lower() == name)
        lines.append(f'"{name}": {value}')
    lines.append(f'"@signature-params": {inner}{params}')
    digest = hmac.new(base64.b64decode(DOC_SECRET), "\n".join(lines).encode(), hashlib.sha256).digest()
    headers["Signature-Input"] = f"sig1={inner}{params}"
    headers["Signature"] = f"sig1=:{base64.b64encode(digest).decode()}:"
    return headers


def test_signature_times_are_checked() -> None:
    now = int(DOC_NOW)
    assert _verify(_resigned(now - 10, now + 60)).param["created"] == now - 10
    with pytest.raises(AuthError, match="expired"):
        _verify(_resigned(now - 120, now - 60))
    with pytest.raises(AuthError, match="future"):
        _verify(_resigned(now + 600, now + 900))
    assert _verify(_resigned(now - 200, None), max_age_s=300).param.get("expires") is None
    with pytest.raises(AuthError, match="expired"):
        _verify(_resigned(now - 400, None), max_age_s=300)  # no expires: created plus the maximum age
    with pytest.raises(AuthError, match="expired"):
        _verify(_resigned(now - 400, now + 3600), max_age_s=300)  # a far expiry does not outlive the maximum age


@pytest.mark.parametrize(("change", "reason"), [
    ({"X-API-KEY": "another key"}, "bad X-API-KEY"),
    ({"Audiohook-Session-Id": "00000000-0000-0000-0000-000000000000"}, "bad signature"),
    ({"Signature": "sig1=:" + base64.b64encode(bytes(32)).decode() + ":"}, "bad signature"),
    ({"Signature": "sig2=:" + base64.b64encode(bytes(32)).decode() + ":"}, "no signature for the label"),
    ({"Signature-Input": DOC_HEADERS["Signature-Input"].replace(' "x-api-key"', "")}, "does not cover x-api-key"),
    ({"Signature-Input": DOC_HEADERS["Signature-Input"].replace("hmac-sha256", "rsa-pss-sha512")},
     "unsupported signature algorithm"),
    ({"Signature-Input": DOC_HEADERS["Signature-Input"].replace('keyid="SGVs', 'keyid="XGVs')}, "keyid"),
    ({"Signature-Input": 'sig1=("@request-target" "@authority"'}, "malformed"),
    ({"Signature": "sig1=:not base64!:"}, "malformed"),
])
def test_a_changed_or_forged_request_is_refused(change: dict[str, str], reason: str) -> None:
    with pytest.raises(AuthError, match=reason):
        _verify(dict(DOC_HEADERS, **change))


def test_the_target_authority_key_and_secret_are_all_bound() -> None:
    with pytest.raises(AuthError, match="bad signature"):
        _verify(DOC_HEADERS, target="/api/v1/voicebiometrics/ws?x=1")
    with pytest.raises(AuthError, match="bad signature"):
        _verify(DOC_HEADERS, authorities=["evil.example.com"])
    assert _verify(DOC_HEADERS, authorities=["gateway.internal:8080", "audiohook.example.com"])
    with pytest.raises(AuthError, match="bad signature"):
        _verify(DOC_HEADERS, client_secret=b"another secret")
    with pytest.raises(AuthError, match="bad X-API-KEY"):
        _verify(DOC_HEADERS, api_key="another key")
    unsigned = {k: v for k, v in DOC_HEADERS.items() if not k.startswith("Signature")}
    with pytest.raises(AuthError, match="not signed"):
        _verify(unsigned)
    with pytest.raises(AuthError, match="missing X-API-KEY"):
        _verify({k: v for k, v in DOC_HEADERS.items() if k != "X-API-KEY"})


def test_a_nonce_is_taken_once() -> None:
    nonces = NonceCache()
    _verify(DOC_HEADERS, nonces=nonces)
    with pytest.raises(AuthError, match="nonce used before"):
        _verify(DOC_HEADERS, nonces=nonces)
    small = NonceCache(limit=2)
    assert small.take("a", 10, 0) and small.take("b", 10, 0) and small.take("c", 10, 0)  # bounded: forgets
    assert not small.take("c", 10, 1)


def test_the_client_secret_must_be_base64() -> None:
    assert decode_client_secret(DOC_SECRET) == b"MySuperSecretKeyTellNo-1!2@3#4$5"
    with pytest.raises(ValueError, match="not base64"):
        decode_client_secret("not base64!")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.text(max_size=300))
def test_hostile_signature_headers_only_ever_give_an_auth_error(signature_input: str, signature: str) -> None:
    headers = dict(DOC_HEADERS, **{"Signature-Input": signature_input, "Signature": signature})
    with pytest.raises(AuthError):
        _verify(headers)


def test_header_bytes_that_are_not_utf8_only_ever_give_an_auth_error() -> None:
    """aiohttp hands on a header's bytes that are not UTF-8 as lone surrogates."""
    odd = "\udcff\udcfe"
    for name in ("X-API-KEY", "Audiohook-Session-Id", "Signature-Input", "Signature"):
        with pytest.raises(AuthError):
            _verify(dict(DOC_HEADERS, **{name: odd}))
    with pytest.raises(AuthError):
        _verify(dict(DOC_HEADERS, **{"Signature-Input": DOC_HEADERS["Signature-Input"].replace(
            'keyid="', 'keyid="' + odd)}))
    with pytest.raises(AuthError, match="bad signature"):
        _verify(dict(DOC_HEADERS, **{"Audiohook-Session-Id": SESSION + odd}))


def test_structured_field_parameters_are_read_strictly() -> None:
    (sig,) = parse_signature_input('a=("@authority" "x-api-key");created=1;keyid="k"')
    assert sig.components == ("@authority", "x-api-key") and sig.param == {"created": 1, "keyid": "k"}
    for bad in ('a=("X-Api-Key")', 'a=("x" "x")', 'a=("x");created="1"', 'a=("x");unknown=1', "a=1",
                'a=("x";sf)'):
        with pytest.raises(AuthError):
            parse_signature_input(bad)


# --- the AudioHook codec -------------------------------------------------------------------------

MONO = {"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000}
STEREO = {"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000}


def client(kind: str, seq: int, parameters: dict[str, Any] | None = None, serverseq: int = 0,
           session: str = SESSION) -> str:
    return json.dumps({"version": "2", "id": session, "type": kind, "seq": seq, "serverseq": serverseq,
                       "position": "PT0S", "parameters": parameters or {}})


def open_message(media: list[dict[str, Any]] | None = None, **extra: Any) -> str:
    parameters = {"organizationId": "d7934305-0972-4844-938e-9060eef73d05",
                  "conversationId": "090eaa2f-72fa-480a-83e0-8667ff89c0ec",
                  "participant": {"id": "883efee8-3d6c-4537-b500-6d7ca4b92fa0", "ani": "+1-555-555-1234",
                                  "aniName": "John Doe", "dnis": "+1-800-555-6789"},
                  "media": media if media is not None else [MONO, STEREO], "language": "en-US",
                  "customConfig": {}, **extra}
    return client("open", 1, parameters)


def new_call() -> Call:
    config = parse_config("profiles: {p: {model: m}}", env={})
    return Call(call_id="c", stream_id=SESSION, profile_name="p", profile=config.profiles["p"], started_at=0.0,
                audio=G711_ULAW, paced=True, piece_ms=codec.GENESYS_PIECE_MS)


def ready_call() -> Call:
    call = new_call()
    call.voicelive_connected(0.0)
    call.voicelive_event({"type": "session.updated", "session": {
        "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}}, 0.0)
    call.to_voicelive.clear()
    return call


def opened_leg(call: Call, media: list[dict[str, Any]] | None = None) -> codec.GenesysLeg:
    leg = codec.GenesysLeg()
    assert leg.feed(call, open_message(media), 1.0) is None
    return leg


def test_the_open_transaction_chooses_mono_pcmu_and_answers_opened() -> None:
    call = ready_call()
    leg = opened_leg(call, [STEREO, MONO])
    (opened,) = leg.outbox
    assert json.loads(opened) == {"version": "2", "type": "opened", "seq": 1, "clientseq": 1, "id": SESSION,
                                  "parameters": {"media": [MONO], "startPaused": False}}
    assert leg.opened is not None and leg.opened.dnis == "+1-800-555-6789" and not leg.stereo
    assert codec.called_number(leg.opened) == "+1-800-555-6789"


def test_a_stereo_only_offer_is_taken_and_only_the_external_channel_reaches_voicelive() -> None:
    call = ready_call()
    leg = opened_leg(call, [STEREO])
    assert json.loads(leg.outbox[0])["parameters"]["media"] == [STEREO] and leg.stereo
    external, internal = bytes(range(0, 160)), bytes(range(160, 255)) + bytes(65)
    frame = bytes(b for pair in zip(external, internal, strict=True) for b in pair)
    assert leg.feed(call, frame, 20.0) is None
    (append,) = [json.loads(m) for m in call.to_voicelive]
    assert base64.b64decode(append["audio"]) == external  # the µ-law bytes, not decoded, not mixed
    assert leg.feed(call, frame[:-1], 40.0)[0] == "bad-audio"  # an odd byte count is not whole pairs


@pytest.mark.parametrize(("media", "detail"), [
    ([{"type": "audio", "format": "L16", "channels": ["external"], "rate": 8000}], "L16 8000 Hz external"),
    ([{"type": "audio", "format": "PCMU", "channels": ["internal"], "rate": 8000}], "PCMU 8000 Hz internal"),
    ([{"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 16000}], "PCMU 16000 Hz"),
    ([], "offered: none"),
])
def test_an_open_without_a_usable_offer_is_refused_with_a_disconnect(media: list[dict[str, Any]],
                                                                     detail: str) -> None:
    call = ready_call()
    leg = codec.GenesysLeg()
    problem = leg.feed(call, open_message(media), 1.0)
    assert problem is not None and problem[0] == "unsupported-format" and detail in problem[1]
    (disconnect,) = [json.loads(m) for m in leg.outbox]
    assert disconnect["type"] == "disconnect" and disconnect["parameters"]["reason"] == "error"
    assert disconnect["parameters"]["info"] == codec.NO_MEDIA
    assert call.ended and call.end_reason == "unsupported_audio_format"


def test_caller_audio_passes_through_byte_for_byte() -> None:
    call = ready_call()
    leg = opened_leg(call)
    frame = bytes(range(256))[:160]
    assert leg.feed(call, frame, 20.0) is None
    assert json.loads(call.to_voicelive[0]) == {"type": "input_audio_buffer.append",
                                                "audio": base64.b64encode(frame).decode()}


def test_ping_close_and_sequence_numbers() -> None:
    call = ready_call()
    leg = opened_leg(call)
    leg.outbox.clear()
    assert leg.feed(call, client("ping", 2, {"rtt": "PT0.1S"}, serverseq=1), 10.0) is None
    assert leg.feed(call, client("ping", 2, serverseq=1), 11.0)[0] == "stale"  # a repeat: dropped
    assert leg.feed(call, client("ping", 5, serverseq=2), 12.0)[0] == "sequence"  # a gap: taken, reported
    pongs = [json.loads(m) for m in leg.outbox]
    assert [(m["type"], m["seq"], m["clientseq"]) for m in pongs] == [("pong", 2, 2), ("pong", 3, 5)]
    assert leg.feed(call, client("ping", 6, serverseq=9), 13.0)[0] == "sequence"  # serverseq never sent
    assert leg.feed(call, client("ping", 7, serverseq=4, session="other"), 14.0)[0] == "stale"
    leg.outbox.clear()
    assert leg.feed(call, client("close", 7, {"reason": "end"}, serverseq=4), 15.0) is None
    (closed,) = [json.loads(m) for m in leg.outbox]
    assert (closed["type"], closed["seq"], closed["clientseq"], closed["parameters"]) == ("closed", 5, 7, {})
    assert call.ended and call.end_reason == "caller_hung_up"


def test_keys_pause_update_playback_and_errors() -> None:
    call = ready_call()
    leg = opened_leg(call)
    assert leg.feed(call, client("dtmf", 2, {"digit": "5"}), 10.0) is None
    assert call.stats.dtmf == 1
    assert leg.feed(call, client("dtmf", 3, {"digit": "x"}), 11.0)[0] == "bad-dtmf"
    assert leg.feed(call, client("paused", 4), 12.0) is None and leg.state == "paused"
    assert leg.feed(call, bytes(160), 13.0)[0] == "audio-not-open"  # no audio while paused
    assert leg.feed(call, client("resumed", 5, {"start": "PT1S", "discarded": "PT0S"}), 14.0) is None
    assert leg.state == "open"
    for seq, kind in enumerate(("update", "playback_started", "playback_completed", "discarded"), start=6):
        assert leg.feed(call, client(kind, seq, {"language": "fr-FR"}), 15.0) is None
    problem = leg.feed(call, client("error", 10, {"code": 429, "message": "Too many requests"}), 16.0)
    assert problem is not None and problem[0] == "genesys-error" and "429" in problem[1]
    assert leg.feed(call, client("telepathy", 11), 17.0)[0] == "unknown-type"
    assert leg.outbox == [leg.outbox[0]]  # only the opened: none of these is answered


def test_messages_before_the_open_are_refused() -> None:
    call, leg = ready_call(), codec.GenesysLeg()
    assert leg.feed(call, bytes(160), 0.5)[0] == "audio-not-open"
    assert leg.feed(call, client("dtmf", 1, {"digit": "1"}), 0.6)[0] == "before-open"
    assert call.stats.dtmf == 0 and call.to_voicelive == []


def test_outbound_audio_flush_and_disconnect() -> None:
    call = ready_call()
    leg = opened_leg(call)
    leg.outbox.clear()
    audio = bytes(range(256)) * 10  # 2560 bytes: more than one frame
    assert leg.encode(PlayAudio(base64.b64encode(audio[:1600]).decode())) == audio[:1600]
    assert leg.encode(PlayAudio(base64.b64encode(audio).decode())) == [audio[:1600], audio[1600:]]
    assert leg.encode(SendMark("1")) is None  # Genesys acknowledges no particular audio
    event = json.loads(leg.encode(CLEAR))  # type: ignore[arg-type]
    assert event == {"version": "2", "type": "event", "seq": 2, "clientseq": 1, "id": SESSION,
                     "parameters": {"entities": [{"type": "barge_in", "data": {}}]}}
    transfer = json.loads(leg.encode(Hangup("transferred", "+14155550100")))  # type: ignore[arg-type]
    assert (transfer["type"], transfer["seq"]) == ("disconnect", 3)
    assert transfer["parameters"] == {"reason": "completed", "outputVariables": {
        "action": "transfer", "transferTo": "+14155550100", "endReason": "transferred"}}
    assert leg.encode(PlayAudio(base64.b64encode(audio).decode())) is None  # nothing after the disconnect
    leg2 = opened_leg(ready_call())
    assert json.loads(leg2.encode(Hangup("bot_hung_up")))["parameters"] == {  # type: ignore[arg-type]
        "reason": "completed", "outputVariables": {"action": "hangup", "endReason": "bot_hung_up"}}
    failed = json.loads(opened_leg(ready_call()).encode(Hangup("voicelive_unavailable")))  # type: ignore[arg-type]
    assert failed["parameters"] == {"reason": "error", "info": "the voice bot failed (voicelive_unavailable)"}


def test_the_close_transaction_after_a_disconnect() -> None:
    call = ready_call()
    leg = opened_leg(call)
    leg.encode(Hangup("bot_hung_up"))
    assert leg.after_end(bytes(160)) == (None, False)
    reply, closed = leg.after_end(client("ping", 2, serverseq=2))
    assert json.loads(reply or "")["type"] == "pong" and not closed
    reply, closed = leg.after_end(client("close", 3, {"reason": "disconnect"}, serverseq=3))
    assert closed and json.loads(reply or "") == {"version": "2", "type": "closed", "seq": 4, "clientseq": 3,
                                                  "id": SESSION, "parameters": {}}


def test_replies_go_out_before_the_calls_actions_through_the_wire() -> None:
    call = ready_call()
    leg = codec.GenesysLeg()
    wire = WireCall(call, leg)
    wire.from_phone(open_message(), 1.0)
    wire.from_phone(client("ping", 2, serverseq=1), 2.0)
    sent = [json.loads(m) for m in wire.take_phone()]
    assert [(m["type"], m["seq"]) for m in sent] == [("opened", 1), ("pong", 2)]
    assert wire.take_phone() == []


def test_the_called_number_for_routing() -> None:
    message = codec.parse_message(open_message(inputVariables={"dnis": "tel:+15555550123"}))
    assert codec.called_number(codec.parse_open(message)) == "+15555550123"
    plain = codec.parse_open(codec.parse_message(open_message()))
    assert codec.called_number(plain) == "+1-800-555-6789" and plain.language == "en-US"


@pytest.mark.parametrize(("text", "reason"), [
    ("nope", "not valid JSON"),
    ("[]", "not a JSON object"),
    ('{"version":"2","seq":1,"id":"s"}', "without a type"),
    ('{"version":"1","type":"ping","seq":1,"id":"s"}', "expected \"2\""),
    ('{"version":"2","type":"ping","seq":"1","id":"s"}', "seq is not"),
    ('{"version":"2","type":"ping","seq":1}', "without a session id"),
    ('{"version":"2","type":"ping","seq":1,"id":"s","parameters":[]}', "not an object"),
    ("x" * 70000, "text message of"),
])
def test_bad_messages(text: str, reason: str) -> None:
    with pytest.raises(codec.GenesysProtocolError, match=reason):
        codec.parse_message(text)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=400),
                 st.builds(lambda kind, seq, params: client(kind, seq, params),
                           st.sampled_from(["open", "ping", "close", "dtmf", "paused", "resumed", "error", "x"]),
                           st.integers(-2, 5), st.dictionaries(st.text(max_size=5), st.none() | st.integers()))))
def test_hostile_input_never_raises(data: str | bytes) -> None:
    call = ready_call()
    leg = opened_leg(call)
    result = leg.feed(call, data, 5.0)
    assert result is None or (isinstance(result, tuple) and len(result) == 2)
    leg.after_end(data)


def test_the_carrier_reads_its_own_messages() -> None:
    carrier = GenesysCarrier()
    assert carrier.caller_audio(b"\x01\x02") == "AQI=" and carrier.caller_audio(client("ping", 1)) is None
    stereo = GenesysCarrier()
    assert stereo.caller_audio(open_message([STEREO])) is None
    assert stereo.caller_audio(b"\x01\x09\x02\x09") == "AQI="  # the external channel of a stereo session
    assert carrier.outbound_kind(b"\x00" * 10) == "audio"
    leg = opened_leg(ready_call())
    assert carrier.outbound_kind(leg.encode(CLEAR)) == "flush"  # type: ignore[arg-type]
    assert carrier.outbound_kind(leg.message("pong", {})) is None
    # the close that answers the gateway's disconnect is sent in answer to it by a replay over sockets
    assert carrier.playback_ack(client("close", 3, {"reason": "disconnect"}))
    assert not carrier.playback_ack(client("close", 3, {"reason": "end"}))
    assert not carrier.playback_ack(b"close") and not carrier.playback_ack('{"type":"close"')


def test_the_close_transaction_after_a_disconnect_goes_through_the_wire() -> None:
    call = ready_call()
    leg = codec.GenesysLeg()
    wire = WireCall(call, leg)
    wire.from_phone(open_message(), 1.0)
    wire.take_phone()
    call.phone_ended("gateway_error", 5.0)  # the call is over; the session still closes properly
    wire.from_phone(bytes(160), 6.0)
    wire.from_phone(client("close", 2, {"reason": "disconnect"}, serverseq=1), 7.0)
    (closed,) = [json.loads(m) for m in wire.take_phone()]
    assert (closed["type"], closed["seq"], closed["clientseq"]) == ("closed", 2, 2)
    assert call.to_voicelive == [] or all("append" not in m for m in call.to_voicelive)


# --- the genesys section of config.yaml -------------------------------------------------------------

GENESYS_SECTION = "genesys:\n  api_key: ${K:-}\n  client_secret: ${S:-}\nprofiles: {p: {model: m}}\n"


def test_the_section_takes_its_secrets_from_the_environment_and_says_what_they_mean() -> None:
    from gateway.carriers.genesys.settings import GenesysSettings
    from gateway.config import ConfigError

    config = parse_config(GENESYS_SECTION, env={"K": "key", "S": DOC_SECRET})
    section = GenesysSettings.of(config)
    assert section.api_key is not None and section.api_key.get_secret_value() == "key"
    assert GenesysCarrier().notes(config) == [] and section.notes() == []
    assert sorted(section.secret_values()) == sorted(["key", DOC_SECRET])  # scrubbed from the logs
    unset = parse_config(GENESYS_SECTION, env={})
    assert GenesysCarrier().notes(unset) == [
        "GENESYS_API_KEY or GENESYS_CLIENT_SECRET is not set: Genesys AudioHook sessions are refused (403)"]
    key_only = parse_config(GENESYS_SECTION, env={"K": "key"})
    assert "every AudioHook session is refused" in GenesysSettings.of(key_only).notes()[0]
    insecure = parse_config(GENESYS_SECTION + "gateway: {insecure_dev_mode: true}\n", env={})
    assert GenesysCarrier().notes(insecure) == []
    with pytest.raises(ConfigError, match=r"genesys.client_secret: expected the client secret .*base64") as err:
        parse_config(GENESYS_SECTION, env={"K": "key", "S": "not base64!"})
    assert "not base64!" not in str(err.value)  # the secret is not echoed
    with pytest.raises(ConfigError, match="secrets come from the environment only"):
        parse_config("genesys: {api_key: literal}\nprofiles: {p: {model: m}}\n", env={})

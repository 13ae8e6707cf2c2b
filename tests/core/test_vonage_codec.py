"""Vonage media codec, webhook signatures, the application JWT and the NCCOs (no sockets).

Messages are written from the Vonage Voice API WebSockets guide: the first text message
``websocket:connected`` with the ``content-type`` and the endpoint's headers at its top level, binary
20 ms frames of 16-bit linear PCM (640 bytes at 16 kHz), ``websocket:dtmf``, ``websocket:notify`` and
``websocket:cleared``; actions ``notify`` and ``clear``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audio import PCM16_16K
from gateway.call import CLEAR, Call, Hangup, PlayAudio, SendMark
from gateway.carriers.vonage import codec as vonage
from gateway.carriers.vonage.auth import application_jwt, check_signed_webhook, webhook_token
from gateway.carriers.vonage.carrier import VonageCarrier
from gateway.carriers.vonage.settings import VonageSettings
from gateway.config import parse_config
from gateway.replay import load_fixture, run
from gateway.wire import WireCall

SECRET = "a-vonage-signature-secret-for-codec-tests"
FRAME = bytes(range(256)) * 2 + bytes(range(128))  # 640 bytes: 20 ms at 16 kHz
CONNECTED = {"event": "websocket:connected", "content-type": "audio/l16;rate=16000", "call": "c-1",
             "profile": "main", "to": "+15555550100"}


class Recorder:
    """Stands in for the call: what the leg hands it."""

    def __init__(self) -> None:
        self.got: list[tuple[str, Any]] = []

    def caller_audio(self, b64: str, now: float) -> None:
        self.got.append(("audio", b64))

    def dtmf(self, key: str, now: float) -> None:
        self.got.append(("dtmf", key))

    def playback_mark(self, name: str, now: float) -> None:
        self.got.append(("mark", name))

    def phone_ended(self, reason: str, now: float) -> None:
        self.got.append(("ended", reason))


def feed(leg: vonage.VonageLeg, data: str | bytes) -> tuple[tuple[str, str] | None, list[tuple[str, Any]]]:
    call = Recorder()
    problem = leg.feed(call, data, 1.0)  # type: ignore[arg-type]
    return problem, call.got


# --- inbound ----------------------------------------------------------------------------------------


def test_documented_messages_parse() -> None:
    assert vonage.parse_event(json.dumps(CONNECTED)) == vonage.Connected(
        "audio/l16;rate=16000", {"call": "c-1", "profile": "main", "to": "+15555550100"})
    assert vonage.parse_event('{"event":"websocket:dtmf","digit":"5","duration":260}') == vonage.DtmfKey("5")
    assert vonage.parse_event('{"event":"websocket:dtmf","dtmf":{"digit":"#"}}') == vonage.DtmfKey("#")
    assert vonage.parse_event('{"event":"websocket:notify","payload":{"mark":"7"}}') == vonage.Notified({"mark": "7"})
    assert vonage.parse_event('{"event":"websocket:cleared"}') == vonage.CLEARED
    other = vonage.parse_event('{"event":"websocket:something-new","x":1}')
    assert other == vonage.OtherEvent("websocket:something-new")


@pytest.mark.parametrize(("text", "reason"), [
    ("nope", "not valid JSON"),
    ("[1]", "not a JSON object"),
    ('{"digit":"5"}', "without an event name"),
    ('{"event":"websocket:dtmf","digit":"55"}', "not a keypad key"),
    ('{"event":"websocket:dtmf"}', "not a keypad key"),
    ('{"event":"websocket:connected"}', "without a content-type"),
])
def test_bad_messages(text: str, reason: str) -> None:
    with pytest.raises(vonage.VonageProtocolError, match=reason):
        vonage.parse_event(text)


def test_caller_audio_is_base64_of_the_frame_exactly() -> None:
    problem, got = feed(vonage.VonageLeg(), FRAME)
    assert problem is None and got == [("audio", base64.b64encode(FRAME).decode())]


@pytest.mark.parametrize("frame", [b"", b"\x01", bytes(641)])
def test_frames_of_no_whole_samples_are_refused(frame: bytes) -> None:
    problem, got = feed(vonage.VonageLeg(), frame)
    assert problem is not None and problem[0] == "bad-audio-frame" and got == []


def test_text_events_reach_the_call() -> None:
    leg = vonage.VonageLeg()
    assert feed(leg, '{"event":"websocket:dtmf","digit":"5","duration":260}') == (None, [("dtmf", "5")])
    assert feed(leg, '{"event":"websocket:notify","payload":{"mark":"12"}}') == (None, [("mark", "12")])
    assert feed(leg, '{"event":"websocket:cleared"}') == (None, [])
    assert feed(leg, '{"event":"websocket:notify","payload":{"other":"x"}}')[0][0] == "unknown-notify"  # type: ignore[index]
    assert feed(leg, json.dumps(CONNECTED))[0][0] == "duplicate-connected"  # type: ignore[index]
    assert feed(leg, '{"event":"mystery"}')[0][0] == "unknown-event"  # type: ignore[index]
    assert feed(leg, "{")[0][0] == "malformed"  # type: ignore[index]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=2000), st.text(max_size=300),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                              lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                          max_size=4),
                              max_leaves=12).map(json.dumps),
                 st.builds(lambda d: json.dumps({"event": "websocket:dtmf", "digit": d}), st.text(max_size=3)),
                 st.builds(lambda p: json.dumps({"event": "websocket:notify", "payload": p}),
                           st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3))))
def test_hostile_input_never_raises(data: str | bytes) -> None:
    problem, got = feed(vonage.VonageLeg(), data)
    assert problem is None or (isinstance(problem[0], str) and isinstance(problem[1], str))
    if isinstance(data, bytes):
        assert (problem is None) == (len(data) > 0 and len(data) % 2 == 0)
        assert got == ([("audio", b64(data))] if problem is None else [])


# --- outbound ---------------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_bot_audio_goes_out_in_whole_640_byte_frames_with_the_remainder_kept() -> None:
    leg = vonage.VonageLeg()
    audio = bytes(i % 251 for i in range(2000))
    first = leg.encode(PlayAudio(b64(audio[:1000])))  # one frame, 360 bytes kept
    assert first == [audio[:640]]
    assert leg.encode(PlayAudio(b64(audio[1000:1204]))) is None  # 564 bytes: still under one frame
    assert leg.encode(PlayAudio(b64(audio[1204:]))) == [audio[640:1280], audio[1280:1920]]  # 80 kept
    assert leg.encode(Hangup("bot_hang_up")) == audio[1920:] + bytes(560)  # padded with silence when the call ends
    assert leg.encode(Hangup("bot_hang_up")) is None


def test_a_flush_drops_the_partial_frame() -> None:
    leg = vonage.VonageLeg()
    assert leg.encode(PlayAudio(b64(bytes([1]) * 700))) == [bytes([1]) * 640]
    assert leg.encode(CLEAR) == '{"action":"clear"}'
    assert leg.encode(PlayAudio(b64(bytes([2]) * 640))) == [bytes([2]) * 640]  # nothing of the old audio


def test_a_mark_is_a_notify_that_comes_back_as_the_mark() -> None:
    leg = vonage.VonageLeg()
    message = leg.encode(SendMark("42"))
    assert json.loads(message) == {"action": "notify", "payload": {"mark": "42"}}  # type: ignore[arg-type]
    echo = json.dumps({"event": "websocket:notify", "payload": json.loads(message)["payload"]})  # type: ignore[arg-type]
    assert feed(leg, echo) == (None, [("mark", "42")])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=1500).map(lambda n: n * 2), max_size=12))
def test_framing_loses_and_reorders_nothing(sizes: list[int]) -> None:
    leg, sent, out = vonage.VonageLeg(), b"", []
    for i, size in enumerate(sizes):
        piece = bytes((i * 7 + j) % 256 for j in range(size))
        sent += piece
        frames = leg.encode(PlayAudio(b64(piece)))
        out += frames or []
    assert all(len(frame) == vonage.FRAME_BYTES for frame in out)
    joined = b"".join(out)  # type: ignore[arg-type]
    assert joined == sent[:len(joined)] and len(sent) - len(joined) < vonage.FRAME_BYTES


def test_a_whole_call_at_the_wire() -> None:
    """Caller frames in, the bot's delta out as frames and notifies, a notify back acknowledges playback."""
    config = parse_config("profiles: {p: {model: m}}", env={})
    call = Call(call_id="c-1", stream_id="CON-1", profile_name="p", profile=config.profiles["p"], started_at=0.0,
                audio=vonage.AUDIO, piece_ms=60)
    wire = WireCall(call, vonage.VonageLeg())
    call.voicelive_connected(0.0)
    session = json.loads(call.to_voicelive[0])["session"]
    assert (session["input_audio_format"], session["input_audio_sampling_rate"], session["output_audio_format"]) == \
        ("pcm16", 16000, "pcm16_16000hz")
    wire.from_voicelive(json.dumps({"type": "session.updated", "session": session}), 1.0)
    wire.take_voicelive()
    wire.from_phone(FRAME, 2.0)
    assert [json.loads(m) for m in wire.take_voicelive()] == [{"type": "input_audio_buffer.append",
                                                               "audio": b64(FRAME)}]
    audio = bytes(i % 256 for i in range(4000))  # 125 ms: two pieces of 60 ms and 5 ms
    wire.from_voicelive(json.dumps({"type": "response.created", "response": {"id": "r1"}}), 3.0)
    wire.from_voicelive(json.dumps({"type": "response.output_item.added", "response_id": "r1",
                                    "item": {"id": "i1", "type": "message", "role": "assistant"}}), 3.0)
    wire.from_voicelive(json.dumps({"type": "response.audio.delta", "response_id": "r1", "item_id": "i1",
                                    "delta": b64(audio)}), 4.0)
    out = wire.take_phone()
    frames = [m for m in out if isinstance(m, bytes)]
    notifies = [json.loads(m) for m in out if isinstance(m, str)]
    assert b"".join(frames) == audio[:3840] and {len(f) for f in frames} == {640}  # 160 bytes wait for more
    assert [n["action"] for n in notifies] == ["notify"] * 3
    wire.from_phone(json.dumps({"event": "websocket:notify", "payload": notifies[0]["payload"]}), 64.0)
    assert call.playout.position(64.0) == ("i1", 1920)  # the first piece was played


# --- NCCOs and numbers -------------------------------------------------------------------------------


def test_the_connect_ncco() -> None:
    ncco = vonage.connect_ncco("wss://gw.example/vonage/media", {"call": "c-1"}, "Bearer t", "https://gw.example/e")
    assert ncco == [{"action": "connect", "eventType": "synchronous", "eventUrl": ["https://gw.example/e"],
                     "endpoint": [{"type": "websocket", "uri": "wss://gw.example/vonage/media",
                                   "content-type": "audio/l16;rate=16000", "headers": {"call": "c-1"},
                                   "authorization": {"type": "custom", "value": "Bearer t"}}]}]
    assert vonage.talk_ncco("Sorry.") == [{"action": "talk", "text": "Sorry."}]


def test_numbers_and_transfer() -> None:
    assert vonage.e164("447700900123") == "+447700900123"
    assert vonage.e164("+447700900123") == "+447700900123"
    assert vonage.e164("sip:alice@example.com") == "sip:alice@example.com" and vonage.e164(None) is None
    assert vonage.transfer_body("+14155550100", "+15555550123") == {
        "action": "transfer", "destination": {"type": "ncco", "ncco": [
            {"action": "connect", "endpoint": [{"type": "phone", "number": "14155550100"}], "from": "15555550123"}]}}


# --- signed webhooks and the application JWT ---------------------------------------------------------


def test_a_signed_webhook_is_accepted() -> None:
    body = b'{"uuid":"c-1","to":"447700900000"}'
    assert check_signed_webhook(SECRET, "Bearer " + webhook_token(SECRET), None) is None
    assert check_signed_webhook(SECRET, "Bearer " + webhook_token(SECRET, body), body) is None


_BAD_WEBHOOK_TOKENS = [
    (None, None, "missing bearer token"),
    ("Basic abc", None, "missing bearer token"),
    ("Bearer " + webhook_token("another"), None, "bad signature"),
    ("Bearer " + webhook_token(SECRET, now=time.time() - 3600), None, "signed too long ago"),
    ("Bearer " + webhook_token(SECRET, now=time.time() + 3600), None, "not yet valid"),
    ("Bearer " + jwt.encode({"jti": "x"}, SECRET, algorithm="HS256"), None, "missing claim iat"),
    ("Bearer " + jwt.encode({"iat": int(time.time()), "exp": int(time.time()) - 600}, SECRET, algorithm="HS256"),
     None, "expired"),
    ("Bearer " + jwt.encode({"iat": int(time.time())}, None, algorithm="none"), None, "unsupported algorithm"),
    ("Bearer not.a.jwt", None, "malformed token"),
    ("Bearer not\udcff.a.jwt", None, "malformed token"),  # bytes that are not UTF-8, as aiohttp hands them on
    ("Bearer " + webhook_token(SECRET), b"{}", "missing payload_hash"),
    ("Bearer " + webhook_token(SECRET, b'{"a":1}'), b'{"a":2}', "payload_hash does not match the body"),
]


# ids by reason: the tokens hold the time, and every test worker must collect the same ids
@pytest.mark.parametrize(("token", "body", "reason"), _BAD_WEBHOOK_TOKENS,
                         ids=[f"{i}-{row[2]}" for i, row in enumerate(_BAD_WEBHOOK_TOKENS)])
def test_bad_webhook_signatures_are_refused(token: str | None, body: bytes | None, reason: str) -> None:
    assert check_signed_webhook(SECRET, token, body) == reason


def test_the_payload_hash_is_the_sha256_of_the_body() -> None:
    body = b'{"status":"disconnected"}'
    claims = jwt.decode(webhook_token(SECRET, body), SECRET, algorithms=["HS256"])
    assert claims["payload_hash"] == hashlib.sha256(body).hexdigest()
    assert check_signed_webhook("", "Bearer " + webhook_token(SECRET), None) == "no signature secret"


def test_the_application_jwt_is_rs256_with_the_application_id() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    claims = jwt.decode(application_jwt("app-1", pem), key.public_key(), algorithms=["RS256"])
    assert claims["application_id"] == "app-1" and claims["exp"] > claims["iat"] and claims["jti"]
    one_line = pem.strip().replace("\n", "\\n")  # as an environment variable often holds it
    assert jwt.decode(application_jwt("app-1", one_line), key.public_key(), algorithms=["RS256"])["application_id"]
    with pytest.raises(ValueError, match="cannot sign"):
        application_jwt("app-1", "not a key")


# --- settings and the carrier --------------------------------------------------------------------------


def test_settings_notes() -> None:
    assert VonageSettings().notes() == []
    only_secret = VonageSettings(signature_secret="s")
    assert any("cannot be transferred" in note for note in only_secret.notes())
    half = VonageSettings(signature_secret="s", application_id="app")
    assert any("go together" in note for note in half.notes())
    bad_key = VonageSettings(signature_secret="s", application_id="app", private_key="k").notes()
    assert len(bad_key) == 1 and "not a private key in PEM" in bad_key[0]
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    assert VonageSettings(signature_secret="s", application_id="app", private_key=pem).notes() == []
    one_line = pem.strip().replace("\n", "\\n")
    assert VonageSettings(signature_secret="s", application_id="app", private_key=one_line).notes() == []


def test_the_carrier_tells_its_messages_apart() -> None:
    carrier = VonageCarrier()
    assert carrier.caller_audio(FRAME) == b64(FRAME) and carrier.caller_audio(b"\x01") is None
    assert carrier.caller_audio(json.dumps(CONNECTED)) is None
    assert carrier.outbound_kind(FRAME) == "audio" and carrier.outbound_kind(vonage.CLEAR) == "flush"
    assert carrier.outbound_kind(vonage.notify_message("1")) is None
    assert carrier.playback_ack(json.dumps({"event": "websocket:notify", "payload": {"mark": "1"}}))
    assert not carrier.playback_ack(FRAME)
    assert PCM16_16K is vonage.AUDIO


# --- the recorded calls ----------------------------------------------------------------------------


def test_the_vonage_fixtures_exercise_what_their_names_say() -> None:
    calls = Path(__file__).resolve().parent.parent / "fixtures" / "calls"

    def replayed(name: str) -> Call:
        call = run(load_fixture(calls / f"{name}.jsonl")).call
        assert call is not None and call.audio is vonage.AUDIO
        return call

    barge = replayed("vonage_barge_in_mid_answer")
    assert barge.stats.barge_ins == 1 and barge.barge_ins[0].cleared and barge.barge_ins[0].heard_ms
    assert replayed("vonage_dtmf_digits").stats.dtmf == 3
    closer = replayed("vonage_bot_hangs_up")
    assert closer.end_reason == "bot_hung_up" and closer.stats.responses == 2
    greet = load_fixture(calls / "vonage_bot_greets_first.jsonl")
    assert any('"response.create"' in r.get("msg", "") for r in greet.records if r.get("dir") == "out")
    # the phone's side is binary: 640-byte frames both ways
    sizes = {(r["dir"], len(base64.b64decode(r["binary"]))) for r in greet.records
             if r["leg"] == "phone" and "binary" in r}
    assert sizes == {("in", vonage.FRAME_BYTES), ("out", vonage.FRAME_BYTES)}


@pytest.mark.parametrize("text", [
    json.dumps({"event": "e" * 100_000}),
    json.dumps({"event": "websocket:notify", "payload": {"other": "x" * 100_000}}),
    json.dumps({"event": "websocket:dtmf", "digit": "9" * 100_000}),
    "[" * 100_000,
])
def test_hostile_problem_details_are_bounded(text: str) -> None:
    problem, got = feed(vonage.VonageLeg(), text)
    assert problem is not None and len(problem[1]) <= 1000 and got == []

"""Telnyx media streaming codec, TeXML, Ed25519 webhook signatures and the telnyx section of the
config (no sockets). The messages are written from Telnyx's "Stream call media over WebSocket" reference
and its TeXML ``<Stream>`` page."""

from __future__ import annotations

import base64
import json
import time
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.call import ClearPlayback, PlayAudio, SendMark
from gateway.carriers.base import OutboundRequest
from gateway.carriers.telnyx import codec as telnyx
from gateway.carriers.telnyx import outbound as placed
from gateway.carriers.telnyx.auth import check_telnyx_signature, public_key_from_base64, telnyx_signature
from gateway.carriers.telnyx.carrier import TelnyxCarrier
from gateway.carriers.telnyx.phone import parse_texml, signed_headers
from gateway.carriers.telnyx.settings import TelnyxSettings
from gateway.config import ConfigError, parse_config

STREAM_ID = "32DE0DEA-53CB-4B21-89A4-9E1819C043BC"
CALL_ID = "v2:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ"
PAYLOAD = base64.b64encode(b"\xff" * 160).decode()


def start_message(**overrides: object) -> str:
    """A start frame as the reference shows it."""
    start: dict[str, Any] = {
        "user_id": "3E6F995F-85F7-4705-9741-53B116D28237",
        "call_control_id": CALL_ID,
        "call_session_id": "ff55a038-6f5d-11ef-9692-02420aeffb1f",
        "from": "+13122010094",
        "to": "+13122123456",
        "tags": ["TAG1", "TAG2"],
        "client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d",
        "custom_parameters": {"customer_id": "customer_123"},
        "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
    }
    start.update(overrides)
    return json.dumps({"event": "start", "sequence_number": "1", "stream_id": STREAM_ID, "start": start})


def media_message(chunk: int, payload: str = PAYLOAD, track: str = "inbound", compact: bool = True) -> str:
    msg = {"event": "media", "sequence_number": str(chunk + 1),
           "media": {"track": track, "chunk": str(chunk), "timestamp": str(20 * chunk), "payload": payload},
           "stream_id": STREAM_ID}
    return json.dumps(msg, separators=(",", ":") if compact else None)


class FakeCall:
    """What a leg calls on a :class:`~gateway.call.Call`, recorded."""

    def __init__(self) -> None:
        self.got: list[tuple[str, Any]] = []

    def caller_audio(self, payload: str, now: float) -> None:
        self.got.append(("audio", payload))

    def playback_mark(self, name: str, now: float) -> None:
        self.got.append(("mark", name))

    def dtmf(self, key: str, now: float) -> None:
        self.got.append(("dtmf", key))

    def phone_ended(self, reason: str, now: float) -> None:
        self.got.append(("ended", reason))


def leg() -> telnyx.TelnyxLeg:
    start = telnyx.parse_message(start_message())
    assert isinstance(start, telnyx.Start)
    return telnyx.TelnyxLeg(start)


# --- inbound messages ----------------------------------------------------------------------------


def test_start_is_parsed_with_the_call_and_its_parameters() -> None:
    assert telnyx.parse_message(start_message()) == telnyx.Start(
        STREAM_ID, CALL_ID, "3E6F995F-85F7-4705-9741-53B116D28237", "+13122010094", "+13122123456",
        "aGF2ZSBhIG5pY2UgZGF5ID1d", {"customer_id": "customer_123"})


def test_numbers_as_strings_lower_case_codec_and_unknown_fields_are_tolerated() -> None:
    event = telnyx.parse_message(start_message(media_format={"encoding": "pcmu", "sample_rate": "8000",
                                                             "channels": "1"}, future={"x": 1}))
    assert isinstance(event, telnyx.Start)
    assert telnyx.parse_message(media_message(4, compact=False)) == telnyx.Media(PAYLOAD, "inbound", 4)


@pytest.mark.parametrize("fmt", [
    {"encoding": "PCMA", "sample_rate": 8000, "channels": 1},
    {"encoding": "L16", "sample_rate": 16000, "channels": 1},
    {"encoding": "PCMU", "sample_rate": 16000, "channels": 1},
    {"encoding": "PCMU", "sample_rate": 8000, "channels": 2},
    {"encoding": "PCMU", "sample_rate": "fast", "channels": 1},
    {"encoding": "PCMU", "sample_rate": True, "channels": 1},
])
def test_a_stream_in_another_format_is_refused_at_its_start(fmt: dict) -> None:
    with pytest.raises(telnyx.TelnyxProtocolError) as err:
        telnyx.parse_message(start_message(media_format=fmt))
    assert err.value.event == "start"


def test_the_other_events_of_the_reference() -> None:
    assert telnyx.parse_message('{"event":"connected","version":"1.0.0"}') == telnyx.CONNECTED
    assert telnyx.parse_message(json.dumps({"event": "mark", "sequence_number": "4", "stream_id": STREAM_ID,
                                            "mark": {"name": "17"}})) == telnyx.MarkAck("17")
    assert telnyx.parse_message(json.dumps({
        "event": "dtmf", "stream_id": STREAM_ID, "occurred_at": "2022-03-09T17:43:40.000000Z",
        "sequence_number": "5", "dtmf": {"digit": "1"}})) == telnyx.Dtmf("1")
    assert telnyx.parse_message(json.dumps({
        "event": "stop", "sequence_number": "5", "stream_id": STREAM_ID,
        "stop": {"user_id": "u", "call_control_id": CALL_ID}})) == telnyx.STOP
    assert telnyx.parse_message(json.dumps({
        "event": "error", "stream_id": STREAM_ID, "sequence_number": "6",
        "payload": {"code": 100002, "title": "Unknown error", "detail": "An unknown error occurred"}},
    )) == telnyx.StreamError("100002", "Unknown error", "An unknown error occurred")
    assert telnyx.parse_message('{"event":"brand-new"}') == telnyx.OtherEvent("brand-new")


@pytest.mark.parametrize("text, reason", [
    ("{nope", "not valid JSON"),
    ("[1,2]", "not a JSON object"),
    ('{"event":"media","media":{"payload":"@@@@"}}', "not valid base64"),
    ('{"event":"media","media":{"payload":"AAA"}}', "not valid base64"),
    ('{"event":"media","media":{}}', "missing"),
    ('{"event":"media"}', "without a media object"),
    ('{"event":"mark","mark":{}}', "mark.name"),
    ('{"event":"dtmf"}', "dtmf.digit"),
    ('{"event":"dtmf","dtmf":{"digit":"Z"}}', "not a keypad key"),
    ('{"event":"start","start":{"call_control_id":"v3:x"}}', "stream_id"),
    ('{"event":"start","stream_id":"s","start":{}}', "call_control_id"),
    ('{"sequence_number":"1"}', "without an event name"),
])
def test_bad_messages_get_a_clear_reason(text: str, reason: str) -> None:
    with pytest.raises(telnyx.TelnyxProtocolError, match=reason):
        telnyx.parse_message(text)


# --- the leg -------------------------------------------------------------------------------------


def test_the_leg_hands_each_inbound_event_to_the_call() -> None:
    call, phone = FakeCall(), leg()
    assert phone.feed(call, media_message(1), 0) is None  # type: ignore[arg-type]
    assert phone.feed(call, media_message(2, compact=False), 20) is None  # type: ignore[arg-type]
    assert phone.feed(call, '{"event":"mark","mark":{"name":"3"}}', 30) is None  # type: ignore[arg-type]
    assert phone.feed(call, '{"event":"dtmf","dtmf":{"digit":"#"}}', 40) is None  # type: ignore[arg-type]
    assert phone.feed(call, '{"event":"stop","stop":{}}', 50) is None  # type: ignore[arg-type]
    assert call.got == [("audio", PAYLOAD), ("audio", PAYLOAD), ("mark", "3"), ("dtmf", "#"),
                        ("ended", "caller_hung_up")]


def test_frames_out_of_order_are_forwarded_as_they_come_and_late_ones_dropped() -> None:
    call, phone = FakeCall(), leg()
    frames = {n: base64.b64encode(bytes([n]) * 160).decode() for n in range(1, 7)}
    results = [phone.feed(call, media_message(n, frames[n]), n) for n in (1, 2, 4, 3, 5, 5, 6)]  # type: ignore[arg-type]
    assert [r[0] if r else None for r in results] == [None, None, None, "late-media", None, "late-media", None]
    assert results[3] is not None and "chunk 3 after chunk 4" in results[3][1]
    assert call.got == [("audio", frames[n]) for n in (1, 2, 4, 5, 6)]  # never held back, never repeated


def test_frames_without_a_chunk_are_forwarded_unchecked() -> None:
    call, phone = FakeCall(), leg()
    text = json.dumps({"event": "media", "media": {"payload": PAYLOAD}})
    assert phone.feed(call, text, 0) is None and phone.feed(call, text, 1) is None  # type: ignore[arg-type]
    assert call.got == [("audio", PAYLOAD)] * 2


def test_the_leg_reports_what_it_does_not_use_without_touching_the_call() -> None:
    call, phone = FakeCall(), leg()
    cases = {
        "{not json": "malformed",
        media_message(1, track="outbound"): "other-track",
        '{"event":"error","payload":{"code":"100003","title":"Malformed frame"}}': "stream-error",
        start_message(): "duplicate-start",
        '{"event":"surprise"}': "unknown-event",
    }
    for text, problem in cases.items():
        result = phone.feed(call, text, 0)  # type: ignore[arg-type]
        assert result is not None and result[0] == problem, text
    assert call.got == []


def test_encoded_messages_are_telnyx_json_with_the_payload_untouched() -> None:
    phone = leg()
    assert json.loads(phone.encode(PlayAudio(PAYLOAD)) or "") == {"event": "media", "media": {"payload": PAYLOAD}}
    assert json.loads(phone.encode(SendMark('4"2')) or "") == {"event": "mark", "mark": {"name": '4"2'}}
    assert json.loads(phone.encode(ClearPlayback()) or "") == {"event": "clear"}


def test_the_fast_media_path_agrees_with_the_parser() -> None:
    shaped = media_message(2)
    assert telnyx.fast_media(shaped) == (2, PAYLOAD)
    parsed = telnyx.parse_message(shaped)
    assert isinstance(parsed, telnyx.Media) and (parsed.chunk, parsed.payload) == (2, PAYLOAD)
    for text in (media_message(2, compact=False), media_message(2, track="outbound"), shaped[:-2],
                 shaped[:-1] + ',"x":"y"}', shaped.replace(PAYLOAD, "!!!!"), shaped.replace(PAYLOAD, "AAA")):
        assert telnyx.fast_media(text) is None  # anything else takes the full parser


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                              lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                                  st.sampled_from(["event", "media", "payload", "chunk", "track", "mark", "name",
                                                   "dtmf", "digit", "start", "stream_id", "call_control_id"]),
                                  inner, max_size=5), max_leaves=20).map(json.dumps)))
def test_hostile_input_never_raises_out_of_the_leg(text: str) -> None:
    result = leg().feed(FakeCall(), text, 0)  # type: ignore[arg-type]
    assert result is None or (isinstance(result[0], str) and isinstance(result[1], str))


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=400), st.integers(min_value=1, max_value=10**12))
def test_any_media_frame_reaches_the_call_byte_exact(audio: bytes, chunk: int) -> None:
    payload = base64.b64encode(audio).decode()
    call = FakeCall()
    assert leg().feed(call, media_message(chunk, payload), 0) is None  # type: ignore[arg-type]
    assert call.got == [("audio", payload)] and base64.b64decode(call.got[0][1]) == audio


# --- TeXML ---------------------------------------------------------------------------------------


def test_connect_texml_asks_for_a_bidirectional_pcmu_stream_then_redirects() -> None:
    url = telnyx.media_url("wss://gw.example.com/telnyx/media", {"profile": "sales", "to": "+1 555", "token": "a.b"})
    texml = telnyx.connect_texml(url, "https://gw.example.com/telnyx/stream-ended?x=1&y=2")
    root = ET.fromstring(texml)
    assert [child.tag for child in root] == ["Connect", "Redirect"]
    stream = root.find("Connect/Stream")
    assert stream is not None and stream.attrib == {
        "url": url, "track": "inbound_track", "codec": "PCMU", "bidirectionalMode": "rtp",
        "bidirectionalCodec": "PCMU", "bidirectionalSamplingRate": "8000"}
    assert parse_qs(urlsplit(stream.get("url") or "").query) == {"profile": ["sales"], "to": ["+1 555"],
                                                                 "token": ["a.b"]}
    redirect = root.find("Redirect")
    assert redirect is not None and redirect.text == "https://gw.example.com/telnyx/stream-ended?x=1&y=2"
    answer = parse_texml(texml, "https://gw.example.com/telnyx/voice")
    assert answer.problems == [] and answer.stream_url == url


def test_the_softphone_says_what_telnyx_would_not_play_as_meant() -> None:
    plain = '<Response><Connect><Stream url="wss://x/telnyx/media"/></Connect></Response>'
    (problem,) = parse_texml(plain, "https://x/telnyx/voice").problems
    assert "MP3" in problem


def test_other_texml_answers_are_escaped() -> None:
    assert ET.fromstring(telnyx.say_texml('Sorry <&> "now"')).find("Say").text == 'Sorry <&> "now"'  # type: ignore[union-attr]
    assert [c.tag for c in ET.fromstring(telnyx.say_texml("x"))] == ["Say", "Hangup"]
    assert [c.tag for c in ET.fromstring(telnyx.hangup_texml())] == ["Hangup"]
    assert ET.fromstring(telnyx.dial_texml("+1<2>")).find("Dial").text == "+1<2>"  # type: ignore[union-attr]


# --- Ed25519 webhook signatures ------------------------------------------------------------------

KEY = Ed25519PrivateKey.generate()
PUBLIC = public_key_from_base64(
    base64.b64encode(KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode())
BODY = b"AccountSid=acct&CallSid=v3%3Aabc&To=%2B15555550100"


def test_a_signature_telnyx_made_now_holds_and_anything_else_does_not() -> None:
    now = time.time()
    headers = signed_headers(KEY, BODY, now)
    assert check_telnyx_signature(PUBLIC, headers, BODY, now) is None
    # the signed text is "{timestamp}|{raw body}": checked with the raw Ed25519 primitive
    KEY.public_key().verify(base64.b64decode(headers["telnyx-signature-ed25519"]),
                            headers["telnyx-timestamp"].encode() + b"|" + BODY)
    other = Ed25519PrivateKey.generate()
    cases = {
        "missing telnyx-signature-ed25519": {"telnyx-timestamp": headers["telnyx-timestamp"]},
        "missing telnyx-timestamp": {"telnyx-signature-ed25519": headers["telnyx-signature-ed25519"]},
        "not Unix seconds": {**headers, "telnyx-timestamp": "12.5"},
        "from the gateway's clock": signed_headers(KEY, BODY, now - 301),
        "is not base64": {**headers, "telnyx-signature-ed25519": "%%%"},
        "not an Ed25519 signature": {**headers, "telnyx-signature-ed25519": base64.b64encode(b"x" * 10).decode()},
        "bad telnyx-signature-ed25519": signed_headers(other, BODY, now),
    }
    for reason, bad in cases.items():
        problem = check_telnyx_signature(PUBLIC, bad, BODY, now)
        assert problem is not None and reason in problem, (reason, problem)
    assert check_telnyx_signature(PUBLIC, headers, BODY + b"&x=1", now) == "bad telnyx-signature-ed25519"
    # the timestamp is part of what is signed: moving it breaks the signature
    moved = {**headers, "telnyx-timestamp": str(int(headers["telnyx-timestamp"]) + 1)}
    assert check_telnyx_signature(PUBLIC, moved, BODY, now) == "bad telnyx-signature-ed25519"
    assert telnyx_signature(KEY, "1", b"") != telnyx_signature(KEY, "2", b"")


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["telnyx-signature-ed25519", "telnyx-timestamp", "x"]),
                       st.text(max_size=120), max_size=3), st.binary(max_size=100))
def test_signature_checks_never_raise_and_fail_closed(headers: dict[str, str], body: bytes) -> None:
    assert check_telnyx_signature(PUBLIC, headers, body, time.time()) is not None


# --- config --------------------------------------------------------------------------------------

PUBLIC_TEXT = base64.b64encode(b"k" * 32).decode()


def _config(section: str) -> Any:
    return parse_config(f"""
voicelive: {{endpoint: simulator}}
telnyx: {section}
profiles: {{main: {{model: gpt-realtime}}}}
""", env={"TELNYX_API_KEY": "KEY123", "TELNYX_PUBLIC_KEY": PUBLIC_TEXT})


def test_the_telnyx_section_reads_its_key_and_secret_from_the_environment() -> None:
    settings = TelnyxSettings.of(_config("{public_key: '${TELNYX_PUBLIC_KEY}', api_key: '${TELNYX_API_KEY}'}"))
    assert settings.public_key == PUBLIC_TEXT and settings.api_key is not None
    assert settings.api_key.get_secret_value() == "KEY123" and settings.api_base_url == "https://api.telnyx.com"
    assert settings.secret_values() == ["KEY123"] and settings.notes() == []
    bare = TelnyxSettings.of(_config("{public_key: '${TELNYX_PUBLIC_KEY}'}"))
    assert bare.notes() and "cannot be transferred" in bare.notes()[0]


@pytest.mark.parametrize("section, words", [
    ("{public_key: 'not a key!'}", "public key, base64"),
    (f"{{public_key: '{base64.b64encode(b'k' * 31).decode()}'}}", "32 bytes"),
    ("{api_key: 'KEY-written-in-the-file'}", "api_key"),
    ("{api_base_url: 'ftp://x'}", "https://"),
    ("{surprise: 1}", "surprise"),
])
def test_bad_telnyx_settings_are_refused_with_the_key_named(section: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        _config(section)
    assert "telnyx." in str(err.value) and words in str(err.value)


def test_the_carrier_says_when_telnyx_requests_will_be_refused() -> None:
    assert TelnyxCarrier().notes(_config("{}")) == ["TELNYX_PUBLIC_KEY is not set: Telnyx requests are refused (403)"]
    assert TelnyxCarrier().notes(_config("{public_key: '${TELNYX_PUBLIC_KEY}'}")) == []


def test_the_carrier_tells_its_messages_apart() -> None:
    carrier = TelnyxCarrier()
    assert carrier.caller_audio(media_message(1)) == PAYLOAD
    assert carrier.caller_audio(media_message(1, track="outbound")) is None
    assert carrier.caller_audio("{bad") is None
    assert carrier.playback_ack('{"event":"mark","mark":{"name":"1"}}')
    assert not carrier.playback_ack(media_message(1)) and not carrier.playback_ack("{bad")
    assert carrier.outbound_kind('{"event":"media","media":{"payload":"AA=="}}') == "audio"
    assert carrier.outbound_kind('{"event":"clear"}') == "flush"
    assert carrier.outbound_kind('{"event":"mark","mark":{"name":"1"}}') is None
    assert carrier.outbound_kind("[]") is None


# --- recorded calls ------------------------------------------------------------------------------


def test_the_telnyx_fixtures_do_what_their_names_say() -> None:
    from gateway.replay import load_fixture, run
    from tests.core.test_replay import CALLS

    def replayed(name: str) -> Any:
        result = run(load_fixture(CALLS / f"telnyx_{name}.jsonl"))
        assert result.ok, f"{result.mismatch}\n{result.problems}"
        assert result.call is not None
        return result.call

    greet = replayed("bot_greets_first")
    assert greet.stats.responses == 2 and greet.end_reason == "caller_hung_up"
    barge = replayed("barge_in_mid_answer")
    assert barge.stats.barge_ins == 1 and barge.barge_ins[0].cleared and barge.stats.truncations == 1
    assert replayed("dtmf_digits").stats.dtmf == 3
    closer = replayed("bot_hangs_up")
    assert closer.end_reason == "bot_hung_up" and closer.stats.tool_calls == 1
    for name in ("bot_greets_first", "barge_in_mid_answer", "dtmf_digits", "bot_hangs_up"):
        records = load_fixture(CALLS / f"telnyx_{name}.jsonl").records
        assert any('"event":"mark"' in str(r.get("msg", "")) for r in records if r.get("dir") == "in")


# --- placed calls (no sockets) --------------------------------------------------------------------


def test_placing_calls_needs_the_api_key_the_application_and_the_account() -> None:
    ready = _config("{public_key: '${TELNYX_PUBLIC_KEY}', api_key: '${TELNYX_API_KEY}', application_id: '177',"
                    " account_sid: 'acct-1'}")
    assert placed.refusal(ready) is None and TelnyxSettings.of(ready).notes() == []
    assert TelnyxCarrier.places_calls and TelnyxCarrier().outbound_refusal(ready) is None
    why = placed.refusal(_config("{public_key: '${TELNYX_PUBLIC_KEY}', api_key: '${TELNYX_API_KEY}'}"))
    assert why is not None and "TELNYX_APPLICATION_ID" in why and "TELNYX_ACCOUNT_SID" in why
    assert "TELNYX_API_KEY" not in why
    half = TelnyxSettings.of(_config("{public_key: '${TELNYX_PUBLIC_KEY}', application_id: '177'}"))
    assert any("needed to place calls" in note for note in half.notes())


def test_the_create_request_names_the_application_the_answer_url_and_the_callbacks() -> None:
    settings = TelnyxSettings.of(_config("{api_key: '${TELNYX_API_KEY}', application_id: '177', account_sid: 'a/b'}"))
    url = placed.create_call_url("https://api.telnyx.com/", "a/b")
    assert url == "https://api.telnyx.com/v2/texml/Accounts/a%2Fb/Calls"
    want = OutboundRequest(to="+15555550123", from_="+15555550100", profile="main", public_base="https://gw.example")
    body = placed.create_body(settings, want)
    assert (body["ApplicationSid"], body["To"], body["From"]) == ("177", "+15555550123", "+15555550100")
    assert body["Url"] == "https://gw.example/telnyx/placed-answer"
    assert body["StatusCallback"] == "https://gw.example/telnyx/call-status"
    assert (body["MachineDetection"], body["AsyncAmd"]) == ("DetectMessageEnd", True)
    assert body["AsyncAmdStatusCallback"] == "https://gw.example/telnyx/amd"
    quiet = placed.create_body(settings, OutboundRequest(to="+1", from_="+2", profile="main",
                                                         public_base="https://gw.example", detect_machine=False))
    assert "MachineDetection" not in quiet and "AsyncAmdStatusCallback" not in quiet


def test_the_call_sid_and_the_error_of_a_create_reply() -> None:
    assert placed._call_sid({"call_sid": "v3:abc", "status": "queued"}) == "v3:abc"
    assert placed._call_sid({"data": {"call_sid": "v3:def"}}) == "v3:def"
    assert placed._call_sid({"status": "queued"}) is None and placed._call_sid(None) is None
    assert placed._call_sid({"call_sid": ""}) is None
    assert placed._problem({"errors": [{"code": "10015", "title": "Bad To"}]}) == "10015: Bad To"
    assert placed._problem("<html>") == "no error detail" and placed._problem({"errors": []}) == "no error detail"

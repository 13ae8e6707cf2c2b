"""Plivo Audio Streaming codec, Plivo XML and V3 request signatures (no sockets).

The messages are written from Plivo's audio streaming protocol reference; the signatures are
checked against values computed here by hand from the documented V3 algorithm."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import xml.etree.ElementTree as ET

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.call import Call, ClearPlayback, PlayAudio, SendMark
from gateway.carriers.plivo import codec as plivo
from gateway.carriers.plivo.auth import check_plivo_signature, plivo_signature
from gateway.carriers.plivo.carrier import PlivoCarrier
from gateway.config import parse_config
from gateway.wire import WireCall

CALL = "12345678-1234-1234-1234-123456789abc"
STREAM = "87654321-4321-4321-4321-cba987654321"
PAYLOAD = base64.b64encode(bytes(range(256)) * 2).decode()  # every µ-law byte value
CONFIG = parse_config("profiles:\n  main:\n    model: gpt-realtime\n", env={})


def start_message(**overrides: object) -> str:
    start = {"callId": CALL, "streamId": STREAM, "accountId": "MAXXXXXXXXXXXXXXXXXX", "tracks": ["inbound"],
             "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}}
    start.update(overrides)  # type: ignore[arg-type]
    return json.dumps({"event": "start", "sequenceNumber": 1, "start": start,
                       "extra_headers": "userId=12345;sessionId=abc-xyz"})


def media_message(payload: str = PAYLOAD, track: str = "inbound") -> str:
    return json.dumps({"event": "media", "sequenceNumber": 42, "streamId": STREAM,
                       "media": {"track": track, "timestamp": "1705312200000", "chunk": 41, "payload": payload},
                       "extra_headers": "userId=12345;sessionId=abc-xyz"})


def leg_and_call(ready: bool = False) -> tuple[plivo.PlivoLeg, Call]:
    """A leg and its call (``ready``: with its Voice Live session configured for µ-law both ways)."""
    leg = plivo.PlivoLeg(plivo.parse_message(start_message()))  # type: ignore[arg-type]
    call = Call(call_id=CALL, stream_id=STREAM, profile_name="main", profile=CONFIG.profiles["main"], started_at=0.0)
    if ready:
        call.voicelive_connected(1.0)
        call.voicelive_event({"type": "session.updated", "session": {
            "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}}, 2.0)
        call.to_voicelive.clear()
        call.to_phone.clear()
    return leg, call


# --- inbound messages ------------------------------------------------------------------------------


def test_the_documented_start_is_parsed() -> None:
    assert plivo.parse_message(start_message()) == plivo.Start(
        STREAM, CALL, "MAXXXXXXXXXXXXXXXXXX", ("inbound",), "userId=12345;sessionId=abc-xyz")


def test_the_documented_media_message_keeps_its_payload_text() -> None:
    event = plivo.parse_message(media_message())
    assert event == plivo.Media(PAYLOAD, "inbound")


def test_unknown_fields_and_a_sample_rate_as_text_are_tolerated() -> None:
    event = plivo.parse_message(start_message(mediaFormat={"encoding": "audio/x-mulaw", "sampleRate": "8000"},
                                              future={"x": 1}))
    assert isinstance(event, plivo.Start)


@pytest.mark.parametrize("fmt", [
    {"encoding": "audio/x-l16", "sampleRate": 8000},
    {"encoding": "audio/x-l16", "sampleRate": 16000},
    {"encoding": "audio/x-mulaw", "sampleRate": 16000},
    {"encoding": "audio/x-mulaw", "sampleRate": True},
    {"encoding": "audio/x-mulaw", "sampleRate": "fast"},
])
def test_a_stream_in_another_format_is_refused_at_its_start(fmt: dict) -> None:
    with pytest.raises(plivo.PlivoProtocolError) as err:
        plivo.parse_message(start_message(mediaFormat=fmt))
    assert err.value.event == "start"
    assert "audio/x-mulaw" in str(err.value)


def test_the_other_documented_events() -> None:
    assert plivo.parse_message(json.dumps({"event": "dtmf", "sequenceNumber": 7, "streamId": STREAM,
                                           "dtmf": {"track": "inbound", "digit": "5"}})) == plivo.Dtmf("5")
    assert plivo.parse_message(json.dumps({"event": "playedStream", "streamId": STREAM,
                                           "name": "customer greeting audio"})) == plivo.PlayedStream(
        "customer greeting audio")
    assert plivo.parse_message(json.dumps({"sequenceNumber": 0, "event": "clearedAudio",
                                           "streamId": STREAM})) == plivo.CLEARED
    assert plivo.parse_message('{"event":"stop","streamId":"x"}') == plivo.STOP
    assert plivo.parse_message('{"event":"brand-new"}') == plivo.OtherEvent("brand-new")


@pytest.mark.parametrize(("text", "reason"), [
    ("not json", "not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"sequenceNumber": 1}', "without an event name"),
    ('{"event": "media"}', "without a media object"),
    ('{"event": "media", "media": {"payload": "@@@@"}}', "not valid base64"),
    ('{"event": "media", "media": {"payload": ""}}', "not valid base64"),
    ('{"event": "playedStream", "name": 17}', "without a name"),
    ('{"event": "dtmf", "dtmf": {}}', "without dtmf.digit"),
    ('{"event": "dtmf", "dtmf": {"digit": "x"}}', "not a keypad key"),
    ('{"event": "start", "start": {"streamId": "s"}}', "without start.callId"),
    ('{"event": "start", "start": {"callId": "c"}}', "without start.streamId"),
    ('{"event": "start", "start": []}', "without a start object"),
    ('{"event": "media", "media": {"payload": "' + "9" * 5000 + '"}, "n": ' + "9" * 5000 + "}", "not usable JSON"),
    ("[" * 100_000, "nested too deeply"),
])
def test_bad_messages_get_a_clear_reason(text: str, reason: str) -> None:
    with pytest.raises(plivo.PlivoProtocolError, match=reason):
        plivo.parse_message(text)


# --- the leg: into the call, and back out ----------------------------------------------------------


def test_caller_audio_reaches_voice_live_as_the_same_text() -> None:
    leg, call = leg_and_call(ready=True)
    assert leg.feed(call, media_message(), 10.0) is None
    appended = [json.loads(m) for m in call.to_voicelive if '"input_audio_buffer.append"' in m]
    assert [m["audio"] for m in appended] == [PAYLOAD]  # untouched


def test_outbound_track_audio_is_not_sent_to_voice_live() -> None:
    leg, call = leg_and_call()
    assert leg.feed(call, media_message(track="outbound"), 10.0) is None
    assert not any('"input_audio_buffer.append"' in m for m in call.to_voicelive)


def test_keys_checkpoints_and_the_end_reach_the_call() -> None:
    leg, call = leg_and_call(ready=True)
    assert leg.feed(call, json.dumps({"event": "dtmf", "dtmf": {"track": "inbound", "digit": "4"}}), 3.0) is None
    assert leg.feed(call, json.dumps({"event": "dtmf", "dtmf": {"digit": "#"}}), 3.5) is None
    (entry,) = [json.loads(m) for m in call.to_voicelive if '"conversation.item.create"' in m]
    assert entry["item"]["content"][0]["text"] == "[The caller pressed these keys on the phone keypad: 4 #]"
    assert leg.feed(call, json.dumps({"event": "playedStream", "name": "999"}), 4.0) is None  # not pending: stale
    assert call.stats.marks_acked == 0
    assert leg.feed(call, json.dumps({"event": "clearedAudio", "streamId": STREAM}), 5.0) is None
    assert not call.ended
    assert leg.feed(call, '{"event":"stop"}', 6.0) is None
    assert call.ended and call.end_reason == "caller_hung_up"


def test_problems_are_named_for_the_log() -> None:
    leg, call = leg_and_call()
    assert leg.feed(call, "{", 1.0)[0] == "malformed"  # type: ignore[index]
    assert leg.feed(call, start_message(), 1.0) == ("duplicate-start", "a second start message on the same stream")
    assert leg.feed(call, '{"event":"sendDTMF"}', 1.0)[0] == "unknown-event"  # type: ignore[index]


def test_actions_become_the_documented_outbound_messages() -> None:
    leg, _ = leg_and_call()
    play = json.loads(leg.encode(PlayAudio(PAYLOAD)))  # type: ignore[arg-type]
    assert play == {"event": "playAudio",
                    "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": PAYLOAD}}
    assert json.loads(leg.encode(SendMark("17"))) == {  # type: ignore[arg-type]
        "event": "checkpoint", "streamId": STREAM, "name": "17"}
    assert json.loads(leg.encode(ClearPlayback())) == {"event": "clearAudio", "streamId": STREAM}  # type: ignore[arg-type]


def test_a_checkpoint_acknowledges_playback_and_a_clear_leaves_nothing_to_wait_for() -> None:
    leg, call = leg_and_call(ready=True)
    call.voicelive_event({"type": "response.created", "response": {"id": "r1", "status": "in_progress"}}, 9.0)
    for i, t in enumerate((10.0, 11.0)):
        call.voicelive_event({"type": "response.audio.delta", "response_id": "r1", "item_id": "i1",
                              "output_index": 0, "content_index": 0,
                              "delta": base64.b64encode(b"\x7f" * 480).decode(), "event_id": f"e{i}"}, t)
    marks = [a.name for a in call.to_phone if isinstance(a, SendMark)]
    assert len(marks) == 2
    assert leg.feed(call, json.dumps({"event": "playedStream", "streamId": STREAM, "name": marks[0]}), 80.0) is None
    assert call.stats.marks_acked == 1
    call.playout.flush(90.0)  # a barge-in: the second checkpoint is never acknowledged by Plivo
    assert not call.playout.playing(90.0)
    assert leg.feed(call, json.dumps({"event": "playedStream", "name": marks[1]}), 95.0) is None
    assert call.stats.marks_acked == 1  # a late one for a cleared checkpoint changes nothing


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.text(max_size=40),
    st.binary(max_size=20),
    st.builds(lambda e, n: json.dumps({"event": e, "name": n, "dtmf": {"digit": n}, "media": {"payload": n}}),
              st.sampled_from(["media", "dtmf", "playedStream", "clearedAudio", "start", "stop", "x"]),
              st.one_of(st.text(max_size=5), st.integers(), st.none())),
), max_size=8))
def test_a_plivo_leg_takes_any_sequence_of_messages(messages: list[str | bytes]) -> None:
    leg, call = leg_and_call()
    wire = WireCall(call, leg)
    for i, message in enumerate(messages):
        wire.from_phone(message, float(i))
        for out in wire.take_phone():
            json.loads(out)
    assert set(wire.bad_input) <= {"malformed", "binary-frame", "duplicate-start", "unknown-event"}


def test_the_carrier_tells_its_messages_apart() -> None:
    carrier = PlivoCarrier()
    leg, _ = leg_and_call()
    assert carrier.caller_audio(media_message()) == PAYLOAD
    assert carrier.caller_audio(media_message(track="outbound")) is None
    assert carrier.outbound_kind(leg.encode(PlayAudio(PAYLOAD))) == "audio"  # type: ignore[arg-type]
    assert carrier.outbound_kind(leg.encode(ClearPlayback())) == "flush"  # type: ignore[arg-type]
    assert carrier.outbound_kind(leg.encode(SendMark("1"))) is None  # type: ignore[arg-type]
    assert carrier.playback_ack('{"event":"playedStream","name":"1"}')
    assert not carrier.playback_ack(media_message())


# --- Plivo XML ---------------------------------------------------------------------------------------


def test_the_answer_opens_a_bidirectional_mulaw_stream_that_keeps_the_call() -> None:
    url = "wss://gw.example.com/plivo/media?profile=main&token=a.b"
    root = ET.fromstring(plivo.stream_xml(url, after_url="https://gw.example.com/plivo/stream-ended"))
    stream, redirect = list(root)
    assert stream.tag == "Stream" and stream.text == url  # the & escaped in the XML, intact once parsed
    assert stream.attrib == {"bidirectional": "true", "keepCallAlive": "true", "audioTrack": "inbound",
                             "contentType": "audio/x-mulaw;rate=8000"}
    assert redirect.tag == "Redirect" and redirect.text == "https://gw.example.com/plivo/stream-ended"
    assert redirect.get("method") == "POST"


def test_speak_dial_and_hangup_xml() -> None:
    spoken = ET.fromstring(plivo.speak_xml("Sorry <&> goodbye"))
    assert [(e.tag, e.text) for e in spoken] == [("Speak", "Sorry <&> goodbye"), ("Hangup", None)]
    dial = ET.fromstring(plivo.dial_xml("+14155550100", caller_id="+15555550100"))
    (element,) = list(dial)
    assert element.tag == "Dial" and element.get("callerId") == "15555550100"  # Plivo writes no plus
    assert [(e.tag, e.text) for e in element] == [("Number", "14155550100")]


@pytest.mark.parametrize(("given", "routed"), [
    ("14155550100", "+14155550100"),  # as Plivo writes numbers
    ("+14155550100", "+14155550100"),
    ("+1 (415) 555-0100", "+14155550100"),
    ("sip:john1234@phone.plivo.com", "sip:john1234@phone.plivo.com"),
    ("1234", "1234"),
    ("", ""),
])
def test_called_numbers_are_routed_in_e164_with_the_plus(given: str, routed: str) -> None:
    assert plivo.e164(given) == routed
    assert [e.tag for e in ET.fromstring(plivo.hangup_xml())] == ["Hangup"]


# --- V3 signatures -----------------------------------------------------------------------------------

TOKEN = "MjA0ZDk2ZGJkNWQ2ODJhNGE3ODc3NTk1YzY5NjMy"
NONCE = "05429567804466091622"


def by_hand(text: str, token: str = TOKEN) -> str:
    """HMAC-SHA256 of the documented signed text, base64."""
    return base64.b64encode(hmac.new(token.encode(), text.encode(), hashlib.sha256).digest()).decode()


def test_a_post_is_signed_over_the_url_then_sorted_names_and_values_then_the_nonce() -> None:
    form = {"To": "+15555550100", "CallUUID": CALL, "From": "+15555550199"}
    text = f"https://gw.example.com/plivo/answer?CallUUID{CALL}From+15555550199To+15555550100.{NONCE}"
    assert plivo_signature(TOKEN, "POST", "https://gw.example.com/plivo/answer", NONCE, form) == by_hand(text)


def test_a_post_to_a_url_with_a_query_signs_the_sorted_query_then_a_dot_then_the_form() -> None:
    url = "https://gw.example.com/plivo/transfer?to=%2B14155550100&a=1"
    text = f"https://gw.example.com/plivo/transfer?a=1&to=+14155550100.CallUUID{CALL}.{NONCE}"
    assert plivo_signature(TOKEN, "POST", url, NONCE, {"CallUUID": CALL}) == by_hand(text)


def test_a_get_and_an_empty_post_sign_the_url_and_sorted_query() -> None:
    url = "https://gw.example.com/x?b=2&a=1&a=0"
    assert plivo_signature(TOKEN, "GET", url, NONCE) == by_hand(f"https://gw.example.com/x?a=0&a=1&b=2.{NONCE}")
    assert plivo_signature(TOKEN, "POST", "https://gw.example.com/x", NONCE, {}) == by_hand(
        f"https://gw.example.com/x.{NONCE}")


def test_check_takes_any_of_several_signatures_and_refuses_the_rest() -> None:
    url, form = "https://gw.example.com/plivo/answer", {"CallUUID": CALL}
    good = plivo_signature(TOKEN, "POST", url, NONCE, form)
    other = plivo_signature("another-token", "POST", url, NONCE, form)
    assert check_plivo_signature(TOKEN, "POST", url, form, good, NONCE)
    assert check_plivo_signature(TOKEN, "POST", url, form, f"{other}, {good}", NONCE)
    assert check_plivo_signature(TOKEN, "POST", "https://gw.example.com:443/plivo/answer", form, good, NONCE)
    assert not check_plivo_signature(TOKEN, "POST", url, form, other, NONCE)
    assert not check_plivo_signature(TOKEN, "POST", url, {"CallUUID": "another"}, good, NONCE)
    assert not check_plivo_signature(TOKEN, "POST", url, form, good, "another-nonce")
    assert not check_plivo_signature(TOKEN, "POST", url + "?x=1", form, good, NONCE)
    for missing in (None, ""):
        assert not check_plivo_signature(TOKEN, "POST", url, form, missing, NONCE)
        assert not check_plivo_signature(TOKEN, "POST", url, form, good, missing)
    assert not check_plivo_signature("", "POST", url, form, good, NONCE)
    assert not check_plivo_signature(TOKEN, "POST", "https://gw.example.com:x/", form, good, NONCE)  # bad port


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text("abcXYZ", min_size=1, max_size=6), st.text(max_size=8), max_size=5),
       st.text("0123456789", min_size=1, max_size=20))
def test_any_signed_form_checks_and_any_change_to_it_does_not(form: dict[str, str], nonce: str) -> None:
    url = "https://gw.example.com/plivo/answer"
    signature = plivo_signature(TOKEN, "POST", url, nonce, form)
    assert check_plivo_signature(TOKEN, "POST", url, form, signature, nonce)
    assert not check_plivo_signature(TOKEN, "POST", url, {**form, "Extra": "1"}, signature, nonce)

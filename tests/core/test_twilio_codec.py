"""Twilio Media Streams codec and TwiML (no sockets)."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET

import pytest

from gateway.carriers.twilio import codec as twilio

SID = "MZ00000000000000000000000000000001"
PAYLOAD = base64.b64encode(b"\xff" * 160).decode()


def start_message(**overrides: object) -> str:
    start = {
        "streamSid": SID, "accountSid": "AC1", "callSid": "CA1", "tracks": ["inbound"],
        "customParameters": {"profile": "sales", "to": "+15555550100"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    start.update(overrides)  # type: ignore[arg-type]
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": SID, "start": start})


def test_start_is_parsed_with_parameters() -> None:
    event = twilio.parse_message(start_message())
    assert event == twilio.Start(SID, "CA1", "AC1", {"profile": "sales", "to": "+15555550100"}, ("inbound",))


def test_numbers_sent_as_strings_and_unknown_fields_are_tolerated() -> None:
    event = twilio.parse_message(start_message(
        mediaFormat={"encoding": "audio/x-mulaw", "sampleRate": "8000", "channels": "1"}, extra={"x": 1}))
    assert isinstance(event, twilio.Start)
    media = json.dumps({"event": "media", "sequenceNumber": "2", "streamSid": SID, "future": True,
                        "media": {"track": "inbound", "chunk": "1", "timestamp": "21", "payload": PAYLOAD}})
    assert twilio.parse_message(media) == twilio.Media(PAYLOAD, "inbound")


@pytest.mark.parametrize("fmt", [
    {"encoding": "audio/x-l16", "sampleRate": 8000, "channels": 1},
    {"encoding": "audio/x-mulaw", "sampleRate": 16000, "channels": 1},
    {"encoding": "audio/x-mulaw", "sampleRate": "fast", "channels": 1},
])
def test_unsupported_media_format_is_refused(fmt: dict) -> None:
    with pytest.raises(twilio.TwilioProtocolError) as err:
        twilio.parse_message(start_message(mediaFormat=fmt))
    assert err.value.event == "start"


def test_other_events() -> None:
    assert twilio.parse_message('{"event":"connected","protocol":"Call","version":"1.0.0"}') == twilio.CONNECTED
    assert twilio.parse_message(json.dumps({"event": "mark", "streamSid": SID, "sequenceNumber": "4",
                                            "mark": {"name": "17"}})) == twilio.MarkAck("17")
    assert twilio.parse_message(json.dumps({"event": "dtmf", "dtmf": {"track": "inbound_track",
                                                                      "digit": "7"}})) == twilio.Dtmf("7")
    assert twilio.parse_message('{"event":"stop","stop":{"callSid":"CA1"}}') == twilio.STOP
    assert twilio.parse_message('{"event":"brand-new"}') == twilio.OtherEvent("brand-new")


@pytest.mark.parametrize("text, reason", [
    ("{nope", "not valid JSON"),
    ("[1,2]", "not a JSON object"),
    ('{"event":"media","media":{"payload":"@@@@"}}', "not valid base64"),
    ('{"event":"media","media":{"payload":"AAA"}}', "not valid base64"),
    ('{"event":"media","media":{}}', "missing"),
    ('{"event":"media"}', "without a media object"),
    ('{"event":"mark","mark":{}}', "mark.name"),
    ('{"event":"dtmf"}', "dtmf.digit"),
    ('{"event":"start","start":{"callSid":"CA1"}}', "streamSid"),
    ('{"sequenceNumber":"1"}', "without an event name"),
])
def test_bad_messages_get_a_clear_reason(text: str, reason: str) -> None:
    with pytest.raises(twilio.TwilioProtocolError, match=reason):
        twilio.parse_message(text)


def test_encoder_output_is_valid_twilio_json_with_the_payload_untouched() -> None:
    enc = twilio.TwilioEncoder(SID)
    media = json.loads(enc.media(PAYLOAD))
    assert media == {"event": "media", "streamSid": SID, "media": {"payload": PAYLOAD}}
    assert json.loads(enc.mark("42")) == {"event": "mark", "streamSid": SID, "mark": {"name": "42"}}
    assert json.loads(enc.clear()) == {"event": "clear", "streamSid": SID}
    odd = twilio.TwilioEncoder('MZ"\\x')
    assert json.loads(odd.clear())["streamSid"] == 'MZ"\\x'


@pytest.mark.parametrize("public, expected", [
    ("https://voice.example.com", "wss://voice.example.com/twilio/media"),
    ("http://127.0.0.1:8080/", "ws://127.0.0.1:8080/twilio/media"),
    ("https://example.com/gw", "wss://example.com/gw/twilio/media"),
    ("wss://example.com", "wss://example.com/twilio/media"),
])
def test_stream_url_follows_the_public_url(public: str, expected: str) -> None:
    assert twilio.stream_url(public) == expected


def test_connect_twiml_carries_parameters_escaped() -> None:
    xml = twilio.connect_twiml("wss://x/twilio/media", {"profile": "sales", "note": 'a"<b>&'})
    root = ET.fromstring(xml)
    stream = root.find("./Connect/Stream")
    assert stream is not None and stream.get("url") == "wss://x/twilio/media"
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert params == {"profile": "sales", "note": 'a"<b>&'}


def test_the_fast_media_path_agrees_with_the_parser() -> None:
    twilio_shaped = json.dumps({"event": "media", "sequenceNumber": "3", "streamSid": SID, "media": {
        "track": "inbound", "chunk": "2", "timestamp": "40", "payload": PAYLOAD}}, separators=(",", ":"))
    assert twilio.fast_media_payload(twilio_shaped) == PAYLOAD == twilio.parse_message(twilio_shaped).payload
    reordered = json.dumps({"event": "media", "media": {"payload": PAYLOAD, "track": "inbound"}})
    outbound = twilio_shaped.replace('"track":"inbound"', '"track":"outbound"')
    truncated = twilio_shaped[:-2]
    extra = twilio_shaped[:-2] + ',"x":"y"}}'
    for text in (reordered, outbound, truncated, extra, twilio_shaped.replace(PAYLOAD, "!!!!")):
        assert twilio.fast_media_payload(text) is None  # anything else takes the full parser
    assert twilio.parse_message(reordered) == twilio.Media(PAYLOAD, "inbound")

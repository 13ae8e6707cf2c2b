"""Asterisk chan_websocket codec, credentials and the leg's flow control (no sockets).

Control messages are written as chan_websocket.c writes them: plain text (``MEDIA_START
connection_id:... channel:... channel_id:... format:ulaw optimal_frame_size:160 ptime:20``) and JSON
(``{"event":"MEDIA_START",...}``, Asterisk 20.18 / 22.8 / 23.2 and later).
"""

from __future__ import annotations

import base64
import json
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audio import G711_ULAW, PCM16_16K, apology_clip
from gateway.call import CLEAR, Call, Hangup, PlayAudio, SendMark
from gateway.carriers.asterisk import codec
from gateway.carriers.asterisk.auth import basic_header, check_authorization
from gateway.carriers.asterisk.carrier import AsteriskCarrier
from gateway.config import parse_config
from gateway.wire import WireCall

PLAIN_START = ("MEDIA_START connection_id:media_connection1 channel:WebSocket/media_connection1/0x5140001a0040 "
               "channel_id:1761245643.1 format:ulaw optimal_frame_size:160 ptime:20")
JSON_START = json.dumps({
    "event": "MEDIA_START", "connection_id": "media_connection1",
    "channel": "WebSocket/media_connection1/0x5140001a0040",
    "channel_id": "1761245643.1", "format": "ulaw", "optimal_frame_size": 160, "ptime": 20,
    "channel_variables": {"DIALEDPEERNUMBER": "media_connection1/c(ulaw)", "MEDIA_WEBSOCKET_CONNECTION_ID":
                          "media_connection1", "MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE": "160"}})


def _start(text: str = PLAIN_START) -> codec.MediaStart:
    event = codec.parse_control(text)
    assert isinstance(event, codec.MediaStart)
    return event


def _ready_call() -> Call:
    config = parse_config("profiles: {p: {model: m}}", env={})
    call = Call(call_id="c", stream_id="s", piece_ms=60, profile_name="p", profile=config.profiles["p"], started_at=0.0)
    call.voicelive_connected(0.0)
    call.voicelive_event({"type": "session.updated", "session": {
        "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}}, 0.0)
    call.to_voicelive.clear()
    return call


def _wire(text: str = PLAIN_START, **leg_options: object) -> WireCall:
    return WireCall(_ready_call(), codec.AsteriskLeg(_start(text), **leg_options))  # type: ignore[arg-type]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- parsing -----------------------------------------------------------------------------------------


def test_media_start_in_both_formats() -> None:
    plain, js = _start(PLAIN_START), _start(JSON_START)
    for event in (plain, js):
        assert (event.connection_id, event.channel_id, event.format, event.optimal_frame_size, event.ptime) == (
            "media_connection1", "1761245643.1", "ulaw", 160, 20)
        assert event.channel == "WebSocket/media_connection1/0x5140001a0040"
    assert not plain.json_control and js.json_control
    assert js.variables["MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE"] == "160"


def test_the_first_releases_media_start_without_channel_id_or_ptime() -> None:
    event = _start("MEDIA_START connection_id:e226e283 channel:WebSocket/connectionid format:ulaw "
                   "optimal_frame_size:160")
    assert (event.connection_id, event.channel_id, event.ptime) == ("e226e283", "", 20)


@pytest.mark.parametrize("text", [
    "MEDIA_START channel:x format:ulaw optimal_frame_size:160",  # no connection id
    "MEDIA_START connection_id:a format:ulaw optimal_frame_size:big",
    "MEDIA_START connection_id:a format:ulaw optimal_frame_size:0",
    "MEDIA_START connection_id:a optimal_frame_size:160",  # no format
    '{"event":"MEDIA_START","connection_id":"a","format":"ulaw","optimal_frame_size":true}',
])
def test_unusable_media_start_is_refused(text: str) -> None:
    with pytest.raises(codec.AsteriskProtocolError):
        codec.parse_control(text)


def test_notifications_in_plain_text_and_json() -> None:
    cases = [
        ("DTMF_END digit:5 channel_id:1761245643.1", '{"event":"DTMF_END","channel_id":"1","digit":"5"}',
         codec.Dtmf("5")),
        ("DTMF_END digit:*", '{"event":"DTMF_END","digit":"*"}', codec.Dtmf("*")),
        ("MEDIA_MARK_PROCESSED 17", '{"event":"MEDIA_MARK_PROCESSED","channel_id":"1","correlation_id":"17"}',
         codec.MarkProcessed("17")),
        ("MEDIA_XOFF", '{"event":"MEDIA_XOFF","channel_id":"1"}', codec.FLOW_OFF),
        ("MEDIA_XON", '{"event":"MEDIA_XON","channel_id":"1"}', codec.FLOW_ON),
        ("QUEUE_DRAINED", '{"event":"QUEUE_DRAINED","channel_id":"1"}', codec.QUEUE_DRAINED),
        ("MEDIA_BUFFERING_COMPLETED b1", '{"event":"MEDIA_BUFFERING_COMPLETED","correlation_id":"b1"}',
         codec.BufferingCompleted("b1")),
        ("STATUS channel_id:1 queue_length:43 xon_level:800 xoff_level:900 queue_full:false bulk_media:true "
         "media_paused:false",
         '{"event":"STATUS","channel_id":"1","queue_length":43,"xon_level":800,"xoff_level":900,"queue_full":false,'
         '"bulk_media":true,"media_paused":false}', codec.Status(43, False, 800, 900)),
        ("ERROR channel_id:1 error_text:MARK_MEDIA not supported in passthrough mode",
         '{"event":"ERROR","channel_id":"1","error_text":"MARK_MEDIA not supported in passthrough mode"}',
         codec.DriverError("MARK_MEDIA not supported in passthrough mode")),
        ("SOMETHING_NEW a:b", '{"event":"SOMETHING_NEW"}', codec.OtherEvent("SOMETHING_NEW")),
    ]
    for plain, js, expected in cases:
        assert codec.parse_control(plain) == expected, plain
        assert codec.parse_control(js) == expected, js
    assert codec.parse_control("  MEDIA_XON\n") == codec.FLOW_ON  # Asterisk strips; so does the gateway


@pytest.mark.parametrize("text", ["", "   ", "hello world", "{not json", "[]", '{"event": 3}', "DTMF_END digit:x",
                                  "DTMF_END", '{"event":"DTMF_END","digit":"12"}', "\udcff"])
def test_bad_control_messages_are_refused_with_a_reason(text: str) -> None:
    with pytest.raises(codec.AsteriskProtocolError) as err:
        codec.parse_control(text)
    assert str(err.value)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_parse_control_never_raises_anything_else(data: str | bytes) -> None:
    try:
        codec.parse_control(data)
    except codec.AsteriskProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=120), st.binary(max_size=400)))
def test_the_leg_turns_any_input_into_a_result_or_a_problem(data: str | bytes) -> None:
    wire = _wire()
    wire.from_phone(data, 20.0)
    assert "unhandled-message" not in wire.bad_input


# --- the leg: audio both ways ------------------------------------------------------------------------


def test_caller_frames_reach_voicelive_as_one_base64_each() -> None:
    wire = _wire()
    frames = [bytes([i]) * 160 for i in range(5)]
    for i, frame in enumerate(frames):
        wire.from_phone(frame, 20.0 * (i + 1))
    sent = [json.loads(m) for m in wire.take_voicelive()]
    assert [m["audio"] for m in sent] == [_b64(f) for f in frames]
    assert wire.bad_input == {}


def test_bot_audio_goes_out_byte_exact_with_media_buffering_first() -> None:
    wire = _wire()
    audio = bytes(range(256)) * 3 + b"\x01\x02"  # not a whole number of frames
    wire.call.to_phone += [PlayAudio(_b64(audio)), SendMark("1"), PlayAudio(_b64(b"\x7f" * 100)), SendMark("2")]
    out = wire.take_phone()
    assert out == ["START_MEDIA_BUFFERING", audio, "MARK_MEDIA 1", b"\x7f" * 100, "MARK_MEDIA 2"]


def test_json_sockets_get_json_commands() -> None:
    wire = _wire(JSON_START)
    wire.call.to_phone += [PlayAudio(_b64(b"\xff" * 160)), SendMark("7"), CLEAR, Hangup("done")]
    out = wire.take_phone()
    assert [json.loads(m) if isinstance(m, str) else m for m in out] == [
        {"command": "START_MEDIA_BUFFERING"}, b"\xff" * 160, {"command": "MARK_MEDIA", "correlation_id": "7"},
        {"command": "FLUSH_MEDIA"}, {"command": "HANGUP"}]


def test_long_audio_is_cut_at_whole_frames_under_the_message_limit() -> None:
    wire = _wire()
    audio = bytes(range(256)) * 1000  # 256 000 bytes
    wire.call.to_phone.append(PlayAudio(_b64(audio)))
    out = wire.take_phone()
    chunks = out[1:]
    assert all(isinstance(c, bytes) and len(c) <= codec.MAX_MESSAGE for c in chunks)
    assert all(len(c) % 160 == 0 for c in chunks[:-1])
    assert b"".join(chunks) == audio  # type: ignore[arg-type]


def test_a_flush_ends_media_buffering_so_the_next_audio_starts_it_again() -> None:
    wire = _wire()
    wire.call.to_phone += [PlayAudio(_b64(b"\x01" * 160)), CLEAR, PlayAudio(_b64(b"\x02" * 160))]
    assert wire.take_phone() == ["START_MEDIA_BUFFERING", b"\x01" * 160, "FLUSH_MEDIA", "START_MEDIA_BUFFERING",
                                 b"\x02" * 160]


def test_marks_come_back_as_playback_acknowledgements_and_keys_reach_the_call() -> None:
    wire = _wire()
    call = wire.call
    call.voicelive_event({"type": "response.created", "response": {"id": "r1"}}, 10.0)
    call.voicelive_event({"type": "response.audio.delta", "response_id": "r1", "item_id": "i1",
                          "delta": _b64(b"\xff" * 960)}, 20.0)
    out = wire.take_phone()
    marks = [m for m in out if isinstance(m, str) and m.startswith("MARK_MEDIA")]
    assert marks == ["MARK_MEDIA 1", "MARK_MEDIA 2"]  # 60 ms pieces, a mark after each
    assert call.playout.pending  # type: ignore[union-attr]
    wire.from_phone("MEDIA_MARK_PROCESSED 2", 200.0)
    assert not call.playout.pending  # type: ignore[union-attr]
    assert call.stats.marks_acked == 1
    wire.from_phone("DTMF_END digit:5 channel_id:1761245643.1", 300.0)
    assert call.stats.dtmf == 1
    assert wire.bad_input == {}


def test_a_refused_mark_counts_as_played_so_the_call_never_waits_for_it() -> None:
    wire = _wire()
    call = wire.call
    call.voicelive_event({"type": "response.created", "response": {"id": "r1"}}, 10.0)
    call.voicelive_event({"type": "response.audio.delta", "response_id": "r1", "item_id": "i1",
                          "delta": _b64(b"\xff" * 480)}, 20.0)
    wire.take_phone()
    assert call.playout.pending  # type: ignore[union-attr]
    wire.from_phone("ERROR channel_id:1 error_text:MARK_MEDIA not supported in passthrough mode", 30.0)
    assert not call.playout.pending  # type: ignore[union-attr]
    assert wire.bad_input == {"asterisk-error": 1}


def test_hostile_and_unexpected_input_is_a_problem_not_a_crash() -> None:
    wire = _wire()
    for message in ("{not json", PLAIN_START, "SOMETHING_NEW", b"", "DTMF_END digit:?"):
        wire.from_phone(message, 10.0)
    assert wire.bad_input == {"malformed": 2, "duplicate-start": 1, "unknown-event": 1, "empty-frame": 1}
    wire.from_phone("QUEUE_DRAINED", 11.0)
    wire.from_phone("MEDIA_BUFFERING_COMPLETED", 11.0)
    assert sum(wire.bad_input.values()) == 5


# --- flow control ---------------------------------------------------------------------------------------


def _audio_actions(n: int, size: int = 480) -> list[PlayAudio | SendMark]:
    actions: list[PlayAudio | SendMark] = []
    for i in range(n):
        actions += [PlayAudio(_b64(bytes([i % 256]) * size)), SendMark(str(i + 1))]
    return actions


def test_xoff_holds_everything_in_order_and_xon_releases_it() -> None:
    wire = _wire()
    wire.call.to_phone += _audio_actions(2)
    first = wire.take_phone()
    wire.from_phone("MEDIA_XOFF", 100.0)
    wire.call.to_phone += [*_audio_actions(3)[2:], PlayAudio(_b64(b"\x09" * 480)), SendMark("9")]
    assert wire.take_phone() == ["GET_STATUS"]  # held; the queue's levels asked for once
    wire.from_phone("MEDIA_XON", 200.0)
    released = wire.take_phone()
    assert released == [b"\x01" * 480, "MARK_MEDIA 2", b"\x02" * 480, "MARK_MEDIA 3", b"\x09" * 480, "MARK_MEDIA 9"]
    assert first[0] == "START_MEDIA_BUFFERING"
    wire.call.to_phone += [PlayAudio(_b64(b"\x0a" * 160))]
    assert wire.take_phone() == [b"\x0a" * 160]  # no longer held


def test_xon_releases_a_bounded_batch_then_asks_for_status_for_the_rest() -> None:
    wire = _wire()
    leg = wire.leg
    assert isinstance(leg, codec.AsteriskLeg)
    wire.call.to_phone += _audio_actions(1)
    wire.take_phone()
    wire.from_phone("MEDIA_XOFF", 100.0)
    wire.call.to_phone += _audio_actions(200)  # 200 x 3 frames held
    assert wire.take_phone() == ["GET_STATUS"]
    wire.from_phone("MEDIA_XON", 200.0)  # fewer than 800 queued: room for 150 frames
    batch = wire.take_phone()
    audio = [m for m in batch if isinstance(m, bytes)]
    assert 150 <= sum(len(a) for a in audio) // 160 < 153
    assert batch[-1] == "GET_STATUS" and leg.xoff
    wire.from_phone("STATUS channel_id:1 queue_length:940 xon_level:800 xoff_level:900 queue_full:true "
                    "bulk_media:true media_paused:false", 210.0)
    assert wire.take_phone() == []  # still full: wait for MEDIA_XON
    wire.from_phone("STATUS channel_id:1 queue_length:850 xon_level:800 xoff_level:900 queue_full:false "
                    "bulk_media:true media_paused:false", 220.0)
    second = wire.take_phone()
    assert 100 <= sum(len(m) for m in second if isinstance(m, bytes)) // 160 < 103  # up to 950, by whole messages
    # everything comes out in order, nothing lost, once there is room for it
    rest: list[object] = []
    while leg.xoff:
        wire.from_phone("MEDIA_XON", 300.0)
        rest += wire.take_phone()
    everything = [m for m in batch + second + rest if m != "GET_STATUS"]
    expected = [base64.b64decode(action.payload) if isinstance(action, PlayAudio) else f"MARK_MEDIA {action.name}"
                for action in _audio_actions(200)]
    assert everything == expected


def test_the_batch_follows_the_levels_status_reports() -> None:
    wire = _wire()
    wire.call.to_phone += _audio_actions(1)
    wire.take_phone()
    wire.from_phone("MEDIA_XOFF", 100.0)
    wire.call.to_phone += _audio_actions(100)
    assert wire.take_phone() == ["GET_STATUS"]
    wire.from_phone('{"event":"STATUS","queue_length":90,"xon_level":40,"xoff_level":80,"queue_full":true}', 110.0)
    assert wire.take_phone() == []  # full: levels learned, nothing released
    wire.from_phone("MEDIA_XON", 200.0)  # below 40 queued: up to 100 (80 + 40 / 2)
    batch = wire.take_phone()
    assert 60 <= sum(len(m) for m in batch if isinstance(m, bytes)) // 160 < 63
    assert batch[-1] == "GET_STATUS"


def test_a_flush_drops_held_audio_and_ends_the_hold() -> None:
    wire = _wire()
    wire.call.to_phone += _audio_actions(1)
    wire.take_phone()
    wire.from_phone("MEDIA_XOFF", 100.0)
    wire.call.to_phone += [*_audio_actions(5), CLEAR, PlayAudio(_b64(b"\x05" * 160))]
    assert wire.take_phone() == ["GET_STATUS", "FLUSH_MEDIA", "START_MEDIA_BUFFERING", b"\x05" * 160]
    wire.from_phone("MEDIA_XON", 200.0)
    assert wire.take_phone() == []


def test_held_audio_is_bounded_and_the_excess_is_reported() -> None:
    warnings: list[str] = []

    class Log:
        def warning(self, message: str, **_: object) -> None:
            warnings.append(message)

    wire = _wire(log=Log(), hold_limit_bytes=960)
    leg = wire.leg
    assert isinstance(leg, codec.AsteriskLeg)
    wire.call.to_phone += _audio_actions(1)
    wire.take_phone()
    wire.from_phone("MEDIA_XOFF", 100.0)
    wire.call.to_phone += _audio_actions(4)  # 1920 bytes, 960 may be held
    wire.take_phone()
    assert leg.dropped_bytes == 960 and len(warnings) == 1
    wire.from_phone("MEDIA_XON", 200.0)
    out = wire.take_phone()
    assert sum(len(m) for m in out if isinstance(m, bytes)) == 960
    assert [m for m in out if isinstance(m, str)] == ["MARK_MEDIA 1", "MARK_MEDIA 2", "MARK_MEDIA 3", "MARK_MEDIA 4"]


def test_a_hangup_is_said_once() -> None:
    leg = codec.AsteriskLeg(_start())
    assert leg.encode(Hangup("bye")) == "HANGUP"
    assert leg.hangup_message() is None
    assert codec.AsteriskLeg(_start(JSON_START)).hangup_message() == '{"command":"HANGUP"}'


def test_formats_that_pass_through() -> None:
    assert codec.AUDIO_FORMATS["ulaw"] is G711_ULAW
    assert codec.AUDIO_FORMATS["slin16"] is PCM16_16K
    assert "opus" not in codec.AUDIO_FORMATS and "slin" not in codec.AUDIO_FORMATS


# --- credentials -----------------------------------------------------------------------------------------


def test_basic_credentials_as_asterisk_sends_them() -> None:
    header = basic_header("asterisk", "s3cret:with:colons")
    assert check_authorization(header, username="asterisk", password="s3cret:with:colons", token=None) is None
    assert check_authorization(basic_header("asterisk", "wrong"), username="asterisk", password="s3cret:with:colons",
                               token=None) == "bad basic credentials"
    assert check_authorization(basic_header("other", "s3cret:with:colons"), username="asterisk",
                               password="s3cret:with:colons", token=None) == "bad basic credentials"


@pytest.mark.parametrize("header", [
    None, "", "Basic", "Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode(), "Bearer ", "Bearer nope",
    "Digest x", "Basic " + base64.b64encode(b"\xff:\xfe").decode()])
def test_anything_else_is_refused(header: str | None) -> None:
    assert check_authorization(header, username="u", password="p", token="t0ken") is not None


def test_a_bearer_token_only_when_one_is_configured_and_nothing_when_nothing_is() -> None:
    assert check_authorization("Bearer t0ken", username=None, password=None, token="t0ken") is None
    assert check_authorization("bearer   t0ken ", username=None, password=None, token="t0ken") is None
    assert check_authorization("Bearer t0ken", username="u", password="p", token=None) is not None
    assert check_authorization(basic_header("u", "p"), username=None, password=None, token="t0ken") is not None
    assert check_authorization(basic_header("u", ""), username="u", password=None, token=None) == (
        "no Asterisk credentials configured")
    assert check_authorization("Bearer ", username=None, password=None, token=None) == (
        "no Asterisk credentials configured")


# --- the carrier's view of its messages -----------------------------------------------------------------


def test_the_carrier_tells_its_messages_apart() -> None:
    carrier = AsteriskCarrier()
    assert carrier.caller_audio(b"\xff" * 160) == _b64(b"\xff" * 160)
    assert carrier.caller_audio("MEDIA_XON") is None and carrier.caller_audio(b"") is None
    assert carrier.outbound_kind(b"\x00") == "audio"
    assert carrier.outbound_kind("FLUSH_MEDIA") == carrier.outbound_kind('{"command":"FLUSH_MEDIA"}') == "flush"
    assert carrier.outbound_kind("MARK_MEDIA 1") is None
    assert carrier.playback_ack("MEDIA_MARK_PROCESSED 3")
    assert carrier.playback_ack('{"event":"MEDIA_MARK_PROCESSED","correlation_id":"3"}')
    assert not carrier.playback_ack("DTMF_END digit:1") and not carrier.playback_ack(b"MEDIA_MARK_PROCESSED")


def test_a_recording_is_rebuilt_with_marks_or_paced_as_it_was_made() -> None:
    from gateway.carriers.base import ReplayError

    carrier = AsteriskCarrier()
    start = {"t": 1.0, "leg": "phone", "dir": "in", "msg": PLAIN_START}
    audio_out = {"t": 50.0, "leg": "phone", "dir": "out", "binary": _b64(b"\xff" * 159)}
    mark_out = {"t": 50.0, "leg": "phone", "dir": "out", "msg": "MARK_MEDIA 1"}
    header = {"call_id": "1761245643.1", "audio_format": "g711_ulaw"}
    marked = carrier.replay_start(header, [start, audio_out, mark_out])
    apology = apology_clip(G711_ULAW)  # what the live call played if the gateway failed it
    assert marked.options == {"late_acks": True, "fallback_audio": apology}
    assert marked.index == 0 and marked.started_at == 1.0
    assert (marked.call_id, marked.stream_id) == ("1761245643.1", "media_connection1")
    paced = carrier.replay_start(header, [{"t": 0.5, "leg": "phone", "dir": "in", "binary": _b64(b"\xff")},
                                          start, audio_out])
    assert paced.options == {"paced": True, "piece_ms": 20, "fallback_audio": apology} and paced.index == 1
    with pytest.raises(ReplayError):
        carrier.replay_start(header, [{"t": 0.5, "leg": "phone", "dir": "in", "msg": "MEDIA_XON"}])


# --- the numbers the dialplan puts in the media socket's URI -----------------------------------------


@pytest.mark.parametrize(("value", "number"), [
    ("+14155550199", "+14155550199"),
    ("+1 (415) 555-0199", "+14155550199"),
    ("tel:+14155550199", "+14155550199"),
    ("4155550199", "4155550199"),
    ("1001", "1001"),  # an extension
    (" 14155550199", "14155550199"),  # an unencoded "+" that the query string turned into a space
    ("anonymous", None),  # a withheld caller id
    ("alice", None),
    ("+1415555O199", None),  # a letter O among the digits
    ("+1415\u0665550199", None),  # a digit that is not ASCII
    ("+" + "1" * 33, None),  # longer than any number
    (" " * 60 + "1", "1"),
    ("1" * 65, None),
    ("41555501 99\n<script>", None),
    ("", None),
    (None, None),
])
def test_a_number_from_the_uri_is_kept_only_when_it_is_one(value: str | None, number: str | None) -> None:
    assert codec.uri_number(value) == number


@given(st.text(max_size=80))
def test_whatever_the_dialplan_sends_only_a_plus_and_digits_come_out(value: str) -> None:
    number = codec.uri_number(value)
    assert number is None or (len(number) <= 33 and number.lstrip("+").isdigit() and number.isascii()
                              and "+" not in number[1:])


class _Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, object]]] = []

    def info(self, event: str, **fields: object) -> None:
        self.lines.append((event, fields))

    warning = info


def test_the_route_takes_the_callers_and_the_called_numbers_from_the_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiohttp.test_utils import make_mocked_request

    from gateway.carriers.asterisk import routes

    config = parse_config("profiles:\n  main: {model: gpt-realtime}\n  sales: {model: gpt-realtime}\n"
                          "routes:\n  default: main\n  numbers: {\"+15555550123\": sales}\n", env={})
    ctx = type("Ctx", (), {"config": config})()
    lines = _Log()
    monkeypatch.setattr(routes, "log", lines)
    good = make_mocked_request("GET", "/asterisk/media?to=%2B1%20555%20555%200123&from=%2B1%20(415)%20555-0199")
    caller, called = routes._numbers(good, "c1")
    assert (caller, called) == ("+14155550199", "+15555550123") and lines.lines == []
    assert routes._profile_for(good, ctx, "c1", called) == "sales"  # type: ignore[arg-type]
    secret_ish = "4111111111111111; DROP TABLE calls"
    bad = make_mocked_request("GET", "/asterisk/media?" + urlencode({"from": secret_ish, "to": "sales-line"}))
    assert routes._numbers(bad, "c2") == (None, None)
    assert [(event, fields["key"], fields["length"]) for event, fields in lines.lines] == [
        ("a number in the media socket's URI is not a phone number; left out", "from", len(secret_ish)),
        ("a number in the media socket's URI is not a phone number; left out", "to", len("sales-line"))]
    assert "4111" not in repr(lines.lines)  # never the value itself
    assert routes._profile_for(bad, ctx, "c2", None) == "main"  # type: ignore[arg-type]
    assert routes._numbers(make_mocked_request("GET", "/asterisk/media"), "c3") == (None, None)
    assert lines.lines[2:] == []  # nothing given: nothing to say

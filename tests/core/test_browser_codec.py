"""The console's phone without sockets: the page's frames and messages into a call, the call's actions
and events out to the page, bad input, the carrier's view of a recording, and its config section."""

from __future__ import annotations

import base64
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audio import PCM16_24K, apology_clip
from gateway.call import CLEAR, Call, Hangup, PlayAudio, SendMark
from gateway.carriers.base import ReplayError
from gateway.carriers.browser import codec
from gateway.carriers.browser.carrier import BrowserCarrier
from gateway.carriers.browser.settings import BrowserSettings
from gateway.config import ConfigError, parse_config
from gateway.replay import load_fixture, run
from gateway.wire import WireCall

PROFILES = "profiles: {p: {model: m}}"
FRAME = bytes(range(256)) * 3 + bytes(192)  # 960 bytes: 20 ms at 24 kHz
BPM = PCM16_24K.bytes_per_ms


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _call(piece_ms: int = 100, **options: Any) -> Call:
    config = parse_config(PROFILES, env={})
    call = Call(call_id="console-1", stream_id="console-1", profile_name="p", profile=config.profiles["p"],
                started_at=5.0, audio=PCM16_24K, piece_ms=piece_ms, **options)
    call.voicelive_connected(5.0)
    call.voicelive_event({"type": "session.updated", "session": {
        "input_audio_format": "pcm16", "output_audio_format": "pcm16"}}, 5.0)
    call.to_voicelive.clear()
    return call


def _wire(**options: Any) -> tuple[WireCall, codec.BrowserLeg]:
    leg = codec.BrowserLeg("console-1", "p", 5.0)
    call = _call(observer=leg.observe, **options)
    leg.outbox.clear()  # (the events of the call's set-up, and started: see the test of the outbox)
    return WireCall(call, leg), leg


def _appended(wire: WireCall) -> list[str]:
    return [json.loads(m)["audio"] for m in wire.take_voicelive() if '"input_audio_buffer.append"' in m]


def _json_out(messages: list[str | bytes]) -> list[dict[str, Any]]:
    return [json.loads(m) for m in messages if isinstance(m, str)]


# --- from the page -------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [2, 960, 4800, 48_000])
def test_caller_frames_go_to_voicelive_as_they_came(size: int) -> None:
    wire, _ = _wire()
    frame = (FRAME * 50)[:size]
    wire.from_phone(frame, 10.0)
    assert _appended(wire) == [_b64(frame)]
    assert wire.bad_input == {}


@pytest.mark.parametrize("frame", [b"", b"\x01", FRAME[:959], bytes(48_002), bytes(48_001)],
                         ids=["empty", "one byte", "odd", "oversized", "oversized and odd"])
def test_a_frame_that_is_not_whole_samples_or_too_big_is_bad_input_and_the_call_goes_on(frame: bytes) -> None:
    wire, _ = _wire()
    wire.from_phone(FRAME, 10.0)
    wire.from_phone(frame, 30.0)
    wire.from_phone(FRAME[::-1], 50.0)
    assert _appended(wire) == [_b64(FRAME), _b64(FRAME[::-1])]  # the bad one dropped, nothing else
    assert wire.bad_input == {"bad-frame": 1}
    assert not wire.call.ended


def test_played_marks_are_the_calls_playback_acknowledgements() -> None:
    wire, _ = _wire()
    call = wire.call
    bot = bytes(range(200)) * 48  # 9600 bytes: 200 ms, two pieces of 100 ms
    call.voicelive_event({"type": "response.created", "response": {"id": "r1"}}, 20.0)
    call.voicelive_event({"type": "response.audio.delta", "response_id": "r1", "item_id": "i1",
                          "delta": _b64(bot)}, 20.0)
    out = wire.take_phone()
    events = [m for m in _json_out(out) if m["type"] == "event"]
    assert [e["name"] for e in events] == ["bot.first_audio"]
    audio_and_marks = [m for m in out if isinstance(m, bytes) or '"mark"' in m]
    assert audio_and_marks == [bot[:4800], '{"type":"mark","name":"1"}', bot[4800:], '{"type":"mark","name":"2"}']
    wire.from_phone('{"type":"played","name":"1"}', 120.0)
    assert call.stats.marks_acked == 1 and call.playout.playing(120.0)
    wire.from_phone('{"type":"played","name":"2"}', 220.0)
    assert call.stats.marks_acked == 2 and not call.playout.playing(220.0)
    wire.from_phone('{"type":"played","name":"2"}', 230.0)  # again: stale, ignored
    assert call.stats.marks_acked == 2 and wire.bad_input == {}


def test_a_barge_in_clears_the_page_and_truncates_at_its_acknowledged_playout() -> None:
    wire, _ = _wire()
    call = wire.call
    bot = bytes(4800 * 5)  # 500 ms in five pieces
    call.voicelive_event({"type": "response.created", "response": {"id": "r1"}}, 20.0)
    call.voicelive_event({"type": "response.audio.delta", "response_id": "r1", "item_id": "i1",
                          "delta": _b64(bot)}, 20.0)
    wire.take_phone()
    wire.from_phone('{"type":"played","name":"2"}', 220.0)  # 200 ms played by then
    wire.take_phone()
    wire.from_voicelive(json.dumps({"type": "input_audio_buffer.speech_started", "audio_start_ms": 900}), 250.0)
    out = _json_out(wire.take_phone())
    assert out[-1] == {"type": "clear"}
    (barge,) = [m for m in out if m.get("name") == "barge_in"]
    assert barge["fields"] == {"cleared": True, "response_id": "r1", "item_id": "i1", "truncated_at_ms": 230,
                               "received_ms": 500}
    assert barge["t"] == 245.0  # ms since the call started (the page's start, at 5 ms)
    (truncate,) = [json.loads(m) for m in wire.take_voicelive() if "truncate" in m]
    assert truncate["audio_end_ms"] == 230  # the last acknowledged mark plus the 30 ms since
    # the page answers the marks the clear dropped at once: they are stale, nothing moves
    for name in ("3", "4", "5"):
        wire.from_phone(json.dumps({"type": "played", "name": name}), 252.0)
    assert call.stats.marks_acked == 1 and call.barge_ins[0].heard_ms == 230 and wire.bad_input == {}


def test_hangup_ends_the_call_as_the_caller_hanging_up() -> None:
    wire, _ = _wire()
    wire.from_phone('{"type":"hangup"}', 40.0)
    assert wire.call.ended and wire.call.end_reason == "caller_hung_up"
    (ended,) = [m for m in _json_out(wire.take_phone()) if m["type"] == "event"]
    assert ended == {"type": "event", "name": "call.ended", "t": 35.0, "fields": {"reason": "caller_hung_up"}}


def test_keys_from_the_pages_keypad() -> None:
    wire, _ = _wire()
    for digit in "12#":
        wire.from_phone(json.dumps({"type": "dtmf", "digit": digit}), 40.0)
    assert wire.call.stats.dtmf == 3
    wire.from_phone('{"type":"dtmf","digit":"A"}', 41.0)  # not on the page's keypad
    wire.from_phone('{"type":"dtmf","digit":5}', 42.0)
    assert wire.call.stats.dtmf == 3 and wire.bad_input == {"malformed": 2}


@pytest.mark.parametrize(("message", "problem"), [
    ("{not json", "malformed"),
    ("[1, 2]", "malformed"),
    ('{"type":"dance"}', "malformed"),
    ('{"no":"type"}', "malformed"),
    ('{"type":"played"}', "malformed"),
    ('{"type":"played","name":7}', "malformed"),
    ('{"type":"played","name":"' + "1" * 65 + '"}', "malformed"),
    ('{"type":"start","profile":"p"}', "duplicate-start"),
])
def test_bad_messages_are_reported_and_change_nothing(message: str, problem: str) -> None:
    wire, _ = _wire()
    wire.from_phone(message, 40.0)
    wire.from_phone(FRAME, 60.0)
    assert wire.bad_input == {problem: 1}
    assert _appended(wire) == [_b64(FRAME)] and not wire.call.ended


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=300),
                 st.dictionaries(st.sampled_from(["type", "name", "digit", "profile"]),
                                 st.one_of(st.sampled_from(["played", "dtmf", "start", "hangup", "1"]),
                                           st.integers(), st.none(), st.text(max_size=5)),
                                 max_size=3).map(json.dumps)))
def test_the_leg_never_raises_on_what_a_page_may_send(data: str | bytes) -> None:
    leg = codec.BrowserLeg("console-1", "p", 0.0)
    problem = leg.feed(_call(), data, 10.0)
    assert problem is None or (isinstance(problem, tuple) and len(problem) == 2)


# --- to the page ---------------------------------------------------------------------------------------


def test_the_calls_actions_as_the_page_gets_them() -> None:
    leg = codec.BrowserLeg("console-1", "p", 0.0)
    audio = bytes(range(96)) * 10
    assert leg.encode(PlayAudio(_b64(audio))) == audio  # one binary frame, the bytes Voice Live sent
    assert leg.encode(SendMark("7")) == '{"type":"mark","name":"7"}'
    assert leg.encode(CLEAR) == '{"type":"clear"}'
    assert leg.encode(Hangup("bot_hung_up")) == '{"type":"ended","reason":"bot_hung_up"}'
    assert leg.encode(Hangup("bot_hung_up")) is None and leg.ended("drain_timeout") is None  # said once


def test_started_goes_first_and_the_page_sees_only_what_it_shows() -> None:
    leg = codec.BrowserLeg("console-ab12", "sales", 5.0)
    assert json.loads(leg.outbox[0]) == {"type": "started", "call_id": "console-ab12", "profile": "sales",
                                         "sample_rate": 24000}
    leg.outbox.clear()
    leg.observe("call.ended", 105.0, {"reason": "bot_transferred", "transfer_to": "+14155550100"})
    leg.observe("voicelive.error", 20.0, {"code": "bad", "message": "m" * 500, "caused_by": "session.update"})
    leg.observe("caller.dtmf", 20.0, {"digit": "4"})  # keys may be a PIN: not shown
    leg.observe("voicelive.connected", 20.0, {"connect_ms": 3.0})
    leg.observe("bot.transcript", 30.0, {"item_id": "i1", "text": "x" * 5000, "extra": "no"})
    leg.observe("tool.done", 40.0, {"name": "hours", "call_id": "c1", "ok": {"nested": "value"}})
    leg.observe("bot.first_audio", 50.0, {"response_id": "r1", "after_speech_stopped_ms": float("nan")})
    sent = [json.loads(m) for m in leg.outbox]
    assert [m["name"] for m in sent] == ["call.ended", "voicelive.error", "bot.transcript", "tool.done",
                                         "bot.first_audio"]
    assert sent[0] == {"type": "event", "name": "call.ended", "t": 100.0, "fields": {"reason": "bot_transferred"}}
    assert "14155550100" not in "".join(map(str, leg.outbox))
    assert sent[1]["fields"] == {"code": "bad", "message": "m" * codec.MAX_MESSAGE + "..."}
    assert sent[2]["fields"] == {"item_id": "i1", "text": "x" * codec.MAX_TEXT + "..."}
    assert sent[3]["fields"] == {"name": "hours", "call_id": "c1", "ok": None}
    assert sent[4]["fields"]["after_speech_stopped_ms"] is None


def test_every_event_the_page_shows_is_one_the_call_reports() -> None:
    source = inspect.getsource(sys.modules[Call.__module__])
    for name in codec.PAGE_EVENTS:
        assert f'"{name}"' in source, name


# --- the carrier's view of a recording -------------------------------------------------------------------


def test_the_carrier_tells_its_messages_apart() -> None:
    carrier = BrowserCarrier()
    assert carrier.caller_audio(FRAME) == _b64(FRAME)
    assert carrier.caller_audio(FRAME[:959]) is None and carrier.caller_audio(b"") is None
    assert carrier.caller_audio('{"type":"hangup"}') is None
    assert carrier.outbound_kind(b"\x00\x00") == "audio"
    assert carrier.outbound_kind('{"type":"clear"}') == "flush"
    assert carrier.outbound_kind('{"type":"mark","name":"1"}') is None
    assert carrier.outbound_kind('{"type":"event","name":"barge_in","t":1,"fields":{}}') is None
    assert carrier.playback_ack('{"type":"played","name":"3"}')
    assert not carrier.playback_ack('{"type":"hangup"}') and not carrier.playback_ack(b'{"type":"played"}')
    assert not carrier.playback_ack('{"type":"event","name":"played"}')


def test_a_recording_is_rebuilt_as_it_was_made() -> None:
    carrier = BrowserCarrier()
    start = {"t": 2.5, "leg": "phone", "dir": "in", "msg": '{"type":"start","profile":"sales"}'}
    early = {"t": 1.0, "leg": "phone", "dir": "in", "binary": _b64(FRAME)}
    header = {"call_id": "console-ab12", "stream_id": "console-ab12", "profile_name": "sales",
              "audio_format": "pcm16"}
    rebuilt = carrier.replay_start(header, [early, start])
    assert rebuilt.index == 1 and rebuilt.started_at == 2.5 and rebuilt.audio == PCM16_24K
    assert (rebuilt.call_id, rebuilt.stream_id) == ("console-ab12", "console-ab12")
    assert rebuilt.options["fallback_audio"] == apology_clip(PCM16_24K)
    leg = rebuilt.leg
    assert isinstance(leg, codec.BrowserLeg)
    assert leg.outbox == [codec.started_message("console-ab12", "sales")]  # the page heard started first
    assert rebuilt.options["observer"] == leg.observe  # and the call's events, as it did live
    with pytest.raises(ReplayError):
        carrier.replay_start(header, [early, {"t": 3.0, "leg": "phone", "dir": "in", "msg": '{"type":"hangup"}'}])
    assert carrier.replay_socket(header) == ("/console/media", {})


# --- the browser section of config.yaml ---------------------------------------------------------------


def test_the_section_sets_the_piece_size_and_never_says_real_calls_come() -> None:
    default = BrowserSettings.of(parse_config(PROFILES, env={}))
    assert default.piece_ms == 100 and not default.has_credential
    assert BrowserSettings.of(parse_config("browser: {piece_ms: 40}\n" + PROFILES, env={})).piece_ms == 40
    for bad in ("10", "401", "true", "0.5"):
        with pytest.raises(ConfigError) as err:
            parse_config(f"browser: {{piece_ms: {bad}}}\n" + PROFILES, env={})
        assert "browser.piece_ms" in str(err.value)
    # a console token says nothing about real callers: a gateway with only its console may use the simulator
    with_console = parse_config('gateway: {console_token: "${T}"}\n' + PROFILES, env={"T": "t" * 32})
    assert with_console.simulator_refusal() is None


# --- recorded console calls (tests/fixtures/calls/browser_*.jsonl) ----------------------------------------

CALLS = Path(__file__).resolve().parent.parent / "fixtures" / "calls"


def _replayed(name: str) -> Any:
    result = run(load_fixture(CALLS / f"{name}.jsonl"))
    assert result.ok, f"{result.mismatch}\n{result.problems}"
    return result


def test_recorded_console_calls_do_what_their_names_say() -> None:
    greets = _replayed("browser_bot_greets_first")
    page = [json.loads(s.text) for s in greets.expected["phone"] if isinstance(s.text, str)]
    assert page[0]["type"] == "started" and page[0]["call_id"] == greets.call.call_id
    assert {m["name"] for m in page if m["type"] == "event"} >= {"session.ready", "bot.transcript", "bot.first_audio",
                                                                "caller.transcript", "call.ended"}
    barge = _replayed("browser_barge_in_mid_answer").call
    assert barge.stats.barge_ins == 1 and barge.barge_ins[0].cleared and barge.barge_ins[0].heard_ms
    assert _replayed("browser_dtmf_digits").call.stats.dtmf == 3
    hangs_up = _replayed("browser_bot_hangs_up")
    assert hangs_up.call.end_reason == "bot_hung_up"
    assert hangs_up.expected["phone"][-1].text == '{"type":"ended","reason":"bot_hung_up"}'


def test_a_replay_checks_the_events_the_page_saw(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(codec.PAGE_EVENTS, "barge_in", ("cleared",))  # a page that would see less
    result = run(load_fixture(CALLS / "browser_barge_in_mid_answer.jsonl"))
    assert not result.ok and result.mismatch is not None and '"barge_in"' in result.mismatch

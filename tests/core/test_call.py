"""The pure Call state machine: no sockets, explicit times."""

from __future__ import annotations

import base64
import json

import pytest

from gateway.call import CLEAR, Call, CallState, Hangup, PlayAudio, SendMark, spoken_text
from gateway.config import parse_config

CONFIG = """
profiles:
  main:
    model: gpt-realtime
    instructions: Be brief.
    voice: alloy
  quiet:
    model: gpt-realtime
    barge_in: {enabled: false}
  nocancel:
    model: gpt-realtime
    turn_detection: {type: server_vad, interrupt_response: false}
    barge_in: {response_cancel: false, output_audio_buffer_clear: false}
  selfcancel:
    model: gpt-realtime
    turn_detection: {type: server_vad, interrupt_response: false}
  greets:
    model: gpt-realtime
    greeting: Hello there
routes:
  default: main
"""


def make_call(profile: str = "main", now: float = 0.0) -> Call:
    config = parse_config(CONFIG, env={})
    # 60 ms pieces (not the default 400): a delta of these tests makes several marked pieces
    return Call(call_id="CA1", stream_id="MZ1", profile_name=profile, profile=config.profiles[profile], started_at=now,
                piece_ms=60)


def b64(n: int, fill: int = 0x55) -> str:
    return base64.b64encode(bytes([fill]) * n).decode()


def vl(call: Call) -> list[dict]:
    out = [json.loads(m) for m in call.to_voicelive]
    call.to_voicelive.clear()
    return out


def phone(call: Call) -> list:
    out = list(call.to_phone)
    call.to_phone.clear()
    return out


def ready_call(profile: str = "main") -> Call:
    call = make_call(profile)
    call.voicelive_connected(1.0)
    call.voicelive_event({"type": "session.updated", "session": {
        "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}}, 2.0)
    vl(call)
    phone(call)
    return call


def start_response(call: Call, rid: str = "resp_1", item: str = "item_1", now: float = 10.0) -> None:
    call.voicelive_event({"type": "response.created", "response": {"id": rid, "status": "in_progress"}}, now)


def delta(call: Call, nbytes: int, now: float, rid: str = "resp_1", item: str = "item_1") -> list:
    call.voicelive_event({"type": "response.audio.delta", "response_id": rid, "item_id": item,
                          "output_index": 0, "content_index": 0, "delta": b64(nbytes)}, now)
    return phone(call)


def marks(actions: list) -> list[str]:
    return [a.name for a in actions if isinstance(a, SendMark)]


def speech_started(call: Call, now: float) -> None:
    call.voicelive_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0,
                          "item_id": "item_u"}, now)


def test_session_update_asks_for_g711_both_ways() -> None:
    call = make_call()
    call.voicelive_connected(5.0)
    (update,) = vl(call)
    assert update["type"] == "session.update"
    assert update["session"]["input_audio_format"] == "g711_ulaw"
    assert update["session"]["output_audio_format"] == "g711_ulaw"
    assert update["session"]["instructions"] == "Be brief."
    assert update["event_id"]


def test_audio_before_ready_is_held_then_forwarded_untouched_in_order() -> None:
    call = make_call()
    frames = [b64(160, fill=i) for i in range(5)]
    for i, f in enumerate(frames[:3]):
        call.caller_audio(f, float(i))
    assert call.to_voicelive == []
    call.voicelive_connected(3.0)
    vl(call)
    call.voicelive_event({"type": "session.updated", "session": {
        "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}}, 4.0)
    for f in frames[3:]:
        call.caller_audio(f, 5.0)
    sent = vl(call)
    assert [m["type"] for m in sent] == ["input_audio_buffer.append"] * 5
    assert [m["audio"] for m in sent] == frames
    assert call.state == CallState.READY


def test_held_audio_is_bounded() -> None:
    call = make_call()
    call.hold_ms = 100  # 800 bytes = 5 frames of 160
    call._inbound.limit = 800
    for i in range(8):
        call.caller_audio(b64(160, fill=i), float(i))
    assert call.stats.frames_lost_hold == 3
    call.voicelive_connected(9.0)
    call.voicelive_event({"type": "session.updated", "session": {
        "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}}, 10.0)
    appended = [m["audio"] for m in vl(call) if m["type"] == "input_audio_buffer.append"]
    assert appended == [b64(160, fill=i) for i in range(3, 8)]


@pytest.mark.parametrize("formats", [("pcm16", "pcm16"), ("g711_ulaw", "pcm16"), (None, None)])
def test_wrong_session_format_ends_the_call_loudly(formats: tuple) -> None:
    call = make_call()
    call.voicelive_connected(1.0)
    session = {"input_audio_format": formats[0], "output_audio_format": formats[1]}
    call.voicelive_event({"type": "session.updated", "session": session}, 2.0)
    assert call.ended and call.end_reason == "audio_format_rejected"
    assert any(isinstance(a, Hangup) for a in phone(call))
    call.caller_audio(b64(160), 3.0)
    assert [m for m in vl(call) if m["type"] == "input_audio_buffer.append"] == []


def test_greeting_asks_for_a_response_once_ready() -> None:
    call = make_call("greets")
    call.voicelive_connected(1.0)
    vl(call)
    call.voicelive_event({"type": "session.updated", "session": {
        "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}}, 2.0)
    (create,) = vl(call)
    assert spoken_text(create) == "Hello there"  # spoken verbatim, not worded by the model
    assert create["response"] == {"pre_generated_assistant_message": {
        "type": "message", "role": "assistant", "content": [{"type": "text", "text": "Hello there"}]}}


def test_deltas_are_split_into_marked_pieces_that_rejoin_exactly() -> None:
    call = ready_call()
    start_response(call)
    delta_b64 = base64.b64encode(bytes(range(256)) * 9).decode()  # 2304 bytes = 288 ms
    call.voicelive_event({"type": "response.audio.delta", "response_id": "resp_1", "item_id": "item_1",
                          "delta": delta_b64}, 11.0)
    actions = phone(call)
    audio = [a.payload for a in actions if isinstance(a, PlayAudio)]
    assert "".join(audio) == delta_b64
    assert all(len(p) <= 640 for p in audio)  # 60 ms of µ-law
    assert len(marks(actions)) == len(audio)
    # media and marks alternate: each mark closes the piece before it
    assert [type(a) for a in actions] == [PlayAudio, SendMark] * len(audio)


def test_barge_in_during_playback_truncates_at_what_was_heard() -> None:
    call = ready_call()
    start_response(call)
    actions = delta(call, 8000, now=100.0)  # one second of audio in one delta
    names = marks(actions)
    # the phone acknowledges 5 pieces (300 ms) at t=400, then 25 ms pass
    call.playback_mark(names[4], 400.0)
    speech_started(call, 425.0)
    out_phone = phone(call)
    out_vl = vl(call)
    assert out_phone == [CLEAR]
    types = [m["type"] for m in out_vl]
    # Voice Live's turn detection cancelled the response itself (interrupt_response): no response.cancel
    assert types == ["output_audio_buffer.clear", "conversation.item.truncate"]
    truncate = out_vl[-1]
    assert truncate["item_id"] == "item_1" and truncate["content_index"] == 0
    assert truncate["audio_end_ms"] == 325
    # late deltas of the cancelled response are dropped
    assert delta(call, 800, now=430.0) == []
    assert call.stats.deltas_dropped == 1


def test_truncation_is_anchored_on_acks_not_bytes_sent() -> None:
    call = ready_call()
    start_response(call)
    names = marks(delta(call, 16000, now=0.0))  # two seconds sent at once
    speech_started(call, 5000.0)  # no ack ever came: the phone played at most the first piece
    (truncate,) = [m for m in vl(call) if m["type"] == "conversation.item.truncate"]
    assert truncate["audio_end_ms"] == 60
    assert len(names) > 1


def test_stale_marks_after_clear_are_ignored() -> None:
    call = ready_call()
    start_response(call)
    names = marks(delta(call, 4800, now=0.0))
    call.playback_mark(names[0], 60.0)
    speech_started(call, 70.0)
    phone(call)
    vl(call)
    for name in names[1:]:  # Twilio echoes every pending mark when it clears
        call.playback_mark(name, 71.0)
    assert len(call.playout.pending) == 0
    assert call.playout.position(1000.0) == ("item_1", 480 + 80)


def test_no_truncate_when_nothing_was_heard() -> None:
    call = ready_call()
    start_response(call)
    delta(call, 4000, now=100.0)
    speech_started(call, 100.0)  # at the very moment the audio was sent
    assert phone(call) == [CLEAR]
    assert [m["type"] for m in vl(call)] == ["output_audio_buffer.clear"]


def test_speech_after_playback_finished_touches_nothing() -> None:
    call = ready_call()
    start_response(call)
    names = marks(delta(call, 960, now=0.0))
    call.voicelive_event({"type": "response.done", "response": {"id": "resp_1", "status": "completed"}}, 20.0)
    call.playback_mark(names[-1], 130.0)
    speech_started(call, 500.0)
    assert phone(call) == []
    assert vl(call) == []
    assert call.stats.barge_ins == 0


def test_two_barge_ins_in_a_row_act_once() -> None:
    call = ready_call()
    start_response(call)
    delta(call, 4800, now=0.0)
    speech_started(call, 100.0)
    first_phone, first_vl = phone(call), vl(call)
    speech_started(call, 150.0)
    assert first_phone == [CLEAR] and len(first_vl) == 2
    assert phone(call) == [] and vl(call) == []


def test_cancel_error_reply_is_harmless_and_buffer_clear_error_stops_it() -> None:
    call = ready_call("selfcancel")
    start_response(call)
    delta(call, 4800, now=0.0)
    speech_started(call, 100.0)
    sent = vl(call)
    ids = {m["type"]: m["event_id"] for m in sent}
    call.voicelive_event({"type": "error", "error": {"type": "invalid_request_error",
                          "code": "response_cancel_not_active",
                          "message": "Cancellation failed: no active response found",
                          "event_id": ids["response.cancel"]}}, 110.0)
    call.voicelive_event({"type": "error", "error": {"type": "invalid_request_error", "code": "x",
                          "message": "only supported in avatar mode",
                          "event_id": ids["output_audio_buffer.clear"]}}, 111.0)
    assert call.stats.voicelive_errors == 0
    assert not call.ended
    # the next barge-in no longer sends output_audio_buffer.clear
    call.voicelive_event({"type": "response.done", "response": {"id": "resp_1", "status": "cancelled"}}, 120.0)
    start_response(call, "resp_2")
    delta(call, 4800, now=200.0, rid="resp_2", item="item_2")
    speech_started(call, 300.0)
    assert [m["type"] for m in vl(call)] == ["response.cancel", "conversation.item.truncate"]


def test_other_voicelive_errors_are_counted_not_fatal() -> None:
    call = ready_call()
    call.voicelive_event({"type": "error", "error": {"type": "server_error", "message": "boom"}}, 5.0)
    assert call.stats.voicelive_errors == 1 and not call.ended


def test_switches_turn_parts_of_barge_in_off() -> None:
    call = ready_call("nocancel")
    start_response(call)
    delta(call, 4800, now=0.0)
    call.voicelive_event({"type": "response.done", "response": {"id": "resp_1", "status": "completed"}}, 50.0)
    speech_started(call, 100.0)
    assert phone(call) == [CLEAR]
    assert [m["type"] for m in vl(call)] == ["conversation.item.truncate"]

    quiet = ready_call("quiet")
    start_response(quiet)
    delta(quiet, 4800, now=0.0)
    speech_started(quiet, 100.0)
    assert phone(quiet) == [] and vl(quiet) == []


def test_speech_while_response_active_but_nothing_playing_cancels_and_truncates_received() -> None:
    call = ready_call()
    start_response(call)
    names = marks(delta(call, 480, now=0.0))
    call.playback_mark(names[-1], 60.0)  # everything received so far has played; more is coming
    speech_started(call, 80.0)
    assert phone(call) == []  # nothing to flush
    out = vl(call)
    assert [m["type"] for m in out] == ["output_audio_buffer.clear", "conversation.item.truncate"]
    assert out[-1]["audio_end_ms"] == 60
    assert delta(call, 480, now=90.0) == []


def test_new_response_after_barge_in_plays() -> None:
    call = ready_call()
    start_response(call)
    delta(call, 4800, now=0.0)
    speech_started(call, 100.0)
    assert phone(call) == [CLEAR]
    call.voicelive_event({"type": "response.done", "response": {"id": "resp_1", "status": "cancelled"}}, 120.0)
    start_response(call, "resp_2")
    actions = delta(call, 480, now=900.0, rid="resp_2", item="item_2")
    assert [type(a) for a in actions] == [PlayAudio, SendMark]


def test_voicelive_close_ends_the_call_and_hangs_up() -> None:
    call = ready_call()
    call.voicelive_closed(1011, 50.0)
    assert call.ended and call.end_reason == "voicelive_closed"
    assert phone(call) == [Hangup("voicelive_closed")]


def test_phone_end_ends_without_hangup() -> None:
    call = ready_call()
    call.phone_ended("caller_hung_up", 50.0)
    assert call.ended and phone(call) == []
    assert call.summary(60.0)["end_reason"] == "caller_hung_up"


def test_truncate_waits_for_the_response_to_finish_when_it_is_not_cancelled() -> None:
    call = ready_call("nocancel")
    start_response(call)
    names = marks(delta(call, 4800, now=0.0))
    call.playback_mark(names[1], 120.0)
    speech_started(call, 130.0)
    assert phone(call) == [CLEAR]
    assert vl(call) == []  # the item is still being generated: a truncate now would be refused
    assert delta(call, 480, now=200.0) == []  # its audio is still dropped
    call.voicelive_event({"type": "response.done", "response": {"id": "resp_1", "status": "completed"}}, 900.0)
    (truncate,) = vl(call)
    assert truncate["type"] == "conversation.item.truncate" and truncate["audio_end_ms"] == 130


TOOLS_CONFIG = """
profiles:
  tooled:
    model: gpt-realtime
    tools:
      - name: lookup_order
        description: Find an order by number.
        parameters: {type: object, properties: {order: {type: string}}, required: [order]}
        http: {url: "http://127.0.0.1:9/orders"}
      - name: opening_hours
        description: Opening hours.
        http: {url: "http://127.0.0.1:9/hours"}
"""


def tooled_call() -> Call:
    config = parse_config(TOOLS_CONFIG, env={})
    call = Call(call_id="CA1", stream_id="MZ1", profile_name="tooled", profile=config.profiles["tooled"],
                started_at=0.0)
    call.voicelive_connected(1.0)
    call.voicelive_event({"type": "session.updated", "session": {
        "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}}, 2.0)
    return call


def function_call(call: Call, call_id: str, name: str, arguments: str, now: float, rid: str = "resp_1") -> None:
    call.voicelive_event({"type": "response.function_call_arguments.done", "response_id": rid, "item_id": "fc",
                          "output_index": 0, "call_id": call_id, "name": name, "arguments": arguments}, now)


def test_tools_are_declared_in_the_session() -> None:
    call = tooled_call()
    (update,) = [m for m in vl(call) if m["type"] == "session.update"]
    tools = update["session"]["tools"]
    assert [t["name"] for t in tools] == ["lookup_order", "opening_hours"]
    assert tools[0]["type"] == "function" and tools[0]["parameters"]["required"] == ["order"]


def test_a_tool_call_runs_and_its_output_continues_the_conversation_after_the_response() -> None:
    call = tooled_call()
    vl(call)
    start_response(call)
    function_call(call, "call_1", "lookup_order", '{"order":"42"}', 10.0)
    assert [(r.call_id, r.name, r.arguments) for r in call.to_tools] == [("call_1", "lookup_order", '{"order":"42"}')]
    call.to_tools.clear()
    call.tool_result("call_1", '{"status":"shipped"}', 20.0)
    assert vl(call) == []  # the function-call response is still running
    call.voicelive_event({"type": "response.done", "response": {"id": "resp_1", "status": "completed"}}, 30.0)
    item, create = vl(call)
    assert item["type"] == "conversation.item.create"
    assert item["item"] == {"type": "function_call_output", "call_id": "call_1", "output": '{"status":"shipped"}'}
    assert create["type"] == "response.create"


def test_parallel_tool_calls_answer_together() -> None:
    call = tooled_call()
    vl(call)
    start_response(call)
    function_call(call, "call_1", "lookup_order", '{"order":"1"}', 10.0)
    function_call(call, "call_2", "opening_hours", "{}", 10.0)
    function_call(call, "call_2", "opening_hours", "{}", 10.5)  # a repeated event runs nothing twice
    assert len(call.to_tools) == 2
    call.voicelive_event({"type": "response.done", "response": {"id": "resp_1", "status": "completed"}}, 11.0)
    call.tool_result("call_2", "9 to 5", 12.0)
    assert vl(call) == []  # call_1 is still running
    call.tool_result("call_1", "shipped", 13.0)
    sent = vl(call)
    assert [m["type"] for m in sent] == ["conversation.item.create"] * 2 + ["response.create"]
    assert {m["item"]["call_id"] for m in sent[:2]} == {"call_1", "call_2"}


def test_an_unknown_tool_gets_an_error_output_not_a_stuck_call() -> None:
    call = tooled_call()
    vl(call)
    start_response(call)
    function_call(call, "call_9", "launch_rocket", "{}", 10.0)
    assert call.to_tools == []
    call.voicelive_event({"type": "response.done", "response": {"id": "resp_1", "status": "completed"}}, 11.0)
    item, create = vl(call)
    assert "no tool named launch_rocket" in item["item"]["output"] and create["type"] == "response.create"


def test_a_late_tool_result_after_the_call_ended_is_ignored() -> None:
    call = tooled_call()
    vl(call)
    function_call(call, "call_1", "lookup_order", "{}", 10.0)
    call.phone_ended("caller_hung_up", 11.0)
    call.tool_result("call_1", "late", 12.0)
    assert vl(call) == []


def test_the_summary_counts_what_happened_on_the_call() -> None:
    call = ready_call()
    for i in range(3):
        call.caller_audio(base64.b64encode(bytes([i]) * 160).decode(), float(i * 20))
    call.voicelive_event({"type": "input_audio_buffer.committed", "item_id": "u1"}, 70.0)
    start_response(call, now=80.0)
    delta(call, 4800, now=90.0)
    speech_started(call, 200.0)
    call.phone_ended("caller_hung_up", 61_000.0)
    summary = call.summary(61_000.0)
    assert summary["caller_turns"] == 1 and summary["responses"] == 1 and summary["barge_ins"] == 1
    assert summary["caller_bytes"] == 480 and summary["caller_audio_ms"] == 60
    assert summary["bot_bytes"] == 4800 and summary["bot_audio_ms"] == 600
    assert summary["duration_ms"] == 61_000 - int(call.started_at)


def test_hold_audio_plays_until_the_session_is_ready_then_stops() -> None:
    call = make_call("greets")
    call.hold(3_000, 5.0)
    held = phone(call)
    audio = b"".join(base64.b64decode(a.payload) for a in held if isinstance(a, PlayAudio))
    assert len(audio) == 3_000 * 8  # µ-law 8 kHz: the whole hold clip, in pieces
    assert len(set(audio)) > 2  # a tone, not only silence
    call.hold(3_000, 6.0)  # once only
    assert phone(call) == []
    call.voicelive_connected(100.0)
    call.voicelive_event({"type": "session.updated", "session": {
        "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}}, 200.0)
    assert phone(call)[0] == CLEAR  # the tone stops for the bot
    assert [m["type"] for m in vl(call)][-1] == "response.create"  # the greeting


def test_hold_is_only_for_a_call_waiting_for_its_first_session() -> None:
    call = ready_call()
    call.hold(1_000, 10.0)
    assert phone(call) == []


def test_renewals_of_calls_begun_together_are_spread_by_call() -> None:
    config = parse_config(CONFIG, env={})
    times = set()
    for n in range(20):
        call = Call(call_id=f"CA{n}", stream_id="MZ", profile_name="main", profile=config.profiles["main"],
                    started_at=0.0, renew_spread_ms=300_000.0)
        call.schedule_renewal(3_600, 0.0)
        assert call.sessions.renew_at is not None
        assert 3_600_000 - 120_000 - 300_000 <= call.sessions.renew_at <= 3_600_000 - 120_000
        times.add(call.sessions.renew_at)
    assert len(times) > 15
    again = Call(call_id="CA3", stream_id="MZ", profile_name="main", profile=config.profiles["main"],
                 started_at=0.0, renew_spread_ms=300_000.0)
    again.schedule_renewal(3_600, 0.0)
    assert again.sessions.renew_at in times  # the same call, the same time (a replay computes it again)


def test_a_deferred_renewal_keeps_the_session() -> None:
    call = ready_call()
    call.schedule_renewal(190, 10.0)  # due in 70 s, before the idle timeout
    due = call.sessions.renew_at or 0
    call.tick(due)
    assert call.sessions.renewing and call.to_shell
    call.to_shell.clear()
    call.renewal_deferred(due + 50)
    assert call.state == CallState.READY and not call.sessions.renewing
    assert call.next_deadline() is not None and call.next_deadline() > due + 50  # type: ignore[operator]


def test_bot_audio_goes_to_the_phone_in_pieces_of_400_ms_by_default() -> None:
    config = parse_config(CONFIG, env={})
    call = Call(call_id="CA1", stream_id="MZ1", profile_name="main", profile=config.profiles["main"], started_at=0.0)
    call.voicelive_connected(1.0)
    call.voicelive_event({"type": "session.updated", "session": {
        "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}}, 2.0)
    call.voicelive_event({"type": "response.created", "response": {"id": "r1"}}, 3.0)
    call.to_phone.clear()
    call.voicelive_event({"type": "response.audio.delta", "response_id": "r1", "item_id": "i1",
                          "delta": b64(8 * 1000)}, 4.0)  # one second of µ-law
    audio = [a for a in call.to_phone if isinstance(a, PlayAudio)]
    marks = [a for a in call.to_phone if isinstance(a, SendMark)]
    sizes = [len(base64.b64decode(a.payload)) for a in audio]
    assert sizes == [3198, 3198, 1604]  # 400 ms at most, in whole base64 quanta
    assert len(marks) == 3

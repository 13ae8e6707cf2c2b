"""The pure call under faults and limits: dropped and renewed sessions, fallback, goodbyes."""

from __future__ import annotations

import base64
import json

from gateway.audio import PCM16_24K
from gateway.call import CLEAR, MIN_SESSION_MS, Call, CallState, Hangup, PlayAudio, SendMark, spoken_text
from gateway.config import parse_config

CONFIG = """
profiles:
  main:
    model: gpt-realtime
    limits: {idle_timeout_s: 30, max_duration_s: 600, goodbye: "Goodbye now."}
  long:
    model: gpt-realtime
    limits: {idle_timeout_s: 86400, max_duration_s: 86400}
routes: {default: main}
"""
G711 = {"input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}


def make(budget_ms: float = 10_000.0, profile: str = "main", **kwargs) -> Call:
    config = parse_config(CONFIG, env={})
    call = Call(call_id="CA1", stream_id="MZ1", piece_ms=60, profile_name=profile, profile=config.profiles[profile],
                started_at=0.0, reconnect_budget_ms=budget_ms, **kwargs)
    call.voicelive_connected(1.0)
    call.voicelive_event({"type": "session.updated", "session": kwargs.get("session", G711)}, 2.0)
    return call


def sent(call: Call) -> list[dict]:
    out = [json.loads(m) for m in call.to_voicelive]
    call.to_voicelive.clear()
    return out


def frame(i: int) -> str:
    return base64.b64encode(bytes([i]) * 160).decode()


def a_turn(call: Call, now: float) -> None:
    """The caller asks something, the bot answers with 480 bytes, all of it heard."""
    call.voicelive_event({"type": "conversation.item.created", "item": {
        "id": "u1", "type": "message", "role": "user"}}, now)
    call.voicelive_event({"type": "conversation.item.input_audio_transcription.completed", "item_id": "u1",
                          "transcript": "what time do you open"}, now)
    call.voicelive_event({"type": "response.created", "response": {"id": "r1"}}, now)
    call.voicelive_event({"type": "response.output_item.added", "response_id": "r1", "item": {
        "id": "a1", "type": "message", "role": "assistant"}}, now)
    call.voicelive_event({"type": "response.audio.delta", "response_id": "r1", "item_id": "a1",
                          "delta": base64.b64encode(bytes(480)).decode()}, now)
    call.voicelive_event({"type": "response.audio_transcript.done", "item_id": "a1",
                          "transcript": "we open at nine"}, now)
    call.voicelive_event({"type": "response.done", "response": {"id": "r1", "status": "completed"}}, now)
    for action in list(call.to_phone):
        if isinstance(action, SendMark):
            call.playback_mark(action.name, now + 60)
    call.to_phone.clear()


def test_a_dropped_session_is_restored_with_the_conversation_and_no_caller_audio_lost() -> None:
    call = make()
    a_turn(call, 100.0)
    sent(call)
    call.caller_audio(frame(1), 200.0)
    call.voicelive_closed(1006, 210.0)
    assert call.state == CallState.RECONNECTING and not call.ended
    assert call.sessions.reconnect_deadline == 210.0 + 10_000
    for i in (2, 3, 4):  # the caller keeps talking while the gateway reconnects
        call.caller_audio(frame(i), 220.0 + i)
    assert sent(call) == [{"type": "input_audio_buffer.append", "audio": frame(1)}]
    call.voicelive_connected(500.0)
    update, user, assistant = sent(call)
    assert update["type"] == "session.update"
    assert user["item"] == {"id": "gw_item_1", "type": "message", "role": "user",
                            "content": [{"type": "input_text", "text": "what time do you open"}]}
    assert assistant["item"]["content"] == [{"type": "text", "text": "we open at nine"}]
    call.caller_audio(frame(5), 510.0)
    assert sent(call) == []  # still held until the new session is configured
    call.voicelive_event({"type": "session.updated", "session": G711}, 520.0)
    assert [m["audio"] for m in sent(call)] == [frame(i) for i in (2, 3, 4, 5)]
    assert call.state == CallState.READY and call.stats.reconnects == 1


def test_the_restored_items_echoed_by_the_new_session_are_not_remembered_twice() -> None:
    call = make()
    a_turn(call, 100.0)
    call.voicelive_closed(1011, 200.0)
    call.voicelive_connected(300.0)
    call.voicelive_event({"type": "conversation.item.created", "item": {
        "id": "gw_item_1", "type": "message", "role": "user"}}, 301.0)
    assert [t.item_id for t in call.conversation] == ["u1", "a1"]


def test_an_interrupted_answer_is_restored_as_far_as_it_was_heard() -> None:
    call = make()
    call.voicelive_event({"type": "response.created", "response": {"id": "r1"}}, 10.0)
    call.voicelive_event({"type": "response.output_item.added", "response_id": "r1", "item": {
        "id": "a1", "type": "message", "role": "assistant"}}, 10.0)
    call.voicelive_event({"type": "response.audio.delta", "response_id": "r1", "item_id": "a1",
                          "delta": base64.b64encode(bytes(8000)).decode()}, 10.0)  # one second
    marks = [a.name for a in call.to_phone if isinstance(a, SendMark)]
    call.voicelive_event({"type": "response.audio_transcript.done", "item_id": "a1",
                          "transcript": "one two three four five six seven eight nine ten"}, 11.0)
    call.playback_mark(marks[7], 490.0)  # 8 pieces of 60 ms played...
    call.voicelive_event({"type": "input_audio_buffer.speech_started"}, 510.0)  # ...and 20 ms more: half
    call.voicelive_closed(1006, 600.0)
    call.to_voicelive.clear()
    call.voicelive_connected(700.0)
    _, restored = sent(call)
    assert restored["item"]["content"][0]["text"] == "one two three four five [interrupted by the caller]"


def test_without_budget_or_before_the_first_session_a_drop_ends_the_call() -> None:
    call = make(budget_ms=0)
    call.voicelive_closed(1006, 50.0)
    assert call.ended and call.to_phone[-1] == Hangup("voicelive_closed")
    config = parse_config(CONFIG, env={})
    early = Call(call_id="CA2", stream_id="MZ2", piece_ms=60, profile_name="main", profile=config.profiles["main"],
                 started_at=0.0, reconnect_budget_ms=10_000)
    early.voicelive_connected(1.0)
    early.voicelive_closed(1006, 2.0)
    assert early.ended


def test_control_events_wait_for_the_restored_session() -> None:
    call = make()
    sent(call)
    call.voicelive_closed(1006, 50.0)
    call.tool_result("never-started", "x", 60.0)  # ignored: no such tool call
    call._send({"type": "response.create"})
    assert call.to_voicelive == []
    call.voicelive_connected(100.0)
    sent(call)
    call.voicelive_event({"type": "session.updated", "session": G711}, 110.0)
    assert [m["type"] for m in sent(call)] == ["response.create"]


def test_renewal_waits_for_a_quiet_moment() -> None:
    call = make(profile="long")
    call.schedule_renewal(1800.0, 10.0)
    due = call.sessions.renew_at
    assert due == 10.0 + 1800_000 - call.renew_before_ms and call.next_deadline() == due
    call.voicelive_event({"type": "response.created", "response": {"id": "r1"}}, due - 1)
    call.tick(due + 1)
    assert not call.sessions.renewing  # the bot is talking
    call.voicelive_event({"type": "response.done", "response": {"id": "r1", "status": "completed"}}, due + 2)
    assert call.sessions.renewing and call.next_deadline() != due
    call.voicelive_closed(1000, due + 3)
    assert call.state == CallState.RECONNECTING and not call.ended
    assert call.sessions.reconnect_deadline is not None and call.sessions.reconnect_deadline >= due + 3 + 10_000


def test_a_wrong_clock_never_renews_in_a_loop() -> None:
    call = make()
    call.schedule_renewal(-30.0, 100.0)  # "already expired"
    assert call.sessions.renew_at == 100.0 + MIN_SESSION_MS


def test_idle_caller_gets_a_goodbye_then_the_call_hangs_up_after_it_played() -> None:
    call = make()
    sent(call)
    assert call.next_deadline() == 30_000.0
    call.tick(29_999.0)
    assert sent(call) == []
    call.tick(30_000.0)
    (goodbye,) = sent(call)
    assert spoken_text(goodbye) == "Goodbye now."
    call.voicelive_event({"type": "input_audio_buffer.speech_started"}, 30_010.0)  # no barge-in now
    assert call.to_phone == []
    call.voicelive_event({"type": "response.created", "response": {"id": "bye"}}, 30_100.0)
    call.voicelive_event({"type": "response.audio.delta", "response_id": "bye", "item_id": "i",
                          "delta": base64.b64encode(bytes(960)).decode()}, 30_100.0)
    call.voicelive_event({"type": "response.done", "response": {"id": "bye", "status": "completed"}}, 30_150.0)
    assert call.state == CallState.CLOSING
    marks = [a.name for a in call.to_phone if isinstance(a, SendMark)]
    call.to_phone.clear()
    call.playback_mark(marks[0], 30_160.0)
    assert not call.ended  # the goodbye is still playing
    call.playback_mark(marks[-1], 30_220.0)
    assert call.ended and call.end_reason == "idle_timeout" and call.to_phone == [Hangup("idle_timeout")]


def test_a_goodbye_that_never_comes_still_ends_the_call() -> None:
    call = make()
    call.tick(600_000.0)
    assert sent(call)[-1]["type"] == "response.create"
    call.tick(600_000.0 + 20_001)
    assert call.ended and call.end_reason == "max_duration"


def test_a_paced_leg_plays_the_apology_before_hanging_up() -> None:
    apology = base64.b64encode(bytes(PCM16_24K.bytes_per_ms * 200)).decode()  # 200 ms
    config = parse_config(CONFIG, env={})
    call = Call(call_id="cc", stream_id="s", profile_name="main", profile=config.profiles["main"], started_at=0.0,
                audio=PCM16_24K, paced=True, piece_ms=20, fallback_audio=apology)
    call.voicelive_failed("voicelive_unavailable", 100.0)
    assert call.state == CallState.CLOSING and not call.ended
    t = 100.0
    while not call.ended:
        t += 20
        call.tick(t)
    played = [a for a in call.to_phone if isinstance(a, PlayAudio)]
    assert "".join(p.payload for p in played) == apology
    assert call.to_phone[-1] == Hangup("voicelive_unavailable") and 290 <= t <= 320
    assert CLEAR not in call.to_phone


def test_speech_the_lost_session_had_not_committed_is_sent_again() -> None:
    call = make()
    call.caller_audio(frame(1), 100.0)
    call.voicelive_event({"type": "input_audio_buffer.committed", "item_id": "u0"}, 110.0)
    call.voicelive_event({"type": "input_audio_buffer.speech_started"}, 120.0)
    for i in (2, 3):
        call.caller_audio(frame(i), 120.0 + i)
    sent(call)
    call.voicelive_closed(1006, 200.0)
    call.caller_audio(frame(4), 210.0)
    call.voicelive_connected(300.0)
    call.voicelive_event({"type": "session.updated", "session": G711}, 310.0)
    appended = [m["audio"] for m in sent(call) if m["type"] == "input_audio_buffer.append"]
    assert appended == [frame(2), frame(3), frame(4)]  # frame 1 was committed: not repeated
    assert call.stats.frames_resent == 2


def test_nothing_is_sent_again_when_the_caller_was_quiet() -> None:
    for renew in (False, True):
        call = make(profile="long")
        call.voicelive_event({"type": "input_audio_buffer.speech_started"}, 50.0)
        call.voicelive_event({"type": "input_audio_buffer.speech_stopped"}, 55.0)
        call.voicelive_event({"type": "input_audio_buffer.committed", "item_id": "u0"}, 60.0)
        call.caller_audio(frame(1), 100.0)  # quiet frames after the commit
        if renew:
            call.schedule_renewal(-30.0, 0.0)
            call.tick(MIN_SESSION_MS + 1)
            assert call.sessions.renewing
        sent(call)
        call.voicelive_closed(1000 if renew else 1006, MIN_SESSION_MS + 2)
        call.voicelive_connected(MIN_SESSION_MS + 100)
        call.voicelive_event({"type": "session.updated", "session": G711}, MIN_SESSION_MS + 110)
        assert [m for m in sent(call) if m["type"] == "input_audio_buffer.append"] == []
        assert call.stats.frames_resent == 0


def test_speech_that_starts_as_a_renewal_closes_the_session_is_sent_again() -> None:
    call = make(profile="long")
    call.schedule_renewal(-30.0, 0.0)
    call.tick(MIN_SESSION_MS + 1)
    assert call.sessions.renewing
    call.voicelive_event({"type": "input_audio_buffer.speech_started"}, MIN_SESSION_MS + 2)
    call.caller_audio(frame(7), MIN_SESSION_MS + 3)
    sent(call)
    call.voicelive_closed(1000, MIN_SESSION_MS + 4)
    call.voicelive_connected(MIN_SESSION_MS + 100)
    call.voicelive_event({"type": "session.updated", "session": G711}, MIN_SESSION_MS + 110)
    assert [m["audio"] for m in sent(call) if m["type"] == "input_audio_buffer.append"] == [frame(7)]


def _restore(call: Call, now: float) -> None:
    call.voicelive_connected(now)
    call.voicelive_event({"type": "session.updated", "session": G711}, now)


def test_sessions_that_drop_soon_after_they_open_spend_one_reconnect_budget() -> None:
    call = make(budget_ms=3000.0)
    call.voicelive_closed(1011, 10_000.0)  # the first drop: an episode with 3 s of budget
    assert call.state == CallState.RECONNECTING and call.sessions.reconnect_deadline == 13_000.0
    _restore(call, 10_500.0)
    call.voicelive_closed(1011, 10_600.0)  # restored, then lost at once: the same episode goes on
    assert call.sessions.reconnect_deadline == 13_000.0
    _restore(call, 12_000.0)
    call.voicelive_closed(1011, 13_100.0)  # past the episode's budget: the call ends
    assert call.ended and call.end_reason == "voicelive_lost"
    assert Hangup("voicelive_lost") in call.to_phone


def test_a_session_that_lasted_starts_a_new_episode_when_it_drops() -> None:
    call = make(budget_ms=3000.0)
    call.voicelive_closed(1011, 10_000.0)
    _restore(call, 10_500.0)
    call.voicelive_closed(1011, 16_000.0)  # it lived 5.5 s: a fresh episode with the whole budget
    assert not call.ended and call.sessions.reconnect_deadline == 19_000.0

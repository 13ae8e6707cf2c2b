"""The pure core against the Voice Live 2026-07-15 API as documented: what it sends, how it reads
the replies. No sockets; explicit times."""

from __future__ import annotations

import base64
import gc
import json
import weakref
from typing import Any

import numpy as np
import pytest

from gateway.audio import FORMATS, array_to_ulaw
from gateway.call import CLEAR, Call, CallState, Hangup, PlayAudio, RunTool, SendMark, spoken_text
from gateway.config import config_notes, parse_config
from gateway.simulator.server import _Invalid, _merge_session
from gateway.voicelive.session import build_session

CONFIG = """
profiles:
  main:
    model: gpt-realtime
  selfcancel:
    model: gpt-realtime
    turn_detection: {type: server_vad, interrupt_response: false}
  autotrunc:
    model: gpt-realtime
    turn_detection: {type: azure_semantic_vad, auto_truncate: true}
  manual:
    model: gpt-realtime
    turn_detection: {type: none, silence_duration_ms: 600, speech_duration_ms: 100}
  private:
    model: gpt-4o
    input_transcription: off
    metadata: {team: sales, tier: 2}
  agent:
    agent: {name: shop-agent, project: shop}
    greeting: Welcome to the shop.
    silence: {reprompt_after_s: 5}
    tools: [{name: hang_up, builtin: hang_up}]
  tooled:
    model: gpt-realtime
    tools:
      - {name: lookup_order, description: Find an order., http: {url: "http://127.0.0.1:9/orders"}}
routes:
  default: main
"""
PROFILES = parse_config(CONFIG, env={}).profiles
FRAME = 160  # 20 ms of µ-law


def make_call(profile: str = "main", **options: Any) -> Call:
    options.setdefault("piece_ms", 60)  # several marked pieces per delta
    return Call(call_id="CA1", stream_id="MZ1", profile_name=profile, profile=PROFILES[profile], started_at=0.0,
                **options)


def vl(call: Call) -> list[dict[str, Any]]:
    out = [json.loads(m) for m in call.to_voicelive]
    call.to_voicelive.clear()
    return out


def phone(call: Call) -> list[Any]:
    out = list(call.to_phone)
    call.to_phone.clear()
    return out


def ready(call: Call, now: float = 2.0) -> Call:
    call.voicelive_connected(now - 1)
    call.voicelive_event({"type": "session.updated", "session": {
        "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}}, now)
    return call


def ready_call(profile: str = "main", **options: Any) -> Call:
    call = ready(make_call(profile, **options))
    vl(call)
    phone(call)
    return call


def bot_speaks(call: Call, now: float, rid: str = "resp_1", item: str = "item_1", nbytes: int = 8000) -> list[str]:
    call.voicelive_event({"type": "response.created", "response": {"id": rid, "status": "in_progress"}}, now)
    call.voicelive_event({"type": "response.audio.delta", "response_id": rid, "item_id": item, "output_index": 0,
                          "content_index": 0, "delta": base64.b64encode(b"\x55" * nbytes).decode()}, now)
    return [a.name for a in phone(call) if isinstance(a, SendMark)]


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


# --- session.update --------------------------------------------------------------------------------


def test_the_session_carries_the_call_id_and_asks_for_caller_transcription_by_default() -> None:
    call = make_call()
    call.voicelive_connected(1.0)
    (update,) = vl(call)
    session = update["session"]
    assert session["metadata"] == {"call_id": "CA1"}  # joins Voice Live's logs with the gateway's
    assert session["input_audio_transcription"] == {"model": "gpt-4o-mini-transcribe"}  # gpt-realtime's choice

    private = make_call("private")
    private.voicelive_connected(1.0)
    (update,) = vl(private)
    assert "input_audio_transcription" not in update["session"]  # the profile opted out
    assert update["session"]["metadata"] == {"team": "sales", "tier": "2", "call_id": "CA1"}

    agent = make_call("agent")
    agent.voicelive_connected(1.0)
    (update,) = vl(agent)
    assert update["session"]["input_audio_transcription"] == {"model": "azure-speech"}
    assert "instructions" not in update["session"]


# --- a refused session fails fast ------------------------------------------------------------------


@pytest.mark.parametrize("with_event_id", [True, False])
def test_a_refused_session_update_ends_the_call_at_once(with_event_id: bool) -> None:
    call = make_call()
    call.voicelive_connected(1.0)
    (update,) = vl(call)
    error = {"type": "invalid_request_error", "code": "invalid_value", "param": "session.voice",
             "message": "Voice 'nobody' is not supported."}
    if with_event_id:
        error["event_id"] = update["event_id"]
    call.voicelive_event({"type": "error", "event_id": "ev_1", "error": error}, 40.0)
    assert call.ended and call.end_reason == "voicelive_session_rejected"
    assert phone(call) == [Hangup("voicelive_session_rejected")]
    assert call.stats.voicelive_errors == 1


def test_a_refused_session_plays_the_apology_on_a_paced_leg() -> None:
    apology = base64.b64encode(b"\x55" * 1600).decode()
    call = make_call(paced=True, fallback_audio=apology)
    call.voicelive_connected(1.0)
    (update,) = vl(call)
    call.voicelive_event({"type": "error", "error": {"code": "invalid_value", "message": "bad",
                                                     "event_id": update["event_id"]}}, 40.0)
    assert call.state == CallState.CLOSING  # the apology plays, then the call hangs up
    played = [a for a in phone(call) if isinstance(a, PlayAudio)]
    while (due := call.next_deadline()) is not None:
        call.tick(due)
        played += [a for a in phone(call) if isinstance(a, PlayAudio)]
    assert "".join(a.payload for a in played) == apology
    assert call.ended and call.end_reason == "voicelive_session_rejected"


def test_an_error_about_something_else_once_ready_does_not_end_the_call() -> None:
    call = ready_call()
    call.voicelive_event({"type": "error", "error": {"code": "invalid_value", "message": "x"}}, 50.0)
    assert not call.ended and call.stats.voicelive_errors == 1


# --- fixed phrases ---------------------------------------------------------------------------------


def test_an_agent_gets_fixed_words_and_never_per_response_instructions() -> None:
    call = make_call("agent")
    sent = [*vl(ready(call))]
    greeting = [e for e in sent if e["type"] == "response.create"]
    assert [spoken_text(e) for e in greeting] == ["Welcome to the shop."]
    call.voicelive_event({"type": "response.created", "response": {"id": "r1"}}, 10.0)
    call.voicelive_event({"type": "response.done", "response": {"id": "r1", "status": "completed"}}, 20.0)
    call.tick(5100.0)  # silence: the default re-prompt is fixed words too
    sent += vl(call)
    # the agent calls hang_up without a word: its goodbye is the profile's, word for word
    call.voicelive_event({"type": "response.created", "response": {"id": "r2"}}, 6000.0)
    call.voicelive_event({"type": "response.output_item.added", "response_id": "r2", "item": {
        "id": "fc1", "type": "function_call", "call_id": "c1", "name": "hang_up"}}, 6001.0)
    call.voicelive_event({"type": "response.function_call_arguments.done", "response_id": "r2", "item_id": "fc1",
                          "call_id": "c1", "arguments": "{}"}, 6002.0)
    call.voicelive_event({"type": "response.done", "response": {"id": "r2", "status": "completed"}}, 6003.0)
    sent += vl(call)
    creates = [e for e in sent if e["type"] == "response.create"]
    assert [spoken_text(e) for e in creates] == [
        "Welcome to the shop.", "Are you still there?",
        "I have to end the call now. Thank you for calling, goodbye."]
    assert all("instructions" not in e.get("response", {}) for e in creates)


# --- barge-in sends only what helps ----------------------------------------------------------------


def speech_started(call: Call, now: float) -> None:
    call.voicelive_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "u1"}, now)


@pytest.mark.parametrize(("profile", "cancel"), [("main", False), ("selfcancel", True)])
def test_response_cancel_only_when_voice_live_has_not_cancelled_by_itself(profile: str, cancel: bool) -> None:
    call = ready_call(profile)
    bot_speaks(call, 10.0)
    speech_started(call, 100.0)
    sent = types(vl(call))
    assert ("response.cancel" in sent) is cancel
    assert phone(call) == [CLEAR] and "conversation.item.truncate" in sent


def test_keys_over_the_bot_cancel_the_response_themselves() -> None:
    call = ready_call()  # Voice Live's turn detection does not hear keys: the gateway cancels
    bot_speaks(call, 10.0)
    call.dtmf("5", 100.0)
    call.dtmf("#", 120.0)
    assert "response.cancel" in types(vl(call))


def test_output_audio_buffer_clear_only_while_voice_live_may_hold_audio() -> None:
    call = ready_call()
    bot_speaks(call, 10.0)
    call.voicelive_event({"type": "response.done", "response": {"id": "resp_1", "status": "completed"}}, 20.0)
    speech_started(call, 100.0)  # the whole answer was delivered; the phone still plays it
    assert phone(call) == [CLEAR]
    assert types(vl(call)) == ["conversation.item.truncate"]


@pytest.mark.parametrize("error", [
    {"code": "response_cancel_not_active", "message": "Cancellation failed: no active response found"},
    {"code": "unsupported_operation", "message": "output_audio_buffer.clear is only supported in avatar mode"},
])
def test_documented_replies_to_cancel_and_clear_are_expected_even_without_an_event_id(error: dict) -> None:
    observed: list[str] = []
    call = ready_call("selfcancel")
    call.observer = lambda event, _t, _f: observed.append(event)
    call.voicelive_event({"type": "error", "error": {"type": "invalid_request_error", **error}}, 50.0)
    assert call.stats.voicelive_errors == 0 and "voicelive.error" not in observed


def test_auto_truncate_leaves_the_truncation_of_a_spoken_barge_in_to_voice_live() -> None:
    call = ready_call("autotrunc")
    names = bot_speaks(call, 10.0)
    call.playback_mark(names[3], 300.0)
    speech_started(call, 320.0)
    assert "conversation.item.truncate" not in types(vl(call))
    assert call.barge_ins[-1].heard_ms is None and call.stats.truncations == 0
    # keys are not heard by Voice Live: the gateway truncates that barge-in itself
    again = ready_call("autotrunc")
    names = bot_speaks(again, 10.0)
    again.playback_mark(names[3], 300.0)
    again.dtmf("1", 320.0)
    again.dtmf("#", 321.0)
    truncates = [e for e in vl(again) if e["type"] == "conversation.item.truncate"]
    # the fourth piece was due to end at 250 and its echo, 50 ms later, is taken as on its way: 240 + 71 ms
    assert len(truncates) == 1 and truncates[0]["audio_end_ms"] == 311


# --- function calls --------------------------------------------------------------------------------


@pytest.mark.parametrize("announced_by", ["response.output_item.added", "conversation.item.created"])
def test_a_function_call_without_a_name_in_its_done_event_finds_its_tool(announced_by: str) -> None:
    call = ready_call("tooled")
    call.voicelive_event({"type": "response.created", "response": {"id": "r1"}}, 10.0)
    item = {"id": "fc1", "object": "realtime.item", "type": "function_call", "call_id": "c1",
            "name": "lookup_order", "arguments": ""}
    call.voicelive_event({"type": announced_by, "response_id": "r1", "output_index": 0, "item": item}, 11.0)
    call.voicelive_event({"type": "response.function_call_arguments.done", "response_id": "r1", "item_id": "fc1",
                          "output_index": 0, "call_id": "c1", "arguments": '{"order":"42"}'}, 12.0)
    assert call.to_tools == [RunTool("c1", "lookup_order", '{"order":"42"}')]


def test_a_function_call_of_an_interrupted_response_is_not_run() -> None:
    call = ready_call("tooled")
    bot_speaks(call, 10.0, rid="r1")
    speech_started(call, 50.0)
    call.voicelive_event({"type": "response.function_call_arguments.done", "response_id": "r1", "item_id": "fc1",
                          "call_id": "c1", "name": "lookup_order", "arguments": "{}"}, 60.0)
    assert call.to_tools == []


# --- turn detection in the gateway (turn_detection: none) -------------------------------------------


def frames(ms: int, loud: bool) -> list[str]:
    """µ-law 8 kHz frames of 20 ms: a 300 Hz tone at about -12 dBFS, or near silence."""
    n = ms * 8
    t = np.arange(n) / 8000.0
    level = 8000.0 if loud else 20.0
    samples = (level * np.sin(2 * np.pi * 300.0 * t)).astype(np.int16)
    data = array_to_ulaw(samples)
    return [base64.b64encode(data[i:i + FRAME]).decode() for i in range(0, len(data), FRAME)]


def feed(call: Call, payloads: list[str], start: float) -> float:
    now = start
    for payload in payloads:
        call.caller_audio(payload, now)
        now += 20.0
    return now


def test_an_ended_call_listening_for_turns_is_freed_without_the_garbage_collector() -> None:
    """Turn detection in the gateway puts a listening ``caller_audio`` on the call, bound to it: once the
    call has ended, nothing of it holds the call in a cycle (it would wait for a full collection)."""
    call = make_call("manual")
    call.voicelive_connected(1.0)
    ready(call)
    feed(call, frames(400, loud=True), 100.0)
    freed: list[bool] = []
    weakref.finalize(call, freed.append, True)
    gc.disable()
    try:
        call.phone_ended("caller_hung_up", 600.0)
        del call
        assert freed == [True]
    finally:
        gc.enable()


def test_without_voice_live_turn_detection_the_gateway_ends_the_callers_turn() -> None:
    call = make_call("manual")
    call.voicelive_connected(1.0)
    (update,) = vl(call)
    assert update["session"]["turn_detection"] is None
    ready(call)
    vl(call)
    now = feed(call, frames(400, loud=False), 10.0)
    now = feed(call, frames(800, loud=True), now)
    sent = vl(call)
    assert types(sent) == ["input_audio_buffer.append"] * 60  # every frame forwarded untouched, no turn yet
    assert [e["audio"] for e in sent][:20] == frames(400, loud=False)
    now = feed(call, frames(560, loud=False), now)
    assert "input_audio_buffer.commit" not in types(vl(call))  # not yet 600 ms of silence
    feed(call, frames(100, loud=False), now)
    sent = types(vl(call))
    assert sent.count("input_audio_buffer.commit") == 1
    commit = sent.index("input_audio_buffer.commit")
    assert commit == 2  # after the 30th frame of silence: 600 ms
    assert sent[commit + 1] == "response.create"
    assert sent[commit + 2:] == ["input_audio_buffer.append"] * 3


def test_the_gateway_hears_the_caller_talk_over_the_bot() -> None:
    call = ready_call("manual")
    bot_speaks(call, 10.0)
    feed(call, frames(200, loud=True), 100.0)
    sent = types(vl(call))
    assert phone(call) == [CLEAR]
    assert "response.cancel" in sent  # nobody else cancels it without Voice Live turn detection
    assert call.stats.barge_ins == 1


def test_long_silence_is_cleared_from_voice_lives_input_buffer() -> None:
    call = ready_call("manual")
    feed(call, frames(6000, loud=False), 10.0)
    sent = types(vl(call))
    assert sent.count("input_audio_buffer.clear") == 1
    assert "input_audio_buffer.commit" not in sent and "response.create" not in sent


def test_speech_held_while_connecting_is_listened_to_once_forwarded() -> None:
    call = make_call("manual")
    now = feed(call, frames(600, loud=True) + frames(700, loud=False), 10.0)
    assert call.to_voicelive == []
    ready(call, now)
    sent = types(vl(call))
    assert sent.count("input_audio_buffer.append") == 65
    commit = sent.index("input_audio_buffer.commit")
    assert sent[commit + 1] == "response.create" and sent.count("response.create") == 1
    assert sent[:commit].count("input_audio_buffer.append") == 60  # 600 ms of speech, 600 ms of silence


def test_with_voice_live_turn_detection_caller_audio_is_never_decoded() -> None:
    for profile in ("main", "selfcancel", "autotrunc"):
        assert "caller_audio" not in vars(make_call(profile))  # the forwarding path of every other mode
    assert "caller_audio" in vars(make_call("manual"))


# --- sessions renewed without a reconnect budget ------------------------------------------------------


def test_a_renewal_goes_on_even_with_no_reconnect_budget() -> None:
    call = ready_call(reconnect_budget_ms=0.0)
    call.schedule_renewal(100.0, 10.0)  # renewed after its first minute
    due = call.sessions.renew_at
    call.tick(due + 1)
    assert call.sessions.renewing
    call.voicelive_closed(1000, due + 2)
    assert call.state == CallState.RECONNECTING and not call.ended
    # a drop (not a renewal) with no budget still ends the call
    dropped = ready_call(reconnect_budget_ms=0.0)
    dropped.voicelive_closed(1011, 50.0)
    assert dropped.ended and phone(dropped) == [Hangup("voicelive_closed")]



def test_a_phone_leg_that_stops_sending_audio_ends_the_callers_turn_too() -> None:
    call = ready_call("manual")
    now = feed(call, frames(400, loud=True), 10.0)  # then nothing at all: no silence frames either
    vl(call)
    assert call.next_deadline() == now - 20.0 + 600.0
    call.tick(now + 500.0)
    assert "input_audio_buffer.commit" not in types(vl(call))
    call.tick(now - 20.0 + 600.0)
    assert types(vl(call)) == ["input_audio_buffer.commit", "response.create"]
    assert call.next_deadline() != now - 20.0 + 600.0  # once


# --- every setting check-config accepts, Voice Live (as strict as its documentation) accepts -----------


ACCEPTED = [
    "model: gpt-realtime",
    "model: gpt-realtime-mini\nturn_detection: {type: semantic_vad, eagerness: high, create_response: true,"
    " interrupt_response: false}\nnoise_suppression: far_field",
    "model: gpt-realtime\nturn_detection: {type: server_vad, threshold: 0.6, prefix_padding_ms: 300,"
    " silence_duration_ms: 600, create_response: true, interrupt_response: true, auto_truncate: false,"
    " end_of_utterance_detection: {model: semantic_detection_v1, threshold_level: low, timeout_ms: 900}}",
    "model: gpt-4.1\nturn_detection: {type: azure_semantic_vad, threshold: 0.3, speech_duration_ms: 80,"
    " remove_filler_words: true, languages: [en, fr], appended_text_after_truncation: ' [cut]',"
    " end_of_utterance_detection: {model: semantic_detection_v1_multilingual}}",
    "model: gpt-4.1\nturn_detection: {type: azure_semantic_vad_en, speech_duration_ms: 120}",
    "model: gpt-4.1\nturn_detection: {type: azure_semantic_vad_multilingual, languages: [de]}",
    "model: gpt-realtime\nturn_detection: none",
    "model: gpt-realtime\ninput_transcription: {model: whisper-1, language: en}",
    "model: gpt-realtime\ninput_transcription: {model: mai-transcribe-1}",
    "model: gpt-4.1\ninput_transcription: {model: azure-speech, language: en-US, phrase_list: [Contoso, Fabrikam]}",
    "model: gpt-4.1\ninput_transcription: {model: mai-transcribe-2, phrase_list: [Contoso]}",
    "model: gpt-realtime\ninput_transcription: off\nmetadata: {tenant: contoso, region: eu, tier: 3}",
    "model: gpt-realtime\nnoise_suppression: true\necho_cancellation: true\ntemperature: 0.6\nmax_output_tokens: 4096",
    "model: gpt-realtime\nvoice: {type: azure-standard, name: en-US-AvaNeural, rate: 1.1, pitch: +5%, style: cheerful}",
    "model: gpt-realtime\nvoice: {type: azure-custom, name: shop-voice, endpoint_id: abc}",
    "model: gpt-realtime\nvoice: {type: azure-personal, name: speaker1, model: DragonLatestNeural}",
    "model: gpt-realtime\nvoice: {type: openai, name: cedar}\nmax_output_tokens: inf",
    "model: gpt-4.1\ninterim_response: {type: static, texts: [One moment.], triggers: [tool],"
    " latency_threshold_ms: 1500}",
    "model: gpt-4.1\ninterim_response: {type: llm, instructions: Say you are checking., max_completion_tokens: 20}",
    "model: gpt-realtime\ntools: [{name: hang_up, builtin: hang_up}, {name: lookup, description: Look up.,"
    " http: {url: 'http://127.0.0.1:9/x'}}]",
    "agent: {name: concierge, project: hotel}\ngreeting: Welcome.\nnoise_suppression: true",
]


def _fresh_session(profile: Any) -> dict[str, Any]:
    """The part of a new session's state that a session.update is checked against."""
    session: dict[str, Any] = {"model": profile.model, "modalities": ["text", "audio"], "input_audio_format": "pcm16",
                               "output_audio_format": "pcm16", "input_audio_sampling_rate": 24000}
    if profile.agent is not None:
        session.update(model=None, agent={"type": "agent", "name": profile.agent.name})
    return session


def _profile(body: str) -> Any:
    text = "profiles:\n  p:\n" + "".join(f"    {line}\n" for line in body.splitlines())
    return parse_config(text, env={})


@pytest.mark.parametrize("body", ACCEPTED)
@pytest.mark.parametrize("audio", sorted(FORMATS))
def test_a_session_check_config_accepts_is_one_voice_live_accepts(body: str, audio: str) -> None:
    config = _profile(body)
    profile = config.profiles["p"]
    assert not [note for note in config_notes(config) if "offers only with" in note]
    call = Call(call_id="CA1", stream_id="MZ1", profile_name="p", profile=profile, started_at=0.0,
                audio=FORMATS[audio])
    call.voicelive_connected(1.0)
    (update,) = vl(call)
    merged = _merge_session(_fresh_session(profile), update["session"], "2026-07-15", audio_started=False)
    assert merged["input_audio_format"] == FORMATS[audio].name
    assert merged["output_audio_format"] == FORMATS[audio].output_name


@pytest.mark.parametrize("body", [
    "model: gpt-4.1\nturn_detection: {type: semantic_vad}",
    "model: gpt-4.1\nnoise_suppression: near_field",
    "agent: {name: concierge, project: hotel}\nnoise_suppression: far_field",
])
def test_what_voice_live_refuses_for_a_model_check_config_says_beforehand(body: str) -> None:
    config = _profile(body)
    profile = config.profiles["p"]
    assert any("offers only with gpt-realtime" in note for note in config_notes(config))
    with pytest.raises(_Invalid):
        _merge_session(_fresh_session(profile), build_session(profile), "2026-07-15", audio_started=False)

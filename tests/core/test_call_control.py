"""Call control in the pure core: built-in tools (hang_up, transfer_call, send_dtmf), caller keys,
silence re-prompts. No sockets; explicit times."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from gateway.call import TRANSFER_WORDS, Call, CallState, ClearPlayback, Hangup, PlayAudio, SendMark, spoken_text
from gateway.config import parse_config

CONFIG = """
profiles:
  control:
    model: gpt-realtime
    tools:
      - {name: hang_up, builtin: hang_up}
      - name: transfer_call
        builtin: transfer_call
        transfer:
          targets: {operator: "+1 (415) 555-0100", billing: "+14155550111"}
          allowed_prefixes: ["+1415"]
      - {name: press_keys, builtin: send_dtmf}
    dtmf:
      digit_timeout_s: 2
      finish_on: "#"
      actions: {0: {transfer_to: "+14155550100"}, 9: {hang_up: true}}
    limits: {goodbye: "Goodbye now."}
  quiet_keys:
    model: gpt-realtime
    dtmf: {respond: false}
  no_keys:
    model: gpt-realtime
    dtmf: {to_model: false}
  prompting:
    model: gpt-realtime
    silence: {reprompt_after_s: 5, max_reprompts: 2, reprompt: "Are you still there?"}
  greeting_keys:
    model: gpt-realtime
    greeting: Welcome.
routes:
  default: control
"""

OPERATOR = "+14155550100"


def make_call(profile: str = "control", **options: Any) -> Call:
    config = parse_config(CONFIG, env={})
    call = Call(call_id="CA1", stream_id="MZ1", profile_name=profile, profile=config.profiles[profile],
                started_at=0.0, **options)
    call.voicelive_connected(1.0)
    call.voicelive_event({"type": "session.updated", "session": {
        "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}}, 2.0)
    call.to_voicelive.clear()
    call.to_phone.clear()
    return call


def vl(call: Call) -> list[dict]:
    out = [json.loads(m) for m in call.to_voicelive if not m.startswith('{"type":"input_audio_buffer.append"')]
    call.to_voicelive.clear()
    return out


def phone(call: Call) -> list:
    out = list(call.to_phone)
    call.to_phone.clear()
    return out


def created(call: Call, rid: str, now: float) -> None:
    call.voicelive_event({"type": "response.created", "response": {"id": rid, "status": "in_progress"}}, now)


def done(call: Call, rid: str, now: float, status: str = "completed") -> None:
    call.voicelive_event({"type": "response.done", "response": {"id": rid, "status": status}}, now)


def speak(call: Call, rid: str, item: str, nbytes: int, now: float) -> list[str]:
    """The bot says ``nbytes`` of audio; returns the marks the phone must echo."""
    call.voicelive_event({"type": "response.audio.delta", "response_id": rid, "item_id": item,
                          "output_index": 0, "content_index": 0,
                          "delta": base64.b64encode(b"\x55" * nbytes).decode()}, now)
    return [a.name for a in phone(call) if isinstance(a, SendMark)]


def tool_call(call: Call, rid: str, call_id: str, name: str, args: dict | str, now: float) -> None:
    arguments = args if isinstance(args, str) else json.dumps(args)
    call.voicelive_event({"type": "response.function_call_arguments.done", "response_id": rid,
                          "item_id": "fc_" + call_id, "output_index": 1, "call_id": call_id,
                          "name": name, "arguments": arguments}, now)


def outputs(events: list[dict]) -> dict[str, Any]:
    return {e["item"]["call_id"]: json.loads(e["item"]["output"]) for e in events
            if e["type"] == "conversation.item.create" and e["item"]["type"] == "function_call_output"}


def hangups(actions: list) -> list[Hangup]:
    return [a for a in actions if isinstance(a, Hangup)]


# --- hang_up ----------------------------------------------------------------------------------


def test_built_in_tools_are_declared_with_their_default_schemas() -> None:
    call = make_call()
    call2 = Call(call_id="CA2", stream_id="MZ2", profile_name="control", profile=call.profile, started_at=0.0)
    call2.voicelive_connected(1.0)
    (update,) = [json.loads(m) for m in call2.to_voicelive]
    tools = {t["name"]: t for t in update["session"]["tools"]}
    assert set(tools) == {"hang_up", "transfer_call", "press_keys"}
    assert tools["transfer_call"]["parameters"]["properties"]["destination"]["enum"] == ["operator", "billing"]
    assert "number" in tools["transfer_call"]["parameters"]["properties"]
    assert tools["press_keys"]["parameters"]["required"] == ["digits"]
    assert all(t["description"] for t in tools.values())


def test_hang_up_after_speaking_waits_until_the_goodbye_was_heard() -> None:
    call = make_call()
    created(call, "r1", 10.0)
    marks = speak(call, "r1", "i1", 8000, 20.0)  # one second of goodbye, in pieces
    tool_call(call, "r1", "c1", "hang_up", {"reason": "done"}, 30.0)
    done(call, "r1", 40.0)
    assert call.state == CallState.CLOSING
    for name in marks[:-1]:
        call.playback_mark(name, 500.0)
        assert hangups(phone(call)) == [] and not call.ended
    speech = {"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "u9"}
    call.voicelive_event(speech, 600.0)  # the caller talks over the goodbye: it is not cut
    assert not any(isinstance(a, ClearPlayback) for a in phone(call))
    assert not any(e["type"] == "response.cancel" for e in vl(call))
    call.playback_mark(marks[-1], 1040.0)
    assert hangups(phone(call)) == [Hangup("bot_hung_up", None)]
    assert call.ended and call.end_reason == "bot_hung_up"


def test_hang_up_without_a_word_gets_a_farewell_first() -> None:
    call = make_call()
    created(call, "r1", 10.0)
    tool_call(call, "r1", "c1", "hang_up", {}, 20.0)
    assert vl(call) == []  # the response that called the tool is still running
    done(call, "r1", 30.0)
    sent = vl(call)
    assert outputs(sent) == {"c1": {"status": "the call ends after your next words"}}
    assert sent[-1]["type"] == "response.create" and "goodbye" in sent[-1]["response"]["instructions"]
    created(call, "r2", 40.0)
    marks = speak(call, "r2", "i2", 1600, 50.0)
    done(call, "r2", 60.0)
    assert not call.ended
    call.playback_mark(marks[-1], 300.0)
    assert hangups(phone(call)) == [Hangup("bot_hung_up", None)]


def test_a_goodbye_that_never_comes_still_ends_the_call() -> None:
    call = make_call()
    created(call, "r1", 10.0)
    tool_call(call, "r1", "c1", "hang_up", {}, 20.0)
    done(call, "r1", 30.0)
    vl(call)
    deadline = call.next_deadline()
    assert deadline is not None and deadline > 30.0
    call.tick(deadline - 1)
    assert not call.ended
    call.tick(deadline)
    assert hangups(phone(call)) == [Hangup("bot_hung_up", None)]


# --- transfer_call ----------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "number"), [
    ({"destination": "operator"}, OPERATOR),
    ({"destination": "billing"}, "+14155550111"),
    ({"number": "+1 415 555 0177"}, "+14155550177"),
])
def test_a_transfer_to_an_allowed_number_ends_the_call_towards_it(args: dict, number: str) -> None:
    call = make_call(can_transfer=True)
    created(call, "r1", 10.0)
    marks = speak(call, "r1", "i1", 800, 20.0)
    tool_call(call, "r1", "c1", "transfer_call", args, 30.0)
    done(call, "r1", 40.0)
    call.playback_mark(marks[-1], 200.0)
    assert hangups(phone(call)) == [Hangup("transferred", number)]


@pytest.mark.parametrize(("args", "error"), [
    ({"destination": "ceo"}, "unknown destination; the destinations are: operator, billing"),
    ({"number": "+12125550100"}, "that number is not one the caller may be transferred to"),
    ({"number": "+1415"}, "that number is not one the caller may be transferred to"),
    ("not json", "the arguments were not a JSON object"),
])
def test_a_transfer_the_config_does_not_allow_is_refused_and_the_call_goes_on(args: Any, error: str) -> None:
    call = make_call(can_transfer=True)
    created(call, "r1", 10.0)
    tool_call(call, "r1", "c1", "transfer_call", args, 20.0)
    done(call, "r1", 30.0)
    sent = vl(call)
    assert outputs(sent) == {"c1": {"error": error}}
    assert sent[-1]["type"] == "response.create"
    assert call.state == CallState.READY and hangups(phone(call)) == []


def test_a_transfer_on_a_line_that_cannot_transfer_is_refused() -> None:
    call = make_call(can_transfer=False)
    created(call, "r1", 10.0)
    tool_call(call, "r1", "c1", "transfer_call", {"destination": "operator"}, 20.0)
    done(call, "r1", 30.0)
    assert "transfers are not available" in outputs(vl(call))["c1"]["error"]
    assert call.state == CallState.READY


# --- send_dtmf --------------------------------------------------------------------------------


def test_send_dtmf_runs_on_the_phone_leg_and_its_result_continues_the_conversation() -> None:
    call = make_call(can_send_dtmf=True)
    created(call, "r1", 10.0)
    tool_call(call, "r1", "c1", "press_keys", {"digits": "12#"}, 20.0)
    (run,) = call.to_tools
    assert (run.name, json.loads(run.arguments), run.builtin) == ("press_keys", {"digits": "12#"}, "send_dtmf")
    done(call, "r1", 30.0)
    assert vl(call) == []  # the keys are still being sent
    call.tool_result("c1", json.dumps({"sent": "12#"}), 40.0)
    sent = vl(call)
    assert outputs(sent) == {"c1": {"sent": "12#"}} and sent[-1]["type"] == "response.create"


@pytest.mark.parametrize(("args", "can", "error"), [
    ({"digits": "12x"}, True, "digits must be 1 to 32 keys among 0-9, *, #, A-D"),
    ({"digits": ""}, True, "digits must be 1 to 32 keys among 0-9, *, #, A-D"),
    ({"digits": "1" * 33}, True, "digits must be 1 to 32 keys among 0-9, *, #, A-D"),
    ({}, True, "digits must be 1 to 32 keys among 0-9, *, #, A-D"),
    ({"digits": "1"}, False, "this line cannot send keypad tones"),
])
def test_send_dtmf_refuses_bad_keys_and_lines_without_tones(args: dict, can: bool, error: str) -> None:
    call = make_call(can_send_dtmf=can)
    created(call, "r1", 10.0)
    tool_call(call, "r1", "c1", "press_keys", args, 20.0)
    assert call.to_tools == []
    done(call, "r1", 30.0)
    assert outputs(vl(call)) == {"c1": {"error": error}}


# --- caller keys --------------------------------------------------------------------------------


def key_items(events: list[dict]) -> list[str]:
    return [e["item"]["content"][0]["text"] for e in events
            if e["type"] == "conversation.item.create" and e["item"]["type"] == "message"]


def test_keys_up_to_the_finish_key_reach_the_model_as_one_line_and_get_an_answer() -> None:
    call = make_call()
    for t, key in enumerate("123"):
        call.dtmf(key, 100.0 + t)
    assert vl(call) == []
    call.dtmf("#", 110.0)
    sent = vl(call)
    assert key_items(sent) == ["[The caller pressed these keys on the phone keypad: 1 2 3 #]"]
    assert [e["type"] for e in sent] == ["conversation.item.create", "response.create"]
    assert call.summary(200.0)["dtmf"] == 4


def test_keys_without_the_finish_key_are_sent_after_a_pause() -> None:
    call = make_call()
    call.dtmf("4", 100.0)
    call.dtmf("2", 1000.0)
    assert call.next_deadline() == 3000.0  # two seconds after the last key
    call.tick(2999.0)
    assert vl(call) == []
    call.tick(3000.0)
    assert key_items(vl(call)) == ["[The caller pressed these keys on the phone keypad: 4 2]"]


def test_keys_pressed_over_the_bot_interrupt_it_and_are_answered_after_its_response_ends() -> None:
    call = make_call()
    created(call, "r1", 10.0)
    speak(call, "r1", "i1", 8000, 20.0)
    call.dtmf("7", 300.0)
    call.dtmf("#", 320.0)
    assert any(isinstance(a, ClearPlayback) for a in phone(call))
    sent = vl(call)
    types = [e["type"] for e in sent]
    assert "response.cancel" in types and "response.create" not in types
    assert key_items(sent) == ["[The caller pressed these keys on the phone keypad: 7 #]"]
    done(call, "r1", 350.0, status="cancelled")
    assert [e["type"] for e in vl(call)] == ["response.create"]


def test_a_key_with_an_action_transfers_after_saying_so() -> None:
    call = make_call(can_transfer=True)
    call.dtmf("0", 100.0)
    (create,) = vl(call)
    assert spoken_text(create) == TRANSFER_WORDS and "instructions" not in create["response"]
    created(call, "r1", 110.0)
    marks = speak(call, "r1", "i1", 1600, 120.0)
    done(call, "r1", 130.0)
    assert not call.ended
    call.playback_mark(marks[-1], 400.0)
    assert hangups(phone(call)) == [Hangup("caller_key_transfer", OPERATOR)]


def test_a_hang_up_key_says_the_profiles_goodbye_then_hangs_up() -> None:
    call = make_call()
    call.dtmf("9", 100.0)
    (create,) = vl(call)
    assert spoken_text(create) == "Goodbye now."
    created(call, "r1", 110.0)
    marks = speak(call, "r1", "i1", 800, 120.0)
    done(call, "r1", 130.0)
    call.playback_mark(marks[-1], 300.0)
    assert hangups(phone(call)) == [Hangup("caller_key_hang_up", None)]


def test_an_action_key_inside_an_entry_is_just_a_digit() -> None:
    call = make_call()
    call.dtmf("1", 100.0)
    call.dtmf("0", 200.0)
    call.dtmf("#", 300.0)
    assert key_items(vl(call)) == ["[The caller pressed these keys on the phone keypad: 1 0 #]"]
    assert call.state == CallState.READY


def test_keys_can_join_the_conversation_without_a_response_or_be_ignored() -> None:
    quiet = make_call("quiet_keys")
    quiet.dtmf("5", 100.0)
    quiet.dtmf("#", 110.0)
    sent = vl(quiet)
    assert key_items(sent) == ["[The caller pressed these keys on the phone keypad: 5 #]"]
    assert "response.create" not in [e["type"] for e in sent]
    ignored = make_call("no_keys")
    ignored.dtmf("5", 100.0)
    ignored.dtmf("#", 110.0)
    ignored.tick(10_000.0)
    assert vl(ignored) == [] and ignored.summary(10_000.0)["dtmf"] == 2


# --- silence --------------------------------------------------------------------------------------


def reprompts(events: list[dict]) -> list[str]:
    """What the bot was asked to say (verbatim words, or the instructions it words itself)."""
    said = [spoken_text(e) or e.get("response", {}).get("instructions") for e in events
            if e["type"] == "response.create"]
    return [words for words in said if words]


def test_silence_is_counted_from_the_end_of_the_bots_audio_not_from_its_arrival() -> None:
    call = make_call("prompting")
    created(call, "r1", 10.0)
    marks = speak(call, "r1", "i1", 80_000, 20.0)  # ten seconds of speech, all received at once
    done(call, "r1", 30.0)
    call.tick(6000.0)
    assert reprompts(vl(call)) == []  # the bot is still talking on the phone
    call.playback_mark(marks[-1], 10_020.0)
    assert call.next_deadline() == 15_020.0
    call.tick(15_019.0)
    assert reprompts(vl(call)) == []
    call.tick(15_020.0)
    assert reprompts(vl(call)) == ["Are you still there?"]


def answer(call: Call, rid: str, now: float) -> None:
    created(call, rid, now)
    marks = speak(call, rid, "i_" + rid, 800, now + 10)
    done(call, rid, now + 20)
    call.playback_mark(marks[-1], now + 200)


def test_silence_reprompts_then_says_goodbye_and_hangs_up() -> None:
    call = make_call("prompting")
    call.tick(5002.0)
    assert len(reprompts(vl(call))) == 1
    answer(call, "r1", 5100.0)
    call.tick(10_299.0)
    assert reprompts(vl(call)) == []
    call.tick(10_300.0)
    assert len(reprompts(vl(call))) == 1
    answer(call, "r2", 10_400.0)
    call.tick(15_600.0)
    (goodbye,) = reprompts(vl(call))
    assert goodbye == "I have to end the call now. Thank you for calling, goodbye."
    answer(call, "r3", 15_700.0)
    assert hangups(phone(call)) == [Hangup("caller_silent", None)]


def test_the_caller_speaking_resets_the_reprompt_count() -> None:
    call = make_call("prompting")
    call.tick(5002.0)
    answer(call, "r1", 5100.0)
    call.tick(10_300.0)
    answer(call, "r2", 10_400.0)
    vl(call)
    speech = {"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "u1"}
    call.voicelive_event(speech, 11_000.0)
    assert call.next_deadline() is None or call.next_deadline() > 20_000.0  # no count while talking
    call.voicelive_event({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900}, 12_000.0)
    call.voicelive_event({"type": "input_audio_buffer.committed", "item_id": "u1"}, 12_010.0)
    answer(call, "r3", 12_100.0)
    call.tick(17_300.0)  # a fresh count: a re-prompt, not the goodbye
    assert reprompts(vl(call)) == ["Are you still there?"]
    assert call.state == CallState.READY


def test_no_reprompt_by_default() -> None:
    call = make_call()
    for second in range(1, 110):  # (the idle timeout, 120 s by default, is another matter)
        call.tick(second * 1000.0)
    assert reprompts(vl(call)) == [] and call.state == CallState.READY


def test_audio_pieces_reach_the_phone_in_order_during_a_goodbye() -> None:
    call = make_call()
    created(call, "r1", 10.0)
    call.voicelive_event({"type": "response.audio.delta", "response_id": "r1", "item_id": "i1",
                          "output_index": 0, "content_index": 0,
                          "delta": base64.b64encode(bytes(range(256)) * 10).decode()}, 20.0)
    tool_call(call, "r1", "c1", "hang_up", {}, 21.0)
    played = b"".join(base64.b64decode(a.payload) for a in phone(call) if isinstance(a, PlayAudio))
    assert played == bytes(range(256)) * 10


def unready_call(profile: str = "control") -> Call:
    config = parse_config(CONFIG, env={})
    return Call(call_id="CA1", stream_id="MZ1", profile_name=profile, profile=config.profiles[profile],
                started_at=0.0)


@pytest.mark.parametrize("greeting", [False, True])
def test_keys_pressed_before_the_session_is_ready_are_sent_once_it_is(greeting: bool) -> None:
    call = unready_call("greeting_keys" if greeting else "control")
    call.dtmf("5", 10.0)
    call.dtmf("#", 20.0)
    assert call.to_voicelive == []
    call.voicelive_connected(30.0)
    call.voicelive_event({"type": "session.updated", "session": {
        "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}}, 40.0)
    sent = vl(call)
    assert key_items(sent) == ["[The caller pressed these keys on the phone keypad: 5 #]"]
    creates = [e for e in sent if e["type"] == "response.create"]
    assert len(creates) == 1  # one response at a time: the greeting first, if there is one
    if greeting:
        assert spoken_text(creates[0]) == "Welcome."
        created(call, "r1", 50.0)
        done(call, "r1", 60.0)
        assert [e["type"] for e in vl(call)] == ["response.create"]  # then the keys are answered


def test_a_paced_leg_ends_a_goodbye_one_piece_after_the_playback_clock() -> None:
    config = parse_config(CONFIG, env={})
    call = Call(call_id="CA1", stream_id="MZ1", profile_name="control", profile=config.profiles["control"],
                started_at=0.0, paced=True, piece_ms=20)
    call.voicelive_connected(1.0)
    call.voicelive_event({"type": "session.updated", "session": {
        "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}}, 2.0)
    created(call, "r1", 10.0)
    speak(call, "r1", "i1", 1630, 10.0)  # 203.75 ms: the last piece is a partial frame
    tool_call(call, "r1", "c1", "hang_up", {}, 11.0)
    done(call, "r1", 12.0)
    end = 10.0 + 1630 / 8 + 20
    while (due := call.next_deadline()) is not None and due < end:
        call.tick(due)
        assert not call.ended
    assert call.next_deadline() == end
    call.tick(end)
    assert call.ended and call.end_reason == "bot_hung_up"


def test_a_transfer_key_on_a_line_that_cannot_transfer_is_an_ordinary_key() -> None:
    call = make_call(can_transfer=False)
    call.dtmf("0", 100.0)
    call.dtmf("#", 110.0)
    assert key_items(vl(call)) == ["[The caller pressed these keys on the phone keypad: 0 #]"]
    assert call.state == CallState.READY and hangups(phone(call)) == []


def test_words_after_the_hang_up_call_in_the_same_response_are_the_goodbye() -> None:
    call = make_call()
    created(call, "r1", 10.0)
    tool_call(call, "r1", "c1", "hang_up", {}, 20.0)
    marks = speak(call, "r1", "i1", 800, 30.0)  # the model spoke after calling the tool
    done(call, "r1", 40.0)
    assert not any(e["type"] == "response.create" for e in vl(call))  # no second goodbye
    assert call.state == CallState.CLOSING
    call.playback_mark(marks[-1], 200.0)
    assert hangups(phone(call)) == [Hangup("bot_hung_up", None)]


def test_no_new_bot_audio_is_played_once_the_goodbye_is_done() -> None:
    call = make_call()
    created(call, "r1", 10.0)
    marks = speak(call, "r1", "i1", 800, 20.0)
    tool_call(call, "r1", "c1", "hang_up", {}, 30.0)
    done(call, "r1", 40.0)
    created(call, "r2", 50.0)  # the service answers something the caller said over the goodbye
    assert speak(call, "r2", "i2", 800, 60.0) == []
    call.playback_mark(marks[-1], 200.0)
    assert hangups(phone(call)) == [Hangup("bot_hung_up", None)]


def test_no_reprompt_while_the_phone_socket_is_gone_and_a_hang_up_ends_the_call_when_it_went() -> None:
    call = make_call("prompting")  # re-prompts after 5 s of silence
    call.phone_away(3000.0)  # the media socket dropped: the carrier may reconnect it
    assert call.next_deadline() is None or call.next_deadline() > 20_000.0
    call.tick(9000.0)
    assert reprompts(vl(call)) == []  # nobody would hear it
    call.phone_back(9500.0)  # a new socket: silence counts afresh
    call.tick(14_499.0)
    assert reprompts(vl(call)) == []
    call.tick(14_500.0)
    assert reprompts(vl(call)) == ["Are you still there?"]
    call.phone_away(15_000.0)
    call.phone_ended("caller_hung_up", 16_200.0)  # the carrier's word came later than the socket's end
    assert call.ended and call.summary(16_300.0)["duration_ms"] == 15_000

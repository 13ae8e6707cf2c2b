"""Events with the right type and the wrong field types: one warning, and the call goes on. The pure
core takes each of them without raising (the shell's safety net is not what makes these pass)."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.call import Call, CallState
from gateway.carriers.twilio.codec import Start, TwilioLeg
from gateway.config import parse_config
from gateway.wire import WireCall

PROFILE = parse_config("""
profiles:
  main:
    model: gpt-realtime
    greeting: Hello.
    tools: [{name: hang_up, builtin: hang_up}, {name: lookup, description: Look up., http: {url: "http://127.0.0.1:9/x"}}]
""", env={}).profiles["main"]

EXAMPLES: list[dict[str, Any]] = [
    {"type": "session.created", "session": {"id": "s", "expires_at": 123}},
    {"type": "session.updated", "session": {"input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw",
                                            "expires_at": 5}},
    {"type": "error", "error": {"type": "x", "code": "c", "message": "m", "event_id": "gw_1", "param": "p"}},
    {"type": "input_audio_buffer.speech_started", "audio_start_ms": 1, "item_id": "u"},
    {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 1, "item_id": "u"},
    {"type": "input_audio_buffer.committed", "item_id": "u", "previous_item_id": "p"},
    {"type": "conversation.item.created", "item": {"id": "x", "type": "message", "role": "user"}},
    {"type": "conversation.item.created", "item": {"id": "f", "type": "function_call", "call_id": "c",
                                                   "name": "lookup"}},
    {"type": "response.output_item.added", "response_id": "r1", "item": {"id": "i1", "type": "message",
                                                                         "role": "assistant"}},
    {"type": "response.output_item.done", "response_id": "r1", "item": {"id": "f", "type": "function_call",
                                                                        "call_id": "c", "name": "lookup"}},
    {"type": "response.created", "response": {"id": "r2"}},
    {"type": "response.audio.delta", "response_id": "r1", "item_id": "i1", "delta": "AAAA"},
    {"type": "response.done", "response": {"id": "r1", "status": "completed", "status_details": {"reason": "x"}}},
    {"type": "conversation.item.truncated", "item_id": "i1", "audio_end_ms": 5},
    {"type": "conversation.item.input_audio_transcription.completed", "item_id": "x", "transcript": "t"},
    {"type": "response.audio_transcript.done", "item_id": "i1", "transcript": "t"},
    {"type": "response.function_call_arguments.done", "response_id": "r1", "item_id": "f", "call_id": "c",
     "name": "lookup", "arguments": "{}"},
    {"type": "response.function_call_arguments.done", "response_id": "r1", "item_id": "f", "call_id": "c2",
     "name": "hang_up", "arguments": "{}"},
]
WRONG = [None, 0, 1.5, float("nan"), True, "", "x", [], [1], {}, {"a": 1}, -1, 10**30]


def _paths(obj: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for key, value in obj.items():
        if key == "type" and not prefix:
            continue
        yield (*prefix, key)
        if isinstance(value, dict):
            yield from _paths(value, (*prefix, key))


def _with(event: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(event)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


CASES = [(_with(ex, path, wrong), f"{ex['type']}:{'.'.join(path)}={wrong!r}")
         for ex in EXAMPLES for path in _paths(ex) for wrong in WRONG]


def _busy_call() -> Call:
    """A call with a response playing, a greeting done, a tool declared: most handlers have work."""
    call = Call(call_id="CA1", stream_id="MZ1", profile_name="main", profile=PROFILE, started_at=0.0,
                reconnect_budget_ms=5000.0)
    call.voicelive_connected(1.0)
    call.voicelive_event({"type": "session.updated", "session": {
        "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}}, 2.0)
    call.voicelive_event({"type": "response.created", "response": {"id": "r1"}}, 3.0)
    call.voicelive_event({"type": "response.audio.delta", "response_id": "r1", "item_id": "i1",
                          "delta": base64.b64encode(bytes(800)).decode()}, 4.0)
    return call


@pytest.mark.parametrize("event", [event for event, _ in CASES], ids=[name for _, name in CASES])
def test_a_voice_live_event_with_wrong_field_types_never_raises(event: dict[str, Any]) -> None:
    call = _busy_call()
    call.voicelive_event(event, 10.0)
    call.tick(50_000.0)  # and what it set in motion runs without raising either


@pytest.mark.parametrize("name", ["²", "1" * 4300, "٣", "-1", "1.0", ""])
def test_a_mark_that_is_not_ours_is_one_warning_and_the_call_goes_on(name: str) -> None:
    call = _busy_call()
    wire = WireCall(call, TwilioLeg(Start("MZ1", "CA1", "AC1", {}, ("inbound",))))
    call.playback_mark(name, 6.0)  # the core itself takes it
    wire.from_phone(json.dumps({"event": "mark", "streamSid": "MZ1", "mark": {"name": name}}), 7.0)
    assert call.state == CallState.READY and not call.ended
    assert len(call.playout.pending) > 0  # nothing acknowledged by a name that is not one of ours

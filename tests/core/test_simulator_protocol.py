"""The simulator's sans-I/O protocol: client events and explicit times in, server events out.
No sockets, no clocks, no files (speech is handed over as bytes)."""

from __future__ import annotations

import ast
import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.audio import pcm16_to_ulaw
from gateway.simulator.protocol import Event, SimProtocol, SpeechRequest
from gateway.simulator.settings import SimulatorSettings, ToolCall
from gateway.simulator.voice import OutputFormat, Speech

QUERY = {"api-version": "2026-07-15", "model": "gpt-realtime"}
ULAW = OutputFormat("g711_ulaw", 8000, "ulaw")
SPEECH = Speech("Hello there, how can I help you today?", b"\x55" * 8000, None)  # 1 s of g711_ulaw
CLOSING = [
    "response.audio.done",
    "response.audio_transcript.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.done",
]
LOOKUP_ORDER = {"type": "function", "name": "lookup_order", "parameters": {"type": "object"}}


def make(**settings: Any) -> SimProtocol:
    values: dict[str, Any] = {"response_delay_ms": 0, "audio_speed": 2.0, "chunk_pattern_ms": (200,), **settings}
    protocol = SimProtocol(
        SimulatorSettings(**values), QUERY, session_id="sess_0123456789", index=1, wall_time=1_000_000.0
    )
    assert types(protocol.open()) == ["session.created"]
    return protocol


def types(events: list[Event]) -> list[str]:
    return [e["type"] for e in events]


def g711(protocol: SimProtocol, **session: Any) -> None:
    update = {"input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw", **session}
    assert types(protocol.receive({"type": "session.update", "session": update}, 0.0)) == ["session.updated"]


def tone_ulaw(ms: int) -> bytes:
    """A 440 Hz tone at about -21 dBFS: speech to the energy VAD."""
    t = np.arange(ms * 8) / 8000
    return pcm16_to_ulaw((np.sin(2 * np.pi * 440 * t) * 3000).astype("<i2").tobytes())


def append(audio: bytes) -> Event:
    return {"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode("ascii")}


def audio_of(events: list[Event]) -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.audio.delta")


def start_spoken_response(protocol: SimProtocol, now: float) -> SpeechRequest:
    assert protocol.receive({"type": "response.create"}, now) == []
    request = protocol.speech_wanted
    assert request is not None and protocol.wakeup is None  # nothing is due before the audio is there
    return request


def test_the_protocol_module_does_no_io() -> None:
    for module in ("protocol", "validation", "settings"):
        tree = ast.parse((Path(__file__).resolve().parents[2] / "gateway" / "simulator" / f"{module}.py").read_text())
        imported = {
            name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for name in ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""])
        }
        assert not imported & {"asyncio", "aiohttp", "socket", "time", "threading", "websockets"}, module


def test_session_created_then_update() -> None:
    protocol = SimProtocol(SimulatorSettings(), QUERY, session_id="sess_0123456789", index=7, wall_time=1000.5)
    [created] = protocol.open()
    assert created["event_id"] == "event_00700001"
    assert created["session"]["id"] == "sess_0123456789" and created["session"]["expires_at"] == 1000 + 1800
    [updated] = protocol.receive({"type": "session.update", "session": {"input_audio_format": "g711_alaw"}}, 0.0)
    assert updated["session"]["input_audio_sampling_rate"] == 8000
    [error] = protocol.receive({"type": "session.update", "session": {"temperature": 2}, "event_id": "u2"}, 0.0)
    assert error["error"]["param"] == "session.temperature" and error["error"]["event_id"] == "u2"
    assert types(protocol.receive("not an object", 0.0)) == ["error"]
    assert protocol.invalid_json("Expecting value")[0]["error"]["code"] == "invalid_json"
    assert protocol.expire()[0]["error"]["code"] == "session_expired"


def test_speech_then_silence_commits_the_turn_and_plans_its_reply() -> None:
    protocol = make()
    g711(protocol, turn_detection={"type": "server_vad", "prefix_padding_ms": 0, "silence_duration_ms": 300})
    events = protocol.receive(append(b"\xff" * 2400 + tone_ulaw(600) + b"\xff" * 4000), 12.0)
    assert types(events) == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.created",
    ]
    started, stopped, committed, created = events
    assert (started["audio_start_ms"], stopped["audio_end_ms"]) == (300, 900)
    assert started["item_id"] == stopped["item_id"] == committed["item_id"] == created["item"]["id"]
    # The reply is planned, not sent: the server loads the turn's clip, then runs the plan.
    resp = protocol.response
    assert resp is not None and protocol.speech_wanted == SpeechRequest(resp.id, ULAW, "bot_reply_1", None)
    assert protocol.wakeup is None and protocol.advance(12.0) == []


def test_a_spoken_response_is_paced_at_audio_speed() -> None:
    protocol = make(response_delay_ms=300)
    g711(protocol, turn_detection=None)
    start_spoken_response(protocol, 1.0)
    assert protocol.speech_ready(SPEECH, 5.0) == []  # "thinking" first
    assert protocol.wakeup == pytest.approx(5.3)
    steps = [protocol.advance(5.3)]
    assert types(steps[0]) == [
        "response.created",
        "rate_limits.updated",
        "response.output_item.added",
        "conversation.item.created",
        "response.content_part.added",
        *["response.audio_transcript.delta"] * (len(types(steps[0])) - 6),
        "response.audio.delta",
    ]
    wakeups = []
    while (wake := protocol.wakeup) is not None:
        wakeups.append(wake)
        steps.append(protocol.advance(wake))
    # 200 ms of audio per delta at twice real time: one every 100 ms from the first.
    assert wakeups == pytest.approx([5.4, 5.5, 5.6, 5.7])
    assert [types(step).count("response.audio.delta") for step in steps] == [1] * 5
    everything = [e for step in steps for e in step]
    assert types(steps[-1])[-5:] == CLOSING
    done = steps[-1][-1]["response"]
    assert done["status"] == "completed" and done["output"][0]["content"][0]["transcript"] == SPEECH.text
    assert audio_of(everything) == SPEECH.audio
    assert "".join(e["delta"] for e in everything if e["type"] == "response.audio_transcript.delta") == SPEECH.text
    assert protocol.response is None and protocol.advance(6.0) == []
    ids = [e["event_id"] for e in everything]
    assert len(set(ids)) == len(ids)


def test_a_cancel_mid_plan_returns_the_closing_events() -> None:
    protocol = make()
    g711(protocol, turn_detection=None)
    start_spoken_response(protocol, 1.0)
    first = protocol.speech_ready(SPEECH, 2.0)
    second = protocol.advance(2.1)
    item_id = first[-1]["item_id"]
    assert audio_of(first + second) == SPEECH.audio[:3200]

    events = protocol.receive({"type": "response.cancel"}, 2.15)
    assert types(events) == CLOSING
    item = events[-2]["item"]
    assert item["id"] == item_id and item["status"] == "incomplete"
    said = item["content"][0]["transcript"]
    assert said and SPEECH.text.startswith(said) and len(said) < len(SPEECH.text)
    done = events[-1]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    # Nothing more is due; the step that was planned never runs.
    assert protocol.wakeup is None and protocol.response is None and protocol.advance(2.2) == []
    assert protocol.items_audio_bytes == {item_id: 3200}
    assert protocol.cancel_response() == []
    [error] = protocol.receive({"type": "response.cancel", "event_id": "c2"}, 2.3)
    assert error["error"]["code"] == "response_cancel_not_active"


def test_a_cancel_before_the_audio_is_loaded() -> None:
    protocol = make()
    g711(protocol, turn_detection=None)
    start_spoken_response(protocol, 1.0)
    events = protocol.cancel_response("client_cancelled")
    assert types(events) == ["response.created", "response.done"]  # nothing was opened
    assert events[1]["response"]["output"] == []
    assert protocol.speech_wanted is None and protocol.speech_ready(SPEECH, 1.5) == []  # too late: ignored
    assert protocol.spoken == []


def test_barge_in_cancels_and_auto_truncates_at_real_time() -> None:
    protocol = make()
    td = {"type": "server_vad", "prefix_padding_ms": 0, "silence_duration_ms": 300, "auto_truncate": True}
    g711(protocol, turn_detection=td)
    start_spoken_response(protocol, 0.5)
    first = protocol.speech_ready(SPEECH, 1.0)
    protocol.advance(1.1)  # 400 ms of audio sent
    item_id = first[-1]["item_id"]

    events = protocol.receive(append(tone_ulaw(300)), 1.25)
    assert types(events) == ["input_audio_buffer.speech_started", *CLOSING, "conversation.item.truncated"]
    assert events[-2]["response"]["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    # Played at real time from the first delta, the caller heard 250 ms of the 400 ms sent.
    assert events[-1] == {**events[-1], "item_id": item_id, "content_index": 0, "audio_end_ms": 250}
    assert protocol.truncations == [{"item_id": item_id, "audio_end_ms": 250, "item_audio_ms": 400, "ok": True}]


def test_a_scripted_function_call_streams_its_arguments() -> None:
    protocol = make(tool_calls={1: ToolCall("lookup_order", {"order": "42"})}, function_call_ms=300)
    g711(protocol, turn_detection=None, tools=[LOOKUP_ORDER])
    user = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Where is 42?"}]}
    assert types(protocol.receive({"type": "conversation.item.create", "item": user}, 1.0)) == [
        "conversation.item.created"
    ]

    assert protocol.receive({"type": "response.create"}, 2.0) == []  # due at once, never inside the event
    assert protocol.speech_wanted is None and protocol.wakeup == 2.0
    steps = [protocol.advance(2.0)]
    wakeups = []
    while (wake := protocol.wakeup) is not None:
        wakeups.append(wake)
        steps.append(protocol.advance(wake))
    assert wakeups == pytest.approx([2.1, 2.2, 2.3])
    assert [types(step) for step in steps] == [
        [
            "response.created",
            "response.output_item.added",
            "conversation.item.created",
            "response.function_call_arguments.delta",
        ],
        ["response.function_call_arguments.delta"],
        ["response.function_call_arguments.delta"],
        ["response.function_call_arguments.done", "response.output_item.done", "response.done"],
    ]
    args = "".join(step[-1]["delta"] for step in steps[:3])
    assert json.loads(args) == {"order": "42"} and steps[3][0]["arguments"] == args
    assert [(c["name"], c["status"]) for c in protocol.function_calls] == [("lookup_order", "completed")]


def test_speech_during_a_function_call_cancels_it() -> None:
    protocol = make(tool_calls={1: ToolCall("lookup_order", {"order": "42"})}, function_call_ms=300)
    td = {"type": "server_vad", "prefix_padding_ms": 0, "silence_duration_ms": 300, "create_response": False}
    g711(protocol, turn_detection=td, tools=[LOOKUP_ORDER])
    protocol.receive(append(tone_ulaw(300) + b"\xff" * 4000), 0.5)  # the caller's first turn
    protocol.receive({"type": "response.create"}, 1.0)
    first = protocol.advance(1.0)
    events = protocol.receive(append(tone_ulaw(300)), 1.05)
    assert types(events) == ["input_audio_buffer.speech_started", "response.output_item.done", "response.done"]
    cut = events[1]["item"]
    assert cut["status"] == "incomplete" and cut["arguments"] == first[-1]["delta"]
    assert events[2]["response"]["output"] == [cut]
    assert [c["status"] for c in protocol.function_calls] == ["cancelled"]
    assert protocol.wakeup is None


def test_only_one_response_at_a_time_and_a_failed_one_ends() -> None:
    moments: list[str] = []
    protocol = make(observer=lambda name, fields: moments.append(name))
    g711(protocol, turn_detection=None)
    start_spoken_response(protocol, 1.0)
    [error] = protocol.receive({"type": "response.create", "event_id": "again"}, 1.1)
    assert error["error"]["code"] == "conversation_already_has_active_response"
    # The server could not load the audio: the response fails, and another may start.
    [done] = protocol.fail_response()
    assert done["response"]["status"] == "failed" and protocol.response is None
    assert moments[-1] == "response.done"
    start_spoken_response(protocol, 2.0)


def run_scripted_call(protocol: SimProtocol) -> list[Event]:
    """A caller turn, the reply, a barge-in and the next turn, at fixed times."""
    td = {"type": "server_vad", "prefix_padding_ms": 0, "silence_duration_ms": 300, "auto_truncate": True}
    update = {"input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw", "turn_detection": td}
    out = protocol.receive({"type": "session.update", "session": update}, 0.0)
    out += protocol.receive(append(tone_ulaw(500) + b"\xff" * 3200), 0.5)
    out += protocol.speech_ready(SPEECH, 0.6)
    while (wake := protocol.wakeup) is not None and wake < 0.9:
        out += protocol.advance(wake)
    out += protocol.receive(append(tone_ulaw(400) + b"\xff" * 3200), 0.95)
    out += protocol.speech_ready(SPEECH, 1.0)
    while (wake := protocol.wakeup) is not None:
        out += protocol.advance(wake)
    return out


def test_the_same_inputs_at_the_same_times_give_the_same_events() -> None:
    first, second = run_scripted_call(make()), run_scripted_call(make())
    assert first == second
    kinds = types(first)
    assert kinds.count("response.done") == 2 and kinds.count("conversation.item.truncated") == 1
    dones = [e["response"]["status"] for e in first if e["type"] == "response.done"]
    assert dones == ["cancelled", "completed"]

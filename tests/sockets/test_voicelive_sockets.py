"""The gateway against a Voice Live simulator as strict as the 2026-07-15 documentation, over real
sockets on 127.0.0.1: refused sessions fail fast, every accepted option answers the caller, fixed
phrases are spoken verbatim, barge-in sends only what helps, tools are found without a name."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from gateway import metrics
from gateway.app import create_app
from gateway.audio import ASSETS, load_ulaw_8k
from gateway.bridge import CONTEXT
from gateway.call import spoken_text
from gateway.carriers.twilio.phone import place_call
from gateway.config import parse_config
from gateway.simulator import RunningSimulator, SimulatorSettings, ToolCall, start_simulator
from gateway.softphone import Hangup, Say, Silence, WaitForBot
from tests.sockets.loopback import post_as_twilio, serve

TOKEN = "strict-voicelive-twilio-token"
HOURS = load_ulaw_8k(ASSETS / "caller_hours.wav")
INTERRUPT = load_ulaw_8k(ASSETS / "caller_interrupt.wav")

CONFIG = """
voicelive: {endpoint: "${EP}"}
twilio: {auth_token: "${T}"}
profiles:
  main:
    model: gpt-realtime
    turn_detection: {type: server_vad, silence_duration_ms: 400}
  refused:                        # valid for the gateway (check-config notes it), refused by Voice Live
    model: gpt-4.1
    turn_detection: {type: semantic_vad}
  manual:
    model: gpt-realtime
    turn_detection: {type: none, silence_duration_ms: 500}
  greeter:
    model: gpt-realtime
    turn_detection: {type: server_vad, silence_duration_ms: 400}
    greeting: Good morning, this is the corner shop.
  closer:
    model: gpt-realtime
    turn_detection: {type: server_vad, silence_duration_ms: 400}
    tools: [{name: hang_up, builtin: hang_up}]
routes:
  default: main
  numbers:
    "+15555550001": refused
    "+15555550002": manual
    "+15555550003": greeter
    "+15555550004": closer
"""


@dataclass
class Rig:
    sim: RunningSimulator
    app: web.Application
    base: str

    async def dial(self, to: str | None, steps: list[Any]) -> Any:
        return await place_call(self.base + "/twilio/voice", steps, auth_token=TOKEN,
                                **({"to": to} if to else {}))

    async def idle(self) -> None:
        await asyncio.wait_for(self.app[CONTEXT].wait_idle(), 10)


@pytest.fixture
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    settings = getattr(request, "param", None) or SimulatorSettings(audio_speed=8.0, response_delay_ms=50)
    sim = await start_simulator(settings)
    app = create_app(parse_config(CONFIG, env={"EP": sim.endpoint, "T": TOKEN}))
    runner, base = await serve(app)
    try:
        yield Rig(sim, app, base)
    finally:
        await runner.cleanup()
        await sim.close()


def received(sim: RunningSimulator, index: int = 0) -> list[dict[str, Any]]:
    return sim.state.sessions[index].received


async def _stream_ended(base: str, call_sid: str) -> str:
    form = {"CallSid": call_sid, "CallStatus": "in-progress"}
    return (await post_as_twilio(base + "/twilio/stream-ended", form, TOKEN))[1]


async def test_a_session_voice_live_refuses_ends_the_call_at_once_with_the_apology(rig: Rig, log_capture) -> None:
    with log_capture("info") as buf:
        before = metrics.VOICELIVE_FAILURES.value("twilio", "session_rejected")
        report = await rig.dial("+15555550001", [Silence(5000), Hangup()])
        twiml = await _stream_ended(rig.base, report.call_sid)
    # the gateway gave up as soon as Voice Live answered the session.update with an error
    assert report.closed_by == "gateway" and report.close_code == 1011
    assert report.duration_ms < 1500, report.duration_ms
    assert "<Say>Sorry, we cannot take your call right now" in twiml and "<Hangup/>" in twiml
    assert metrics.VOICELIVE_FAILURES.value("twilio", "session_rejected") == before + 1
    lines = [json.loads(line) for line in buf.getvalue().splitlines() if line.startswith("{")]
    (refusal,) = [line for line in lines if line.get("event") == "Voice Live refused the session configuration"]
    assert refusal["code"] and "semantic_vad" in refusal["message"]
    assert refusal["call_id"] == report.call_sid


async def test_without_voice_live_turn_detection_the_gateway_commits_and_asks_for_the_answer(rig: Rig) -> None:
    report = await rig.dial("+15555550002", [Say(HOURS, "question"), WaitForBot(), Hangup()])
    await rig.idle()
    events = received(rig.sim)
    (update,) = [e for e in events if e["type"] == "session.update"]
    assert update["session"]["turn_detection"] is None
    kinds = [e["type"] for e in events if e["type"] != "input_audio_buffer.append"]
    commit = kinds.index("input_audio_buffer.commit")
    assert kinds[commit + 1] == "response.create"  # the turn, then its answer
    assert report.played_bytes > 0 and report.violations == 0, report.violation_samples


async def test_fixed_phrases_are_spoken_verbatim_not_worded_by_the_model(rig: Rig) -> None:
    report = await rig.dial("+15555550003", [WaitForBot(), Hangup()])
    await rig.idle()
    session = rig.sim.state.sessions[0]
    (greeting,) = [e for e in session.received if e["type"] == "response.create"]
    assert spoken_text(greeting) == "Good morning, this is the corner shop."
    assert "instructions" not in greeting["response"]
    transcripts = [e["transcript"] for e in session.sent if e["type"] == "response.audio_transcript.done"]
    assert transcripts == ["Good morning, this is the corner shop."]
    assert report.played_bytes > 0


@pytest.mark.parametrize("rig", [SimulatorSettings(audio_speed=1.0, response_delay_ms=50)], indirect=True)
async def test_a_spoken_barge_in_sends_no_cancel_and_a_refused_buffer_clear_is_no_error(rig: Rig) -> None:
    before = metrics.VOICELIVE_ERRORS.value("unsupported_operation")
    report = await rig.dial(None, [Say(HOURS, "question"), WaitForBot(heard_ms=800), Say(INTERRUPT, "over"),
                                   Hangup()])
    await rig.idle()
    kinds = [e["type"] for e in received(rig.sim)]
    assert report.clears == 1 and "conversation.item.truncate" in kinds
    assert "response.cancel" not in kinds  # Voice Live cancelled the response itself on speech_started
    assert kinds.count("output_audio_buffer.clear") == 1  # the simulator refused it (no avatar): not again
    errors = [e for e in rig.sim.state.sessions[0].sent if e["type"] == "error"]
    assert [e["error"]["code"] for e in errors] == ["unsupported_operation"]
    assert metrics.VOICELIVE_ERRORS.value("unsupported_operation") == before


@pytest.mark.parametrize("rig", [SimulatorSettings(audio_speed=8.0, response_delay_ms=50,
                                                   tool_calls={1: ToolCall("hang_up", {"reason": "done"})})],
                         indirect=True)
async def test_a_function_call_named_only_by_its_item_still_runs_its_tool(rig: Rig) -> None:
    report = await rig.dial("+15555550004", [Say(HOURS, "question"), WaitForBot(), Silence(3000), Hangup()])
    await rig.idle()
    session = rig.sim.state.sessions[0]
    (done,) = [e for e in session.sent if e["type"] == "response.function_call_arguments.done"]
    assert "name" not in done  # as the 2026-07-15 event table documents it
    outputs = [e["item"] for e in session.received
               if e["type"] == "conversation.item.create" and e["item"]["type"] == "function_call_output"]
    assert [o["call_id"] for o in outputs] == [done["call_id"]]
    assert report.closed_by == "gateway"  # hang_up ran: the gateway ended the call after the goodbye

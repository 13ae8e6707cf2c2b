"""Voice Live faults over real sockets (127.0.0.1): refused, dropped, expiring and stalled sessions,
and calls the gateway ends by itself."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from gateway import metrics
from gateway.app import create_app
from gateway.audio import ASSETS, load_ulaw_8k
from gateway.bridge import CONTEXT
from gateway.call import spoken_text
from gateway.carriers.twilio.phone import place_call
from gateway.config import parse_config
from gateway.core import sessions as sessions_module
from gateway.simulator import RunningSimulator, SimulatorSettings, start_simulator
from gateway.softphone import Hangup, Say, Silence, WaitForBot
from gateway.voicelive.budget import LocalBudget
from tests.sockets.loopback import post_as_twilio, serve, twilio_signed, voicelive_route

TOKEN = "faults-test-twilio-token"
HOURS = load_ulaw_8k(ASSETS / "caller_hours.wav")
DELIVERY = load_ulaw_8k(ASSETS / "caller_delivery.wav")


async def _gateway(endpoint: str, extra: str = "", profile: str = "{model: gpt-realtime}"
                   ) -> tuple[web.AppRunner, str]:
    config = parse_config(f"""
voicelive: {{endpoint: "{endpoint}"{extra}}}
twilio: {{auth_token: "${{T}}"}}
profiles: {{main: {profile}}}
""", env={"T": TOKEN})
    return await serve(create_app(config))


async def _stream_ended(base: str, call_sid: str) -> str:
    form = {"CallSid": call_sid, "CallStatus": "in-progress"}
    status, twiml = await post_as_twilio(base + "/twilio/stream-ended", form, TOKEN)
    assert status == 200
    return twiml


@dataclass
class FakeVoiceLive:
    """A Voice Live that does what a test tells it: refuse, accept then drop, or stop reading."""

    refuse: Callable[[int], int | None] = lambda n: None  # HTTP status for connection n (0-based), or None
    drop_after_appends: int | None = None  # close the first session (1011) after this many audio appends
    stop_reading: bool = False
    reject_update: dict | None = None  # answer session.update with this error (no event id), stay open
    drop_when_configured: bool = False  # accept every session, then close it (1011) at once
    connections: int = 0
    appended: list[list[str]] = field(default_factory=list)
    configured: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)  # set at teardown: stop not reading

    async def handle(self, request: web.Request) -> web.StreamResponse:
        n = self.connections
        self.connections += 1
        status = self.refuse(n)
        if status is not None:
            return web.Response(status=status)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.appended.append([])
        await ws.send_str(json.dumps({"type": "session.created", "session": {"id": f"s{n}"}}))
        async for msg in ws:
            event = json.loads(msg.data)
            if event.get("type") == "session.update" and self.reject_update is not None:
                await ws.send_str(json.dumps({"type": "error", "error": self.reject_update}))
            elif event.get("type") == "session.update":
                await ws.send_str(json.dumps({"type": "session.updated", "session": event["session"]}))
                self.configured.set()
                if self.drop_when_configured:
                    await ws.close(code=1011)
                if self.stop_reading:
                    await self.released.wait()  # read no more: the gateway's sends pile up
            elif event.get("type") == "input_audio_buffer.append":
                self.appended[-1].append(event["audio"])
                if n == 0 and self.drop_after_appends is not None and len(self.appended[-1]) >= self.drop_after_appends:
                    await ws.close(code=1011)
        return ws


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeVoiceLive, str]]:
    vl = FakeVoiceLive()
    async with voicelive_route(vl.handle) as base:
        try:
            yield vl, base
        finally:
            vl.released.set()  # a handler that stopped reading ends, so the server shuts down at once


@pytest.mark.parametrize("status", [401, 429, 503])
async def test_a_refused_session_ends_the_twilio_call_with_an_apology(fake, status: int) -> None:
    vl, endpoint = fake
    vl.refuse = lambda n: status
    runner, base = await _gateway(endpoint)
    before = metrics.VOICELIVE_FAILURES.value("twilio", str(status))
    busy_before = metrics.VOICELIVE_FAILURES.value("twilio", "no_budget")
    try:
        report = await place_call(base + "/twilio/voice", [Silence(3000), Hangup()], auth_token=TOKEN)
        twiml = await _stream_ended(base, report.call_sid)
        assert await _stream_ended(base, "CA-some-other-call") == \
            '<?xml version="1.0" encoding="UTF-8"?><Response><Hangup/></Response>'
    finally:
        await runner.cleanup()
    assert report.closed_by == "gateway" and report.close_code == 1011 and report.duration_ms < 2500
    assert "<Say>Sorry, we cannot take your call right now" in twiml and "<Hangup/>" in twiml
    # the session opened at the webhook was refused; so was the call's own, unless a 429 put the
    # resource on back-off: a resource throttling sessions has no budget, so the call found none and
    # was not sent to Voice Live again
    assert metrics.VOICELIVE_FAILURES.value("twilio", str(status)) == before + (1 if status == 429 else 2)
    assert metrics.VOICELIVE_FAILURES.value("twilio", "no_budget") == busy_before + (1 if status == 429 else 0)
    assert vl.connections == (1 if status == 429 else 2)


async def test_a_dropped_session_is_reopened_and_no_caller_audio_is_lost(fake) -> None:
    vl, endpoint = fake
    vl.drop_after_appends = 40  # 0.8 s into the call
    runner, base = await _gateway(endpoint, ", reconnect_budget_s: 5")
    try:
        report = await place_call(base + "/twilio/voice", [Silence(2000), Hangup()], auth_token=TOKEN)
        await asyncio.wait_for(runner.app[CONTEXT].wait_idle(), 10)
    finally:
        await runner.cleanup()
    assert report.closed_by == "caller" and vl.connections == 2
    first, second = vl.appended
    assert len(first) == 40
    assert first + second == report.sent_payloads  # every frame, in order, across both sessions


async def test_past_the_budget_the_caller_gets_the_apology(fake) -> None:
    vl, endpoint = fake
    vl.drop_after_appends = 20
    vl.refuse = lambda n: 503 if n > 0 else None  # the first session drops, and no new one opens
    runner, base = await _gateway(endpoint, ", reconnect_budget_s: 0.5")
    try:
        report = await place_call(base + "/twilio/voice", [Silence(4000), Hangup()], auth_token=TOKEN)
        twiml = await _stream_ended(base, report.call_sid)
    finally:
        await runner.cleanup()
    assert report.closed_by == "gateway" and report.close_code == 1011
    assert vl.connections >= 3  # it did retry, with backoff, within the budget
    assert "<Say>" in twiml


async def test_a_session_that_stops_reading_ends_the_call_instead_of_growing_memory(fake, log_capture) -> None:
    vl, endpoint = fake
    vl.stop_reading = True
    with log_capture("info") as buf:
        runner, base = await _gateway(endpoint, ", max_send_backlog_kib: 64")
        big = base64.b64encode(b"\xff" * 48_000).decode()  # a flood of 6-second frames
        try:
            ws_url = base.replace("http", "ws") + "/twilio/media"
            async with aiohttp.ClientSession() as http, http.ws_connect(
                    ws_url, headers=twilio_signed(TOKEN, ws_url)) as ws:
                token = runner.app[CONTEXT].tokens.issue({"call": "CAflood", "profile": "main"}, 60)
                await ws.send_str(json.dumps({"event": "start", "start": {
                    "streamSid": "MZflood", "callSid": "CAflood", "customParameters": {"token": token},
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
                await vl.configured.wait()
                closing = None
                for _ in range(2000):
                    try:
                        await ws.send_str(json.dumps({"event": "media", "media": {"track": "inbound", "payload": big}}))
                    except ConnectionResetError:
                        break
                    if ws.closed:
                        break
                    await asyncio.sleep(0)  # let the gateway read
                closing = await ws.receive()
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            await asyncio.wait_for(runner.app[CONTEXT].wait_idle(), 10)
        finally:
            await runner.cleanup()
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    stalled = [line for line in lines if "not reading" in line.get("event", "")]
    assert len(stalled) == 1 and stalled[0]["call_id"] == "CAflood"
    (summary,) = [line for line in lines if line.get("event") == "call ended"]
    assert summary["end_reason"] == "voicelive_stalled"


async def test_a_session_is_renewed_before_it_expires_without_losing_audio(monkeypatch) -> None:
    monkeypatch.setattr(sessions_module, "MIN_SESSION_MS", 1500.0)
    sim = await start_simulator(SimulatorSettings(audio_speed=8.0, session_lifetime_s=1800))
    # no input_transcription written: the gateway asks for it anyway, so the caller's turns survive
    runner, base = await _gateway(sim.endpoint, ", renew_before_expiry_s: 1799.9", profile="{model: gpt-realtime}")
    try:
        report = await place_call(base + "/twilio/voice", [
            Say(HOURS, "question"), WaitForBot(), Silence(500), Say(DELIVERY, "again"), WaitForBot(heard_ms=500),
            Hangup()], auth_token=TOKEN)
        await asyncio.wait_for(runner.app[CONTEXT].wait_idle(), 10)
    finally:
        await runner.cleanup()
        await sim.close()
    sessions = sim.state.sessions
    assert len(sessions) >= 2  # renewed at a quiet moment
    assert [frame for s in sessions for frame in s.appended] == report.sent_payloads  # nothing lost
    restored = [e["item"] for e in sessions[1].received if e.get("type") == "conversation.item.create"]
    transcribed = "conversation.item.input_audio_transcription.completed"
    first_turn = next(e for e in sessions[0].sent if e["type"] == transcribed)
    assert restored and restored[0]["role"] == "user"
    assert restored[0]["content"] == [{"type": "input_text", "text": first_turn["transcript"]}]
    assert report.closed_by == "caller" and report.violations == 0


async def test_a_renewal_without_budget_to_spare_keeps_the_session(monkeypatch) -> None:
    monkeypatch.setattr(sessions_module, "MIN_SESSION_MS", 1500.0)
    sim = await start_simulator(SimulatorSettings(audio_speed=8.0, session_lifetime_s=1800))
    runner, base = await _gateway(sim.endpoint, ", renew_before_expiry_s: 1799.9", profile="{model: gpt-realtime}")
    runner.app[CONTEXT].pool.budget = LocalBudget({"default": 1})  # the call's own connect spends it
    deferred = metrics.VOICELIVE_RENEWALS.value("deferred")
    try:
        report = await place_call(base + "/twilio/voice", [
            Say(HOURS, "question"), WaitForBot(), Silence(500), Say(DELIVERY, "again"), WaitForBot(heard_ms=500),
            Hangup()], auth_token=TOKEN)
        await asyncio.wait_for(runner.app[CONTEXT].wait_idle(), 10)
    finally:
        await runner.cleanup()
        await sim.close()
    assert len(sim.state.sessions) == 1  # the renewal found no connection: the session went on
    assert metrics.VOICELIVE_RENEWALS.value("deferred") == deferred + 1  # (tried again 20 s later: the call ended)
    assert sim.state.sessions[0].appended == report.sent_payloads
    assert report.closed_by == "caller" and report.violations == 0


async def test_an_idle_call_ends_with_a_spoken_goodbye(sim: RunningSimulator) -> None:
    runner, base = await _gateway(sim.endpoint, profile="{model: gpt-realtime, limits: {idle_timeout_s: 1}}")
    try:
        report = await place_call(base + "/twilio/voice", [Silence(15_000), Hangup()], auth_token=TOKEN)
        twiml = await _stream_ended(base, report.call_sid)
    finally:
        await runner.cleanup()
    assert report.closed_by == "gateway" and report.close_code == 1000
    assert report.played_bytes > 8000 and report.unplayed_bytes == 0  # the goodbye was heard in full
    assert report.duration_ms < 10_000
    assert "<Say>" not in twiml and "<Hangup/>" in twiml
    creates = [e for e in sim.state.sessions[0].received if e.get("type") == "response.create"]
    assert spoken_text(creates[0]) == "I have to end the call now. Thank you for calling, goodbye."


async def test_a_session_update_answered_with_an_error_ends_the_call_without_waiting(fake) -> None:
    vl, endpoint = fake
    vl.reject_update = {"type": "invalid_request_error", "code": "invalid_value", "message": "no such voice"}
    runner, base = await _gateway(endpoint, ", connect_timeout_s: 10")
    try:
        report = await place_call(base + "/twilio/voice", [Silence(5000), Hangup()], auth_token=TOKEN)
        twiml = await _stream_ended(base, report.call_sid)
    finally:
        await runner.cleanup()
    # the error names no event, but nothing else was asked yet: the configuration was refused
    assert report.closed_by == "gateway" and report.close_code == 1011
    assert report.duration_ms < 3000  # not connect_timeout_s
    assert "<Say>Sorry, we cannot take your call right now" in twiml


async def test_a_voice_live_that_drops_every_session_is_not_reconnected_for_ever(fake, log_capture) -> None:
    vl, endpoint = fake
    vl.drop_when_configured = True
    with log_capture("info") as buf:
        runner, base = await _gateway(endpoint, ", reconnect_budget_s: 2")
        try:
            report = await place_call(base + "/twilio/voice", [Silence(8000), Hangup()], auth_token=TOKEN)
            twiml = await _stream_ended(base, report.call_sid)
        finally:
            await runner.cleanup()
    # retries back off across the whole episode (sessions that open then drop do not reset it),
    # and the budget counts from the first drop: then the call ends with the apology
    assert vl.connections <= 8, vl.connections
    assert report.closed_by == "gateway" and report.close_code == 1011
    assert 2000 <= report.duration_ms < 4000, report.duration_ms
    assert "<Say>Sorry, we cannot take your call right now" in twiml
    lines = [json.loads(line) for line in buf.getvalue().splitlines() if line.startswith("{")]
    assert [line["event"] for line in lines].count("Voice Live session lost; reconnecting") == 1
    assert len(lines) < 40  # no log flood


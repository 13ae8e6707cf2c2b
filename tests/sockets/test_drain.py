"""Limits and graceful drain, on a real `gateway serve` process."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import aiohttp
import pytest
from aiohttp import web

from gateway.app import create_app
from gateway.audio import ASSETS, load_ulaw_8k
from gateway.bridge import CONTEXT
from gateway.carriers.twilio.phone import place_call
from gateway.config import parse_config
from gateway.simulator import RunningSimulator
from gateway.softphone import CallError, CallRejected, Hangup, Say, Silence, WaitForBot
from tests.sockets.loopback import listen, post_as_twilio, twilio_signed
from tests.sockets.served import gateway_env, serve_gateway

TOKEN = "drain-test-twilio-token"
HOURS = load_ulaw_8k(ASSETS / "caller_hours.wav")


async def _readyz(base: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, http.get(base + "/readyz") as response:
        return response.status, await response.json()


async def test_sigterm_lets_calls_in_flight_finish_and_refuses_new_ones() -> None:
    async with serve_gateway(gateway_env(TWILIO_AUTH_TOKEN=TOKEN)) as served:
        base = served.base
        connected = [asyncio.Event(), asyncio.Event()]

        def watcher(i: int):
            def on_event(_t: float, kind: str, _f: dict) -> None:
                if kind == "bot_audio_start":
                    connected[i].set()
            return on_event

        calls = [asyncio.create_task(place_call(base + "/twilio/voice", [Say(HOURS, "q"), WaitForBot(), Hangup()],
                                                auth_token=TOKEN, on_event=watcher(i))) for i in range(2)]
        for event in connected:  # both calls are talking to the bot
            await asyncio.wait_for(event.wait(), 30)
        assert await _readyz(base) == (200, {"status": "ready", "active_calls": 2})
        served.proc.send_signal(signal.SIGTERM)
        await served.wait_for(lambda: any(str(line.get("event", "")).startswith("draining:") for line in served.lines),
                              10)
        assert await _readyz(base) == (503, {"status": "draining", "active_calls": 2})
        with pytest.raises(CallRejected):  # no new stream
            await place_call(base.replace("http", "ws") + "/twilio/media", [Hangup()], auth_token=TOKEN)
        _, twiml = await post_as_twilio(base + "/twilio/voice", {"CallSid": "CAnew", "To": "+15555550100"}, TOKEN)
        assert "<Say>" in twiml and "<Connect>" not in twiml  # a polite refusal
        reports = await asyncio.gather(*calls)
        ended_at = time.monotonic()
        for report in reports:  # none was cut
            assert report.closed_by == "caller" and report.played_bytes > 8000 and report.violations == 0
        assert await asyncio.wait_for(served.proc.wait(), 30) == 0
        assert served.events("drained: every call has ended") and time.monotonic() >= ended_at
    summaries = served.events("call ended")
    assert len(summaries) == 2 and {s["end_reason"] for s in summaries} == {"caller_hung_up"}


async def test_beyond_max_calls_new_calls_are_refused_politely(sim: RunningSimulator) -> None:
    config = parse_config(f"""
voicelive: {{endpoint: "{sim.endpoint}"}}
twilio: {{auth_token: "${{T}}"}}
gateway: {{max_calls: 1}}
profiles: {{main: {{model: gpt-realtime}}}}
""", env={"T": TOKEN})
    runner = web.AppRunner(create_app(config))
    try:
        base = await listen(runner)
        talking = asyncio.Event()
        first = asyncio.create_task(place_call(
            base + "/twilio/voice", [Silence(2000), Hangup()], auth_token=TOKEN,
            on_event=lambda _t, kind, _f: talking.set() if kind == "connected" else None))
        await talking.wait()
        await asyncio.wait_for(sim.state.wait_for_session(0), 10)
        assert (await _readyz(base))[0] == 503
        with pytest.raises(CallError, match=r"no <Connect><Stream>.*Say") as refused:  # TwiML that apologises
            await place_call(base + "/twilio/voice", [Hangup()], auth_token=TOKEN)
        assert not isinstance(refused.value, CallRejected)
        with pytest.raises(CallRejected, match="503"):  # and a stream opened anyway is refused too
            await place_call(base.replace("http", "ws") + "/twilio/media", [Hangup()], auth_token=TOKEN)
        report = await first
        assert report.closed_by == "caller"
        await asyncio.wait_for(runner.app[CONTEXT].wait_idle(), 10)
        assert (await _readyz(base))[0] == 200
        assert len(sim.state.sessions) == 1
    finally:
        await runner.cleanup()


async def test_calls_still_running_when_the_drain_times_out_are_cut_by_the_gateway(sim: RunningSimulator) -> None:
    from gateway import metrics
    from gateway.app import drain

    config = parse_config(f"""
voicelive: {{endpoint: "{sim.endpoint}"}}
twilio: {{auth_token: "${{T}}"}}
profiles: {{main: {{model: gpt-realtime}}}}
""", env={"T": TOKEN})
    ready = asyncio.Event()
    app = create_app(config, observer_factory=lambda _call: (
        lambda event, _t, _f: ready.set() if event == "session.ready" else None))
    runner = web.AppRunner(app)
    ends = ("drain_timeout", "phone_socket_closed", "caller_hung_up")
    before = {end: metrics.CALLS.value("twilio", end) for end in ends}
    try:
        base = await listen(runner)
        call = asyncio.create_task(place_call(base + "/twilio/voice", [Silence(30_000), Hangup()], auth_token=TOKEN))
        await asyncio.wait_for(ready.wait(), 10)
        assert await drain(app, 0.2) is False  # the caller is still talking when the drain runs out
        report = await asyncio.wait_for(call, 10)
    finally:
        await runner.cleanup()
    assert report.closed_by == "gateway" and report.close_code == 1011
    after = {end: metrics.CALLS.value("twilio", end) for end in ends}
    assert after == {**before, "drain_timeout": before["drain_timeout"] + 1}  # not counted as the caller's end


async def test_a_stream_that_starts_after_sigterm_is_refused_like_a_new_call(sim: RunningSimulator) -> None:
    from gateway import metrics

    config = parse_config(f"""
voicelive: {{endpoint: "{sim.endpoint}"}}
twilio: {{auth_token: "${{T}}"}}
profiles: {{main: {{model: gpt-realtime}}}}
""", env={"T": TOKEN})
    app = create_app(config)
    runner = web.AppRunner(app)
    before = metrics.CALLS.value("twilio", "refused (draining)")
    try:
        base = await listen(runner)
        ws_url = base.replace("http", "ws") + "/twilio/media"
        token = app[CONTEXT].tokens.issue({"call": "CAlate", "profile": "main"}, 60, carrier="twilio")
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url, headers=twilio_signed(TOKEN, ws_url)) as ws:
            app[CONTEXT].draining = True  # SIGTERM arrives between the upgrade and the start message
            await ws.send_str(json.dumps({"event": "start", "start": {
                "streamSid": "MZlate", "callSid": "CAlate", "customParameters": {"token": token},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
            closing = await ws.receive()
        form = {"CallSid": "CAlate", "CallStatus": "in-progress"}
        _, twiml = await post_as_twilio(base + "/twilio/stream-ended", form, TOKEN)
    finally:
        await runner.cleanup()
    assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1013
    assert sim.state.sessions == []  # no Voice Live session was opened for it
    assert metrics.CALLS.value("twilio", "refused (draining)") == before + 1
    assert "<Say>" in twiml and "<Hangup/>" in twiml  # the caller hears the apology

"""Limits and graceful drain, on a real `gateway serve` process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway.app import create_app
from gateway.audio import ASSETS, load_ulaw_8k
from gateway.bridge import CONTEXT
from gateway.carriers.twilio.auth import twilio_signature
from gateway.carriers.twilio.phone import place_call
from gateway.config import parse_config
from gateway.simulator import SimulatorSettings, start_simulator
from gateway.softphone import CallError, CallRejected, Hangup, Say, Silence, WaitForBot

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "drain-test-twilio-token"
HOURS = load_ulaw_8k(ASSETS / "caller_hours.wav")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _readyz(base: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, http.get(base + "/readyz") as response:
        return response.status, await response.json()


async def test_sigterm_lets_calls_in_flight_finish_and_refuses_new_ones(tmp_path: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "GATEWAY_", "TWILIO_", "ACS_"))}
    env.update(TWILIO_AUTH_TOKEN=TOKEN, AZURE_VOICELIVE_ENDPOINT="simulator", GATEWAY_LOG_FORMAT="json")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(port), cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    lines: list[dict] = []
    listening, draining, drained = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def read() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            lines.append(line)
            if line.get("event") == "gateway listening":
                listening.set()
            if str(line.get("event", "")).startswith("draining:"):
                draining.set()
            if line.get("event") == "drained: every call has ended":
                drained.set()

    reader = asyncio.create_task(read())
    try:
        await asyncio.wait_for(listening.wait(), 30)
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
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(draining.wait(), 10)
        assert await _readyz(base) == (503, {"status": "draining", "active_calls": 2})
        with pytest.raises(CallRejected):  # no new stream
            await place_call(base.replace("http", "ws") + "/twilio/media", [Hangup()], auth_token=TOKEN)
        form = {"CallSid": "CAnew", "To": "+15555550100"}
        async with aiohttp.ClientSession() as http:
            response = await http.post(base + "/twilio/voice", data=form, headers={
                "X-Twilio-Signature": twilio_signature(TOKEN, base + "/twilio/voice", form)})
            twiml = await response.text()
        assert "<Say>" in twiml and "<Connect>" not in twiml  # a polite refusal
        reports = await asyncio.gather(*calls)
        ended_at = time.monotonic()
        for report in reports:  # none was cut
            assert report.closed_by == "caller" and report.played_bytes > 8000 and report.violations == 0
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        assert drained.is_set() and time.monotonic() >= ended_at
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await reader
    summaries = [line for line in lines if line.get("event") == "call ended"]
    assert len(summaries) == 2 and {s["end_reason"] for s in summaries} == {"caller_hung_up"}


async def test_beyond_max_calls_new_calls_are_refused_politely() -> None:
    sim = await start_simulator(SimulatorSettings(audio_speed=8.0))
    config = parse_config(f"""
voicelive: {{endpoint: "{sim.endpoint}"}}
twilio: {{auth_token: "${{T}}"}}
gateway: {{max_calls: 1}}
profiles: {{main: {{model: gpt-realtime}}}}
""", env={"T": TOKEN})
    runner = web.AppRunner(create_app(config))
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
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
        await sim.close()


async def test_calls_still_running_when_the_drain_times_out_are_cut_by_the_gateway() -> None:
    from gateway import metrics
    from gateway.app import drain

    sim = await start_simulator(SimulatorSettings(audio_speed=8.0))
    config = parse_config(f"""
voicelive: {{endpoint: "{sim.endpoint}"}}
twilio: {{auth_token: "${{T}}"}}
profiles: {{main: {{model: gpt-realtime}}}}
""", env={"T": TOKEN})
    ready = asyncio.Event()
    app = create_app(config, observer_factory=lambda _call: (
        lambda event, _t, _f: ready.set() if event == "session.ready" else None))
    runner = web.AppRunner(app)
    await runner.setup()
    ends = ("drain_timeout", "phone_socket_closed", "caller_hung_up")
    before = {end: metrics.CALLS.value("twilio", end) for end in ends}
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        call = asyncio.create_task(place_call(base + "/twilio/voice", [Silence(30_000), Hangup()], auth_token=TOKEN))
        await asyncio.wait_for(ready.wait(), 10)
        assert await drain(app, 0.2) is False  # the caller is still talking when the drain runs out
        report = await asyncio.wait_for(call, 10)
    finally:
        await runner.cleanup()
        await sim.close()
    assert report.closed_by == "gateway" and report.close_code == 1011
    after = {end: metrics.CALLS.value("twilio", end) for end in ends}
    assert after == {**before, "drain_timeout": before["drain_timeout"] + 1}  # not counted as the caller's end


async def test_a_stream_that_starts_after_sigterm_is_refused_like_a_new_call() -> None:
    from gateway import metrics

    sim = await start_simulator(SimulatorSettings(audio_speed=8.0))
    config = parse_config(f"""
voicelive: {{endpoint: "{sim.endpoint}"}}
twilio: {{auth_token: "${{T}}"}}
profiles: {{main: {{model: gpt-realtime}}}}
""", env={"T": TOKEN})
    app = create_app(config)
    runner = web.AppRunner(app)
    await runner.setup()
    before = metrics.CALLS.value("twilio", "refused (draining)")
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        ws_url = base.replace("http", "ws") + "/twilio/media"
        token = app[CONTEXT].tokens.issue({"call": "CAlate", "profile": "main"}, 60, carrier="twilio")
        async with aiohttp.ClientSession() as http, http.ws_connect(
                ws_url, headers={"X-Twilio-Signature": twilio_signature(TOKEN, ws_url)}) as ws:
            app[CONTEXT].draining = True  # SIGTERM arrives between the upgrade and the start message
            await ws.send_str(json.dumps({"event": "start", "start": {
                "streamSid": "MZlate", "callSid": "CAlate", "customParameters": {"token": token},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
            closing = await ws.receive()
        url = base + "/twilio/stream-ended"
        form = {"CallSid": "CAlate", "CallStatus": "in-progress"}
        async with aiohttp.ClientSession() as http, http.post(
                url, data=form, headers={"X-Twilio-Signature": twilio_signature(TOKEN, url, form)}) as response:
            twiml = await response.text()
    finally:
        await runner.cleanup()
        await sim.close()
    assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1013
    assert sim.state.sessions == []  # no Voice Live session was opened for it
    assert metrics.CALLS.value("twilio", "refused (draining)") == before + 1
    assert "<Say>" in twiml and "<Hangup/>" in twiml  # the caller hears the apology

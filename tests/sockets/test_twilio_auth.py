"""Twilio authentication on the gateway's routes, checked with Twilio's own RequestValidator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from twilio.request_validator import RequestValidator
from yarl import URL

from gateway import metrics
from gateway.app import create_app
from gateway.bridge import CONTEXT
from gateway.carriers.twilio.phone import place_call
from gateway.config import parse_config
from gateway.simulator import RunningSimulator, SimulatorSettings, start_simulator
from gateway.softphone import CallRejected, Hangup, Silence
from tests.sockets.loopback import LogCapture, serve

TOKEN = "twilio-auth-token-for-tests"
PUBLIC = "https://voice.example.com"


@dataclass
class Gateway:
    sim: RunningSimulator
    app: web.Application
    base: str


async def _gateway(twilio: str, gateway: str = "") -> tuple[Gateway, web.AppRunner]:
    sim = await start_simulator(SimulatorSettings(audio_speed=8.0))
    config = parse_config(f"""
voicelive: {{endpoint: "{sim.endpoint}"}}
twilio: {twilio}
gateway: {gateway or "{}"}
profiles: {{main: {{model: gpt-realtime}}}}
""", env={"TOKEN": TOKEN})
    runner, base = await serve(create_app(config))
    return Gateway(sim, runner.app, base), runner


@pytest.fixture
async def behind_proxy() -> AsyncIterator[Gateway]:
    """A gateway whose public address (behind a TLS-terminating proxy) is https://voice.example.com."""
    gw, runner = await _gateway("{auth_token: '${TOKEN}'}", f"{{public_url: '{PUBLIC}'}}")
    try:
        yield gw
    finally:
        await runner.cleanup()
        await gw.sim.close()


FORM = {"CallSid": "CA0123", "AccountSid": "AC1", "From": "+15555550199", "To": "+15555550100",
        "CallStatus": "ringing", "Direction": "inbound"}


async def test_a_webhook_signed_by_twilio_for_the_public_url_is_answered(behind_proxy: Gateway) -> None:
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + "/twilio/voice", FORM)
    async with aiohttp.ClientSession() as http:
        ok = await http.post(behind_proxy.base + "/twilio/voice", data=FORM, headers={"X-Twilio-Signature": signature})
        assert ok.status == 200
        twiml = await ok.text()
        assert 'url="wss://voice.example.com/twilio/media"' in twiml and 'name="token"' in twiml
        for headers, form in [
            ({}, FORM),  # unsigned
            ({"X-Twilio-Signature": signature}, {**FORM, "To": "+15555550101"}),  # tampered
            ({"X-Twilio-Signature": RequestValidator("other").compute_signature(PUBLIC + "/twilio/voice", FORM)},
             FORM),  # another account's token
            ({"X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(
                behind_proxy.base + "/twilio/voice", FORM)}, FORM),  # signed for the internal URL
        ]:
            refused = await http.post(behind_proxy.base + "/twilio/voice", data=form, headers=headers)
            assert refused.status == 403


async def test_the_media_upgrade_must_be_signed(behind_proxy: Gateway) -> None:
    before = metrics.AUTH_REJECTIONS.value("twilio", "media", "bad or missing X-Twilio-Signature")
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await http.ws_connect(behind_proxy.base + "/twilio/media")
        assert err.value.status == 403
    assert behind_proxy.sim.state.sessions == []
    after = metrics.AUTH_REJECTIONS.value("twilio", "media", "bad or missing X-Twilio-Signature")
    assert after == before + 1


async def _start(gw: Gateway, ws: aiohttp.ClientWebSocketResponse, call_sid: str, token: str | None) -> None:
    params = {"profile": "main", **({"token": token} if token is not None else {})}
    await ws.send_str(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    await ws.send_str(json.dumps({"event": "start", "sequenceNumber": "1", "start": {
        "streamSid": "MZ1", "callSid": call_sid, "accountSid": "AC1", "tracks": ["inbound"],
        "customParameters": params,
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))


@pytest.mark.parametrize("case", ["missing", "forged", "another call"])
async def test_the_stream_needs_the_call_token_from_the_webhook(behind_proxy: Gateway, case: str) -> None:
    signature = RequestValidator(TOKEN).compute_signature("wss://voice.example.com/twilio/media", {})
    tokens = behind_proxy.app[CONTEXT].tokens
    token = {"missing": None, "forged": "eyJjYWxsIjoiQ0EwMTIzIn0.AAAA",
             "another call": tokens.issue({"call": "CA-other", "profile": "main"}, 60)}[case]
    async with aiohttp.ClientSession() as http, http.ws_connect(
            behind_proxy.base + "/twilio/media", headers={"X-Twilio-Signature": signature}) as ws:
        await _start(behind_proxy, ws, "CA0123", token)
        msg = await ws.receive()
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1008
    assert behind_proxy.sim.state.sessions == []


async def test_a_call_signed_end_to_end_goes_through(behind_proxy: Gateway) -> None:
    # the softphone signs with the public URLs, as Twilio would reach them through the proxy
    twiml = await _webhook(behind_proxy)
    assert "wss://voice.example.com" in twiml
    signature = RequestValidator(TOKEN).compute_signature("wss://voice.example.com/twilio/media", {})
    token = twiml.split('name="token" value="')[1].split('"')[0]
    async with aiohttp.ClientSession() as http, http.ws_connect(
            behind_proxy.base + "/twilio/media", headers={"X-Twilio-Signature": signature}) as ws:
        await _start(behind_proxy, ws, "CA0123", token)
        session = await behind_proxy.sim.state.wait_for_session(0)
        await ws.send_str(json.dumps({"event": "stop", "stop": {"callSid": "CA0123"}}))
        await ws.receive()
    assert session.query.get("model") == "gpt-realtime"


async def _webhook(gw: Gateway) -> str:
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + "/twilio/voice", FORM)
    async with aiohttp.ClientSession() as http:
        response = await http.post(gw.base + "/twilio/voice", data=FORM, headers={"X-Twilio-Signature": signature})
        return await response.text()


async def test_without_an_auth_token_twilio_is_refused_unless_insecure_mode_says_so(log_capture: LogCapture) -> None:
    with log_capture("info") as buf:
        gw, runner = await _gateway("{}")
        try:
            with pytest.raises(CallRejected):
                await place_call(gw.base + "/twilio/voice", [Hangup()])
        finally:
            await runner.cleanup()
            await gw.sim.close()
        assert "TWILIO_AUTH_TOKEN is not set: Twilio requests are refused" in buf.getvalue()
        gw, runner = await _gateway("{}", "{insecure_dev_mode: true}")
        try:
            report = await place_call(gw.base + "/twilio/voice", [Silence(200), Hangup()])
        finally:
            await runner.cleanup()
            await gw.sim.close()
        assert report.closed_by == "caller"
        assert "INSECURE DEVELOPMENT MODE" in buf.getvalue()


@pytest.mark.parametrize("query", ["name=caller%20one", "sum=1+2", "city=caf%C3%A9",
                                   "name=a%20b&sum=1+2&city=caf%C3%A9&amp=%26%3D"])
async def test_a_webhook_url_with_an_encoded_query_is_checked_as_twilio_signed_it(behind_proxy: Gateway,
                                                                                   query: str) -> None:
    validator = RequestValidator(TOKEN)
    async with aiohttp.ClientSession() as http:
        for path in ("/twilio/voice", "/twilio/stream-ended"):
            signature = validator.compute_signature(f"{PUBLIC}{path}?{query}", FORM)
            url = URL(f"{behind_proxy.base}{path}?{query}", encoded=True)  # sent exactly as written
            assert (await http.post(url, data=FORM, headers={"X-Twilio-Signature": signature})).status == 200, path
            # the signature covers the query: another one is refused
            tampered = URL(f"{behind_proxy.base}{path}?{query}x", encoded=True)
            assert (await http.post(tampered, data=FORM, headers={"X-Twilio-Signature": signature})).status == 403


async def test_a_call_token_opens_one_stream_once(behind_proxy: Gateway) -> None:
    twiml = await _webhook(behind_proxy)
    token = twiml.split('name="token" value="')[1].split('"')[0]
    signature = RequestValidator(TOKEN).compute_signature("wss://voice.example.com/twilio/media", {})
    headers = {"X-Twilio-Signature": signature}
    before = metrics.AUTH_REJECTIONS.value("twilio", "media", "call token already used")
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(behind_proxy.base + "/twilio/media", headers=headers) as ws:
            await _start(behind_proxy, ws, "CA0123", token)
            await behind_proxy.sim.state.wait_for_session(0)
            async with http.ws_connect(behind_proxy.base + "/twilio/media", headers=headers) as again:
                await _start(behind_proxy, again, "CA0123", token)  # while the call is live
                assert (await asyncio.wait_for(again.receive(), 10)).data == 1008
            await ws.send_str(json.dumps({"event": "stop", "stop": {"callSid": "CA0123"}}))
            while (await asyncio.wait_for(ws.receive(), 10)).type == aiohttp.WSMsgType.TEXT:
                pass
        await asyncio.wait_for(behind_proxy.app[CONTEXT].wait_idle(), 10)
        # the call is over: its start, replayed, opens nothing
        async with http.ws_connect(behind_proxy.base + "/twilio/media", headers=headers) as replay:
            await _start(behind_proxy, replay, "CA0123", token)
            msg = await asyncio.wait_for(replay.receive(), 10)
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1008
    assert len(behind_proxy.sim.state.sessions) == 1
    assert metrics.AUTH_REJECTIONS.value("twilio", "media", "call token already used") == before + 2

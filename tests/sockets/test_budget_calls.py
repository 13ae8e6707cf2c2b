"""Calls within Voice Live's connection budget, over real sockets: a call that finds no connection
left hears the profile's busy message (from the webhook, or after its media opened, with hold audio
while it waits), and with GATEWAY_REDIS_URL two gateways share one budget through a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

from gateway import metrics
from gateway.app import REDIS_URL_ENV, create_app
from gateway.bridge import CONTEXT, GatewayContext
from gateway.carriers.twilio.phone import new_sid, place_call, twilio_signature
from gateway.config import parse_config
from gateway.simulator import RunningSimulator, SimulatorSettings, start_simulator
from gateway.softphone import Hangup, Silence, WaitForBot
from gateway.voicelive.budget import LocalBudget
from tests.sockets.loopback import serve
from tests.sockets.redis_server import running_redis

TWILIO_TOKEN = "test-twilio-auth-token-1234"
BUSY = "All our lines are busy, please call back in a minute."
CONFIG = """
voicelive:
  endpoint: ${EP}
  connections_per_minute: ${PER_MINUTE:-1}
  prewarm: ${PREWARM:-false}
twilio:
  auth_token: ${TWILIO_TOKEN}
profiles:
  main:
    model: gpt-realtime
    voice: alloy
    greeting: {text: "Hello."}
    busy:
      message: "BUSY"
      wait_s: ${WAIT:-0}
routes:
  default: main
""".replace("BUSY", BUSY)


@dataclass
class Gateway:
    sim: RunningSimulator
    app: web.Application
    base: str

    @property
    def ctx(self) -> GatewayContext:
        return self.app[CONTEXT]

    async def post(self, path: str, form: dict[str, str]) -> str:
        url = self.base + path
        async with aiohttp.ClientSession() as http, http.post(
                url, data=form, headers={"X-Twilio-Signature": twilio_signature(TWILIO_TOKEN, url, form)}) as resp:
            assert resp.status == 200
            return await resp.text()

    async def media_only(self, steps: list[Any]) -> Any:
        """A stream whose webhook came to another replica (its call token is valid here too)."""
        call_sid = new_sid("CA")
        token = self.ctx.tokens.issue({"call": call_sid, "profile": "main"}, 60, carrier="twilio")
        return await place_call(self.base.replace("http://", "ws://") + "/twilio/media", steps,
                                params={"token": token}, call_sid=call_sid, auth_token=TWILIO_TOKEN)


@asynccontextmanager
async def gateway(sim: RunningSimulator | None = None, **env: str) -> AsyncIterator[Gateway]:
    own = sim is None
    sim = sim or await start_simulator(SimulatorSettings(audio_speed=8.0))
    config = parse_config(CONFIG, env={"EP": sim.endpoint, "TWILIO_TOKEN": TWILIO_TOKEN, **env})
    app = create_app(config)
    runner, base = await serve(app)
    try:
        yield Gateway(sim, app, base)
    finally:
        await runner.cleanup()
        if own:
            await sim.close()


async def test_a_call_announced_when_no_connection_is_left_hears_the_busy_message() -> None:
    async with gateway(PREWARM="true") as gw:
        refused = metrics.CALLS.value("twilio", "refused (no budget)")
        first = await place_call(gw.base + "/twilio/voice", [WaitForBot(heard_ms=200), Hangup()],
                                 auth_token=TWILIO_TOKEN)
        assert first.played_bytes > 0
        twiml = await gw.post("/twilio/voice", {"CallSid": new_sid("CA"), "To": "+15555550100"})
        assert f"<Say>{BUSY}</Say>" in twiml and "<Connect" not in twiml
        assert metrics.CALLS.value("twilio", "refused (no budget)") == refused + 1
        assert len(gw.sim.state.sessions) == 1  # no connect beyond the budget


async def test_a_stream_that_finds_no_connection_ends_and_the_caller_hears_the_busy_message() -> None:
    async with gateway() as gw:
        busy = metrics.VOICELIVE_BUSY.value("call")
        await gw.media_only([WaitForBot(heard_ms=200), Hangup()])  # spends the one connect of this minute
        report = await gw.media_only([Silence(3_000), Hangup()])
        assert report.closed_by == "gateway" and report.duration_ms < 2_000
        twiml = await gw.post("/twilio/stream-ended", {"CallSid": report.call_sid})
        assert f"<Say>{BUSY}</Say>" in twiml  # the busy message, not the apology
        assert metrics.VOICELIVE_BUSY.value("call") == busy + 1
        assert len(gw.sim.state.sessions) == 1


async def test_a_profile_that_waits_plays_hold_audio_until_a_connection_frees_up() -> None:
    async with gateway(WAIT="3") as gw:
        gw.ctx.pool.budget = LocalBudget({"default": 1}, window_s=1.0)  # a "minute" short enough to wait for
        await gw.media_only([WaitForBot(heard_ms=100), Hangup()])
        report = await gw.media_only([Silence(2_500), Hangup()])
        # the caller heard the hold tone, then it was cleared for the bot, whose session opened late
        assert report.closed_by == "caller" and report.clears >= 1 and report.played_bytes > 0
        assert len(gw.sim.state.sessions) == 2
        first_bot_audio = next(t for t, kind, _ in report.events if kind == "bot_audio_start")
        clear = next(t for t, kind, _ in report.events if kind == "clear")
        assert first_bot_audio < clear  # the hold tone came first


async def test_a_wait_that_cannot_end_in_time_is_not_waited_out() -> None:
    async with gateway(WAIT="0.3") as gw:  # the minute's connect frees only in ~60 s
        await gw.media_only([WaitForBot(heard_ms=100), Hangup()])
        report = await gw.media_only([Silence(3_000), Hangup()])
        assert report.closed_by == "gateway" and report.received_bytes == 0 and report.duration_ms < 2_000
        assert f"<Say>{BUSY}</Say>" in await gw.post("/twilio/stream-ended", {"CallSid": report.call_sid})


async def test_two_gateways_share_one_budget_through_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    sim = await start_simulator(SimulatorSettings(audio_speed=8.0))
    try:
        with running_redis() as redis_server:
            monkeypatch.setenv(REDIS_URL_ENV, redis_server.url)
            async with gateway(sim, PER_MINUTE="2") as a, gateway(sim, PER_MINUTE="2") as b:
                steps = [WaitForBot(heard_ms=200), Hangup()]
                assert (await a.media_only(steps)).played_bytes > 0
                assert (await b.media_only(steps)).played_bytes > 0
                third = await a.media_only([Silence(2_000), Hangup()])  # a has taken 1 of its 2: Redis says 0 left
                assert third.closed_by == "gateway"
                assert f"<Say>{BUSY}</Say>" in await a.post("/twilio/stream-ended", {"CallSid": third.call_sid})
                assert len(sim.state.sessions) == 2
                client = Redis.from_url(redis_server.url)
                try:
                    keys = [k.decode() async for k in client.scan_iter("gateway:voicelive:*")]
                    assert "gateway:voicelive:{default}:connects" in keys
                    assert await client.zcard("gateway:voicelive:{default}:connects") == 2
                finally:
                    await client.aclose()
    finally:
        await sim.close()


async def test_without_redis_each_gateway_keeps_its_own_share() -> None:
    sim = await start_simulator(SimulatorSettings(audio_speed=8.0))
    try:
        async with gateway(sim, PER_MINUTE="1") as a, gateway(sim, PER_MINUTE="1") as b:
            steps = [WaitForBot(heard_ms=200), Hangup()]
            assert (await a.media_only(steps)).played_bytes > 0
            assert (await b.media_only(steps)).played_bytes > 0  # its own budget (one replica each)
            assert (await a.media_only([Silence(2_000), Hangup()])).closed_by == "gateway"
            assert len(sim.state.sessions) == 2
    finally:
        await sim.close()

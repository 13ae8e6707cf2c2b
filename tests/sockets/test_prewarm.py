"""Pre-warmed Voice Live sessions over real sockets: opened at the voice webhook, taken by the call's
media socket, or closed unused; against a simulator that takes 800 ms to set a session up."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway import metrics
from gateway.app import create_app
from gateway.bridge import CONTEXT, GatewayContext
from gateway.carriers.twilio.phone import new_sid, parse_twiml, place_call, twilio_signature
from gateway.config import parse_config
from gateway.replay import load_fixture, run
from gateway.simulator import RunningSimulator, SimulatorSettings, start_simulator
from gateway.softphone import Dtmf, Hangup, Silence, WaitForBot
from tests.sockets.loopback import serve

SETUP_MS = 800
CONFIG = """
voicelive:
  endpoint: ${EP}
  prewarm: ${PREWARM}
  prewarm_timeout_s: ${WARM_TIMEOUT:-10}
twilio:
  auth_token: ${TWILIO_TOKEN}
profiles:
  main:
    model: gpt-realtime
    voice: alloy
    greeting: {text: "Hello, thanks for calling."}
  other:
    model: gpt-realtime
    voice: marin
    greeting: {text: "Hello from the other line."}
routes:
  default: main
"""
TWILIO_TOKEN = "test-twilio-auth-token-1234"


@dataclass
class Rig:
    sim: RunningSimulator
    app: web.Application
    base: str
    greeted: asyncio.Event  # the simulator finished a response (the greeting)

    @property
    def ctx(self) -> GatewayContext:
        return self.app[CONTEXT]

    async def webhook(self, call_sid: str) -> dict[str, str]:
        """Post the voice webhook like Twilio: the stream's parameters (with its call token)."""
        url = self.base + "/twilio/voice"
        form = {"CallSid": call_sid, "AccountSid": new_sid("AC"), "To": "+15555550100", "From": "+15555550199"}
        async with aiohttp.ClientSession() as http, http.post(
                url, data=form, headers={"X-Twilio-Signature": twilio_signature(TWILIO_TOKEN, url, form)}) as resp:
            assert resp.status == 200
            _, params = parse_twiml(await resp.read(), url)
        return params

    async def call(self, call_sid: str, params: dict[str, str], steps: list[Any]) -> tuple[Any, dict[str, float]]:
        """The media socket of a call (no webhook): its report, and when things happened (ms from the
        socket's opening, which sends ``start`` at once)."""
        moments: dict[str, float] = {}

        def seen(t: float, kind: str, _fields: Any) -> None:
            moments.setdefault(kind, t)

        ws_url = self.base.replace("http://", "ws://") + "/twilio/media"
        report = await place_call(ws_url, steps, params=params, call_sid=call_sid, auth_token=TWILIO_TOKEN,
                                  on_event=seen)
        return report, moments


@pytest.fixture
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    env: dict[str, str] = getattr(request, "param", {})
    greeted = asyncio.Event()

    def observe(event: str, _fields: dict[str, Any]) -> None:
        if event == "response.done":
            greeted.set()

    sim = await start_simulator(SimulatorSettings(setup_delay_ms=SETUP_MS, audio_speed=8.0, observer=observe))
    config = parse_config(CONFIG, env={"EP": sim.endpoint, "TWILIO_TOKEN": TWILIO_TOKEN, "PREWARM": "true", **env})
    app = create_app(config)
    runner, base = await serve(app)
    try:
        yield Rig(sim, app, base, greeted)
    finally:
        await runner.cleanup()
        await sim.close()


def _warm(result: str) -> float:
    return metrics.WARM_SESSIONS.value(result)


async def test_a_call_announced_ahead_hears_its_greeting_without_waiting_for_the_session(rig: Rig) -> None:
    used, opened = _warm("used"), _warm("opened")
    call_sid = new_sid("CA")
    params = await rig.webhook(call_sid)
    await asyncio.wait_for(rig.greeted.wait(), 10)  # the session is set up and its greeting ready
    report, moments = await rig.call(call_sid, params, [WaitForBot(heard_ms=500), Hangup()])
    # the greeting left the gateway as soon as the stream started, not one session set-up later
    assert moments["bot_audio_start"] < SETUP_MS / 2, moments
    assert report.violations == 0 and report.played_bytes > 0
    assert len(rig.sim.state.sessions) == 1  # the call used the session opened at the webhook
    session = rig.sim.state.sessions[0]
    assert [e["type"] for e in session.received].count("session.update") == 1
    assert [e["type"] for e in session.received].count("response.create") == 1  # the greeting, asked once
    assert (_warm("opened") - opened, _warm("used") - used) == (1, 1)
    await asyncio.wait_for(rig.ctx.wait_idle(), 10)


async def test_without_a_webhook_ahead_the_call_waits_for_the_set_up(rig: Rig) -> None:
    call_sid = new_sid("CA")
    token = rig.ctx.tokens.issue({"call": call_sid, "profile": "main"}, 60, carrier="twilio")
    report, moments = await rig.call(call_sid, {"token": token}, [WaitForBot(heard_ms=300), Hangup()])
    assert moments["bot_audio_start"] >= SETUP_MS, moments  # the session opened only at the stream's start
    assert report.played_bytes > 0 and len(rig.sim.state.sessions) == 1


async def test_caller_audio_sent_while_the_session_is_handed_over_reaches_voice_live(rig: Rig) -> None:
    call_sid = new_sid("CA")
    params = await rig.webhook(call_sid)  # the stream starts at once: the session is still being set up
    report, _ = await rig.call(call_sid, params, [Silence(1500), Hangup()])
    session = await asyncio.wait_for(rig.sim.state.wait_closed(0), 10)
    assert len(rig.sim.state.sessions) == 1
    assert session.appended == report.sent_payloads  # every caller frame, in order, none twice


# once set up (0.8 s), soon closed: 2 s leave a loaded machine's set-up room to finish first (else the open is
# cancelled before the simulator counts the session, and the test waits out wait_closed's 10 s)
@pytest.mark.parametrize("rig", [{"WARM_TIMEOUT": "2.0"}], indirect=True)
async def test_a_session_whose_call_never_comes_is_closed_and_counted(rig: Rig) -> None:
    wasted = _warm("wasted")
    call_sid = new_sid("CA")
    await rig.webhook(call_sid)
    assert len(rig.ctx.warm) == 1
    freed = asyncio.Event()  # set when the closed session is freed (reference counting, not a collection)
    weakref.finalize(rig.ctx.warm._sessions[("twilio", call_sid)], freed.set)
    gc.disable()  # (no collection first: a full one here could outlast the session's 2 s before it expires)
    try:
        session = await asyncio.wait_for(rig.sim.state.wait_closed(0), 10)
        assert session.close_code is not None
        assert _warm("wasted") - wasted == 1 and len(rig.ctx.warm) == 0
        await rig.ctx.warm.close()  # (waits for the session being closed)
        await asyncio.wait_for(freed.wait(), 10)
    finally:
        gc.enable()


async def test_a_call_that_is_not_the_one_announced_opens_its_own_session(rig: Rig) -> None:
    mismatch = _warm("mismatch")
    call_sid = new_sid("CA")
    params = await rig.webhook(call_sid)
    # the stream of that call comes with a token for another profile: not the session's call any more
    params["token"] = rig.ctx.tokens.issue({"call": call_sid, "profile": "other"}, 60, carrier="twilio")
    report, _ = await rig.call(call_sid, params, [WaitForBot(heard_ms=200), Hangup()])
    assert report.played_bytes > 0 and _warm("mismatch") - mismatch == 1
    await rig.ctx.warm.close()  # (waits for the sessions being closed: the warm one, cut while it opened)
    (session,) = rig.sim.state.sessions  # the call's own
    update = next(e for e in session.received if e["type"] == "session.update")
    assert update["session"]["voice"] == "marin"


@pytest.mark.parametrize("rig", [{"PREWARM": "false"}], indirect=True)
async def test_prewarm_off_opens_nothing_at_the_webhook(rig: Rig) -> None:
    call_sid = new_sid("CA")
    params = await rig.webhook(call_sid)
    assert len(rig.ctx.warm) == 0 and rig.sim.state.sessions == []
    report, _ = await rig.call(call_sid, params, [WaitForBot(heard_ms=200), Hangup()])
    assert report.played_bytes > 0 and len(rig.sim.state.sessions) == 1


async def test_a_caller_who_hangs_up_while_the_session_opens_leaves_nothing_open(rig: Rig) -> None:
    call_sid = new_sid("CA")
    params = await rig.webhook(call_sid)
    wasted = _warm("wasted")
    await rig.call(call_sid, params, [Silence(100), Hangup()])  # gone before the set-up (0.8 s) ends
    await asyncio.wait_for(rig.ctx.wait_idle(), 10)
    assert _warm("wasted") - wasted == 1 and len(rig.ctx.warm) == 0
    await rig.ctx.warm.close()  # (waits for the sessions being closed)
    assert rig.sim.state.active == []


async def test_a_call_that_took_its_session_does_not_keep_what_was_replayed(rig: Rig) -> None:
    call_sid = new_sid("CA")
    params = await rig.webhook(call_sid)
    await asyncio.wait_for(rig.greeted.wait(), 10)  # the greeting's audio waits in the warm session
    kept = weakref.ref(rig.ctx.warm._sessions[("twilio", call_sid)])
    heard = asyncio.Event()

    def seen(_t: float, kind: str, _fields: Any) -> None:
        if kind == "bot_audio_start":
            heard.set()

    ws_url = rig.base.replace("http://", "ws://") + "/twilio/media"
    call = asyncio.create_task(place_call(ws_url, [WaitForBot(heard_ms=300), Silence(1000), Hangup()], params=params,
                                          call_sid=call_sid, auth_token=TWILIO_TOKEN, on_event=seen))
    await asyncio.wait_for(heard.wait(), 10)  # the session was handed over
    gc.collect()
    assert list(rig.ctx.calls) == [call_sid]  # the call goes on, and no longer holds what it replayed
    assert kept() is None
    report = await call
    assert report.played_bytes > 0


@pytest.mark.parametrize("ready", [True, False], ids=["greeting-waiting", "still-opening"])
async def test_a_call_that_took_its_session_records_a_fixture_that_replays(tmp_path: Path, ready: bool) -> None:
    """What the warm session exchanged is in the call's recording as if it happened at the call's
    start: the replay computes exactly what the live call sent (keys pressed and caller audio while
    the session was handed over included)."""
    greeted = asyncio.Event()

    def observe(event: str, _fields: dict[str, Any]) -> None:
        if event == "response.done":
            greeted.set()

    sim = await start_simulator(SimulatorSettings(setup_delay_ms=SETUP_MS, audio_speed=8.0, observer=observe))
    config = parse_config(CONFIG + f"recording: {{directory: \"{tmp_path}\"}}\n",
                          env={"EP": sim.endpoint, "TWILIO_TOKEN": TWILIO_TOKEN, "PREWARM": "true"})
    app = create_app(config)
    runner, base = await serve(app)
    try:
        rig = Rig(sim, app, base, greeted)
        used = _warm("used")
        call_sid = new_sid("CA")
        params = await rig.webhook(call_sid)
        if ready:
            await asyncio.wait_for(greeted.wait(), 10)
        report, _ = await rig.call(call_sid, params, [Dtmf("1"), Silence(1000 if ready else 1500), Hangup()])
        await asyncio.wait_for(rig.ctx.wait_idle(), 10)
    finally:
        await runner.cleanup()
        await sim.close()
    assert report.played_bytes > 0 and _warm("used") - used == 1
    (path,) = await asyncio.to_thread(lambda: list(tmp_path.glob("*.jsonl")))
    result = run(load_fixture(path))
    assert result.ok, f"{result.mismatch}\n{result.problems}"

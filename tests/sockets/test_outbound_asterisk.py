"""Calls the gateway places through Asterisk, over real sockets on 127.0.0.1: the API (or ``gateway
dial``) → a local stand-in for ARI (it checks the basic credentials and records the originate
request) → on originate, the stand-in plays the answered channel running the dialplan: it opens the
gateway's Asterisk media socket with the Asterisk softphone, with the URI parameters the dialplan's
``v()`` adds (``call``, ``to``, ``from``, ``amd=${AMDSTATUS}``) → the gateway and the Voice Live
simulator; each call's post-call record reaches a local webhook. Nothing leaves the machine."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.app import create_app
from gateway.audio import ASSETS, load_ulaw_8k
from gateway.bridge import CONTEXT
from gateway.call import spoken_text
from gateway.carriers.asterisk.auth import basic_header
from gateway.carriers.asterisk.outbound import WATCHES
from gateway.carriers.asterisk.phone import AsteriskCallReport, place_asterisk_call
from gateway.cli import build_parser
from gateway.config import parse_config
from gateway.dial import dial
from gateway.replay import load_fixture, run
from gateway.simulator import RunningSimulator, SimulatorSettings, start_simulator
from gateway.simulator.server import SimSession
from gateway.softphone import CallRejected, Hangup, Say, Silence, Step, WaitForBot
from tests.sockets.loopback import serve
from tests.sockets.test_records import SECRET as RECORDS_SECRET
from tests.sockets.test_records import Hook, Outcomes, verify

API_TOKEN = "operator-token-5150"
WS_USER, WS_PASSWORD = "pbx", "media-password-31"  # websocket_client.conf: Asterisk → the gateway
ARI_USER, ARI_PASSWORD = "gateway", "ari-password-77"  # ari.conf: the gateway → Asterisk
CALLEE, FROM = "+15555550123", "+15555550100"
HELLO = load_ulaw_8k(ASSETS / "caller_hours.wav")
GREETING = "Hello, this is the clinic calling for you."
VOICEMAIL = "This is the clinic: please call us back about your appointment."

CONFIG = """
voicelive: {{endpoint: "{endpoint}"}}
gateway: {{api_token: "${{API_TOKEN}}", max_calls: {max_calls}}}
asterisk: {{username: {ws_user}, password: "${{WS_PASSWORD}}", ari_url: "{ari}", ari_username: {ari_user},
            ari_password: "${{ARI_PASSWORD}}", outbound_endpoint: "PJSIP/{{digits}}@trunk",
            outbound_context: voicebot-out, ring_timeout_s: 25, ari_timeout_s: 5, ari_poll_s: 0.05}}
records: {{webhook: "{hook}", signing_secret: "${{RS}}", spool_directory: "{spool}", initial_backoff_s: 0.01,
          max_backoff_s: 0.02}}
profiles:
  reminder:
    model: gpt-realtime
    instructions: "Remind {{name}} of the appointment."
    turn_detection: {{type: server_vad, silence_duration_ms: 400}}
    greeting: "{greeting}"
    voicemail: {{message: "{voicemail}"}}
    outbound: {{greeting_after_s: 20, machine_wait_s: 20}}
routes:
  default: reminder
"""


@dataclass
class Rig:
    sim: RunningSimulator
    app: web.Application
    base: str
    hook: Hook
    outcomes: Outcomes
    originates: list[dict[str, Any]]  # what the ARI stand-in was asked (body and credentials)
    answers: list[asyncio.Task[AsteriskCallReport]]  # the answered channels' media sockets
    channels: dict[str, str]  # the stand-in's channels: id -> ARI state (absent: gone)
    reads: asyncio.Queue[tuple[str, int]]  # every GET /ari/channels/{id} the stand-in answered: (id, status)
    events: dict[str, list[tuple[str, float, dict[str, Any]]]] = field(default_factory=dict)
    seen: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)

    def seen_event(self, call_id: str, name: str) -> asyncio.Event:
        return self.seen.setdefault((call_id, name), asyncio.Event())

    async def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        async with aiohttp.ClientSession() as http, http.request(method, self.base + path, json=body,
                                                                  headers=headers) as reply:
            return reply.status, await reply.json(content_type=None)

    async def place(self) -> tuple[int, Any]:
        body = {"to": CALLEE, "from": FROM, "profile": "reminder", "carrier": "asterisk",
                "variables": {"name": "Ada"}}
        return await self.api("POST", "/v1/calls", body)

    async def session(self) -> SimSession:
        session = await asyncio.wait_for(self.sim.state.wait_closed(0), 10)
        await asyncio.wait_for(self.app[CONTEXT].wait_idle(), 10)
        return session


@contextlib.asynccontextmanager
async def asterisk_outbound_rig(tmp_path: Path, amd: str, steps: list[Step], ari_password: str = ARI_PASSWORD,
                                answer: bool = True, recording: bool = False, max_calls: int = 10,
                                ) -> AsyncIterator[Rig]:
    """The ARI stand-in answers an originate with the channel and, as the dialplan would once the
    callee picks up and ``AMD()`` said ``amd``, dials the gateway's media socket, running ``steps``
    (``answer``: False, the callee does not pick up: the channel stays ``Down`` until the test says)."""
    originates: list[dict[str, Any]] = []
    answers: list[asyncio.Task[AsteriskCallReport]] = []
    channels: dict[str, str] = {}
    reads: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
    gateway: dict[str, str] = {}

    def channel_of(channel_id: str) -> dict[str, Any]:
        return {"id": channel_id, "name": "PJSIP/trunk-00000001", "state": channels[channel_id]}

    async def read_channel(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != basic_header(ARI_USER, ARI_PASSWORD):
            return web.json_response({"message": "Authentication required"}, status=401)
        channel_id = request.match_info["id"]
        if channel_id not in channels:
            reads.put_nowait((channel_id, 404))
            return web.json_response({"message": "Channel not found"}, status=404)
        reads.put_nowait((channel_id, 200))
        return web.json_response(channel_of(channel_id))

    async def originate(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != basic_header(ARI_USER, ARI_PASSWORD):
            return web.json_response({"message": "Authentication required"}, status=401)
        body = await request.json()
        originates.append({"body": body, "query": dict(request.query)})
        variables = body["variables"]
        channels[body["channelId"]] = "Down"
        channel = channel_of(body["channelId"])
        if not answer:
            return web.json_response(channel)
        channels[body["channelId"]] = "Up"
        # the dialplan: Dial(WebSocket/voicebot/c(ulaw)v(call=${GATEWAY_CALL},to=...,from=...,amd=${AMDSTATUS}))
        # (the WebSocket channel is a channel of its own: its MEDIA_START names another channel id)
        answers.append(asyncio.create_task(place_asterisk_call(
            gateway["media"], steps, to=variables["GATEWAY_TO"], from_=variables["GATEWAY_FROM"],
            params={"call": variables["GATEWAY_CALL"], "amd": amd if variables["GATEWAY_AMD"] == "yes" else ""},
            username=WS_USER, password=WS_PASSWORD, channel_id="1761245700.42")))
        return web.json_response(channel)

    fake = web.Application()
    fake.router.add_post("/ari/channels", originate)
    fake.router.add_get("/ari/channels/{id}", read_channel)
    fake_runner, fake_base = await serve(fake)
    hook = Hook()
    hook_runner, hook_url = await hook.serve()
    sim = await start_simulator(SimulatorSettings(audio_speed=8.0))
    text = CONFIG.format(endpoint=sim.endpoint, ws_user=WS_USER, ari=fake_base + "/", ari_user=ARI_USER,
                         hook=hook_url, spool=tmp_path / "spool", greeting=GREETING, voicemail=VOICEMAIL,
                         max_calls=max_calls)
    if recording:
        text += f'recording: {{directory: "{tmp_path / "recordings"}"}}\n'
    config = parse_config(text, env={"API_TOKEN": API_TOKEN, "WS_PASSWORD": WS_PASSWORD,
                                     "ARI_PASSWORD": ari_password, "RS": RECORDS_SECRET})
    outcomes = Outcomes()
    rig: Rig

    def observer_for(call_id: str) -> Any:
        def observe(event: str, t: float, fields: dict[str, Any]) -> None:
            rig.events.setdefault(call_id, []).append((event, t, fields))
            rig.seen_event(call_id, event).set()
        return observe

    runner, base = await serve(create_app(config, observer_factory=observer_for, record_outcomes=outcomes))
    gateway["media"] = base.replace("http://", "ws://") + "/asterisk/media"
    rig = Rig(sim, runner.app, base, hook, outcomes, originates, answers, channels, reads)
    try:
        yield rig
    finally:
        for task in answers:
            task.cancel()
        await asyncio.gather(*answers, return_exceptions=True)
        await runner.cleanup()
        await sim.close()
        await hook_runner.cleanup()
        await fake_runner.cleanup()


def client_events(session: SimSession, kind: str) -> list[dict[str, Any]]:
    return [e for e in session.received if e.get("type") == kind]


def the_record(rig: Rig, call_id: str) -> dict[str, Any]:
    (delivered,) = [(headers, body) for headers, body, status in rig.hook.posts if status == 200]
    verify(*delivered)
    record = json.loads(delivered[1])
    assert record["call_id"] == call_id
    return record


async def test_a_person_gets_the_greeting_only_after_they_spoke(tmp_path: Path) -> None:
    async with asterisk_outbound_rig(tmp_path, "HUMAN", [Say(HELLO, "hello?"), WaitForBot(timeout_s=20),
                                                         Hangup()]) as rig:
        status, placed = await rig.place()
        assert status == 201, placed
        call_id = placed["id"]
        assert (placed["state"], placed["carrier"], placed["answered_by"]) == ("queued", "asterisk", None)
        (originate,) = rig.originates
        body = originate["body"]
        assert originate["query"] == {}  # every parameter in the JSON body
        assert body == {"endpoint": "PJSIP/15555550123@trunk", "context": "voicebot-out", "extension": "s",
                        "priority": 1, "callerId": FROM, "timeout": 25, "channelId": call_id,
                        "variables": {"GATEWAY_CALL": call_id, "GATEWAY_TO": CALLEE, "GATEWAY_FROM": FROM,
                                      "GATEWAY_AMD": "yes"}}
        report = await asyncio.wait_for(rig.answers[0], 30)
        session = await rig.session()
        assert report.closed_by == "caller" and report.violations == 0 and report.played_bytes > 0
        assert [spoken_text(e) for e in client_events(session, "response.create")] == [GREETING]
        assert session.received[0]["session"]["instructions"] == "Remind Ada of the appointment."
        events = rig.events[call_id]  # the call is the placed one, not the WebSocket channel's
        stopped = next(t for e, t, _ in events if e == "caller.speech_stopped")
        opening = next((t, f) for e, t, f in events if e == "call.opening")
        # greeting_after_s is 20: the greeting came because they spoke, not after a pause
        assert opening[1] == {"decision": "greet"} and opening[0] >= stopped
        status, state = await rig.api("GET", f"/v1/calls/{call_id}")
        assert status == 200
        assert (state["state"], state["answered_by"], state["end_reason"]) == (
            "completed", "human", "phone_socket_closed")
        await rig.outcomes.wait("delivered")
        record = the_record(rig, call_id)
        assert (record["carrier"], record["direction"], record["answering_machine"]) == (
            "asterisk", "outbound", "human")
        assert (record["to"], record["from"]) == ("+*******0123", "+*******0100")


async def test_a_machine_gets_the_voicemail_message_verbatim_then_the_call_hangs_up(tmp_path: Path) -> None:
    async with asterisk_outbound_rig(tmp_path, "MACHINE", [Silence(30_000)], recording=True) as rig:
        out = io.StringIO()
        args = build_parser().parse_args(["dial", "--to", CALLEE, "--from", FROM, "--profile", "reminder",
                                          "--carrier", "asterisk", "--var", "name=Ada", "--url", rig.base,
                                          "--token", API_TOKEN])
        assert await dial(args, out) == 0
        call_id = rig.originates[0]["body"]["channelId"]
        assert out.getvalue() == f"call {call_id}: queued\n"
        report = await asyncio.wait_for(rig.answers[0], 30)
        session = await rig.session()
        assert report.closed_by == "gateway" and report.violations == 0
        assert report.played_bytes == sum(session.items_audio_bytes.values()) > 0  # heard in full
        assert [spoken_text(e) for e in client_events(session, "response.create")] == [VOICEMAIL]
        assert ("call.opening", {"decision": "voicemail"}) in [(e, f) for e, _, f in rig.events[call_id]]
        status, state = await rig.api("GET", f"/v1/calls/{call_id}")
        assert status == 200 and (state["state"], state["answered_by"], state["end_reason"]) == (
            "completed", "machine_end_silence", "voicemail_left")
        await rig.outcomes.wait("delivered")
        record = the_record(rig, call_id)
        assert (record["direction"], record["answering_machine"], record["end_reason"]) == (
            "outbound", "machine_end_silence", "voicemail_left")
    # the recorded call replays: the same opening, the same words; no password is in it
    (path,) = await asyncio.to_thread(lambda: list((tmp_path / "recordings").glob("*.jsonl")))
    text = await asyncio.to_thread(path.read_text)
    assert ARI_PASSWORD not in text and WS_PASSWORD not in text and API_TOKEN not in text
    fixture = await asyncio.to_thread(load_fixture, path)
    assert fixture.header["call_id"] == call_id
    replayed = run(fixture)
    assert replayed.ok, f"{replayed.mismatch}\n{replayed.problems}"


async def test_ari_refusing_the_credentials_is_a_clear_error_and_no_call(tmp_path: Path) -> None:
    async with asterisk_outbound_rig(tmp_path, "HUMAN", [Hangup()], ari_password="not-the-password") as rig:
        status, answer = await rig.place()
        assert status == 502 and "HTTP 401" in answer["error"] and "ASTERISK_ARI_PASSWORD" in answer["error"]
        assert "not-the-password" not in json.dumps(answer)
        assert rig.originates == [] and rig.answers == []
        assert rig.app[CONTEXT].outbound.calls == {}


async def test_a_call_nobody_answers_is_followed_through_ari_and_fails_once_its_channel_is_gone(
        tmp_path: Path) -> None:
    async with asterisk_outbound_rig(tmp_path, "HUMAN", [], answer=False) as rig:
        status, placed = await rig.place()
        assert status == 201 and placed["state"] == "queued"
        call_id = placed["id"]

        async def read_after(channel_state: str | None) -> None:
            """Change the channel, then wait until the gateway has read it and taken in what it read
            (it reads again only once it has)."""
            if channel_state is None:
                del rig.channels[call_id]
            else:
                rig.channels[call_id] = channel_state
            while not rig.reads.empty():  # (reads before the change)
                rig.reads.get_nowait()
            assert (await asyncio.wait_for(rig.reads.get(), 10))[0] == call_id  # the first to see the change
            if channel_state is not None:  # the gateway reads again once it took in what it read
                await asyncio.wait_for(rig.reads.get(), 10)

        await read_after("Ringing")
        assert (await rig.api("GET", f"/v1/calls/{call_id}"))[1]["state"] == "ringing"
        assert rig.app[CONTEXT].outbound.places_held() == 1  # it holds its place while it rings
        await read_after("Up")
        assert (await rig.api("GET", f"/v1/calls/{call_id}"))[1]["state"] == "answered"
        watch = rig.app[WATCHES][call_id]
        await read_after(None)  # hung up before its media (or busy, no answer): ARI no longer knows it
        await asyncio.wait_for(watch, 10)
        status, state = await rig.api("GET", f"/v1/calls/{call_id}")
        assert status == 200 and (state["state"], state["end_reason"]) == ("failed", "ended_before_media")
        assert rig.app[CONTEXT].outbound.places_held() == 0 and rig.answers == []
        assert call_id not in rig.app[WATCHES]


async def test_the_placed_call_s_media_takes_the_place_it_holds_when_the_gateway_is_full(tmp_path: Path) -> None:
    async with asterisk_outbound_rig(tmp_path, "HUMAN", [], answer=False, max_calls=1) as rig:
        status, placed = await rig.place()
        assert status == 201
        call_id = placed["id"]
        media = rig.base.replace("http://", "ws://") + "/asterisk/media"
        # an incoming call would take the placed call's place: refused
        with pytest.raises(CallRejected):
            await place_asterisk_call(media, [Hangup()], to=CALLEE, username=WS_USER, password=WS_PASSWORD)
        # the placed call's own socket, as the dialplan dials it once the callee picked up, is taken
        report = await place_asterisk_call(media, [Say(HELLO, "hello?"), WaitForBot(timeout_s=20), Hangup()],
                                           to=CALLEE, from_=FROM, params={"call": call_id, "amd": "HUMAN"},
                                           username=WS_USER, password=WS_PASSWORD, channel_id="1761245700.43")
        assert report.closed_by == "caller" and report.played_bytes > 0
        await rig.session()
        state = (await rig.api("GET", f"/v1/calls/{call_id}"))[1]
        assert (state["state"], state["answered_by"]) == ("completed", "human")
        # the call is over: a socket naming it again is refused, not a second call
        await rig.outcomes.wait("delivered")
        with pytest.raises(CallRejected):
            await place_asterisk_call(media, [Hangup()], params={"call": call_id, "amd": "HUMAN"},
                                      username=WS_USER, password=WS_PASSWORD)

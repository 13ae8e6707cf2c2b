"""Calls the gateway places on Telnyx, over real sockets on 127.0.0.1: the API → a local stand-in for
the TeXML REST API (it records the create request) → the test plays Telnyx: it posts the signed
answer webhook, connects the media stream with the Telnyx softphone and posts the signed
answering-machine result → the gateway and the Voice Live simulator. Nothing leaves the machine."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.app import create_app
from gateway.audio import ASSETS, load_ulaw_8k
from gateway.bridge import CONTEXT
from gateway.call import spoken_text
from gateway.carriers.telnyx.phone import TelnyxCallReport, new_call_control_id, place_telnyx_call, signed_headers
from gateway.config import parse_config
from gateway.replay import load_fixture, run
from gateway.simulator import RunningSimulator, SimulatorSettings, start_simulator
from gateway.simulator.server import SimSession
from gateway.softphone import Hangup, Say, Silence, WaitForBot
from tests.sockets.loopback import serve

API_KEY = "KEY0123456789-telnyx-api-key-for-tests"
API_TOKEN = "operator-token-7788"
ACCOUNT = "f5586561-8ff0-4291-a51b-c7dfe4139ff9"
APPLICATION = "1773070540731319841"
CALLEE, FROM = "+15555550123", "+15555550100"
HELLO = load_ulaw_8k(ASSETS / "caller_hours.wav")
GREETING = "Hello, this is the clinic calling for you."
VOICEMAIL = "This is the clinic: please call us back about your appointment."

CONFIG = """
voicelive: {{endpoint: "{endpoint}"}}
gateway: {{api_token: "${{API_TOKEN}}"}}
telnyx: {{public_key: "{public_key}", api_key: "${{TELNYX_API_KEY}}", api_base_url: "{api}",
          application_id: "${{TELNYX_APPLICATION_ID:-}}", account_sid: "{account}"}}
profiles:
  reminder:
    model: gpt-realtime
    instructions: "Remind {{name}} of the appointment."
    turn_detection: {{type: server_vad, silence_duration_ms: 400}}
    greeting: "{greeting}"
    voicemail: {{message: "{voicemail}"}}
    outbound: {{greeting_after_s: 0.2, machine_wait_s: 20}}
routes:
  default: reminder
"""


def public_key_text(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


@dataclass
class Rig:
    sim: RunningSimulator
    app: web.Application
    base: str
    key: Ed25519PrivateKey  # Telnyx's signing key; the gateway has its public key
    creates: list[dict[str, Any]]  # what the stand-in for the TeXML REST API was asked
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
        body = {"to": CALLEE, "from": FROM, "profile": "reminder", "variables": {"name": "Ada"}}
        return await self.api("POST", "/v1/calls", body)

    async def post_as_telnyx(self, url: str, form: dict[str, str], key: Ed25519PrivateKey | None = None,
                             signed: bool = True) -> int:
        """POST ``form`` to ``url`` the way Telnyx posts a TeXML callback (signed with ``key``, by
        default Telnyx's own): its HTTP status."""
        body = urlencode({"AccountSid": ACCOUNT, **form}).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   **(signed_headers(key or self.key, body) if signed else {})}
        async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as reply:
            return reply.status

    async def answer(self, sid: str, steps: list, webhook: dict[str, Any]) -> TelnyxCallReport:
        """Telnyx once the callee picked up: post the answer webhook, open the media stream."""
        def on_event(t: float, kind: str, fields: dict[str, Any]) -> None:
            if kind == "webhook":
                webhook.update(fields)

        return await place_telnyx_call(self.creates[-1]["json"]["Url"], steps, signing_key=self.key, call_sid=sid,
                                       account_sid=ACCOUNT, to=CALLEE, from_=FROM, direction="outbound-api",
                                       on_event=on_event)

    async def amd(self, sid: str, answered_by: str) -> int:
        form = {"CallSid": sid, "AnsweredBy": answered_by, "MachineDetectionDuration": "2500"}
        return await self.post_as_telnyx(self.creates[-1]["json"]["AsyncAmdStatusCallback"], form)

    async def session(self) -> SimSession:
        session = await asyncio.wait_for(self.sim.state.wait_closed(0), 10)
        await asyncio.wait_for(self.app[CONTEXT].wait_idle(), 10)
        return session


@contextlib.asynccontextmanager
async def outbound_rig(refuse: tuple[int, dict[str, Any]] | None = None, application_id: bool = True,
                       recording: Path | None = None) -> AsyncIterator[Rig]:
    """``refuse``: the stand-in answers every create request with this (status, JSON body)."""
    creates: list[dict[str, Any]] = []

    async def create_call(request: web.Request) -> web.Response:
        body = await request.json()
        creates.append({"path": request.path, "json": body, "authorization": request.headers.get("Authorization"),
                        "content_type": request.content_type})
        if refuse is not None:
            return web.json_response(refuse[1], status=refuse[0])
        return web.json_response({"call_sid": new_call_control_id(), "from": body.get("From"),
                                  "to": body.get("To"), "status": "queued"})

    fake = web.Application()
    fake.router.add_post("/v2/texml/Accounts/{account}/Calls", create_call)
    fake_runner, fake_base = await serve(fake)
    sim = await start_simulator(SimulatorSettings(audio_speed=8.0))
    key = Ed25519PrivateKey.generate()
    text = CONFIG.format(endpoint=sim.endpoint, public_key=public_key_text(key), api=fake_base, account=ACCOUNT,
                         greeting=GREETING, voicemail=VOICEMAIL)
    if recording is not None:
        text += f'recording: {{directory: "{recording}"}}\n'
    env = {"TELNYX_API_KEY": API_KEY, "API_TOKEN": API_TOKEN}
    if application_id:
        env["TELNYX_APPLICATION_ID"] = APPLICATION
    config = parse_config(text, env=env)
    rig: Rig

    def observer_for(call_id: str) -> Any:
        def observe(event: str, t: float, fields: dict[str, Any]) -> None:
            rig.events.setdefault(call_id, []).append((event, t, fields))
            rig.seen_event(call_id, event).set()
        return observe

    runner, base = await serve(create_app(config, observer_factory=observer_for))
    rig = Rig(sim, runner.app, base, key, creates)
    try:
        yield rig
    finally:
        await runner.cleanup()
        await sim.close()
        await fake_runner.cleanup()


def client_events(session: SimSession, kind: str) -> list[dict[str, Any]]:
    return [e for e in session.received if e.get("type") == kind]


async def test_a_machine_gets_the_voicemail_message_verbatim_then_the_call_hangs_up(tmp_path: Path) -> None:
    async with outbound_rig(recording=tmp_path) as rig:
        status, placed = await rig.place()
        assert status == 201, placed
        sid = placed["id"]
        assert sid.startswith("v3:") and placed["state"] == "queued" and placed["carrier"] == "telnyx"
        (create,) = rig.creates
        body = create["json"]
        assert create["path"] == f"/v2/texml/Accounts/{ACCOUNT}/Calls"
        assert create["authorization"] == f"Bearer {API_KEY}" and create["content_type"] == "application/json"
        assert (body["ApplicationSid"], body["To"], body["From"]) == (APPLICATION, CALLEE, FROM)
        assert body["Url"] == rig.base + "/telnyx/placed-answer" and body["UrlMethod"] == "POST"
        assert body["MachineDetection"] == "DetectMessageEnd" and body["AsyncAmd"] is True
        assert body["AsyncAmdStatusCallback"] == rig.base + "/telnyx/amd"
        assert body["StatusCallback"] == rig.base + "/telnyx/call-status"
        assert body["StatusCallbackEvent"].split() == ["initiated", "ringing", "answered", "completed"]
        assert await rig.post_as_telnyx(body["StatusCallback"], {"CallSid": sid, "CallStatus": "ringing"}) == 204
        assert (await rig.api("GET", f"/v1/calls/{sid}"))[1]["state"] == "ringing"

        ready, greeted = rig.seen_event(sid, "session.ready"), rig.seen_event(sid, "caller.speech_stopped")
        webhook: dict[str, Any] = {}
        phone = asyncio.create_task(rig.answer(sid, [Say(HELLO, "leave a message after the tone"),
                                                     Silence(30_000)], webhook))
        await asyncio.wait_for(ready.wait(), 10)
        assert webhook["stream_url"] == rig.base.replace("http", "ws") + "/telnyx/media"
        assert set(webhook["parameters"]) == {"profile", "to", "token"}  # the signed per-call token
        assert (await rig.api("GET", f"/v1/calls/{sid}"))[1]["state"] == "in-progress"
        await asyncio.wait_for(greeted.wait(), 20)  # the machine's greeting ended: its beep
        assert await rig.amd(sid, "machine_end_beep") == 204
        report = await asyncio.wait_for(phone, 30)
        session = await rig.session()
        assert report.closed_by == "gateway" and report.violations == 0
        assert report.played_bytes == sum(session.items_audio_bytes.values()) > 0  # heard in full
        assert report.after_stream == ["Hangup"]
        assert [spoken_text(e) for e in client_events(session, "response.create")] == [VOICEMAIL]
        assert session.received[0]["session"]["instructions"] == "Remind Ada of the appointment."
        status, state = await rig.api("GET", f"/v1/calls/{sid}")
        assert status == 200
        assert (state["state"], state["answered_by"], state["end_reason"]) == (
            "completed", "machine_end_beep", "voicemail_left")
    # the recorded call replays: the same opening, the same words; the API key is not in it
    (path,) = await asyncio.to_thread(lambda: list(tmp_path.glob("*.jsonl")))
    text = await asyncio.to_thread(path.read_text)
    assert API_KEY not in text
    fixture = await asyncio.to_thread(load_fixture, path)
    assert [r.get("result") for r in fixture.records if r.get("event") == "answered_by"] == ["machine_end_beep"]
    replayed = run(fixture)
    assert replayed.ok, f"{replayed.mismatch}\n{replayed.problems}"


async def test_a_person_gets_the_greeting_only_after_they_spoke() -> None:
    async with outbound_rig() as rig:
        status, placed = await rig.place()
        assert status == 201
        sid = placed["id"]
        spoke = rig.seen_event(sid, "caller.speech_stopped")
        phone = asyncio.create_task(rig.answer(sid, [Say(HELLO, "hello?"), WaitForBot(timeout_s=20), Hangup()], {}))
        await asyncio.wait_for(spoke.wait(), 20)
        # they said "hello?"; without the answering-machine result the bot stays silent
        assert [e for e, _, _ in rig.events[sid] if e in ("call.opening", "response.created")] == []
        assert await rig.amd(sid, "human") == 204
        report = await asyncio.wait_for(phone, 30)
        session = await rig.session()
        assert report.closed_by == "caller" and report.played_bytes > 0
        assert [spoken_text(e) for e in client_events(session, "response.create")] == [GREETING]
        events = rig.events[sid]
        stopped = next(t for e, t, _ in events if e == "caller.speech_stopped")
        opening = next((t, f) for e, t, f in events if e == "call.opening")
        assert opening[1] == {"decision": "greet"} and opening[0] >= stopped
        state = (await rig.api("GET", f"/v1/calls/{sid}"))[1]
        assert (state["state"], state["answered_by"]) == ("completed", "human")


async def test_the_callbacks_of_a_placed_call_need_telnyx_s_signature() -> None:
    async with outbound_rig() as rig:
        status, placed = await rig.place()
        assert status == 201
        sid = placed["id"]
        body = rig.creates[-1]["json"]
        forger = Ed25519PrivateKey.generate()
        callbacks = [(body["Url"], {"CallSid": sid, "CallStatus": "in-progress"}),
                     (body["AsyncAmdStatusCallback"], {"CallSid": sid, "AnsweredBy": "human"}),
                     (body["StatusCallback"], {"CallSid": sid, "CallStatus": "busy"})]
        for url, form in callbacks:
            assert await rig.post_as_telnyx(url, form, signed=False) == 403, url
            assert await rig.post_as_telnyx(url, form, key=forger) == 403, url
        state = (await rig.api("GET", f"/v1/calls/{sid}"))[1]
        assert (state["state"], state["answered_by"]) == ("queued", None)  # none of them was heard
        # signed, the same status callback ends the call with Telnyx's reason
        assert await rig.post_as_telnyx(body["StatusCallback"], {"CallSid": sid, "CallStatus": "busy"}) == 204
        state = (await rig.api("GET", f"/v1/calls/{sid}"))[1]
        assert (state["state"], state["end_reason"]) == ("failed", "busy")


async def test_an_error_from_the_texml_rest_api_is_a_clear_refusal() -> None:
    refused = {"errors": [{"code": "10015", "title": "Invalid value for To",
                           "detail": "The 'To' number is not valid."}]}
    async with outbound_rig(refuse=(422, refused)) as rig:
        status, answer = await rig.place()
        assert status == 400 and "HTTP 422" in answer["error"] and "The 'To' number is not valid." in answer["error"]
        assert len(rig.creates) == 1
    async with outbound_rig(refuse=(503, {"errors": [{"title": "Service unavailable"}]})) as rig:
        status, answer = await rig.place()
        assert status == 502 and "HTTP 503" in answer["error"] and "Service unavailable" in answer["error"]
    async with outbound_rig(refuse=(200, {"status": "queued"})) as rig:  # no call_sid: nothing to follow
        status, answer = await rig.place()
        assert status == 502 and "call_sid" in answer["error"]
    async with outbound_rig(application_id=False) as rig:
        status, answer = await rig.place()
        assert status == 400 and "TELNYX_APPLICATION_ID" in answer["error"] and rig.creates == []


async def test_the_reply_of_the_older_path_names_the_call_inside_data() -> None:
    sid = new_call_control_id()
    async with outbound_rig(refuse=(200, {"data": {"call_sid": sid, "status": "queued"}})) as rig:
        status, placed = await rig.place()
        assert status == 201 and placed["id"] == sid
        assert json.dumps(rig.creates[-1]["json"]).count(API_KEY) == 0  # the key travels only in the header

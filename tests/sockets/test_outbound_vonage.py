"""Calls the gateway places on Vonage, over real sockets on 127.0.0.1: the API → a local stand-in for
the Vonage Voice API (it records the create request) → the test plays Vonage: it fetches the answer
NCCO, connects the media socket with the Vonage softphone and posts the call's events (progress,
answering-machine results), signed as Vonage signs its webhooks. Nothing leaves the machine."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.app import create_app
from gateway.audio import ASSETS, load_ulaw_8k
from gateway.bridge import CONTEXT
from gateway.call import spoken_text
from gateway.carriers.vonage.auth import webhook_token
from gateway.carriers.vonage.codec import FRAME_BYTES
from gateway.carriers.vonage.outbound import answered_by
from gateway.carriers.vonage.phone import place_vonage_call
from gateway.config import parse_config
from gateway.simulator import RunningSimulator, SimulatorSettings, start_simulator
from gateway.simulator.server import SimSession
from gateway.softphone import CallReport, Hangup, Say, Silence, WaitForBot
from tests.sockets.loopback import serve

SECRET = "vonage-signature-secret-for-outbound-tests"
APP_ID = "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab"
API_TOKEN = "operator-token-7890"
CALLEE, FROM = "+15555550123", "+15555550100"
HELLO = load_ulaw_8k(ASSETS / "caller_hours.wav")
GREETING = "Hello, this is the clinic calling for you."
VOICEMAIL = "This is the clinic: please call us back about your appointment."
_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE_PEM = _KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode()

CONFIG = """
voicelive: {{endpoint: "{endpoint}"}}
gateway: {{api_token: "${{API_TOKEN}}"}}
vonage:
  signature_secret: ${{SECRET:-}}
  application_id: ${{APP_ID:-}}
  private_key: ${{PRIVATE_KEY:-}}
  api_base_url: {api}
  {extra}
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


@dataclass
class VoiceApi:
    """A local stand-in for the Vonage Voice API: records every request; ``answer`` is what a create
    request gets (status, JSON body)."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    answer: tuple[int, dict[str, Any]] | None = None
    uuids: int = 0

    @property
    def creates(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == "POST"]

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append({"method": request.method, "path": request.path, "body": await request.json(),
                              "authorization": request.headers.get("Authorization", "")})
        if request.method == "PUT":
            return web.Response(status=204)
        if self.answer is not None:
            return web.json_response(self.answer[1], status=self.answer[0])
        self.uuids += 1
        uuid = f"63f61863-4a51-4f6b-86e1-46edebcf{self.uuids:04d}"
        return web.json_response({"uuid": uuid, "status": "started", "direction": "outbound",
                                  "conversation_uuid": "CON-" + uuid}, status=201)


@dataclass
class Rig:
    sim: RunningSimulator
    app: web.Application
    base: str
    api: VoiceApi
    events: dict[str, list[tuple[str, float, dict[str, Any]]]] = field(default_factory=dict)
    seen: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)

    def seen_event(self, call_id: str, name: str) -> asyncio.Event:
        return self.seen.setdefault((call_id, name), asyncio.Event())

    async def gateway(self, method: str, path: str, body: Any = None, token: str | None = API_TOKEN
                      ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with aiohttp.ClientSession() as http, http.request(method, self.base + path, json=body,
                                                                  headers=headers) as reply:
            return reply.status, await reply.json(content_type=None)

    async def place(self, **extra: Any) -> tuple[int, Any]:
        body = {"to": CALLEE, "from": FROM, "profile": "reminder", "variables": {"name": "Ada"}, **extra}
        return await self.gateway("POST", "/v1/calls", body)

    async def answer(self, call_uuid: str, steps: list, webhook: dict[str, Any]) -> CallReport:
        """Vonage once the callee picked up: fetch the answer NCCO, open the media socket."""
        create = self.api.creates[-1]["body"]

        def on_event(t: float, kind: str, fields: dict[str, Any]) -> None:
            if kind == "webhook":
                webhook.update(fields)

        return await place_vonage_call(create["answer_url"][0], steps, to=CALLEE[1:], from_=FROM[1:],
                                       signature_secret=SECRET, call_uuid=call_uuid, on_event=on_event)

    async def event(self, params: dict[str, Any], secret: str = SECRET, body: bytes | None = None) -> int:
        """Post one call event to the event URL the create request named, signed like Vonage."""
        url = self.api.creates[-1]["body"]["event_url"][0]
        data = json.dumps(params).encode() if body is None else body
        headers = {"Content-Type": "application/json",
                   "Authorization": "Bearer " + webhook_token(secret, json.dumps(params).encode())}
        async with aiohttp.ClientSession() as http, http.post(url, data=data, headers=headers) as reply:
            return reply.status

    async def session(self) -> SimSession:
        session = await asyncio.wait_for(self.sim.state.wait_closed(0), 10)
        await asyncio.wait_for(self.app[CONTEXT].wait_idle(), 10)
        return session


@contextlib.asynccontextmanager
async def outbound_rig(credentials: bool = True, extra: str = "") -> AsyncIterator[Rig]:
    api = VoiceApi()
    api_app = web.Application()
    api_app.router.add_post("/v1/calls", api.handle)
    api_app.router.add_put("/v1/calls/{uuid}", api.handle)
    api_runner, api_base = await serve(api_app)
    sim = await start_simulator(SimulatorSettings(audio_speed=8.0))
    env = {"SECRET": SECRET, "API_TOKEN": API_TOKEN, "APP_ID": APP_ID if credentials else "",
           "PRIVATE_KEY": PRIVATE_PEM if credentials else ""}
    config = parse_config(CONFIG.format(endpoint=sim.endpoint, api=api_base, greeting=GREETING, voicemail=VOICEMAIL,
                                        extra=extra), env=env)
    rig: Rig

    def observer_for(call_id: str) -> Any:
        def observe(event: str, t: float, fields: dict[str, Any]) -> None:
            rig.events.setdefault(call_id, []).append((event, t, fields))
            rig.seen_event(call_id, event).set()
        return observe

    runner, base = await serve(create_app(config, observer_factory=observer_for))
    rig = Rig(sim, runner.app, base, api)
    try:
        yield rig
    finally:
        await runner.cleanup()
        await sim.close()
        await api_runner.cleanup()


def client_events(session: SimSession, kind: str) -> list[dict[str, Any]]:
    return [e for e in session.received if e.get("type") == kind]


def test_vonage_detection_results_map_onto_the_core_s_values() -> None:
    assert answered_by({"status": "human"}) == "human"
    assert answered_by({"status": "machine"}) == "machine_start"
    assert answered_by({"status": "machine", "sub_state": "beep_start"}) == "machine_end_beep"
    assert answered_by({"status": "machine", "sub_state": "beep_timeout"}) == "machine_end_other"
    assert answered_by({"status": "machine", "sub_state": "something_new"}) == "unknown"
    assert answered_by({"status": "answered"}) is None and answered_by({}) is None


async def test_a_machine_gets_the_voicemail_message_verbatim_then_the_call_hangs_up() -> None:
    async with outbound_rig() as rig:
        status, placed = await rig.place()
        assert status == 201, placed
        call_uuid = placed["id"]
        assert placed["state"] == "queued" and placed["carrier"] == "vonage"
        (create,) = rig.api.creates
        assert create["path"] == "/v1/calls" and create["body"]["to"] == [{"type": "phone", "number": CALLEE[1:]}]
        body = create["body"]
        assert body["from"] == {"type": "phone", "number": FROM[1:]}
        assert body["answer_url"] == [rig.base + "/vonage/placed-answer"] and body["answer_method"] == "GET"
        assert body["event_url"] == [rig.base + "/vonage/call-event"] and body["event_method"] == "POST"
        assert body["advanced_machine_detection"] == {"behavior": "continue", "mode": "default", "beep_timeout": 45}
        assert "ncco" not in body and "machine_detection" not in body
        scheme, _, token = create["authorization"].partition(" ")
        claims = jwt.decode(token, _KEY.public_key(), algorithms=["RS256"])  # the application JWT
        assert scheme == "Bearer" and claims["application_id"] == APP_ID
        assert await rig.event({"uuid": call_uuid, "status": "ringing", "direction": "outbound"}) == 204
        assert (await rig.gateway("GET", f"/v1/calls/{call_uuid}"))[1]["state"] == "ringing"

        ready, heard = rig.seen_event(call_uuid, "session.ready"), rig.seen_event(call_uuid, "caller.speech_stopped")
        webhook: dict[str, Any] = {}
        phone = asyncio.create_task(rig.answer(call_uuid, [Say(HELLO, "leave a message after the tone"),
                                                           Silence(30_000)], webhook))
        await asyncio.wait_for(ready.wait(), 10)
        assert webhook["stream_url"] == rig.base.replace("http", "ws") + "/vonage/media"
        assert webhook["parameters"]["call"] == call_uuid  # the socket carries the placed call's uuid
        assert (await rig.gateway("GET", f"/v1/calls/{call_uuid}"))[1]["state"] == "in-progress"
        assert await rig.event({"call_uuid": call_uuid, "uuid": call_uuid, "status": "machine"}) == 204
        await asyncio.wait_for(heard.wait(), 20)  # the machine's greeting ended: its beep
        assert [e for e, _, _ in rig.events[call_uuid] if e in ("call.opening", "response.created")] == []
        assert await rig.event({"uuid": call_uuid, "status": "machine", "sub_state": "beep_start"}) == 204
        report = await asyncio.wait_for(phone, 30)
        session = await rig.session()
        assert report.closed_by == "gateway"
        sent = sum(session.items_audio_bytes.values())
        assert sent > 0 and report.played_bytes == -(-sent // FRAME_BYTES) * FRAME_BYTES  # in full (whole frames)
        assert [spoken_text(e) for e in client_events(session, "response.create")] == [VOICEMAIL]
        assert session.received[0]["session"]["instructions"] == "Remind Ada of the appointment."
        status, state = await rig.gateway("GET", f"/v1/calls/{call_uuid}")
        assert (state["state"], state["answered_by"], state["end_reason"]) == (
            "completed", "machine_end_beep", "voicemail_left")
        hangups = [r for r in rig.api.requests if r["method"] == "PUT"]
        assert [(r["path"], r["body"]) for r in hangups] == [(f"/v1/calls/{call_uuid}", {"action": "hangup"})]


async def test_a_person_gets_the_greeting_only_after_they_spoke() -> None:
    async with outbound_rig() as rig:
        status, placed = await rig.place()
        assert status == 201
        call_uuid = placed["id"]
        spoke = rig.seen_event(call_uuid, "caller.speech_stopped")
        phone = asyncio.create_task(rig.answer(call_uuid, [Say(HELLO, "hello?"), WaitForBot(timeout_s=20), Hangup()],
                                               {}))
        await asyncio.wait_for(spoke.wait(), 20)
        # they said "hello?"; without the answering-machine result the bot stays silent
        assert [e for e, _, _ in rig.events[call_uuid] if e in ("call.opening", "response.created")] == []
        assert await rig.event({"uuid": call_uuid, "call_uuid": call_uuid, "status": "human"}) == 204
        report = await asyncio.wait_for(phone, 30)
        session = await rig.session()
        assert report.closed_by == "caller" and report.played_bytes > 0
        assert [spoken_text(e) for e in client_events(session, "response.create")] == [GREETING]
        events = rig.events[call_uuid]
        stopped = next(t for e, t, _ in events if e == "caller.speech_stopped")
        opening = next((t, f) for e, t, f in events if e == "call.opening")
        assert opening[1] == {"decision": "greet"} and opening[0] >= stopped
        state = (await rig.gateway("GET", f"/v1/calls/{call_uuid}"))[1]
        assert (state["state"], state["answered_by"]) == ("completed", "human")


async def test_the_callbacks_need_vonage_s_signature() -> None:
    async with outbound_rig() as rig:
        status, placed = await rig.place()
        assert status == 201
        call_uuid = placed["id"]
        answer_url = rig.api.creates[-1]["body"]["answer_url"][0]
        query = {"uuid": call_uuid, "to": CALLEE[1:], "from": FROM[1:], "conversation_uuid": "CON-1"}
        async with aiohttp.ClientSession() as http:
            async with http.get(answer_url, params=query) as reply:  # unsigned
                assert reply.status == 401
            forged = {"Authorization": "Bearer " + webhook_token("not-the-secret")}
            async with http.get(answer_url, params=query, headers=forged) as reply:
                assert reply.status == 401
        # a forged signature, then a genuine signature over another body: refused, nothing learnt
        assert await rig.event({"uuid": call_uuid, "status": "human"}, secret="not-the-secret") == 401
        tampered = json.dumps({"uuid": call_uuid, "status": "machine", "sub_state": "beep_start"}).encode()
        assert await rig.event({"uuid": call_uuid, "status": "human"}, body=tampered) == 401
        assert await rig.event({"uuid": call_uuid, "status": "busy"}, secret="not-the-secret") == 401
        state = (await rig.gateway("GET", f"/v1/calls/{call_uuid}"))[1]
        assert (state["state"], state["answered_by"]) == ("queued", None)
        # a genuine answer for a call this worker did not place connects nothing
        async with aiohttp.ClientSession() as http:
            other = {**query, "uuid": "not-placed-here"}
            async with http.get(answer_url, params=other,
                                headers={"Authorization": "Bearer " + webhook_token(SECRET)}) as reply:
                ncco = await reply.json()
        assert reply.status == 200 and [action["action"] for action in ncco] == ["talk"]


async def test_the_voice_api_s_refusal_is_a_clear_error_from_the_api() -> None:
    async with outbound_rig() as rig:
        rig.api.answer = (401, {"type": "https://developer.nexmo.com/api-errors#unauthorized",
                                "title": "Unauthorized", "detail": "You did not provide correct credentials."})
        status, answer = await rig.place()
        assert status == 400
        assert answer["error"] == ("Vonage refused the call (HTTP 401): Unauthorized: You did not provide "
                                   "correct credentials.")
        rig.api.answer = (503, {"title": "Service Unavailable"})
        status, answer = await rig.place()
        assert status == 502 and "HTTP 503" in answer["error"]
        rig.api.answer = (201, {"status": "started"})
        status, answer = await rig.place()
        assert status == 502 and "without a call uuid" in answer["error"]
        assert len(rig.api.creates) == 3 and rig.app[CONTEXT].outbound.calls == {}


async def test_without_the_application_s_credentials_vonage_places_no_calls() -> None:
    async with outbound_rig(credentials=False) as rig:
        status, answer = await rig.place(carrier="vonage")
        assert status == 400 and "VONAGE_APPLICATION_ID" in answer["error"]
        assert rig.api.requests == []


async def test_standard_detection_and_a_call_nobody_answers() -> None:
    async with outbound_rig(extra="machine_detection: standard") as rig:
        status, placed = await rig.place()
        assert status == 201
        body = rig.api.creates[-1]["body"]
        assert body["machine_detection"] == "continue" and "advanced_machine_detection" not in body
        assert await rig.event({"uuid": placed["id"], "status": "busy"}) == 204
        state = (await rig.gateway("GET", f"/v1/calls/{placed['id']}"))[1]
        assert (state["state"], state["end_reason"]) == ("failed", "busy") and state["ended_at"]

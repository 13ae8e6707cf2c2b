"""Calls the gateway places on Plivo, over real sockets on 127.0.0.1: the API → a local stand-in for
Plivo's REST API (it records the create request) → the test plays Plivo: it posts the ring URL,
fetches the answer XML and connects the audio stream with the Plivo softphone, posts the machine
detection result and the hangup URL → the gateway and the Voice Live simulator. Nothing leaves the
machine."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from aiohttp import web

from gateway.app import create_app
from gateway.audio import ASSETS, load_ulaw_8k
from gateway.bridge import CONTEXT
from gateway.call import spoken_text
from gateway.carriers.plivo.phone import PlivoCallReport, place_plivo_call, signed_headers
from gateway.config import parse_config
from gateway.replay import load_fixture, run
from gateway.simulator import RunningSimulator, SimulatorSettings, ToolCall, start_simulator
from gateway.simulator.server import SimSession
from gateway.softphone import Hangup, Say, Silence, WaitForBot
from tests.sockets.loopback import refusing_port, serve

AUTH_ID = "MAZDQ1ZDA2YTI5NDEXAMPLE"
TOKEN = "plivo-test-auth-token-0123456789"
API_TOKEN = "operator-token-3456"
CALLEE, FROM = "+15555550123", "+15555550100"
HELLO = load_ulaw_8k(ASSETS / "caller_hours.wav")
GREETING = "Hello, this is the clinic calling for you."
VOICEMAIL = "This is the clinic: please call us back about your appointment."
RECORDS_SECRET = "whsec_" + base64.b64encode(b"plivo outbound records secret 01").decode()

CONFIG = """
voicelive: {{endpoint: "{endpoint}"}}
gateway: {{api_token: "${{API_TOKEN}}"}}
plivo: {{auth_id: "${{PLIVO_AUTH_ID:-}}", auth_token: "${{PLIVO_AUTH_TOKEN:-}}", api_base_url: "{plivo_api}"}}
profiles:
  reminder:
    model: gpt-realtime
    instructions: "Remind {{name}} of the appointment."
    turn_detection: {{type: server_vad, silence_duration_ms: 400}}
    greeting: "{greeting}"
    voicemail: {{message: "{voicemail}"}}
    tools:
      - name: transfer_call
        builtin: transfer_call
        transfer: {{targets: {{front desk: "+15555550199"}}}}
    outbound: {{greeting_after_s: 0.2, machine_wait_s: {machine_wait}}}
routes:
  default: reminder
"""


@dataclass
class Rig:
    sim: RunningSimulator
    app: web.Application
    base: str
    creates: list[dict[str, Any]]  # what the stand-in for Plivo's REST API was asked to create
    reply: list[tuple[int, str]]  # what it answers next: (status, body)
    transfers: list[dict[str, Any]]  # what it was asked to do with a call in progress
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
        body = {"to": CALLEE, "from": FROM, "profile": "reminder", "variables": {"name": "Ada"}, "carrier": "plivo"}
        return await self.api("POST", "/v1/calls", body)

    async def state(self, call_id: str) -> dict[str, Any]:
        status, state = await self.api("GET", f"/v1/calls/{call_id}")
        assert status == 200, state
        return state

    async def callback(self, url: str, form: Mapping[str, str], token: str | None = TOKEN) -> tuple[int, str]:
        """POST ``form`` to ``url`` as Plivo does (signed with ``token``; unsigned when None)."""
        async with aiohttp.ClientSession() as http, http.post(
                url, data=dict(form), headers=signed_headers(token, url, dict(form))) as response:
            return response.status, await response.text()

    async def answer(self, request_uuid: str, call_uuid: str, steps: list) -> PlivoCallReport:
        """Plivo once the callee picked up: fetch the answer URL's XML, open the audio stream."""
        return await place_plivo_call(self.creates[-1]["body"]["answer_url"], steps, to=CALLEE, from_=FROM,
                                      auth_token=TOKEN, call_uuid=call_uuid, request_uuid=request_uuid)

    async def machine(self, request_uuid: str, call_uuid: str, machine: str) -> int:
        form = {"CallUUID": call_uuid, "RequestUUID": request_uuid, "ALegRequestUUID": request_uuid,
                "ALegUUID": call_uuid, "Machine": machine, "IfMachine": "continue", "Direction": "outbound",
                "From": FROM[1:], "To": CALLEE[1:], "Event": "MachineDetection", "CallStatus": "in-progress"}
        status, _ = await self.callback(self.creates[-1]["body"]["machine_detection_url"], form)
        return status

    async def hangup(self, form: Mapping[str, str], token: str | None = TOKEN) -> int:
        status, _ = await self.callback(self.creates[-1]["body"]["hangup_url"], form, token)
        return status

    async def session(self) -> SimSession:
        session = await asyncio.wait_for(self.sim.state.wait_closed(0), 10)
        await asyncio.wait_for(self.app[CONTEXT].wait_idle(), 10)
        return session


@contextlib.asynccontextmanager
async def plivo_outbound_rig(machine_wait_s: float = 20.0, env: Mapping[str, str] | None = None,
                             plivo_api: str | None = None, recording: Path | None = None,
                             records: tuple[str, Path] | None = None,
                             tool_calls: Mapping[int, ToolCall] | None = None) -> AsyncIterator[Rig]:
    creates: list[dict[str, Any]] = []
    reply: list[tuple[int, str]] = []
    transfers: list[dict[str, Any]] = []

    async def transfer(request: web.Request) -> web.Response:
        transfers.append({"path": request.path, "body": await request.json()})
        return web.json_response({"message": "call transferred", "api_id": "x"}, status=202)

    async def create_call(request: web.Request) -> web.Response:
        creates.append({"path": request.path, "body": await request.json(),
                        "authorization": request.headers.get("Authorization")})
        if reply:
            status, text = reply.pop(0)
            return web.Response(status=status, text=text, content_type="application/json")
        return web.json_response({"message": "call fired", "request_uuid": str(uuid.uuid4()),
                                  "api_id": str(uuid.uuid4())}, status=201)

    fake = web.Application()
    fake.router.add_post("/v1/Account/{auth_id}/Call/", create_call)
    fake.router.add_post("/v1/Account/{auth_id}/Call/{call}/", transfer)
    fake_runner, fake_base = await serve(fake)
    sim = await start_simulator(SimulatorSettings(audio_speed=8.0, tool_calls=dict(tool_calls or {})))
    text = CONFIG.format(endpoint=sim.endpoint, plivo_api=plivo_api or fake_base, greeting=GREETING,
                         voicemail=VOICEMAIL, machine_wait=machine_wait_s)
    if recording is not None:
        text += f'recording: {{directory: "{recording}"}}\n'
    if records is not None:
        text += (f'records: {{webhook: "{records[0]}", signing_secret: "${{RECORDS_SECRET}}", '
                 f'spool_directory: "{records[1]}", initial_backoff_s: 0.01, max_backoff_s: 0.02}}\n')
    config = parse_config(text, env={"API_TOKEN": API_TOKEN, "RECORDS_SECRET": RECORDS_SECRET,
                                     **(env if env is not None else {"PLIVO_AUTH_ID": AUTH_ID,
                                                                     "PLIVO_AUTH_TOKEN": TOKEN})})
    rig: Rig

    def observer_for(call_id: str) -> Any:
        def observe(event: str, t: float, fields: dict[str, Any]) -> None:
            rig.events.setdefault(call_id, []).append((event, t, fields))
            rig.seen_event(call_id, event).set()
        return observe

    runner, base = await serve(create_app(config, observer_factory=observer_for))
    rig = Rig(sim, runner.app, base, creates, reply, transfers)
    try:
        yield rig
    finally:
        await runner.cleanup()
        await sim.close()
        await fake_runner.cleanup()


def spoken(session: SimSession) -> list[str | None]:
    return [spoken_text(e) for e in session.received if e.get("type") == "response.create"]


async def test_a_machine_gets_the_voicemail_message_verbatim_then_the_call_hangs_up(tmp_path: Path) -> None:
    posted: list[bytes] = []
    delivered = asyncio.Event()

    async def webhook(request: web.Request) -> web.Response:
        posted.append(await request.read())
        delivered.set()
        return web.Response(status=204)

    hook_app = web.Application()
    hook_app.router.add_post("/records", webhook)
    hook_runner, hook_base = await serve(hook_app)
    call_uuid = str(uuid.uuid4())
    recordings = tmp_path / "recordings"
    async with plivo_outbound_rig(machine_wait_s=1.0, recording=recordings,
                                  records=(hook_base + "/records", tmp_path / "spool")) as rig:
        status, placed = await rig.place()
        assert status == 201, placed
        request_uuid = placed["id"]
        assert (placed["state"], placed["carrier"]) == ("queued", "plivo")
        # the create request, as Plivo documents it
        (create,) = rig.creates
        assert create["path"] == f"/v1/Account/{AUTH_ID}/Call/"
        assert create["authorization"] == "Basic " + base64.b64encode(f"{AUTH_ID}:{TOKEN}".encode()).decode()
        body = create["body"]
        assert (body["from"], body["to"]) == (FROM[1:], CALLEE[1:])  # E.164 without the plus
        assert body["answer_url"] == rig.base + "/plivo/placed-answer" and body["answer_method"] == "POST"
        assert body["ring_url"] == rig.base + "/plivo/ring" and body["hangup_url"] == rig.base + "/plivo/hangup"
        assert (body["machine_detection"], body["machine_detection_url"], body["machine_detection_method"]) == (
            "true", rig.base + "/plivo/machine", "POST")
        assert body["machine_detection_time"] == 2000  # within the profile's wait (Plivo's least: 2 s)
        # ringing: Plivo's ring URL names the request; from here on the CallUUID names the call too
        ring = {"CallUUID": call_uuid, "RequestUUID": request_uuid, "CallStatus": "ringing",
                "Direction": "outbound", "From": FROM[1:], "To": CALLEE[1:]}
        assert (await rig.callback(body["ring_url"], ring))[0] == 204
        assert (await rig.state(request_uuid))["state"] == "ringing"

        ready = rig.seen_event(request_uuid, "session.ready")
        phone = asyncio.create_task(rig.answer(request_uuid, call_uuid, [Say(HELLO, "leave a message after the tone"),
                                                                         Silence(30_000)]))
        await asyncio.wait_for(ready.wait(), 10)  # the call runs under the request's id
        assert (await rig.state(request_uuid))["state"] == "in-progress"
        # Plivo tells a machine while its greeting plays: the message follows the profile's wait
        assert await rig.machine(request_uuid, call_uuid, "true") == 204
        report = await asyncio.wait_for(phone, 30)
        session = await rig.session()
        assert report.call_sid == call_uuid  # the stream's start carried Plivo's CallUUID
        assert report.closed_by == "gateway" and report.violations == 0, report.violation_samples
        assert report.played_bytes == sum(session.items_audio_bytes.values()) > 0  # heard in full
        assert spoken(session) == [VOICEMAIL]
        assert session.received[0]["session"]["instructions"] == "Remind Ada of the appointment."
        # once the stream closed, Plivo follows the <Redirect> (a hang-up), then reports the hang-up
        status, after = await rig.callback(rig.base + "/plivo/stream-ended",
                                           {"CallUUID": call_uuid, "ALegRequestUUID": request_uuid})
        assert status == 200 and [e.tag for e in ET.fromstring(after)] == ["Hangup"]
        assert await rig.hangup({"CallUUID": call_uuid, "RequestUUID": request_uuid, "CallStatus": "completed",
                                 "HangupCause": "NORMAL_CLEARING"}) == 204
        state = await rig.state(request_uuid)
        assert (state["state"], state["answered_by"], state["end_reason"]) == (
            "completed", "machine_start", "voicemail_left")
        await asyncio.wait_for(delivered.wait(), 10)
    await hook_runner.cleanup()
    record = json.loads(posted[0])
    assert (record["call_id"], record["carrier"], record["direction"]) == (request_uuid, "plivo", "outbound")
    assert (record["answering_machine"], record["end_reason"]) == ("machine_start", "voicemail_left")
    assert TOKEN not in posted[0].decode()
    # the recorded call replays: the same opening, the same words
    (path,) = await asyncio.to_thread(lambda: list(recordings.glob("*.jsonl")))
    fixture = await asyncio.to_thread(load_fixture, path)
    assert [r.get("result") for r in fixture.records if r.get("event") == "answered_by"] == ["machine_start"]
    replayed = run(fixture)
    assert replayed.ok, f"{replayed.mismatch}\n{replayed.problems}"


async def test_a_person_gets_the_greeting_only_after_they_spoke() -> None:
    call_uuid = str(uuid.uuid4())
    async with plivo_outbound_rig() as rig:
        status, placed = await rig.place()
        assert status == 201
        request_uuid = placed["id"]
        spoke = rig.seen_event(request_uuid, "caller.speech_stopped")
        phone = asyncio.create_task(rig.answer(request_uuid, call_uuid,
                                               [Say(HELLO, "hello?"), WaitForBot(timeout_s=20), Hangup()]))
        await asyncio.wait_for(spoke.wait(), 20)
        # they said "hello?"; without the detection's result the bot stays silent
        assert [e for e, _, _ in rig.events[request_uuid] if e in ("call.opening", "response.created")] == []
        assert await rig.machine(request_uuid, call_uuid, "false") == 204
        report = await asyncio.wait_for(phone, 30)
        session = await rig.session()
        assert report.closed_by == "caller" and report.played_bytes > 0 and report.violations == 0
        assert spoken(session) == [GREETING]
        events = rig.events[request_uuid]
        stopped = next(t for e, t, _ in events if e == "caller.speech_stopped")
        opening = next((t, f) for e, t, f in events if e == "call.opening")
        assert opening[1] == {"decision": "greet"} and opening[0] >= stopped
        # a hang-up that carries only the CallUUID still finds the call (paired at the answer)
        assert await rig.hangup({"CallUUID": call_uuid, "CallStatus": "completed"}) == 204
        state = await rig.state(request_uuid)
        # (Plivo's stream has no stop: the caller hanging up closes the socket)
        assert (state["state"], state["answered_by"], state["end_reason"]) == (
            "completed", "human", "phone_socket_closed")


async def test_a_transfer_of_a_placed_call_addresses_plivo_s_call_uuid() -> None:
    call_uuid = str(uuid.uuid4())
    async with plivo_outbound_rig(tool_calls={2: ToolCall("transfer_call", {"destination": "front desk"})}) as rig:
        status, placed = await rig.place()
        assert status == 201
        request_uuid = placed["id"]
        spoke = rig.seen_event(request_uuid, "caller.speech_stopped")
        phone = asyncio.create_task(rig.answer(request_uuid, call_uuid, [
            Say(HELLO, "hello?"), WaitForBot(timeout_s=20), Say(HELLO, "the front desk, please"), Silence(20_000)]))
        await asyncio.wait_for(spoke.wait(), 20)
        assert await rig.machine(request_uuid, call_uuid, "false") == 204
        report = await asyncio.wait_for(phone, 30)
        await rig.session()
    assert report.closed_by == "gateway" and report.violations == 0
    # the call ran under the request's id; Plivo's REST API knows it by its CallUUID
    (transfer,) = rig.transfers
    assert transfer["path"] == f"/v1/Account/{AUTH_ID}/Call/{call_uuid}/"
    aleg = parse_qs(urlsplit(transfer["body"]["aleg_url"]).query)
    assert (aleg["to"], aleg["from"]) == (["+15555550199"], [FROM])  # shown as the number the call came from


async def test_every_callback_of_a_placed_call_needs_plivo_s_signature() -> None:
    async with plivo_outbound_rig() as rig:
        status, placed = await rig.place()
        assert status == 201
        request_uuid, call_uuid = placed["id"], str(uuid.uuid4())
        form = {"CallUUID": call_uuid, "RequestUUID": request_uuid, "ALegRequestUUID": request_uuid,
                "CallStatus": "busy", "Machine": "true"}
        for path in ("/plivo/placed-answer", "/plivo/machine", "/plivo/ring", "/plivo/hangup"):
            assert (await rig.callback(rig.base + path, form, token=None))[0] == 403, path
            assert (await rig.callback(rig.base + path, form, token="a-forged-auth-token"))[0] == 403, path
        state = await rig.state(request_uuid)
        assert (state["state"], state["answered_by"]) == ("queued", None)  # nothing got through
        # a signed answer for a call this gateway did not place gets a hang-up, not a stream
        status, xml = await rig.callback(rig.base + "/plivo/placed-answer",
                                         {"CallUUID": call_uuid, "ALegRequestUUID": str(uuid.uuid4())})
        assert status == 200 and [e.tag for e in ET.fromstring(xml)] == ["Hangup"]
        # the signed answer for this call: a stream whose token names both of the call's ids
        status, xml = await rig.callback(rig.base + "/plivo/placed-answer",
                                         {"CallUUID": call_uuid, "ALegRequestUUID": request_uuid,
                                          "Direction": "outbound", "CallStatus": "in-progress"})
        (stream, redirect) = list(ET.fromstring(xml))
        assert (stream.tag, stream.get("bidirectional"), redirect.tag) == ("Stream", "true", "Redirect")
        token = parse_qs(urlsplit(stream.text or "").query)["token"][0]
        claims = rig.app[CONTEXT].tokens.verify(token, carrier="plivo")
        assert (claims["call"], claims["placed"], claims["profile"]) == (call_uuid, request_uuid, "reminder")
        assert (await rig.state(request_uuid))["state"] == "answered"


async def test_a_call_nobody_answers_fails_with_plivo_s_reason() -> None:
    async with plivo_outbound_rig() as rig:
        status, placed = await rig.place()
        assert status == 201
        assert await rig.hangup({"CallUUID": str(uuid.uuid4()), "RequestUUID": placed["id"],
                                 "CallStatus": "no-answer", "HangupCause": "NO_ANSWER"}) == 204
        state = await rig.state(placed["id"])
        assert (state["state"], state["end_reason"]) == ("failed", "no_answer") and state["ended_at"]


async def test_errors_of_plivo_s_api_are_clear_answers_of_the_gateway() -> None:
    async with plivo_outbound_rig() as rig:
        rig.reply[:] = [(400, json.dumps({"api_id": "a-1", "error": "invalid 'to' number"})),
                        (401, "Authentication failed"),
                        (201, json.dumps({"message": "call fired", "api_id": "a-3"}))]
        status, answer = await rig.place()
        assert status == 400 and answer["error"] == "Plivo refused the call (HTTP 400): invalid 'to' number"
        status, answer = await rig.place()  # the gateway's credentials: not the API client's fault
        assert status == 502 and answer["error"] == "Plivo refused the call (HTTP 401): Authentication failed"
        status, answer = await rig.place()
        assert status == 502 and "without a request_uuid" in answer["error"]
        assert len(rig.creates) == 3
    sock, port = refusing_port()
    with sock:
        async with plivo_outbound_rig(plivo_api=f"http://127.0.0.1:{port}") as rig:
            status, answer = await rig.place()
            assert status == 502 and answer["error"].startswith("Plivo's REST API cannot be reached")
    async with plivo_outbound_rig(env={"PLIVO_AUTH_TOKEN": TOKEN}) as rig:  # no PLIVO_AUTH_ID
        status, answer = await rig.place()
        assert status == 400 and "PLIVO_AUTH_ID" in answer["error"]
        assert rig.creates == []

"""Pre-warmed sessions at every carrier's announcement, over real sockets on 127.0.0.1: ACS's
IncomingCall, the Telnyx, Plivo and Vonage answer hooks, and calls placed through ``POST /v1/calls``
on each carrier. The session opened at the announcement is the one the call's media socket takes
(against a simulator that takes 800 ms to set a session up); a carrier whose answer can speak says
the profile's busy message when no Voice Live connection is left, and a placement is refused.

The carriers' REST APIs are one local stand-in; ACS's Call Automation a capturing transport.
Nothing leaves the machine."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from azure.communication.callautomation.aio import CallAutomationClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway import metrics
from gateway.app import create_app
from gateway.bridge import CONTEXT, GatewayContext
from gateway.carriers.acs.carrier import AcsCarrier
from gateway.carriers.acs.phone import place_acs_call
from gateway.carriers.plivo.phone import parse_stream_xml, place_plivo_call
from gateway.carriers.plivo.phone import signed_headers as plivo_signed
from gateway.carriers.registry import default_carriers
from gateway.carriers.telnyx.phone import parse_texml, place_telnyx_call
from gateway.carriers.telnyx.phone import signed_headers as telnyx_signed
from gateway.carriers.twilio.phone import new_sid, place_call
from gateway.carriers.vonage.auth import webhook_token
from gateway.carriers.vonage.phone import parse_ncco, place_vonage_call
from gateway.config import parse_config
from gateway.simulator import RunningSimulator, SimulatorSettings, start_simulator
from gateway.softphone import Hangup, Step, WaitForBot
from gateway.voicelive.budget import LocalBudget
from tests.sockets.loopback import AcsKeys, CapturingTransport, post_as_twilio, serve
from tests.sockets.test_telnyx import public_key_text

SETUP_MS = 800
API_TOKEN = "operator-token-prewarm"
TWILIO_TOKEN, TWILIO_ACCOUNT = "twilio-auth-token-prewarm", "AC" + "0123456789abcdef" * 2
PLIVO_ID, PLIVO_TOKEN = "MAPREWARM0123456789A", "plivo-auth-token-prewarm"
VONAGE_SECRET, VONAGE_APP = "vonage-signature-secret-prewarm", "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab"
TELNYX_ACCOUNT = "telnyx-account-prewarm"
ACS_RESOURCE, ACS_SECRET = "5e6f7a8b-0000-4000-8000-00000000acs1", "eventgrid-secret-prewarm"
CALLEE, FROM = "+15555550123", "+15555550100"
BUSY = "All our lines are busy, please call again in a minute."
_VONAGE_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()

CONFIG = """
voicelive: {{endpoint: "{endpoint}", prewarm: true}}
gateway: {{api_token: "${{API_TOKEN}}"}}
twilio: {{auth_token: "${{TWILIO_TOKEN}}", account_sid: "{twilio_account}", api_base_url: "{api}"}}
acs:
  connection_string: ${{ACS}}
  resource_id: {acs_resource}
  jwks_url: {jwks}
  eventgrid_secret: ${{ACS_SECRET}}
  reconnect_grace_s: 0.3
telnyx: {{public_key: "{telnyx_key}", api_key: "${{TELNYX_API_KEY}}", application_id: "telnyx-app",
          account_sid: "{telnyx_account}", api_base_url: "{api}"}}
plivo: {{auth_id: "{plivo_id}", auth_token: "${{PLIVO_TOKEN}}", api_base_url: "{api}"}}
vonage: {{signature_secret: "${{VONAGE_SECRET}}", application_id: "{vonage_app}", private_key: "${{VONAGE_KEY}}",
          api_base_url: "{api}"}}
profiles:
  main:
    model: gpt-realtime
    voice: alloy
    greeting: "Hello, thanks for calling."
    busy: {{message: "{busy}"}}
    outbound: {{greeting_after_s: 0.2, answering_machine_detection: false}}
routes:
  default: main
"""


@dataclass
class Rig:
    sim: RunningSimulator
    app: web.Application
    base: str
    telnyx_key: Ed25519PrivateKey
    keys: AcsKeys
    acs: CapturingTransport
    creates: list[tuple[str, Any]] = field(default_factory=list)  # (path, body) the REST stand-in was asked

    @property
    def ctx(self) -> GatewayContext:
        return self.app[CONTEXT]

    async def warm_ready(self) -> None:
        """The session opened at the announcement is set up (the simulator has it)."""
        await self.sim.state.wait_for_session(0)

    def spend_budget(self) -> None:
        """No Voice Live connection left in this minute's budget."""
        budget, name = self.ctx.pool.budget, self.ctx.pool.resources[0].name
        assert isinstance(budget, LocalBudget)  # (no GATEWAY_REDIS_URL here)
        while budget.remaining(name) > 0:
            assert budget.take_now(name).granted

    async def place(self, carrier: str) -> tuple[int, Any, dict[str, str]]:
        body = {"to": CALLEE, "from": FROM, "profile": "main", "carrier": carrier}
        async with aiohttp.ClientSession() as http, http.post(
                self.base + "/v1/calls", json=body, headers={"Authorization": f"Bearer {API_TOKEN}"}) as reply:
            return reply.status, await reply.json(content_type=None), dict(reply.headers)

    # --- the announcements, as each carrier makes them: (status, body) -------------------------------

    async def telnyx_voice(self, call_sid: str) -> tuple[int, bytes]:
        form = {"CallSid": call_sid, "AccountSid": TELNYX_ACCOUNT, "To": CALLEE, "From": FROM,
                "CallStatus": "ringing", "Direction": "inbound"}
        body = urlencode(form).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", **telnyx_signed(self.telnyx_key, body)}
        async with aiohttp.ClientSession() as http, http.post(self.base + "/telnyx/voice", data=body,
                                                              headers=headers) as reply:
            return reply.status, await reply.read()

    async def plivo_answer(self, call_uuid: str) -> tuple[int, bytes]:
        url = self.base + "/plivo/answer"
        form = {"CallUUID": call_uuid, "To": CALLEE[1:], "From": FROM[1:], "Direction": "inbound",
                "CallStatus": "ringing", "Event": "StartApp"}
        async with aiohttp.ClientSession() as http, http.post(url, data=form,
                                                              headers=plivo_signed(PLIVO_TOKEN, url, form)) as reply:
            return reply.status, await reply.read()

    async def vonage_answer(self, call_uuid: str) -> tuple[int, bytes]:
        params = {"uuid": call_uuid, "conversation_uuid": "CON-" + call_uuid, "to": CALLEE[1:], "from": FROM[1:]}
        url = self.base + "/vonage/answer?" + urlencode(params)
        async with aiohttp.ClientSession() as http, http.get(
                url, headers={"Authorization": "Bearer " + webhook_token(VONAGE_SECRET, None)}) as reply:
            return reply.status, await reply.read()


@contextlib.asynccontextmanager
async def prewarm_rig(keys: AcsKeys) -> AsyncIterator[Rig]:
    creates: list[tuple[str, Any]] = []

    async def create(request: web.Request) -> web.Response:
        """Twilio, Telnyx, Plivo and Vonage asked to place a call: each answers with its call's id."""
        path = request.path
        if path.endswith("Calls.json"):  # Twilio (a form)
            creates.append((path, dict(await request.post())))
            return web.json_response({"sid": new_sid("CA"), "status": "queued"}, status=201)
        creates.append((path, await request.json()))
        if path.startswith("/v2/texml/"):
            return web.json_response({"call_sid": "v3:" + uuid.uuid4().hex, "status": "queued"})
        if path.startswith("/v1/Account/"):
            return web.json_response({"message": "call fired", "request_uuid": str(uuid.uuid4())}, status=201)
        return web.json_response({"uuid": str(uuid.uuid4()), "status": "started"}, status=201)  # Vonage

    fake = web.Application()
    fake.router.add_post("/2010-04-01/Accounts/{account}/Calls.json", create)
    fake.router.add_post("/v2/texml/Accounts/{account}/Calls", create)
    fake.router.add_post("/v1/Account/{account}/Call/", create)
    fake.router.add_post("/v1/calls", create)
    fake_runner, api = await serve(fake)
    sim = await start_simulator(SimulatorSettings(setup_delay_ms=SETUP_MS, audio_speed=8.0))
    telnyx_key = Ed25519PrivateKey.generate()
    access_key = base64.b64encode(b"k" * 32).decode()
    connection = f"endpoint=https://acs.example.communication.azure.com/;accesskey={access_key}"
    config = parse_config(
        CONFIG.format(endpoint=sim.endpoint, api=api, twilio_account=TWILIO_ACCOUNT, acs_resource=ACS_RESOURCE,
                      jwks=keys.jwks_url, telnyx_key=public_key_text(telnyx_key), telnyx_account=TELNYX_ACCOUNT,
                      plivo_id=PLIVO_ID, vonage_app=VONAGE_APP, busy=BUSY),
        env={"API_TOKEN": API_TOKEN, "TWILIO_TOKEN": TWILIO_TOKEN, "ACS": connection, "ACS_SECRET": ACS_SECRET,
             "PLIVO_TOKEN": PLIVO_TOKEN, "TELNYX_API_KEY": "telnyx-api-key-prewarm", "VONAGE_SECRET": VONAGE_SECRET,
             "VONAGE_KEY": _VONAGE_KEY})
    transport = CapturingTransport()
    client = CallAutomationClient.from_connection_string(connection, transport=transport)
    carriers = [AcsCarrier(client) if c.name == "acs" else c for c in default_carriers()]
    app = create_app(config, carriers=carriers)
    runner, base = await serve(app)
    keys.audience = ACS_RESOURCE
    try:
        yield Rig(sim, app, base, telnyx_key, keys, transport, creates)
    finally:
        await runner.cleanup()
        await client.close()
        await sim.close()
        await fake_runner.cleanup()


@pytest.fixture
async def rig(acs_keys: AcsKeys) -> AsyncIterator[Rig]:
    async with prewarm_rig(acs_keys) as made:
        yield made


def _warm(result: str) -> float:
    return metrics.WARM_SESSIONS.value(result)


class Counts:
    """The warm sessions opened and used since it was made."""

    def __init__(self) -> None:
        self.opened, self.used = _warm("opened"), _warm("used")

    def since(self) -> tuple[float, float]:
        return _warm("opened") - self.opened, _warm("used") - self.used


async def _finish(rig: Rig, report: Any, counts: Counts) -> None:
    """The call heard its greeting over the session opened at its announcement: the only one."""
    assert report.violations == 0 and report.played_bytes > 0
    assert counts.since() == (1, 1)
    assert len(rig.sim.state.sessions) == 1
    session = rig.sim.state.sessions[0]
    assert [e["type"] for e in session.received].count("session.update") == 1  # configured once, not again
    assert len(rig.ctx.warm) == 0
    await rig.ctx.wait_idle()


STEPS: list[Step] = [WaitForBot(heard_ms=200, timeout_s=10), Hangup()]


# --- incoming calls ------------------------------------------------------------------------------------


async def _acs_incoming_call(rig: Rig, correlation_id: str) -> tuple[str, str]:
    """Event Grid posts an IncomingCall; the gateway answers it. Returns the call's id (the one Call
    Automation answered with: the stand-in's cc-<request number>) and the media socket's URL."""
    event = [{"id": str(uuid.uuid4()), "eventType": "Microsoft.Communication.IncomingCall",
              "data": {"to": {"kind": "phoneNumber", "rawId": f"4:{CALLEE}", "phoneNumber": {"value": CALLEE}},
                       "from": {"kind": "phoneNumber", "rawId": f"4:{FROM}"}, "serverCallId": "srv",
                       "incomingCallContext": "opaque-context", "correlationId": correlation_id}}]
    async with aiohttp.ClientSession() as http, http.post(
            rig.base + f"/acs/incoming?secret={ACS_SECRET}", json=event) as reply:
        assert reply.status == 200
    (answer,) = rig.acs.of("callConnections:answer")
    media_url = json.loads(answer.content)["mediaStreamingOptions"]["transportUrl"]
    return f"cc-{rig.acs.requests.index(answer) + 1}", media_url


async def test_acs_incoming_call_opens_the_session_its_media_socket_takes(rig: Rig) -> None:
    counts = Counts()
    call_id, media_url = await _acs_incoming_call(rig, "corr-warm")
    assert len(rig.ctx.warm) == 1
    await rig.warm_ready()
    report = await place_acs_call(media_url, STEPS, token=rig.keys.mint(), call_connection_id=call_id,
                                  correlation_id="corr-warm")
    await _finish(rig, report, counts)


async def test_an_acs_socket_whose_stream_token_names_another_call_cannot_take_the_session(rig: Rig) -> None:
    mismatch = _warm("mismatch")
    call_id, _ = await _acs_incoming_call(rig, "corr-a")
    await rig.warm_ready()
    # a socket that names call A by its connection id, with a stream token issued for another call
    token = rig.ctx.tokens.issue({"profile": "main", "correlation": "corr-b"}, 60, carrier="acs")
    media_url = rig.base.replace("http://", "ws://") + f"/acs/media?ctx={token}"
    report = await place_acs_call(media_url, STEPS, token=rig.keys.mint(), call_connection_id=call_id,
                                  correlation_id="corr-b")
    assert _warm("mismatch") - mismatch == 1  # call A's session was not given to it
    assert report.played_bytes > 0 and len(rig.sim.state.sessions) == 2  # it opened its own
    await rig.ctx.wait_idle()


async def test_telnyx_voice_webhook_opens_the_session_its_stream_takes(rig: Rig) -> None:
    counts = Counts()
    call_sid = "v3:" + uuid.uuid4().hex
    status, texml = await rig.telnyx_voice(call_sid)
    assert status == 200
    await rig.warm_ready()
    report = await place_telnyx_call(parse_texml(texml, rig.base).stream_url, STEPS, call_sid=call_sid,
                                     account_sid=TELNYX_ACCOUNT)
    await _finish(rig, report, counts)


async def test_plivo_answer_opens_the_session_its_stream_takes(rig: Rig) -> None:
    counts = Counts()
    call_uuid = str(uuid.uuid4())
    status, xml = await rig.plivo_answer(call_uuid)
    assert status == 200
    await rig.warm_ready()
    report = await place_plivo_call(parse_stream_xml(xml, rig.base), STEPS, call_uuid=call_uuid)
    await _finish(rig, report, counts)


async def test_vonage_answer_opens_the_session_its_media_socket_takes(rig: Rig) -> None:
    counts = Counts()
    call_uuid = str(uuid.uuid4())
    status, ncco = await rig.vonage_answer(call_uuid)
    assert status == 200
    media_url, headers, authorization = parse_ncco(ncco, rig.base)
    await rig.warm_ready()
    report = await place_vonage_call(media_url, STEPS, headers=headers, authorization=authorization,
                                     call_uuid=call_uuid)
    await _finish(rig, report, counts)


async def test_an_answer_that_can_speak_says_the_busy_message_when_no_connection_is_left(rig: Rig) -> None:
    rig.spend_budget()
    refused = {c: metrics.CALLS.value(c, "refused (no budget)") for c in ("telnyx", "plivo", "vonage")}
    status, texml = await rig.telnyx_voice("v3:" + uuid.uuid4().hex)
    assert status == 200 and f"<Say>{BUSY}</Say>" in texml.decode() and b"<Stream" not in texml
    status, xml = await rig.plivo_answer(str(uuid.uuid4()))
    assert status == 200 and BUSY in xml.decode() and b"<Stream" not in xml
    status, ncco = await rig.vonage_answer(str(uuid.uuid4()))
    assert status == 200 and json.loads(ncco)[0] == {"action": "talk", "text": BUSY}
    assert all(action["action"] != "connect" for action in json.loads(ncco))
    assert {c: metrics.CALLS.value(c, "refused (no budget)") - n for c, n in refused.items()} == {
        "telnyx": 1, "plivo": 1, "vonage": 1}
    assert len(rig.ctx.warm) == 0 and rig.sim.state.sessions == []  # nothing opened for them


# --- placed calls -------------------------------------------------------------------------------------


async def _answer_placed(rig: Rig, carrier: str, call_id: str) -> Any:
    """The carrier once the callee picked up: its answer hook, then the call's media socket."""
    if carrier == "twilio":
        return await place_call(rig.base + "/twilio/placed-answer", STEPS, auth_token=TWILIO_TOKEN, call_sid=call_id,
                                to=CALLEE, from_=FROM, direction="outbound-api")
    if carrier == "acs":
        (create,) = [r for r in rig.acs.requests if r.url.split("?")[0].endswith("/calling/callConnections")]
        media_url = json.loads(create.content)["mediaStreamingOptions"]["transportUrl"]
        return await place_acs_call(media_url, STEPS, token=rig.keys.mint(), call_connection_id=call_id)
    if carrier == "telnyx":
        return await place_telnyx_call(rig.base + "/telnyx/placed-answer", STEPS, signing_key=rig.telnyx_key,
                                       call_sid=call_id, account_sid=TELNYX_ACCOUNT, to=CALLEE, from_=FROM,
                                       direction="outbound-api")
    if carrier == "plivo":
        return await place_plivo_call(rig.base + "/plivo/placed-answer", STEPS, auth_token=PLIVO_TOKEN,
                                      request_uuid=call_id, to=CALLEE, from_=FROM)
    return await place_vonage_call(rig.base + "/vonage/placed-answer", STEPS, signature_secret=VONAGE_SECRET,
                                   call_uuid=call_id, to=CALLEE[1:], from_=FROM[1:])


@pytest.mark.parametrize("carrier", ["twilio", "acs", "telnyx", "plivo", "vonage"])
async def test_a_placed_call_opens_its_session_while_it_rings(rig: Rig, carrier: str) -> None:
    counts = Counts()
    status, placed, _ = await rig.place(carrier)
    assert status == 201, placed
    assert len(rig.ctx.warm) == 1  # opened as soon as the carrier named the call
    await rig.warm_ready()
    report = await _answer_placed(rig, carrier, placed["id"])
    await _finish(rig, report, counts)
    assert (await _state(rig, placed["id"]))["state"] == "completed"


async def test_a_result_before_the_media_replaces_the_session_opened_when_the_call_was_placed(rig: Rig) -> None:
    counts, mismatch = Counts(), _warm("mismatch")
    status, placed, _ = await rig.place("twilio")
    assert status == 201, placed
    await rig.warm_ready()
    amd = {"CallSid": placed["id"], "AccountSid": TWILIO_ACCOUNT, "AnsweredBy": "human"}
    assert (await post_as_twilio(rig.base + "/twilio/amd", amd, TWILIO_TOKEN))[0] == 204
    # the session set up for a call without the result is closed; one for the call as it starts opens
    assert _warm("mismatch") - mismatch == 1 and len(rig.ctx.warm) == 1
    await rig.sim.state.wait_for_session(1)
    report = await _answer_placed(rig, "twilio", placed["id"])
    assert report.played_bytes > 0 and counts.since() == (2, 1)
    first, taken = rig.sim.state.sessions
    assert first.closed.is_set() and not any(e["type"] == "response.create" for e in first.received)
    assert [e["type"] for e in taken.received].count("response.create") >= 1  # the call's greeting went there
    await rig.ctx.wait_idle()


async def test_a_placed_call_that_is_not_answered_closes_its_session_at_once(rig: Rig) -> None:
    wasted = _warm("wasted")
    status, placed, _ = await rig.place("twilio")
    assert status == 201, placed
    session = await rig.sim.state.wait_for_session(0)
    form = {"CallSid": placed["id"], "AccountSid": TWILIO_ACCOUNT, "CallStatus": "no-answer"}
    assert (await post_as_twilio(rig.base + "/twilio/call-status", form, TWILIO_TOKEN))[0] == 204
    assert _warm("wasted") - wasted == 1 and len(rig.ctx.warm) == 0  # not kept until its timeout (60 s)
    await asyncio.wait_for(session.closed.wait(), 10)
    assert (await _state(rig, placed["id"]))["state"] == "failed"


async def _state(rig: Rig, call_id: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(
            rig.base + f"/v1/calls/{call_id}", headers={"Authorization": f"Bearer {API_TOKEN}"}) as reply:
        return await reply.json()


async def test_a_placement_without_a_connection_left_is_refused_with_retry_after(rig: Rig) -> None:
    rig.spend_budget()
    refused = metrics.CALLS.value("twilio", "refused (no budget)")
    status, answer, headers = await rig.place("twilio")
    assert status == 429
    assert "no Voice Live connection left" in answer["error"] and "main" in answer["error"]
    assert headers["Retry-After"] == "60"
    assert rig.creates == [] and len(rig.ctx.warm) == 0  # the carrier was not asked: nothing was placed
    assert metrics.CALLS.value("twilio", "refused (no budget)") - refused == 1

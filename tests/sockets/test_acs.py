"""Azure Communication Services: Event Grid entry, Call Automation requests, signed media sockets,
and whole calls through the gateway and the simulator with the ACS softphone (127.0.0.1 only).

Call Automation requests are captured by a fake azure-core transport: nothing leaves the machine.
ACS tokens are minted with a local RSA key whose JWKS a local server publishes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import jwt
import pytest
from aiohttp import web
from azure.communication.callautomation.aio import CallAutomationClient
from cryptography.hazmat.primitives.asymmetric import rsa
from structlog.testing import capture_logs
from twilio.request_validator import RequestValidator

from gateway import metrics
from gateway.app import create_app
from gateway.audio import ASSETS, b64_len, load_ulaw_8k
from gateway.bridge import CONTEXT
from gateway.carriers.acs.auth import AcsJwtValidator
from gateway.carriers.acs.carrier import AcsCarrier
from gateway.carriers.acs.control import load_apology
from gateway.carriers.acs.phone import place_acs_call
from gateway.carriers.acs.routes import STATE
from gateway.carriers.twilio.carrier import TwilioCarrier
from gateway.config import parse_config
from gateway.simulator import RunningSimulator, SimulatorSettings, ToolCall, start_simulator
from gateway.softphone import Dtmf, Hangup, Reconnect, Say, Silence, WaitForBot
from tests.sockets.loopback import AcsKeys, CapturingTransport, serve

RESOURCE_ID = "5e6f7a8b-0000-4000-8000-00000000acs1"
ISSUER = "https://acscallautomation.communication.azure.com"
SECRET = "eventgrid-secret-9876"
TWILIO_TOKEN = "twilio-auth-token-for-acs-tests"
HOURS = load_ulaw_8k(ASSETS / "caller_hours.wav")
INTERRUPT = load_ulaw_8k(ASSETS / "caller_interrupt.wav")
# How long the gateway waits for ACS to reconnect a media socket that closed. A caller who hangs up
# closes the socket too, and the call ends only when the grace runs out (or ACS says CallDisconnected),
# so most tests keep it short; the tests of reconnecting and of CallDisconnected want the real wait.
SHORT_GRACE_S = 0.3
RECONNECT_GRACE_S = 1.5



@pytest.fixture
def keys(acs_keys: AcsKeys) -> AcsKeys:
    """The ACS signing key (conftest.py); its tokens are for this resource unless a test says otherwise."""
    acs_keys.audience = RESOURCE_ID
    return acs_keys


@dataclass
class AcsRig:
    sim: RunningSimulator
    app: web.Application
    base: str
    transport: CapturingTransport
    keys: AcsKeys

    def media_url(self, profile: str = "main", caller: str | None = None, called: str | None = None,
                  correlation: str = "corr-1") -> str:
        claims = {"profile": profile, "correlation": correlation}
        if caller is not None:
            claims["caller"] = caller
        if called is not None:
            claims["called"] = called
        return self.media_url_with(self.app[CONTEXT].tokens.issue(claims, 3600, carrier="acs"))

    def media_url_with(self, token: str) -> str:
        return self.base.replace("http://", "ws://") + "/acs/media?ctx=" + token

    async def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
        return await self.post_raw(path, json.dumps(body).encode(), headers)

    async def post_raw(self, path: str, data: bytes, headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
        async with aiohttp.ClientSession() as http:
            response = await http.post(self.base + path, data=data,
                                       headers={"Content-Type": "application/json", **(headers or {})})
            await response.read()
            return response


CONFIG = """
voicelive: {{endpoint: "{endpoint}"}}
twilio: {{auth_token: "${{TWILIO}}"}}
acs:
  connection_string: ${{ACS}}
  resource_id: {resource}
  jwks_url: {jwks}
  eventgrid_secret: ${{EG_SECRET}}
  reconnect_grace_s: {grace}{acs_extra}
profiles:
  main: {{model: gpt-realtime, voice: alloy}}
  sales: {{model: gpt-realtime, voice: marin}}
  control:
    model: gpt-realtime
    tools:
      - {{name: transfer_call, builtin: transfer_call, transfer: {{targets: {{operator: "+14155550100"}}}}}}
      - {{name: press_keys, builtin: send_dtmf}}
      - {{name: hang_up, builtin: hang_up}}
routes:
  default: main
  numbers: {{"+15555550123": sales}}
"""


@pytest.fixture
async def acs(keys: AcsKeys) -> AsyncIterator[AcsRig]:
    async with _acs_rig(keys) as rig:
        yield rig


@contextlib.asynccontextmanager
async def _acs_rig(keys: AcsKeys, voicelive_endpoint: str | None = None,
                   tool_calls: dict[int, ToolCall] | None = None,
                   sample_rate: int | None = None, reconnect_grace_s: float = SHORT_GRACE_S) -> AsyncIterator[AcsRig]:
    sim = await start_simulator(SimulatorSettings(audio_speed=4.0, tool_calls=tool_calls or {}))
    access_key = base64.b64encode(b"k" * 32).decode()
    connection = f"endpoint=https://acs.example.communication.azure.com/;accesskey={access_key}"
    endpoint = voicelive_endpoint or sim.endpoint
    acs_extra = f"\n  sample_rate: {sample_rate}" if sample_rate else ""  # unset: the default, 24000
    config = parse_config(CONFIG.format(endpoint=endpoint, resource=RESOURCE_ID, jwks=keys.jwks_url,
                                        grace=reconnect_grace_s, acs_extra=acs_extra),
                          env={"ACS": connection, "EG_SECRET": SECRET, "TWILIO": TWILIO_TOKEN})
    transport = CapturingTransport()
    client = CallAutomationClient.from_connection_string(connection, transport=transport)
    app = create_app(config, carriers=[TwilioCarrier(), AcsCarrier(client)])
    runner, base = await serve(app)
    try:
        yield AcsRig(sim, app, base, transport, keys)
    finally:
        await runner.cleanup()
        await client.close()
        await sim.close()


def incoming_call(correlation: str = "corr-1", to: str = "+15555550123") -> list[dict[str, Any]]:
    return [{"id": str(uuid.uuid4()), "eventType": "Microsoft.Communication.IncomingCall",
             "subject": f"/caller/4:+14255550123/recipient/4:{to}", "eventTime": "2026-11-21T10:00:00Z",
             "dataVersion": "1.0", "metadataVersion": "1", "topic": "/acs",
             "data": {"to": {"kind": "phoneNumber", "rawId": f"4:{to}", "phoneNumber": {"value": to}},
                      "from": {"kind": "phoneNumber", "rawId": "4:+14255550123"},
                      "serverCallId": "srv", "incomingCallContext": "opaque-context", "correlationId": correlation}}]


async def test_event_grid_validation_handshakes(acs: AcsRig) -> None:
    validation = [{"id": "1", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
                   "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}}]
    async with aiohttp.ClientSession() as http:
        ok = await http.post(acs.base + f"/acs/incoming?secret={SECRET}", json=validation)
        assert ok.status == 200
        assert await ok.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
        assert (await http.post(acs.base + "/acs/incoming", json=validation)).status == 401
        assert (await http.post(acs.base + "/acs/incoming?secret=nope", json=validation)).status == 401
        options = await http.options(acs.base + f"/acs/incoming?secret={SECRET}",
                                     headers={"WebHook-Request-Origin": "eventgrid.azure.net"})
        assert options.status == 200 and options.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"


async def test_an_incoming_call_is_answered_once_with_media_streaming(acs: AcsRig) -> None:
    event = incoming_call()
    for _ in range(3):  # Event Grid delivers at least once
        assert (await acs.post(f"/acs/incoming?secret={SECRET}", event)).status == 200
    (answer,) = acs.transport.of("callConnections:answer")
    body = json.loads(answer.content)
    assert body["incomingCallContext"] == "opaque-context"
    assert body["callbackUri"] == acs.base + "/acs/callbacks"
    options = body["mediaStreamingOptions"]
    transport_url = options.pop("transportUrl")
    assert options == {"transportType": "websocket", "audioChannelType": "mixed", "contentType": "audio",
                       "startMediaStreaming": True, "enableBidirectional": True, "audioFormat": "pcm24KMono",
                       "enableDtmfTones": True}
    parts = urlsplit(transport_url)
    assert (parts.scheme, parts.path) == ("ws", "/acs/media")
    claims = acs.app[CONTEXT].tokens.verify(parse_qs(parts.query)["ctx"][0])
    assert claims["profile"] == "sales"  # routed by the called number, signed for any replica
    assert (claims["caller"], claims["called"]) == ("+14255550123", "+15555550123")  # for keys and transfers


async def test_a_placed_call_is_created_with_media_streaming_to_the_gateway(acs: AcsRig) -> None:
    from gateway.carriers.base import OutboundRequest
    from gateway.outbound import CARRIERS

    carrier = acs.app[CARRIERS]["acs"]
    assert carrier.outbound_refusal(acs.app[CONTEXT].config) is None
    placed = await carrier.place_call(acs.app, OutboundRequest(to="+15555550177", from_="+15555550100",
                                                               profile="sales", public_base=acs.base))
    (create,) = [r for r in acs.transport.requests if urlsplit(r.url).path.endswith("/calling/callConnections")]
    body = json.loads(create.content)
    assert [t["rawId"] for t in body["targets"]] == ["4:+15555550177"]
    assert body["sourceCallerIdNumber"]["value"] == "+15555550100"
    assert body["callbackUri"] == acs.base + "/acs/callbacks"
    options = body["mediaStreamingOptions"]
    assert options["enableBidirectional"] is True and options["startMediaStreaming"] is True
    parts = urlsplit(options["transportUrl"])
    assert (parts.scheme, parts.path) == ("ws", "/acs/media")
    claims = acs.app[CONTEXT].tokens.verify(parse_qs(parts.query)["ctx"][0])
    assert claims["profile"] == "sales" and claims["correlation"].startswith("placed-")
    assert placed.call_id == "cc-1" and placed.detects_machine is False  # Call Automation has no detection


async def test_the_media_socket_is_refused_without_a_valid_acs_token(acs: AcsRig) -> None:
    before = metrics.AUTH_REJECTIONS.value("acs", "media", "token refused: wrong audience")
    url = acs.media_url()
    cases = [
        ({}, 401),
        ({"Authorization": acs.keys.bearer(audience="someone-else")}, 401),
        ({"Authorization": acs.keys.bearer(issuer="https://evil.example")}, 401),
        ({"Authorization": acs.keys.bearer(ttl=-600)}, 401),
        ({"Authorization": acs.keys.bearer(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))}, 401),
    ]
    async with aiohttp.ClientSession() as http:
        for headers, status in cases:
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await http.ws_connect(url, headers={**headers, "x-ms-call-connection-id": "cc-x"})
            assert err.value.status == status
        good = {"Authorization": acs.keys.bearer(), "x-ms-call-connection-id": "cc-x"}
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await http.ws_connect(url.split("?")[0] + "?ctx=forged.token", headers=good)
        assert err.value.status == 403
    assert acs.sim.state.sessions == []  # nothing was opened on Voice Live
    assert metrics.AUTH_REJECTIONS.value("acs", "media", "token refused: wrong audience") == before + 1


@pytest.mark.parametrize(("configured", "rate", "streaming", "output"), [
    pytest.param(None, 24000, "pcm24KMono", "pcm16", id="default-24kHz"),
    pytest.param(16000, 16000, "pcm16KMono", "pcm16_16000hz", id="16kHz"),
])
async def test_a_whole_acs_call_with_barge_in(keys: AcsKeys, configured: int | None, rate: int, streaming: str,
                                              output: str) -> None:
    bpm = rate * 2 // 1000  # PCM16 bytes per ms: 48 at 24 kHz, 32 at 16 kHz
    async with _acs_rig(keys, sample_rate=configured) as acs:
        assert (await acs.post(f"/acs/incoming?secret={SECRET}", incoming_call())).status == 200
        (answer,) = acs.transport.of("callConnections:answer")
        apology = acs.app[STATE].apology
        # the call the answer named (the stand-in's id), on the socket it asked for: its media takes the
        # session opened at the answer
        call_id = f"cc-{acs.transport.requests.index(answer) + 1}"
        media_url = json.loads(answer.content)["mediaStreamingOptions"]["transportUrl"]
        report = await place_acs_call(media_url, [
            Say(HOURS, "question"), WaitForBot(heard_ms=1200), Say(INTERRUPT, "interruption"), Hangup(),
        ], token=acs.keys.mint(), call_connection_id=call_id, sample_rate=rate)
        session = await asyncio.wait_for(acs.sim.state.wait_closed(0), 10)
        await asyncio.wait_for(acs.app[CONTEXT].wait_idle(), 10)
        assert len(acs.sim.state.sessions) == 1
        hangups = acs.transport.of(":terminate")
    # answered asking ACS for PCM mono at the configured rate; the fallback clip is made at that rate
    assert json.loads(answer.content)["mediaStreamingOptions"]["audioFormat"] == streaming
    assert apology == load_apology(str(ASSETS / "apology.wav"), rate)
    assert report.violations == 0, report.violation_samples
    assert (session.session["input_audio_format"], session.session["input_audio_sampling_rate"],
            session.session["output_audio_format"]) == ("pcm16", rate, output)
    assert {b64_len(p) for p in report.sent_payloads} == {20 * bpm}  # 20 ms AudioData frames
    assert session.appended == report.sent_payloads  # passed through untouched, silence included
    # the bot's audio reached the phone as Voice Live sent it
    ((_, stop),) = report.events_of("stop_audio")
    (truncation,) = session.truncations
    first_item = next(iter(session.items_audio_bytes))
    spoken = b"".join(base64.b64decode(e["delta"]) for e in session.sent
                      if e.get("type") == "response.audio.delta" and e.get("item_id") == first_item)
    heard = b"".join(base64.b64decode(p) for p in report.received_payloads)
    before_stop = stop["played_bytes_total"] + stop["discarded_bytes"]
    assert 1200 * bpm <= before_stop and heard[:before_stop] == spoken[:before_stop]
    assert max(map(b64_len, report.received_payloads)) <= 20 * bpm  # paced in 20 ms pieces
    # the gateway paced by the call's rate: the phone held no more than the lead when StopAudio came
    assert stop["discarded_bytes"] <= 200 * bpm, stop
    assert report.clears == 1  # StopAudio
    assert truncation["ok"] and truncation["item_id"] == first_item
    played_ms = stop["played_bytes_total"] / bpm
    assert abs(truncation["audio_end_ms"] - played_ms) <= 80, (truncation, played_ms)
    assert hangups == []  # the caller hung up: nothing to hang up


async def test_a_reconnected_media_socket_continues_the_same_session(keys: AcsKeys) -> None:
    async with _acs_rig(keys, reconnect_grace_s=RECONNECT_GRACE_S) as acs:
        report = await place_acs_call(acs.media_url(), [
            Say(HOURS, "question"), WaitForBot(), Reconnect(), Silence(300), Say(HOURS[:8000], "again"),
            WaitForBot(heard_ms=400), Hangup(),
        ], token=acs.keys.mint(), call_connection_id="cc-reconnect")
        session = await asyncio.wait_for(acs.sim.state.wait_closed(0), 10)
        await asyncio.wait_for(acs.app[CONTEXT].wait_idle(), 10)
        assert len(acs.sim.state.sessions) == 1  # one Voice Live session for the whole call
        assert report.connections == 2 and report.violations == 0
        assert session.appended == report.sent_payloads  # the caller's audio continued on the new socket
        ((reconnected_at, _),) = report.events_of("reconnect")
        assert any(t > reconnected_at for t, _ in report.events_of("bot_audio_start"))  # the bot is heard again


async def test_the_gateway_hangs_up_through_call_automation_when_voicelive_fails(acs: AcsRig) -> None:
    async def drop() -> None:
        session = await acs.sim.state.wait_for_session(0)
        await session.close(1011, "simulated failure")

    dropper = asyncio.create_task(drop())
    report = await place_acs_call(acs.media_url(), [Silence(6000), Hangup()], token=acs.keys.mint(),
                                  call_connection_id="cc-fail")
    await dropper
    await asyncio.wait_for(acs.app[CONTEXT].wait_idle(), 10)
    assert report.closed_by == "gateway"
    (hangup,) = acs.transport.of(":terminate")
    assert "/calling/callConnections/cc-fail:terminate" in hangup.url


async def test_callbacks_need_a_valid_token_and_a_failed_stream_ends_the_call(acs: AcsRig) -> None:
    call = asyncio.create_task(place_acs_call(acs.media_url(), [Silence(8000), Hangup()], token=acs.keys.mint(),
                                              call_connection_id="cc-cb"))
    await acs.sim.state.wait_for_session(0)
    failed = [{"id": "e1", "source": "calling/callConnections/cc-cb", "specversion": "1.0",
               "type": "Microsoft.Communication.MediaStreamingFailed",
               "data": {"callConnectionId": "cc-cb", "correlationId": "corr-1",
                        "resultInformation": {"code": 500, "subCode": 8581, "message": "stream failed"}}}]
    assert (await acs.post("/acs/callbacks", failed)).status == 401
    assert (await acs.post("/acs/callbacks", failed, {"Authorization": acs.keys.bearer(audience="x")})).status == 401
    assert not call.done()
    assert (await acs.post("/acs/callbacks", failed, {"Authorization": acs.keys.bearer()})).status == 200
    report = await asyncio.wait_for(call, 10)
    await asyncio.wait_for(acs.app[CONTEXT].wait_idle(), 10)
    assert report.closed_by == "gateway" and report.duration_ms < 7000
    assert len(acs.transport.of("callConnections/cc-cb:terminate")) == 1


@pytest.mark.parametrize("status", [403, 503, None], ids=["403", "503", "unreachable"])
async def test_a_refused_voicelive_session_plays_the_apology_then_hangs_up(keys: AcsKeys, status: int | None) -> None:
    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=status or 500)

    refuser = web.Application()
    refuser.router.add_get("/voice-live/realtime", refuse)
    runner, endpoint = await serve(refuser)
    if status is None:
        await runner.cleanup()  # nothing listens on that port any more
    label = str(status) if status else "unreachable"
    before = metrics.VOICELIVE_FAILURES.value("acs", label)
    try:
        async with _acs_rig(keys, endpoint) as acs:
            report = await place_acs_call(acs.media_url(), [Silence(8000), Hangup()], token=acs.keys.mint(),
                                          call_connection_id="cc-refused")
            await asyncio.wait_for(acs.app[CONTEXT].wait_idle(), 10)
            apology_bytes = len(base64.b64decode(acs.app[STATE].apology or ""))
            hangups = acs.transport.of("callConnections/cc-refused:terminate")
    finally:
        await runner.cleanup()
    assert apology_bytes > 0
    assert report.closed_by == "gateway" and len(hangups) == 1
    # the caller heard the whole apology, then the call ended, well before the caller would have
    assert report.played_bytes == apology_bytes, (report.unplayed_bytes, report.discarded_bytes)
    assert report.duration_ms < 8000
    assert metrics.VOICELIVE_FAILURES.value("acs", label) == before + 1


@pytest.mark.parametrize("tool", ["transfer_call", "hang_up"])
async def test_the_bot_ends_the_call_through_call_automation_after_its_last_words(keys: AcsKeys, tool: str) -> None:
    call = ToolCall("transfer_call", {"destination": "operator"}) if tool == "transfer_call" else ToolCall("hang_up")
    async with _acs_rig(keys, tool_calls={1: call}) as acs:
        report = await place_acs_call(acs.media_url("control", called="+15555550123"),
                                      [Say(HOURS, "that will be all"), Silence(20_000)],
                                      token=acs.keys.mint(), call_connection_id="cc-ending")
        session = await asyncio.wait_for(acs.sim.state.wait_closed(0), 10)
        await asyncio.wait_for(acs.app[CONTEXT].wait_idle(), 10)
        transfers = acs.transport.of(":transferToParticipant")
        hangups = acs.transport.of(":terminate")
    if tool == "transfer_call":
        (transfer,) = transfers
        assert "/calling/callConnections/cc-ending:transferToParticipant" in transfer.url
        body = json.loads(transfer.content)
        assert body["targetParticipant"]["rawId"] == "4:+14155550100"
        assert body["sourceCallerIdNumber"]["value"] == "+15555550123"  # the number the caller dialled
        assert hangups == []  # the caller goes to the operator, the call is not hung up
    else:
        (hangup,) = hangups
        assert "/calling/callConnections/cc-ending:terminate" in hangup.url and transfers == []
    assert report.closed_by == "gateway" and report.violations == 0
    # the bot's last words were heard in full before the hand-over or the hang-up
    assert report.played_bytes == sum(session.items_audio_bytes.values()) > 0
    assert report.discarded_bytes == 0 and report.unplayed_bytes == 0 and report.clears == 0


async def test_send_dtmf_presses_keys_towards_the_caller_through_call_automation(keys: AcsKeys) -> None:
    async with _acs_rig(keys, tool_calls={1: ToolCall("press_keys", {"digits": "12#"})}) as acs:
        report = await place_acs_call(acs.media_url("control", caller="+14255550123"),
                                      [Say(HOURS, "press one two pound"), WaitForBot(), Hangup()],
                                      token=acs.keys.mint(), call_connection_id="cc-keys")
        session = await asyncio.wait_for(acs.sim.state.wait_closed(0), 10)
        await asyncio.wait_for(acs.app[CONTEXT].wait_idle(), 10)
        (tones,) = acs.transport.of(":sendDtmfTones")
    body = json.loads(tones.content)
    assert body["tones"] == ["one", "two", "pound"]
    assert body["targetParticipant"]["rawId"] == "4:+14255550123"
    (output,) = session.function_call_outputs
    assert json.loads(output["output"]) == {"status": "pressed 3 key(s)"}
    assert report.played_bytes > 0 and report.closed_by == "caller"  # the bot went on after the keys


async def test_caller_keys_on_acs_reach_the_model(acs: AcsRig) -> None:
    report = await place_acs_call(acs.media_url(), [Dtmf("7"), Dtmf("#"), WaitForBot(), Hangup()],
                                  token=acs.keys.mint(), call_connection_id="cc-caller-keys")
    session = await asyncio.wait_for(acs.sim.state.wait_closed(0), 10)
    texts = [e["item"]["content"][0]["text"] for e in session.received
             if e.get("type") == "conversation.item.create" and e["item"].get("type") == "message"]
    assert texts == ["[The caller pressed these keys on the phone keypad: 7 #]"]
    assert report.played_bytes > 0  # and the bot answered them


# --- attacks on a running gateway ---------------------------------------------------------------


def twilio_start(call_sid: str, token: str) -> str:
    return json.dumps({"event": "start", "start": {
        "streamSid": "MZ" + call_sid, "callSid": call_sid, "accountSid": "AC1", "tracks": ["inbound"],
        "customParameters": {"token": token},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})


def twilio_headers(acs: AcsRig) -> dict[str, str]:
    url = acs.base.replace("http://", "ws://") + "/twilio/media"  # no public_url: the Host header's address
    return {"X-Twilio-Signature": RequestValidator(TWILIO_TOKEN).compute_signature(url, {})}


def acs_headers(acs: AcsRig, call_id: str) -> dict[str, str]:
    return {"Authorization": acs.keys.bearer(), "x-ms-call-connection-id": call_id}


async def test_requests_share_one_fetch_of_the_signing_keys_that_hangs(acs: AcsRig) -> None:
    hits = 0
    gate = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        await gate.wait()
        return web.json_response({"keys": []})

    keys_app = web.Application()
    keys_app.router.add_get("/calling/keys", hang)
    runner, base = await serve(keys_app)
    state = acs.app[STATE]
    # no keys cached; a fetch gives up after 0.5 s, and a key id unknown may be fetched again after 0.25 s
    validator = state.validator = AcsJwtValidator(base + "/calling/keys", audience=RESOURCE_ID,
                                                  fetch_timeout_s=0.5, min_refetch_s=0.25)
    event = [{"type": "Microsoft.Communication.CallConnected", "data": {"callConnectionId": "cc-none"}}]
    try:
        # tokens that cannot be valid are refused before any key is fetched
        hs256 = jwt.encode({"iss": ISSUER, "aud": RESOURCE_ID, "exp": int(time.time()) + 60}, "s" * 32,
                           headers={"kid": acs.keys.kid})
        for authorization in ["", "Bearer not-a-jwt", f"Bearer {hs256}", acs.keys.bearer(audience="another"),
                              acs.keys.bearer(issuer="https://evil.example"), acs.keys.bearer(ttl=-600)]:
            assert (await acs.post("/acs/callbacks", event, {"Authorization": authorization})).status == 401
        assert hits == 0
        started = time.monotonic()
        responses = await asyncio.gather(*(acs.post("/acs/callbacks", event, {"Authorization": acs.keys.bearer()})
                                           for _ in range(20)))
        elapsed = time.monotonic() - started
        assert hits == 1  # one fetch, shared by the 20 requests
        assert elapsed < 1.5, elapsed  # one fetch timeout (0.5 s), not one each
        assert [r.status for r in responses] == [503] * 20  # not checked: the keys are unavailable
        # the failure is remembered for a while: refused at once, no new fetch
        assert (await acs.post("/acs/callbacks", event, {"Authorization": acs.keys.bearer()})).status == 503
        assert hits == 1
    finally:
        gate.set()
        await validator.close()
        await runner.cleanup()


async def test_a_live_call_cannot_be_taken_over_with_another_calls_stream_token(acs: AcsRig) -> None:
    before = metrics.AUTH_REJECTIONS.value("acs", "media", "stream token for another call")
    victim = asyncio.create_task(place_acs_call(
        acs.media_url(), [Say(HOURS, "question"), WaitForBot(), Hangup()], token=acs.keys.mint(),
        call_connection_id="cc-victim", correlation_id="corr-1"))
    try:
        await asyncio.wait_for(acs.sim.state.wait_for_session(0), 10)
        # a valid ACS token, and the stream token of another call (its own, say), for the victim's call id
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await http.ws_connect(acs.media_url(correlation="corr-2"),
                                      headers={**acs_headers(acs, "cc-victim"), "x-ms-call-correlation-id": "corr-2"})
        assert err.value.status == 403
        report = await asyncio.wait_for(victim, 30)
    finally:
        victim.cancel()
        await asyncio.gather(victim, return_exceptions=True)
    await asyncio.wait_for(acs.app[CONTEXT].wait_idle(), 10)
    assert report.connections == 1 and report.closed_by == "caller" and report.violations == 0
    assert report.played_bytes > 0  # the caller heard the bot: the call was never taken over
    assert len(acs.sim.state.sessions) == 1
    assert metrics.AUTH_REJECTIONS.value("acs", "media", "stream token for another call") == before + 1


async def test_call_tokens_open_only_their_carriers_streams(acs: AcsRig) -> None:
    ctx = acs.app[CONTEXT]
    twilio_token = ctx.tokens.issue({"call": "CA-tw", "profile": "main"}, 60, carrier="twilio")
    no_call = ctx.tokens.issue({"profile": "main"}, 60)  # names no call (nor carrier)
    async with aiohttp.ClientSession() as http:
        for token, reason in [(twilio_token, "stream token for another carrier"),
                              (no_call, "stream token names no call")]:
            before = metrics.AUTH_REJECTIONS.value("acs", "media", reason)
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await http.ws_connect(acs.media_url_with(token), headers=acs_headers(acs, "cc-new"))
            assert err.value.status == 403
            assert metrics.AUTH_REJECTIONS.value("acs", "media", reason) == before + 1
        # and an ACS stream token opens no Twilio stream
        acs_token = parse_qs(urlsplit(acs.media_url()).query)["ctx"][0]
        before = metrics.AUTH_REJECTIONS.value("twilio", "media", "call token for another carrier")
        async with http.ws_connect(acs.base + "/twilio/media", headers=twilio_headers(acs)) as ws:
            await ws.send_str(twilio_start("CA-acs", acs_token))
            msg = await asyncio.wait_for(ws.receive(), 10)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1008
        assert metrics.AUTH_REJECTIONS.value("twilio", "media", "call token for another carrier") == before + 1
    assert acs.sim.state.sessions == []


async def test_acs_requests_never_reach_a_twilio_call_with_the_same_id(acs: AcsRig) -> None:
    ctx = acs.app[CONTEXT]
    token = ctx.tokens.issue({"call": "CAlive", "profile": "main"}, 60, carrier="twilio")
    async with aiohttp.ClientSession() as http, http.ws_connect(acs.base + "/twilio/media",
                                                                headers=twilio_headers(acs)) as phone:
        await phone.send_str(twilio_start("CAlive", token))
        await asyncio.wait_for(acs.sim.state.wait_for_session(0), 10)
        twilio_call = ctx.calls["CAlive"]
        # an ACS media socket for that id, with a valid ACS JWT and stream token
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await http.ws_connect(acs.media_url(), headers=acs_headers(acs, "CAlive"))
        assert err.value.status == 403
        # an ACS callback saying that call is over
        hung_up = [{"type": "Microsoft.Communication.CallDisconnected", "data": {"callConnectionId": "CAlive"}}]
        assert (await acs.post("/acs/callbacks", hung_up, {"Authorization": acs.keys.bearer()})).status == 200
        assert ctx.calls.get("CAlive") is twilio_call and not twilio_call.call.ended
        assert not phone.closed
        await phone.send_str(json.dumps({"event": "stop", "streamSid": "MZCAlive"}))
        msg = await asyncio.wait_for(phone.receive(), 10)
        while msg.type == aiohttp.WSMsgType.TEXT:  # the bot's audio, then the close
            msg = await asyncio.wait_for(phone.receive(), 10)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    await asyncio.wait_for(ctx.wait_idle(), 10)
    assert twilio_call.call.end_reason == "caller_hung_up"
    assert len(acs.sim.state.sessions) == 1


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value]
    return value


NOT_A_DELIVERY = [
    b"{not json",
    b"\xff\xfe\x00garbage",
    b"5",
    b'"Microsoft.Communication.IncomingCall"',
    b"null",
    b"[]",
    b'[1, "x", null]',
    b"[" * 100_000 + b"]" * 100_000,  # nested beyond what the parser takes
    json.dumps([{"eventType": _nested(500), "data": _nested(500)}]).encode(),  # parsed, but nested absurdly
]


@pytest.mark.parametrize("route", ["incoming", "callbacks"])
async def test_what_is_not_a_delivery_of_events_gets_a_400_and_one_log_line(
        acs: AcsRig, route: str, caplog: pytest.LogCaptureFixture) -> None:
    path = f"/acs/incoming?secret={SECRET}" if route == "incoming" else "/acs/callbacks"
    for body in NOT_A_DELIVERY:
        headers = {"Authorization": acs.keys.bearer()} if route == "callbacks" else {}
        with capture_logs() as logs:
            response = await acs.post_raw(path, body, headers)
        assert response.status == 400, body[:40]
        lines = [line for line in logs if line["log_level"] in ("warning", "error", "critical")]
        assert len(lines) == 1 and lines[0]["log_level"] == "warning", (body[:40], lines)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no traceback anywhere
    assert acs.transport.of("callConnections:answer") == []


async def test_an_acs_caller_who_hangs_up_ends_the_call_at_once(keys: AcsKeys) -> None:
    loop = asyncio.get_running_loop()
    async with _acs_rig(keys, reconnect_grace_s=RECONNECT_GRACE_S) as acs:
        with capture_logs() as logs:
            report = await place_acs_call(acs.media_url(), [Silence(600), Hangup()], token=acs.keys.mint(),
                                          call_connection_id="cc-gone")
            hung_up = [{"id": "e-gone", "source": "calling/callConnections/cc-gone", "specversion": "1.0",
                        "type": "Microsoft.Communication.CallDisconnected",
                        "data": {"callConnectionId": "cc-gone", "correlationId": "corr-1"}}]
            posted = loop.time()
            assert (await acs.post("/acs/callbacks", hung_up, {"Authorization": acs.keys.bearer()})).status == 200
            await asyncio.wait_for(acs.app[CONTEXT].wait_idle(), 10)
            ended = loop.time() - posted
        assert ended < 0.5  # at once: not after the 1.5 s the gateway waits for ACS to reconnect a socket
        (summary,) = [line for line in logs if line.get("event") == "call ended"]
        assert summary["end_reason"] == "caller_hung_up"
        assert abs(summary["duration_ms"] - report.duration_ms) < 300  # its real length: until the socket went
        assert acs.transport.of(":terminate") == []  # the caller hung up: nothing to hang up

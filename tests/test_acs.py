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
from jwt.algorithms import RSAAlgorithm

from gateway import metrics
from gateway.acs_routes import APOLOGY, load_apology
from gateway.app import create_app
from gateway.audio import ASSETS, b64_len, load_ulaw_8k
from gateway.bridge import CONTEXT
from gateway.config import parse_config
from gateway.simulator import RunningSimulator, SimulatorSettings, ToolCall, start_simulator
from gateway.softphone import Dtmf, Hangup, Reconnect, Say, Silence, WaitForBot, place_acs_call
from tests.loopback import CapturingTransport, serve

RESOURCE_ID = "5e6f7a8b-0000-4000-8000-00000000acs1"
ISSUER = "https://acscallautomation.communication.azure.com"
SECRET = "eventgrid-secret-9876"
HOURS = load_ulaw_8k(ASSETS / "caller_hours.wav")
INTERRUPT = load_ulaw_8k(ASSETS / "caller_interrupt.wav")


@dataclass
class Keys:
    private: Any
    kid: str
    jwks_url: str

    def mint(self, audience: str = RESOURCE_ID, issuer: str = ISSUER, ttl: int = 300, key: Any = None) -> str:
        now = int(time.time())
        claims = {"iss": issuer, "aud": audience, "iat": now, "nbf": now - 5, "exp": now + ttl}
        return jwt.encode(claims, key or self.private, algorithm="RS256", headers={"kid": self.kid})

    def bearer(self, **kwargs: Any) -> str:
        return "Bearer " + self.mint(**kwargs)


@pytest.fixture
async def keys() -> AsyncIterator[Keys]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = "test-key-1"
    jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    jwk.update(kid=kid, use="sig", alg="RS256")

    async def jwks(request: web.Request) -> web.Response:
        return web.json_response({"keys": [jwk]})

    app = web.Application()
    app.router.add_get("/calling/keys", jwks)
    runner, base = await serve(app)
    try:
        yield Keys(private, kid, f"{base}/calling/keys")
    finally:
        await runner.cleanup()


@dataclass
class AcsRig:
    sim: RunningSimulator
    app: web.Application
    base: str
    transport: CapturingTransport
    keys: Keys

    def media_url(self, profile: str = "main", caller: str | None = None, called: str | None = None) -> str:
        claims = {"profile": profile, "correlation": "corr-1"}
        if caller is not None:
            claims["caller"] = caller
        if called is not None:
            claims["called"] = called
        token = self.app[CONTEXT].tokens.issue(claims, 3600)
        return self.base.replace("http://", "ws://") + "/acs/media?ctx=" + token

    async def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
        async with aiohttp.ClientSession() as http:
            response = await http.post(self.base + path, json=body, headers=headers or {})
            await response.read()
            return response


CONFIG = """
voicelive: {{endpoint: "{endpoint}"}}
acs:
  connection_string: ${{ACS}}
  resource_id: {resource}
  jwks_url: {jwks}
  eventgrid_secret: ${{EG_SECRET}}
  reconnect_grace_s: 1.5{acs_extra}
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
async def acs(keys: Keys) -> AsyncIterator[AcsRig]:
    async with _acs_rig(keys) as rig:
        yield rig


@contextlib.asynccontextmanager
async def _acs_rig(keys: Keys, voicelive_endpoint: str | None = None,
                   tool_calls: dict[int, ToolCall] | None = None,
                   sample_rate: int | None = None) -> AsyncIterator[AcsRig]:
    sim = await start_simulator(SimulatorSettings(audio_speed=4.0, tool_calls=tool_calls or {}))
    access_key = base64.b64encode(b"k" * 32).decode()
    connection = f"endpoint=https://acs.example.communication.azure.com/;accesskey={access_key}"
    endpoint = voicelive_endpoint or sim.endpoint
    acs_extra = f"\n  sample_rate: {sample_rate}" if sample_rate else ""  # unset: the default, 24000
    config = parse_config(CONFIG.format(endpoint=endpoint, resource=RESOURCE_ID, jwks=keys.jwks_url,
                                        acs_extra=acs_extra),
                          env={"ACS": connection, "EG_SECRET": SECRET})
    transport = CapturingTransport()
    client = CallAutomationClient.from_connection_string(connection, transport=transport)
    app = create_app(config, acs_client=client)
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
async def test_a_whole_acs_call_with_barge_in(keys: Keys, configured: int | None, rate: int, streaming: str,
                                              output: str) -> None:
    bpm = rate * 2 // 1000  # PCM16 bytes per ms: 48 at 24 kHz, 32 at 16 kHz
    async with _acs_rig(keys, sample_rate=configured) as acs:
        assert (await acs.post(f"/acs/incoming?secret={SECRET}", incoming_call())).status == 200
        apology = acs.app[APOLOGY]
        report = await place_acs_call(acs.media_url(), [
            Say(HOURS, "question"), WaitForBot(heard_ms=1200), Say(INTERRUPT, "interruption"), Hangup(),
        ], token=acs.keys.mint(), call_connection_id="cc-barge", sample_rate=rate)
        session = await asyncio.wait_for(acs.sim.state.wait_closed(0), 10)
        await asyncio.wait_for(acs.app[CONTEXT].wait_idle(), 10)
        (answer,) = acs.transport.of("callConnections:answer")
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


async def test_a_reconnected_media_socket_continues_the_same_session(acs: AcsRig) -> None:
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
async def test_a_refused_voicelive_session_plays_the_apology_then_hangs_up(keys: Keys, status: int | None) -> None:
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
            apology_bytes = len(base64.b64decode(acs.app[APOLOGY] or ""))
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
async def test_the_bot_ends_the_call_through_call_automation_after_its_last_words(keys: Keys, tool: str) -> None:
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


async def test_send_dtmf_presses_keys_towards_the_caller_through_call_automation(keys: Keys) -> None:
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

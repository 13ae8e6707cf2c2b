"""Vonage: signed answer and event webhooks, the NCCO, the media socket bound to its call by the
answer's token, whole calls through the gateway and the simulator with the Vonage softphone, and call
control through a local stand-in of the Voice API (127.0.0.1 only)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway import metrics
from gateway.app import create_app
from gateway.audio import ASSETS, load_ulaw_8k, read_wav
from gateway.bridge import CONTEXT
from gateway.carriers.vonage.auth import webhook_token
from gateway.carriers.vonage.codec import FRAME_BYTES
from gateway.carriers.vonage.phone import place_vonage_call
from gateway.config import parse_config
from gateway.simulator import RunningSimulator, SimulatorSettings, ToolCall, start_simulator
from gateway.softphone import CallRejected, Dtmf, Hangup, Say, Silence, WaitForBot
from gateway.softphone.cli import register_cli
from tests.sockets.loopback import LogCapture, serve

SECRET = "vonage-signature-secret-for-tests"
APP_ID = "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab"
HOURS = load_ulaw_8k(ASSETS / "caller_hours.wav")
INTERRUPT = load_ulaw_8k(ASSETS / "caller_interrupt.wav")
BPM = 32  # PCM16 at 16 kHz: bytes per millisecond
_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE_PEM = _KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode()
PUBLIC_KEY = _KEY.public_key()

CONFIG = """
voicelive: {{endpoint: "{endpoint}"}}
gateway: {{insecure_dev_mode: {insecure}}}
vonage:
  signature_secret: ${{SECRET:-}}
  application_id: ${{APP_ID:-}}
  private_key: ${{PRIVATE_KEY:-}}
  api_base_url: {api}
profiles:
  main: {{model: gpt-realtime, voice: alloy}}
  sales: {{model: gpt-realtime, voice: marin}}
  greeter:
    model: gpt-realtime
    voice: alloy
    greeting: Hello, thanks for calling. How can I help you today?
  control:
    model: gpt-realtime
    tools:
      - {{name: transfer_call, builtin: transfer_call, transfer: {{targets: {{operator: "+14155550100"}}}}}}
      - {{name: press_keys, builtin: send_dtmf}}
      - {{name: hang_up, builtin: hang_up}}
routes:
  default: main
  numbers: {{"+15555550123": sales, "+15555550111": greeter, "+15555550222": control}}
"""


@dataclass
class VoiceApi:
    """A local stand-in for the Vonage Voice API: records every request it gets."""

    requests: list[tuple[str, str, dict[str, Any], str]] = field(default_factory=list)  # method, path, body, auth
    status: int = 204

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path, await request.json(),
                              request.headers.get("Authorization", "")))
        return web.Response(status=self.status)


@dataclass
class VonageRig:
    sim: RunningSimulator
    app: web.Application
    base: str
    api: VoiceApi

    @property
    def answer_url(self) -> str:
        return self.base + "/vonage/answer"

    async def request(self, method: str, path: str, *, params: dict[str, str] | None = None, body: Any = None,
                      headers: dict[str, str] | None = None) -> tuple[int, str]:
        data = json.dumps(body).encode() if body is not None else None
        async with aiohttp.ClientSession() as http, http.request(
                method, self.base + path, params=params, data=data,
                headers={**({"Content-Type": "application/json"} if data else {}), **(headers or {})}) as reply:
            return reply.status, await reply.text()


def signed(body: bytes | None = None, secret: str = SECRET, **kwargs: Any) -> dict[str, str]:
    return {"Authorization": "Bearer " + webhook_token(secret, body, **kwargs)}


def answer_params(to: str = "15555550123", call_uuid: str = "call-1") -> dict[str, str]:
    return {"to": to, "from": "14255550123", "uuid": call_uuid, "conversation_uuid": "CON-1"}


@contextlib.asynccontextmanager
async def vonage_rig(*, credentials: bool = True, insecure: bool = False, secret: str | None = SECRET,
                     voicelive_endpoint: str | None = None,
                     tool_calls: dict[int, ToolCall] | None = None) -> AsyncIterator[VonageRig]:
    sim = await start_simulator(SimulatorSettings(audio_speed=4.0, tool_calls=tool_calls or {}))
    api = VoiceApi()
    api_app = web.Application()
    api_app.router.add_put("/v1/calls/{uuid}", api.handle)
    api_app.router.add_put("/v1/calls/{uuid}/dtmf", api.handle)
    api_runner, api_base = await serve(api_app)
    env = {"SECRET": secret or "", "APP_ID": APP_ID if credentials else "",
           "PRIVATE_KEY": PRIVATE_PEM if credentials else ""}
    config = parse_config(CONFIG.format(endpoint=voicelive_endpoint or sim.endpoint, insecure=str(insecure).lower(),
                                        api=api_base), env=env)
    app = create_app(config)
    runner, base = await serve(app)
    try:
        yield VonageRig(sim, app, base, api)
    finally:
        await runner.cleanup()
        await api_runner.cleanup()
        await sim.close()


@pytest.fixture
async def vonage() -> AsyncIterator[VonageRig]:
    async with vonage_rig() as rig:
        yield rig


async def _finished(rig: VonageRig, index: int = 0) -> Any:
    session = await asyncio.wait_for(rig.sim.state.wait_closed(index), 10)
    await asyncio.wait_for(rig.app[CONTEXT].wait_idle(), 10)
    return session


def _spoken(session: Any, item_id: str | None = None) -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in session.sent
                    if e.get("type") == "response.audio.delta" and (item_id is None or e.get("item_id") == item_id))


def _heard(report: Any) -> bytes:
    return b"".join(base64.b64decode(p) for p in report.received_payloads)


# --- whole calls ----------------------------------------------------------------------------------


async def test_a_whole_call_greeting_then_question_audio_byte_exact_both_ways(vonage: VonageRig) -> None:
    report = await place_vonage_call(vonage.answer_url, [WaitForBot(), Say(HOURS, "hours"), WaitForBot(), Hangup()],
                                     to="15555550111", signature_secret=SECRET)
    session = await _finished(vonage)
    assert report.violations == 0, report.violation_samples
    assert (session.session["input_audio_format"], session.session["input_audio_sampling_rate"],
            session.session["output_audio_format"]) == ("pcm16", 16000, "pcm16_16000hz")
    # what the caller sent is what Voice Live got: every 640-byte frame, base64 once, silence included
    assert {len(base64.b64decode(p)) for p in report.sent_payloads} == {FRAME_BYTES}
    assert session.appended == report.sent_payloads
    # what Voice Live sent is what the phone got, in 640-byte frames (the last partial frame of the
    # last answer waits for more audio that never comes: the caller hung up)
    spoken, heard = _spoken(session), _heard(report)
    assert len(session.items_audio_bytes) == 2  # the greeting and the answer
    assert {len(base64.b64decode(p)) for p in report.received_payloads} == {FRAME_BYTES}
    assert heard == spoken[:len(heard)] and len(spoken) - len(heard) < FRAME_BYTES
    assert report.marks_received and report.marks_echoed == report.marks_received  # every notify answered
    assert report.closed_by == "caller" and vonage.api.requests == []  # the caller hung up: nothing to do


async def test_barge_in_clears_the_phone_and_truncates_at_what_vonage_reported_played(vonage: VonageRig) -> None:
    report = await place_vonage_call(vonage.answer_url, [
        Say(HOURS, "question"), WaitForBot(heard_ms=1200), Say(INTERRUPT, "interruption"), Hangup(),
    ], signature_secret=SECRET)
    session = await _finished(vonage)
    assert report.violations == 0, report.violation_samples
    assert report.clears == 1
    ((_, clear),) = report.events_of("clear")
    (truncation,) = session.truncations
    first_item = next(iter(session.items_audio_bytes))
    assert truncation["ok"] and truncation["item_id"] == first_item
    # the phone got the answer as Voice Live sent it, up to the clear
    before_clear = clear["played_bytes_total"] + clear["discarded_bytes"]
    assert 1200 * BPM <= before_clear and _heard(report)[:before_clear] == _spoken(session, first_item)[:before_clear]
    # truncated at what the phone had played when the clear came (its notifies), not at what it was sent
    played_ms = clear["played_bytes_total"] / BPM
    assert abs(truncation["audio_end_ms"] - played_ms) <= 80, (truncation, played_ms)
    assert clear["discarded_bytes"] > 0  # audio was sent ahead of playback, and dropped by the clear
    assert report.marks_echoed  # notifies answered as the audio played


async def test_caller_keys_reach_the_model(vonage: VonageRig) -> None:
    report = await place_vonage_call(vonage.answer_url, [Dtmf("7"), Dtmf("#"), WaitForBot(), Hangup()],
                                     signature_secret=SECRET)
    session = await _finished(vonage)
    texts = [e["item"]["content"][0]["text"] for e in session.received
             if e.get("type") == "conversation.item.create" and e["item"].get("type") == "message"]
    assert texts == ["[The caller pressed these keys on the phone keypad: 7 #]"]
    assert report.played_bytes > 0 and report.violations == 0  # and the bot answered them


def _api_claims(auth: str) -> dict[str, Any]:
    scheme, _, token = auth.partition(" ")
    assert scheme == "Bearer"
    return jwt.decode(token, PUBLIC_KEY, algorithms=["RS256"])


@pytest.mark.parametrize("tool", ["transfer_call", "hang_up"])
async def test_the_bot_ends_the_call_through_the_voice_api_after_its_last_words(tool: str) -> None:
    call = ToolCall("transfer_call", {"destination": "operator"}) if tool == "transfer_call" else ToolCall("hang_up")
    async with vonage_rig(tool_calls={1: call}) as rig:
        report = await place_vonage_call(rig.answer_url, [Say(HOURS, "that will be all"), Silence(20_000)],
                                         to="15555550222", call_uuid="call-ending", signature_secret=SECRET)
        session = await _finished(rig)
    ((method, path, body, auth),) = rig.api.requests
    assert (method, path) == ("PUT", "/v1/calls/call-ending")
    claims = _api_claims(auth)
    assert claims["application_id"] == APP_ID and claims["exp"] > time.time()
    if tool == "transfer_call":
        assert body == {"action": "transfer", "destination": {"type": "ncco", "ncco": [
            {"action": "connect", "endpoint": [{"type": "phone", "number": "14155550100"}],
             "from": "15555550222"}]}}
    else:
        assert body == {"action": "hangup"}
    assert report.closed_by == "gateway" and report.close_code == 1000 and report.violations == 0
    # the bot's last words were heard in full before the hand-over: the last partial frame went out
    # padded with silence when the call ended
    spoken = _spoken(session)
    assert len(spoken) > 0 and len(spoken) <= report.played_bytes < len(spoken) + FRAME_BYTES
    assert _heard(report)[:len(spoken)] == spoken
    assert report.discarded_bytes == 0 and report.unplayed_bytes == 0 and report.clears == 0


async def test_without_voice_api_credentials_the_gateway_hangs_up_by_closing_the_socket() -> None:
    async with vonage_rig(credentials=False, tool_calls={1: ToolCall("hang_up")}) as rig:
        report = await place_vonage_call(rig.answer_url, [Say(HOURS, "that will be all"), Silence(20_000)],
                                         to="15555550222", signature_secret=SECRET)
        await _finished(rig)
        status, text = await rig.request("POST", "/vonage/event", body=(event := {
            "status": "disconnected", "uuid": "ws-leg", "headers": {"call": report.call_uuid}}),
            headers=signed(json.dumps(event).encode()))
    assert report.closed_by == "gateway" and report.close_code == 1000 and report.played_bytes > 0
    assert rig.api.requests == []
    assert (status, text) == (204, "")  # nothing follows in the NCCO: Vonage hangs up


async def test_send_dtmf_presses_keys_through_the_voice_api() -> None:
    async with vonage_rig(tool_calls={1: ToolCall("press_keys", {"digits": "12#"})}) as rig:
        report = await place_vonage_call(rig.answer_url, [Say(HOURS, "press one two pound"), WaitForBot(), Hangup()],
                                         to="15555550222", call_uuid="call-keys", signature_secret=SECRET)
        session = await _finished(rig)
    ((method, path, body, auth),) = rig.api.requests
    assert (method, path, body) == ("PUT", "/v1/calls/call-keys/dtmf", {"digits": "12#"})
    assert _api_claims(auth)["application_id"] == APP_ID
    (output,) = session.function_call_outputs
    assert json.loads(output["output"]) == {"status": "pressed 3 key(s)"}
    assert report.played_bytes > 0 and report.closed_by == "caller"


async def test_a_failed_call_closes_the_socket_and_the_event_webhook_apologises() -> None:
    async with vonage_rig(voicelive_endpoint="http://127.0.0.1:9") as rig:  # nothing listens there
        report = await place_vonage_call(rig.answer_url, [WaitForBot(timeout_s=5), Hangup()],
                                         call_uuid="call-failed", signature_secret=SECRET)
        await asyncio.wait_for(rig.app[CONTEXT].wait_idle(), 10)
        event = {"status": "disconnected", "uuid": "ws-leg", "headers": {"call": "call-failed"}}
        body = json.dumps(event).encode()
        status, text = await rig.request("POST", "/vonage/event", body=event, headers=signed(body))
    assert report.closed_by == "gateway" and report.close_code == 1011
    assert rig.api.requests == []  # not hung up through the API: the apology comes first
    assert status == 200 and json.loads(text) == [{"action": "talk", "text": rig.app[CONTEXT].config.gateway.apology}]


async def test_an_unreachable_media_socket_gets_the_apology(vonage: VonageRig) -> None:
    event = {"status": "failed", "uuid": "ws-leg", "headers": {"call": "call-x"}}
    body = json.dumps(event).encode()
    status, text = await vonage.request("POST", "/vonage/event", body=event, headers=signed(body))
    assert status == 200 and json.loads(text)[0]["action"] == "talk"


# --- the answer webhook ---------------------------------------------------------------------------


def _endpoint(ncco: list[dict[str, Any]]) -> dict[str, Any]:
    (connect,) = ncco
    assert connect["action"] == "connect" and connect["eventType"] == "synchronous"
    (endpoint,) = connect["endpoint"]
    return endpoint


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_the_answer_is_an_ncco_connecting_the_call_to_its_media_socket(vonage: VonageRig, method: str) -> None:
    params = answer_params()
    if method == "GET":
        status, text = await vonage.request("GET", "/vonage/answer", params=params, headers=signed())
    else:
        status, text = await vonage.request("POST", "/vonage/answer", body=params,
                                            headers=signed(json.dumps(params).encode()))
    assert status == 200
    ncco = json.loads(text)
    assert ncco[0]["eventUrl"] == [vonage.base + "/vonage/event"]
    endpoint = _endpoint(ncco)
    assert endpoint["type"] == "websocket" and endpoint["content-type"] == "audio/l16;rate=16000"
    assert endpoint["uri"] == vonage.base.replace("http://", "ws://") + "/vonage/media"
    # routed by the called number (as Vonage writes it, without +) to its profile
    assert endpoint["headers"] == {"call": "call-1", "profile": "sales", "to": "+15555550123", "conversation": "CON-1"}
    auth = endpoint["authorization"]
    assert auth["type"] == "custom" and auth["value"].startswith("Bearer ")
    claims = vonage.app[CONTEXT].tokens.verify(auth["value"][len("Bearer "):], carrier="vonage")
    assert (claims["call"], claims["profile"]) == ("call-1", "sales")
    assert claims["from"] == "+" + params["from"]  # the caller, for the call's record: in the token only


async def test_a_call_routed_by_number_runs_with_that_profile(vonage: VonageRig) -> None:
    report = await place_vonage_call(vonage.answer_url, [Say(HOURS, "hours"), WaitForBot(), Hangup()],
                                     to="15555550123", signature_secret=SECRET, post=True)
    session = await _finished(vonage)
    assert session.session["voice"] in ("marin", {"type": "openai", "name": "marin"}) or "marin" in json.dumps(
        session.session["voice"])
    assert report.played_bytes > 0 and report.violations == 0


async def test_the_answer_webhook_fails_closed(vonage: VonageRig) -> None:
    params = answer_params()
    body = json.dumps(params).encode()
    query = "?" + urlencode(params)
    cases = [
        ("GET", None, {}, 401, "missing bearer token"),
        ("GET", None, signed(secret="another-secret"), 401, "bad signature"),
        ("GET", None, signed(now=time.time() - 3600), 401, "signed too long ago"),
        ("GET", None, {"Authorization": "Basic dXNlcjpwYXNz"}, 401, "missing bearer token"),
        ("GET", None, {"Authorization": "Bearer " + jwt.encode({"iat": int(time.time())}, "k" * 32, "HS256")},
         401, "bad signature"),
        ("GET", None, {"Authorization": "Bearer " + jwt.encode({"jti": "x"}, SECRET, "HS256")},
         401, "missing claim iat"),
        ("POST", body, signed(), 401, "missing payload_hash"),
        ("POST", body, signed(b'{"to": "15555550999"}'), 401, "payload_hash does not match the body"),
    ]
    for method, data, headers, status, reason in cases:
        before = metrics.AUTH_REJECTIONS.value("vonage", "answer", f"signed webhook refused: {reason}")
        async with aiohttp.ClientSession() as http, http.request(
                method, vonage.answer_url + ("" if data else query), data=data,
                headers={"Content-Type": "application/json", **headers}) as reply:
            assert reply.status == status, (reason, await reply.text())
        assert metrics.AUTH_REJECTIONS.value("vonage", "answer", f"signed webhook refused: {reason}") == before + 1
    # the event webhook too
    status, _ = await vonage.request("POST", "/vonage/event", body={"status": "failed"})
    assert status == 401
    # a signed body that is not a JSON object, and a body too large to be a webhook
    async with aiohttp.ClientSession() as http:
        for data, expected in [(b"[1, 2]", 400), (b"{" + b" " * 70_000 + b"}", 413)]:
            async with http.post(vonage.answer_url, data=data, headers={"Content-Type": "application/json",
                                                                        **signed(data)}) as reply:
                assert reply.status == expected


async def test_without_a_signature_secret_webhooks_are_refused_unless_insecure() -> None:
    params = answer_params()
    async with vonage_rig(secret=None) as rig:
        status, _ = await rig.request("GET", "/vonage/answer", params=params, headers=signed())
        assert status == 403
    async with vonage_rig(secret=None, insecure=True) as rig:
        status, text = await rig.request("GET", "/vonage/answer", params=params)
        assert status == 200 and _endpoint(json.loads(text))["type"] == "websocket"


async def test_a_busy_gateway_answers_with_an_apology(vonage: VonageRig) -> None:
    vonage.app[CONTEXT].draining = True
    status, text = await vonage.request("GET", "/vonage/answer", params=answer_params(), headers=signed())
    assert status == 200 and json.loads(text) == [{"action": "talk",
                                                   "text": vonage.app[CONTEXT].config.gateway.apology}]


# --- the media socket -----------------------------------------------------------------------------


async def _ncco(rig: VonageRig, call_uuid: str = "call-1", to: str = "15555550123") -> tuple[str, dict[str, str], str]:
    status, text = await rig.request("GET", "/vonage/answer", params=answer_params(to, call_uuid),
                                     headers=signed())
    assert status == 200
    endpoint = _endpoint(json.loads(text))
    return endpoint["uri"], endpoint["headers"], endpoint["authorization"]["value"]


async def test_the_media_socket_is_refused_without_the_answers_token(vonage: VonageRig) -> None:
    used = metrics.WARM_SESSIONS.value("used")
    url, headers, auth = await _ncco(vonage)
    other_carrier = vonage.app[CONTEXT].tokens.issue({"call": "call-1", "profile": "main"}, 60, carrier="twilio")
    for socket_headers, status in [({}, 401), ({"Authorization": "Bearer not-a-token"}, 403),
                                   ({"Authorization": auth + "x"}, 403),
                                   ({"Authorization": "Bearer " + other_carrier}, 403)]:
        with pytest.raises(CallRejected, match=f"HTTP {status}"):
            await place_vonage_call(url, [Hangup()], headers=headers, authorization=socket_headers.get("Authorization"))
    assert not vonage.app[CONTEXT].calls and metrics.WARM_SESSIONS.value("used") == used  # no call was opened
    assert len(vonage.sim.state.sessions) <= 1  # (only the session opened at the answer, for the call it announced)


async def test_a_token_opens_only_its_own_call_and_only_once(vonage: VonageRig) -> None:
    url, headers, auth = await _ncco(vonage, "call-a")
    # the token of call-a does not open a socket that says it is another call
    report = await place_vonage_call(url, [WaitForBot(timeout_s=2), Hangup()], headers={**headers, "call": "call-b"},
                                     authorization=auth)
    assert report.closed_by == "gateway" and report.close_code == 1008
    # the genuine socket opens the call; the same token cannot open it a second time
    first = await place_vonage_call(url, [Say(HOURS, "hours"), WaitForBot(), Hangup()], headers=headers,
                                    authorization=auth)
    again = await place_vonage_call(url, [WaitForBot(timeout_s=2), Hangup()], headers=headers, authorization=auth)
    await _finished(vonage)
    assert first.played_bytes > 0 and first.closed_by == "caller"
    assert again.closed_by == "gateway" and again.close_code == 1008 and again.played_bytes == 0


async def test_a_socket_with_another_audio_format_is_refused(vonage: VonageRig) -> None:
    url, headers, auth = await _ncco(vonage)
    async with aiohttp.ClientSession() as http, http.ws_connect(url, headers={"Authorization": auth}) as ws:
        await ws.send_str(json.dumps({"event": "websocket:connected", "content-type": "audio/l16;rate=8000",
                                      **headers}))
        msg = await ws.receive()
        assert msg.type is aiohttp.WSMsgType.CLOSE and ws.close_code == 1003
    assert vonage.app[CONTEXT].calls == {}


async def test_bad_messages_on_the_media_socket_are_logged_and_the_call_goes_on(
        vonage: VonageRig, log_capture: LogCapture) -> None:
    url, headers, auth = await _ncco(vonage, to="15555550111")  # the bot greets: the session is ready
    frames = [bytes([i]) * FRAME_BYTES for i in range(1, 6)]
    with log_capture("info") as buf:
        async with aiohttp.ClientSession() as http, http.ws_connect(url, headers={"Authorization": auth}) as ws:
            await ws.send_bytes(frames[0])  # before websocket:connected: there is no call yet
            await ws.send_str(json.dumps({"event": "websocket:connected", "content-type": "audio/l16;rate=16000",
                                          **headers}))
            while (await ws.receive()).type is not aiohttp.WSMsgType.BINARY:  # the greeting: the call is ready
                pass
            for i, frame in enumerate(frames[1:]):
                await ws.send_bytes(frame)
                if i == 1:
                    for bad in ["{", "[]", '{"event":"websocket:dtmf","digit":"x"}',
                                '{"event":"websocket:notify","payload":1}', '{"event":"mystery"}',
                                '{"event":"websocket:connected","content-type":"audio/l16;rate=16000"}']:
                        await ws.send_str(bad)
                    await ws.send_bytes(b"\x01")  # half a sample
        session = await _finished(vonage)
    assert session.appended == [base64.b64encode(f).decode() for f in frames[1:]]  # every good frame, in order
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    (summary,) = [line for line in lines if line.get("event") == "call ended"]
    assert summary["bad_messages"] == {"malformed": 3, "unknown-notify": 1, "unknown-event": 1,
                                       "duplicate-connected": 1, "bad-audio-frame": 1}
    early = [line.get("problem") for line in lines
             if line.get("event") == "ignored a message before websocket:connected"]
    assert early == ["audio-before-connected"]


# --- `gateway call --carrier vonage` ----------------------------------------------------------------


def _cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gateway")
    register_cli(parser.add_subparsers(dest="command"))
    return parser.parse_args(["call", *argv])


async def test_cli_vonage_call_plays_records_and_summarizes(vonage: VonageRig, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.wav"
    args = _cli("--carrier", "vonage", vonage.answer_url, "--vonage-secret", SECRET, "--to", "+15555550123",
                "--play", str(ASSETS / "caller_hours.wav"), "--record", str(out), "--greeting-wait", "0.2")
    code = await asyncio.to_thread(args.func, args)
    printed = capsys.readouterr()
    assert code == 0, printed
    assert "Vonage call " in printed.out and "protocol violations: 0" in printed.out
    assert "bot audio starts" in printed.out and SECRET not in printed.out
    session = await _finished(vonage)
    assert "marin" in json.dumps(session.session["voice"])  # routed by --to
    wav = read_wav(out)
    assert wav.rate == 16000 and wav.samples.ndim == 2 and wav.samples.shape[1] == 2
    assert wav.samples[:, 0].any() and wav.samples[:, 1].any()  # the caller and the bot, at 16 kHz


@pytest.mark.parametrize(("argv", "message"), [
    (("ws://127.0.0.1:9/twilio/media", "--vonage-post"), "are for Vonage calls"),
    (("--carrier", "acs", "ws://127.0.0.1:9/acs/media", "--vonage-post"), "are for Vonage calls"),
    (("--carrier", "vonage", "ws://127.0.0.1:9/vonage/media", "--param", "a=b"), "--param is for Twilio calls"),
    (("--carrier", "vonage", "ftp://gw.example.com/vonage/answer"), "bad URL"),
])
def test_cli_vonage_errors_are_one_line(argv: tuple[str, ...], message: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    args = _cli(*argv)
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("gateway call: ") and message in err and err.count("\n") == 1

"""Telnyx over real sockets on 127.0.0.1: the Ed25519-signed TeXML webhook, the media socket bound to
its call by a signed token, whole calls through the gateway and the simulator with the Telnyx
softphone, and call control against a local stand-in for the TeXML REST API (nothing leaves the
machine)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway import metrics
from gateway.app import create_app
from gateway.audio import ASSETS, load_ulaw_8k
from gateway.bridge import CONTEXT
from gateway.carriers.telnyx.phone import TelnyxCallReport, parse_texml, place_telnyx_call, signed_headers
from gateway.config import parse_config
from gateway.simulator import RunningSimulator, SimulatorSettings, ToolCall, start_simulator
from gateway.simulator.server import SimSession
from gateway.softphone import CallError, Dtmf, Hangup, Say, Silence, WaitForBot
from tests.sockets.loopback import LogCapture, serve

HOURS = load_ulaw_8k(ASSETS / "caller_hours.wav")
INTERRUPT = load_ulaw_8k(ASSETS / "caller_interrupt.wav")
BPM = 8  # PCMU bytes per ms
API_KEY = "KEY0123456789-telnyx-api-key-for-tests"
OPERATOR = "+14155550100"
SALES = "+15555550123"
KEYS_NUMBER = "+15555550111"
PUBLIC = "https://voice.example.com"

CONFIG = """
voicelive: {{endpoint: "{endpoint}"}}
telnyx: {{public_key: "{public_key}", api_key: "${{TELNYX_API_KEY}}", api_base_url: "{api}"}}
gateway: {gateway}
profiles:
  main:
    model: gpt-realtime
    voice: alloy
    greeting: Thanks for calling, how can I help?
    turn_detection: {{type: server_vad, silence_duration_ms: 400}}
    tools:
      - {{name: hang_up, builtin: hang_up}}
      - name: transfer_call
        builtin: transfer_call
        transfer: {{targets: {{operator: "{operator}"}}}}
  sales: {{model: gpt-realtime, voice: marin}}
  keys:
    model: gpt-realtime
    greeting: Hello, press a key.
    dtmf: {{digit_timeout_s: 3, finish_on: "#"}}
routes:
  default: main
  numbers: {{"{sales}": sales, "{keys}": keys}}
"""


def public_key_text(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


@dataclass
class Rig:
    sim: RunningSimulator
    app: web.Application
    base: str
    key: Ed25519PrivateKey  # Telnyx's signing key; the gateway has its public key
    api_requests: list[dict[str, Any]] = field(default_factory=list)  # what the TeXML REST stand-in was asked
    api_status: list[int] = field(default_factory=lambda: [200])
    seen: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)

    def moment(self, call_id: str, event: str) -> asyncio.Event:
        """An event set when the gateway's call ``call_id`` reports ``event`` (e.g. session.ready)."""
        return self.seen.setdefault((call_id, event), asyncio.Event())

    async def dial(self, steps: list, to: str = "+15555550100", **kwargs: Any) -> TelnyxCallReport:
        return await place_telnyx_call(self.base + "/telnyx/voice", steps, signing_key=self.key, to=to, **kwargs)

    async def session(self) -> SimSession:
        session = await asyncio.wait_for(self.sim.state.wait_closed(0), 10)
        await asyncio.wait_for(self.app[CONTEXT].wait_idle(), 10)
        return session

    async def post(self, path: str, form: Mapping[str, str], headers: Mapping[str, str] | None = None,
                   body: bytes | None = None) -> tuple[int, str]:
        data = body if body is not None else urlencode(form).encode()
        signed = signed_headers(self.key, data) if headers is None else dict(headers)
        async with aiohttp.ClientSession() as http, http.post(
                self.base + path, data=data,
                headers={"Content-Type": "application/x-www-form-urlencoded", **signed}) as response:
            return response.status, await response.text()


@contextlib.asynccontextmanager
async def telnyx_rig(tool_calls: Mapping[int, ToolCall] | None = None, gateway: str = "{}",
                     with_key: bool = True) -> AsyncIterator[Rig]:
    key = Ed25519PrivateKey.generate()
    requests: list[dict[str, Any]] = []
    status = [200]

    async def update_call(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        requests.append({"path": request.path, "form": form, "authorization": request.headers.get("Authorization")})
        return web.json_response({"sid": request.match_info["call"], "status": "in-progress"}, status=status[0])

    fake = web.Application()
    fake.router.add_post("/v2/texml/Accounts/{account}/Calls/{call}", update_call)
    fake_runner, fake_base = await serve(fake)
    sim = await start_simulator(SimulatorSettings(audio_speed=8.0, tool_calls=dict(tool_calls or {})))
    config = parse_config(CONFIG.format(endpoint=sim.endpoint, public_key=public_key_text(key) if with_key else "",
                                        api=fake_base, gateway=gateway, operator=OPERATOR, sales=SALES,
                                        keys=KEYS_NUMBER), env={"TELNYX_API_KEY": API_KEY})
    seen: dict[tuple[str, str], asyncio.Event] = {}

    def observer_for(call_id: str) -> Any:
        def observe(event: str, _t: float, _fields: dict) -> None:
            seen.setdefault((call_id, event), asyncio.Event()).set()
        return observe

    runner, base = await serve(create_app(config, observer_factory=observer_for))
    try:
        yield Rig(sim, runner.app, base, key, requests, status, seen)
    finally:
        await runner.cleanup()
        await sim.close()
        await fake_runner.cleanup()


def client_events(session: SimSession, kind: str) -> list[dict[str, Any]]:
    return [e for e in session.received if e.get("type") == kind]


# --- whole calls ----------------------------------------------------------------------------------


async def test_a_whole_call_greets_answers_and_passes_audio_through_byte_for_byte() -> None:
    async with telnyx_rig() as rig:
        report = await rig.dial([WaitForBot(), Say(HOURS, "question"), WaitForBot(), Hangup()])
        session = await rig.session()
    assert report.violations == 0, report.violation_samples
    assert len(report.events_of("bot_audio_start")) >= 2  # the greeting, then the answer
    assert not report.events_of("wait_timeout")
    # caller → Voice Live: every frame the phone sent, the same base64 text, in order
    assert session.appended == report.sent_payloads
    # Voice Live → caller: the deltas, cut only at base64 boundaries, in order
    deltas = [e["delta"] for e in session.sent if e["type"] == "response.audio.delta"]
    assert deltas and "".join(report.received_payloads) == "".join(deltas)
    assert report.played_bytes == sum(len(base64.b64decode(d)) for d in deltas)
    assert report.clears == 0 and session.truncations == []
    assert report.marks_received and report.marks_echoed == report.marks_received  # every mark played
    (update, *_) = client_events(session, "session.update")
    assert update["session"]["input_audio_format"] == "g711_ulaw"
    assert update["session"]["output_audio_format"] == "g711_ulaw"
    assert report.closed_by == "caller"
    assert report.after_stream == ["Hangup"]  # the <Redirect> after the stream hangs up


async def test_barge_in_flushes_the_phone_and_truncates_at_what_it_played() -> None:
    async with telnyx_rig() as rig:
        report = await rig.dial([WaitForBot(), Say(HOURS, "question"), WaitForBot(heard_ms=1200),
                                 Say(INTERRUPT, "interruption"), Hangup()])
        session = await rig.session()
    assert report.violations == 0, report.violation_samples
    assert report.clears == 1
    (truncation,) = session.truncations
    assert truncation["ok"]
    ((_, clear),) = report.events_of("clear")
    played_ms = clear["played_bytes_total"] / BPM
    answer = list(session.items_audio_bytes)[1]  # the greeting played in full; the answer was cut
    assert truncation["item_id"] == answer
    # the gateway truncates where the phone's played marks put it: what the phone had played of this
    # answer when it flushed, within a piece
    greeting_ms = session.items_audio_bytes[next(iter(session.items_audio_bytes))] / BPM
    assert abs(truncation["audio_end_ms"] - (played_ms - greeting_ms)) <= 70, (truncation, played_ms, greeting_ms)
    assert truncation["audio_end_ms"] < session.items_audio_bytes[answer] / BPM
    assert report.discarded_bytes > 0


async def test_the_called_number_picks_the_profile() -> None:
    async with telnyx_rig() as rig:
        status, texml = await rig.post("/telnyx/voice", {"CallSid": "v3:abc", "AccountSid": "acct-1",
                                                         "To": SALES, "From": "+15555550199"})
        report = await rig.dial([Say(HOURS, "question"), WaitForBot(), Hangup()], to=SALES)
        session = await rig.session()
    assert status == 200
    answer = parse_texml(texml, rig.base + "/telnyx/voice")
    query = parse_qs(urlsplit(answer.stream_url).query)
    assert query["profile"] == ["sales"] and query["to"] == [SALES] and query["token"]
    assert answer.problems == []
    assert report.violations == 0
    (update, *_) = client_events(session, "session.update")
    assert update["session"]["voice"] == "marin"


async def test_caller_keys_reach_the_model() -> None:
    async with telnyx_rig() as rig:
        report = await rig.dial([WaitForBot(), Dtmf("4"), Dtmf("2"), Dtmf("#"), WaitForBot(), Hangup()],
                                to=KEYS_NUMBER)
        session = await rig.session()
    (item,) = [e["item"] for e in client_events(session, "conversation.item.create")
               if e["item"].get("type") == "message"]
    assert item["content"] == [{"type": "input_text",
                                "text": "[The caller pressed these keys on the phone keypad: 4 2 #]"}]
    assert len(report.events_of("bot_audio_start")) >= 2  # the greeting, then the answer
    assert report.violations == 0


# --- call control --------------------------------------------------------------------------------


def assert_heard_in_full(report: TelnyxCallReport, session: SimSession) -> None:
    """The gateway ended the call only once the phone had played every byte the bot said."""
    assert report.closed_by == "gateway" and report.close_code == 1000
    assert report.violations == 0, report.violation_samples
    assert report.unplayed_bytes == 0 and report.discarded_bytes == 0 and report.clears == 0
    assert report.played_bytes == sum(session.items_audio_bytes.values()) > 0


async def test_the_bot_hangs_up_after_its_goodbye_has_played() -> None:
    async with telnyx_rig({1: ToolCall("hang_up", {"reason": "the caller is done"})}) as rig:
        report = await rig.dial([WaitForBot(), Say(HOURS, "that is all, thanks"), Silence(20_000)])
        session = await rig.session()
    assert_heard_in_full(report, session)
    assert report.after_stream == ["Hangup"]  # Telnyx hangs up once the stream has closed
    assert rig.api_requests == []  # a hang-up needs no REST call
    assert report.duration_ms < 15_000  # not the caller's 20 s of silence


async def test_a_transfer_replaces_the_calls_texml_with_a_dial() -> None:
    async with telnyx_rig({1: ToolCall("transfer_call", {"destination": "operator"})}) as rig:
        report = await rig.dial([WaitForBot(), Say(HOURS, "a person, please"), Silence(20_000)])
        session = await rig.session()
    assert_heard_in_full(report, session)
    (request,) = rig.api_requests
    assert request["path"] == f"/v2/texml/Accounts/{report.account_sid}/Calls/{report.call_sid}"
    assert request["form"] == {"Texml": f'<?xml version="1.0" encoding="UTF-8"?><Response><Dial>{OPERATOR}'
                                        "</Dial></Response>"}
    assert request["authorization"] == f"Bearer {API_KEY}"


async def test_a_transfer_telnyx_refuses_ends_with_the_apology() -> None:
    async with telnyx_rig({1: ToolCall("transfer_call", {"destination": "operator"})}) as rig:
        rig.api_status[0] = 422
        report = await rig.dial([WaitForBot(), Say(HOURS, "a person, please"), Silence(20_000)])
        await rig.session()
    assert len(rig.api_requests) == 1
    assert report.after_stream == ["Say", "Hangup"]  # the caller hears the apology, not silence


async def test_without_an_api_key_the_model_is_told_transfers_are_not_possible() -> None:
    async with telnyx_rig({1: ToolCall("transfer_call", {"destination": "operator"})}) as rig:
        settings = rig.app[CONTEXT].config.telnyx  # type: ignore[attr-defined]
        rig.app[CONTEXT].config = rig.app[CONTEXT].config.model_copy(
            update={"telnyx": settings.model_copy(update={"api_key": None})})
        await rig.dial([WaitForBot(), Say(HOURS, "a person, please"), WaitForBot(), Hangup()])
        session = await rig.session()
    assert rig.api_requests == []
    (output,) = session.function_call_outputs
    assert "error" in json.loads(output["output"])


# --- authentication ------------------------------------------------------------------------------

FORM = {"AccountSid": "acct-1", "CallSid": "v3:call-1", "From": "+15555550199", "To": "+15555550100",
        "CallStatus": "ringing", "Direction": "inbound"}


async def test_the_webhook_refuses_anything_telnyx_did_not_sign_now() -> None:
    async with telnyx_rig() as rig:
        body = urlencode(FORM).encode()
        good = signed_headers(rig.key, body)
        assert (await rig.post("/telnyx/voice", FORM))[0] == 200
        other = Ed25519PrivateKey.generate()
        before = metrics.AUTH_REJECTIONS.value("telnyx", "voice", "bad telnyx-signature-ed25519")
        for headers, data in [
            ({}, body),  # unsigned
            ({"telnyx-timestamp": good["telnyx-timestamp"]}, body),  # no signature
            ({"telnyx-signature-ed25519": good["telnyx-signature-ed25519"]}, body),  # no timestamp
            (good, urlencode({**FORM, "To": SALES}).encode()),  # tampered body
            (signed_headers(other, body), body),  # another account's key
            (signed_headers(rig.key, body, now=time.time() - 3600), body),  # an hour old: a replay
            (signed_headers(rig.key, body, now=time.time() + 3600), body),  # from the future
            ({**good, "telnyx-signature-ed25519": "not base64!"}, body),
            ({**good, "telnyx-timestamp": "soon"}, body),
        ]:
            status, text = await rig.post("/telnyx/voice", {}, headers=headers, body=data)
            assert status == 403, (headers, text)
            assert "<Response>" not in text
        assert metrics.AUTH_REJECTIONS.value("telnyx", "voice", "bad telnyx-signature-ed25519") == before + 2
        # the stream's end is signed the same way
        assert (await rig.post("/telnyx/stream-ended", FORM, headers={}))[0] == 403
        assert (await rig.post("/telnyx/stream-ended", FORM))[0] == 200


async def test_without_a_public_key_requests_are_refused_unless_in_insecure_dev_mode() -> None:
    async with telnyx_rig(with_key=False) as rig:
        status, _ = await rig.post("/telnyx/voice", FORM)
        assert status == 403
    async with telnyx_rig(with_key=False, gateway="{insecure_dev_mode: true}") as rig:
        status, texml = await rig.post("/telnyx/voice", FORM, headers={})
        assert status == 200 and "<Connect>" in texml
        report = await place_telnyx_call(rig.base + "/telnyx/voice", [Say(HOURS, "hi"), WaitForBot(), Hangup()])
        assert report.violations == 0 and report.played_bytes > 0


class RawTelnyx:
    """A hand-driven media socket, for what a well-behaved softphone never sends."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, stream_id: str = "stream-raw") -> None:
        self.ws = ws
        self.stream_id = stream_id
        self.seq = 0

    async def send(self, msg: dict[str, Any]) -> None:
        self.seq += 1
        await self.ws.send_str(json.dumps({"sequence_number": str(self.seq), **msg, "stream_id": self.stream_id}))

    async def start(self, call_control_id: str, to: str = "+15555550100") -> None:
        await self.ws.send_str(json.dumps({"event": "connected", "version": "1.0.0"}))
        await self.send({"event": "start", "start": {
            "user_id": "acct-1", "call_control_id": call_control_id, "from": "+15555550199", "to": to,
            "custom_parameters": {}, "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}}})

    async def media(self, chunk: int, payload: str) -> None:
        await self.send({"event": "media", "media": {"track": "inbound", "chunk": str(chunk),
                                                     "timestamp": str(20 * (chunk - 1)), "payload": payload}})


async def _stream_url(rig: Rig, call_sid: str, to: str = "+15555550100") -> str:
    status, texml = await rig.post("/telnyx/voice", {**FORM, "CallSid": call_sid, "To": to})
    assert status == 200
    return parse_texml(texml, rig.base + "/telnyx/voice").stream_url


async def _closed_at_start(url: str, call_sid: str) -> int | None:
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        raw = RawTelnyx(ws)
        await raw.start(call_sid)
        msg = await ws.receive()
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        return ws.close_code


async def test_the_media_socket_opens_only_for_the_call_its_token_names_and_only_once() -> None:
    async with telnyx_rig() as rig:
        bare = rig.base.replace("http://", "ws://") + "/telnyx/media"
        assert await _closed_at_start(bare, "v3:no-token") == 1008  # no token
        assert await _closed_at_start(bare + "?token=forged.token", "v3:forged") == 1008
        url = await _stream_url(rig, "v3:call-A")
        assert await _closed_at_start(url, "v3:call-B") == 1008  # another call's token
        # the right call: the stream opens (and the token is used up)
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            raw = RawTelnyx(ws)
            await raw.start("v3:call-A")
            await asyncio.wait_for(rig.moment("v3:call-A", "session.ready").wait(), 10)
            frames = [base64.b64encode(bytes([0xFF - i % 3]) * 160).decode() for i in range(10)]
            for chunk, frame in enumerate(frames, 1):
                await raw.media(chunk, frame)
            await raw.media(3, frames[2])  # late: dropped
            await raw.send({"event": "stop", "stop": {"call_control_id": "v3:call-A"}})
            msg = await ws.receive()
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        session = await rig.session()
        assert session.appended == frames  # in order, the late repeat left out
        assert await _closed_at_start(url, "v3:call-A") == 1008  # the same token again: refused


async def test_bad_input_is_logged_once_per_kind_and_the_call_goes_on(log_capture: LogCapture) -> None:
    async with telnyx_rig() as rig:
        url = await _stream_url(rig, "v3:call-raw")
        with log_capture("info") as buf:
            async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
                raw = RawTelnyx(ws)
                await raw.start("v3:call-raw")
                await asyncio.wait_for(rig.moment("v3:call-raw", "session.ready").wait(), 10)
                good = [base64.b64encode(bytes([0xFF - i % 3]) * 160).decode() for i in range(6)]
                for chunk, frame in enumerate(good, 1):
                    await raw.media(chunk, frame)
                    if chunk == 2:
                        await ws.send_str("{not json")
                        await ws.send_str("[]")
                        await raw.send({"event": "media", "media": {"payload": "!!"}})
                        await raw.send({"event": "error", "payload": {"code": 100003, "title": "Malformed frame",
                                                                      "detail": "The frame could not be parsed"}})
                        await raw.send({"event": "media", "media": {"track": "outbound", "payload": good[0]}})
                        await raw.send({"event": "surprise"})
                await raw.send({"event": "stop", "stop": {}})
                await ws.receive()
            session = await rig.session()
    assert session.appended == good
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    (summary,) = [line for line in lines if line.get("event") == "call ended" and line.get("call_id") == "v3:call-raw"]
    assert summary["bad_messages"] == {"malformed": 3, "stream-error": 1, "other-track": 1, "unknown-event": 1}
    problems = [line.get("problem") for line in lines if line.get("event") == "ignored a bad message"]
    assert problems.count("malformed") == 1  # one warning per kind; repeats at debug


async def test_a_draining_gateway_apologises_instead_of_streaming() -> None:
    async with telnyx_rig() as rig:
        rig.app[CONTEXT].draining = True
        status, texml = await rig.post("/telnyx/voice", FORM)
        assert status == 200 and "<Say>" in texml and "<Stream" not in texml
        with pytest.raises(CallError, match="no <Connect><Stream>"):  # the phone finds no stream to open
            await rig.dial([Hangup()])
        rig.app[CONTEXT].draining = False


# --- `gateway call --carrier telnyx` -------------------------------------------------------------


def _fake_telnyx_gateway(public: Ed25519PrivateKey) -> tuple[web.Application, dict[str, Any]]:
    """A stand-in gateway (its own thread and loop: the command runs its own): checks the webhook's
    Ed25519 signature, answers TeXML, and answers the caller's first turn with audio and a mark."""
    from gateway.carriers.telnyx import codec
    from gateway.carriers.telnyx.auth import check_telnyx_signature

    seen: dict[str, Any] = {}

    async def voice(request: web.Request) -> web.Response:
        body = await request.read()
        seen["problem"] = check_telnyx_signature(public.public_key(), request.headers, body, time.time())
        seen["form"] = parse_qs(body.decode())
        ws_base = str(request.url.with_scheme("ws").with_path("/telnyx/media").with_query(None))
        return web.Response(text=codec.connect_texml(codec.media_url(ws_base, {"token": "t1"}),
                                                     str(request.url.with_path("/telnyx/stream-ended"))),
                            content_type="text/xml")

    async def ended(request: web.Request) -> web.Response:
        seen["ended"] = True
        return web.Response(text=codec.hangup_texml(), content_type="text/xml")

    async def media(request: web.Request) -> web.WebSocketResponse:
        seen["query"] = dict(request.query)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        talking = answered = False
        async for msg in ws:
            data = json.loads(msg.data)
            if data["event"] != "media":
                continue
            silent = set(base64.b64decode(data["media"]["payload"])) == {0xFF}
            if talking and silent and not answered:  # the caller's turn has ended
                answered = True
                await ws.send_str(codec.TelnyxEncoder().media(base64.b64encode(b"\x10" * 1600).decode()))
                await ws.send_str(codec.TelnyxEncoder().mark("m1"))
            talking = not silent
        return ws

    app = web.Application()
    app.router.add_post("/telnyx/voice", voice)
    app.router.add_post("/telnyx/stream-ended", ended)
    app.router.add_get("/telnyx/media", media)
    return app, seen


def test_the_call_command_places_a_signed_telnyx_call(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    import numpy as np

    from gateway.audio import write_wav
    from gateway.softphone.cli import register_cli
    from tests.sockets.loopback import serve_in_thread

    key = Ed25519PrivateKey.generate()
    seed = base64.b64encode(key.private_bytes_raw()).decode()
    t = np.arange(3200) / 16000
    write_wav(tmp_path / "hello.wav", (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16), 16000)
    app, seen = _fake_telnyx_gateway(key)
    parser = argparse.ArgumentParser(prog="gateway")
    register_cli(parser.add_subparsers(dest="command"))
    with serve_in_thread(app, shutdown_timeout=1.0) as base:
        args = parser.parse_args(["call", "--carrier", "telnyx", base + "/telnyx/voice", "--telnyx-signing-key", seed,
                                  "--play", str(tmp_path / "hello.wav"), "--timeout", "5", "--greeting-wait", "0"])
        code = args.func(args)
    printed = capsys.readouterr()
    assert code == 0, printed
    assert seen["problem"] is None  # signed as Telnyx signs
    assert seen["form"]["CallSid"][0].startswith("v3:") and seen["form"]["To"] == ["+15555550100"]
    assert seen["query"] == {"token": "t1"}  # the stream URL's query string, kept
    assert seen.get("ended") is True  # the <Redirect> followed once the stream closed
    assert "marks: 1 received, 1 sent back" in printed.out and "protocol violations: 0" in printed.out
    assert "after the stream, TeXML: Hangup" in printed.out
    # another carrier's call refuses the Telnyx option
    args = parser.parse_args(["call", "ws://127.0.0.1:9/twilio/media", "--telnyx-signing-key", seed])
    assert args.func(args) == 2
    assert "--telnyx-signing-key is for Telnyx calls" in capsys.readouterr().err


async def test_a_stream_that_starts_while_the_gateway_drains_ends_with_the_apology() -> None:
    async with telnyx_rig() as rig:
        url = await _stream_url(rig, "v3:call-late")
        rig.app[CONTEXT].draining = True  # the webhook was answered; the stream comes after SIGTERM
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(url)
        assert refused.value.status == 503
        status, texml = await rig.post("/telnyx/stream-ended", {**FORM, "CallSid": "v3:call-late"})
        _, other = await rig.post("/telnyx/stream-ended", {**FORM, "CallSid": "v3:another"})
        rig.app[CONTEXT].draining = False
    assert status == 200 and "<Say>" in texml and texml.endswith("<Hangup/></Response>")
    assert "<Say>" not in other and "<Hangup/>" in other

"""Plivo calls over real sockets on 127.0.0.1: the Plivo softphone → gateway → Voice Live simulator,
with a local stand-in for Plivo's REST API (nothing leaves the machine)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from gateway import metrics
from gateway.app import create_app
from gateway.audio import ASSETS, load_ulaw_8k, read_wav, write_wav
from gateway.bridge import CONTEXT
from gateway.call import TRANSFER_WORDS, spoken_text
from gateway.carriers.plivo.auth import NONCE_HEADER, SIGNATURE_HEADER, check_plivo_signature
from gateway.carriers.plivo.codec import stream_xml
from gateway.carriers.plivo.phone import PlivoCallReport, parse_stream_xml, place_plivo_call, signed_headers
from gateway.config import parse_config
from gateway.simulator import RunningSimulator, SimulatorSettings, ToolCall, start_simulator
from gateway.simulator.server import SimSession
from gateway.softphone import CallRejected, Dtmf, Hangup, Say, Silence, WaitForBot
from gateway.softphone.cli import register_cli
from tests.sockets.loopback import refusing_port, serve, serve_in_thread

AUTH_ID = "MAZDQ1ZDA2YTI5NDEXAMPLE"
TOKEN = "plivo-test-auth-token-0123456789"
OPERATOR = "+14155550100"
SALES, KEYS_NUMBER, GREETER = "+15555550123", "+15555550111", "+15555550144"
BPM = 8  # µ-law bytes per ms
HOURS = load_ulaw_8k(ASSETS / "caller_hours.wav")
DELIVERY = load_ulaw_8k(ASSETS / "caller_delivery.wav")
INTERRUPT = load_ulaw_8k(ASSETS / "caller_interrupt.wav")

CONFIG = """
voicelive: {{endpoint: "{endpoint}"}}
gateway: {{insecure_dev_mode: {insecure}}}
plivo: {{auth_id: "${{PLIVO_AUTH_ID:-}}", auth_token: "${{PLIVO_AUTH_TOKEN:-}}", api_base_url: "{api}"}}
profiles:
  main:
    model: gpt-realtime
    voice: alloy
    turn_detection: {{type: server_vad, silence_duration_ms: 400}}
    tools:
      - {{name: hang_up, builtin: hang_up}}
      - name: transfer_call
        builtin: transfer_call
        transfer: {{targets: {{operator: "{operator}"}}}}
  sales: {{model: gpt-realtime, voice: marin}}
  greeter:
    model: gpt-realtime
    greeting: Hello, thanks for calling.
  keys:
    model: gpt-realtime
    greeting: Hello, press a key.
    dtmf: {{digit_timeout_s: 3, finish_on: "#", actions: {{0: {{transfer_to: "{operator}"}}}}}}
routes:
  default: main
  numbers: {{"{sales}": sales, "{keys}": keys, "{greeter}": greeter}}
"""


@dataclass
class Rig:
    sim: RunningSimulator
    app: web.Application
    base: str
    rest: list[dict[str, Any]]  # what the stand-in for Plivo's REST API was asked
    rest_status: list[int] = field(default_factory=lambda: [202])

    async def dial(self, steps: list, to: str = "+15555550100", **kwargs: Any) -> PlivoCallReport:
        kwargs.setdefault("auth_token", TOKEN)
        return await place_plivo_call(self.base + "/plivo/answer", steps, to=to, **kwargs)

    async def session(self, index: int = 0) -> SimSession:
        session = await asyncio.wait_for(self.sim.state.wait_closed(index), 10)
        await asyncio.wait_for(self.app[CONTEXT].wait_idle(), 10)
        return session

    async def post(self, path: str, form: Mapping[str, str], token: str | None = TOKEN,
                   headers: Mapping[str, str] | None = None) -> tuple[int, str]:
        """POST ``form`` to the gateway as Plivo does (signed with ``token``; unsigned when None)."""
        url = self.base + path
        sent = dict(headers) if headers is not None else signed_headers(token, url, dict(form))
        async with aiohttp.ClientSession() as http, http.post(url, data=dict(form), headers=sent) as response:
            return response.status, await response.text()

    async def stream_ended(self, call_uuid: str) -> str:
        """What the gateway tells Plivo once the stream has closed (the <Redirect> after it)."""
        status, xml = await self.post("/plivo/stream-ended", {"CallUUID": call_uuid, "CallStatus": "in-progress"})
        assert status == 200
        return xml


@contextlib.asynccontextmanager
async def plivo_rig(tool_calls: Mapping[int, ToolCall] | None = None, *, insecure: bool = False,
                    env: Mapping[str, str] | None = None) -> AsyncIterator[Rig]:
    rest: list[dict[str, Any]] = []
    status = [202]

    async def transfer(request: web.Request) -> web.Response:
        rest.append({"path": request.path, "body": await request.json(),
                     "authorization": request.headers.get("Authorization")})
        return web.json_response({"message": "call transferred", "api_id": "x"}, status=status[0])

    fake = web.Application()
    fake.router.add_post("/v1/Account/{auth_id}/Call/{call}/", transfer)
    fake_runner, fake_base = await serve(fake)
    sim = await start_simulator(SimulatorSettings(audio_speed=8.0, tool_calls=dict(tool_calls or {})))
    text = CONFIG.format(endpoint=sim.endpoint, insecure=str(insecure).lower(), api=fake_base, operator=OPERATOR,
                         sales=SALES, keys=KEYS_NUMBER, greeter=GREETER)
    config = parse_config(text, env=dict(env) if env is not None else {"PLIVO_AUTH_ID": AUTH_ID,
                                                                       "PLIVO_AUTH_TOKEN": TOKEN})
    runner, base = await serve(create_app(config))
    try:
        yield Rig(sim, runner.app, base, rest, status)
    finally:
        await runner.cleanup()
        await sim.close()
        await fake_runner.cleanup()


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def assert_heard_in_full(report: PlivoCallReport, session: SimSession) -> None:
    """The gateway ended the call only once the phone had played every byte the bot said."""
    assert report.closed_by == "gateway" and report.close_code == 1000
    assert report.violations == 0, report.violation_samples
    assert report.unplayed_bytes == 0 and report.discarded_bytes == 0 and report.clears == 0
    assert report.played_bytes == sum(session.items_audio_bytes.values()) > 0


# --- whole calls -----------------------------------------------------------------------------------


async def test_a_greeting_and_a_question_answered_with_audio_untouched_both_ways() -> None:
    async with plivo_rig() as rig:
        report = await rig.dial([WaitForBot(), Say(HOURS, "hours"), WaitForBot(), Hangup()], to=GREETER)
        session = await rig.session()
    assert report.violations == 0, report.violation_samples
    assert report.closed_by == "caller"
    assert len(report.events_of("bot_audio_start")) == 2  # the greeting, then the answer
    # caller → Voice Live: every frame the phone sent, the same base64 text, in order
    assert session.appended == report.sent_payloads
    # Voice Live → caller: the deltas, cut only at base64 boundaries, in order
    deltas = [e["delta"] for e in session.sent if e["type"] == "response.audio.delta"]
    assert deltas and "".join(report.received_payloads) == "".join(deltas)
    assert report.played_bytes == sum(len(base64.b64decode(d)) for d in deltas)
    assert session.session["input_audio_format"] == session.session["output_audio_format"] == "g711_ulaw"
    # every checkpoint the gateway sent was answered with playedStream once its audio had played
    assert report.marks_received and report.marks_echoed == report.marks_received
    assert report.clears == 0 and session.truncations == []


async def test_barge_in_clears_plivo_and_truncates_at_what_the_phone_played() -> None:
    async with plivo_rig() as rig:
        report = await rig.dial([Say(DELIVERY, "question"), WaitForBot(heard_ms=1200), Say(INTERRUPT, "interruption"),
                                 WaitForBot(heard_ms=500), Hangup()])
        session = await rig.session()
    assert report.violations == 0, report.violation_samples
    assert report.clears == 1
    (truncation,) = session.truncations
    assert truncation["ok"]
    first_item = next(iter(session.items_audio_bytes))
    assert truncation["item_id"] == first_item
    ((_, clear),) = report.events_of("clear")
    played_ms = clear["played_bytes_total"] / BPM
    assert abs(truncation["audio_end_ms"] - played_ms) <= 40, (truncation, played_ms)
    assert truncation["audio_end_ms"] < session.items_audio_bytes[first_item] / BPM
    assert report.discarded_bytes > 0
    # the checkpoints the clear dropped were never acknowledged (Plivo acknowledges played audio only),
    # and the call did not wait for them: the next answer played, checkpoint by checkpoint
    assert clear["marks_flushed"] and not set(clear["marks_flushed"]) & set(report.marks_echoed)
    assert len(report.events_of("bot_audio_start")) == 2 and not report.events_of("wait_timeout")
    assert report.closed_by == "caller"


async def test_caller_keys_reach_the_model_as_one_line_and_the_bot_answers() -> None:
    async with plivo_rig() as rig:
        report = await rig.dial([WaitForBot(), Dtmf("4"), Dtmf("2"), Dtmf("#"), WaitForBot(), Hangup()],
                                to=KEYS_NUMBER)
        session = await rig.session()
    (item,) = [e["item"] for e in session.received
               if e.get("type") == "conversation.item.create" and e["item"].get("type") == "message"]
    assert item["content"] == [{"type": "input_text",
                                "text": "[The caller pressed these keys on the phone keypad: 4 2 #]"}]
    assert len(report.events_of("bot_audio_start")) >= 2 and not report.events_of("wait_timeout")


async def test_the_called_number_picks_the_profile() -> None:
    async with plivo_rig() as rig:
        # Plivo writes numbers in E.164 without the plus; config.yaml with it
        status, xml = await rig.post("/plivo/answer", {"CallUUID": "c-1", "To": SALES[1:], "From": "14155550199"})
        assert status == 200
        query = parse_qs(urlsplit(parse_stream_xml(xml, rig.base)).query)
        assert query["profile"] == ["sales"]
        claims = rig.app[CONTEXT].tokens.verify(query["token"][0], carrier="plivo")
        assert (claims["call"], claims["profile"], claims["to"]) == ("c-1", "sales", SALES)
        assert claims["from"] == "+14155550199" and "14155550199" not in query  # the caller: in the token only
        report = await rig.dial([Silence(300), Hangup()], to=SALES)
        session = await rig.session()
    assert report.violations == 0
    assert session.session["voice"] == "marin"


# --- call control -----------------------------------------------------------------------------------


async def test_the_bot_hangs_up_after_its_goodbye_has_played_and_plivo_is_told_to_hang_up() -> None:
    async with plivo_rig({1: ToolCall("hang_up", {"reason": "the caller is done"})}) as rig:
        report = await rig.dial([Say(HOURS, "that is all, thanks"), Silence(20_000)])
        session = await rig.session()
        after = await rig.stream_ended(report.call_sid)
    assert_heard_in_full(report, session)
    assert [e.tag for e in ET.fromstring(after)] == ["Hangup"]  # what Plivo runs once the stream closed
    assert rig.rest == []  # a hang-up needs no REST call
    assert report.duration_ms < 15_000  # not the caller's 20 s of silence


async def test_a_transfer_points_the_call_at_a_dial_after_the_bot_said_so() -> None:
    async with plivo_rig({1: ToolCall("transfer_call", {"destination": "operator"})}) as rig:
        report = await rig.dial([Say(HOURS, "a person, please"), Silence(20_000)], to="+15555550100")
        session = await rig.session()
        (request,) = rig.rest
        assert request["path"] == f"/v1/Account/{AUTH_ID}/Call/{report.call_sid}/"
        assert request["authorization"] == _basic(AUTH_ID, TOKEN)
        body = request["body"]
        assert (body["legs"], body["aleg_method"]) == ("aleg", "POST")
        aleg = urlsplit(body["aleg_url"])
        assert aleg.path == "/plivo/transfer"
        # Plivo fetches the call's next XML there, signed like every request it makes
        status, xml = await rig.post(f"{aleg.path}?{aleg.query}", {"CallUUID": report.call_sid})
        unsigned, _ = await rig.post(f"{aleg.path}?{aleg.query}", {"CallUUID": report.call_sid}, token=None)
    assert_heard_in_full(report, session)
    assert status == 200 and unsigned == 403
    (dial,) = list(ET.fromstring(xml))
    assert dial.tag == "Dial" and dial.get("callerId") == "15555550100"  # the number the caller dialled
    assert [(n.tag, n.text) for n in dial] == [("Number", OPERATOR[1:])]  # E.164 as Plivo's XML writes it


async def test_a_transfer_plivo_refuses_ends_with_the_apology() -> None:
    async with plivo_rig({1: ToolCall("transfer_call", {"destination": "operator"})}) as rig:
        rig.rest_status[0] = 401
        report = await rig.dial([Say(HOURS, "a person, please"), Silence(20_000)])
        await rig.session()
        after = await rig.stream_ended(report.call_sid)
    assert len(rig.rest) == 1
    assert [e.tag for e in ET.fromstring(after)] == ["Speak", "Hangup"]  # the apology, not silence


async def test_a_key_with_a_transfer_action_transfers_after_the_bot_says_so() -> None:
    async with plivo_rig() as rig:
        report = await rig.dial([WaitForBot(), Dtmf("0"), Silence(20_000)], to=KEYS_NUMBER)
        session = await rig.session()
    assert_heard_in_full(report, session)
    (request,) = rig.rest
    assert parse_qs(urlsplit(request["body"]["aleg_url"]).query)["to"] == [OPERATOR]
    creates = [e for e in session.received if e.get("type") == "response.create"]
    assert spoken_text(creates[-1]) == TRANSFER_WORDS


async def test_a_failed_voicelive_session_ends_with_the_apology() -> None:
    async with plivo_rig() as rig:
        rig.app[CONTEXT].prewarms = False  # (the first session is the call's own: dropped once it exists)

        async def drop_session() -> None:
            session = await rig.sim.state.wait_for_session(0)
            await session.close(1011, "simulated failure")

        dropper = asyncio.create_task(drop_session())
        report = await rig.dial([Silence(10_000), Hangup()])
        await dropper
        await asyncio.wait_for(rig.app[CONTEXT].wait_idle(), 10)
        after = await rig.stream_ended(report.call_sid)
    assert report.closed_by == "gateway" and report.duration_ms < 9_000
    assert [e.tag for e in ET.fromstring(after)] == ["Speak", "Hangup"]


# --- authentication fails closed ---------------------------------------------------------------------


async def test_unsigned_or_badly_signed_requests_are_refused() -> None:
    before = metrics.AUTH_REJECTIONS.value("plivo", "answer", "bad or missing X-Plivo-Signature-V3")
    form = {"CallUUID": "c-2", "To": SALES}
    async with plivo_rig() as rig:
        forged = signed_headers("not-the-token", rig.base + "/plivo/answer", form)
        nonce_swapped = {**signed_headers(TOKEN, rig.base + "/plivo/answer", form),
                         "X-Plivo-Signature-V3-Nonce": "another"}
        for headers in ({}, forged, nonce_swapped):
            status, text = await rig.post("/plivo/answer", form, headers=headers)
            assert status == 403 and "<Stream" not in text
        status, _ = await rig.post("/plivo/stream-ended", {"CallUUID": "c-2"}, token=None)
        assert status == 403
        with contextlib.suppress(CallRejected):
            await rig.dial([Hangup()], auth_token="not-the-token")
            raise AssertionError("a call signed with the wrong token was answered")
    assert metrics.AUTH_REJECTIONS.value("plivo", "answer", "bad or missing X-Plivo-Signature-V3") == before + 4


async def test_a_body_that_is_not_a_form_is_refused_not_an_error() -> None:
    before = metrics.AUTH_REJECTIONS.value("plivo", "answer", "request body is not a form")
    async with plivo_rig() as rig, aiohttp.ClientSession() as http:
        for content_type, body in [("multipart/form-data; boundary=zz", b"garbage"),
                                   ("application/x-www-form-urlencoded", b"CallUUID=%ff\xff")]:
            headers = {"Content-Type": content_type, **signed_headers(TOKEN, rig.base + "/plivo/answer", {})}
            async with http.post(rig.base + "/plivo/answer", data=body, headers=headers) as response:
                assert response.status == 400, content_type
    assert metrics.AUTH_REJECTIONS.value("plivo", "answer", "request body is not a form") == before + 2


async def test_without_an_auth_token_plivo_requests_are_refused_unless_in_insecure_dev_mode() -> None:
    form = {"CallUUID": "c-3", "To": SALES}
    async with plivo_rig(env={}) as rig:
        status, _ = await rig.post("/plivo/answer", form, token=None)
        assert status == 403
    async with plivo_rig(env={}, insecure=True) as rig:
        status, xml = await rig.post("/plivo/answer", form, token=None)
        assert status == 200 and "<Stream" in xml
        report = await rig.dial([Silence(200), Hangup()], auth_token=None)
        await rig.session()
        assert report.violations == 0 and report.closed_by == "caller"
        # even then, a token that is given must hold
        async with aiohttp.ClientSession() as http:
            ws_base = rig.base.replace("http://", "ws://")
            bad = await http.get(ws_base + "/plivo/media?token=forged.token")
            assert bad.status == 403


async def test_the_media_socket_needs_a_call_token_for_its_own_call_used_once() -> None:
    async with plivo_rig() as rig:
        ws_base = rig.base.replace("http://", "ws://")
        tokens = rig.app[CONTEXT].tokens
        async with aiohttp.ClientSession() as http:
            for url in (ws_base + "/plivo/media", ws_base + "/plivo/media?token=forged.token",
                        ws_base + "/plivo/media?token=" + tokens.issue({"call": "c"}, 60, carrier="twilio")):
                response = await http.get(url)
                assert response.status == 403
        _, xml = await rig.post("/plivo/answer", {"CallUUID": "c-4", "To": "+15555550100"})
        stream_url = parse_stream_xml(xml, rig.base)
        # the token names the call it was issued for: a stream of another call is closed at its start
        other = await place_plivo_call(stream_url, [Silence(200), Hangup()], call_uuid="c-5")
        assert other.closed_by == "gateway" and other.close_code == 1008
        first = await place_plivo_call(stream_url, [Silence(200), Hangup()], call_uuid="c-4")
        assert first.closed_by == "caller" and first.violations == 0
        again = await place_plivo_call(stream_url, [Silence(200), Hangup()], call_uuid="c-4")
        assert again.closed_by == "gateway" and again.close_code == 1008  # a token opens one stream
        await asyncio.wait_for(rig.app[CONTEXT].wait_idle(), 10)
    assert len(rig.sim.state.sessions) == 1  # only the stream of the call its token names


async def test_a_draining_gateway_answers_with_the_apology() -> None:
    async with plivo_rig() as rig:
        rig.app[CONTEXT].draining = True
        status, xml = await rig.post("/plivo/answer", {"CallUUID": "c-6", "To": SALES})
    assert status == 200
    assert [e.tag for e in ET.fromstring(xml)] == ["Speak", "Hangup"]


async def test_hostile_messages_on_the_media_socket_are_logged_and_the_call_goes_on() -> None:
    async with plivo_rig() as rig:
        _, xml = await rig.post("/plivo/answer", {"CallUUID": "c-7", "To": GREETER})
        url = parse_stream_xml(xml, rig.base)
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            await ws.send_str("not json")  # before start: ignored
            await ws.send_str(json.dumps({"event": "start", "sequenceNumber": 1, "start": {
                "callId": "c-7", "streamId": "s-7", "accountId": "MA1", "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}}, "extra_headers": ""}))
            for bad in ("[", '{"event":"media","media":{"payload":"@@"}}', '{"event":"sendDTMF"}',
                        '{"event":"playedStream","name":"' + "9" * 5000 + '"}'):
                await ws.send_str(bad)
            await ws.send_bytes(b"\x00" * 10)
            greeting = json.loads((await ws.receive(timeout=10)).data)  # the session is up: the bot greets
            assert greeting["event"] == "playAudio"
            payload = base64.b64encode(b"\xff" * 160).decode()
            await ws.send_str(json.dumps({"event": "media", "streamId": "s-7", "media": {
                "track": "inbound", "timestamp": "1", "chunk": 1, "payload": payload}}))
        session = await rig.session()
    assert session.appended == [payload]  # the call went on through every bad message


# --- `gateway call --carrier plivo` -----------------------------------------------------------------

SEEN: web.AppKey[list[Any]] = web.AppKey("seen", list)


async def _fake_answer(request: web.Request) -> web.Response:
    """An answer URL that checks Plivo's signature and streams to the fake gateway's media socket."""
    form = {k: str(v) for k, v in (await request.post()).items()}
    ok = check_plivo_signature(TOKEN, "POST", str(request.url), form, request.headers.get(SIGNATURE_HEADER),
                               request.headers.get(NONCE_HEADER))
    request.app[SEEN].append(("answer", ok, form))
    if not ok:
        return web.Response(status=403)
    media = str(request.url.with_scheme("ws").with_path("/plivo/media").with_query({"token": "t"}))
    return web.Response(text=stream_xml(media, after_url=str(request.url.with_path("/plivo/stream-ended"))),
                        content_type="application/xml")


async def _fake_media(request: web.Request) -> web.WebSocketResponse:
    """Answers each caller turn (speech, then silence) with 200 ms of audio and a checkpoint, and
    clears the second answer mid-way."""
    seen = request.app[SEEN]
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    stream, talking, turns = "", False, 0
    async for msg in ws:
        data = json.loads(msg.data)
        seen.append(data["event"])
        if data["event"] == "start":
            stream = data["start"]["streamId"]
        elif data["event"] == "media":
            silent = data["media"]["payload"] == base64.b64encode(b"\xff" * 160).decode()
            if talking and silent:
                turns += 1
                await ws.send_str(json.dumps({"event": "playAudio", "media": {
                    "contentType": "audio/x-mulaw", "sampleRate": 8000,
                    "payload": base64.b64encode(b"\x55" * 1600).decode()}}))
                await ws.send_str(json.dumps({"event": "checkpoint", "streamId": stream, "name": f"turn{turns}"}))
            talking = not silent
    return ws


def _cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gateway")
    register_cli(parser.add_subparsers(dest="command"))
    return parser.parse_args(["call", *argv])


def test_cli_plivo_call_posts_the_signed_answer_and_plays_the_stream(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = np.arange(3200) / 8000
    write_wav(tmp_path / "hello.wav", (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16), 8000)
    app = web.Application()
    app[SEEN] = seen = []
    app.router.add_post("/plivo/answer", _fake_answer)
    app.router.add_get("/plivo/media", _fake_media)
    with serve_in_thread(app, shutdown_timeout=1.0) as base:
        args = _cli("--carrier", "plivo", base + "/plivo/answer", "--plivo-auth-token", TOKEN,
                    "--to", SALES, "--play", str(tmp_path / "hello.wav"), "--timeout", "3",
                    "--greeting-wait", "0.2", "--record", str(tmp_path / "out.wav"))
        code = args.func(args)
    printed = capsys.readouterr()
    assert code == 0, printed
    (_, signed_ok, form), *events = seen
    assert signed_ok and form["To"] == SALES[1:] and form["CallUUID"]  # as Plivo writes numbers
    assert events[0] == "start" and "media" in events
    assert "playedStream" in events  # the checkpoint was answered once its audio had played
    assert f"call {form['CallUUID']}, stream " in printed.out
    assert "checkpoints: 1 received, 1 played" in printed.out
    assert "protocol violations: 0" in printed.out and TOKEN not in printed.out
    assert read_wav(tmp_path / "out.wav").rate == 8000


@pytest.mark.parametrize(("argv", "message"), [
    (("--carrier", "plivo", "http://127.0.0.1:{port}/plivo/answer"), "cannot reach the answer URL"),
    (("--carrier", "plivo", "ftp://gw.example.com/plivo/answer"), "bad URL"),
    (("http://127.0.0.1:{port}/twilio/voice", "--plivo-auth-token", "t"), "is for Plivo calls"),
    (("--carrier", "plivo", "http://127.0.0.1:{port}/plivo/answer", "--param", "a=b"), "--param is for Twilio"),
])
def test_cli_plivo_errors_are_one_line(argv: tuple[str, ...], message: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    sock, port = refusing_port()
    with sock:
        args = _cli(*(a.replace("{port}", str(port)) for a in argv))
        assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("gateway call: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err

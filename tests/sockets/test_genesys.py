"""Genesys Cloud AudioConnector: the signed AudioHook socket, the open/close transactions, and whole
calls through the gateway and the simulator with the Genesys softphone (127.0.0.1 only)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway import metrics
from gateway.app import create_app
from gateway.audio import ASSETS, b64_len, load_ulaw_8k
from gateway.bridge import CONTEXT
from gateway.carriers.genesys.carrier import GenesysCarrier
from gateway.carriers.genesys.phone import genesys_headers, place_genesys_call
from gateway.config import parse_config
from gateway.simulator import RunningSimulator, SimulatorSettings, ToolCall, start_simulator
from gateway.softphone import CallRejected, Dtmf, Hangup, Say, Silence, WaitForBot
from gateway.softphone.cli import register_cli
from tests.sockets.loopback import serve

API_KEY = "SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh"
CLIENT_SECRET = base64.b64encode(b"genesys-client-secret-for-tests!").decode()
HOURS = load_ulaw_8k(ASSETS / "caller_hours.wav")
INTERRUPT = load_ulaw_8k(ASSETS / "caller_interrupt.wav")
BPM = 8  # µ-law bytes per ms

CONFIG = """
voicelive: {{endpoint: "{endpoint}"}}
gateway: {{insecure_dev_mode: {insecure}}}
genesys: {{api_key: "${{GK:-}}", client_secret: "${{GS:-}}"}}
profiles:
  main: {{model: gpt-realtime, voice: alloy}}
  sales: {{model: gpt-realtime, voice: marin, greeting: "Hello, sales here."}}
  control:
    model: gpt-realtime
    tools:
      - {{name: transfer_call, builtin: transfer_call, transfer: {{targets: {{operator: "+14155550100"}}}}}}
      - {{name: hang_up, builtin: hang_up}}
routes:
  default: main
  numbers: {{"+15555550123": sales, "+15555550777": control}}
"""


@dataclass
class GenesysRig:
    sim: RunningSimulator
    app: web.Application
    base: str

    @property
    def url(self) -> str:
        return self.base.replace("http://", "ws://") + "/genesys/audiohook"

    async def idle(self) -> None:
        await asyncio.wait_for(self.app[CONTEXT].wait_idle(), 10)


@contextlib.asynccontextmanager
async def _rig(tool_calls: dict[int, ToolCall] | None = None, *, credentials: bool = True,
               insecure: bool = False, endpoint: str | None = None) -> AsyncIterator[GenesysRig]:
    sim = await start_simulator(SimulatorSettings(audio_speed=4.0, tool_calls=tool_calls or {}))
    env = {"GK": API_KEY, "GS": CLIENT_SECRET} if credentials else {}
    config = parse_config(CONFIG.format(endpoint=endpoint or sim.endpoint, insecure=str(insecure).lower()), env=env)
    app = create_app(config, carriers=[GenesysCarrier()])
    runner, base = await serve(app)
    try:
        yield GenesysRig(sim, app, base)
    finally:
        await runner.cleanup()
        await sim.close()


@pytest.fixture
async def genesys() -> AsyncIterator[GenesysRig]:
    async with _rig() as rig:
        yield rig


def _spoken(session: Any, item: str) -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in session.sent
                    if e.get("type") == "response.audio.delta" and e.get("item_id") == item)


async def test_a_whole_call_passes_audio_through_and_barge_in_truncates_at_the_playout_clock(
        genesys: GenesysRig) -> None:
    report = await place_genesys_call(genesys.url, [
        Say(HOURS, "question"), WaitForBot(heard_ms=1200), Say(INTERRUPT, "interruption"), Hangup(),
    ], api_key=API_KEY, client_secret=CLIENT_SECRET)
    session = await asyncio.wait_for(genesys.sim.state.wait_closed(0), 10)
    await genesys.idle()
    assert report.violations == 0, report.violation_samples
    assert report.opened_media == [{"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000}]
    assert (session.session["input_audio_format"], session.session["output_audio_format"]) == ("g711_ulaw",) * 2
    # the caller's binary frames reached Voice Live byte for byte, silence included
    assert {b64_len(p) for p in report.sent_payloads} == {20 * BPM}
    assert session.appended == report.sent_payloads
    # the bot's audio reached the phone as Voice Live sent it, in binary frames of at most 1600 bytes
    ((_, flush),) = report.events_of("barge_in")
    (truncation,) = session.truncations
    first_item = next(iter(session.items_audio_bytes))
    heard = b"".join(base64.b64decode(p) for p in report.received_payloads)
    played_before = flush["played_bytes_total"] + flush["discarded_bytes"]
    assert played_before >= 1200 * BPM
    assert report.clears == 1
    assert flush["discarded_bytes"] <= 300 * BPM, flush  # paced: the phone held little when barge_in came
    assert truncation["ok"] and truncation["item_id"] == first_item
    assert abs(truncation["audio_end_ms"] - flush["played_bytes_total"] / BPM) <= 80, (truncation, flush)
    assert heard[:played_before] == _spoken(session, first_item)[:played_before]
    assert max(map(b64_len, report.received_payloads)) <= 1600
    assert report.closed_transaction and report.closed_by == "caller" and report.disconnect is None


def _open(session_id: str, seq: int = 1, media: list[dict[str, Any]] | None = None, dnis: str = "+15555550100",
          conversation: str | None = None) -> str:
    offers = media if media is not None else [{"type": "audio", "format": "PCMU", "channels": ["external"],
                                                "rate": 8000}]
    return json.dumps({"version": "2", "type": "open", "seq": seq, "serverseq": 0, "id": session_id,
                       "position": "PT0S", "parameters": {
                           "organizationId": str(uuid.uuid4()), "conversationId": conversation or str(uuid.uuid4()),
                           "participant": {"id": str(uuid.uuid4()), "ani": "+14255550123", "aniName": "",
                                           "dnis": dnis},
                           "media": offers, "language": "en-US"}})


async def test_the_protocol_transactions_keep_exact_sequence_numbers(genesys: GenesysRig) -> None:
    session_id = str(uuid.uuid4())
    headers = genesys_headers(genesys.url, session_id=session_id, conversation_id="conv-seq",
                              organization_id=str(uuid.uuid4()), api_key=API_KEY, client_secret=CLIENT_SECRET)
    stereo_first = [{"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000},
                    {"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000}]
    async with aiohttp.ClientSession() as http, http.ws_connect(genesys.url, headers=headers) as ws:
        await ws.send_str(_open(session_id, media=stereo_first, conversation="conv-seq"))
        opened = json.loads((await ws.receive()).data)
        assert opened == {"version": "2", "type": "opened", "seq": 1, "clientseq": 1, "id": session_id,
                          "parameters": {"media": [stereo_first[1]], "startPaused": False}}  # mono preferred
        for garbage in ("not json", '{"version":"2","type":"ping","seq":1,"serverseq":1,"id":"' + session_id + '"}',
                        json.dumps({"version": "2", "type": "ping", "seq": 2, "serverseq": 1, "id": "another"})):
            await ws.send_str(garbage)  # unusable, a repeated seq, another session: dropped, the call goes on
        await ws.send_str(json.dumps({"version": "2", "type": "ping", "seq": 2, "serverseq": 1, "id": session_id,
                                      "position": "PT0.1S", "parameters": {}}))
        pong = json.loads((await ws.receive()).data)
        assert (pong["type"], pong["seq"], pong["clientseq"], pong["id"]) == ("pong", 2, 2, session_id)
        await ws.send_str(json.dumps({"version": "2", "type": "close", "seq": 3, "serverseq": 2, "id": session_id,
                                      "position": "PT0.2S", "parameters": {"reason": "end"}}))
        closed = json.loads((await ws.receive()).data)
        assert (closed["type"], closed["seq"], closed["clientseq"]) == ("closed", 3, 3)
        assert (await ws.receive()).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    await genesys.idle()


async def test_an_open_without_a_usable_media_offer_is_refused_with_a_disconnect(genesys: GenesysRig) -> None:
    session_id = str(uuid.uuid4())
    headers = genesys_headers(genesys.url, session_id=session_id, conversation_id="conv-l16",
                              organization_id=str(uuid.uuid4()), api_key=API_KEY, client_secret=CLIENT_SECRET)
    before = metrics.AUTH_REJECTIONS.value("genesys", "open", "no usable media offer")
    async with aiohttp.ClientSession() as http, http.ws_connect(genesys.url, headers=headers) as ws:
        await ws.send_str(_open(session_id, media=[
            {"type": "audio", "format": "L16", "channels": ["external"], "rate": 8000},
            {"type": "audio", "format": "PCMU", "channels": ["internal"], "rate": 8000}]))
        disconnect = json.loads((await ws.receive()).data)
        assert (disconnect["type"], disconnect["seq"], disconnect["clientseq"]) == ("disconnect", 1, 1)
        assert disconnect["parameters"]["reason"] == "error"
        assert "PCMU at 8000 Hz with the external channel" in disconnect["parameters"]["info"]
        await ws.send_str(json.dumps({"version": "2", "type": "close", "seq": 2, "serverseq": 1, "id": session_id,
                                      "parameters": {"reason": "disconnect"}}))
        closed = json.loads((await ws.receive()).data)
        assert (closed["type"], closed["seq"], closed["clientseq"]) == ("closed", 2, 2)
    assert genesys.sim.state.sessions == []  # nothing was opened on Voice Live
    assert metrics.AUTH_REJECTIONS.value("genesys", "open", "no usable media offer") == before + 1


async def test_an_open_for_another_session_or_a_conversation_in_progress_is_refused(genesys: GenesysRig) -> None:
    async def refused(header_session: str, open_session: str, conversation: str) -> str:
        headers = genesys_headers(genesys.url, session_id=header_session, conversation_id=conversation,
                                  organization_id=str(uuid.uuid4()), api_key=API_KEY, client_secret=CLIENT_SECRET)
        async with aiohttp.ClientSession() as http, http.ws_connect(genesys.url, headers=headers) as ws:
            await ws.send_str(_open(open_session, conversation=conversation))
            disconnect = json.loads((await ws.receive()).data)
            assert (disconnect["type"], disconnect["parameters"]["reason"]) == ("disconnect", "error")
            await ws.send_str(json.dumps({"version": "2", "type": "close", "seq": 2, "serverseq": 1,
                                          "id": open_session, "parameters": {"reason": "disconnect"}}))
            assert json.loads((await ws.receive()).data)["type"] == "closed"
            return str(disconnect["parameters"]["info"])

    assert "Audiohook-Session-Id" in await refused(str(uuid.uuid4()), str(uuid.uuid4()), "conv-a")
    call = asyncio.create_task(place_genesys_call(genesys.url, [Silence(8000), Hangup()], api_key=API_KEY,
                                                  client_secret=CLIENT_SECRET, conversation_id="conv-busy"))
    await genesys.sim.state.wait_for_session(0)
    session = str(uuid.uuid4())
    assert "another session for this conversation" in await refused(session, session, "conv-busy")
    call.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await call
    await genesys.idle()
    assert len(genesys.sim.state.sessions) == 1  # the refused sessions opened nothing on Voice Live


async def test_a_stereo_session_sends_only_the_external_channel_to_voicelive(genesys: GenesysRig) -> None:
    report = await place_genesys_call(genesys.url, [Say(HOURS, "question"), WaitForBot(), Hangup()],
                                      api_key=API_KEY, client_secret=CLIENT_SECRET, stereo=True)
    session = await asyncio.wait_for(genesys.sim.state.wait_closed(0), 10)
    await genesys.idle()
    assert report.violations == 0, report.violation_samples
    assert report.opened_media[0]["channels"] == ["external", "internal"]
    # the phone interleaved the caller (external) with silence (internal); Voice Live got the caller alone
    assert session.appended == report.sent_payloads
    # and the answer reached the phone whole, byte for byte, in binary frames of at most 1600 bytes
    (item,) = session.items_audio_bytes
    assert b"".join(base64.b64decode(p) for p in report.received_payloads) == _spoken(session, item)
    assert report.played_bytes == len(_spoken(session, item)) > 0
    assert max(map(b64_len, report.received_payloads)) <= 1600


async def test_caller_keys_reach_the_model(genesys: GenesysRig) -> None:
    report = await place_genesys_call(genesys.url, [Dtmf("7"), Dtmf("#"), WaitForBot(), Hangup()],
                                      api_key=API_KEY, client_secret=CLIENT_SECRET)
    session = await asyncio.wait_for(genesys.sim.state.wait_closed(0), 10)
    await genesys.idle()
    texts = [e["item"]["content"][0]["text"] for e in session.received
             if e.get("type") == "conversation.item.create" and e["item"].get("type") == "message"]
    assert texts == ["[The caller pressed these keys on the phone keypad: 7 #]"]
    assert report.played_bytes > 0 and report.violations == 0


@pytest.mark.parametrize(("dnis", "variables", "voice", "greets"), [
    pytest.param("+15555550123", {}, "marin", True, id="by-dnis"),
    pytest.param("tel:+15555550123", {}, "marin", True, id="tel-uri"),
    pytest.param("+15555550100", {"dnis": "+15555550123"}, "marin", True, id="by-input-variable"),
    pytest.param("+15555550100", {}, "alloy", False, id="default"),
])
async def test_the_called_number_chooses_the_profile(genesys: GenesysRig, dnis: str, variables: dict[str, str],
                                                      voice: str, greets: bool) -> None:
    steps = [WaitForBot(timeout_s=10), Hangup()] if greets else [Silence(200), Hangup()]
    report = await place_genesys_call(genesys.url, steps, api_key=API_KEY, client_secret=CLIENT_SECRET, dnis=dnis,
                                      input_variables=variables)
    session = await asyncio.wait_for(genesys.sim.state.wait_closed(0), 10)
    await genesys.idle()
    assert json.dumps(session.session["voice"]).count(voice) == 1
    assert (report.played_bytes > 0) is greets  # the sales profile greets first
    assert report.violations == 0 and report.closed_transaction


@pytest.mark.parametrize(("tool", "variables"), [
    ("transfer_call", {"action": "transfer", "transferTo": "+14155550100", "endReason": "transferred"}),
    ("hang_up", {"action": "hangup", "endReason": "bot_hung_up"}),
])
async def test_the_bot_ends_the_call_with_a_disconnect_after_its_last_words(tool: str,
                                                                          variables: dict[str, str]) -> None:
    call = ToolCall("transfer_call", {"destination": "operator"}) if tool == "transfer_call" else ToolCall("hang_up")
    async with _rig({1: call}) as genesys:
        report = await place_genesys_call(genesys.url, [Say(HOURS, "that will be all"), Silence(20_000)],
                                          api_key=API_KEY, client_secret=CLIENT_SECRET, dnis="+15555550777")
        session = await asyncio.wait_for(genesys.sim.state.wait_closed(0), 10)
        await genesys.idle()
    assert report.violations == 0, report.violation_samples
    assert report.disconnect == {"reason": "completed", "outputVariables": variables}
    assert report.closed_transaction and report.closed_by == "gateway"
    # the bot's last words were heard in full before the disconnect
    assert report.played_bytes == sum(session.items_audio_bytes.values()) > 0
    assert report.discarded_bytes == 0 and report.unplayed_bytes == 0 and report.clears == 0


async def test_a_failed_voicelive_session_ends_with_a_disconnect_error() -> None:
    refuser = web.Application()

    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=503)

    refuser.router.add_get("/voice-live/realtime", refuse)
    runner, endpoint = await serve(refuser)
    try:
        async with _rig(endpoint=endpoint) as genesys:
            report = await place_genesys_call(genesys.url, [Silence(8000), Hangup()], api_key=API_KEY,
                                              client_secret=CLIENT_SECRET)
            await genesys.idle()
    finally:
        await runner.cleanup()
    assert report.disconnect is not None and report.disconnect["reason"] == "error"
    assert "voicelive_unavailable" in report.disconnect["info"]
    assert report.closed_transaction and report.closed_by == "gateway" and report.duration_ms < 8000


# --- authentication -----------------------------------------------------------------------------


def _signed(genesys: GenesysRig, **changes: Any) -> dict[str, str]:
    now = changes.pop("now", None)
    headers = genesys_headers(genesys.url, session_id=str(uuid.uuid4()), conversation_id=str(uuid.uuid4()),
                              organization_id=str(uuid.uuid4()), api_key=changes.pop("api_key", API_KEY),
                              client_secret=changes.pop("client_secret", CLIENT_SECRET), now=now)
    headers.update(changes)
    return headers


async def _status(url: str, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(url, headers=headers):
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


async def test_the_upgrade_is_refused_without_the_api_key_and_a_valid_signature(genesys: GenesysRig) -> None:
    good = _signed(genesys)
    unsigned = {k: v for k, v in good.items() if k not in ("Signature", "Signature-Input")}
    no_key = {k: v for k, v in good.items() if k != "X-API-KEY"}
    wrong_secret = _signed(genesys, client_secret=base64.b64encode(b"another secret").decode())
    expired = _signed(genesys, now=time.time() - 3600)  # created an hour ago, expired 55 minutes ago
    future = _signed(genesys, now=time.time() + 3600)
    tampered = dict(good, **{"Audiohook-Session-Id": str(uuid.uuid4())})  # a signed header changed
    other_key = _signed(genesys, api_key="another-api-key")
    before = metrics.AUTH_REJECTIONS.value("genesys", "audiohook", "bad signature")
    for headers in (unsigned, no_key, wrong_secret, expired, future, tampered, other_key):
        assert await _status(genesys.url, headers) == 401
    assert await _status(genesys.url + "?x=1", good) == 401  # the request target is signed too
    assert metrics.AUTH_REJECTIONS.value("genesys", "audiohook", "bad signature") == before + 3
    connector = genesys.url + "/my-bot"  # the Architect action's Connector ID, appended by Genesys and signed
    headers = genesys_headers(connector, session_id=str(uuid.uuid4()), conversation_id=str(uuid.uuid4()),
                              organization_id=str(uuid.uuid4()), api_key=API_KEY, client_secret=CLIENT_SECRET)
    assert await _status(connector, headers) == 101
    replay = _signed(genesys)
    assert await _status(genesys.url, replay) == 101
    assert await _status(genesys.url, replay) == 401  # its nonce was used
    await genesys.idle()
    assert genesys.sim.state.sessions == []  # nothing was opened on Voice Live


async def test_without_credentials_every_session_is_refused_unless_insecure_dev_mode() -> None:
    async with _rig(credentials=False) as genesys:
        with pytest.raises(CallRejected, match="403"):
            await place_genesys_call(genesys.url, [Hangup()])
        assert genesys.sim.state.sessions == []
    async with _rig(credentials=False, insecure=True) as genesys:
        report = await place_genesys_call(genesys.url, [Say(HOURS[:4000], "hello"), Hangup()])
        await genesys.idle()
        assert report.opened_media and report.closed_transaction


# --- gateway call --carrier genesys ---------------------------------------------------------------


def _cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gateway")
    register_cli(parser.add_subparsers(dest="command"))
    return parser.parse_args(["call", *argv])


async def test_gateway_call_places_a_signed_genesys_call(genesys: GenesysRig,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    args = _cli("--carrier", "genesys", genesys.url, "--genesys-api-key", API_KEY, "--genesys-client-secret",
                CLIENT_SECRET, "--to", "+15555550123", "--play", str(ASSETS / "caller_hours.wav"),
                "--timeout", "10", "--greeting-wait", "2")
    code = await asyncio.to_thread(args.func, args)
    printed = capsys.readouterr().out
    await genesys.idle()
    assert code == 0, printed
    assert "Genesys conversation " in printed and "protocol violations: 0" in printed
    assert "close transaction completed" in printed
    # the sales greeting, then the answer (a paced leg on a busy machine may leave a gap inside one)
    assert printed.count("bot audio starts") >= 2
    assert CLIENT_SECRET not in printed


@pytest.mark.parametrize(("argv", "message"), [
    (("ws://127.0.0.1:1/twilio/media", "--genesys-stereo"), "are for Genesys calls"),
    (("--carrier", "genesys", "https://gw.example.com/genesys/audiohook"), "bad URL"),
    (("--carrier", "genesys", "ws://127.0.0.1:1/genesys/audiohook", "--genesys-input", "novalue"),
     "expected NAME=VALUE"),
])
def test_gateway_call_genesys_errors_are_one_line(argv: tuple[str, ...], message: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    args = _cli(*argv)
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("gateway call: ") and message in err and err.count("\n") == 1


async def test_a_draining_gateway_refuses_new_sessions(genesys: GenesysRig) -> None:
    genesys.app[CONTEXT].draining = True
    before = metrics.CALLS.value("genesys", "refused (draining)")
    assert await _status(genesys.url, _signed(genesys)) == 503
    assert metrics.CALLS.value("genesys", "refused (draining)") == before + 1
    assert genesys.sim.state.sessions == []

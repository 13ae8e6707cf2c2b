"""Asterisk chan_websocket: whole calls over real sockets on 127.0.0.1, Asterisk's softphone → gateway →
Voice Live simulator: audio byte for byte both ways, barge-in truncated at the marks Asterisk
processed, keys, the bot hanging up, routing by the called number, flow control, and credentials
on the upgrade failing closed."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway import metrics
from gateway.app import create_app
from gateway.audio import ASSETS, G711_ULAW, load_ulaw_8k
from gateway.bridge import CONTEXT
from gateway.carriers.asterisk.auth import basic_header
from gateway.carriers.asterisk.phone import AsteriskCallReport, place_asterisk_call
from gateway.config import parse_config
from gateway.simulator import RunningSimulator, SimulatorSettings, ToolCall, start_simulator
from gateway.softphone import CallRejected, Dtmf, Hangup, Say, Silence, WaitForBot
from tests.sockets.loopback import LogCapture, serve
from tests.sockets.test_records import SECRET as RECORDS_SECRET
from tests.sockets.test_records import Hook, Outcomes, verify

USER, PASSWORD, TOKEN = "asterisk", "media-password-42", "bearer-token-17"
BPM = 8  # µ-law bytes per ms
HOURS = load_ulaw_8k(ASSETS / "caller_hours.wav")
INTERRUPT = load_ulaw_8k(ASSETS / "caller_interrupt.wav")

CONFIG = """
voicelive: {{endpoint: "{endpoint}"}}
gateway: {{insecure_dev_mode: {insecure}}}
{section}
profiles:
  main:
    model: gpt-realtime
    voice: alloy
    turn_detection: {{type: server_vad, silence_duration_ms: 400}}
  greeter:
    model: gpt-realtime
    voice: alloy
    turn_detection: {{type: server_vad, silence_duration_ms: 400}}
    greeting: Hello, thanks for calling. How can I help you today?
  sales: {{model: gpt-realtime, voice: marin}}
  closer:
    model: gpt-realtime
    voice: alloy
    tools:
      - {{name: hang_up, builtin: hang_up}}
      - {{name: transfer_call, builtin: transfer_call, transfer: {{targets: {{operator: "+14155550100"}}}}}}
routes:
  default: main
  numbers: {{"+15555550123": sales}}
"""
CREDENTIALS = 'asterisk: {username: asterisk, password: "${PW}", token: "${TOKEN}"}'


@dataclass
class Rig:
    sim: RunningSimulator
    app: web.Application
    base: str
    seen: dict[tuple[str, str], asyncio.Event]

    def moment(self, call_id: str, event: str) -> asyncio.Event:
        """Set when the gateway's call ``call_id`` reports ``event`` (e.g. session.ready)."""
        return self.seen.setdefault((call_id, event), asyncio.Event())

    @property
    def url(self) -> str:
        return self.base.replace("http://", "ws://") + "/asterisk/media"

    async def call(self, steps: list[Any], **kwargs: Any) -> AsteriskCallReport:
        kwargs.setdefault("username", USER)
        kwargs.setdefault("password", PASSWORD)
        return await place_asterisk_call(self.url, steps, **kwargs)

    async def all_calls_finished(self) -> None:
        await asyncio.wait_for(self.app[CONTEXT].wait_idle(), 10)
        assert self.app[CONTEXT].calls == {}


@contextlib.asynccontextmanager
async def asterisk_rig(section: str = CREDENTIALS, insecure: bool = False, audio_speed: float = 4.0,
                       tool_calls: dict[int, ToolCall] | None = None) -> AsyncIterator[Rig]:
    sim = await start_simulator(SimulatorSettings(audio_speed=audio_speed, tool_calls=tool_calls or {}))
    config = parse_config(CONFIG.format(endpoint=sim.endpoint, insecure=str(insecure).lower(), section=section),
                          env={"PW": PASSWORD, "TOKEN": TOKEN})
    seen: dict[tuple[str, str], asyncio.Event] = {}

    def observer_for(call_id: str) -> Any:
        def observe(event: str, _t: float, _fields: dict[str, Any]) -> None:
            seen.setdefault((call_id, event), asyncio.Event()).set()
        return observe

    app = create_app(config, observer_factory=observer_for)
    runner, base = await serve(app)
    try:
        yield Rig(sim, app, base, seen)
    finally:
        await runner.cleanup()
        await sim.close()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with asterisk_rig() as r:
        yield r


def _deltas(session: Any, item: str | None = None) -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in session.sent
                    if e.get("type") == "response.audio.delta" and (item is None or e.get("item_id") == item))


def _heard(report: AsteriskCallReport) -> bytes:
    return b"".join(base64.b64decode(p) for p in report.received_payloads)


@pytest.mark.parametrize("json_control", [False, True], ids=["plain-text", "json"])
async def test_a_whole_call_greeting_then_an_answer_byte_for_byte_both_ways(rig: Rig, json_control: bool) -> None:
    report = await rig.call([WaitForBot(), Say(HOURS, "question"), WaitForBot(), Hangup()],
                            params={"profile": "greeter"}, json_control=json_control)
    session = await asyncio.wait_for(rig.sim.state.wait_closed(0), 10)
    await rig.all_calls_finished()
    assert report.violations == 0, report.violation_samples
    assert (session.session["input_audio_format"], session.session["output_audio_format"]) == (
        "g711_ulaw", "g711_ulaw")
    # caller → Voice Live: every 160-byte frame Asterisk sent, the same bytes, in order
    assert session.appended == report.sent_payloads
    assert {len(base64.b64decode(p)) for p in report.sent_payloads} == {160}
    # Voice Live → caller: greeting and answer, exactly the bytes Voice Live sent, all of it played
    assert len(session.items_audio_bytes) == 2
    assert _heard(report) == _deltas(session) and report.played_bytes == len(_deltas(session))
    assert report.marks_received and report.marks_echoed == report.marks_received
    assert report.clears == 0 and session.truncations == []
    assert report.closed_by == "caller"


async def test_barge_in_flushes_and_truncates_at_the_marks_asterisk_processed(rig: Rig) -> None:
    report = await rig.call([Say(HOURS, "question"), WaitForBot(heard_ms=1200), Say(INTERRUPT, "interruption"),
                             Hangup()])
    session = await asyncio.wait_for(rig.sim.state.wait_closed(0), 10)
    await rig.all_calls_finished()
    assert report.violations == 0, report.violation_samples
    assert report.clears == 1  # FLUSH_MEDIA
    ((_, flush),) = report.events_of("clear")
    assert flush["marks_flushed"]  # queued marks went with the audio: never processed, never waited for
    assert not set(flush["marks_flushed"]) & set(report.marks_echoed)
    (truncation,) = session.truncations
    first_item = next(iter(session.items_audio_bytes))
    assert truncation["ok"] and truncation["item_id"] == first_item
    played_ms = flush["played_bytes_total"] / BPM
    assert abs(truncation["audio_end_ms"] - played_ms) <= 60, (truncation, played_ms)
    assert truncation["audio_end_ms"] < session.items_audio_bytes[first_item] / BPM
    # what was played before the flush is the start of what Voice Live said, byte for byte
    heard = _heard(report)
    assert heard[:flush["played_bytes_total"]] == _deltas(session, first_item)[:flush["played_bytes_total"]]
    assert report.discarded_bytes > 0


async def test_caller_keys_reach_the_model(rig: Rig) -> None:
    report = await rig.call([Silence(200), Dtmf("7"), Dtmf("#"), WaitForBot(), Hangup()])
    session = await asyncio.wait_for(rig.sim.state.wait_closed(0), 10)
    texts = [e["item"]["content"][0]["text"] for e in session.received
             if e.get("type") == "conversation.item.create" and e["item"].get("type") == "message"]
    assert texts == ["[The caller pressed these keys on the phone keypad: 7 #]"]
    assert report.played_bytes > 0 and report.violations == 0  # and the bot answered them


async def test_the_bot_hangs_up_after_its_last_words() -> None:
    async with asterisk_rig(tool_calls={1: ToolCall("hang_up", {})}) as rig:
        report = await rig.call([Say(HOURS, "that will be all"), Silence(20_000)], params={"profile": "closer"})
        session = await asyncio.wait_for(rig.sim.state.wait_closed(0), 10)
        await rig.all_calls_finished()
    assert report.violations == 0, report.violation_samples
    assert report.events_of("hangup_command")  # HANGUP, then the gateway closed the socket
    assert report.closed_by == "gateway" and report.close_code == 1000
    assert report.duration_ms < 15_000  # long before the caller's silence ran out
    # the goodbye was heard in full before the hang-up: every mark processed
    assert report.played_bytes == sum(session.items_audio_bytes.values()) > 0
    assert report.discarded_bytes == 0 and report.unplayed_bytes == 0 and report.clears == 0
    assert report.marks_echoed == report.marks_received


async def test_transfers_are_not_offered_the_model_is_told_and_the_call_goes_on() -> None:
    async with asterisk_rig(tool_calls={1: ToolCall("transfer_call", {"destination": "operator"})}) as rig:
        report = await rig.call([Say(HOURS, "put me through"), WaitForBot(), Hangup()], params={"profile": "closer"})
        session = await asyncio.wait_for(rig.sim.state.wait_closed(0), 10)
        await rig.all_calls_finished()
    (output,) = session.function_call_outputs
    assert "error" in json.loads(output["output"])  # chan_websocket cannot transfer
    assert report.violations == 0 and report.played_bytes > 0  # the bot went on talking
    assert report.closed_by == "caller" and report.events_of("hangup_command") == []


@pytest.mark.parametrize(("query", "voice"), [({"to": "+1 555 555 0123"}, "marin"), ({"to": "+15550000000"}, "alloy"),
                                              ({"profile": "sales"}, "marin"), ({}, "alloy")])
async def test_the_called_number_in_the_uri_chooses_the_profile(rig: Rig, query: dict[str, str], voice: str) -> None:
    # the caller stays on the line until the session is configured (a loaded machine may take a while)
    call = asyncio.create_task(rig.call([Silence(3000), Hangup()], params=query, channel_id="1761245643.1"))
    await asyncio.wait_for(rig.moment("1761245643.1", "session.ready").wait(), 10)
    report = await call
    session = await asyncio.wait_for(rig.sim.state.wait_closed(0), 10)
    assert report.violations == 0
    assert session.session["voice"] == voice


async def test_the_callers_number_from_the_dial_string_reaches_the_record_masked(
        tmp_path: Path, log_capture: LogCapture) -> None:
    """``v(to=...,from=${CALLERID(num)})``: both numbers reach the call, and its record masks them; a
    caller id that is not a number is left out, and neither is ever logged."""
    hook = Hook()
    hook_runner, hook_url = await hook.serve()
    records = (f"records: {{webhook: {hook_url}, signing_secret: \"${{RS}}\", "
               f"spool_directory: \"{tmp_path / 'spool'}\", initial_backoff_s: 0.01, max_backoff_s: 0.02}}")
    sim = await start_simulator(SimulatorSettings(audio_speed=4.0))
    config = parse_config(CONFIG.format(endpoint=sim.endpoint, insecure="false", section=CREDENTIALS + "\n" + records),
                          env={"PW": PASSWORD, "TOKEN": TOKEN, "RS": RECORDS_SECRET})
    outcomes = Outcomes()
    runner, base = await serve(create_app(config, record_outcomes=outcomes))
    url = base.replace("http://", "ws://") + "/asterisk/media"
    junk = "4111111111111111<script>"
    try:
        with log_capture("debug") as logs:
            for channel, caller in (("1761245643.7", "+1 (415) 555-0199"), ("1761245643.8", junk)):
                report = await place_asterisk_call(url, [Silence(200), Hangup()], to="+15555550123", from_=caller,
                                                   username=USER, password=PASSWORD, channel_id=channel)
                assert report.violations == 0
            await outcomes.wait("delivered", 2)
    finally:
        await runner.cleanup()
        await sim.close()
        await hook_runner.cleanup()
    records_by_call = {}
    for headers, body, _status in hook.posts:
        verify(headers, body)
        record = json.loads(body)
        records_by_call[record["call_id"]] = record
        assert record["carrier"] == "asterisk" and record["to"] == "+*******0123"
        text = body.decode()
        assert "4155550199" not in text and "5555550123" not in text and "41111111" not in text
    assert records_by_call["1761245643.7"]["from"] == "+*******0199" and records_by_call["1761245643.7"]["profile"] == (
        "sales")
    assert records_by_call["1761245643.8"]["from"] is None  # not a number: left out
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    (refused,) = [line for line in lines if line.get("event", "").startswith("a number in the media socket's URI")]
    assert refused["key"] == "from" and refused["length"] == len(junk) and refused["call_id"] == "1761245643.8"
    text = logs.getvalue()
    # (eight digits of the junk caller id: four could be a timestamp's microseconds)
    assert "4155550199" not in text and "5555550123" not in text and "41111111" not in text


@pytest.mark.parametrize("json_control", [False, True], ids=["plain-text", "json"])
async def test_flow_control_holds_bot_audio_and_loses_none_of_it(json_control: bool) -> None:
    # a long answer sent faster than real time, against a queue of 120 frames (XOFF at 80, XON below 40)
    async with asterisk_rig(audio_speed=8.0) as rig:
        report = await rig.call([Say(HOURS, "question"), WaitForBot(), Hangup()], json_control=json_control,
                                xoff_frames=80, xon_frames=40, max_frames=120)
        session = await asyncio.wait_for(rig.sim.state.wait_closed(0), 10)
        await rig.all_calls_finished()
    assert report.violations == 0, report.violation_samples  # nothing arrived with the queue full
    assert report.events_of("media_xoff") and report.events_of("media_xon")  # the queue filled, then drained
    assert report.events_of("status")  # the gateway asked for the queue's levels
    assert report.clears == 0
    assert _heard(report) == _deltas(session)  # held, released in order, nothing dropped
    assert report.played_bytes == len(_deltas(session))
    assert report.marks_echoed == report.marks_received


async def test_without_playback_marks_the_gateway_paces_and_truncates_at_its_clock() -> None:
    section = 'asterisk: {username: asterisk, password: "${PW}", playback_marks: false}'
    async with asterisk_rig(section=section) as rig:
        report = await rig.call([Say(HOURS, "question"), WaitForBot(heard_ms=1200), Say(INTERRUPT, "interruption"),
                                 Hangup()])
        session = await asyncio.wait_for(rig.sim.state.wait_closed(0), 10)
        await rig.all_calls_finished()
    assert report.violations == 0, report.violation_samples
    assert report.marks_received == []  # Asterisk before 20.18 / 22.8 / 23.2 has no MARK_MEDIA
    assert max(len(base64.b64decode(p)) for p in report.received_payloads) <= 160  # 20 ms pieces, in real time
    ((_, flush),) = report.events_of("clear")
    assert flush["discarded_bytes"] <= 100 * BPM, flush  # paced: little was queued when the flush came
    (truncation,) = session.truncations
    first_item = next(iter(session.items_audio_bytes))
    assert truncation["ok"] and truncation["item_id"] == first_item
    played_ms = flush["played_bytes_total"] / BPM
    assert abs(truncation["audio_end_ms"] - played_ms) <= 80, (truncation, played_ms)
    heard = _heard(report)
    assert heard[:flush["played_bytes_total"]] == _deltas(session, first_item)[:flush["played_bytes_total"]]


async def test_the_gateway_hangs_up_when_voicelive_fails(rig: Rig) -> None:
    async def drop() -> None:
        session = await rig.sim.state.wait_for_session(0)
        await session.close(1011, "simulated failure")

    dropper = asyncio.create_task(drop())
    report = await rig.call([Silence(6000), Hangup()])
    await dropper
    await rig.all_calls_finished()
    assert len(report.events_of("hangup_command")) == 1  # HANGUP once, then the socket closed
    assert report.closed_by == "gateway" and report.close_code == 1011
    assert report.duration_ms < 5000


async def test_a_draining_gateway_refuses_new_media_sockets(rig: Rig) -> None:
    rig.app[CONTEXT].draining = True
    assert await _upgrade_status(rig.url, {"Authorization": basic_header(USER, PASSWORD)}) == 503
    assert await _upgrade_status(rig.url, {}) == 401  # credentials are checked first
    assert rig.sim.state.sessions == []


# --- credentials on the upgrade ------------------------------------------------------------------------


async def _upgrade_status(url: str, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(url, headers=headers) as ws:
                await ws.close()
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


async def test_the_upgrade_needs_the_configured_credentials(rig: Rig) -> None:
    before = metrics.AUTH_REJECTIONS.value("asterisk", "media", "bad basic credentials")
    cases = [
        ({}, 401),
        ({"Authorization": basic_header(USER, "wrong")}, 401),
        ({"Authorization": basic_header("intruder", PASSWORD)}, 401),
        ({"Authorization": "Bearer not-the-token"}, 401),
        ({"Authorization": "Digest whatever"}, 401),
        ({"Authorization": basic_header(USER, PASSWORD)}, 101),
        ({"Authorization": "Bearer " + TOKEN}, 101),
    ]
    for headers, status in cases:
        assert await _upgrade_status(rig.url, headers) == status, headers
    assert metrics.AUTH_REJECTIONS.value("asterisk", "media", "bad basic credentials") == before + 2
    with pytest.raises(CallRejected):
        await rig.call([Hangup()], password="wrong")
    report = await rig.call([Silence(100), Hangup()], username=None, password=None, token=TOKEN)
    assert report.violations == 0
    await rig.all_calls_finished()


async def test_the_media_subprotocol_asterisk_asks_for_is_accepted(rig: Rig) -> None:
    headers = {"Authorization": basic_header(USER, PASSWORD)}
    async with aiohttp.ClientSession() as http, http.ws_connect(rig.url, headers=headers, protocols=("media",)) as ws:
        assert ws.protocol == "media"  # websocket_client.conf: protocols = media
        await ws.close()
    await rig.all_calls_finished()


async def test_without_credentials_every_upgrade_is_refused_unless_insecure_mode_says_so(
        log_capture: LogCapture) -> None:
    with log_capture("info") as buf:
        async with asterisk_rig(section="") as rig:
            assert await _upgrade_status(rig.url, {}) == 401
            assert await _upgrade_status(rig.url, {"Authorization": basic_header(USER, PASSWORD)}) == 401
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert any("Asterisk credentials are not set" in str(line.get("event")) for line in lines)
    assert not any(PASSWORD in line for line in buf.getvalue().splitlines())
    async with asterisk_rig(section="", insecure=True) as rig:
        report = await rig.call([Silence(200), Hangup()], username=None, password=None)
        assert report.violations == 0 and report.closed_by == "caller"
        await rig.all_calls_finished()


# --- what Asterisk should never send ----------------------------------------------------------------------


async def test_bad_input_is_logged_and_the_call_goes_on(rig: Rig, log_capture: LogCapture) -> None:
    headers = {"Authorization": basic_header(USER, PASSWORD)}
    frames = [bytes([0xFF - i % 3]) * 160 for i in range(30)]
    with log_capture("info") as buf:
        async with aiohttp.ClientSession() as http, http.ws_connect(rig.url, headers=headers) as ws:
            await ws.send_bytes(b"\xff" * 160)  # before MEDIA_START: dropped, there is no call yet
            await ws.send_str("MEDIA_START connection_id:raw channel:WebSocket/raw/0x1 channel_id:raw.1 format:ulaw "
                              "optimal_frame_size:160 ptime:20")
            await asyncio.wait_for(rig.moment("raw.1", "session.ready").wait(), 10)
            for i, frame in enumerate(frames):
                await ws.send_bytes(frame)
                if i == 5:
                    await ws.send_str("{not json")
                    await ws.send_str("DTMF_END digit:?")
                    await ws.send_str("SOMETHING_NEW")
                    await ws.send_bytes(b"")
            await ws.close()
        session = await asyncio.wait_for(rig.sim.state.wait_closed(0), 10)
        await rig.all_calls_finished()
    assert [base64.b64decode(a) for a in session.appended] == frames  # every good frame, in order
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    (summary,) = [line for line in lines if line.get("event") == "call ended" and line.get("call_id") == "raw.1"]
    assert summary["bad_messages"] == {"malformed": 2, "unknown-event": 1, "empty-frame": 1}
    early = [line.get("problem") for line in lines if line.get("event") == "ignored a message before MEDIA_START"]
    assert early == ["media-before-start"]


async def test_a_codec_that_does_not_pass_through_is_refused_before_any_session(rig: Rig) -> None:
    headers = {"Authorization": basic_header(USER, PASSWORD)}
    async with aiohttp.ClientSession() as http, http.ws_connect(rig.url, headers=headers) as ws:
        await ws.send_str("MEDIA_START connection_id:c channel:WebSocket/c/0x1 channel_id:o.1 format:opus "
                          "optimal_frame_size:0 ptime:20")
        await ws.send_str("MEDIA_START connection_id:c channel:WebSocket/c/0x1 channel_id:o.1 format:g729 "
                          "optimal_frame_size:20 ptime:20")
        msg = await ws.receive()
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == 1003
    assert rig.sim.state.sessions == []


# --- gateway call --carrier asterisk ----------------------------------------------------------------------

SEEN: web.AppKey[list[dict[str, Any]]] = web.AppKey("seen", list)


async def _answering_bot(request: web.Request) -> web.WebSocketResponse:
    """A stand-in gateway: after MEDIA_START it says 0.2 s behind a mark, then waits for the mark."""
    seen = request.app[SEEN]
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    record: dict[str, Any] = {"authorization": request.headers.get("Authorization"), "query": dict(request.query)}
    seen.append(record)
    async for msg in ws:
        if msg.type is aiohttp.WSMsgType.TEXT and msg.data.startswith("MEDIA_START"):
            record["start"] = msg.data
            await ws.send_str("START_MEDIA_BUFFERING")
            await ws.send_bytes(b"\x10" * 1600)
            await ws.send_str("MARK_MEDIA 1")
        elif msg.type is aiohttp.WSMsgType.TEXT:
            record.setdefault("texts", []).append(msg.data)
    return ws


def _cli(*argv: str) -> Any:
    import argparse

    from gateway.softphone.cli import register_cli

    parser = argparse.ArgumentParser(prog="gateway")
    register_cli(parser.add_subparsers(dest="command"))
    return parser.parse_args(["call", *argv])


def test_cli_places_an_asterisk_call(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.sockets.loopback import serve_in_thread

    monkeypatch.delenv("ASTERISK_WS_USERNAME", raising=False)
    monkeypatch.setenv("ASTERISK_WS_PASSWORD", "from-env-secret")
    app = web.Application()
    app[SEEN] = []
    app.router.add_get("/asterisk/media", _answering_bot)
    with serve_in_thread(app, shutdown_timeout=1.0) as base:
        url = base.replace("http://", "ws://") + "/asterisk/media"
        args = _cli("--carrier", "asterisk", url, "--asterisk-user", "pbx", "--to", "+15555550123",
                    "--from", "+14155550199", "--timeout", "3")
        code = args.func(args)
    printed = capsys.readouterr()
    assert code == 0, printed
    (seen,) = app[SEEN]
    assert seen["authorization"] == basic_header("pbx", "from-env-secret")  # the password from the environment
    assert seen["query"] == {"to": "+15555550123", "from": "+14155550199"}
    assert "format:ulaw optimal_frame_size:160" in seen["start"]
    assert seen["texts"] == ["MEDIA_MARK_PROCESSED 1"]  # once the 0.2 s had played
    assert "bot audio: 0.2 s received, 0.2 s played" in printed.out
    assert "marks: 1 received, 1 processed" in printed.out and "protocol violations: 0" in printed.out
    assert "from-env-secret" not in printed.out


@pytest.mark.parametrize(("argv", "message"), [
    (("--carrier", "twilio", "ws://127.0.0.1:9/twilio/media", "--asterisk-json"), "for Asterisk calls only"),
    (("--carrier", "twilio", "ws://127.0.0.1:9/twilio/media", "--asterisk-token", "t"), "for Asterisk calls only"),
    (("--carrier", "asterisk", "https://gw.example.com/asterisk/media"), "bad URL"),
    (("--carrier", "asterisk", "ws://127.0.0.1:{port}/asterisk/media"), "cannot open the media socket"),
])
def test_cli_asterisk_errors_are_one_line(argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.sockets.loopback import refusing_port

    for name in ("ASTERISK_WS_USERNAME", "ASTERISK_WS_PASSWORD", "ASTERISK_WS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    sock, port = refusing_port()
    with sock:
        args = _cli(*(a.replace("{port}", str(port)) for a in argv))
        assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("gateway call: ") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


async def test_a_call_that_finds_no_voice_live_connection_hears_the_apology_then_a_hang_up(rig: Rig) -> None:
    from gateway.audio import apology_clip
    from gateway.voicelive.budget import LocalBudget

    rig.app[CONTEXT].pool.budget = LocalBudget({"default": 1})
    await rig.call([Silence(500), Hangup()])  # spends this minute's one connect
    report = await rig.call([Silence(8_000), Hangup()])
    await rig.all_calls_finished()
    assert report.closed_by == "gateway" and report.duration_ms < 7_000
    assert _heard(report) == base64.b64decode(apology_clip(G711_ULAW))  # (no text to speech here: the clip)
    assert len(rig.sim.state.sessions) == 1

"""The console's phone: whole calls over real sockets on 127.0.0.1, the console page's softphone →
gateway → Voice Live simulator: PCM16 at 24 kHz byte for byte both ways, marks acknowledged by the
page's playout clock, barge-in truncated at them, the call's events on the page, the page hanging
up and the gateway ending calls, and the console's lock on the media socket."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway import metrics
from gateway.app import create_app
from gateway.audio import ASSETS, PCM16_24K, load_ulaw_8k
from gateway.bridge import CONTEXT
from gateway.carriers.browser.phone import BrowserCallReport, place_browser_call, ulaw_to_page_pcm
from gateway.config import GatewayConfig, parse_config
from gateway.console.auth import COOKIE, issue_cookie
from gateway.simulator import RunningSimulator, SimulatorSettings, ToolCall, start_simulator
from gateway.softphone import CallRejected, Hangup, Say, Silence, WaitForBot
from tests.sockets.loopback import LogCapture, serve

CONSOLE_TOKEN = "console-token-for-the-tests-0042"
BPM = PCM16_24K.bytes_per_ms  # 48 bytes per ms
HOURS = load_ulaw_8k(ASSETS / "caller_hours.wav")
INTERRUPT = load_ulaw_8k(ASSETS / "caller_interrupt.wav")

CONFIG = """
voicelive: {{endpoint: "{endpoint}"}}
gateway: {{insecure_dev_mode: {insecure}{console}}}
profiles:
  main:
    model: gpt-realtime
    voice: alloy
    turn_detection: {{type: server_vad, silence_duration_ms: 400}}
    input_transcription: {{model: gpt-4o-mini-transcribe, language: en}}
  closer:
    model: gpt-realtime
    voice: alloy
    tools:
      - {{name: hang_up, builtin: hang_up}}
routes:
  default: main
  numbers: {{"+15555550123": closer}}
"""


@dataclass
class Rig:
    sim: RunningSimulator
    app: web.Application
    base: str
    config: GatewayConfig
    seen: dict[tuple[str, str], asyncio.Event]
    ended: dict[str, str]  # call id -> end reason, as the call reported it

    def moment(self, call_id: str, event: str) -> asyncio.Event:
        """Set when the gateway's call ``call_id`` reports ``event`` (e.g. session.ready)."""
        return self.seen.setdefault((call_id, event), asyncio.Event())

    @property
    def url(self) -> str:
        return self.base.replace("http://", "ws://") + "/console/media"

    def cookie(self) -> dict[str, str]:
        return {"Cookie": f"{COOKIE}={issue_cookie(self.config)}"}

    async def call(self, steps: list[Any], profile: str = "main", **kwargs: Any) -> BrowserCallReport:
        if "cookie" not in kwargs and "token" not in kwargs and self.config.gateway.console_token is not None:
            kwargs["token"] = CONSOLE_TOKEN  # logs in as an operator does
        return await place_browser_call(self.url, steps, profile=profile, **kwargs)

    async def all_calls_finished(self) -> None:
        await asyncio.wait_for(self.app[CONTEXT].wait_idle(), 10)
        assert self.app[CONTEXT].calls == {}


@contextlib.asynccontextmanager
async def console_rig(*, token: bool = True, insecure: bool = False, audio_speed: float = 4.0,
                      tool_calls: dict[int, ToolCall] | None = None) -> AsyncIterator[Rig]:
    sim = await start_simulator(SimulatorSettings(audio_speed=audio_speed, tool_calls=tool_calls or {}))
    console = ', console_token: "${CT}"' if token else ""
    config = parse_config(CONFIG.format(endpoint=sim.endpoint, insecure=str(insecure).lower(), console=console),
                          env={"CT": CONSOLE_TOKEN})
    seen: dict[tuple[str, str], asyncio.Event] = {}
    ended: dict[str, str] = {}

    def observer_for(call_id: str) -> Any:
        def observe(event: str, _t: float, fields: dict[str, Any]) -> None:
            if event == "call.ended":
                ended[call_id] = fields["reason"]
            seen.setdefault((call_id, event), asyncio.Event()).set()
        return observe

    app = create_app(config, observer_factory=observer_for)
    runner, base = await serve(app)
    try:
        yield Rig(sim, app, base, config, seen, ended)
    finally:
        await runner.cleanup()
        await sim.close()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with console_rig() as r:
        yield r


def _deltas(session: Any, item: str | None = None) -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in session.sent
                    if e.get("type") == "response.audio.delta" and (item is None or e.get("item_id") == item))


def _heard(report: BrowserCallReport) -> bytes:
    return b"".join(base64.b64decode(p) for p in report.received_payloads)


async def _upgrade_status(url: str, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(url, headers=headers) as ws:
                await ws.close()
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


# --- whole calls -------------------------------------------------------------------------------------


async def test_a_whole_call_byte_for_byte_with_marks_and_the_calls_events_on_the_page(rig: Rig) -> None:
    report = await rig.call([Say(HOURS, "question"), WaitForBot(), Hangup()])
    session = await asyncio.wait_for(rig.sim.state.wait_closed(0), 10)
    await rig.all_calls_finished()
    assert report.violations == 0, report.violation_samples
    assert report.error is None and report.call_sid.startswith("console-") and len(report.call_sid) == 24
    assert rig.ended[report.call_sid] == "caller_hung_up"  # the page's hangup
    assert report.closed_by == "caller"
    # the page's PCM16 at 24 kHz is Voice Live's pcm16: no transcoding either way
    assert (session.session["input_audio_format"], session.session["output_audio_format"]) == ("pcm16", "pcm16")
    assert session.appended == report.sent_payloads  # every 20 ms frame the page sent, the same bytes, in order
    assert {len(base64.b64decode(p)) for p in report.sent_payloads} == {960}
    assert _heard(report) == _deltas(session) and report.played_bytes == len(_deltas(session)) > 0
    # pieces of 100 ms, each followed by a mark the page's playout clock acknowledged
    assert max(len(base64.b64decode(p)) for p in report.received_payloads) <= 100 * BPM
    assert len(report.marks_received) >= len(_deltas(session)) // (100 * BPM)
    assert report.marks_echoed == report.marks_received and report.clears == 0
    # what the page shows: both sides' words, the turn's latency, never a number or a secret
    names = [event["name"] for event in report.page_events]
    assert names[0] == "session.ready"
    (caller_said,) = report.page_events_named("caller.transcript")
    assert caller_said["text"].startswith("(simulated transcript:")
    assert [e["text"] for e in report.page_events_named("bot.transcript")] == [
        e["transcript"] for e in session.sent if e.get("type") == "response.audio_transcript.done"]
    (first_audio,) = report.page_events_named("bot.first_audio")
    assert 0 < first_audio["after_speech_stopped_ms"] < 5000
    assert set(names) <= {"session.ready", "caller.speech_started", "caller.speech_stopped", "caller.transcript",
                          "bot.transcript", "bot.first_audio", "response.done", "call.ended"}
    times = [event["t"] for event in report.page_events]
    assert times == sorted(times) and times[0] > 0


async def test_barge_in_clears_the_page_and_truncates_at_the_marks_it_acknowledged(rig: Rig) -> None:
    report = await rig.call([Say(HOURS, "question"), WaitForBot(heard_ms=1200), Say(INTERRUPT, "interruption"),
                             Hangup()])
    session = await asyncio.wait_for(rig.sim.state.wait_closed(0), 10)
    await rig.all_calls_finished()
    assert report.violations == 0, report.violation_samples
    assert report.clears == 1
    ((_, clear),) = report.events_of("clear")
    assert clear["marks_flushed"]  # the page acknowledged the marks the clear dropped, at once
    assert report.marks_echoed == report.marks_received
    (truncation,) = session.truncations
    first_item = next(iter(session.items_audio_bytes))
    assert truncation["ok"] and truncation["item_id"] == first_item
    played_ms = clear["played_bytes_total"] / BPM
    assert abs(truncation["audio_end_ms"] - played_ms) <= 60, (truncation, played_ms)  # the page's playout clock
    assert truncation["audio_end_ms"] < session.items_audio_bytes[first_item] / BPM
    (barge,) = report.page_events_named("barge_in")
    assert barge["cleared"] and barge["truncated_at_ms"] == truncation["audio_end_ms"]
    assert barge["item_id"] == first_item
    heard = _heard(report)
    assert heard[:clear["played_bytes_total"]] == _deltas(session, first_item)[:clear["played_bytes_total"]]
    assert report.discarded_bytes > 0


async def test_the_bot_hanging_up_is_told_to_the_page_before_the_socket_closes() -> None:
    async with console_rig(tool_calls={1: ToolCall("hang_up", {})}) as rig:
        report = await rig.call([Say(HOURS, "that will be all"), Silence(20_000)], profile="closer")
        session = await asyncio.wait_for(rig.sim.state.wait_closed(0), 10)
        await rig.all_calls_finished()
    assert report.violations == 0, report.violation_samples
    assert report.ended_reason == "bot_hung_up" and report.events_of("ended")
    assert report.closed_by == "gateway" and report.close_code == 1000
    assert report.duration_ms < 15_000  # long before the caller's silence ran out
    assert report.played_bytes == sum(session.items_audio_bytes.values()) > 0  # the goodbye heard in full
    assert [e["name"] for e in report.page_events_named("tool.called")] == ["hang_up"]
    assert report.page_events_named("call.ended") == [{"reason": "bot_hung_up"}]


async def test_a_call_ended_from_the_gateway_tells_the_page_why(rig: Rig) -> None:
    started = asyncio.Event()
    ids: list[str] = []

    def on_event(_t: float, kind: str, fields: dict[str, Any]) -> None:
        if kind == "started":
            ids.append(fields["call_id"])
            started.set()

    placing = asyncio.create_task(rig.call([Silence(20_000), Hangup()], on_event=on_event))
    await asyncio.wait_for(started.wait(), 10)
    (call_id,) = ids
    await asyncio.wait_for(rig.moment(call_id, "session.ready").wait(), 10)
    ctx = rig.app[CONTEXT]
    ctx.calls[call_id].cut("ended_from_console")  # what the console's calls list does
    report = await asyncio.wait_for(placing, 10)
    await rig.all_calls_finished()
    assert report.violations == 0, report.violation_samples
    assert report.call_sid == call_id and report.ended_reason == "ended_from_console"
    assert report.page_events[-1]["name"] == "call.ended"
    assert report.page_events[-1]["fields"] == {"reason": "ended_from_console"}
    assert report.closed_by == "gateway" and report.close_code == 1000
    assert report.duration_ms < 15_000


# --- what a page must not be able to do -------------------------------------------------------------------


async def test_the_media_socket_is_locked_like_the_console(rig: Rig) -> None:
    before = metrics.AUTH_REJECTIONS.value("browser", "media", "no console session")
    assert await _upgrade_status(rig.url, {}) == 401
    assert await _upgrade_status(rig.url, {"Cookie": f"{COOKIE}=123.forged"}) == 401
    assert await _upgrade_status(rig.url, {**rig.cookie(), "Origin": "http://evil.example"}) == 403
    assert await _upgrade_status(rig.url, rig.cookie()) == 101
    assert metrics.AUTH_REJECTIONS.value("browser", "media", "no console session") == before + 2
    with pytest.raises(CallRejected, match="401"):
        await rig.call([Hangup()], token="not-the-console-token")  # the login refuses it
    with pytest.raises(CallRejected, match="HTTP 401"):
        await place_browser_call(rig.url, [Hangup()], profile="main")  # no login at all
    report = await rig.call([Silence(100), Hangup()], cookie=issue_cookie(rig.config))
    assert report.violations == 0 and report.error is None and report.call_sid.startswith("console-")
    await rig.all_calls_finished()
    assert len(rig.sim.state.sessions) == 1  # only the call that got in opened a Voice Live session


async def test_with_the_console_off_there_is_no_media_socket() -> None:
    async with console_rig(token=False) as rig:
        assert await _upgrade_status(rig.url, {}) == 404
        assert await _upgrade_status(rig.url, {"Cookie": f"{COOKIE}=1.x"}) == 404
        assert rig.sim.state.sessions == []
    async with console_rig(token=False, insecure=True) as rig:  # development mode: open, without a login
        report = await rig.call([Silence(100), Hangup()])
        assert report.violations == 0 and report.call_sid.startswith("console-")
        await rig.all_calls_finished()


async def test_an_unknown_profile_gets_an_error_and_1008(rig: Rig) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(rig.url, headers=rig.cookie()) as ws:
        await ws.send_str(json.dumps({"type": "start", "profile": "no-such-profile"}))
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert msg.type is aiohttp.WSMsgType.TEXT
        assert json.loads(msg.data) == {"type": "error", "message": "no profile named 'no-such-profile'"}
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert msg.type is aiohttp.WSMsgType.CLOSE and ws.close_code == 1008
    assert rig.sim.state.sessions == [] and rig.app[CONTEXT].calls == {}
    report = await rig.call([Silence(5000), Hangup()], profile="nope")
    assert report.error == "no profile named 'nope'" and report.closed_by == "gateway" and report.close_code == 1008
    assert report.duration_ms < 4000 and report.call_sid == ""  # closed at once, no call


async def test_a_draining_gateway_refuses_console_calls(rig: Rig) -> None:
    rig.app[CONTEXT].draining = True
    assert await _upgrade_status(rig.url, rig.cookie()) == 503
    assert await _upgrade_status(rig.url, {}) == 401  # the console's lock is checked first
    assert rig.sim.state.sessions == []


async def test_bad_frames_are_counted_and_the_call_goes_on(rig: Rig, log_capture: LogCapture) -> None:
    speech = ulaw_to_page_pcm(HOURS[:8000])  # 1 s of speech at 24 kHz
    frames = [speech[i:i + 960] for i in range(0, 960 * 30, 960)]
    with log_capture("info") as logs:
        async with aiohttp.ClientSession() as http, http.ws_connect(rig.url, headers=rig.cookie()) as ws:
            await ws.send_bytes(frames[0])  # before start: dropped, there is no call yet
            await ws.send_str(json.dumps({"type": "start", "profile": "main"}))
            started = json.loads((await asyncio.wait_for(ws.receive(), 10)).data)
            assert started["type"] == "started" and started["profile"] == "main" and started["sample_rate"] == 24000
            call_id = started["call_id"]
            await asyncio.wait_for(rig.moment(call_id, "session.ready").wait(), 10)
            for i, frame in enumerate(frames):
                await ws.send_bytes(frame)
                if i == 5:
                    await ws.send_bytes(frame[:959])  # not whole samples
                    await ws.send_bytes(frame[:957])
                    await ws.send_bytes(bytes(48_002))  # over 500 ms in one frame
                    await ws.send_str('{"type":"dance"}')
                    await ws.send_str('{"type":"dtmf","digit":"A"}')
            await ws.send_str('{"type":"hangup"}')
            async for _ in ws:  # what the gateway still says, up to its close
                pass
        session = await asyncio.wait_for(rig.sim.state.wait_closed(0), 10)
        await rig.all_calls_finished()
    assert [base64.b64decode(a) for a in session.appended] == frames  # every good frame, in order, once
    assert rig.ended[call_id] == "caller_hung_up"
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    (summary,) = [line for line in lines if line.get("event") == "call ended" and line.get("call_id") == call_id]
    assert summary["bad_messages"] == {"bad-frame": 3, "malformed": 2}
    (first,) = [line for line in lines if line.get("event") == "ignored a bad message" and line.get("problem") == (
        "bad-frame")]  # one warning per kind of problem, then debug lines
    assert "959 bytes" in first["detail"] and first["call_id"] == call_id
    assert any(line.get("problem") == "media-before-start" for line in lines)


# --- gateway call --carrier browser ----------------------------------------------------------------------


def _cli(*argv: str) -> Any:
    import argparse

    from gateway.softphone.cli import register_cli

    parser = argparse.ArgumentParser(prog="gateway")
    register_cli(parser.add_subparsers(dest="command"))
    return parser.parse_args(["call", *argv])


async def test_cli_logs_in_and_calls_a_profile(rig: Rig, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_CONSOLE_TOKEN", CONSOLE_TOKEN)  # the token from the environment
    args = _cli("--carrier", "browser", rig.url, "--profile", "main", "--play", str(ASSETS / "caller_hours.wav"),
                "--greeting-wait", "0", "--timeout", "10")
    code = await asyncio.to_thread(args.func, args)  # (the command runs its own event loop)
    printed = capsys.readouterr()
    assert code == 0, printed
    session = await asyncio.wait_for(rig.sim.state.wait_closed(0), 10)
    await rig.all_calls_finished()
    assert session.session["voice"] == "alloy" and session.appended
    assert "console call console-" in printed.out and "protocol violations: 0" in printed.out
    assert CONSOLE_TOKEN not in printed.out + printed.err


@pytest.mark.parametrize(("argv", "message"), [
    (("--carrier", "twilio", "ws://127.0.0.1:9/twilio/media", "--profile", "main"), "for console calls only"),
    (("--console-url", "ws://127.0.0.1:9/console/media"), "--profile NAME"),
    (("--console-url", "https://gw.example.com/console/media", "--profile", "main"), "bad URL"),
    (("--console-url", "ws://127.0.0.1:{port}/console/media", "--profile", "main"), "cannot open the media socket"),
])
def test_cli_console_errors_are_one_line(argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.sockets.loopback import refusing_port

    monkeypatch.delenv("GATEWAY_CONSOLE_TOKEN", raising=False)
    sock, port = refusing_port()
    with sock:
        args = _cli(*(a.replace("{port}", str(port)) for a in argv))
        assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("gateway call: ") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err

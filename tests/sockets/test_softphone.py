"""The softphone against a fake Twilio-media-consuming gateway on 127.0.0.1."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import WSMsgType, web

from gateway.audio import read_wav, ulaw_to_array, write_wav
from gateway.carriers.twilio.phone import place_call, twilio_signature
from gateway.softphone import (
    CallError,
    CallRejected,
    CallReport,
    Dtmf,
    Hangup,
    Say,
    Silence,
    WaitForBot,
    call_failures,
    register_cli,
    write_call_wav,
)
from tests.sockets.loopback import refusing_port, serve, serve_in_thread

SID_RE = {"MZ": re.compile(r"MZ[0-9a-f]{32}"), "CA": re.compile(r"CA[0-9a-f]{32}"),
          "AC": re.compile(r"AC[0-9a-f]{32}")}
TIMEOUT = 5.0


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def noise(n: int, seed: int = 1) -> bytes:
    """µ-law bytes that are never 0xFF (silence), so they can be found in a recording."""
    return np.random.default_rng(seed).integers(0, 255, n, dtype=np.uint8).tobytes()


def is_event(event: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m.get("event") == event


def is_mark(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m.get("event") == "mark" and m.get("mark", {}).get("name") == name


class Peer:
    """The gateway's end of one media socket: records what the softphone sends, with arrival times."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self.closed = asyncio.Event()
        self._changed = asyncio.Event()
        self.sid = ""

    async def pump(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for msg in self.ws:
                if msg.type is WSMsgType.TEXT:
                    data = json.loads(msg.data)
                    if data.get("event") == "start":
                        self.sid = data["streamSid"]
                    self.messages.append((loop.time(), data))
                    self._changed.set()
        finally:
            self.closed.set()
            self._changed.set()

    async def wait_for(self, pred: Callable[[dict[str, Any]], bool]) -> tuple[float, dict[str, Any]]:
        async def scan() -> tuple[float, dict[str, Any]]:
            seen = 0
            while True:
                for t, m in self.messages[seen:]:
                    if pred(m):
                        return t, m
                seen = len(self.messages)
                if self.closed.is_set():
                    raise AssertionError("the softphone closed the socket first")
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(scan(), TIMEOUT)

    def of(self, event: str) -> list[dict[str, Any]]:
        return [m for _, m in self.messages if m.get("event") == event]

    async def send(self, message: dict[str, Any]) -> float:
        await self.ws.send_str(json.dumps(message))
        return asyncio.get_running_loop().time()

    async def media(self, audio: bytes) -> float:
        return await self.send({"event": "media", "streamSid": self.sid, "media": {"payload": b64(audio)}})

    async def mark(self, name: str) -> float:
        return await self.send({"event": "mark", "streamSid": self.sid, "mark": {"name": name}})

    async def clear(self) -> float:
        return await self.send({"event": "clear", "streamSid": self.sid})


DEFAULT_TWIML = (
    '<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="{ws}/twilio/media">'
    '<Parameter name="tenant" value="acme"/><Parameter name="greeting" value="a&amp;b &lt;x&gt;"/>'
    "</Stream></Connect></Response>"
)


class FakeGateway:
    def __init__(self) -> None:
        self.base = ""
        self.twiml = DEFAULT_TWIML
        self.forms: list[dict[str, str]] = []
        self.headers: list[dict[str, str]] = []
        self.peers: asyncio.Queue[Peer] = asyncio.Queue()
        self.tasks: list[asyncio.Task[CallReport]] = []

    @property
    def webhook(self) -> str:
        return self.base + "/twilio/voice"

    @property
    def media_url(self) -> str:
        return self.base.replace("http://", "ws://") + "/twilio/media"

    async def voice(self, request: web.Request) -> web.Response:
        self.forms.append({k: str(v) for k, v in (await request.post()).items()})
        self.headers.append(dict(request.headers))
        ws = self.base.replace("http://", "ws://")
        return web.Response(text=self.twiml.replace("{ws}", ws), content_type="text/xml")

    async def media_socket(self, request: web.Request) -> web.WebSocketResponse:
        self.headers.append(dict(request.headers))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        peer = Peer(ws)
        self.peers.put_nowait(peer)
        await peer.pump()
        return ws

    def call(self, steps: list[Any], url: str | None = None, **kwargs: Any) -> asyncio.Task[CallReport]:
        task = asyncio.create_task(place_call(url or self.media_url, steps, **kwargs))
        self.tasks.append(task)
        return task

    async def peer(self) -> Peer:
        peer = await asyncio.wait_for(self.peers.get(), TIMEOUT)
        await peer.wait_for(is_event("start"))
        return peer


def _make_app(gw: FakeGateway) -> web.Application:
    app = web.Application()
    app.router.add_post("/twilio/voice", gw.voice)
    app.router.add_get("/twilio/media", gw.media_socket)
    return app


@pytest.fixture
async def gateway() -> Any:
    gw = FakeGateway()
    runner, gw.base = await serve(_make_app(gw), shutdown_timeout=1.0)
    try:
        yield gw
    finally:
        for task in gw.tasks:
            task.cancel()
        await asyncio.gather(*gw.tasks, return_exceptions=True)
        await runner.cleanup()


async def finish(task: asyncio.Task[CallReport]) -> CallReport:
    return await asyncio.wait_for(task, TIMEOUT)


def kinds(report: CallReport) -> list[str]:
    return [k for _, k, _ in report.events if k != "violation"]


# --- calls over sockets ---------------------------------------------------------------------------


async def test_webhook_form_twiml_and_start(gateway: FakeGateway) -> None:
    seen: list[tuple[float, str, dict[str, Any]]] = []
    report = await finish(gateway.call(
        [Silence(60)], url=gateway.webhook, to="+15550001111", from_="+15550002222",
        params={"extra": "1"}, auth_token="secret-token-1", on_event=lambda t, k, f: seen.append((t, k, f)),
    ))
    peer = await gateway.peers.get()
    await asyncio.wait_for(peer.closed.wait(), TIMEOUT)

    (form,) = gateway.forms
    assert SID_RE["CA"].fullmatch(form["CallSid"]) and SID_RE["AC"].fullmatch(form["AccountSid"])
    assert form["From"] == "+15550002222" and form["To"] == "+15550001111"
    assert (form["CallStatus"], form["Direction"], form["ApiVersion"]) == ("ringing", "inbound", "2010-04-01")
    webhook_headers, media_headers = gateway.headers
    assert webhook_headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert webhook_headers["X-Twilio-Signature"] == twilio_signature("secret-token-1", gateway.webhook, form)
    assert media_headers["X-Twilio-Signature"] == twilio_signature("secret-token-1", gateway.media_url)

    (start,) = peer.of("start")
    assert start["start"]["callSid"] == form["CallSid"] == report.call_sid
    assert start["start"]["accountSid"] == form["AccountSid"]
    assert start["start"]["customParameters"] == {"tenant": "acme", "greeting": "a&b <x>", "extra": "1"}

    assert report.events == seen  # on_event saw every event, live
    assert kinds(report)[:2] == ["webhook", "connected"]
    webhook = report.events_of("webhook")[0][1]
    assert webhook["stream_url"] == gateway.media_url
    assert webhook["parameters"] == {"tenant": "acme", "greeting": "a&b <x>"}
    assert len(peer.of("media")) == 3 and report.closed_by == "caller"


async def test_message_shapes_and_pacing(gateway: FakeGateway, tmp_path: Path) -> None:
    speech = noise(2350)  # not a whole number of frames: the last one is padded with silence
    task = gateway.call([Say(speech, label="hello"), Dtmf("7"), Silence(400), Hangup()],
                        params={"k": "v"}, record=tmp_path / "call.wav")
    peer = await gateway.peer()
    report = await finish(task)
    await asyncio.wait_for(peer.closed.wait(), TIMEOUT)
    msgs = [m for _, m in peer.messages]

    assert msgs[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    sid = msgs[1]["streamSid"]
    assert SID_RE["MZ"].fullmatch(sid) and sid == report.stream_sid
    assert msgs[1] == {
        "event": "start", "sequenceNumber": "1", "streamSid": sid,
        "start": {"streamSid": sid, "accountSid": report.account_sid, "callSid": report.call_sid,
                  "tracks": ["inbound"], "customParameters": {"k": "v"},
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
    }
    assert [m["sequenceNumber"] for m in msgs[1:]] == [str(i) for i in range(1, len(msgs))]
    assert all(m["streamSid"] == sid for m in msgs[1:])

    media = [m for m in msgs if m["event"] == "media"]
    assert len(media) == 15 + 20  # ceil(2350 / 160) speech frames, then 400 ms of silence
    for i, m in enumerate(media):
        assert set(m) == {"event", "sequenceNumber", "streamSid", "media"}
        assert m["media"]["track"] == "inbound"
        assert m["media"]["chunk"] == str(i + 1)
        assert m["media"]["timestamp"] == str(20 * i)
        assert len(base64.b64decode(m["media"]["payload"], validate=True)) == 160
    sent = b"".join(base64.b64decode(m["media"]["payload"]) for m in media)
    assert sent == speech + b"\xff" * (2400 - 2350) + b"\xff" * 3200
    assert report.caller_audio == sent
    assert report.sent_payloads == [m["media"]["payload"] for m in media]

    dtmf_at = next(i for i, m in enumerate(msgs) if m["event"] == "dtmf")
    assert msgs[dtmf_at]["dtmf"] == {"track": "inbound_track", "digit": "7"}
    assert msgs[dtmf_at - 1]["media"]["chunk"] == "15" and msgs[dtmf_at + 1]["media"]["chunk"] == "16"
    assert msgs[-1] == {"event": "stop", "sequenceNumber": msgs[-1]["sequenceNumber"], "streamSid": sid,
                        "stop": {"accountSid": report.account_sid, "callSid": report.call_sid}}

    # one frame every 20 ms: 34 intervals = 680 ms between the first and the last frame
    times = [t for t, m in peer.messages if m["event"] == "media"]
    assert 0.45 <= times[-1] - times[0] <= 2.0
    assert kinds(report) == ["connected", "speech_start", "speech_end", "dtmf", "hangup"]
    assert report.events_of("speech_start")[0][1] == {"label": "hello", "ms": 2350 / 8}
    assert (report.closed_by, report.close_code) == ("caller", 1000)
    assert 600 <= report.duration_ms <= 3000

    wav = read_wav(tmp_path / "call.wav")
    assert wav.rate == 8000 and wav.samples.shape == (len(sent), 2)
    assert np.array_equal(wav.samples[:, 0], ulaw_to_array(sent))
    assert not wav.samples[:, 1].any()  # the bot said nothing


async def test_mark_echoed_after_its_audio_has_played(gateway: FakeGateway, tmp_path: Path) -> None:
    task = gateway.call([WaitForBot(settle_ms=200, timeout_s=TIMEOUT), Hangup()])
    peer = await gateway.peer()
    t_connected = peer.messages[0][0]
    loop = asyncio.get_running_loop()

    t_sent = await peer.mark("early")  # nothing queued: echoed at once
    t_echo, echo = await peer.wait_for(is_mark("early"))
    assert t_echo - t_sent < 0.15
    assert echo == {"event": "mark", "sequenceNumber": echo["sequenceNumber"], "streamSid": peer.sid,
                    "mark": {"name": "early"}}

    audio = noise(8000)  # one second
    t_audio = loop.time()
    await peer.media(audio[:3200])
    t_mid = await peer.mark("mid")
    for i in range(3200, 8000, 1600):
        await peer.media(audio[i : i + 1600])
    t_end = await peer.mark("end")
    t_mid_echo, _ = await peer.wait_for(is_mark("mid"))
    t_end_echo, _ = await peer.wait_for(is_mark("end"))
    assert 0.35 <= t_mid_echo - t_mid <= 1.0
    assert 0.9 <= t_end_echo - t_end <= 2.0
    assert [m["mark"]["name"] for m in peer.of("mark")] == ["early", "mid", "end"]

    report = await finish(task)
    assert report.marks_received == report.marks_echoed == ["early", "mid", "end"]
    assert report.received_bytes == report.played_bytes == 8000
    assert report.received_payloads == [b64(audio[:3200]), b64(audio[3200:4800]), b64(audio[4800:6400]),
                                        b64(audio[6400:])]
    assert (report.discarded_bytes, report.unplayed_bytes, report.violations) == (0, 0, 0)

    # the bot channel holds the audio, once, where it was played on the call's timeline
    bot = report.bot_audio
    assert len(bot) == len(report.caller_audio)
    at = bot.find(audio)
    assert at >= 0 and at % 160 == 0
    assert set(bot[:at]) <= {0xFF} and set(bot[at + 8000 :]) <= {0xFF}
    expected_ms = (t_audio - t_connected) * 1000
    assert expected_ms - 30 <= at / 8 <= expected_ms + 100

    (t_start, _), = report.events_of("bot_audio_start")
    (t_stop, stop), = report.events_of("bot_audio_end")
    assert stop["played_bytes"] == 8000 and 900 <= t_stop - t_start <= 1600
    (t_hangup, _), = report.events_of("hangup")
    # WaitForBot let the playback settle for 200 ms: ten of the phone's ticks, each of which may be late
    # on a loaded machine (without the settle the gap would be a tick at most)
    assert t_hangup - t_stop >= 100

    write_call_wav(report, tmp_path / "bot.wav")
    wav = read_wav(tmp_path / "bot.wav")
    assert wav.samples.shape == (len(bot), 2)
    assert np.array_equal(wav.samples[:, 1], ulaw_to_array(bot))
    assert np.array_equal(wav.samples[:, 0], ulaw_to_array(report.caller_audio))


async def test_clear_discards_audio_and_flushes_marks(gateway: FakeGateway) -> None:
    task = gateway.call([WaitForBot(settle_ms=200, timeout_s=TIMEOUT), Hangup()])
    peer = await gateway.peer()
    first, rest, after = noise(2400, 2), noise(16000, 3), noise(1600, 4)
    await peer.media(first)
    await peer.mark("a")
    await peer.media(rest)
    await peer.mark("b")
    await peer.mark("c")
    await peer.wait_for(is_mark("a"))
    t_clear = await peer.clear()
    t_b, _ = await peer.wait_for(is_mark("b"))
    t_c, _ = await peer.wait_for(is_mark("c"))
    assert t_b - t_clear < 0.15 and t_c - t_clear < 0.15
    assert [m["mark"]["name"] for m in peer.of("mark")] == ["a", "b", "c"]

    t_after = await peer.media(after)  # playback goes on normally after a clear
    await peer.mark("d")
    t_d, _ = await peer.wait_for(is_mark("d"))
    assert t_d - t_after >= 0.15

    report = await finish(task)
    assert report.clears == 1
    assert 16000 - 800 <= report.discarded_bytes <= 16000
    assert report.received_bytes == 2400 + 16000 + 1600
    assert report.played_bytes + report.discarded_bytes == report.received_bytes
    (_, clear), = report.events_of("clear")
    assert clear["discarded_bytes"] == report.discarded_bytes
    assert clear["marks_flushed"] == ["b", "c"]
    assert clear["played_bytes_total"] == report.played_bytes - 1600
    assert clear["turn_played_bytes"] >= 2400
    assert report.bot_audio.find(first + rest[: clear["played_bytes_total"] - 2400]) >= 0
    assert report.bot_audio.find(after) > report.bot_audio.find(first)
    assert report.marks_echoed == ["a", "b", "c", "d"]


async def test_protocol_violations_are_counted_not_fatal(gateway: FakeGateway) -> None:
    task = gateway.call([WaitForBot(heard_ms=100, timeout_s=TIMEOUT), Hangup()])
    peer = await gateway.peer()
    good = noise(800)
    await peer.ws.send_bytes(b"\x00\x01")
    await peer.ws.send_str("not json")
    await peer.ws.send_str("[1, 2]")
    await peer.send({"event": "media", "streamSid": "MZ" + "0" * 32, "media": {"payload": b64(good)}})
    await peer.send({"event": "media", "streamSid": peer.sid, "media": {"payload": "!!not base64"}})
    await peer.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    await peer.send({"event": "mark", "streamSid": peer.sid, "mark": {}})
    await peer.media(good)
    await peer.mark("ok")
    await peer.wait_for(is_mark("ok"))

    report = await finish(task)
    assert report.violations == 7
    expected = ["binary frame", "not JSON", "not a JSON object", "streamSid 'MZ000", "not valid base64",
                "unknown event 'connected'", "mark without a mark.name"]
    assert len(report.violation_samples) == 7
    for fragment, sample in zip(expected, report.violation_samples, strict=True):
        assert fragment in sample
    assert report.received_payloads == [b64(good), "!!not base64", b64(good)]
    assert report.received_bytes == report.played_bytes == 800
    assert report.marks_echoed == ["ok"] and report.closed_by == "caller"


async def test_gateway_closing_the_socket_ends_the_call(gateway: FakeGateway) -> None:
    task = gateway.call([Silence(5000), Say(noise(1600), label="never")])
    peer = await gateway.peer()
    await peer.wait_for(lambda m: m.get("event") == "media" and m["media"]["chunk"] == "5")
    await peer.ws.close(code=4001, message=b"bye")
    report = await finish(task)

    assert (report.closed_by, report.close_code) == ("gateway", 4001)
    assert report.events_of("closed_by_gateway")[0][1] == {"code": 4001}
    assert "speech_start" not in kinds(report) and "hangup" not in kinds(report)
    assert not peer.of("stop")
    assert report.duration_ms < 2000
    assert len(report.caller_audio) == len(report.bot_audio) < 100 * 160


async def test_wait_for_bot_timeout_and_heard_ms(gateway: FakeGateway) -> None:
    steps = [WaitForBot(timeout_s=0.2), Dtmf("1"), WaitForBot(heard_ms=300, timeout_s=TIMEOUT), Dtmf("2"),
             Hangup()]
    task = gateway.call(steps)
    peer = await gateway.peer()
    t_start = peer.messages[0][0]
    t1, _ = await peer.wait_for(is_event("dtmf"))
    # the wait happened (without it the key comes within a few ms); the peer's stamp of the first message
    # may itself be late on a loaded machine, so the bound leaves it room
    assert t1 - t_start >= 0.1
    t_audio = await peer.media(noise(4000))
    t2, _ = await peer.wait_for(lambda m: m.get("event") == "dtmf" and m["dtmf"]["digit"] == "2")
    assert 0.28 <= t2 - t_audio <= 1.0

    report = await finish(task)
    (_, timeout), = report.events_of("wait_timeout")
    assert timeout == {"timeout_s": 0.2, "heard_ms": 0.0}
    assert [f["digit"] for _, f in report.events_of("dtmf")] == ["1", "2"]
    assert report.unplayed_bytes > 0  # hung up while the bot was still talking
    assert report.played_bytes + report.unplayed_bytes == report.received_bytes == 4000


async def test_optional_wait_for_a_greeting_that_never_comes_is_not_a_failure(gateway: FakeGateway) -> None:
    task = gateway.call([WaitForBot(optional=True, start_timeout_s=0.2), Hangup()])
    await gateway.peer()
    report = await finish(task)
    assert [f for _, f in report.events_of("no_bot_audio")] == [{"timeout_s": 0.2}]
    assert report.duration_ms < 2000
    assert report.events_of("wait_timeout") == []
    assert call_failures(report) == []


async def test_setup_errors(gateway: FakeGateway) -> None:
    with pytest.raises(CallError, match="bad URL"):
        await place_call("ftp://example.com/x", [Hangup()])
    with pytest.raises(TypeError):
        await place_call(gateway.media_url, ["not a step"])  # type: ignore[list-item]
    with pytest.raises(CallRejected, match="HTTP 404"):
        await place_call(gateway.base + "/nowhere", [Hangup()])
    with pytest.raises(CallRejected, match="refused the media socket"):
        await place_call(gateway.media_url.replace("/twilio/media", "/nowhere"), [Hangup()])
    gateway.twiml = "<Response><Say>Sorry</Say><Hangup/></Response>"
    with pytest.raises(CallError, match=r"no <Connect><Stream>"):
        await place_call(gateway.webhook, [Hangup()])
    sock, port = refusing_port()
    with sock, pytest.raises(CallError, match="cannot"):
        await place_call(f"ws://127.0.0.1:{port}/twilio/media", [Hangup()], connect_timeout_s=2)
    assert gateway.peers.empty()


# --- the `gateway call` command ---------------------------------------------------------------------


async def _answering_bot(request: web.Request) -> web.WebSocketResponse:
    """Answers each caller turn (speech, then a silent frame) with 200 ms of audio and a mark."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    sid, talking, turns = "", False, 0
    async for msg in ws:
        data = json.loads(msg.data)
        if data["event"] == "start":
            sid = data["streamSid"]
        elif data["event"] == "media":
            silent = set(base64.b64decode(data["media"]["payload"])) == {0xFF}
            if talking and silent:
                turns += 1
                await ws.send_str(json.dumps({"event": "media", "streamSid": sid,
                                              "media": {"payload": b64(noise(1600, turns))}}))
                await ws.send_str(json.dumps({"event": "mark", "streamSid": sid,
                                              "mark": {"name": f"t{turns}"}}))
            talking = not silent
    return ws


async def _rude_bot(request: web.Request) -> web.WebSocketResponse:
    """Sends a binary frame after ``start``, then ends the call."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if json.loads(msg.data)["event"] == "start":
            await ws.send_bytes(b"\x00" * 160)
            await ws.close()
    return ws


@contextmanager
def bot_server() -> Iterator[str]:
    """A fake gateway on its own thread and loop (the command runs its own event loop)."""
    app = web.Application()
    app.router.add_get("/twilio/media", _answering_bot)
    app.router.add_get("/rude/media", _rude_bot)
    with serve_in_thread(app, shutdown_timeout=1.0) as base:
        yield base.replace("http://", "ws://") + "/twilio/media"


def _cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gateway")
    register_cli(parser.add_subparsers(dest="command"))
    return parser.parse_args(["call", *argv])


def test_cli_call_plays_records_and_summarizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = np.arange(3200) / 16000
    write_wav(tmp_path / "hello.wav", (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16), 16000)
    out = tmp_path / "out.wav"
    with bot_server() as url:
        args = _cli(url, "--play", str(tmp_path / "hello.wav"), "--record", str(out),
                    "--param", "tenant=acme", "--timeout", "3", "--greeting-wait", "0.2", "--auth-token", "")
        code = args.func(args)
    printed = capsys.readouterr()
    assert code == 0, printed
    assert printed.err == ""
    assert re.search(r"stream MZ[0-9a-f]{32}", printed.out)
    assert printed.out.count("caller speaks: hello.wav (0.2 s)") == 1
    assert printed.out.count("bot audio starts") == 1
    assert "caller hangs up" in printed.out and "protocol violations: 0" in printed.out
    assert "marks: 1 received, 1 echoed" in printed.out
    wav = read_wav(out)
    assert wav.rate == 8000 and wav.samples.ndim == 2 and wav.samples.shape[1] == 2
    assert wav.samples[:, 0].any() and wav.samples[:, 1].any()


def test_cli_exit_code_1_when_the_gateway_misbehaves(capsys: pytest.CaptureFixture[str]) -> None:
    with bot_server() as url:
        args = _cli(url.replace("/twilio/media", "/rude/media"), "--auth-token", "")
        assert args.func(args) == 1
        printed = capsys.readouterr()
        assert "protocol violation: binary frame of 160 bytes" in printed.out
        assert "FAILED: 1 protocol violation(s)" in printed.out
        args = _cli(url.replace("/twilio/media", "/nowhere"), "--auth-token", "")
        assert args.func(args) == 1
        printed = capsys.readouterr()
    assert printed.err.startswith("gateway call: the gateway refused the media socket")
    assert "HTTP 404" in printed.err
    assert printed.err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("ftp://example.com/x",), "bad URL"),
        (("ws://127.0.0.1:{port}/twilio/media",), "cannot open the media socket"),
        (("ws://127.0.0.1:{port}/twilio/media", "--param", "novalue"), "expected NAME=VALUE"),
        (("ws://127.0.0.1:{port}/twilio/media", "--play", "/nonexistent/x.wav"), "cannot read --play file"),
    ],
)
def test_cli_errors_are_one_line(
    argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sock, port = refusing_port()
    with sock:
        args = _cli(*(a.replace("{port}", str(port)) for a in argv))
        assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("gateway call: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err

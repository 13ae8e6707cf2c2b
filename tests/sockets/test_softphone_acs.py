"""The ACS softphone against a fake ACS-media-consuming gateway on 127.0.0.1."""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import WSMsgType, web

from gateway.audio import read_wav, resample, ulaw_to_array, write_wav
from gateway.carriers.acs.phone import place_acs_call
from gateway.carriers.twilio.phone import place_call
from gateway.softphone import (
    CallError,
    CallRejected,
    CallReport,
    Dtmf,
    Hangup,
    Reconnect,
    Say,
    Silence,
    WaitForBot,
    call_failures,
    register_cli,
    write_call_wav,
)
from tests.sockets.loopback import refusing_port, serve, serve_in_thread

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIMEOUT = 5.0
FRAME = 960  # 20 ms of PCM16 at 24 kHz
RATES = [pytest.param(24000, id="24kHz"), pytest.param(16000, id="16kHz")]
HEADERS = web.AppKey("headers", list[dict[str, str]])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def ulaw_noise(n: int, seed: int = 1) -> bytes:
    """µ-law bytes that are never 0xFF (silence)."""
    return np.random.default_rng(seed).integers(0, 255, n, dtype=np.uint8).tobytes()


def pcm_noise(nbytes: int, seed: int = 1) -> bytes:
    """PCM16 with no zero sample, so it can be found in a recording."""
    rng = np.random.default_rng(seed)
    samples = rng.integers(1000, 20000, nbytes // 2) * rng.choice([-1, 1], nbytes // 2)
    return samples.astype("<i2").tobytes()


def as_pcm(ulaw: bytes, rate: int = 24000) -> bytes:
    return resample(ulaw_to_array(ulaw), 8000, rate).astype("<i2").tobytes()


def padded(pcm: bytes, frame: int = FRAME) -> bytes:
    return pcm + bytes(-len(pcm) % frame)


def frame_of(rate: int) -> int:
    """Bytes in 20 ms of PCM16 mono: 960 at 24 kHz, 640 at 16 kHz."""
    return rate * 2 * 20 // 1000


def kind_of(m: dict[str, Any]) -> str:
    return str(m.get("kind"))


class AcsPeer:
    """The gateway's end of one ACS media socket: what the softphone sends, with arrival times."""

    def __init__(self, ws: web.WebSocketResponse, headers: dict[str, str], query: dict[str, str]) -> None:
        self.ws = ws
        self.headers = headers
        self.query = query
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self.closed = asyncio.Event()
        self._changed = asyncio.Event()

    async def pump(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for msg in self.ws:
                if msg.type is WSMsgType.TEXT:
                    self.messages.append((loop.time(), json.loads(msg.data)))
                    self._changed.set()
        finally:
            self.closed.set()
            self._changed.set()

    async def wait_for(self, pred: Callable[[], bool]) -> None:
        async def scan() -> None:
            while not pred():
                if self.closed.is_set():
                    raise AssertionError("the softphone closed the socket first")
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(scan(), TIMEOUT)

    async def wait_frames(self, n: int) -> None:
        await self.wait_for(lambda: len(self.frames()) >= n)

    def frames(self) -> list[dict[str, Any]]:
        return [m["audioData"] for _, m in self.messages if kind_of(m) == "AudioData"]

    def frame_times(self) -> list[float]:
        return [t for t, m in self.messages if kind_of(m) == "AudioData"]

    def sent_audio(self) -> bytes:
        return b"".join(base64.b64decode(f["data"]) for f in self.frames())

    async def send(self, message: Any) -> float:
        await self.ws.send_str(message if isinstance(message, str) else json.dumps(message))
        return asyncio.get_running_loop().time()

    async def audio(self, pcm: bytes, piece_ms: int = 100, rate: int = 24000) -> float:
        """Bot audio, in pieces like forwarded Voice Live deltas; returns when the first went."""
        step = piece_ms * frame_of(rate) // 20
        t = await self.send({"kind": "AudioData", "audioData": {"data": b64(pcm[:step])}})
        for i in range(step, len(pcm), step):
            await self.send({"kind": "AudioData", "audioData": {"data": b64(pcm[i : i + step])}})
        return t

    async def stop_audio(self) -> float:  # in the PascalCase shape some ACS clients use
        return await self.send({"Kind": "StopAudio", "AudioData": None, "StopAudio": {}})


class FakeAcsGateway:
    def __init__(self) -> None:
        self.base = ""
        self.peers: asyncio.Queue[AcsPeer] = asyncio.Queue()
        self.connections = 0
        self.refuse: dict[int, int] = {}  # connection number -> HTTP status
        self.tasks: list[asyncio.Task[CallReport]] = []

    @property
    def url(self) -> str:
        return self.base + "/acs/media?ctx=opaque%2Fctx%3D1"

    async def media_socket(self, request: web.Request) -> web.StreamResponse:
        self.connections += 1
        status = self.refuse.get(self.connections)
        if status is not None:
            return web.Response(status=status, text="no")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        peer = AcsPeer(ws, dict(request.headers), dict(request.query))
        self.peers.put_nowait(peer)
        await peer.pump()
        return ws

    def call(self, steps: list[Any], url: str | None = None, **kwargs: Any) -> asyncio.Task[CallReport]:
        task = asyncio.create_task(place_acs_call(url or self.url, steps, **kwargs))
        self.tasks.append(task)
        return task

    async def peer(self) -> AcsPeer:
        peer = await asyncio.wait_for(self.peers.get(), TIMEOUT)
        await peer.wait_for(lambda: bool(peer.messages))
        return peer


@pytest.fixture
async def gateway() -> Any:
    gw = FakeAcsGateway()
    app = web.Application()
    app.router.add_get("/acs/media", gw.media_socket)
    runner, base = await serve(app, shutdown_timeout=1.0)
    gw.base = base.replace("http://", "ws://")
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


def is_zero(audio: bytes) -> bool:
    return not any(audio)


# --- calls over sockets -----------------------------------------------------------------------------


@pytest.mark.parametrize("rate", RATES)
async def test_headers_metadata_frames_dtmf_and_hangup(gateway: FakeAcsGateway, tmp_path: Path, rate: int) -> None:
    frame = frame_of(rate)
    speech = ulaw_noise(2350)  # not a whole number of frames: the last one is padded with silence
    before = datetime.now(UTC)
    task = gateway.call([Say(speech, label="hello"), Dtmf("5"), Silence(200), Hangup()], token="jwt.abc.def",
                        call_connection_id="conn-1", correlation_id="corr-1", record=tmp_path / "acs.wav",
                        sample_rate=rate)
    peer = await gateway.peer()
    report = await finish(task)
    await asyncio.wait_for(peer.closed.wait(), TIMEOUT)
    msgs = [m for _, m in peer.messages]

    assert peer.headers["Authorization"] == "Bearer jwt.abc.def"
    assert peer.headers["x-ms-call-connection-id"] == "conn-1"
    assert peer.headers["x-ms-call-correlation-id"] == "corr-1"
    assert peer.query == {"ctx": "opaque/ctx=1"}

    sub = msgs[0]["audioMetadata"]["subscriptionId"]
    assert UUID_RE.fullmatch(sub) and sub == report.subscription_id
    assert msgs[0] == {"kind": "AudioMetadata", "audioMetadata": {
        "subscriptionId": sub, "encoding": "PCM", "sampleRate": rate, "channels": 1, "length": frame}}
    assert [kind_of(m) for m in msgs[1:]] == ["AudioData"] * 15 + ["DtmfData"] + ["AudioData"] * 10
    assert msgs[16] == {"kind": "DtmfData", "dtmfData": {"data": "5"}}

    frames = peer.frames()
    for f in frames:
        assert set(f) == {"timestamp", "participantRawID", "data", "silent"}
        assert f["participantRawID"] == "4:+15555550199"
        assert len(base64.b64decode(f["data"], validate=True)) == frame
    assert [f["silent"] for f in frames] == [False] * 15 + [True] * 10
    sent = peer.sent_audio()
    assert sent == padded(as_pcm(speech, rate), frame) + bytes(10 * frame)  # converted once, at the call's rate
    assert report.caller_audio == sent
    assert report.sent_payloads == [f["data"] for f in frames]

    stamps = [datetime.fromisoformat(f["timestamp"]) for f in frames]
    assert all(f["timestamp"].endswith("Z") and re.search(r"\.\d{3}Z$", f["timestamp"]) for f in frames)
    assert [b - a for a, b in itertools.pairwise(stamps)] == [timedelta(milliseconds=20)] * 24
    assert before - timedelta(seconds=1) <= stamps[0] <= before + timedelta(seconds=2)
    times = peer.frame_times()  # one frame every 20 ms: 24 intervals = 480 ms
    assert 0.35 <= times[-1] - times[0] <= 2.0

    assert kinds(report) == ["connected", "speech_start", "speech_end", "dtmf", "hangup"]
    assert report.events_of("speech_start")[0][1] == {"label": "hello", "ms": 2350 / 8}
    assert report.events_of("connected")[0][1]["call_connection_id"] == "conn-1"
    assert "jwt.abc.def" not in repr(report.events)
    assert (report.closed_by, report.close_code, peer.ws.close_code) == ("caller", 1000, 1000)
    assert (report.carrier, report.sample_rate, report.connections) == ("acs", rate, 1)
    assert report.bytes_per_ms == frame // 20  # 48 at 24 kHz, 32 at 16 kHz
    assert (report.call_connection_id, report.correlation_id) == ("conn-1", "corr-1")
    assert report.violations == 0 and call_failures(report) == []

    wav = read_wav(tmp_path / "acs.wav")
    assert wav.rate == rate and wav.samples.shape == (len(sent) // 2, 2)
    assert np.array_equal(wav.samples[:, 0], np.frombuffer(sent, "<i2"))
    assert not wav.samples[:, 1].any()  # the bot said nothing


async def test_ids_are_generated_and_no_token_means_no_authorization(gateway: FakeAcsGateway) -> None:
    reports = [await finish(gateway.call([Silence(40)])) for _ in range(2)]
    first, second = await gateway.peer(), await gateway.peer()
    for peer, report in zip((first, second), reports, strict=True):
        assert "Authorization" not in peer.headers
        assert peer.headers["x-ms-call-connection-id"] == report.call_connection_id
        assert peer.headers["x-ms-call-correlation-id"] == report.correlation_id
        assert UUID_RE.fullmatch(report.call_connection_id) and UUID_RE.fullmatch(report.correlation_id)
        assert len(report.sent_payloads) == 2 and report.closed_by == "caller"
    assert reports[0].call_connection_id != reports[1].call_connection_id
    assert reports[0].subscription_id != reports[1].subscription_id


@pytest.mark.parametrize("rate", RATES)
async def test_playback_in_real_time_and_stop_audio_discards_the_rest(
    gateway: FakeAcsGateway, tmp_path: Path, rate: int
) -> None:
    frame = frame_of(rate)
    task = gateway.call([WaitForBot(settle_ms=200, timeout_s=TIMEOUT), Hangup()], sample_rate=rate)
    peer = await gateway.peer()
    t_open = peer.messages[0][0]
    second = 50 * frame
    audio = pcm_noise(second, 2)  # one second
    await peer.wait_frames(3)
    seen = len(peer.frames())
    t_audio = await peer.audio(audio, rate=rate)
    await peer.wait_frames(seen + 25)  # 25 more 20 ms ticks of the softphone: about 0.5 s
    await peer.stop_audio()
    report = await finish(task)

    played = report.played_bytes
    assert 21 * frame <= played <= 29 * frame  # about half: played in real time at the call's rate
    assert (report.received_bytes, report.discarded_bytes, report.unplayed_bytes) == (second, second - played, 0)
    assert report.clears == 1 and report.violations == 0
    (t_stop, stop), = report.events_of("stop_audio")
    assert stop == {"played_bytes_total": played, "turn_played_bytes": played, "discarded_bytes": second - played}
    (t_end, end), = report.events_of("bot_audio_end")
    assert end == {"played_bytes": played}
    # nothing played after StopAudio (the bytes above): silence on the next tick, which a loaded machine may delay
    assert 0 <= t_end - t_stop <= 200

    # the bot channel holds what was played, once, where it was played on the call's timeline
    bot = report.bot_audio
    assert len(bot) == len(report.caller_audio)
    at = bot.find(audio[:played])
    assert at >= 0 and at % frame == 0
    assert is_zero(bot[:at]) and is_zero(bot[at + played :])
    expected_ms = (t_audio - t_open) * 1000
    assert expected_ms - 30 <= at / report.bytes_per_ms <= expected_ms + 100

    write_call_wav(report, tmp_path / "bot.wav")
    wav = read_wav(tmp_path / "bot.wav")
    assert wav.rate == rate and wav.samples.shape == (len(bot) // 2, 2)
    assert np.array_equal(wav.samples[:, 1], np.frombuffer(bot, "<i2"))


async def test_case_insensitive_messages_and_violations(gateway: FakeAcsGateway) -> None:
    task = gateway.call([WaitForBot(settle_ms=100, timeout_s=TIMEOUT), Hangup()])
    peer = await gateway.peer()
    a, b, c = pcm_noise(4800, 3), pcm_noise(4800, 4), pcm_noise(4800, 5)  # 100 ms each
    odd = b64(b"\x01\x02\x03")
    await peer.ws.send_bytes(a)
    await peer.send("not json")
    await peer.send("[1, 2]")
    await peer.send({"kind": "Mark", "mark": {"name": "m"}})
    await peer.send({"event": "media", "media": {"payload": b64(a)}})
    await peer.send({"kind": "AudioData", "audioData": {"data": "!!not base64"}})
    await peer.send({"kind": "AudioData", "audioData": {"data": odd}})
    await peer.send({"kind": "AudioData", "audioData": {}})
    # accepted: PascalCase, lowercase kind value with a stray stopAudio object, camelCase
    await peer.send({"Kind": "AudioData", "AudioData": {"Data": b64(a)}, "StopAudio": None})
    await peer.send({"kind": "audioData", "audioData": {"data": b64(b), "isSilent": False}, "stopAudio": {}})
    await peer.send({"kind": "AudioData", "audioData": {"data": b64(c)}})
    report = await finish(task)

    expected = ["binary frame of 4800 bytes", "not JSON", "not a JSON object", "unknown kind 'Mark'",
                "unknown kind None", "not valid base64", "odd byte count (3)", "without an audioData.data"]
    assert report.violations == len(expected) == len(report.violation_samples)
    for fragment, sample in zip(expected, report.violation_samples, strict=True):
        assert fragment in sample
    assert report.received_payloads == ["!!not base64", odd, b64(a), b64(b), b64(c)]
    assert report.received_bytes == report.played_bytes == 14400
    assert report.clears == 0 and report.discarded_bytes == 0
    assert report.bot_audio.find(a + b + c) >= 0
    (t_start, _), = report.events_of("bot_audio_start")
    (t_end, _), = report.events_of("bot_audio_end")
    # 300 ms played in real time, not at once (after a late tick the phone catches up on the frames it missed)
    assert 150 <= t_end - t_start <= 600
    assert report.closed_by == "caller"
    assert call_failures(report) == [f"{len(expected)} protocol violation(s)"]


async def test_reconnect_continues_the_call_on_a_new_socket(gateway: FakeAcsGateway) -> None:
    before, after = ulaw_noise(1600, 6), ulaw_noise(1600, 7)  # 200 ms each
    steps = [Say(before, "before"), WaitForBot(heard_ms=100, timeout_s=TIMEOUT), Reconnect(),
             Say(after, "after"), Hangup()]
    task = gateway.call(steps, token="tok-1", call_connection_id="conn-r", correlation_id="corr-r")
    first = await gateway.peer()
    await first.wait_frames(10)  # "before" has been said
    await first.audio(pcm_noise(48000, 8))  # a second of bot audio, still playing at the reconnect
    second = await gateway.peer()
    report = await finish(task)
    await asyncio.wait_for(first.closed.wait(), TIMEOUT)
    await asyncio.wait_for(second.closed.wait(), TIMEOUT)

    assert first.ws.close_code == 1000 and second.ws.close_code == 1000
    for name in ("Authorization", "x-ms-call-connection-id", "x-ms-call-correlation-id"):
        assert first.headers[name] == second.headers[name]
    assert second.headers["Authorization"] == "Bearer tok-1"
    assert second.headers["x-ms-call-connection-id"] == "conn-r"
    assert second.query == first.query == {"ctx": "opaque/ctx=1"}
    assert second.messages[0][1] == first.messages[0][1]  # AudioMetadata again, same subscription
    assert kind_of(second.messages[0][1]) == "AudioMetadata"

    # the caller's audio goes on where it stopped: the second socket carries "after"
    assert second.sent_audio() == padded(as_pcm(after))
    assert first.sent_audio().startswith(padded(as_pcm(before)))
    assert report.caller_audio == first.sent_audio() + second.sent_audio()
    assert report.sent_payloads == [f["data"] for f in first.frames() + second.frames()]
    last, nxt = first.frames()[-1]["timestamp"], second.frames()[0]["timestamp"]
    assert datetime.fromisoformat(nxt) - datetime.fromisoformat(last) == timedelta(milliseconds=20)

    (_, reconnect), = report.events_of("reconnect")
    assert reconnect["connection"] == 2 and reconnect["close_code"] == 1000
    assert 100 * 48 <= report.played_bytes <= 48000 - reconnect["discarded_bytes"]
    assert reconnect["discarded_bytes"] == report.discarded_bytes > 20000  # the unplayed rest is lost
    assert report.played_bytes + report.discarded_bytes + report.unplayed_bytes == report.received_bytes == 48000
    assert is_zero(report.bot_audio[len(first.sent_audio()) :])  # nothing plays after the reconnect
    order = kinds(report)
    assert order.index("reconnect") < len(order) - 1 - order[::-1].index("speech_start")
    assert (report.connections, report.closed_by, report.close_code) == (2, "caller", 1000)
    assert report.violations == 0 and report.clears == 0


async def test_refused_reconnect_ends_the_call(gateway: FakeAcsGateway) -> None:
    gateway.refuse[2] = 403
    task = gateway.call([Silence(60), Reconnect(), Say(ulaw_noise(800), "never"), Hangup()])
    first = await gateway.peer()
    report = await finish(task)
    await asyncio.wait_for(first.closed.wait(), TIMEOUT)
    (_, failed), = report.events_of("reconnect_failed")
    assert "HTTP 403" in failed["error"]
    assert (report.closed_by, report.connections, gateway.connections) == ("gateway", 1, 2)
    assert "speech_start" not in kinds(report) and "hangup" not in kinds(report)
    assert len(report.sent_payloads) == 3
    assert call_failures(report) == ["the gateway did not take the reopened media socket"]


async def test_gateway_closing_the_socket_ends_the_call(gateway: FakeAcsGateway) -> None:
    task = gateway.call([Silence(5000), Say(ulaw_noise(1600), label="never")])
    peer = await gateway.peer()
    await peer.wait_frames(5)
    await peer.ws.close()
    report = await finish(task)

    assert (report.closed_by, report.close_code) == ("gateway", 1000)
    assert report.events_of("closed_by_gateway")[0][1] == {"code": 1000}
    assert "speech_start" not in kinds(report) and "hangup" not in kinds(report)
    assert report.duration_ms < 2000
    assert len(report.caller_audio) == len(report.bot_audio) < 100 * FRAME
    assert call_failures(report) == []


async def test_setup_errors(gateway: FakeAcsGateway) -> None:
    for status in (401, 403):
        gateway.refuse[gateway.connections + 1] = status
        with pytest.raises(CallRejected, match=f"refused the media socket .*HTTP {status}"):
            await place_acs_call(gateway.url, [Hangup()], token="expired")
    with pytest.raises(CallError, match="bad URL"):
        await place_acs_call(gateway.url.replace("ws://", "http://"), [Hangup()])
    with pytest.raises(TypeError):
        await place_acs_call(gateway.url, ["not a step"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="Reconnect"):
        await place_call(gateway.url, [Reconnect()])
    with pytest.raises(ValueError, match="sample_rate must be one of"):
        await place_acs_call(gateway.url, [Hangup()], sample_rate=8000)
    sock, port = refusing_port()
    with sock, pytest.raises(CallError, match="cannot open the media socket"):
        await place_acs_call(f"ws://127.0.0.1:{port}/acs/media", [Hangup()], connect_timeout_s=2)
    assert gateway.peers.empty()


# --- the `gateway call --acs` command ----------------------------------------------------------------


async def _answering_bot(request: web.Request) -> web.WebSocketResponse:
    """Answers each caller turn (speech, then a silent frame) with 200 ms of audio at the stream's rate."""
    request.app[HEADERS].append(dict(request.headers))
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    talking, turns, frame = False, 0, 0
    async for msg in ws:
        data = json.loads(msg.data)
        if data["kind"] == "AudioMetadata":
            frame = frame_of(data["audioMetadata"]["sampleRate"])
        elif data["kind"] == "AudioData":
            silent = data["audioData"]["silent"]
            if talking and silent:
                turns += 1
                await ws.send_str(json.dumps({"kind": "AudioData",
                                              "audioData": {"data": b64(pcm_noise(10 * frame, turns))}}))
            talking = not silent
    return ws


@contextmanager
def bot_server() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A fake gateway on its own thread and loop (the command runs its own event loop)."""
    app = web.Application()
    headers: list[dict[str, str]] = []
    app[HEADERS] = headers
    app.router.add_get("/acs/media", _answering_bot)
    with serve_in_thread(app, shutdown_timeout=1.0) as base:
        yield base.replace("http://", "ws://") + "/acs/media?ctx=abc", headers


def _cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gateway")
    register_cli(parser.add_subparsers(dest="command"))
    return parser.parse_args(["call", *argv])


@pytest.mark.parametrize(("option", "rate"), [
    pytest.param((), 24000, id="default-24kHz"),
    pytest.param(("--sample-rate", "16000"), 16000, id="16kHz"),
])
def test_cli_acs_call_plays_records_and_summarizes(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   option: tuple[str, ...], rate: int) -> None:
    t = np.arange(3200) / 16000
    write_wav(tmp_path / "hello.wav", (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16), 16000)
    out = tmp_path / "out.wav"
    with bot_server() as (url, headers):
        args = _cli("--acs", url, "--token", "jwt-xyz", "--call-connection-id", "c-42",
                    "--play", str(tmp_path / "hello.wav"), "--record", str(out), "--timeout", "3",
                    "--greeting-wait", "0.2", *option)
        code = args.func(args)
    printed = capsys.readouterr()
    assert code == 0, printed
    assert printed.err == ""
    (seen,) = headers
    assert seen["Authorization"] == "Bearer jwt-xyz" and seen["x-ms-call-connection-id"] == "c-42"
    assert "ACS call c-42, subscription " in printed.out
    assert printed.out.count("caller speaks: hello.wav (0.2 s)") == 1
    assert printed.out.count("bot audio starts") == 1
    assert "bot audio ends (0.2 s played)" in printed.out
    assert "bot audio: 0.2 s received, 0.2 s played" in printed.out
    assert "media sockets: 1" in printed.out and "protocol violations: 0" in printed.out
    assert "jwt-xyz" not in printed.out
    wav = read_wav(out)
    assert wav.rate == rate and wav.samples.ndim == 2 and wav.samples.shape[1] == 2
    assert wav.samples[:, 0].any() and wav.samples[:, 1].any()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--acs", "ws://127.0.0.1:{port}/acs/media"), "cannot open the media socket"),
        (("--acs", "https://gw.example.com/acs/media"), "bad URL"),
        (("--acs", "ws://127.0.0.1:{port}/acs/media", "--param", "a=b"), "--param is for Twilio calls"),
        (("ws://127.0.0.1:{port}/twilio/media", "--acs", "ws://127.0.0.1:{port}/acs/media"), "not both"),
        (("ws://127.0.0.1:{port}/twilio/media", "--token", "x"), "are for ACS calls"),
        (("ws://127.0.0.1:{port}/twilio/media", "--sample-rate", "16000"), "are for ACS calls"),
        ((), "no URL"),
    ],
)
def test_cli_acs_errors_are_one_line(
    argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sock, port = refusing_port()
    with sock:
        args = _cli(*(a.replace("{port}", str(port)) for a in argv))
        assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("gateway call: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err

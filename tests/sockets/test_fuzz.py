"""Bad input on real media sockets (127.0.0.1 only), while good calls run beside it.

A gateway with Twilio and ACS authentication configured runs against the Voice Live simulator. One
good Twilio call and one good ACS call run while several signed and authorized media sockets send
what no carrier should: malformed and truncated JSON, binary frames, random bytes, frames over the
gateway's size limit, valid frames out of order, huge strings and wrong types in fields. Afterwards:
the gateway still answers, the good calls were untouched, every call has ended with nothing left
running, every kind of bad frame was logged at warning once per socket (repeats at debug), and no
log line carries a traceback or an unexpected error.

Call Automation requests go to a capturing fake azure-core transport; ACS tokens are minted with a
local RSA key whose JWKS a local server publishes. Nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from azure.communication.callautomation.aio import CallAutomationClient

from gateway.app import create_app
from gateway.audio import ASSETS, load_ulaw_8k
from gateway.bridge import CONTEXT, MAX_PHONE_MESSAGE
from gateway.carriers.acs.carrier import AcsCarrier
from gateway.carriers.acs.phone import place_acs_call
from gateway.carriers.twilio.carrier import TwilioCarrier
from gateway.carriers.twilio.phone import place_call
from gateway.config import parse_config
from gateway.simulator import RunningSimulator, SimulatorSettings, start_simulator
from gateway.softphone import CallReport, Hangup, Say, WaitForBot
from tests.sockets.loopback import AcsKeys, CapturingTransport, LogCapture, serve, twilio_signed

TWILIO_TOKEN = "fuzz-twilio-auth-token-5678"
RESOURCE_ID = "5e6f7a8b-0000-4000-8000-0000000fuzz1"
HOURS = load_ulaw_8k(ASSETS / "caller_hours.wav")
TIMEOUT_S = 15.0  # safety bound for anything awaited
CALL_TASKS = ("phone-", "voicelive-", "pacer-", "tool-")
OVERSIZED = MAX_PHONE_MESSAGE + 100_000  # past the gateway's limit: aiohttp closes the socket (1009)
HUGE = 300_000  # a huge string that still fits in a message

CONFIG = """
voicelive: {{endpoint: "{endpoint}"}}
twilio:
  auth_token: ${{TWILIO_TOKEN}}
acs:
  connection_string: ${{ACS}}
  resource_id: {resource}
  jwks_url: {jwks}
  reconnect_grace_s: 0.3
profiles:
  main: {{model: gpt-realtime, voice: alloy, turn_detection: {{type: server_vad, silence_duration_ms: 400}}}}
routes:
  default: main
"""


# --- a fake Call Automation service and a local ACS token issuer (loopback.py, conftest.py) ---------


@dataclass
class Rig:
    sim: RunningSimulator
    app: web.Application
    base: str  # http://127.0.0.1:PORT
    transport: CapturingTransport
    keys: AcsKeys
    seen: dict[tuple[str, str], asyncio.Event]

    def moment(self, call_id: str, event: str) -> asyncio.Event:
        """Set when the gateway's call ``call_id`` reports ``event`` (e.g. session.ready)."""
        return self.seen.setdefault((call_id, event), asyncio.Event())

    @property
    def twilio_url(self) -> str:
        return self.base.replace("http://", "ws://") + "/twilio/media"

    def acs_url(self) -> str:
        token = self.app[CONTEXT].tokens.issue({"profile": "main", "correlation": "corr-fuzz"}, 600)
        return self.base.replace("http://", "ws://") + "/acs/media?ctx=" + token

    def acs_jwt(self) -> str:
        return self.keys.mint(RESOURCE_ID)

    def call_token(self, call_sid: str) -> str:
        return self.app[CONTEXT].tokens.issue({"call": call_sid, "profile": "main"}, 60)


@pytest.fixture
async def rig(acs_keys: AcsKeys) -> AsyncIterator[Rig]:
    sim = await start_simulator(SimulatorSettings(audio_speed=4.0))
    access_key = base64.b64encode(b"k" * 32).decode()
    connection = f"endpoint=https://acs.example.communication.azure.com/;accesskey={access_key}"
    config = parse_config(
        CONFIG.format(endpoint=sim.endpoint, resource=RESOURCE_ID, jwks=acs_keys.jwks_url),
        env={"ACS": connection, "TWILIO_TOKEN": TWILIO_TOKEN})
    seen: dict[tuple[str, str], asyncio.Event] = {}

    def observer_for(call_id: str) -> Callable[[str, float, dict[str, Any]], None]:
        def observe(event: str, _t: float, _fields: dict[str, Any]) -> None:
            seen.setdefault((call_id, event), asyncio.Event()).set()
        return observe

    transport = CapturingTransport()
    client = CallAutomationClient.from_connection_string(connection, transport=transport)
    carriers = [TwilioCarrier(), AcsCarrier(client)]
    runner, base = await serve(create_app(config, observer_factory=observer_for, carriers=carriers))
    try:
        yield Rig(sim, runner.app, base, transport, acs_keys, seen)
    finally:
        await runner.cleanup()
        await client.close()
        await sim.close()


@pytest.fixture
def json_logs(log_capture: LogCapture) -> Iterator[io.StringIO]:
    with log_capture("debug") as buf:
        yield buf


# --- frames --------------------------------------------------------------------------------------

RNG = random.Random(20261121)


def random_text(size: int) -> str:
    """Random characters (valid UTF-8 on the wire, not JSON)."""
    return RNG.randbytes(size).decode("latin-1")


def ulaw_frame(tag: int) -> str:
    """20 ms of near-silent µ-law, distinct per ``tag`` (so a session's audio tells whose it is)."""
    return base64.b64encode(bytes([0xFF - (tag % 7), 0x7F - (tag % 5)]) * 80).decode()


def pcm_frame(tag: int) -> str:
    """20 ms of near-silent PCM16 24 kHz, distinct per ``tag``."""
    return base64.b64encode(bytes([tag % 251, 0]) * 480).decode()


def twilio_media(sid: str, payload: Any, track: Any = "inbound") -> str:
    return json.dumps({"event": "media", "streamSid": sid, "sequenceNumber": "2",
                       "media": {"track": track, "chunk": "1", "timestamp": "20", "payload": payload}})


def twilio_start(sid: str, call_sid: str, token: str, **start: Any) -> str:
    body = {"streamSid": sid, "callSid": call_sid, "accountSid": "ACfuzz", "tracks": ["inbound"],
            "customParameters": {"profile": "main", "token": token},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": "8000", "channels": "1"}, **start}
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": sid, "start": body})


def acs_audio(data: Any, silent: Any = False) -> str:
    return json.dumps({"kind": "AudioData", "audioData": {"timestamp": "2026-11-21T10:00:00.000Z",
                                                          "participantRawID": "4:+14255550123",
                                                          "data": data, "silent": silent}})


ACS_METADATA = json.dumps({"kind": "AudioMetadata", "audioMetadata": {
    "subscriptionId": "sub", "encoding": "PCM", "sampleRate": 24000, "channels": 1, "length": 640}})


@dataclass
class Frame:
    """One frame sent, and the problem the gateway should log for it (None: a usable frame)."""

    data: str | bytes
    problem: str | None = None


def twilio_bad_frames(sid: str, call_sid: str) -> list[Frame]:
    """Frames a Twilio media socket should not send once the stream has started."""
    good_media = twilio_media(sid, ulaw_frame(0))
    return [
        Frame("{this is not json", "malformed"),
        Frame(good_media[: len(good_media) // 2], "malformed"),  # truncated
        Frame(good_media[:-1], "malformed"),  # truncated by one character
        Frame("[]", "malformed"),
        Frame("null", "malformed"),
        Frame('"media"', "malformed"),
        Frame(random_text(2000), "malformed"),
        Frame(b"\x00\x01\x02binary", "binary-frame"),
        Frame(RNG.randbytes(4096), "binary-frame"),
        Frame(b"", "binary-frame"),
        # wrong types
        Frame(twilio_media(sid, 42), "malformed"),
        Frame(twilio_media(sid, ["AAAA"]), "malformed"),
        Frame(twilio_media(sid, "!!not base64!!"), "malformed"),
        Frame(twilio_media(sid, "AAA"), "malformed"),
        Frame(json.dumps({"event": "media", "media": "AAAA"}), "malformed"),
        Frame(json.dumps({"event": "mark", "mark": {"name": 7}}), "malformed"),
        Frame(json.dumps({"event": "mark", "mark": "m1"}), "malformed"),
        Frame(json.dumps({"event": "dtmf", "dtmf": {"digit": 5}}), "malformed"),
        Frame(json.dumps({"event": ["media"], "media": {"payload": "AAAA"}}), "malformed"),
        Frame(json.dumps({"event": 42}), "malformed"),
        Frame(json.dumps({"sequenceNumber": "1"}), "malformed"),
        Frame(json.dumps({"event": "start", "start": []}), "malformed"),
        Frame(json.dumps({"event": "start", "start": {"streamSid": 5, "callSid": call_sid}}), "malformed"),
        # huge strings in fields
        Frame(twilio_media(sid, "!" * HUGE), "malformed"),
        Frame(json.dumps({"event": "mark", "streamSid": "x" * HUGE, "mark": {"name": "y" * HUGE}})),  # unknown mark
        Frame(twilio_media(sid, ulaw_frame(0), track="z" * HUGE)),  # another track: not the caller's audio
        Frame(json.dumps({"event": "surprise-" + "e" * HUGE}), "unknown-event"),
        Frame(json.dumps({"event": "surprise", "streamSid": sid}), "unknown-event"),
        Frame(json.dumps({"event": "", "streamSid": sid}), "unknown-event"),
        # valid frames out of order
        Frame(twilio_start(sid, call_sid, "t"), "duplicate-start"),  # start twice
        Frame(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})),  # connected, late
        Frame(json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "never-sent"}})),
    ]


def acs_bad_frames() -> list[Frame]:
    return [
        Frame("{this is not json", "malformed"),
        Frame(acs_audio(pcm_frame(0))[:40], "malformed"),  # truncated
        Frame("[1, 2]", "malformed"),
        Frame(random_text(2000), "malformed"),
        Frame(b"\xff\xfe binary", "binary-frame"),
        Frame(RNG.randbytes(4096), "binary-frame"),
        Frame(acs_audio(42), "malformed"),
        Frame(acs_audio("AAAA"), "malformed"),  # 3 bytes: not whole PCM16 samples
        Frame(acs_audio("@@@@"), "malformed"),
        Frame(acs_audio("#" * HUGE), "malformed"),
        Frame(json.dumps({"kind": "AudioData", "audioData": "AAAA"}), "malformed"),
        Frame(json.dumps({"kind": "AudioMetadata", "audioMetadata": {"sampleRate": "fast"}}), "malformed"),
        Frame(json.dumps({"kind": "AudioMetadata", "audioMetadata": [24000]}), "malformed"),
        Frame(json.dumps({"kind": "DtmfData", "dtmfData": {"data": 5}}), "malformed"),
        Frame(json.dumps({"kind": 42}), "malformed"),
        Frame(json.dumps({"audioData": {"data": pcm_frame(0)}}), "malformed"),  # no kind
        Frame(json.dumps({"kind": "Surprise"}), "unknown-kind"),
        Frame(json.dumps({"kind": "K" * HUGE}), "unknown-kind"),
        Frame(json.dumps({"kind": "StopAudio", "stopAudio": {}}), "unknown-kind"),  # an outbound kind, inbound
        Frame(ACS_METADATA),  # metadata again, mid-call
        Frame(json.dumps({"kind": "DtmfData", "dtmfData": {"data": "5"}})),
    ]


# --- hand-driven sockets -------------------------------------------------------------------------


@dataclass
class SocketResult:
    call_id: str
    sent: Counter[str]  # problem -> frames sent with it
    good: list[str]  # caller audio the call must forward, in order
    close_code: int | None


async def _send(ws: aiohttp.ClientWebSocketResponse, data: str | bytes) -> None:
    if isinstance(data, bytes):
        await ws.send_bytes(data)
    else:
        await ws.send_str(data)


async def _closed(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """Read until the gateway closes the socket; its close code."""
    async with asyncio.timeout(TIMEOUT_S):
        while True:
            msg = await ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return ws.close_code


async def _send_interleaved(ws: aiohttp.ClientWebSocketResponse, bad: list[Frame], good_frame: Callable[[int], str],
                            wrap: Callable[[str], str], rounds: int) -> tuple[Counter[str], list[str]]:
    """Every bad frame ``rounds`` times, with a good audio frame after each one."""
    sent: Counter[str] = Counter()
    good: list[str] = []
    tag = 1
    for _ in range(rounds):
        for frame in bad:
            await _send(ws, frame.data)
            if frame.problem:
                sent[frame.problem] += 1
            payload = good_frame(tag)
            tag += 1
            await _send(ws, wrap(payload))
            good.append(payload)
    return sent, good


def twilio_headers(rig: Rig) -> dict[str, str]:
    return twilio_signed(TWILIO_TOKEN, rig.twilio_url)


def acs_headers(rig: Rig, call_id: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + rig.acs_jwt(), "x-ms-call-connection-id": call_id}


async def twilio_chaos(rig: Rig, http: aiohttp.ClientSession) -> SocketResult:
    """Frames out of order before start, then bad frames between good ones, stop, then more frames."""
    sid, call_sid = "MZfuzz1", "CAfuzz1"
    async with http.ws_connect(rig.twilio_url, headers=twilio_headers(rig)) as ws:
        await ws.send_str(json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "early"}}))  # mark first
        await ws.send_str(twilio_media(sid, ulaw_frame(0)))  # media before start: dropped
        await ws.send_str(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send_str(twilio_start(sid, call_sid, rig.call_token(call_sid)))
        await asyncio.wait_for(rig.moment(call_sid, "session.ready").wait(), TIMEOUT_S)
        sent, good = await _send_interleaved(ws, twilio_bad_frames(sid, call_sid), ulaw_frame,
                                             lambda p: twilio_media(sid, p), rounds=2)
        await ws.send_str(json.dumps({"event": "stop", "streamSid": sid, "stop": {"callSid": call_sid}}))
        # after stop: nothing more is read (the call is over)
        await ws.send_str(twilio_media(sid, ulaw_frame(999)))
        await ws.send_str("{after stop")
        code = await _closed(ws)
    return SocketResult(call_sid, sent, good, code)


async def twilio_oversized(rig: Rig, http: aiohttp.ClientSession) -> SocketResult:
    sid, call_sid = "MZfuzz2", "CAfuzz2"
    async with http.ws_connect(rig.twilio_url, headers=twilio_headers(rig)) as ws:
        await ws.send_str(twilio_start(sid, call_sid, rig.call_token(call_sid)))
        await asyncio.wait_for(rig.moment(call_sid, "session.ready").wait(), TIMEOUT_S)
        good = [ulaw_frame(1000 + i) for i in range(3)]
        for payload in good:
            await ws.send_str(twilio_media(sid, payload))
        await ws.send_str(twilio_media(sid, "A" * OVERSIZED))  # valid base64, but too big a message
        code = await _closed(ws)
    return SocketResult(call_sid, Counter(), good, code)


async def twilio_prestart_oversized(rig: Rig, http: aiohttp.ClientSession) -> int | None:
    async with http.ws_connect(rig.twilio_url, headers=twilio_headers(rig)) as ws:
        await ws.send_str(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send_bytes(b"\x00" * OVERSIZED)
        return await _closed(ws)


PRESTART_JUNK = [Frame("{not json", "malformed"), Frame("[]", "malformed"), Frame(random_text(500), "malformed"),
                 Frame(b"\x00binary", "binary-frame"), Frame(RNG.randbytes(300), "binary-frame")]


async def twilio_prestart_junk(rig: Rig, http: aiohttp.ClientSession) -> int | None:
    """Bad frames and valid frames out of order before any start, then a stop: no call is ever made."""
    sid = "MZfuzz4"
    async with http.ws_connect(rig.twilio_url, headers=twilio_headers(rig)) as ws:
        await ws.send_str(json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "early"}}))
        await ws.send_str(json.dumps({"event": "dtmf", "streamSid": sid, "dtmf": {"digit": "1"}}))
        for frame in PRESTART_JUNK:
            await _send(ws, frame.data)
        await ws.send_str(json.dumps({"event": "stop", "streamSid": sid}))
        return await _closed(ws)


async def twilio_unusable_start(rig: Rig, http: aiohttp.ClientSession) -> int | None:
    async with http.ws_connect(rig.twilio_url, headers=twilio_headers(rig)) as ws:
        await ws.send_str(twilio_start("MZfuzz3", "CAfuzz3", rig.call_token("CAfuzz3"),
                                       mediaFormat={"encoding": "audio/x-mulaw", "sampleRate": ["8000"]}))
        return await _closed(ws)


async def acs_chaos(rig: Rig, http: aiohttp.ClientSession) -> SocketResult:
    """Audio before metadata, then bad frames between good ones; then the socket closes for good."""
    call_id = "cc-fuzz1"
    async with http.ws_connect(rig.acs_url(), headers=acs_headers(rig, call_id)) as ws:
        first = pcm_frame(0)
        await ws.send_str(acs_audio(first))  # audio before metadata
        await ws.send_str(ACS_METADATA)
        await asyncio.wait_for(rig.moment(call_id, "session.ready").wait(), TIMEOUT_S)
        sent, good = await _send_interleaved(ws, acs_bad_frames(), pcm_frame, acs_audio, rounds=2)
    # the socket is closed; after the reconnect grace, the call ends
    return SocketResult(call_id, sent, [first, *good], None)


async def acs_oversized(rig: Rig, http: aiohttp.ClientSession) -> SocketResult:
    call_id = "cc-fuzz2"
    async with http.ws_connect(rig.acs_url(), headers=acs_headers(rig, call_id)) as ws:
        await ws.send_str(ACS_METADATA)
        await asyncio.wait_for(rig.moment(call_id, "session.ready").wait(), TIMEOUT_S)
        good = [pcm_frame(200 + i) for i in range(3)]
        for payload in good:
            await ws.send_str(acs_audio(payload))
        await ws.send_bytes(b"\x01" * OVERSIZED)
        code = await _closed(ws)
    return SocketResult(call_id, Counter(), good, code)


async def acs_unsupported_format(rig: Rig, http: aiohttp.ClientSession) -> SocketResult:
    call_id = "cc-fuzz3"
    async with http.ws_connect(rig.acs_url(), headers=acs_headers(rig, call_id)) as ws:
        await ws.send_str(json.dumps({"kind": "AudioMetadata", "audioMetadata": {
            "encoding": "PCM", "sampleRate": 16000, "channels": 1}}))
        code = await _closed(ws)
    return SocketResult(call_id, Counter({"unsupported-format": 1}), [], code)


# --- the test ------------------------------------------------------------------------------------


def _session_with(rig: Rig, appended: list[str]) -> bool:
    return any(session.appended == appended for session in rig.sim.state.sessions)


async def _healthy(http: aiohttp.ClientSession, rig: Rig) -> None:
    async with http.get(rig.base + "/healthz") as response:
        assert response.status == 200
        assert (await response.json())["status"] == "ok"


def _lines(buf: io.StringIO) -> list[dict[str, Any]]:
    lines = []
    for raw in buf.getvalue().splitlines():
        assert "Traceback" not in raw, raw[:2000]
        lines.append(json.loads(raw))
    return lines


async def test_bad_media_sockets_leave_the_gateway_and_other_calls_alone(
        rig: Rig, json_logs: io.StringIO, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    good_twilio = asyncio.create_task(place_call(
        rig.base + "/twilio/voice", [Say(HOURS, "question"), WaitForBot(), Hangup()], auth_token=TWILIO_TOKEN))
    good_acs = asyncio.create_task(place_acs_call(
        rig.acs_url(), [Say(HOURS, "question"), WaitForBot(), Hangup()], token=rig.acs_jwt(),
        call_connection_id="cc-good"))
    async with aiohttp.ClientSession() as http:
        bad: list[Awaitable[Any]] = [
            twilio_chaos(rig, http), twilio_oversized(rig, http), twilio_prestart_oversized(rig, http),
            twilio_unusable_start(rig, http), twilio_prestart_junk(rig, http),
            acs_chaos(rig, http), acs_oversized(rig, http), acs_unsupported_format(rig, http),
        ]
        results = await asyncio.wait_for(asyncio.gather(*bad), TIMEOUT_S)
        (t_chaos, t_big, t_prestart_code, t_refused_code, t_junk_code, a_chaos, a_big, a_format) = results
        await _healthy(http, rig)
        twilio_report: CallReport = await asyncio.wait_for(good_twilio, TIMEOUT_S)
        acs_report: CallReport = await asyncio.wait_for(good_acs, TIMEOUT_S)
        await asyncio.wait_for(rig.app[CONTEXT].wait_idle(), TIMEOUT_S)
        await _healthy(http, rig)

    # the good calls were untouched
    for report in (twilio_report, acs_report):
        assert report.violations == 0, report.violation_samples
        assert report.played_bytes > 0
        assert report.closed_by == "caller"
        assert _session_with(rig, report.sent_payloads)

    # how each bad socket ended
    assert t_chaos.close_code == 1000  # the stop ended the call
    assert t_big.close_code == 1009 and a_big.close_code == 1009  # message too big
    assert t_prestart_code == 1009
    assert t_refused_code == 1003  # unsupported start
    assert t_junk_code == 1000  # stopped before it started
    assert a_format.close_code in (1000, 1011)  # the gateway ended the call
    (hangup,) = rig.transport.of(":terminate")  # ... and hung up through Call Automation
    assert "/calling/callConnections/cc-fuzz3:terminate" in hangup.url
    # every good frame of a bad socket reached Voice Live, in order, and nothing else did
    for result in (t_chaos, t_big, a_chaos, a_big):
        assert _session_with(rig, result.good), result.call_id

    # nothing of any call is left
    ctx = rig.app[CONTEXT]
    assert ctx.calls == {}
    leftovers = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(CALL_TASKS)]
    assert leftovers == []
    # ... nor any socket: every Voice Live session the gateway opened was closed by it
    await asyncio.wait_for(asyncio.gather(*(s.closed.wait() for s in rig.sim.state.sessions)), TIMEOUT_S)
    assert rig.sim.state.active == []

    lines = _lines(json_logs)
    for result in (t_chaos, a_chaos, a_format):
        mine = [line for line in lines if line.get("call_id") == result.call_id]
        bad_lines = [line for line in mine if line.get("event") == "ignored a bad message"]
        warned = Counter(line["problem"] for line in bad_lines if line["level"] == "warning")
        repeated = Counter(line["problem"] for line in bad_lines if line["level"] == "debug")
        assert warned == {problem: 1 for problem in result.sent}, result.call_id  # once per kind
        assert warned + repeated == result.sent, result.call_id  # repeats at debug
        (summary,) = [line for line in mine if line.get("event") == "call ended"]
        assert summary["bad_messages"] == dict(result.sent)
    for call_id in ("CAfuzz2", "cc-fuzz2"):
        assert any(line.get("event", "").startswith("phone socket error") and line.get("call_id") == call_id
                   for line in lines)

    started = {line["call_id"] for line in lines if line.get("event") == "call started"}
    assert started == {twilio_report.call_sid, "cc-good", "CAfuzz1", "CAfuzz2", "cc-fuzz1", "cc-fuzz2", "cc-fuzz3"}
    # bad frames before start are not lost in silence: one warning per kind of problem, repeats at debug
    before_start = [line for line in lines if line.get("event", "").startswith("ignored a") and "call_id" not in line]
    warned = Counter(line.get("problem") for line in before_start if line["level"] == "warning")
    assert warned and max(warned.values()) == 1

    expected_errors = {"media stream refused: unusable start message"}
    errors = [line for line in lines if line.get("level") in ("error", "critical")]
    assert {line["event"] for line in errors} == expected_errors, errors
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


# --- hostile frames that defeat naive JSON parsing, over sockets ---------------------------------

DEEP = "[" * 100_000 + "]" * 100_000  # 200 kB of nesting: json.loads raises RecursionError (3.11-3.13)
LONG_NUMBER = '{"event":"media","kind":"AudioData","n":' + "1" * 4301 + "}"  # ValueError without .msg
INFINITE_TWILIO_START = json.dumps({"event": "start", "start": {  # json.dumps writes Infinity
    "streamSid": "MZx", "callSid": "CAx", "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": float("inf")}}})
INFINITE_ACS_METADATA = json.dumps({"kind": "AudioMetadata", "audioMetadata": {
    "encoding": "PCM", "sampleRate": float("inf"), "channels": 1}})


async def test_hostile_frames_the_parsers_choke_on_are_rejected_like_any_bad_frame(
        rig: Rig, json_logs: io.StringIO, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    twilio_cases = {"CAgap1": DEEP, "CAgap2": LONG_NUMBER, "CAgap3": INFINITE_TWILIO_START}
    acs_cases = {"cc-gap1": DEEP, "cc-gap2": LONG_NUMBER, "cc-gap3": INFINITE_ACS_METADATA}

    async def twilio_call(http: aiohttp.ClientSession, call_sid: str, text: str) -> int | None:
        sid = "MZ" + call_sid
        async with http.ws_connect(rig.twilio_url, headers=twilio_headers(rig)) as ws:
            await ws.send_str(twilio_start(sid, call_sid, rig.call_token(call_sid)))
            await asyncio.wait_for(rig.moment(call_sid, "session.ready").wait(), TIMEOUT_S)
            await ws.send_str(text)
            await ws.send_str(twilio_media(sid, ulaw_frame(1)))
            await ws.send_str(json.dumps({"event": "stop", "streamSid": sid}))
            return await _closed(ws)

    async def acs_call(http: aiohttp.ClientSession, call_id: str, text: str) -> None:
        async with http.ws_connect(rig.acs_url(), headers=acs_headers(rig, call_id)) as ws:
            await ws.send_str(ACS_METADATA)
            await asyncio.wait_for(rig.moment(call_id, "session.ready").wait(), TIMEOUT_S)
            await ws.send_str(text)
            await ws.send_str(acs_audio(pcm_frame(1)))

    async def before_start(http: aiohttp.ClientSession, text: str) -> int | None:
        async with http.ws_connect(rig.twilio_url, headers=twilio_headers(rig)) as ws:
            await ws.send_str(text)
            await ws.send_str(json.dumps({"event": "stop", "streamSid": "MZx"}))
            return await _closed(ws)

    async with aiohttp.ClientSession() as http:
        codes = await asyncio.wait_for(asyncio.gather(
            *(twilio_call(http, call_sid, text) for call_sid, text in twilio_cases.items()),
            *(acs_call(http, call_id, text) for call_id, text in acs_cases.items()),
            *(before_start(http, text) for text in (DEEP, LONG_NUMBER))), TIMEOUT_S)
        await asyncio.wait_for(rig.app[CONTEXT].wait_idle(), TIMEOUT_S)
    lines = _lines(json_logs)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert [line for line in lines if line["level"] == "error"] == []
    assert [code for code in codes if code is not None] == [1000] * 5
    for call_id in (*twilio_cases, *acs_cases):
        (summary,) = [line for line in lines if line.get("event") == "call ended" and line.get("call_id") == call_id]
        assert summary["bad_messages"] == {"malformed": 1}, summary
        assert summary["end_reason"] != "gateway_error"


async def test_hostile_bad_frames_before_start_are_warned_once_per_kind(rig: Rig, json_logs: io.StringIO) -> None:
    async with aiohttp.ClientSession() as http:
        code = await asyncio.wait_for(twilio_prestart_junk(rig, http), TIMEOUT_S)
    assert code == 1000
    warned = Counter(line.get("problem") for line in _lines(json_logs)
                     if line["level"] == "warning" and line["event"].startswith("ignored a"))
    assert warned == {"malformed": 1, "binary-frame": 1}


async def test_hostile_an_oversized_frame_before_start_is_logged(rig: Rig, json_logs: io.StringIO) -> None:
    async with aiohttp.ClientSession() as http:
        assert await asyncio.wait_for(twilio_prestart_oversized(rig, http), TIMEOUT_S) == 1009
    warnings = [line for line in _lines(json_logs) if line["level"] == "warning"
                and line.get("component") != "gateway.app"]  # (start-up notices)
    assert warnings, "nothing said why the media socket was closed"

"""The simulator's lean benchmark mode: a Voice Live stand-in that costs almost nothing.

No VAD, no audio decoding beyond a 20-byte marker: every session gets scripted spoken replies at
set intervals (g711_ulaw deltas sent faster than real time), and now and then a caller barge-in
(``input_audio_buffer.speech_started`` while the reply still plays on the phone). It measures what
only Voice Live's side can see: how long caller frames took from the load generator to here, and
whether any was lost or reordered. ``GET /bench/stats`` returns the figures, ``POST /bench/reset``
starts a new measuring window.

Markers (shared with the load generator, ``bench/loadgen.py``): every caller frame starts with
``CALLER_MAGIC``, the call number, the frame number and the monotonic send time; every 480-byte
block of bot audio starts with ``BOT_MAGIC``, the call number, a block number and the send time.
``time.monotonic`` is one clock for every process on a machine.

With ``turns`` (``gateway simulator --bench --turns``) it answers the caller's turns instead of
replying on a timer, for the end-to-end latency run (``bench/latency.py``): a lean energy VAD (the
RMS of each caller frame's audio after its marker against ``vad_threshold_dbfs``, in whole 20 ms
frames) sends ``speech_started`` after ``vad_min_speech_ms`` of loud frames and, after the
session's ``turn_detection.silence_duration_ms`` of quiet frames, ``speech_stopped`` and
``committed``; ``response_delay_ms`` after the frame that completed the silence arrived, it sends
the reply. The first 480-byte block of each reply carries a turn marker instead of the bot marker:
``TURN_MAGIC``, the call number, the frame number of the caller's last loud frame, the send time
of the frame that completed the silence (read from its marker), when that frame arrived here, and
when the first audio delta was sent. So the phone knows how long the stand-in itself held the
turn, and how long the two messages on the turn's critical path spent in the gateway.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import struct
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from gateway.log import get_logger

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # stdlib before 3.13, audioop-lts from 3.13

log = get_logger("simulator.bench")

CALLER_MAGIC = b"GWC1"
BOT_MAGIC = b"GWB1"
MARKER = struct.Struct("<4sIId")  # magic, call number, sequence, monotonic send time (s)
BLOCK = 480  # bytes of bot audio per marker: the gateway's 60 ms pieces on the phone leg
TURN_MAGIC = b"GWT1"
# magic, call number, frame number of the caller's last loud frame, send time of the frame that
# completed the silence, its arrival at the stand-in, the first audio delta's send time
TURN_MARKER = struct.Struct("<4sIIddd")
_TURN_PREFIX = base64.b64encode(TURN_MAGIC[:3]).decode()  # how a base64 payload with one starts
_TURN_CHARS = -(-TURN_MARKER.size // 3) * 4
_APPEND_HEAD = '{"type":"input_audio_buffer.append","audio":"'


def caller_frame(call: int, seq: int, now: float, size: int = 160) -> bytes:
    return MARKER.pack(CALLER_MAGIC, call, seq, now) + b"\xff" * (size - MARKER.size)


def read_marker(payload_b64: str, magic: bytes) -> tuple[int, int, float] | None:
    """(call, sequence, sent) from the first bytes of a base64 audio payload, if it carries one."""
    try:
        head = base64.b64decode(payload_b64[:28])  # 21 bytes: enough for the marker
    except (binascii.Error, ValueError):
        return None
    if len(head) < MARKER.size or head[:4] != magic:
        return None
    _, call, seq, sent = MARKER.unpack_from(head)
    return call, seq, sent


def bot_audio(call: int, first_block: int, blocks: int, now: float, turn: bytes = b"") -> str:
    """``blocks`` blocks of bot audio, each with a bot marker; with ``turn`` (a packed
    ``TURN_MARKER``), the first block carries that instead."""
    out = bytearray()
    for i in range(blocks):
        head = turn if i == 0 and turn else MARKER.pack(BOT_MAGIC, call, first_block + i, now)
        out += head + b"\x7f" * (BLOCK - len(head))
    return base64.b64encode(bytes(out)).decode()


TurnStamp = tuple[int, int, float, float, float]
"""(call, last loud frame, completing frame sent, completing frame arrived, first delta sent)."""


def parse_turn_marker(data: bytes) -> TurnStamp | None:
    if len(data) < TURN_MARKER.size or data[:4] != TURN_MAGIC:
        return None
    _, call, seq, sent, arrived, answered = TURN_MARKER.unpack_from(data)
    return call, seq, sent, arrived, answered


def read_turn_marker(payload_b64: str) -> TurnStamp | None:
    """The turn marker at the start of a base64 audio payload, if it carries one."""
    if not payload_b64.startswith(_TURN_PREFIX):
        return None
    try:
        return parse_turn_marker(base64.b64decode(payload_b64[:_TURN_CHARS]))
    except (binascii.Error, ValueError):
        return None


@dataclass
class BenchSettings:
    reply_every_s: float = 4.0  # a spoken reply this often per session
    reply_ms: int = 2000  # how long each reply is
    delta_ms: int = 240  # audio per response.audio.delta
    speed: float = 4.0  # replies are sent this many times faster than real time
    barge_in_every: int = 3  # every Nth reply is interrupted (0: never)
    barge_in_after_ms: int = 800  # ... this long after its first audio
    turns: bool = False  # answer the caller's turns (a lean VAD) instead of replying on a timer
    response_delay_ms: int = 300  # turns: from the frame that ends the caller's turn to the reply
    vad_threshold_dbfs: float = -40.0  # turns: a frame louder than this (RMS) is speech
    vad_min_speech_ms: int = 100  # turns: this much loud audio starts a turn

    def __post_init__(self) -> None:
        if self.response_delay_ms < 0 or self.vad_min_speech_ms < 0:
            raise ValueError("response_delay_ms and vad_min_speech_ms must be >= 0")
        if not self.speed > 0 or self.reply_ms <= 0:
            raise ValueError("speed and reply_ms must be > 0")


@dataclass
class BenchStats:
    caller_delays_ms: list[float] = field(default_factory=list)
    frames: int = 0
    lost: int = 0
    reordered: int = 0
    barge_ins: list[tuple[int, float]] = field(default_factory=list)  # (call, speech_started sent at)
    sessions: int = 0
    turns: int = 0  # turns mode: caller turns the VAD ended
    answers: int = 0  # ... and replies sent to them
    silence_ms: set[int] = field(default_factory=set)  # ... the hang-overs the sessions asked for
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> dict[str, Any]:
        delays = np.asarray(self.caller_delays_ms, dtype=np.float64)
        pct = (lambda q: round(float(np.percentile(delays, q)), 3)) if delays.size else (lambda q: None)
        return {
            "window_s": round(time.monotonic() - self.started, 3),
            "sessions": self.sessions,
            "caller_frames": self.frames,
            "caller_frames_lost": self.lost,
            "caller_frames_reordered": self.reordered,
            "caller_delay_ms": {"p50": pct(50), "p99": pct(99), "max": round(float(delays.max()), 3)
                                if delays.size else None},
            "barge_ins": [{"call": c, "sent": t} for c, t in self.barge_ins],
            "turns": self.turns,
            "answers": self.answers,
            "silence_duration_ms": sorted(self.silence_ms),
        }


@dataclass
class _Listener:
    """One session's turn detection, in whole caller frames (turns mode)."""

    silence_ms: int = 500
    format: str = "pcm16"
    rate: int = 24000  # pcm16 input's sampling rate
    in_speech: bool = False
    loud_run: float = 0.0  # ms of loud audio in a row
    quiet_run: float = 0.0  # ms of quiet audio in a row
    last_loud: int = -1  # frame number of the caller's last loud frame
    item: int = 0
    reply: asyncio.Task[None] | None = None


class BenchVoiceLive:
    def __init__(self, settings: BenchSettings) -> None:
        self.settings = settings
        self.stats = BenchStats()
        self._next_seq: dict[int, int] = {}
        self._threshold = 10.0 ** (settings.vad_threshold_dbfs / 20.0) * 32768.0  # turns: RMS of speech

    async def realtime(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        self.stats.sessions += 1
        await ws.send_str(json.dumps({"type": "session.created", "event_id": "e0", "session": {
            "id": "sess_bench", "input_audio_format": "pcm16", "output_audio_format": "pcm16"}}))
        script: asyncio.Task[None] | None = None
        call = [-1]  # the load generator's number for this call, learnt from its frames
        listener = _Listener() if self.settings.turns else None
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                data = msg.data
                if data.startswith(_APPEND_HEAD):
                    if listener is None:
                        call[0] = self._caller_frame(data[len(_APPEND_HEAD):-2], call[0])
                    else:
                        await self._turn_frame(ws, listener, data[len(_APPEND_HEAD):-2], call)
                elif '"session.update"' in data:
                    event = json.loads(data)
                    session = event.get("session") or {}
                    await ws.send_str(json.dumps({"type": "session.updated", "event_id": "e1", "session": {
                        **session, "id": "sess_bench"}}))
                    if listener is not None:
                        listener.format = session.get("input_audio_format") or listener.format
                        listener.rate = int(session.get("input_audio_sampling_rate") or listener.rate)
                        td = session.get("turn_detection") or {}
                        listener.silence_ms = int(td.get("silence_duration_ms") or 500)
                        self.stats.silence_ms.add(listener.silence_ms)
                    elif script is None:
                        script = asyncio.create_task(self._replies(ws, call))
        finally:
            for task in (script, listener.reply if listener is not None else None):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
        return ws

    def _caller_frame(self, payload: str, call: int) -> int:
        marker = read_marker(payload, CALLER_MAGIC)
        if marker is None:
            return call
        number, seq, sent = marker
        self._count(number, seq, sent, time.monotonic())
        return number

    def _count(self, number: int, seq: int, sent: float, now: float) -> None:
        stats = self.stats
        stats.caller_delays_ms.append((now - sent) * 1000.0)
        stats.frames += 1
        expected = self._next_seq.get(number)
        if expected is not None and seq != expected:
            if seq > expected:
                stats.lost += seq - expected
            else:
                stats.reordered += 1
        self._next_seq[number] = max(seq + 1, expected or 0)

    def _shape(self) -> tuple[int, int, float]:
        """Blocks per delta, deltas per reply, seconds between deltas."""
        s = self.settings
        blocks_per_delta = max(1, s.delta_ms * 8 // BLOCK)
        deltas = max(1, s.reply_ms // (blocks_per_delta * BLOCK // 8))
        return blocks_per_delta, deltas, blocks_per_delta * BLOCK / 8 / 1000 / s.speed

    async def _turn_frame(self, ws: web.WebSocketResponse, listener: _Listener, payload: str,
                          call: list[int]) -> None:
        """A caller frame in turns mode: measured like any other, then heard by the lean VAD."""
        now = time.monotonic()
        try:
            data = base64.b64decode(payload)
        except (binascii.Error, ValueError):
            return
        marker = None
        if len(data) >= MARKER.size and data[:4] == CALLER_MAGIC:
            _, number, seq, sent = MARKER.unpack_from(data)
            marker = number, seq, sent
            call[0] = number
            self._count(number, seq, sent, now)
            data = data[MARKER.size:]  # the marker is not audio
        fmt = listener.format
        if fmt in ("g711_ulaw", "g711_alaw"):
            ms = len(data) / 8  # the marker's bytes are 2.5 ms of the frame's 20
            pcm = audioop.ulaw2lin(data, 2) if fmt == "g711_ulaw" else audioop.alaw2lin(data, 2)
        else:
            ms = len(data) * 500 / listener.rate
            pcm = data[: len(data) & ~1]
        if marker is not None:
            ms += MARKER.size / 8 if fmt in ("g711_ulaw", "g711_alaw") else MARKER.size * 500 / listener.rate
        if not pcm:
            return
        s = self.settings
        if audioop.rms(pcm, 2) > self._threshold:
            listener.quiet_run = 0.0
            listener.loud_run += ms
            if marker is not None:
                listener.last_loud = marker[1]
            if not listener.in_speech and listener.loud_run >= s.vad_min_speech_ms:
                listener.in_speech = True
                listener.item += 1
                reply = listener.reply
                if reply is not None and not reply.done():  # the caller talks over the reply
                    reply.cancel()
                await ws.send_str('{"type":"input_audio_buffer.speech_started","audio_start_ms":0,'
                                  f'"item_id":"user_{listener.item}","event_id":"s{listener.item}"}}')
            return
        listener.loud_run = 0.0
        if not listener.in_speech:
            return
        listener.quiet_run += ms
        if listener.quiet_run < listener.silence_ms - 1e-6:
            return
        # this frame completed the silence: the caller's turn is over
        listener.in_speech = False
        listener.quiet_run = 0.0
        self.stats.turns += 1
        item = f"user_{listener.item}"
        await ws.send_str(f'{{"type":"input_audio_buffer.speech_stopped","audio_end_ms":0,"item_id":"{item}",'
                          f'"event_id":"p{listener.item}"}}')
        await ws.send_str(f'{{"type":"input_audio_buffer.committed","item_id":"{item}",'
                          f'"event_id":"m{listener.item}"}}')
        # without markers (not the load generator's frames), the reply has no turn marker
        stamp = (marker[0], listener.last_loud, marker[2]) if marker is not None else None
        listener.reply = asyncio.create_task(self._answer(ws, listener.item, now, stamp))

    async def _answer(self, ws: web.WebSocketResponse, turn: int, arrived: float,
                      stamp: tuple[int, int, float] | None) -> None:
        """The reply to one caller turn, ``response_delay_ms`` after the frame that ended it
        ``arrived``; ``stamp``: (call, its last loud frame, when the ending frame was sent)."""
        call = stamp[0] if stamp is not None else 0
        blocks_per_delta, deltas, pause = self._shape()
        await asyncio.sleep(max(0.0, arrived + self.settings.response_delay_ms / 1000 - time.monotonic()))
        rid, item = f"resp_{turn}", f"item_{turn}"
        await ws.send_str(json.dumps({"type": "response.created", "event_id": f"c{turn}",
                                      "response": {"id": rid, "status": "in_progress"}}))
        status = "cancelled"
        try:
            for i in range(deltas):
                now = time.monotonic()
                head = b""
                if i == 0 and stamp is not None:
                    head = TURN_MARKER.pack(TURN_MAGIC, call, stamp[1], stamp[2], arrived, now)
                audio = bot_audio(call, i * blocks_per_delta, blocks_per_delta, now, head)
                await ws.send_str(f'{{"type":"response.audio.delta","response_id":"{rid}","item_id":"{item}",'
                                  f'"output_index":0,"content_index":0,"delta":"{audio}"}}')
                if i == 0:
                    self.stats.answers += 1
                await asyncio.sleep(pause)
            status = "completed"
        finally:
            if not ws.closed:
                await ws.send_str(json.dumps({"type": "response.done", "event_id": f"d{turn}",
                                              "response": {"id": rid, "status": status}}))

    async def _replies(self, ws: web.WebSocketResponse, call: list[int]) -> None:
        s = self.settings
        blocks_per_delta, deltas, pause = self._shape()
        block = 0
        for turn in range(1, 1_000_000):
            await asyncio.sleep(s.reply_every_s)  # the scripted conversation's own timing
            rid, item = f"resp_{turn}", f"item_{turn}"
            await ws.send_str(json.dumps({"type": "response.created", "event_id": f"c{turn}",
                                          "response": {"id": rid, "status": "in_progress"}}))
            barge = s.barge_in_every and turn % s.barge_in_every == 0
            first_audio = time.monotonic()
            status = "completed"
            for _ in range(deltas):
                now = time.monotonic()
                if barge and (now - first_audio) * 1000 >= s.barge_in_after_ms:
                    self.stats.barge_ins.append((call[0], now))
                    await ws.send_str('{"type":"input_audio_buffer.speech_started","audio_start_ms":0,'
                                      f'"item_id":"user_{turn}","event_id":"b{turn}"}}')
                    status = "cancelled"
                    break
                audio = bot_audio(call[0], block, blocks_per_delta, now)
                block += blocks_per_delta
                await ws.send_str(f'{{"type":"response.audio.delta","response_id":"{rid}","item_id":"{item}",'
                                  f'"output_index":0,"content_index":0,"delta":"{audio}"}}')
                await asyncio.sleep(pause)
            if barge and status == "completed":  # the reply was shorter than the barge-in delay
                await asyncio.sleep(max(0.0, s.barge_in_after_ms / 1000 - (time.monotonic() - first_audio)))
                self.stats.barge_ins.append((call[0], time.monotonic()))
                await ws.send_str('{"type":"input_audio_buffer.speech_started","audio_start_ms":0,'
                                  f'"item_id":"user_{turn}","event_id":"b{turn}"}}')
            await ws.send_str(json.dumps({"type": "response.done", "event_id": f"d{turn}",
                                          "response": {"id": rid, "status": status}}))

    async def stats_route(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.summary())

    async def reset_route(self, request: web.Request) -> web.Response:
        self.stats = BenchStats(sessions=self.stats.sessions, silence_ms=self.stats.silence_ms)
        return web.json_response({"ok": True})


def create_bench_app(settings: BenchSettings | None = None) -> web.Application:
    bench = BenchVoiceLive(settings or BenchSettings())
    app = web.Application()
    app.router.add_get("/voice-live/realtime", bench.realtime)
    app.router.add_get("/bench/stats", bench.stats_route)
    app.router.add_post("/bench/reset", bench.reset_route)
    return app

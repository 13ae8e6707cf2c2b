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
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from gateway.log import get_logger

log = get_logger("simulator.bench")

CALLER_MAGIC = b"GWC1"
BOT_MAGIC = b"GWB1"
MARKER = struct.Struct("<4sIId")  # magic, call number, sequence, monotonic send time (s)
BLOCK = 480  # bytes of bot audio per marker: the gateway's 60 ms pieces on the phone leg
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


def bot_audio(call: int, first_block: int, blocks: int, now: float) -> str:
    out = bytearray()
    for i in range(blocks):
        out += MARKER.pack(BOT_MAGIC, call, first_block + i, now) + b"\x7f" * (BLOCK - MARKER.size)
    return base64.b64encode(bytes(out)).decode()


@dataclass
class BenchSettings:
    reply_every_s: float = 4.0  # a spoken reply this often per session
    reply_ms: int = 2000  # how long each reply is
    delta_ms: int = 240  # audio per response.audio.delta
    speed: float = 4.0  # replies are sent this many times faster than real time
    barge_in_every: int = 3  # every Nth reply is interrupted (0: never)
    barge_in_after_ms: int = 800  # ... this long after its first audio


@dataclass
class BenchStats:
    caller_delays_ms: list[float] = field(default_factory=list)
    frames: int = 0
    lost: int = 0
    reordered: int = 0
    barge_ins: list[tuple[int, float]] = field(default_factory=list)  # (call, speech_started sent at)
    sessions: int = 0
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
        }


class BenchVoiceLive:
    def __init__(self, settings: BenchSettings) -> None:
        self.settings = settings
        self.stats = BenchStats()
        self._next_seq: dict[int, int] = {}

    async def realtime(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        self.stats.sessions += 1
        await ws.send_str(json.dumps({"type": "session.created", "event_id": "e0", "session": {
            "id": "sess_bench", "input_audio_format": "pcm16", "output_audio_format": "pcm16"}}))
        script: asyncio.Task[None] | None = None
        call = [-1]  # the load generator's number for this call, learnt from its frames
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                data = msg.data
                if data.startswith(_APPEND_HEAD):
                    call[0] = self._caller_frame(data[len(_APPEND_HEAD):-2], call[0])
                elif '"session.update"' in data:
                    event = json.loads(data)
                    session = event.get("session") or {}
                    await ws.send_str(json.dumps({"type": "session.updated", "event_id": "e1", "session": {
                        **session, "id": "sess_bench"}}))
                    if script is None:
                        script = asyncio.create_task(self._replies(ws, call))
        finally:
            if script is not None:
                script.cancel()
                await asyncio.gather(script, return_exceptions=True)
        return ws

    def _caller_frame(self, payload: str, call: int) -> int:
        marker = read_marker(payload, CALLER_MAGIC)
        if marker is None:
            return call
        number, seq, sent = marker
        stats = self.stats
        stats.caller_delays_ms.append((time.monotonic() - sent) * 1000.0)
        stats.frames += 1
        expected = self._next_seq.get(number)
        if expected is not None and seq != expected:
            if seq > expected:
                stats.lost += seq - expected
            else:
                stats.reordered += 1
        self._next_seq[number] = max(seq + 1, expected or 0)
        return number

    async def _replies(self, ws: web.WebSocketResponse, call: list[int]) -> None:
        s = self.settings
        blocks_per_delta = max(1, s.delta_ms * 8 // BLOCK)
        deltas = max(1, s.reply_ms // (blocks_per_delta * BLOCK // 8))
        pause = blocks_per_delta * BLOCK / 8 / 1000 / s.speed
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
        self.stats = BenchStats(sessions=self.stats.sessions)
        return web.json_response({"ok": True})


def create_bench_app(settings: BenchSettings | None = None) -> web.Application:
    bench = BenchVoiceLive(settings or BenchSettings())
    app = web.Application()
    app.router.add_get("/voice-live/realtime", bench.realtime)
    app.router.add_get("/bench/stats", bench.stats_route)
    app.router.add_post("/bench/reset", bench.reset_route)
    return app

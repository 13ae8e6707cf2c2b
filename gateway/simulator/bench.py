"""The simulator's lean benchmark mode: a Voice Live stand-in that costs almost nothing.

No VAD and no audio decoding beyond a 20-byte marker, but each session is a conversation with
the events the real service sends with server VAD (the order of its protocol reference): a caller
turn (``input_audio_buffer.speech_started``; ``speech_ms`` later ``speech_stopped``,
``input_audio_buffer.committed`` with ``item_id`` and ``previous_item_id`` and the user item's
``conversation.item.created``), then, ``response_delay_ms`` later, the bot's reply
(``response.created``, ``response.output_item.added``, the assistant item's
``conversation.item.created``, ``response.audio.delta`` of ``delta_ms`` each sent ``speed`` times
faster than real time as the service bursts them, ``response.audio.done``,
``response.output_item.done``, ``response.done``), then the pause until the next turn. Every
``barge_in_every``-th reply is barged into: ``barge_in_after_ms`` after its first audio (while it
still plays on the phone; with ``barge_in_spread_ms``, give or take up to half of that, at random per
reply, as callers do not all interrupt in the same millisecond) comes the next turn's
``speech_started``; a reply still being generated then ends ``cancelled`` (``turn_detected``), and
that barge-in turn is committed like any other.
A ``conversation.item.truncate`` from the client is answered with ``conversation.item.truncated``
and its ``audio_end_ms`` recorded per (call, response), to compare with what the phone played.

Scenarios (``BenchSettings.scenario``), the reply of turn *k* of a session due at
``offset + k * reply_every_s`` on the machine's monotonic clock:

- ``steady``: each session has its own ``offset`` (at random in the period), so replies spread;
- ``burst``: ``offset`` is 0 for every session: every session's replies start at the same instant
  (a multiple of the period); which sessions are barged into varies from reply to reply (the barge-ins
  of one slot come together, unless ``barge_in_spread_ms`` spreads them);
- ``barge-storm``: as ``burst``, and every session is barged into on the same replies, at once;
- ``talk``: the caller talks without pause: one ``speech_started``, never a commit, no reply.

It measures what only Voice Live's side can see: how long caller frames took from the load
generator to here, whether any was lost or reordered, when each barge-in's ``speech_started`` was
written, and the truncations. ``GET /bench/stats`` returns the figures (``?period_s=P&quiet=k,...``:
also the caller delay of the frames sent in each period *k*, ``[k * P, (k + 1) * P)`` on the monotonic
clock, and over the listed periods' frames together), ``POST /bench/reset`` starts a new measuring
window.

Markers (shared with the load generator, ``bench/loadgen.py``): every caller frame starts with
``CALLER_MAGIC``, the call number, the frame number and the monotonic send time; every block of
bot audio (60 ms: 480 bytes of g711, 2880 of pcm16 at 24 kHz) starts with ``BOT_MAGIC``, the call
number, ``bot_seq(response, block)`` (the response's number in the session and the block's number
in the response, so the phone knows how much of which response it played) and the send time.
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
import math
import random
import struct
import time
import warnings
from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from gateway.frames import write_server_frames
from gateway.log import get_logger

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # stdlib before 3.13, audioop-lts from 3.13

log = get_logger("simulator.bench")

CALLER_MAGIC = b"GWC1"
BOT_MAGIC = b"GWB1"
MARKER = struct.Struct("<4sIId")  # magic, call number, sequence, monotonic send time (s)
BLOCK = 480  # bytes of g711 bot audio per marker (60 ms): the gateway's 60 ms pieces on the phone leg
BLOCK_MS = 60
PCM16_BLOCK = BLOCK_MS * 48  # the same 60 ms in pcm16 at 24 kHz: 2880 bytes
BYTES_PER_MS = {"g711_ulaw": 8, "g711_alaw": 8, "pcm16": 48}
SCENARIOS = ("steady", "burst", "barge-storm", "talk")
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


def bot_seq(response: int, block: int) -> int:
    """A bot block's sequence number: its response's number in the session and its own in the response."""
    return (response << 16) | (block & 0xFFFF)


def split_bot_seq(seq: int) -> tuple[int, int]:
    """(response, block) of a bot block's sequence number."""
    return seq >> 16, seq & 0xFFFF


def bot_audio(call: int, first_block: int, blocks: int, now: float, turn: bytes = b"", *,
              response: int = 0, block: int = BLOCK, fill: bytes = b"\x7f", size: int | None = None) -> str:
    """``blocks`` blocks of ``block`` bytes of bot audio (with ``size``: ``size`` bytes, cut in blocks
    of ``block`` bytes from the start, the last one shorter), each starting with a bot marker (sequence
    ``bot_seq(response, first_block + i)``; a last block too short for one has none); with ``turn``
    (a packed ``TURN_MARKER``), the first block carries that instead."""
    total = blocks * block if size is None else size
    out = bytearray()
    for i, start in enumerate(range(0, total, block)):
        length = min(block, total - start)
        head = turn if i == 0 and turn else MARKER.pack(BOT_MAGIC, call, bot_seq(response, first_block + i), now)
        if length < len(head):
            head = b""
        out += head + fill * (length - len(head))
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
    reply_every_s: float = 4.0  # a reply this often per session (the conversation's period)
    reply_ms: int = 2000  # how long each reply is
    delta_ms: int = 240  # audio per response.audio.delta (a marker at the start of each 60 ms of it)
    speed: float = 4.0  # replies are sent this many times faster than real time
    barge_in_every: int = 3  # every Nth reply is interrupted (0: never)
    barge_in_after_ms: int = 300  # ... this long after its first audio (still being generated at 4x)
    # ... give or take up to half this, at random per barged reply (0: every barge-in exactly then)
    barge_in_spread_ms: int = 0
    scenario: str = "steady"  # steady, burst, barge-storm or talk (see the module's docstring)
    speech_ms: int = 1200  # the caller's turn: speech_started to speech_stopped
    turns: bool = False  # answer the caller's turns (a lean VAD) instead of replying on a timer
    response_delay_ms: int = 300  # from the end of the caller's turn to the reply
    vad_threshold_dbfs: float = -40.0  # turns: a frame louder than this (RMS) is speech
    vad_min_speech_ms: int = 100  # turns: this much loud audio starts a turn
    seed: int = 0  # steady: where in the period each session's replies fall

    def __post_init__(self) -> None:
        if self.response_delay_ms < 0 or self.vad_min_speech_ms < 0:
            raise ValueError("response_delay_ms and vad_min_speech_ms must be >= 0")
        if not self.speed > 0 or self.reply_ms <= 0 or self.delta_ms <= 0:
            raise ValueError("speed, reply_ms and delta_ms must be > 0")
        if self.scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}, not {self.scenario!r}")
        if self.turns or self.scenario == "talk":
            return
        lead = (self.speech_ms + self.response_delay_ms) / 1000
        if self.speech_ms <= 0 or self.reply_ms / 1000 + lead >= self.reply_every_s:
            raise ValueError("speech_ms must be > 0, and reply_ms + speech_ms + response_delay_ms shorter than "
                             "the reply period (else every caller turn would talk over the reply before)")
        if self.barge_in_spread_ms < 0:
            raise ValueError("barge_in_spread_ms must be >= 0")
        earliest, latest = (self.barge_in_after_ms - self.barge_in_spread_ms / 2,
                            self.barge_in_after_ms + self.barge_in_spread_ms / 2)
        if self.barge_in_every and not (
                0 < earliest and latest / 1000 < self.reply_every_s - self.response_delay_ms / 1000):
            raise ValueError("barge_in_after_ms (give or take half of barge_in_spread_ms) must be > 0 and leave "
                             "response_delay_ms before the next reply")


def _spread(delays: np.ndarray) -> dict[str, Any]:
    """p50, p99 and max of delays (ms; None each when there are none)."""
    if not delays.size:
        return {"p50": None, "p99": None, "max": None}
    return {"p50": round(float(np.percentile(delays, 50)), 3), "p99": round(float(np.percentile(delays, 99)), 3),
            "max": round(float(delays.max()), 3)}


@dataclass
class BenchStats:
    caller_delays_ms: array[float] = field(default_factory=lambda: array("d"))
    caller_sent: array[float] = field(default_factory=lambda: array("d"))  # each delay's frame's send time
    frames: int = 0
    lost: int = 0
    reordered: int = 0
    # (call, response barged into, speech_started written at)
    barge_ins: list[tuple[int, int, float]] = field(default_factory=list)
    # (call, response, audio_end_ms, received at): the client's conversation.item.truncate
    truncations: list[tuple[int, int, int, float]] = field(default_factory=list)
    replies: int = 0  # replies begun (response.created)
    cancelled: int = 0  # ... that a barge-in cut while they were generated
    commits: int = 0  # caller turns committed
    sessions: int = 0
    turns: int = 0  # turns mode: caller turns the VAD ended
    answers: int = 0  # ... and replies sent to them
    silence_ms: set[int] = field(default_factory=set)  # ... the hang-overs the sessions asked for
    started: float = field(default_factory=time.monotonic)

    def summary(self, period_s: float | None = None, quiet: frozenset[int] = frozenset()) -> dict[str, Any]:
        """The window's figures. With ``period_s``: also the caller delay of the frames sent in each
        period (period *k* is sent times in [k * period_s, (k + 1) * period_s) on the monotonic clock),
        and over the frames of the ``quiet`` periods together."""
        delays = np.frombuffer(self.caller_delays_ms, dtype=np.float64) if self.caller_delays_ms else np.zeros(0)
        by_period: dict[str, Any] = {}
        if period_s:
            sent = np.frombuffer(self.caller_sent, dtype=np.float64) if self.caller_sent else np.zeros(0)
            periods = np.floor(sent / period_s).astype(np.int64)
            by_period = {
                "caller_delay_by_period": [
                    {"period": int(k), "frames": int((periods == k).sum()),
                     **_spread(delays[periods == k])} for k in np.unique(periods)],
                "caller_delay_in_quiet_periods": _spread(delays[np.isin(periods, sorted(quiet))]),
            }
        return {
            "window_s": round(time.monotonic() - self.started, 3),
            "sessions": self.sessions,
            "caller_frames": self.frames,
            "caller_frames_lost": self.lost,
            "caller_frames_reordered": self.reordered,
            "caller_delay_ms": _spread(delays),
            **by_period,
            "barge_ins": [{"call": c, "response": r, "sent": t} for c, r, t in self.barge_ins],
            "truncations": [{"call": c, "response": r, "audio_end_ms": ms, "at": t}
                            for c, r, ms, t in self.truncations],
            "replies": self.replies,
            "replies_cancelled": self.cancelled,
            "commits": self.commits,
            "turns": self.turns,
            "answers": self.answers,
            "silence_duration_ms": sorted(self.silence_ms),
        }


@dataclass
class _Session:
    """One session of the conversation scenarios."""

    index: int  # the stand-in's own number for it (0, 1, ...)
    call: int = -1  # the load generator's number for the call, learnt from its frames
    in_format: str = "pcm16"
    out_format: str = "pcm16"
    appended_chars: int = 0  # base64 characters of caller audio appended (the service's audio clock)
    last_item: str | None = None  # the conversation's last item (previous_item_id of the next)
    users: int = 0  # user items so far
    responses: int = 0  # responses so far
    transport: asyncio.Transport | None = None  # the session's socket, for messages written together

    def audio_ms(self) -> int:
        return int(self.appended_chars * 3 // 4 / BYTES_PER_MS.get(self.in_format, 48))


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
        self._sessions = 0

    async def realtime(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        self.stats.sessions += 1
        self._sessions += 1
        await ws.send_str(json.dumps({"type": "session.created", "event_id": "e0", "session": {
            "id": "sess_bench", "input_audio_format": "pcm16", "output_audio_format": "pcm16"}}))
        script: asyncio.Task[None] | None = None
        call = [-1]  # turns: the load generator's number for this call, learnt from its frames
        listener = _Listener() if self.settings.turns else None
        session = _Session(self._sessions - 1, transport=request.transport)
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                data = msg.data
                if data.startswith(_APPEND_HEAD):
                    if listener is None:
                        payload = data[len(_APPEND_HEAD):-2]
                        session.appended_chars += len(payload)
                        session.call = self._caller_frame(payload, session.call)
                    else:
                        await self._turn_frame(ws, listener, data[len(_APPEND_HEAD):-2], call)
                elif '"conversation.item.truncate"' in data:
                    await self._truncate(ws, session, data)
                elif '"session.update"' in data:
                    event = json.loads(data)
                    update = event.get("session") or {}
                    await ws.send_str(json.dumps({"type": "session.updated", "event_id": "e1", "session": {
                        **update, "id": "sess_bench"}}))
                    session.in_format = update.get("input_audio_format") or session.in_format
                    session.out_format = update.get("output_audio_format") or session.out_format
                    if listener is not None:
                        listener.format = update.get("input_audio_format") or listener.format
                        listener.rate = int(update.get("input_audio_sampling_rate") or listener.rate)
                        td = update.get("turn_detection") or {}
                        listener.silence_ms = int(td.get("silence_duration_ms") or 500)
                        self.stats.silence_ms.add(listener.silence_ms)
                    elif script is None:
                        script = asyncio.create_task(self._conversation(ws, session))
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
        stats.caller_sent.append(sent)
        stats.frames += 1
        expected = self._next_seq.get(number)
        if expected is not None and seq != expected:
            if seq > expected:
                stats.lost += seq - expected
            else:
                stats.reordered += 1
        self._next_seq[number] = max(seq + 1, expected or 0)

    async def _truncate(self, ws: web.WebSocketResponse, session: _Session, data: str) -> None:
        """The client cut an assistant item to what the caller heard: recorded, and answered."""
        try:
            event = json.loads(data)
            item_id, end_ms = event["item_id"], int(event["audio_end_ms"])
        except (ValueError, KeyError, TypeError):
            return
        if isinstance(item_id, str) and item_id.startswith("item_a") and item_id[6:].isdigit():
            self.stats.truncations.append((session.call, int(item_id[6:]), end_ms, time.monotonic()))
        await ws.send_str(json.dumps({"type": "conversation.item.truncated", "event_id": f"t{item_id}",
                                      "item_id": item_id, "content_index": 0, "audio_end_ms": end_ms}))

    def _shape(self, bytes_per_ms: int = 8) -> tuple[int, int, int, float]:
        """Bytes per delta, 60 ms blocks per delta (the last one maybe shorter), deltas per reply,
        seconds between deltas (``bytes_per_ms``: of the session's output format)."""
        s = self.settings
        size = s.delta_ms * bytes_per_ms
        return size, -(-s.delta_ms // BLOCK_MS), max(1, s.reply_ms // s.delta_ms), s.delta_ms / 1000 / s.speed

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
        size, blocks_per_delta, deltas, pause = self._shape()
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
                audio = bot_audio(call, i * blocks_per_delta, 0, now, head, size=size)
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

    async def _speech_started(self, ws: web.WebSocketResponse, session: _Session) -> str:
        """A caller turn begins: the user item's id, which speech_stopped and committed will name."""
        session.users += 1
        item = f"item_u{session.users}"
        await ws.send_str(f'{{"type":"input_audio_buffer.speech_started","event_id":"s{session.users}",'
                          f'"audio_start_ms":{session.audio_ms()},"item_id":"{item}"}}')
        return item

    async def _commit(self, ws: web.WebSocketResponse, session: _Session, item: str) -> None:
        """The caller's turn ends: speech_stopped, committed and the user item created."""
        n = session.users
        previous = json.dumps(session.last_item)
        await _send_together(ws, session, [
            f'{{"type":"input_audio_buffer.speech_stopped","event_id":"p{n}",'
            f'"audio_end_ms":{session.audio_ms()},"item_id":"{item}"}}',
            f'{{"type":"input_audio_buffer.committed","event_id":"m{n}",'
            f'"previous_item_id":{previous},"item_id":"{item}"}}',
            f'{{"type":"conversation.item.created","event_id":"i{n}","previous_item_id":{previous},'
            f'"item":{{"id":"{item}","object":"realtime.item","type":"message","role":"user",'
            f'"status":"completed","content":[{{"type":"input_audio","transcript":null}}]}}}}'])
        session.last_item = item
        self.stats.commits += 1

    def _barged(self, session: _Session, k: int) -> bool:
        """Whether reply slot ``k`` of the session is barged into."""
        every = self.settings.barge_in_every
        if not every:
            return False
        if self.settings.scenario == "barge-storm":
            return k % every == 0  # the same slots for every session: all at once
        return (k + session.index) % every == 0  # spread over the sessions

    async def _conversation(self, ws: web.WebSocketResponse, session: _Session) -> None:
        """The session's scripted conversation (not in turns mode): caller turns committed, replies
        on the slots ``offset + k * reply_every_s`` of the monotonic clock, barge-ins."""
        s = self.settings
        if s.scenario == "talk":
            await self._speech_started(ws, session)
            return  # the caller never stops: nothing is committed and nothing answered
        period, delay = s.reply_every_s, s.response_delay_ms / 1000
        lead = s.speech_ms / 1000 + delay
        offset = 0.0 if s.scenario in ("burst", "barge-storm") else \
            random.Random(s.seed * 1_000_003 + session.index).uniform(0.0, period)
        k = math.floor((time.monotonic() + lead - offset) / period) + 1  # the first slot with time for a turn
        item: str | None = None  # the caller's turn under way (begun by a barge-in)
        while True:
            due = offset + k * period
            if item is None:
                await _sleep_until(due - lead)
                item = await self._speech_started(ws, session)
            await _sleep_until(due - delay)
            await self._commit(ws, session, item)
            await _sleep_until(due)
            item = await self._reply(ws, session, self._barged(session, k))
            k += 1

    async def _reply(self, ws: web.WebSocketResponse, session: _Session, barge: bool) -> str | None:
        """One reply; with ``barge``, the caller's next turn begins while it plays (its item id)."""
        pcm = session.out_format == "pcm16"
        block, fill = (PCM16_BLOCK, b"\x00") if pcm else (BLOCK, b"\x7f")
        size, blocks_per_delta, deltas, pause = self._shape(BYTES_PER_MS[session.out_format] if pcm else 8)
        session.responses += 1
        n = session.responses
        rid, item = f"resp_{n}", f"item_a{n}"
        previous = json.dumps(session.last_item)
        self.stats.replies += 1
        # the reply's opening events go with its first audio, back to back, as the service sends them
        opening = [
            f'{{"type":"response.created","event_id":"c{n}","response":{{"id":"{rid}",'
            f'"object":"realtime.response","status":"in_progress","output":[]}}}}',
            f'{{"type":"response.output_item.added","event_id":"o{n}","response_id":"{rid}",'
            f'"output_index":0,"item":{{"id":"{item}","object":"realtime.item","type":"message",'
            f'"role":"assistant","status":"in_progress","content":[]}}}}',
            f'{{"type":"conversation.item.created","event_id":"a{n}","previous_item_id":{previous},'
            f'"item":{{"id":"{item}","object":"realtime.item","type":"message","role":"assistant",'
            f'"status":"in_progress","content":[]}}}}']
        session.last_item = item
        common = f'"response_id":"{rid}","item_id":"{item}","output_index":0,"content_index":0'
        first_audio = time.monotonic()
        barge_at = first_audio + self._barge_in_after_s(session, n)
        status = "completed"
        for i in range(deltas):
            if barge and time.monotonic() >= barge_at:
                status = "cancelled"  # the caller spoke while it was being generated
                break
            audio = bot_audio(session.call, i * blocks_per_delta, 0, time.monotonic(), response=n, block=block,
                              fill=fill, size=size)
            await _send_together(ws, session, [
                *opening, f'{{"type":"response.audio.delta","event_id":"d{n}_{i}",{common},"delta":"{audio}"}}'])
            opening = []  # (sent with the first audio)
            if i + 1 < deltas:
                await _sleep_until(first_audio + (i + 1) * pause)  # faster than real time, on its own clock
        if opening:  # cut before its first audio: the opening goes alone
            await _send_together(ws, session, opening)
        user: str | None = None
        if status == "cancelled":
            self.stats.cancelled += 1
            user = await self._barge_in(ws, session, n)
        details = ',"status_details":{"type":"cancelled","reason":"turn_detected"}' if user else ""
        await _send_together(ws, session, [
            f'{{"type":"response.audio.done","event_id":"ad{n}",{common}}}',
            f'{{"type":"response.output_item.done","event_id":"od{n}","response_id":"{rid}",'
            f'"output_index":0,"item":{{"id":"{item}","object":"realtime.item","type":"message",'
            f'"role":"assistant","status":"{"incomplete" if user else "completed"}",'
            f'"content":[{{"type":"audio","transcript":""}}]}}}}',
            f'{{"type":"response.done","event_id":"rd{n}","response":{{"id":"{rid}",'
            f'"object":"realtime.response","status":"{status}"{details},"output":[]}}}}'])
        if barge and user is None:  # generated before the barge-in: the caller cuts it while it plays
            await _sleep_until(barge_at)
            user = await self._barge_in(ws, session, n)
        return user

    def _barge_in_after_s(self, session: _Session, response: int) -> float:
        """How long after its first audio reply ``response`` of the session is barged into (if it is):
        ``barge_in_after_ms``, give or take up to half of ``barge_in_spread_ms`` (the same for a given
        seed, session and reply)."""
        s = self.settings
        spread = s.barge_in_spread_ms
        if not spread:
            return s.barge_in_after_ms / 1000
        u = random.Random((s.seed * 1_000_003 + session.index) * 65_537 + response).random()
        return (s.barge_in_after_ms + (u - 0.5) * spread) / 1000

    async def _barge_in(self, ws: web.WebSocketResponse, session: _Session, response: int) -> str:
        self.stats.barge_ins.append((session.call, response, time.monotonic()))  # the write's time
        return await self._speech_started(ws, session)

    async def stats_route(self, request: web.Request) -> web.Response:
        """``GET /bench/stats``; ``?period_s=P&quiet=k1,k2``: with the caller delay by period too."""
        query = request.query
        try:
            period_s = float(query.get("period_s") or 0)
            quiet = frozenset(int(k) for k in query.get("quiet", "").split(",") if k)
        except ValueError:
            return web.json_response({"error": "period_s must be a number and quiet whole numbers, comma-separated"},
                                     status=400)
        if period_s < 0 or not math.isfinite(period_s):
            return web.json_response({"error": "period_s must be a finite number of seconds, >= 0 (0: no periods)"},
                                     status=400)
        return web.json_response(self.stats.summary(period_s or None, quiet))

    async def reset_route(self, request: web.Request) -> web.Response:
        self.stats = BenchStats(sessions=self.stats.sessions, silence_ms=self.stats.silence_ms)
        return web.json_response({"ok": True})


_TOGETHER_LIMIT = 1 << 16  # bytes waiting in the socket before messages go through aiohttp's own path


async def _send_together(ws: web.WebSocketResponse, session: _Session, messages: list[str]) -> None:
    """Send events that the service emits back to back in one write, as they then reach the client
    (one system call for the stand-in instead of one each: in a burst it writes for 200 sessions on the
    harness's core). aiohttp's own path, one message at a time, when the socket is closing or backed up."""
    if ws.closed or not write_server_frames(session.transport, messages, _TOGETHER_LIMIT):
        for message in messages:
            await ws.send_str(message)


async def _sleep_until(when: float) -> None:
    """Sleep until ``when`` on the monotonic clock (at once if it has passed)."""
    await asyncio.sleep(max(0.0, when - time.monotonic()))


def create_bench_app(settings: BenchSettings | None = None) -> web.Application:
    bench = BenchVoiceLive(settings or BenchSettings())
    app = web.Application()
    app.router.add_get("/voice-live/realtime", bench.realtime)
    app.router.add_get("/bench/stats", bench.stats_route)
    app.router.add_post("/bench/reset", bench.reset_route)
    return app

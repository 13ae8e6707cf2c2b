"""Load generator: many simulated phone calls against a running gateway, from one process.

Each call opens the carrier's media socket the way that carrier does (``--carrier``; a dialect
class per carrier: for Twilio ``X-Twilio-Signature`` and the per-call token the webhook would have
handed out), streams a 20 ms µ-law frame every 20 ms, plays the bot's audio back in real time and
acknowledges each mark when its audio has played; a flush drops playback and acknowledges the
pending marks at once. One timer drives every call, so
the generator stays cheap: it is not what limits the figures.

With ``--turns`` each call talks in turns instead of streaming silence: a tone for ``--speech-ms``,
then silence until the bot's reply has played and a pause has passed (``bench/latency.py``); each
reply's first block carries the stand-in's turn marker, and every measured turn's figures (end to
end, the stand-in's share, the gateway's share) go into the result.

Every caller frame carries a marker (call, frame number, send time) that the benchmark Voice Live
reads; every block of bot audio carries one that this process reads, to measure the forwarding
delay of both directions on one clock. The bot marker also names the block's response, so when a
``clear`` (the carrier's flush) arrives, the phone knows how much of which response it had played:
``truncation_played`` in the result, joined by ``bench/run.py`` with the ``audio_end_ms`` the gateway
truncated that response to.

    python -m bench.loadgen --url ws://127.0.0.1:8080/twilio/media --calls 100 --first 0 \\
        --duration 40 --window START END --twilio-token T --signing-key K --out result.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import socket
import struct
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.frames import Frame, Opcode

from bench.latency import TONE_FRAME, Talker
from gateway.auth import CallTokens
from gateway.carriers.twilio.auth import twilio_signature
from gateway.cli import run_fast
from gateway.simulator.bench import (
    BOT_MAGIC,
    CALLER_MAGIC,
    MARKER,
    TURN_MAGIC,
    parse_turn_marker,
)
from gateway.voicelive.client import VoiceLiveConnection

# A caller frame's base64 text: the marker's 21 bytes (7 base64 quanta) change every frame; the
# rest of the 160 bytes is µ-law silence (or, for speech, a tone), encoded once.
_HEAD = 21
_TAIL = base64.b64encode(b"\xff" * (160 - _HEAD)).decode()
_PAD, _TONE_PAD = b"\xff", TONE_FRAME[MARKER.size:_HEAD]
_TONE_TAIL = base64.b64encode(TONE_FRAME[_HEAD:]).decode()


def frame_payload(call: int, seq: int, now: float, loud: bool = False) -> str:
    marker = MARKER.pack(CALLER_MAGIC, call, seq, now)
    if loud:
        return base64.b64encode(marker + _TONE_PAD).decode() + _TONE_TAIL
    return base64.b64encode(marker + _PAD).decode() + _TAIL

FRAME_S = 0.02

# Linux's receive timestamps (SO_TIMESTAMPNS; the same number for the option and its control message on
# the common architectures; Python does not name it)
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@qq")
_STAMP_SPACE = socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0


class StampedSocket(socket.socket):
    """A TCP socket that notes when the kernel received the bytes each read returns.

    A phone plays the bot's audio from when it arrives and stops at the moment a ``clear`` arrives;
    this process reads them later whenever its core is busy (in a reply burst it reads 200 calls'
    audio on the harness's core). With the kernel's receive time of each read (for TCP: the time the
    last segment of the bytes read came in, so never before any message in them arrived), the phone's
    playback follows the bytes' arrival rather than this process's lateness. ``arrived`` is on the
    monotonic clock; None until a read has carried a stamp (no stamps: not Linux, or refused)."""

    arrived: float | None = None

    def stamp_reads(self) -> bool:
        if sys.platform != "linux" or not _STAMP_SPACE:
            return False
        try:
            self.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except OSError:
            return False
        return True

    def recv(self, bufsize: int, flags: int = 0) -> bytes:  # (asyncio's transport reads with recv)
        data, ancillary, _flags, _address = self.recvmsg(bufsize, _STAMP_SPACE, flags)
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= _TIMESPEC.size:
                seconds, nanoseconds = _TIMESPEC.unpack_from(value)
                ago_ns = time.time_ns() - (seconds * 1_000_000_000 + nanoseconds)  # (a wall-clock stamp)
                self.arrived = time.monotonic() - max(0, ago_ns) / 1e9
        return data


class StampedConnection(VoiceLiveConnection):
    """A phone's socket that keeps, for each message received, when its bytes arrived, in the order the
    messages are read: the kernel's receive time with ``--kernel-clock`` (:class:`StampedSocket`), else
    when this process parsed them (as soon as the loop read the socket, before the call's task gets to
    the message)."""

    stamped: StampedSocket | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals: deque[float] = deque()

    def process_event(self, event: Any) -> None:
        # (called while the bytes just read are parsed: the socket's stamp is theirs)
        if type(event) is Frame and event.fin and event.opcode in _MESSAGE_OPCODES and self.response is not None:
            stamped = self.stamped
            self.arrivals.append(stamped.arrived if stamped is not None and stamped.arrived is not None
                                 else time.monotonic())
        super().process_event(event)


_MESSAGE_OPCODES = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)


@dataclass
class SimCall:
    number: int
    ws: StampedConnection
    sid: str
    seq: int = 0
    play_end: float = 0.0  # when the audio buffered so far will have played
    marks: deque[tuple[str, float]] = field(default_factory=deque)  # (name, played by)
    clears: list[float] = field(default_factory=list)  # when each flush arrived
    clears_read: list[float] = field(default_factory=list)  # and when this process read it
    closed: bool = False
    talker: Talker | None = None  # --turns: the caller's side of the conversation
    response: int = 0  # the response of the last bot audio received (from its blocks' markers)
    segments: list[list[Any]] = field(default_factory=list)  # [response, plays from, plays until]
    played: list[tuple[int, int, float, float]] = field(default_factory=list)  # (call, response, ms, flush at)
    played_read: list[tuple[int, int, float, float]] = field(default_factory=list)  # the same, at the flush's read


def played_at(segments: list[list[Any]], t: float) -> tuple[int, float] | None:
    """(response, ms of it played) at ``t``: the response whose audio last began playing by ``t``,
    from the playback ``segments`` ([response, from, until], in the order they play)."""
    current = None
    for response, start, _ in segments:
        if start <= t:
            current = response
    if current is None:
        return None
    return current, 1000.0 * sum(min(max(t - start, 0.0), end - start)
                                 for response, start, end in segments if response == current)


AUDIO, MARK, FLUSH = "audio", "mark", "flush"


class TwilioDialect:
    """Twilio Media Streams: JSON text, base64 audio, marks echoed when played."""

    path = "/twilio/media"
    bytes_per_s = 8000

    def __init__(self, args: argparse.Namespace) -> None:
        self.token = args.twilio_token
        self.tokens = CallTokens(args.signing_key.encode())

    def headers(self, url: str) -> dict[str, str]:
        return {"X-Twilio-Signature": twilio_signature(self.token, url)}

    def opening(self, call: SimCall) -> list[str | bytes]:
        token = self.tokens.issue({"call": call.sid.replace("MZ", "CA"), "profile": "bench"}, 600)
        return [json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
                json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": call.sid, "start": {
                    "streamSid": call.sid, "accountSid": "ACbench", "callSid": call.sid.replace("MZ", "CA"),
                    "tracks": ["inbound"], "customParameters": {"profile": "bench", "token": token},
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})]

    def frame(self, call: SimCall, now: float, loud: bool = False) -> str | bytes:
        payload = frame_payload(call.number, call.seq, now, loud)
        chunk = call.seq + 1
        return (f'{{"event":"media","streamSid":"{call.sid}","media":{{"track":"inbound",'
                f'"chunk":"{chunk}","timestamp":"{chunk * 20}","payload":"{payload}"}}}}')

    def read(self, data: str | bytes) -> tuple[str, Any] | None:
        """(AUDIO, the audio's bytes), (MARK, name), (FLUSH, None), or None."""
        if type(data) is not str:
            return None
        if data.startswith('{"event":"media"'):
            return AUDIO, base64.b64decode(data[data.index('"payload":"') + 11: -3])
        if data.startswith('{"event":"mark"'):
            return MARK, json.loads(data)["mark"]["name"]
        if data.startswith('{"event":"clear"'):
            return FLUSH, None
        return None

    def echo(self, call: SimCall, name: str) -> str | bytes:
        return f'{{"event":"mark","streamSid":"{call.sid}","mark":{{"name":{json.dumps(name)}}}}}'

    def stop(self, call: SimCall) -> str | bytes | None:
        return json.dumps({"event": "stop", "streamSid": call.sid})


class AsteriskDialect:
    """Asterisk's WebSocket channel driver: HTTP basic credentials on the upgrade, ``MEDIA_START``
    (plain text), then binary µ-law frames both ways; ``MARK_MEDIA`` is answered with
    ``MEDIA_MARK_PROCESSED`` once played, ``FLUSH_MEDIA`` drops playback and its marks (Asterisk
    reports no mark a flush discarded)."""

    path = "/asterisk/media?profile=bench"
    bytes_per_s = 8000

    def __init__(self, args: argparse.Namespace) -> None:
        self.auth = "Basic " + base64.b64encode(f"{args.asterisk_user}:{args.asterisk_password}".encode()).decode()

    def headers(self, url: str) -> dict[str, str]:
        return {"Authorization": self.auth}

    def opening(self, call: SimCall) -> list[str | bytes]:
        return [f"MEDIA_START connection_id:{call.sid} channel:WebSocket/bench/{call.number} "
                f"channel_id:{call.sid} format:ulaw optimal_frame_size:160 ptime:20"]

    def frame(self, call: SimCall, now: float, loud: bool = False) -> str | bytes:
        return MARKER.pack(CALLER_MAGIC, call.number, call.seq, now) + (_TONE_BYTES if loud else _SILENCE_TAIL)

    def read(self, data: str | bytes) -> tuple[str, Any] | None:
        if type(data) is bytes:
            return AUDIO, data
        if data.startswith("MARK_MEDIA "):
            return MARK, data[11:]
        if data.startswith("FLUSH_MEDIA"):
            return FLUSH, None
        return None

    def echo(self, call: SimCall, name: str) -> str | bytes:
        return f"MEDIA_MARK_PROCESSED {name}"

    def flush_drops_marks(self) -> bool:
        return True

    def stop(self, call: SimCall) -> str | bytes | None:
        return None  # the caller hangs up: Asterisk closes the socket


_SILENCE_TAIL = b"\xff" * (160 - MARKER.size)
_TONE_BYTES = TONE_FRAME[MARKER.size:]

DIALECTS: dict[str, Any] = {"twilio": TwilioDialect, "asterisk": AsteriskDialect}


class LoadGenerator:
    def __init__(self, url: str, dialect: Any, window: tuple[float, float],
                 turns: dict[str, Any] | None = None, kernel_clock: bool = False) -> None:
        self.url = url
        self.kernel_clock = kernel_clock  # the phones' times are the kernel's receive times (StampedSocket)
        self.turns = turns  # Talker settings: the calls talk in turns
        self.dialect = dialect
        self.window = window
        self.calls: list[SimCall] = []
        self.bot_delays: list[float] = []
        self.bot_blocks = 0
        self.frames_sent = 0
        self.errors: list[str] = []
        self.late_ticks = 0
        self._readers: list[asyncio.Task[None]] = []

    async def open_call(self, number: int) -> None:
        dialect = self.dialect
        call_sid = "MZ" + uuid.uuid4().hex
        sock = StampedSocket(socket.AF_INET, socket.SOCK_STREAM) if self.kernel_clock else None
        try:
            kwargs: dict[str, Any] = {}
            if sock is not None:
                sock.stamp_reads()
                sock.setblocking(False)
                parts = urlsplit(self.url)
                await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port or 80))
                kwargs["sock"] = sock
            ws = await connect(self.url, additional_headers=dialect.headers(self.url), compression=None,
                               max_size=1 << 22, create_connection=StampedConnection, ping_interval=None, **kwargs)
        except (WebSocketException, OSError) as exc:
            if sock is not None:
                sock.close()
            self.errors.append(f"call {number}: {type(exc).__name__}: {exc}")
            return
        ws.stamped = sock
        call = SimCall(number, ws, call_sid)
        if self.turns is not None:
            call.talker = Talker(number, self.window, time.monotonic(), **self.turns)
        for message in dialect.opening(call):
            await ws.send(message)
        self.calls.append(call)
        self._readers.append(asyncio.create_task(self.receive(call)))

    async def receive(self, call: SimCall) -> None:
        start, end = self.window
        read, rate = self.dialect.read, self.dialect.bytes_per_s
        drops_marks = getattr(self.dialect, "flush_drops_marks", lambda: False)()
        try:
            arrivals = call.ws.arrivals
            async for data in call.ws:
                now = time.monotonic()
                # when the message's bytes arrived: the phone plays and stops by that, not by this read
                arrived = min(now, arrivals.popleft()) if arrivals else now
                got = read(data)
                if got is None:
                    continue
                kind, value = got
                if kind is AUDIO:
                    self.audio(call, value, arrived, start <= arrived <= end, rate, now)
                elif kind is MARK:
                    if call.play_end <= now:
                        await self.echo(call, value)
                    else:
                        call.marks.append((value, call.play_end))
                elif kind is FLUSH:
                    call.clears.append(arrived)
                    call.clears_read.append(now)
                    for at, into in ((arrived, call.played), (now, call.played_read)):
                        heard = played_at(call.segments, at)
                        if heard is not None:
                            into.append((call.number, heard[0], round(heard[1], 3), at))
                    call.segments.clear()
                    call.play_end = now
                    if drops_marks:
                        call.marks.clear()
                    if call.marks:  # every pending mark back at once, as Twilio does after a clear
                        names = [name for name, _ in call.marks]
                        call.marks.clear()
                        await self.echo_all(call, names)
        except Exception as exc:  # a broken call is a result, not a crash of the generator
            self.errors.append(f"call {call.number}: {type(exc).__name__}: {exc}")
        finally:
            call.closed = True

    def audio(self, call: SimCall, data: bytes, now: float, measured: bool, rate: int,
              read_at: float | None = None) -> None:
        """Bot audio reached the phone at ``now`` (read at ``read_at``): each block's delay (its
        marker's send time), and where it plays: after the audio before it, in segments of one
        response each."""
        if data[:4] == TURN_MAGIC and call.talker is not None:
            turn = parse_turn_marker(data)
            if turn is not None:
                call.talker.replied(turn, now if read_at is None else read_at, call.play_end)
        begin = max(call.play_end, now)
        size = len(data)
        pos = 0
        found = data.find(BOT_MAGIC)
        while True:
            cut = size if found < 0 or found + MARKER.size > size else found
            if cut > pos:
                self._play(call, begin + pos / rate, begin + cut / rate)
            if cut == size:
                break
            _, _, seq, sent = MARKER.unpack_from(data, found)
            if measured:
                self.bot_delays.append((now - sent) * 1000.0)
                self.bot_blocks += 1
            call.response = seq >> 16
            pos = found
            found = data.find(BOT_MAGIC, found + MARKER.size)
        call.play_end = begin + size / rate

    @staticmethod
    def _play(call: SimCall, start: float, end: float) -> None:
        segments = call.segments
        if segments and segments[-1][0] == call.response and abs(segments[-1][2] - start) < 1e-6:
            segments[-1][2] = end
            return
        if len(segments) >= 32:  # keep what a flush may still need: the latest responses
            del segments[:16]
        segments.append([call.response, start, end])

    async def echo(self, call: SimCall, name: str) -> None:
        await call.ws.send(self.dialect.echo(call, name))

    async def echo_all(self, call: SimCall, names: list[str]) -> None:
        """Echo several marks in one write (each its own message)."""
        messages = [self.dialect.echo(call, name) for name in names]
        texts = [m for m in messages if isinstance(m, str)]
        if len(texts) == len(messages) and call.ws.send_all_nowait(texts):
            return
        for message in messages:
            await call.ws.send(message)

    async def tick_all(self, until: float, phases: int = 5) -> None:
        """The one timer: every 20 ms each call sends its next frame; every tick (a fifth of that)
        each call echoes the marks whose audio has played by then.

        Calls are spread over ``phases`` evenly spaced instants of the 20 ms period, as independent
        phones would be; one burst of every call's frame at once is not what a gateway sees.
        """
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        step = FRAME_S / phases
        clock = time.monotonic
        frame = self.dialect.frame
        k = 0
        while clock() < until:
            k += 1
            await asyncio.sleep(max(0.0, t0 + k * step - loop.time()))  # the phones' own clock
            if loop.time() - (t0 + k * step) > FRAME_S:
                self.late_ticks += 1
            phase = k % phases
            tick = clock()
            for call in self.calls:
                if call.closed:
                    continue
                marks = call.marks
                try:
                    if call.number % phases == phase:
                        now = clock()  # each frame's own send time: a burst of sends takes a while
                        talker = call.talker
                        message = frame(call, now, talker is not None and talker.tick(call.seq, now, call.play_end))
                        call.seq += 1
                        self.frames_sent += 1
                        if type(message) is not str or not call.ws.send_nowait(message):
                            await call.ws.send(message)  # binary frames take websockets' own path
                    # marks on every tick (a fifth of a frame), as a phone echoes them once played
                    while marks and marks[0][1] <= tick:
                        await self.echo(call, marks.popleft()[0])
                except (ConnectionClosed, OSError) as exc:
                    self.errors.append(f"call {call.number}: {type(exc).__name__}")
                    call.closed = True

    async def run(self, calls: int, first: int, duration: float, ramp_per_s: float) -> dict[str, Any]:
        until = time.monotonic() + duration
        ticker = asyncio.create_task(self.tick_all(until))
        # the calls start on the ramp's schedule, however long each upgrade takes (a slow upgrade
        # must not slow the ramp down: at a thousand calls it would not be done within the warm-up)
        t0 = time.monotonic()
        opening = []
        for i in range(calls):
            await asyncio.sleep(max(0.0, t0 + i / ramp_per_s - time.monotonic()))
            opening.append(asyncio.create_task(self.open_call(first + i)))
        await asyncio.gather(*opening)
        await ticker
        for call in self.calls:
            try:
                stop = self.dialect.stop(call)
                if not call.closed and stop is not None:
                    await call.ws.send(stop)
                await call.ws.close()
            except (ConnectionClosed, OSError):
                pass
        await asyncio.gather(*self._readers, return_exceptions=True)
        delays = np.asarray(self.bot_delays)
        return {
            "calls": calls,
            "connected": len(self.calls),
            "frames_sent": self.frames_sent,
            "bot_blocks": self.bot_blocks,
            "bot_delays_ms": [round(d, 3) for d in delays.tolist()],
            # "kernel": the phones' times below are when the bytes arrived (the kernel's receive time);
            # otherwise when this process parsed them
            "arrival_stamps": "kernel" if self.calls and all(
                c.ws.stamped is not None and c.ws.stamped.arrived is not None for c in self.calls) else "parse",
            "clears": [[c.number, t] for c in self.calls for t in c.clears],
            "clears_read": [[c.number, t] for c in self.calls for t in c.clears_read],
            # (call, response, ms of it played, when the flush arrived); and by the flush's read
            "truncation_played": [list(row) for c in self.calls for row in c.played],
            "truncation_played_read": [list(row) for c in self.calls for row in c.played_read],
            "late_ticks": self.late_ticks,
            "turns": [list(row) for c in self.calls if c.talker for row in c.talker.samples],
            "turns_unanswered": sum(c.talker.unanswered + c.talker.pending() for c in self.calls if c.talker),
            "turns_unmatched": sum(c.talker.unmatched for c in self.calls if c.talker),
            "errors": self.errors[:20],
            "error_count": len(self.errors),
        }


def raise_nofile() -> None:
    """The soft limit of open files up to the hard one: one socket per call."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--first", type=int, default=0, help="number of the first call (unique across processes)")
    parser.add_argument("--duration", type=float, required=True, help="seconds from start to hang-up")
    parser.add_argument("--window", type=float, nargs=2, required=True, metavar=("START", "END"),
                        help="measure bot audio delays between these time.monotonic() values")
    parser.add_argument("--ramp", type=float, default=50.0, help="calls opened per second")
    parser.add_argument("--carrier", choices=sorted(DIALECTS), default="twilio", help="whose calls to place")
    parser.add_argument("--twilio-token", help="Twilio: the auth token requests are signed with")
    parser.add_argument("--asterisk-user", help="Asterisk: the basic-auth user of the media socket")
    parser.add_argument("--asterisk-password", help="Asterisk: its password")
    parser.add_argument("--signing-key", required=True)
    parser.add_argument("--turns", action="store_true",
                        help="talk in turns (speech, then silence until the reply has played) and measure "
                        "each turn's latency")
    parser.add_argument("--speech-ms", type=int, default=600, help="--turns: how long each turn's speech lasts")
    parser.add_argument("--gap-ms", type=int, default=400,
                        help="--turns: pause after the reply has played, at random between this and twice this")
    parser.add_argument("--kernel-clock", action="store_true",
                        help="time what the phones receive by the kernel's receive time of its bytes (Linux; runs on "
                        "asyncio's own loop, not uvloop, which makes this process slower)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    raise_nofile()
    turns = {"speech_ms": args.speech_ms, "gap_ms": args.gap_ms} if args.turns else None
    generator = LoadGenerator(args.url, DIALECTS[args.carrier](args), tuple(args.window), turns, args.kernel_clock)
    # (uvloop reads its sockets itself, without the kernel's stamps: the kernel clock needs asyncio's loop)
    run = asyncio.run if args.kernel_clock else run_fast
    result = run(generator.run(args.calls, args.first, args.duration, args.ramp))
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()

"""One call over an open media socket, as any carrier's phone places it.

:class:`_Call` runs the caller's script in real time (one 20 ms frame every 20 ms), plays what
the gateway sends back through a :class:`~gateway.softphone.playout.Playout`, counts protocol
violations instead of failing, and builds the :class:`~gateway.softphone.report.CallReport`. A
carrier's phone (``gateway.carriers.<name>.phone``) subclasses it with its carrier's wire format
and opens the socket with :func:`_open_socket`.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import aiohttp

from gateway.audio import AudioFormat
from gateway.softphone.playout import Playout
from gateway.softphone.report import CallError, CallRejected, CallReport
from gateway.softphone.script import Dtmf, Reconnect, Say, Silence, Step, WaitForBot

FRAME_MS = 20
MAX_VIOLATION_SAMPLES = 10

EventCallback = Callable[[float, str, dict[str, Any]], None]

R = TypeVar("R", bound=CallReport)


def _check_url(url: str) -> str:
    """``"webhook"`` for http(s) URLs, ``"media"`` for ws(s) URLs; CallError otherwise."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise CallError(f"bad URL {url!r}: {exc}") from None
    if parts.scheme in ("http", "https") and parts.hostname:
        return "webhook"
    if parts.scheme in ("ws", "wss") and parts.hostname:
        return "media"
    raise CallError(
        f"bad URL {url!r}: expected http(s)://host/... (voice webhook) or ws(s)://host/... (media stream)"
    )




async def _open_socket(
    session: aiohttp.ClientSession, url: str, headers: Mapping[str, str], timeout_s: float
) -> aiohttp.ClientWebSocketResponse:
    """Open a media socket; CallRejected on an HTTP error answer, CallError on anything else."""
    try:
        async with asyncio.timeout(timeout_s):
            return await session.ws_connect(
                url,
                headers=dict(headers),
                autoclose=True,
                autoping=True,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
            )
    except TimeoutError:
        raise CallError(f"the media socket {url} did not open within {timeout_s:g} s") from None
    except aiohttp.WSServerHandshakeError as exc:
        raise CallRejected(f"the gateway refused the media socket {url}: HTTP {exc.status}") from None
    except aiohttp.ClientError as exc:
        raise CallError(f"cannot open the media socket {url}: {exc}") from None




# --- one call over an open media socket ------------------------------------------------------


@dataclass
class _Wait:
    started: float  # loop time
    baseline: int  # bytes played when the step began
    bot_was_playing: bool


@dataclass
class _Events:
    on_event: EventCallback | None
    t0: float | None = None
    items: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)

    def now_ms(self) -> float:
        if self.t0 is None:
            return 0.0
        return (asyncio.get_running_loop().time() - self.t0) * 1000.0

    def emit(self, kind: str, **fields: Any) -> None:
        t = self.now_ms()
        self.items.append((t, kind, fields))
        if self.on_event is not None:
            self.on_event(t, kind, fields)


class _Call(Generic[R]):
    """One call over an open media socket: the caller's script, real-time playout, the report.

    The carrier's wire format lives in the subclasses, which set ``carrier``, ``audio_format``
    (before this ``__init__`` runs: frames are sized from it), ``silence_byte`` and
    ``report_class``. ``steps`` carry audio already in the carrier's format (a phone converts
    ``Say.audio`` before the call when its carrier does not stream 8 kHz µ-law).
    """

    carrier = ""
    audio_format: AudioFormat
    silence_byte = 0
    report_class: type[R]

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        steps: list[Step],
        events: _Events,
        *,
        stream_url: str,
        stream_sid: str,
        call_sid: str,
        account_sid: str,
        custom_parameters: dict[str, str],
    ) -> None:
        self.ws = ws
        self.steps = steps
        self.events = events
        self.stream_url = stream_url
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self.account_sid = account_sid
        self.custom_parameters = custom_parameters

        self.sample_rate = self.audio_format.sample_rate
        self.bytes_per_ms = self.audio_format.bytes_per_ms
        self.frame_bytes = self.bytes_per_ms * FRAME_MS
        self.silence_fill = bytes([self.silence_byte])
        self.silence_frame = self.silence_fill * self.frame_bytes

        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        self.t_end = self.t0
        self._send_lock = asyncio.Lock()
        self._receiver: asyncio.Task[None] | None = None

        self.playout = Playout()
        self.bot_playing = False
        self.turn_played = 0  # bytes played since the last bot_audio_start
        self.idle_frames = 0  # consecutive frames with nothing to play

        self.caller_audio = bytearray()
        self.bot_audio = bytearray()
        self.sent_payloads: list[str] = []
        self.received_payloads: list[str] = []
        self.received_bytes = 0
        self.marks_received: list[str] = []
        self.marks_echoed: list[str] = []
        self.clears = 0
        self.violations = 0
        self.violation_samples: list[str] = []
        self.connections = 1

        self.hanging_up = False
        self.reconnecting = False
        self.gateway_closed = False
        self.send_failed = False
        self.close_code: int | None = None

        self._step = 0
        self._pos = 0
        self._wait: _Wait | None = None
        self._speech_ending: str | None = None

    # -- what a carrier defines

    def _connected_fields(self) -> dict[str, Any]:
        raise NotImplementedError

    async def _open(self) -> None:
        """Send what the carrier sends first on a new media socket."""
        raise NotImplementedError

    async def _before_frame(self) -> None:
        """Called once per 20 ms tick, after the previous frame has played."""

    async def _send_audio(self, k: int, frame: bytes, payload: str) -> bool:
        """Send the caller's frame ``k`` (``payload`` is its base64); False once the socket broke."""
        raise NotImplementedError

    async def _send_dtmf(self, digit: str) -> bool:
        raise NotImplementedError

    async def _send_stop(self) -> None:
        """What the carrier sends before it closes the socket on hanging up."""

    async def _handle_text(self, data: str) -> None:
        raise NotImplementedError

    async def _handle_binary(self, data: bytes) -> None:
        """A binary frame from the gateway (carriers that carry raw audio override this)."""
        self._violation(f"binary frame of {len(data)} bytes (only text frames are allowed)")

    async def _reconnect(self) -> bool:
        raise TypeError(f"a {self.carrier} call cannot reconnect its media socket")

    # -- sending

    async def _write(self, message: dict[str, Any]) -> bool:
        """Send one message; the caller holds the send lock. False once the socket is broken."""
        if self.send_failed:
            return False
        try:
            await self.ws.send_str(json.dumps(message, separators=(",", ":")))
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            self.send_failed = True
            return False
        return True

    async def _send(self, message: dict[str, Any]) -> bool:
        async with self._send_lock:
            return await self._write(message)

    async def _write_bytes(self, data: bytes) -> bool:
        """Send one binary frame; the caller holds the send lock. False once the socket is broken."""
        if self.send_failed:
            return False
        try:
            await self.ws.send_bytes(data)
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            self.send_failed = True
            return False
        return True

    # -- receiving

    def _violation(self, description: str) -> None:
        self.violations += 1
        if len(self.violation_samples) < MAX_VIOLATION_SAMPLES:
            self.violation_samples.append(description)
            self.events.emit("violation", description=description)

    def _json_object(self, data: str) -> dict[str, Any] | None:
        """A text frame from the gateway as a JSON object, or None (a violation) if it is not one."""
        try:
            message = json.loads(data)
        except ValueError:
            self._violation(f"text frame is not JSON: {data[:60]!r}")
            return None
        if not isinstance(message, dict):
            self._violation(f"message is not a JSON object: {data[:60]!r}")
            return None
        return message

    async def _receive_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                await self._handle_text(msg.data)
            elif msg.type is aiohttp.WSMsgType.BINARY:
                await self._handle_binary(msg.data)
            elif msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                break
        if not self.hanging_up and not self.reconnecting:
            self._gateway_closed()

    def _gateway_closed(self) -> None:
        if self.gateway_closed:
            return
        self.gateway_closed = True
        self.close_code = self.ws.close_code
        self.events.emit("closed_by_gateway", code=self.close_code)

    def _stop_playback(self, kind: str, **extra: Any) -> None:
        """``clear`` / ``StopAudio``: drop everything not yet played."""
        self.clears += 1
        dropped, _ = self.playout.clear()
        self.events.emit(
            kind,
            played_bytes_total=self.playout.played,
            turn_played_bytes=self.turn_played if self.bot_playing else 0,
            discarded_bytes=dropped,
            **extra,
        )

    # -- the caller's script

    def _next_step(self) -> None:
        self._step += 1
        self._pos = 0
        self._wait = None

    async def _next_caller_frame(self) -> bytes | None:
        """The next 20 ms the caller sends, or None to hang up (or after a failed reconnect)."""
        if self._speech_ending is not None:
            self.events.emit("speech_end", label=self._speech_ending)
            self._speech_ending = None
        while self._step < len(self.steps):
            step = self.steps[self._step]
            if isinstance(step, Say):
                if self._pos == 0:
                    self.events.emit("speech_start", label=step.label, ms=len(step.audio) / self.bytes_per_ms)
                chunk = bytes(step.audio[self._pos : self._pos + self.frame_bytes])
                self._pos += self.frame_bytes
                if self._pos >= len(step.audio):
                    self._next_step()
                    if not chunk:
                        self.events.emit("speech_end", label=step.label)
                        continue
                    self._speech_ending = step.label  # reported once this last frame has gone
                return chunk.ljust(self.frame_bytes, self.silence_fill)
            if isinstance(step, Silence):
                frames = -(-step.ms // FRAME_MS)
                if self._pos >= frames:
                    self._next_step()
                    continue
                self._pos += 1
                if self._pos >= frames:
                    self._next_step()
                return self.silence_frame
            if isinstance(step, Dtmf):
                if await self._send_dtmf(step.digit):
                    self.events.emit("dtmf", digit=step.digit)
                self._next_step()
                continue
            if isinstance(step, WaitForBot):
                if self._wait is None:
                    self._wait = _Wait(self.loop.time(), self.playout.played, self.bot_playing)
                if self._wait_done(step, self._wait):
                    self._next_step()
                    continue
                waited = self.loop.time() - self._wait.started
                heard = (self.playout.played - self._wait.baseline) / self.bytes_per_ms
                silent = heard == 0 and not self.bot_playing
                if step.optional and silent and waited >= step.start_timeout_s:
                    self.events.emit("no_bot_audio", timeout_s=step.start_timeout_s)
                    self._next_step()
                    continue
                if waited >= step.timeout_s:
                    self.events.emit("wait_timeout", timeout_s=step.timeout_s, heard_ms=heard)
                    self._next_step()
                    continue
                return self.silence_frame
            if isinstance(step, Reconnect):
                self._next_step()
                if not await self._reconnect():
                    return None
                continue
            return None  # Hangup
        return None

    def _wait_done(self, step: WaitForBot, wait: _Wait) -> bool:
        heard = self.playout.played - wait.baseline
        if step.heard_ms is not None:
            return heard >= step.heard_ms * self.bytes_per_ms
        spoke = heard > 0 or wait.bot_was_playing
        return (
            spoke
            and not self.bot_playing
            and not self.playout.buffered
            and self.idle_frames * FRAME_MS >= step.settle_ms
        )

    # -- playback

    def _play_frame(self) -> bytes:
        chunk = self.playout.play(self.frame_bytes)
        if chunk:
            if not self.bot_playing:
                self.bot_playing = True
                self.turn_played = 0
                self.events.emit("bot_audio_start", buffered_bytes=len(chunk) + self.playout.buffered)
            self.turn_played += len(chunk)
            self.idle_frames = 0
        else:
            if self.bot_playing:
                self.bot_playing = False
                self.events.emit("bot_audio_end", played_bytes=self.turn_played)
            self.idle_frames += 1
        return chunk

    # -- the call

    async def run(self) -> None:
        self.events.t0 = self.t0
        self.events.emit("connected", **self._connected_fields())
        self._receiver = asyncio.create_task(self._receive_loop(self.ws))
        try:
            await self._talk()
            if self.hanging_up:
                # Close while the receiver still reads, so the closing handshake completes.
                await self.ws.close()
                self.close_code = self.ws.close_code
                await asyncio.wait({self._receiver}, timeout=1.0)
        finally:
            self._receiver.cancel()
            (outcome,) = await asyncio.gather(self._receiver, return_exceptions=True)
            self.t_end = self.loop.time()
        if isinstance(outcome, Exception):
            raise outcome

    async def _talk(self) -> None:
        await self._open()
        k = 0
        while True:
            delay = self.t0 + k * FRAME_MS / 1000 - self.loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            assert self._receiver is not None
            if self.gateway_closed or self.send_failed or self._receiver.done():
                break
            await self._before_frame()  # the previous frame has played
            frame = await self._next_caller_frame()
            if self.gateway_closed:  # closed meanwhile, or a reconnect was refused
                break
            if frame is None:
                await self._hang_up()
                return
            played = self._play_frame()
            payload = base64.b64encode(frame).decode("ascii")
            if not await self._send_audio(k, frame, payload):
                break
            self.sent_payloads.append(payload)
            self.caller_audio += frame
            self.bot_audio += played.ljust(self.frame_bytes, self.silence_fill)
            k += 1
        if self.send_failed and not self.gateway_closed:
            # The socket broke under us: let the receiver see the close (and its code).
            await asyncio.wait({self._receiver}, timeout=1.0)
            self._gateway_closed()

    async def _hang_up(self) -> None:
        self.events.emit("hangup")
        self.hanging_up = True
        await self._send_stop()

    def report(self) -> R:
        return self.report_class(
            stream_sid=self.stream_sid,
            call_sid=self.call_sid,
            account_sid=self.account_sid,
            stream_url=self.stream_url,
            custom_parameters=dict(self.custom_parameters),
            closed_by="gateway" if self.gateway_closed else "caller",
            close_code=self.close_code,
            events=self.events.items,
            caller_audio=bytes(self.caller_audio),
            bot_audio=bytes(self.bot_audio),
            received_payloads=self.received_payloads,
            sent_payloads=self.sent_payloads,
            received_bytes=self.received_bytes,
            played_bytes=self.playout.played,
            discarded_bytes=self.playout.discarded,
            unplayed_bytes=self.playout.buffered,
            marks_received=self.marks_received,
            marks_echoed=self.marks_echoed,
            clears=self.clears,
            violations=self.violations,
            violation_samples=self.violation_samples,
            duration_ms=(self.t_end - self.t0) * 1000.0,
            audio_format=self.audio_format,
            carrier=self.carrier,
            connections=self.connections,
        )



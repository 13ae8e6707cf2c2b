"""A softphone: places a call through the gateway exactly the way a phone carrier does.

:func:`place_call` behaves like Twilio: it posts Twilio's voice webhook, follows the
``<Connect><Stream>`` TwiML answer, opens the media WebSocket and then plays Twilio's side of a
bidirectional media stream:

* it sends ``connected``, ``start``, one 20 ms ``media`` frame of µ-law every 20 ms for the
  whole call (the caller's speech, or µ-law silence), ``dtmf`` and finally ``stop``;
* it plays what the gateway sends back in real time (8 bytes per millisecond), echoes each
  ``mark`` once the audio queued before it has played, and on ``clear`` drops everything not
  yet played and echoes every pending mark at once.

:func:`place_acs_call` behaves like Azure Communication Services (ACS) media streaming: it
opens the media WebSocket with ACS's headers (``Authorization: Bearer …``,
``x-ms-call-connection-id``, ``x-ms-call-correlation-id``), sends ``AudioMetadata``, then one
``AudioData`` packet of 20 ms PCM16 at 24 kHz (or 16 kHz: ``sample_rate``) every 20 ms
(``silent`` on silence) and ``DtmfData`` for key presses. It plays ``AudioData`` from the gateway
in real time (48 bytes per millisecond at 24 kHz, 32 at 16 kHz) with no acknowledgement, drops
everything unplayed on ``StopAudio``, and can drop and reopen its media socket mid-call like ACS
does. Hanging up closes the socket.

Both check every message the gateway sends the way the carrier would, and count violations
instead of failing. Everything that happened is returned as a :class:`CallReport`, including
both sides of the call on one timeline, which :func:`write_call_wav` turns into a stereo WAV
file.

Used by ``gateway call`` (smoke test of a deployment), ``gateway demo`` and the socket-level
tests.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import hashlib
import hmac
import json
import os
import secrets
import sys
import uuid
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import aiohttp
import numpy as np

from gateway.audio import (
    PCM16_24K,
    ULAW_SILENCE_BYTE,
    WavError,
    b64_len,
    is_base64,
    load_ulaw_8k,
    resample,
    ulaw_to_array,
    write_wav,
)
from gateway.carriers.acs import AUDIO_FORMATS

FRAME_MS = 20
FRAME_BYTES = 160  # 20 ms of 8 kHz µ-law
BYTES_PER_MS = 8
SILENCE_FRAME = bytes([ULAW_SILENCE_BYTE]) * FRAME_BYTES
ACS_SAMPLE_RATE = PCM16_24K.sample_rate  # the default; ACS_SAMPLE_RATES are the rates ACS streams
ACS_SAMPLE_RATES = tuple(sorted(AUDIO_FORMATS))  # 16000, 24000 (PCM16 mono)
ACS_CALLER_RAW_ID = "4:+15555550199"  # participantRawID of the caller's audio
MAX_VIOLATION_SAMPLES = 10
DTMF_DIGITS = frozenset("0123456789*#ABCD")

EventCallback = Callable[[float, str, dict[str, Any]], None]


# --- the call script ------------------------------------------------------------------------


@dataclass
class Say:
    """The caller speaks: ``audio`` is 8 kHz µ-law, sent in 20 ms frames.

    On an ACS call it is converted once, before the call starts, to PCM16 at the call's rate
    (24 or 16 kHz).
    """

    audio: bytes
    label: str = "speech"

    def __post_init__(self) -> None:
        if not isinstance(self.audio, (bytes, bytearray)):
            raise TypeError("Say.audio must be µ-law bytes")


@dataclass
class Silence:
    """The caller stays silent for ``ms`` milliseconds (rounded up to whole 20 ms frames)."""

    ms: int

    def __post_init__(self) -> None:
        if self.ms < 0:
            raise ValueError("Silence.ms must be >= 0")


@dataclass
class Dtmf:
    """The caller presses a key (0-9, *, #, A-D)."""

    digit: str

    def __post_init__(self) -> None:
        if self.digit not in DTMF_DIGITS:
            raise ValueError(f"Dtmf.digit must be one of 0-9 * # A-D, not {self.digit!r}")


@dataclass
class WaitForBot:
    """The caller listens (sending silence) until the bot has answered.

    ``heard_ms=None``: until the bot has spoken and its playback has then been idle for
    ``settle_ms``. An int: until at least ``heard_ms`` of bot audio has played since this step
    began. After ``timeout_s`` the call goes on and a ``wait_timeout`` event is recorded.
    ``optional``: the bot may not speak at all (a greeting that may not come); if it has not
    started within ``start_timeout_s``, the call goes on with a ``no_bot_audio`` event.
    """

    heard_ms: int | None = None
    settle_ms: int = 800
    timeout_s: float = 30.0
    optional: bool = False
    start_timeout_s: float = 3.0


@dataclass
class Hangup:
    """The caller hangs up (Twilio: ``stop``, then the socket is closed; ACS: the socket is closed)."""


@dataclass
class Reconnect:
    """ACS calls only: the media socket drops and a new one opens for the same call.

    The socket is closed normally and a new one is opened to the same URL with the same
    headers (token, call connection id, correlation id). It starts with ``AudioMetadata`` and
    the caller's audio continues on it; bot audio buffered but not yet played is lost.
    """


Step = Say | Silence | Dtmf | WaitForBot | Hangup | Reconnect


# --- errors and report ----------------------------------------------------------------------


class CallError(Exception):
    """The call could not be placed: bad URL, unreachable host, or an answer that is not TwiML."""


class CallRejected(CallError):
    """The gateway answered, but refused the call (HTTP error on the webhook or the media socket)."""


@dataclass
class CallReport:
    """Everything the softphone saw during one call.

    ``carrier`` is ``"twilio"`` or ``"acs"``. On a Twilio call, ``caller_audio`` and
    ``bot_audio`` are µ-law at 8 kHz; on an ACS call they are PCM16 (little-endian) at 24 or
    16 kHz (``sample_rate``). Both are on the same timeline: slot ``k`` (one 20 ms frame: 160
    bytes on Twilio, 960 or 640 on ACS) is the frame sent at ``t0 + 20k ms`` and what was played
    during that frame (silence where nothing played).

    ``events`` are ``(t_ms, kind, fields)`` with ``t_ms`` counted from the moment the media
    socket opened (0 for the ``webhook`` event, which comes before). ``received_payloads``
    holds the payload string of every ``media`` message (ACS: the ``data`` string of every
    ``AudioData``), even one rejected as a violation; ``received_bytes`` counts only the audio
    that was accepted for playback. ``marks_received`` and ``marks_echoed`` are mark names in
    order (always empty on ACS, which has no marks).

    On an ACS call, ``call_sid`` is the ``x-ms-call-connection-id``, ``account_sid`` the
    ``x-ms-call-correlation-id`` and ``stream_sid`` the ``subscriptionId`` of
    ``AudioMetadata`` (also under their ACS names: :attr:`call_connection_id`,
    :attr:`correlation_id`, :attr:`subscription_id`); ``clears`` counts ``StopAudio``
    messages, ``discarded_bytes`` also counts bot audio lost to a reconnect, and
    ``connections`` the media sockets opened.
    """

    stream_sid: str
    call_sid: str
    account_sid: str
    stream_url: str
    custom_parameters: dict[str, str]
    closed_by: str  # "caller" | "gateway"
    close_code: int | None
    events: list[tuple[float, str, dict[str, Any]]]
    caller_audio: bytes
    bot_audio: bytes
    received_payloads: list[str]
    sent_payloads: list[str]
    received_bytes: int  # bytes of valid media accepted into the playout buffer
    played_bytes: int
    discarded_bytes: int  # dropped by ``clear`` / ``StopAudio`` (and, on ACS, lost to a reconnect)
    unplayed_bytes: int  # still buffered when the call ended
    marks_received: list[str]
    marks_echoed: list[str]
    clears: int
    violations: int
    violation_samples: list[str]
    duration_ms: float
    carrier: str = "twilio"  # "twilio" | "acs"
    sample_rate: int = 8000
    connections: int = 1

    @property
    def bytes_per_ms(self) -> int:
        """Bytes of call audio per millisecond (8 for Twilio µ-law; ACS PCM16: 48 at 24 kHz, 32 at 16 kHz)."""
        return self.sample_rate * (2 if self.carrier == "acs" else 1) // 1000

    @property
    def call_connection_id(self) -> str:
        return self.call_sid

    @property
    def correlation_id(self) -> str:
        return self.account_sid

    @property
    def subscription_id(self) -> str:
        return self.stream_sid

    def events_of(self, kind: str) -> list[tuple[float, dict[str, Any]]]:
        """``(t_ms, fields)`` of every event of one kind."""
        return [(t, f) for t, k, f in self.events if k == kind]


def _samples(report: CallReport, audio: bytes) -> np.ndarray:
    if report.carrier == "acs":
        return np.frombuffer(audio[: len(audio) // 2 * 2], dtype="<i2")
    return ulaw_to_array(audio)


def write_call_wav(report: CallReport, path: str | Path) -> None:
    """Stereo 16-bit WAV: left = the caller, right = the bot as the caller heard it.

    8 kHz for a Twilio call, the call's 24 or 16 kHz for an ACS call (``report.sample_rate``).
    """
    left = _samples(report, report.caller_audio)
    right = _samples(report, report.bot_audio)
    n = max(len(left), len(right))
    stereo = np.zeros((n, 2), dtype=np.int16)
    stereo[: len(left), 0] = left
    stereo[: len(right), 1] = right
    write_wav(path, stereo, report.sample_rate)


# --- Twilio helpers -----------------------------------------------------------------------------


def new_sid(prefix: str) -> str:
    """A Twilio-style id: two letters and 32 hex digits (``CA…``, ``AC…``, ``MZ…``)."""
    return prefix + secrets.token_hex(16)


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str] | None = None) -> str:
    """The ``X-Twilio-Signature`` Twilio puts on a request to ``url`` with form ``params``."""
    data = url + "".join(name + params[name] for name in sorted(params or {}))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


_WS_SCHEMES = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}


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


def parse_twiml(body: bytes | str, base_url: str) -> tuple[str, dict[str, str]]:
    """The media stream URL and ``<Parameter>`` values of a ``<Connect><Stream>`` TwiML answer.

    A relative stream URL is resolved against ``base_url``; http(s) becomes ws(s).
    """
    snippet = (body.decode("utf-8", "replace") if isinstance(body, bytes) else body).strip()[:120]
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise CallError(f"the voice webhook did not answer with TwiML ({exc}): {snippet!r}") from None
    if root.tag != "Response":
        raise CallError(f"the voice webhook answer is not a TwiML <Response>: {snippet!r}")
    stream = root.find("Connect/Stream")
    if stream is None:
        verbs = ", ".join(f"<{child.tag}>" for child in root) or "nothing"
        raise CallError(f"the TwiML answer has no <Connect><Stream> (it has {verbs})")
    raw_url = (stream.get("url") or "").strip()
    if not raw_url:
        raise CallError("the TwiML <Stream> has no url")
    parts = urlsplit(urljoin(base_url, raw_url))
    scheme = _WS_SCHEMES.get(parts.scheme)
    if scheme is None or not parts.hostname:
        raise CallError(f"the TwiML <Stream> url {raw_url!r} is not a ws(s):// URL")
    stream_url = urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))
    params = {
        name: p.get("value", "") for p in stream.findall("Parameter") if (name := p.get("name"))
    }
    return stream_url, params


async def _post_webhook(
    session: aiohttp.ClientSession,
    url: str,
    form: dict[str, str],
    auth_token: str | None,
    timeout_s: float,
) -> bytes:
    headers = {"X-Twilio-Signature": twilio_signature(auth_token, url, form)} if auth_token else {}
    try:
        async with asyncio.timeout(timeout_s):
            async with session.post(url, data=form, headers=headers) as resp:
                body = await resp.read()
                status = resp.status
    except TimeoutError:
        raise CallError(f"the voice webhook {url} did not answer within {timeout_s:g} s") from None
    except aiohttp.ClientError as exc:
        raise CallError(f"cannot reach the voice webhook {url}: {exc}") from None
    if status >= 400:
        text = body.decode("utf-8", "replace").strip()[:120]
        raise CallRejected(f"the voice webhook {url} answered HTTP {status}: {text!r}")
    return body


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


async def _open_media_socket(
    session: aiohttp.ClientSession, url: str, auth_token: str | None, timeout_s: float
) -> aiohttp.ClientWebSocketResponse:
    headers = {"X-Twilio-Signature": twilio_signature(auth_token, url)} if auth_token else {}
    return await _open_socket(session, url, headers, timeout_s)


# --- ACS helpers ----------------------------------------------------------------------------------


def ulaw_to_acs_pcm(audio: bytes, sample_rate: int = ACS_SAMPLE_RATE) -> bytes:
    """8 kHz µ-law as ACS carries a caller's audio: PCM16 little-endian at ``sample_rate`` (offline use)."""
    samples = resample(ulaw_to_array(bytes(audio)), 8000, sample_rate)
    return samples.astype("<i2").tobytes()


def acs_timestamp(when: datetime) -> str:
    """ISO-8601 UTC with milliseconds, as in ACS's ``AudioData.timestamp``."""
    when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _get_ci(obj: Mapping[str, Any], key: str) -> Any:
    """``obj[key]`` with the key matched case-insensitively (ACS reads its messages that way)."""
    if key in obj:
        return obj[key]
    lowered = key.lower()
    for name, value in obj.items():
        if isinstance(name, str) and name.lower() == lowered:
            return value
    return None


# --- the playout buffer (pure) ------------------------------------------------------------------


class Playout:
    """A carrier's outbound playback queue: audio plays in real time; marks sit between audio.

    Positions are byte counts on the played stream: a mark queued at position ``p`` is due
    once ``played >= p`` and the frame that reached it has finished playing.
    """

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.played = 0
        self.discarded = 0
        self._marks: deque[tuple[int, str]] = deque()

    @property
    def buffered(self) -> int:
        return len(self.buffer)

    @property
    def pending_marks(self) -> list[str]:
        return [name for _, name in self._marks]

    def append(self, audio: bytes) -> None:
        self.buffer += audio

    def add_mark(self, name: str) -> bool:
        """Queue a mark after the buffered audio; True if it is due at once (nothing queued)."""
        if not self.buffer and not self._marks:
            return True
        self._marks.append((self.played + len(self.buffer), name))
        return False

    def due_marks(self) -> list[str]:
        """Marks whose audio has all been played (call when the previous frame has finished)."""
        due: list[str] = []
        while self._marks and self._marks[0][0] <= self.played:
            due.append(self._marks.popleft()[1])
        return due

    def play(self, nbytes: int) -> bytes:
        """Take up to ``nbytes`` from the front of the queue."""
        chunk = bytes(self.buffer[:nbytes])
        del self.buffer[:nbytes]
        self.played += len(chunk)
        return chunk

    def clear(self) -> tuple[int, list[str]]:
        """Drop all unplayed audio; returns the bytes dropped and every pending mark, in order."""
        dropped = len(self.buffer)
        self.buffer.clear()
        self.discarded += dropped
        flushed = [name for _, name in self._marks]
        self._marks.clear()
        return dropped, flushed


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


class _Call:
    """One call over an open media socket: the caller's script, real-time playout, the report.

    The carrier's wire format lives in the subclasses. ``steps`` carry audio already in the
    carrier's format (``Say.audio`` is µ-law for Twilio, PCM16 at the call's rate for ACS).
    """

    carrier = ""
    sample_rate = 0
    bytes_per_ms = 0
    silence_byte = 0

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

    # -- receiving

    def _violation(self, description: str) -> None:
        self.violations += 1
        if len(self.violation_samples) < MAX_VIOLATION_SAMPLES:
            self.violation_samples.append(description)
            self.events.emit("violation", description=description)

    async def _receive_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                await self._handle_text(msg.data)
            elif msg.type is aiohttp.WSMsgType.BINARY:
                self._violation(f"binary frame of {len(msg.data)} bytes (only text frames are allowed)")
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

    def report(self) -> CallReport:
        return CallReport(
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
            carrier=self.carrier,
            sample_rate=self.sample_rate,
            connections=self.connections,
        )


class _TwilioCall(_Call):
    """Twilio's side of a bidirectional media stream."""

    carrier = "twilio"
    sample_rate = 8000
    bytes_per_ms = BYTES_PER_MS
    silence_byte = ULAW_SILENCE_BYTE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seq = 0

    def _connected_fields(self) -> dict[str, Any]:
        return {"url": self.stream_url, "stream_sid": self.stream_sid, "call_sid": self.call_sid}

    async def _send_event(self, event: str, body: dict[str, Any]) -> bool:
        """Send an event carrying the next sequenceNumber and our streamSid."""
        async with self._send_lock:
            self._seq += 1
            message = {"event": event, "sequenceNumber": str(self._seq), "streamSid": self.stream_sid}
            message.update(body)
            return await self._write(message)

    async def _open(self) -> None:
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        start = {
            "streamSid": self.stream_sid,
            "accountSid": self.account_sid,
            "callSid": self.call_sid,
            "tracks": ["inbound"],
            "customParameters": dict(self.custom_parameters),
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        }
        await self._send_event("start", {"start": start})

    async def _before_frame(self) -> None:
        await self._echo_marks(self.playout.due_marks())

    async def _send_audio(self, k: int, frame: bytes, payload: str) -> bool:
        media = {"track": "inbound", "chunk": str(k + 1), "timestamp": str(k * FRAME_MS), "payload": payload}
        return await self._send_event("media", {"media": media})

    async def _send_dtmf(self, digit: str) -> bool:
        return await self._send_event("dtmf", {"dtmf": {"track": "inbound_track", "digit": digit}})

    async def _send_stop(self) -> None:
        await self._send_event("stop", {"stop": {"accountSid": self.account_sid, "callSid": self.call_sid}})

    async def _echo_marks(self, names: list[str]) -> None:
        for name in names:
            if await self._send_event("mark", {"mark": {"name": name}}):
                self.marks_echoed.append(name)

    async def _handle_text(self, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            self._violation(f"text frame is not JSON: {data[:60]!r}")
            return
        if not isinstance(message, dict):
            self._violation(f"message is not a JSON object: {data[:60]!r}")
            return
        event = message.get("event")
        if event not in ("media", "mark", "clear"):
            self._violation(f"unknown event {event!r} (allowed: media, mark, clear)")
            return
        media = message.get("media")
        payload = media.get("payload") if isinstance(media, dict) else None
        if event == "media" and isinstance(payload, str):
            self.received_payloads.append(payload)
        sid = message.get("streamSid")
        if sid != self.stream_sid:
            self._violation(f"{event} with streamSid {sid!r}, expected {self.stream_sid!r}")
            return
        if event == "media":
            if not is_base64(payload):
                self._violation(f"media payload is not valid base64: {str(payload)[:40]!r}")
                return
            assert isinstance(payload, str)
            if payload.startswith("UklGR"):  # "RIFF": a WAV header is not raw µ-law
                self._violation("media payload starts with a WAV header")
            audio = base64.b64decode(payload)
            self.received_bytes += len(audio)
            self.playout.append(audio)
        elif event == "mark":
            mark = message.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if not isinstance(name, str):
                self._violation("mark without a mark.name string")
                return
            self.marks_received.append(name)
            if self.playout.add_mark(name):
                await self._echo_marks([name])
        else:  # clear
            flushed = self.playout.pending_marks
            self._stop_playback("clear", marks_flushed=flushed)
            await self._echo_marks(flushed)


class _AcsCall(_Call):
    """ACS's side of a bidirectional media stream (PCM16 mono at 24 or 16 kHz, mixed audio)."""

    carrier = "acs"
    silence_byte = 0

    def __init__(
        self,
        *args: Any,
        session: aiohttp.ClientSession,
        headers: Mapping[str, str],
        connect_timeout_s: float,
        sample_rate: int,
        **kwargs: Any,
    ) -> None:
        audio = AUDIO_FORMATS[sample_rate]
        self.sample_rate, self.bytes_per_ms = audio.sample_rate, audio.bytes_per_ms  # before frames are sized
        super().__init__(*args, **kwargs)
        self.session = session
        self.headers = dict(headers)
        self.connect_timeout_s = connect_timeout_s
        self.wall_t0 = datetime.now(UTC)

    def _connected_fields(self) -> dict[str, Any]:
        return {
            "url": self.stream_url,
            "call_connection_id": self.call_sid,
            "correlation_id": self.account_sid,
            "subscription_id": self.stream_sid,
        }

    async def _open(self) -> None:
        metadata = {
            "subscriptionId": self.stream_sid,
            "encoding": "PCM",
            "sampleRate": self.sample_rate,
            "channels": 1,
            "length": self.frame_bytes,
        }
        await self._send({"kind": "AudioMetadata", "audioMetadata": metadata})

    async def _send_audio(self, k: int, frame: bytes, payload: str) -> bool:
        audio = {
            "timestamp": acs_timestamp(self.wall_t0 + timedelta(milliseconds=k * FRAME_MS)),
            "participantRawID": ACS_CALLER_RAW_ID,
            "data": payload,
            "silent": frame == self.silence_frame,
        }
        return await self._send({"kind": "AudioData", "audioData": audio})

    async def _send_dtmf(self, digit: str) -> bool:
        return await self._send({"kind": "DtmfData", "dtmfData": {"data": digit}})

    async def _handle_text(self, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            self._violation(f"text frame is not JSON: {data[:60]!r}")
            return
        if not isinstance(message, dict):
            self._violation(f"message is not a JSON object: {data[:60]!r}")
            return
        kind = _get_ci(message, "kind")
        name = kind.lower() if isinstance(kind, str) else None
        if name == "audiodata":
            body = _get_ci(message, "audioData")
            payload = _get_ci(body, "data") if isinstance(body, dict) else None
            if not isinstance(payload, str):
                self._violation("AudioData without an audioData.data string")
                return
            self.received_payloads.append(payload)
            if not is_base64(payload):
                self._violation(f"AudioData data is not valid base64: {payload[:40]!r}")
                return
            nbytes = b64_len(payload)
            if nbytes % 2:
                self._violation(f"AudioData data has an odd byte count ({nbytes}): not whole PCM16 samples")
                return
            if payload.startswith("UklGR"):  # "RIFF": a WAV header is not raw PCM
                self._violation("AudioData data starts with a WAV header")
            audio = base64.b64decode(payload)
            self.received_bytes += len(audio)
            self.playout.append(audio)
        elif name == "stopaudio":
            self._stop_playback("stop_audio")
        else:
            self._violation(f"unknown kind {kind!r} (allowed: AudioData, StopAudio)")

    async def _reconnect(self) -> bool:
        """Drop the media socket and open a new one for the same call; False if that failed."""
        if self.gateway_closed:
            return False
        old = self._receiver
        assert old is not None
        self.reconnecting = True
        try:
            await self.ws.close()  # while the receiver still reads, so the handshake completes
            old_code = self.ws.close_code
            await asyncio.wait({old}, timeout=1.0)
            old.cancel()
            (outcome,) = await asyncio.gather(old, return_exceptions=True)
            if isinstance(outcome, Exception):
                raise outcome
            lost, _ = self.playout.clear()  # what the old socket delivered but did not play is gone
            try:
                ws = await _open_socket(self.session, self.stream_url, self.headers, self.connect_timeout_s)
            except CallError as exc:
                self.gateway_closed = True
                self.close_code = None
                self.events.emit("reconnect_failed", error=str(exc), discarded_bytes=lost)
                return False
            self.ws = ws
            self.connections += 1
            self._receiver = asyncio.create_task(self._receive_loop(ws))
        finally:
            self.reconnecting = False
        self.events.emit("reconnect", connection=self.connections, close_code=old_code, discarded_bytes=lost)
        await self._open()
        return True


async def place_call(
    url: str,
    steps: Sequence[Step],
    *,
    params: Mapping[str, str] | None = None,
    to: str = "+15555550100",
    from_: str = "+15555550199",
    record: str | Path | None = None,
    on_event: EventCallback | None = None,
    connect_timeout_s: float = 10,
    auth_token: str | None = None,
) -> CallReport:
    """Place one call through the gateway and run ``steps`` on it, like a Twilio caller.

    ``url``: the voice webhook (``http(s)://…/twilio/voice``: the TwiML answer names the media
    socket and its parameters; ``params`` are added to them) or the media socket itself
    (``ws(s)://…/twilio/media``, with ``params`` as the stream's customParameters).
    ``on_event(t_ms, kind, fields)`` is called as things happen (``t_ms`` counts from the
    moment the media socket opened). Event kinds: webhook, connected, speech_start,
    speech_end, dtmf, bot_audio_start, bot_audio_end, clear, wait_timeout, hangup,
    closed_by_gateway, violation (the first few only). ``auth_token``: sign requests with
    ``X-Twilio-Signature`` like Twilio does. ``record``: write the call as a stereo WAV (see
    :func:`write_call_wav`).
    If the steps end without :class:`Hangup`, the caller hangs up. :class:`Reconnect` is not
    a Twilio step.

    Raises :class:`CallError` (or :class:`CallRejected`) when the call cannot be set up.
    """
    script = list(steps)
    for step in script:
        if isinstance(step, Reconnect):
            raise TypeError("Reconnect is a step of ACS calls (place_acs_call), not of Twilio calls")
        if not isinstance(step, (Say, Silence, Dtmf, WaitForBot, Hangup)):
            raise TypeError(f"not a call step: {step!r}")
    kind = _check_url(url)
    call_sid, account_sid, stream_sid = new_sid("CA"), new_sid("AC"), new_sid("MZ")
    events = _Events(on_event)
    # a new connection per request, as Twilio's webhook and media socket come: with several workers
    # sharing the port, each may land on another one
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        if kind == "webhook":
            form = {
                "AccountSid": account_sid,
                "ApiVersion": "2010-04-01",
                "CallSid": call_sid,
                "CallStatus": "ringing",
                "Called": to,
                "Caller": from_,
                "Direction": "inbound",
                "From": from_,
                "To": to,
            }
            body = await _post_webhook(session, url, form, auth_token, connect_timeout_s)
            stream_url, custom = parse_twiml(body, url)
            events.emit("webhook", stream_url=stream_url, parameters=dict(custom))
            custom.update(params or {})
        else:
            stream_url, custom = url, dict(params or {})
        ws = await _open_media_socket(session, stream_url, auth_token, connect_timeout_s)
        try:
            call = _TwilioCall(
                ws,
                script,
                events,
                stream_url=stream_url,
                stream_sid=stream_sid,
                call_sid=call_sid,
                account_sid=account_sid,
                custom_parameters=custom,
            )
            await call.run()
        finally:
            await ws.close()
    report = call.report()
    if record is not None:
        await asyncio.to_thread(write_call_wav, report, record)
    return report


def _acs_script(steps: list[Step], sample_rate: int) -> list[Step]:
    """The steps with every Say's µ-law turned into ACS's PCM16 at ``sample_rate`` (once, before the call)."""
    return [Say(ulaw_to_acs_pcm(s.audio, sample_rate), label=s.label) if isinstance(s, Say) else s for s in steps]


async def place_acs_call(
    url: str,
    steps: Sequence[Step],
    *,
    token: str | None = None,
    call_connection_id: str | None = None,
    correlation_id: str | None = None,
    record: str | Path | None = None,
    on_event: EventCallback | None = None,
    connect_timeout_s: float = 10,
    sample_rate: int = ACS_SAMPLE_RATE,
) -> CallReport:
    """Place one call through the gateway and run ``steps`` on it, like ACS media streaming.

    ``url``: the gateway's ACS media socket, ``ws(s)://…/acs/media?ctx=…``. It is opened with
    ``Authorization: Bearer <token>`` (when a token is given), ``x-ms-call-connection-id`` and
    ``x-ms-call-correlation-id`` (random UUIDs unless given). The caller's audio goes as PCM16
    ``AudioData`` at ``sample_rate`` (24000 or 16000, announced in ``AudioMetadata``: the rate
    the gateway's ``acs.sample_rate`` answers calls with); ``Say`` audio is 8 kHz µ-law, converted
    once before the call starts;
    :class:`Dtmf` sends ``DtmfData``; :class:`Reconnect` drops the socket and opens a new one
    with the same headers; :class:`Hangup` (or the end of the steps) closes the socket with
    code 1000.

    Events are those of :func:`place_call`, with ``stop_audio`` instead of ``clear`` and
    ``reconnect`` / ``reconnect_failed``. Raises :class:`CallError` (or :class:`CallRejected`
    with the HTTP status, e.g. 401 or 403) when the media socket cannot be opened.
    """
    script = list(steps)
    for step in script:
        if not isinstance(step, (Say, Silence, Dtmf, WaitForBot, Hangup, Reconnect)):
            raise TypeError(f"not a call step: {step!r}")
    if sample_rate not in AUDIO_FORMATS:
        raise ValueError(f"sample_rate must be one of {ACS_SAMPLE_RATES} (what ACS streams), not {sample_rate!r}")
    if _check_url(url) != "media":
        raise CallError(f"bad URL {url!r}: an ACS media stream URL is ws(s)://host/acs/media?...")
    connection_id = call_connection_id or str(uuid.uuid4())
    correlation = correlation_id or str(uuid.uuid4())
    headers = {"x-ms-call-connection-id": connection_id, "x-ms-call-correlation-id": correlation}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if any(isinstance(step, Say) for step in script):
        script = await asyncio.to_thread(_acs_script, script, sample_rate)
    events = _Events(on_event)
    async with aiohttp.ClientSession() as session:
        ws = await _open_socket(session, url, headers, connect_timeout_s)
        call: _AcsCall | None = None
        try:
            call = _AcsCall(
                ws,
                script,
                events,
                stream_url=url,
                stream_sid=str(uuid.uuid4()),
                call_sid=connection_id,
                account_sid=correlation,
                custom_parameters={},
                session=session,
                headers=headers,
                connect_timeout_s=connect_timeout_s,
                sample_rate=sample_rate,
            )
            await call.run()
        finally:
            await ws.close()
            if call is not None:
                await call.ws.close()  # the socket of the last reconnect
    assert call is not None
    report = call.report()
    if record is not None:
        await asyncio.to_thread(write_call_wav, report, record)
    return report


# --- human-readable output and the `gateway call` command ------------------------------------


def _s(nbytes: int, bytes_per_ms: int = BYTES_PER_MS) -> str:
    return f"{nbytes / (bytes_per_ms * 1000):.1f} s"


def describe_event(kind: str, fields: Mapping[str, Any], *, bytes_per_ms: int = BYTES_PER_MS) -> str:
    """One short line for an event, as ``gateway call`` prints it.

    ``bytes_per_ms``: of the call's audio (:attr:`CallReport.bytes_per_ms`; 8 for Twilio).
    """
    s = functools.partial(_s, bytes_per_ms=bytes_per_ms)
    if kind == "webhook":
        count = len(fields.get("parameters", {}))
        return f"webhook answered: stream {fields.get('stream_url')} ({count} parameters)"
    if kind == "connected":
        return f"media socket open ({fields.get('url')})"
    if kind == "speech_start":
        return f"caller speaks: {fields.get('label')} ({fields.get('ms', 0) / 1000:.1f} s)"
    if kind == "speech_end":
        return f"caller done: {fields.get('label')}"
    if kind == "dtmf":
        return f"caller presses {fields.get('digit')}"
    if kind == "bot_audio_start":
        return "bot audio starts"
    if kind == "bot_audio_end":
        return f"bot audio ends ({s(fields.get('played_bytes', 0))} played)"
    if kind == "clear":
        text = (
            f"clear (played {s(fields.get('turn_played_bytes', 0))} of bot audio, "
            f"{s(fields.get('discarded_bytes', 0))} discarded"
        )
        flushed = len(fields.get("marks_flushed", ()))
        return text + (f", {flushed} marks flushed)" if flushed else ")")
    if kind == "stop_audio":
        return (
            f"StopAudio (played {s(fields.get('turn_played_bytes', 0))} of bot audio, "
            f"{s(fields.get('discarded_bytes', 0))} discarded)"
        )
    if kind == "reconnect":
        return (
            f"media socket reopened (connection {fields.get('connection')}, "
            f"{s(fields.get('discarded_bytes', 0))} of buffered bot audio lost)"
        )
    if kind == "reconnect_failed":
        return f"media socket could not be reopened: {fields.get('error')}"
    if kind == "wait_timeout":
        return f"no answer from the bot within {fields.get('timeout_s')} s"
    if kind == "no_bot_audio":
        return f"the bot said nothing within {fields.get('timeout_s')} s; going on"
    if kind == "hangup":
        return "caller hangs up"
    if kind == "closed_by_gateway":
        return f"gateway closed the call (code {fields.get('code')})"
    if kind == "violation":
        return f"protocol violation: {fields.get('description')}"
    return f"{kind} {dict(fields)}" if fields else kind


def summarize(report: CallReport) -> list[str]:
    """Totals of a call, a few lines for humans."""
    closed = "the caller" if report.closed_by == "caller" else "the gateway"
    s = functools.partial(_s, bytes_per_ms=report.bytes_per_ms)
    ended = f"{report.duration_ms / 1000:.1f} s, ended by {closed} (close code {report.close_code})"
    if report.carrier == "acs":
        lines = [
            f"ACS call {report.call_connection_id}, subscription {report.subscription_id}: {ended}",
            f"bot audio: {s(report.received_bytes)} received, {s(report.played_bytes)} played, "
            f"{s(report.discarded_bytes)} discarded ({report.clears} StopAudio), "
            f"{s(report.unplayed_bytes)} unplayed at the end",
            f"media sockets: {report.connections}",
        ]
    else:
        lines = [
            f"call {report.call_sid}, stream {report.stream_sid}: {ended}",
            f"bot audio: {s(report.received_bytes)} received, {s(report.played_bytes)} played, "
            f"{s(report.discarded_bytes)} discarded by {report.clears} clear(s), "
            f"{s(report.unplayed_bytes)} unplayed at the end",
            f"marks: {len(report.marks_received)} received, {len(report.marks_echoed)} echoed",
        ]
    lines.append(f"protocol violations: {report.violations}")
    lines += [f"  - {sample}" for sample in report.violation_samples]
    return lines


def call_failures(report: CallReport) -> list[str]:
    """Why a smoke-test call counts as failed (empty when it went well)."""
    failures = []
    if report.violations:
        failures.append(f"{report.violations} protocol violation(s)")
    refused = report.events_of("reconnect_failed")
    if refused:
        failures.append("the gateway did not take the reopened media socket")
    elif report.closed_by == "gateway" and report.close_code != 1000:
        failures.append(f"the gateway closed the call abnormally (code {report.close_code})")
    timeouts = len(report.events_of("wait_timeout"))
    if timeouts:
        failures.append(f"the bot did not answer {timeouts} time(s)")
    return failures


def register_cli(subparsers: Any) -> None:
    """Add ``gateway call`` to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "call",
        help="place a test call through a gateway, like Twilio or ACS does",
        description=(
            "Place a call through the gateway the way Twilio does: post the voice webhook (http(s) URL) "
            "or open the media socket directly (ws(s) URL); or, with --acs, the way Azure Communication "
            "Services media streaming does. Play each --play file as one caller turn "
            "and wait for the bot's answer after each, then hang up. Exit code 0: the call went well; "
            "1: the gateway refused the call, broke the protocol, closed the call abnormally or the bot "
            "did not answer; 2: the call could not be placed."
        ),
    )
    parser.add_argument(
        "url", nargs="?", help="http(s)://host/twilio/voice or ws(s)://host/twilio/media (Twilio calls)"
    )
    parser.add_argument(
        "--acs", metavar="URL", help="place an ACS call instead, on this media socket: ws(s)://host/acs/media?ctx=..."
    )
    parser.add_argument("--token", metavar="JWT", help="ACS: the bearer token on the media socket")
    parser.add_argument(
        "--call-connection-id", metavar="ID", help="ACS: x-ms-call-connection-id (default: a random UUID)"
    )
    parser.add_argument(
        "--correlation-id", metavar="ID", help="ACS: x-ms-call-correlation-id (default: a random UUID)"
    )
    parser.add_argument(
        "--sample-rate", type=int, choices=ACS_SAMPLE_RATES, metavar="HZ",
        help=f"ACS: the PCM16 rate of the media stream, {' or '.join(map(str, ACS_SAMPLE_RATES))}: the "
        f"gateway's acs.sample_rate (default {ACS_SAMPLE_RATE})",
    )
    parser.add_argument(
        "--play", action="append", default=[], metavar="FILE.wav", help="a caller turn (any WAV file)"
    )
    parser.add_argument("--record", metavar="OUT.wav", help="write the call as a stereo WAV (caller, bot)")
    parser.add_argument(
        "--greeting-wait", type=float, default=3.0, metavar="S",
        help="before the first --play turn, listen this long for the bot to start a greeting "
        "(0: speak at once; default 3)",
    )
    parser.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="Twilio: a stream customParameter"
    )
    parser.add_argument("--to", default="+15555550100", help="Twilio: the called number (default %(default)s)")
    parser.add_argument(
        "--from", dest="from_", default="+15555550199", help="Twilio: the caller's number (default %(default)s)"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, metavar="S",
        help="seconds to wait for each bot answer (default %(default)s)",
    )
    parser.add_argument(
        "--auth-token", default=os.environ.get("TWILIO_AUTH_TOKEN") or None,
        help="Twilio: sign requests with X-Twilio-Signature (default: $TWILIO_AUTH_TOKEN)",
    )
    parser.set_defaults(func=run_call_command)


def _print_event(t_ms: float, kind: str, fields: dict[str, Any], *, bytes_per_ms: int = BYTES_PER_MS) -> None:
    print(f"{t_ms:7.0f} ms  {describe_event(kind, fields, bytes_per_ms=bytes_per_ms)}", flush=True)


def _place_from_args(args: argparse.Namespace, steps: list[Step]) -> CallReport:
    if args.acs:
        if args.url:
            raise CallError("give either a Twilio URL or --acs URL, not both")
        if args.param:
            raise CallError("--param is for Twilio calls; an ACS call has no stream parameters")
        rate = args.sample_rate or ACS_SAMPLE_RATE
        return asyncio.run(
            place_acs_call(
                args.acs,
                steps,
                token=args.token or None,
                call_connection_id=args.call_connection_id,
                correlation_id=args.correlation_id,
                record=args.record,
                on_event=functools.partial(_print_event, bytes_per_ms=AUDIO_FORMATS[rate].bytes_per_ms),
                sample_rate=rate,
            )
        )
    if not args.url:
        raise CallError("no URL: give the gateway's Twilio URL, or --acs URL for an ACS call")
    if args.token or args.call_connection_id or args.correlation_id or args.sample_rate:
        raise CallError(
            "--token, --call-connection-id, --correlation-id and --sample-rate are for ACS calls (--acs URL)"
        )
    params = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CallError(f"--param {item!r}: expected NAME=VALUE")
        params[name] = value
    return asyncio.run(
        place_call(
            args.url,
            steps,
            params=params,
            to=args.to,
            from_=args.from_,
            record=args.record,
            on_event=_print_event,
            auth_token=args.auth_token,
        )
    )


def run_call_command(args: argparse.Namespace) -> int:
    """``gateway call``: see :func:`register_cli`."""
    try:
        steps: list[Step] = []
        if args.play and args.greeting_wait > 0:  # listen for a greeting before speaking
            steps.append(WaitForBot(timeout_s=args.timeout, optional=True, start_timeout_s=args.greeting_wait))
        for path in args.play:
            try:
                audio = load_ulaw_8k(path)
            except (OSError, WavError) as exc:
                raise CallError(f"cannot read --play file {path}: {exc}") from None
            steps += [Say(audio, label=Path(path).name), WaitForBot(timeout_s=args.timeout)]
        if not steps:
            steps = [WaitForBot(timeout_s=args.timeout)]  # listen to the greeting
        steps.append(Hangup())
        report = _place_from_args(args, steps)
    except CallRejected as exc:
        print(f"gateway call: {exc}", file=sys.stderr)
        return 1
    except (CallError, OSError) as exc:
        print(f"gateway call: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gateway call: interrupted", file=sys.stderr)
        return 2
    for line in summarize(report):
        print(line)
    if args.record:
        print(f"recorded to {args.record}")
    failures = call_failures(report)
    if failures:
        print("FAILED: " + "; ".join(failures))
        return 1
    return 0

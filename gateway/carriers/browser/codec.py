"""The console's media socket (``GET /console/media``): a sans-I/O codec for the web page's phone.

The console page is the phone: it captures the operator's microphone and plays the bot. Its
socket carries:

* BINARY frames, both ways: audio as PCM16 little-endian mono at 24 kHz, which is Voice Live's
  ``pcm16`` as it is: the page's frames go to Voice Live as they came (one base64 encode), and the
  bot's audio goes to the page as Voice Live produced it (one base64 decode). The page sends 20 ms
  frames (960 bytes); any whole number of samples from 1 to 24 000 (2 to 48 000 bytes) is taken.
* TEXT frames, JSON objects with a ``type``. From the page: ``start`` (first, naming the
  profile), ``played`` (a mark the page's playout clock has passed), ``hangup``, ``dtmf``. To the
  page: ``started``, ``mark``, ``clear`` (a barge-in: drop the queued audio at once; the page then
  acknowledges every mark still pending, as Twilio does), ``event`` (what the call reports that the
  page shows: transcripts, barge-ins, tools, the latency of each turn) and ``ended`` (the gateway
  ended the call), ``error`` (a start the gateway cannot take).

Events carry only what the page shows: texts the operator heard or said, ids, figures in
milliseconds, and Voice Live's error code and message; never a number or a secret (see
:data:`PAGE_EVENTS`).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import Any

from gateway.audio import PCM16_24K
from gateway.call import Call, ClearPlayback, Hangup, PhoneAction, PlayAudio, SendMark
from gateway.carriers.common import load_json, short

PhoneMessage = str | bytes

AUDIO = PCM16_24K
MIN_FRAME, MAX_FRAME = 2, 48_000  # bytes of caller audio in one binary frame: 1 sample to 500 ms
KEYS = frozenset("0123456789*#")  # the keys of the console page's keypad
MAX_NAME = 64  # characters of a profile or mark name the page may send
MAX_TEXT = 4000  # characters of one text field sent to the page (a transcript)
MAX_MESSAGE = 300  # characters of Voice Live's error message sent to the page

# The call's events the page shows, and the fields of each it gets: nothing else leaves the gateway
PAGE_EVENTS: dict[str, tuple[str, ...]] = {
    "session.ready": ("format", "held_frames", "ready_ms"),
    "caller.speech_started": ("audio_start_ms",),
    "caller.speech_stopped": ("audio_end_ms",),
    "caller.transcript": ("item_id", "text"),
    "bot.transcript": ("item_id", "text"),
    "bot.first_audio": ("response_id", "item_id", "after_speech_stopped_ms"),  # the turn's latency
    "response.done": ("response_id", "status", "reason"),
    "barge_in": ("cleared", "response_id", "item_id", "truncated_at_ms", "received_ms"),
    "tool.called": ("name", "call_id"),
    "tool.done": ("name", "call_id", "ok"),
    "tool.refused": ("name", "call_id", "error"),
    "voicelive.error": ("code", "message"),
    "call.ended": ("reason",),  # (never transfer_to: a phone number)
}


class BrowserProtocolError(ValueError):
    """A message from the page that cannot be used; the text says why (safe to log)."""


@dataclass(slots=True, frozen=True)
class Start:
    profile: str


@dataclass(slots=True, frozen=True)
class Played:
    name: str


@dataclass(slots=True, frozen=True)
class HangUp:
    pass


@dataclass(slots=True, frozen=True)
class Key:
    digit: str


PageMessage = Start | Played | HangUp | Key
HANG_UP = HangUp()


def _text(message: dict[str, Any], key: str, kind: str) -> str:
    value = message.get(key)
    if not isinstance(value, str) or not value:
        raise BrowserProtocolError(f"{kind} without a {key}")
    if len(value) > MAX_NAME:
        raise BrowserProtocolError(f"{kind} with a {key} of {len(value)} characters (at most {MAX_NAME})")
    return value


def parse_message(text: str | bytes) -> PageMessage:
    """One text message from the page."""
    message, problem = load_json(text)
    if problem is not None:
        raise BrowserProtocolError(problem)
    if type(message) is not dict:
        raise BrowserProtocolError("not a JSON object")
    kind = message.get("type")
    if kind == "played":
        return Played(_text(message, "name", "played"))
    if kind == "hangup":
        return HANG_UP
    if kind == "dtmf":
        digit = message.get("digit")
        if not isinstance(digit, str) or digit not in KEYS:
            raise BrowserProtocolError(f"dtmf with {short(repr(digit))}, which is not a key of 0-9, * and #")
        return Key(digit)
    if kind == "start":
        return Start(_text(message, "profile", "start"))
    raise BrowserProtocolError(f"unknown message type {short(repr(kind))}")


def frame_problem(frame: bytes) -> str | None:
    """Why a binary frame is not caller audio (None: it is): PCM16 takes an even number of bytes,
    from :data:`MIN_FRAME` to :data:`MAX_FRAME`."""
    size = len(frame)
    if size < MIN_FRAME or size > MAX_FRAME:
        return f"a frame of {size} bytes (caller audio comes in {MIN_FRAME} to {MAX_FRAME} bytes)"
    if size % 2:
        return f"a frame of {size} bytes: not whole 16-bit samples"
    return None


def _compact(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def started_message(call_id: str, profile: str) -> str:
    """What the page hears once its call exists."""
    return _compact({"type": "started", "call_id": call_id, "profile": profile, "sample_rate": AUDIO.sample_rate})


def error_message(text: str) -> str:
    """Why the gateway cannot take the page's call (sent before it closes the socket)."""
    return _compact({"type": "error", "message": text})


def ended_message(reason: str) -> str:
    return _compact({"type": "ended", "reason": reason})


CLEAR_MESSAGE = _compact({"type": "clear"})


def _harmless(value: Any, limit: int) -> Any:
    """A field value as the page may see it: a short text, a number, a flag, or nothing."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + "..."
    return None  # (anything else stays in the gateway)


def event_message(event: str, t: float, fields: dict[str, Any]) -> str | None:
    """The page's message for one of the call's events (None: the page does not see this event)."""
    keys = PAGE_EVENTS.get(event)
    if keys is None:
        return None
    limit = MAX_MESSAGE if event == "voicelive.error" else MAX_TEXT
    kept = {key: _harmless(fields.get(key), limit) for key in keys if key in fields}
    return _compact({"type": "event", "name": event, "t": round(t, 1), "fields": kept})


class BrowserLeg:
    """The phone leg of one console call: the page's frames and messages in and out of a :class:`Call`.

    ``outbox`` holds what the leg sends by itself: the ``started`` message (there from the start),
    and the call's events the page shows (:meth:`observe`, the call's observer, chained to the
    gateway's). ``started_at`` is the call's clock origin: events carry ``t`` in ms since then.
    """

    carrier = "browser"
    binary = True
    __slots__ = ("call_id", "ended_sent", "outbox", "profile", "started_at")

    def __init__(self, call_id: str, profile: str, started_at: float) -> None:
        self.call_id = call_id
        self.profile = profile
        self.started_at = started_at
        self.outbox: list[PhoneMessage] = [started_message(call_id, profile)]
        self.ended_sent = False  # the page was told the call ended

    # --- inbound ------------------------------------------------------------------------------

    def feed(self, call: Call, data: str | bytes, now: float) -> tuple[str, str] | None:
        """One message from the page: a binary frame of caller audio, or a JSON text message."""
        if type(data) is bytes:
            problem = frame_problem(data)
            if problem is not None:
                return "bad-frame", problem
            call.caller_audio(binascii.b2a_base64(data, newline=False).decode("ascii"), now)
            return None
        try:
            message = parse_message(data)
        except BrowserProtocolError as exc:
            return "malformed", str(exc)
        kind = type(message)
        if kind is Played:
            call.playback_mark(message.name, now)  # type: ignore[union-attr]
        elif kind is HangUp:
            call.phone_ended("caller_hung_up", now)
        elif kind is Key:
            call.dtmf(message.digit, now)  # type: ignore[union-attr]
        else:
            return "duplicate-start", "a second start on the same socket"
        return None

    def observe(self, event: str, t: float, fields: dict[str, Any]) -> None:
        """The call's observer: the events the page shows go into the outbox, ahead of the call's
        next actions."""
        message = event_message(event, t - self.started_at, fields)
        if message is not None:
            self.outbox.append(message)

    # --- outbound -----------------------------------------------------------------------------

    def encode(self, action: PhoneAction) -> PhoneMessage | None:
        """The page's message for a phone action."""
        kind = type(action)
        if kind is PlayAudio:
            return base64.b64decode(action.payload)  # type: ignore[union-attr]
        if kind is SendMark:
            return _compact({"type": "mark", "name": action.name})  # type: ignore[union-attr]
        if kind is ClearPlayback:
            return CLEAR_MESSAGE
        if kind is Hangup:
            return self.ended(action.reason)  # type: ignore[union-attr]
        return None

    def ended(self, reason: str) -> str | None:
        """``ended``, once: None when the page was told already."""
        if self.ended_sent:
            return None
        self.ended_sent = True
        return ended_message(reason)

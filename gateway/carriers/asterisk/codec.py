"""Asterisk's WebSocket channel driver (chan_websocket): a sans-I/O codec for the media socket.

Asterisk dials the gateway (``Dial(WebSocket/<connection>/c(ulaw))``, or ARI ``externalMedia`` with
``transport=websocket``) and the two sides exchange:

* BINARY frames: raw audio in the channel's codec, both ways. Asterisk sends one frame per 20 ms
  packet (160 bytes of µ-law); the gateway forwards each one to Voice Live as it came (one base64
  encode), and sends the bot's audio back exactly as Voice Live produced it (one base64 decode).
* TEXT frames: control. Asterisk sends ``MEDIA_START`` first (connection_id, channel, channel_id,
  format, optimal_frame_size, ptime), then ``DTMF_END``, ``MEDIA_XOFF``/``MEDIA_XON`` (flow
  control), ``MEDIA_MARK_PROCESSED``, ``QUEUE_DRAINED``, ``STATUS``, ``MEDIA_BUFFERING_COMPLETED``
  and ``ERROR``; the gateway sends ``START_MEDIA_BUFFERING``, ``MARK_MEDIA``, ``FLUSH_MEDIA``,
  ``GET_STATUS`` and ``HANGUP``. Two formats exist: the original plain text (``COMMAND key:value
  ...``, the default) and JSON (``{"event": ...}`` from Asterisk, ``{"command": ...}`` to it; Asterisk
  20.18, 22.8, 23.2 and later, with ``f(json)`` in the dial string or ``control_message_format =
  json`` in chan_websocket.conf). The leg answers in the format of the ``MEDIA_START`` it got.

What the gateway assumes where Asterisk's documentation leaves it open (read against chan_websocket.c):

* Framing. Caller frames are forwarded as they come, whatever their size (Asterisk sends one
  packet of ``optimal_frame_size`` bytes per ``ptime``: 160 bytes per 20 ms of µ-law). Asterisk
  cuts what it receives into frames of ``optimal_frame_size`` and drops a remainder that does not
  fill a frame, unless media buffering is on. The bot's audio comes in the call's pieces (60 ms
  with marks, 20 ms when paced, cut at whole base64 quanta: 480 or 159 bytes of µ-law), so the leg
  turns buffering on (``START_MEDIA_BUFFERING``) before the first audio and again after every
  flush (a flush ends it) and sends each piece as it is: Asterisk joins the pieces into whole
  frames, and plays a last partial frame once its queue runs dry (releases with that change) or
  when more audio comes. Nothing is padded or re-cut here, so the phone plays exactly the bytes
  Voice Live sent. A message never exceeds 65 500 bytes (larger ones close the socket): longer
  audio is sent in several messages, cut at multiples of ``optimal_frame_size``. Flow control
  counts ``optimal_frame_size`` bytes as one of Asterisk's frames.
* Marks. ``MARK_MEDIA <name>`` sits in Asterisk's frame queue behind the audio sent before it, and
  ``MEDIA_MARK_PROCESSED <name>`` comes back once that audio has been played: the playback
  acknowledgement the call truncates at (with buffering on, a partial frame at the end of a piece
  may still be waiting, so a mark can come back up to one frame early). ``FLUSH_MEDIA`` discards
  queued marks with the audio: they never come back, and the call does not wait for them (a flush
  makes them stale); one that still comes was processed before the flush, so its audio played, and
  the call counts it as heard (its record's transcript). Where Asterisk refuses ``MARK_MEDIA`` with
  an ``ERROR`` (passthrough mode, or media direction ``in``), the leg counts the mark as played at
  once, so that the call never waits for an acknowledgement that cannot come. Releases before
  20.18 / 22.8 / 23.2 have no marks at all: set ``asterisk.playback_marks: false`` and the call
  paces the audio itself.
* Flow control. Asterisk queues about 1000 frames, says ``MEDIA_XOFF`` at 900 and ``MEDIA_XON``
  below 800, and drops whole messages that arrive while 1000 are queued. From ``MEDIA_XOFF`` on,
  the leg holds every outbound message (audio and marks, in order) instead of sending it, and asks
  once for ``GET_STATUS`` to learn the queue's levels. On ``MEDIA_XON`` it releases held messages
  up to half-way between the XOFF level and the maximum (taken as XOFF plus the XOFF-XON gap:
  950 frames), which crosses the XOFF level again (so another ``MEDIA_XON`` will come) while no
  message arrives with the maximum queued (the last one released may go past it: Asterisk takes a
  message whole when it arrives below it). When messages are still held it asks for
  ``GET_STATUS``, and a ``STATUS`` that shows room releases the next batch. Held audio is bounded
  (:data:`HOLD_LIMIT_MS`); past it, newer audio is dropped with a warning in the log, never
  silently. A flush empties Asterisk's queue, so it also ends the hold.
* Keys. ``DTMF_END digit:<key>`` reaches the call as a keypad key.
* Hang-up. The gateway sends ``HANGUP`` and closes the socket; the caller hanging up closes it
  from Asterisk's side.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

from gateway.audio import FORMATS, G711_ALAW, G711_ULAW, PCM16_16K, AudioFormat
from gateway.call import Call, ClearPlayback, Hangup, PhoneAction, PlayAudio, SendMark
from gateway.carriers.common import keypad_key, load_json, short

PhoneMessage = str | bytes

# The codecs of MEDIA_START's ``format`` that pass straight through to a Voice Live format.
AUDIO_FORMATS: dict[str, AudioFormat] = {"ulaw": G711_ULAW, "alaw": G711_ALAW, "slin16": PCM16_16K}
assert all(fmt.key in FORMATS for fmt in AUDIO_FORMATS.values())

MAX_MESSAGE = 65_500  # Asterisk closes the socket (and hangs up) on a larger message
QUEUE_MAX, XOFF_LEVEL, XON_LEVEL = 1000, 900, 800  # frames, as chan_websocket defines them
HOLD_LIMIT_MS = 60_000  # audio held while Asterisk says MEDIA_XOFF, at most
MAX_CONTROL = 128  # Asterisk ignores longer text messages (a mark name must keep MARK_MEDIA under it)


# A number the dialplan adds to the media socket's URI (``v(to=...,from=...)``): an optional plus and
# digits, with the spaces, dashes, dots and brackets people write between them (dropped here)
MAX_URI_NUMBER = 64  # characters: anything longer is not a phone number
_URI_NUMBER = re.compile(r"\+?\d{1,32}")
_NUMBER_PUNCTUATION = re.compile(r"[\s\-.()]")


def uri_number(value: str | None) -> str | None:
    """A phone number from the media socket's URI (``to``, ``from``), or None when there is none.

    The dialplan writes these, from what the trunk said (the caller id is the caller's to choose):
    they are untrusted text. A value longer than :data:`MAX_URI_NUMBER`, or anything but an
    optional ``+`` and up to 32 digits once spaces, dashes, dots and brackets are dropped (a
    withheld caller id, ``anonymous``, a SIP user name), gives None; a number comes back with
    only its ``+`` and digits (``+1 (415) 555-0100`` gives ``+14155550100``)."""
    if not value or len(value) > MAX_URI_NUMBER:
        return None
    number = _NUMBER_PUNCTUATION.sub("", value.removeprefix("tel:"))
    return number if _URI_NUMBER.fullmatch(number) and number.isascii() else None


class AsteriskProtocolError(ValueError):
    """A control message that cannot be used; the text says why (safe to log)."""


@dataclass(slots=True, frozen=True)
class MediaStart:
    connection_id: str
    channel: str
    channel_id: str
    format: str
    optimal_frame_size: int
    ptime: int
    json_control: bool  # the message was JSON: Asterisk takes JSON commands on this socket
    variables: dict[str, str] = field(default_factory=dict)  # channel variables (JSON format only)


@dataclass(slots=True, frozen=True)
class Dtmf:
    digit: str


@dataclass(slots=True, frozen=True)
class MarkProcessed:
    name: str


@dataclass(slots=True, frozen=True)
class FlowOff:
    pass


@dataclass(slots=True, frozen=True)
class FlowOn:
    pass


@dataclass(slots=True, frozen=True)
class QueueDrained:
    pass


@dataclass(slots=True, frozen=True)
class BufferingCompleted:
    name: str


@dataclass(slots=True, frozen=True)
class Status:
    queue_length: int | None
    queue_full: bool | None
    xon_level: int | None = None
    xoff_level: int | None = None


@dataclass(slots=True, frozen=True)
class DriverError:
    text: str


@dataclass(slots=True, frozen=True)
class OtherEvent:
    event: str  # an event this gateway does not use; tolerated


AsteriskEvent = (MediaStart | Dtmf | MarkProcessed | FlowOff | FlowOn | QueueDrained | BufferingCompleted | Status
                 | DriverError | OtherEvent)
FLOW_OFF, FLOW_ON, QUEUE_DRAINED = FlowOff(), FlowOn(), QueueDrained()


def _pairs(text: str) -> dict[str, str]:
    """``key:value`` words of a plain-text message (words without a colon are skipped)."""
    out: dict[str, str] = {}
    for word in text.split():
        key, sep, value = word.partition(":")
        if sep and key:
            out[key] = value
    return out


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise AsteriskProtocolError(f"MEDIA_START {name} is not a number")
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise AsteriskProtocolError(f"MEDIA_START {name} is not a number: {short(repr(value))}") from None
    return number


def _count(value: Any) -> int | None:
    """A whole number of frames from a STATUS message, or None when it is not one."""
    if isinstance(value, bool):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if 0 <= number <= 1_000_000 else None


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _media_start(fields: dict[str, Any], json_control: bool) -> MediaStart:
    connection_id = fields.get("connection_id")
    if not isinstance(connection_id, str) or not connection_id:
        raise AsteriskProtocolError("MEDIA_START without a connection_id")
    fmt = fields.get("format")
    if not isinstance(fmt, str) or not fmt:
        raise AsteriskProtocolError("MEDIA_START without a format")
    size = _int(fields.get("optimal_frame_size"), "optimal_frame_size")
    if not 0 < size <= MAX_MESSAGE:
        raise AsteriskProtocolError(f"MEDIA_START optimal_frame_size {size} is out of range")
    ptime = _int(fields.get("ptime", 20), "ptime")
    channel, channel_id = fields.get("channel"), fields.get("channel_id")
    raw_vars = fields.get("channel_variables")
    variables = {str(k): str(v) for k, v in raw_vars.items()} if type(raw_vars) is dict else {}
    return MediaStart(connection_id, channel if isinstance(channel, str) else "",
                      channel_id if isinstance(channel_id, str) else "", fmt, size, ptime, json_control, variables)


def _event(name: str, fields: dict[str, Any], rest: str, json_control: bool) -> AsteriskEvent:
    if name == "MEDIA_MARK_PROCESSED":
        mark = fields.get("correlation_id") if json_control else rest
        return MarkProcessed(mark if isinstance(mark, str) else "")
    if name == "MEDIA_XOFF":
        return FLOW_OFF
    if name == "MEDIA_XON":
        return FLOW_ON
    if name == "DTMF_END":
        digit = fields.get("digit")
        key = keypad_key(digit)
        if key is None:
            raise AsteriskProtocolError(f"DTMF_END with {short(repr(digit))}, which is not a keypad key")
        return Dtmf(key)
    if name == "QUEUE_DRAINED":
        return QUEUE_DRAINED
    if name == "MEDIA_START":
        return _media_start(fields, json_control)
    if name == "STATUS":
        return Status(_count(fields.get("queue_length")), _flag(fields.get("queue_full")),
                      _count(fields.get("xon_level")), _count(fields.get("xoff_level")))
    if name == "MEDIA_BUFFERING_COMPLETED":
        mark = fields.get("correlation_id") if json_control else rest
        return BufferingCompleted(mark if isinstance(mark, str) else "")
    if name == "ERROR":
        text = fields.get("error_text") if json_control else rest.partition("error_text:")[2] or rest
        return DriverError(text if isinstance(text, str) else "")
    return OtherEvent(name)


def parse_control(text: str | bytes) -> AsteriskEvent:
    """One TEXT message from Asterisk, plain text or JSON."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise AsteriskProtocolError("a control message that is not UTF-8") from None
    body = text.strip()
    if body.startswith("{"):
        msg, problem = load_json(body)
        if problem is not None:
            raise AsteriskProtocolError(problem)
        if type(msg) is not dict:
            raise AsteriskProtocolError("not a JSON object")
        name = msg.get("event")
        if not isinstance(name, str) or not name:
            raise AsteriskProtocolError("JSON message without an event name")
        return _event(name, msg, "", True)
    if not body:
        raise AsteriskProtocolError("an empty control message")
    name, _, rest = body.partition(" ")
    rest = rest.strip()
    if not name.replace("_", "").isalnum() or not name.isupper():
        raise AsteriskProtocolError(f"not a control message: {short(repr(body))}")
    return _event(name, _pairs(rest), rest, False)


class Commands:
    """The commands the gateway sends Asterisk, in the socket's control format."""

    __slots__ = ("flush", "get_status", "hangup", "json", "start_buffering")

    def __init__(self, json_control: bool) -> None:
        self.json = json_control
        self.start_buffering = self._command("START_MEDIA_BUFFERING")
        self.flush = self._command("FLUSH_MEDIA")
        self.get_status = self._command("GET_STATUS")
        self.hangup = self._command("HANGUP")

    def _command(self, name: str) -> str:
        return json.dumps({"command": name}, separators=(",", ":")) if self.json else name

    def mark(self, name: str) -> str:
        if self.json:
            return json.dumps({"command": "MARK_MEDIA", "correlation_id": name}, separators=(",", ":"))
        return "MARK_MEDIA " + name


class AsteriskLeg:
    """The phone leg of one call on Asterisk: binary audio and text control in and out of a
    :class:`Call`.

    ``outbox`` holds messages the leg let go of by itself (flow control resumed): the wire sends
    them ahead of the call's next actions. ``log`` (optional) is where a dropped excess of held audio
    is reported.
    """

    carrier = "asterisk"
    binary = True
    __slots__ = ("_asked_levels", "_buffering", "_held", "_held_audio", "_last_mark", "chunk", "commands",
                 "dropped_bytes", "frame_size", "hold_limit", "hung_up", "log", "outbox", "start", "xoff",
                 "xoff_level", "xon_level")

    def __init__(self, start: MediaStart, *, log: Any = None, hold_limit_bytes: int | None = None) -> None:
        self.start = start
        self.commands = Commands(start.json_control)
        self.frame_size = start.optimal_frame_size
        self.chunk = max(self.frame_size, MAX_MESSAGE // self.frame_size * self.frame_size)
        fmt = AUDIO_FORMATS.get(start.format, G711_ULAW)
        self.hold_limit = hold_limit_bytes if hold_limit_bytes is not None else HOLD_LIMIT_MS * fmt.bytes_per_ms
        self.log = log
        self.outbox: list[PhoneMessage] = []
        self._held: list[PhoneMessage] = []
        self._held_audio = 0  # bytes of audio in _held
        self._buffering = False  # START_MEDIA_BUFFERING sent since the last flush
        self._last_mark: str | None = None  # the last mark sent, not yet acknowledged
        self.xoff = False  # Asterisk said MEDIA_XOFF: outbound messages are held
        self.xon_level, self.xoff_level = XON_LEVEL, XOFF_LEVEL  # as STATUS reports them, once asked
        self._asked_levels = False
        self.dropped_bytes = 0  # held audio dropped past the bound
        self.hung_up = False  # HANGUP was sent

    # --- inbound ------------------------------------------------------------------------------

    def feed(self, call: Call, data: str | bytes, now: float) -> tuple[str, str] | None:
        """One inbound message: a binary audio frame, or a control message."""
        if type(data) is bytes:
            if data:
                call.caller_audio(binascii.b2a_base64(data, newline=False).decode("ascii"), now)
                return None
            return "empty-frame", "a binary frame without audio"
        try:
            event = parse_control(data)
        except AsteriskProtocolError as exc:
            return "malformed", str(exc)
        kind = type(event)
        if kind is MarkProcessed:
            name = event.name  # type: ignore[union-attr]
            if name == self._last_mark:
                self._last_mark = None
            call.playback_mark(name, now)
        elif kind is Dtmf:
            call.dtmf(event.digit, now)  # type: ignore[union-attr]
        elif kind is FlowOff:
            self.xoff = True
            if not self._asked_levels:  # the queue's levels, before the MEDIA_XON that needs them
                self._asked_levels = True
                self.outbox.append(self.commands.get_status)
        elif kind is FlowOn:
            self._refill(self.xon_level)
        elif kind is Status:
            status: Status = event  # type: ignore[assignment]
            if status.xon_level is not None and status.xoff_level is not None \
                    and 0 < status.xon_level < status.xoff_level:
                self.xon_level, self.xoff_level = status.xon_level, status.xoff_level
            if self.xoff and status.queue_full is False and self._held:
                self._refill(status.queue_length if status.queue_length is not None else self.xon_level)
        elif kind is DriverError:
            text = event.text  # type: ignore[union-attr]
            if "MARK_MEDIA" in text and self._last_mark is not None:
                # the mark will never be processed: count what it closes as played, never wait for it
                mark, self._last_mark = self._last_mark, None
                call.playback_mark(mark, now)
            return "asterisk-error", short(text, 120)
        elif kind is MediaStart:
            return "duplicate-start", "a second MEDIA_START on the same socket"
        elif kind is OtherEvent:
            return "unknown-event", f"event {short(repr(event.event))} is not used"  # type: ignore[union-attr]
        return None  # QUEUE_DRAINED, MEDIA_BUFFERING_COMPLETED: nothing to do

    def _refill(self, queued: int) -> None:
        """Asterisk has room again (``queued`` frames in its queue): release held messages up to
        half-way between the XOFF level and the maximum; when some are still held, ask how the queue
        stands."""
        held = self._held
        if not held:
            self.xoff = False
            return
        # Asterisk takes a whole message as long as fewer than its maximum (XOFF level + the XOFF-XON
        # gap: 1000) wait when it arrives: the refill level is half-way between XOFF and that maximum;
        # the last message released may go past it, none arrives past the maximum
        refill_level = self.xoff_level + (self.xoff_level - self.xon_level) // 2
        budget = max(0, refill_level - queued) * self.frame_size
        taken = 0
        for message in held:
            if type(message) is bytes:
                if budget <= 0:
                    break
                budget -= len(message)
                self._held_audio -= len(message)
            taken += 1
        outbox = self.outbox
        outbox += held[:taken]
        del held[:taken]
        if held:
            outbox.append(self.commands.get_status)  # (the next STATUS or MEDIA_XON releases more)
        else:
            self.xoff = False

    # --- outbound -----------------------------------------------------------------------------

    def encode(self, action: PhoneAction) -> PhoneMessage | list[PhoneMessage] | None:
        """Wire messages for a phone action (None: nothing to send now)."""
        kind = type(action)
        if kind is PlayAudio:
            audio = base64.b64decode(action.payload)  # type: ignore[union-attr]
            messages: list[PhoneMessage] = []
            if not self._buffering:
                self._buffering = True
                messages.append(self.commands.start_buffering)
            if len(audio) <= self.chunk:
                messages.append(audio)
            else:
                chunk = self.chunk
                messages += [audio[i:i + chunk] for i in range(0, len(audio), chunk)]
            if self.xoff:
                self._hold(messages)
                return None
            return messages
        if kind is SendMark:
            name = action.name  # type: ignore[union-attr]
            self._last_mark = name
            message = self.commands.mark(name)
            if self.xoff:
                self._hold([message])
                return None
            return message
        if kind is ClearPlayback:
            self._held.clear()
            self._held_audio = 0
            self.xoff = False  # the flush empties Asterisk's queue: there is room again
            self._buffering = False  # and ends media buffering
            self._last_mark = None
            return self.commands.flush
        if kind is Hangup:
            self.hung_up = True
            return self.commands.hangup
        return None

    def _hold(self, messages: list[PhoneMessage]) -> None:
        held = self._held
        for message in messages:
            if type(message) is bytes:
                if self._held_audio + len(message) > self.hold_limit:
                    if not self.dropped_bytes and self.log is not None:
                        self.log.warning("Asterisk has not taken the bot's audio for too long; dropping what "
                                         "comes beyond the held limit", held_ms=HOLD_LIMIT_MS)
                    self.dropped_bytes += len(message)
                    continue
                self._held_audio += len(message)
            held.append(message)

    def hangup_message(self) -> str | None:
        """``HANGUP``, once: None when it was sent already."""
        if self.hung_up:
            return None
        self.hung_up = True
        return self.commands.hangup

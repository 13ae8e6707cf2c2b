"""Vonage Voice API WebSockets: a sans-I/O codec for the media socket, and the NCCOs the webhooks
answer with.

The media socket (Vonage is the client) opens with one JSON text message, ``websocket:connected``,
carrying the ``content-type`` of the audio and, at its top level, the ``headers`` the NCCO gave the
endpoint. Then the caller's audio comes as BINARY frames of 16-bit signed little-endian linear PCM,
one 20 ms frame per message (640 bytes at 16 kHz, the rate this gateway asks for: it passes
unchanged to Voice Live as ``pcm16`` at 16 kHz, both ways). Text messages may come between frames:
``websocket:dtmf`` (one key: ``digit``, ``duration``), ``websocket:notify`` (the ``payload`` of a
``notify`` the gateway sent, once the audio queued before it has played) and ``websocket:cleared``
(the answer to ``clear``).

The gateway sends the bot's audio as binary frames of exactly 640 bytes (Vonage requires 20 ms per
message), ``{"action":"notify","payload":{"mark":"<n>"}}`` after each piece of audio (the playback
mark: truncation is at what Vonage reports played) and ``{"action":"clear"}`` at a barge-in.

Assumed where the documentation is silent:

* Bot audio rarely comes in whole 20 ms frames. The leg keeps the last partial frame (under 640
  bytes) and sends it with the next piece, so the caller hears the bot's words without gaps; the
  ``notify`` after a piece is sent at once, so its acknowledgement may come up to 20 ms before the
  last bytes of the piece have played. A flush (``clear``) drops the partial frame; when the call
  hangs up, it is padded with silence and sent.
* ``clear`` also drops the ``notify`` messages queued behind the audio it discards (no
  ``websocket:notify`` comes for them).
* A ``websocket:dtmf`` digit may also come as ``{"dtmf": {"digit": ...}}``; both are read.
* Unknown events and fields are tolerated; a binary frame must be whole 16-bit samples.
* Bot audio is sent as Voice Live delivers it, ahead of playback (Vonage buffers it: 3072 messages,
  about a minute, by its tutorial); one answer longer than that buffer would lose its end.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from gateway.audio import PCM16_16K
from gateway.call import Call, ClearPlayback, Hangup, PhoneAction, PlayAudio, SendMark
from gateway.carriers.common import keypad_key, load_json, short

AUDIO = PCM16_16K  # what the calls stream, and what Voice Live gets: no resampling either way
CONTENT_TYPE = "audio/l16;rate=16000"
FRAME_MS = 20
FRAME_BYTES = AUDIO.bytes_per_ms * FRAME_MS  # 640: the size of every audio message, both ways
SILENCE = bytes(FRAME_BYTES)
CLEAR = '{"action":"clear"}'
MARK_KEY = "mark"  # the gateway's notify payloads: {"mark": "<sequence number>"}


class VonageProtocolError(ValueError):
    """A text message that cannot be used; the text says why (safe to log)."""


@dataclass(slots=True, frozen=True)
class Connected:
    content_type: str
    headers: dict[str, str]  # the NCCO endpoint's headers, as Vonage echoes them


@dataclass(slots=True, frozen=True)
class DtmfKey:
    digit: str


@dataclass(slots=True, frozen=True)
class Notified:
    payload: Any  # what the notify carried


@dataclass(slots=True, frozen=True)
class Cleared:
    pass


@dataclass(slots=True, frozen=True)
class OtherEvent:
    event: str


VonageEvent = Connected | DtmfKey | Notified | Cleared | OtherEvent
CLEARED = Cleared()


def same_content_type(value: object, expected: str = CONTENT_TYPE) -> bool:
    """Whether a ``content-type`` names ``expected`` (case and spaces aside)."""
    return isinstance(value, str) and value.replace(" ", "").lower() == expected


def parse_event(text: str | bytes) -> VonageEvent:
    """Parse one text message of the media socket."""
    msg, problem = load_json(text)
    if problem is not None:
        raise VonageProtocolError(problem)
    if type(msg) is not dict:
        raise VonageProtocolError("not a JSON object")
    event = msg.get("event")
    if event == "websocket:notify":
        return Notified(msg.get("payload"))
    if event == "websocket:dtmf":
        digit = msg.get("digit")
        if digit is None and type(msg.get("dtmf")) is dict:
            digit = msg["dtmf"].get("digit")
        if isinstance(digit, int) and not isinstance(digit, bool) and 0 <= digit <= 9:
            digit = str(digit)
        key = keypad_key(digit)
        if key is None:
            raise VonageProtocolError(f"websocket:dtmf with {short(repr(digit))}, which is not a keypad key")
        return DtmfKey(key)
    if event == "websocket:cleared":
        return CLEARED
    if event == "websocket:connected":
        content_type = msg.get("content-type")
        if not isinstance(content_type, str):
            raise VonageProtocolError("websocket:connected without a content-type")
        headers = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in msg.items()
                   if k not in ("event", "content-type")}
        return Connected(content_type, headers)
    if not isinstance(event, str):
        raise VonageProtocolError("message without an event name")
    return OtherEvent(event)


def notify_message(name: str) -> str:
    return '{"action":"notify","payload":{"' + MARK_KEY + '":' + json.dumps(name) + "}}"


def mark_of(payload: Any) -> str | None:
    """The mark name a ``websocket:notify`` payload carries (None: not one of the gateway's)."""
    if type(payload) is dict:
        name = payload.get(MARK_KEY)
        if isinstance(name, str):
            return name
    return None


class VonageLeg:
    """The phone leg of one call on Vonage: binary L16 frames and JSON text in and out of a :class:`Call`.

    ``_rest`` holds the last partial frame of bot audio (under 640 bytes) until the next piece."""

    carrier = "vonage"
    binary = True
    __slots__ = ("_rest",)

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, call: Call, data: str | bytes, now: float) -> tuple[str, str] | None:
        """One inbound message: a binary audio frame or a text event. (problem, detail) when unusable."""
        if type(data) is bytes:
            size = len(data)
            if size and not size & 1:  # whole 16-bit samples
                call.caller_audio(binascii.b2a_base64(data, newline=False).decode("ascii"), now)
                return None
            return "bad-audio-frame", f"{size} bytes: not whole 16-bit samples"
        try:
            event = parse_event(data)
        except VonageProtocolError as exc:
            return "malformed", str(exc)
        kind = type(event)
        if kind is Notified:
            name = mark_of(event.payload)  # type: ignore[union-attr]
            if name is None:
                return "unknown-notify", f"notify payload {short(repr(event.payload))} is not the gateway's"  # type: ignore[union-attr]
            call.playback_mark(name, now)
        elif kind is DtmfKey:
            call.dtmf(event.digit, now)  # type: ignore[union-attr]
        elif kind is Cleared:
            return None
        elif kind is Connected:
            return "duplicate-connected", "a second websocket:connected on the same socket"
        else:
            return "unknown-event", f"event {short(repr(event.event))} is not used"  # type: ignore[union-attr]
        return None

    def encode(self, action: PhoneAction) -> str | bytes | list[str | bytes] | None:
        """Wire messages for a phone action: audio as whole 640-byte frames (the remainder waits for
        the next piece), a mark as a ``notify``, a flush as ``clear``."""
        kind = type(action)
        if kind is PlayAudio:
            audio = base64.b64decode(action.payload)  # type: ignore[union-attr]
            if self._rest:
                audio = self._rest + audio
            whole = len(audio) - len(audio) % FRAME_BYTES
            self._rest = audio[whole:]
            if not whole:
                return None
            view = memoryview(audio)
            return [bytes(view[i : i + FRAME_BYTES]) for i in range(0, whole, FRAME_BYTES)]
        if kind is SendMark:
            return notify_message(action.name)  # type: ignore[union-attr]
        if kind is ClearPlayback:
            self._rest = b""
            return CLEAR
        if kind is Hangup and self._rest:
            last, self._rest = self._rest + SILENCE[len(self._rest):], b""
            return last
        return None


# --- NCCOs ----------------------------------------------------------------------------------------


def connect_ncco(media_url: str, headers: dict[str, str], authorization: str | None, event_url: str,
                 caller_id: str | None = None) -> list[dict[str, Any]]:
    """The NCCO that connects the call to the gateway's media socket.

    ``authorization`` (``Bearer <token>``) is the ``Authorization`` header Vonage puts on the socket's
    opening handshake (the endpoint's ``authorization`` of type ``custom``). ``event_url`` hears what
    became of the connection (synchronously: it may answer with an NCCO, e.g. an apology)."""
    endpoint: dict[str, Any] = {"type": "websocket", "uri": media_url, "content-type": CONTENT_TYPE,
                                "headers": headers}
    if authorization is not None:
        endpoint["authorization"] = {"type": "custom", "value": authorization}
    connect: dict[str, Any] = {"action": "connect", "eventType": "synchronous", "eventUrl": [event_url],
                               "endpoint": [endpoint]}
    if caller_id:
        connect["from"] = caller_id
    return [connect]


def talk_ncco(text: str) -> list[dict[str, Any]]:
    """An NCCO that says a sentence (the call then ends: nothing follows)."""
    return [{"action": "talk", "text": text}]


def e164(number: str | None) -> str | None:
    """A number as Vonage sends it (``447700900123``) in E.164 with its ``+``, for routing; other
    addresses (a SIP URI, an app user) as they are."""
    if number and number.isascii() and number.isdigit():
        return "+" + number
    return number


def vonage_number(number: str) -> str:
    """A phone number as Vonage writes it: E.164 digits without the ``+``."""
    return number[1:] if number.startswith("+") else number


def transfer_body(number: str, caller_id: str | None) -> dict[str, Any]:
    """The Voice API ``PUT /v1/calls/{uuid}`` body that hands the call over to ``number``."""
    connect: dict[str, Any] = {"action": "connect", "endpoint": [{"type": "phone", "number": vonage_number(number)}]}
    if caller_id:
        connect["from"] = vonage_number(caller_id)
    return {"action": "transfer", "destination": {"type": "ncco", "ncco": [connect]}}


HANGUP_BODY = {"action": "hangup"}

"""Plivo Audio Streaming: a sans-I/O codec for the media socket, and the Plivo XML answers.

Inbound messages are JSON text: ``start`` (once: ``start.callId``, ``start.streamId``,
``start.accountId``, ``start.tracks``, ``start.mediaFormat`` and the ``extra_headers`` string),
``media`` (``media.payload``: base64 µ-law at 8 kHz, ``media.track``), ``dtmf`` (``dtmf.digit``),
``playedStream`` (a ``checkpoint`` has played: its ``name``), ``clearedAudio`` (a ``clearAudio``
was carried out). ``sequenceNumber`` and ``media.chunk`` are numbers (a string is tolerated);
unknown fields and unknown events are tolerated. Outbound: ``playAudio`` (the format declared in
every message), ``checkpoint`` and ``clearAudio``, the last two naming the stream.

What the documentation leaves open, and what is assumed here:

* Plivo emits ``playedStream`` "only if the preceding events were played successfully": the
  checkpoints pending at a ``clearAudio`` are never acknowledged. The call treats every mark
  pending at a flush as stale (its truncation is taken at the flush), so it never waits for them;
  a ``playedStream`` for one of them that still comes was sent before Plivo carried out the
  ``clearAudio``: that audio played, and the call counts it as heard (its record's transcript).
* The protocol reference lists no inbound ``stop``; some of Plivo's examples show one. It is taken
  as the caller hanging up when it comes; the socket closing means the same either way.
* Plivo writes phone numbers in E.164 without the plus (``14155550100``), in its webhooks and its
  XML alike: the gateway adds the plus to route a called number (``+14155550100``, as config.yaml
  writes numbers) and drops it in the XML it answers with.
* Only ``audio/x-mulaw`` at 8000 Hz is taken: it passes through to Voice Live's ``g711_ulaw``
  untouched. A stream started in another format is refused at its ``start``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from gateway.audio import is_base64
from gateway.call import Call, ClearPlayback, PhoneAction, PlayAudio, SendMark
from gateway.carriers.common import keypad_key, load_json, short

CONTENT_TYPE = "audio/x-mulaw;rate=8000"  # what the <Stream> asks for
ENCODING, SAMPLE_RATE = "audio/x-mulaw", 8000


_DIGITS = re.compile(r"[0-9]{8,15}")
_PUNCTUATION = re.compile(r"[\s\-.()]")


def e164(number: str) -> str:
    """A number as Plivo writes it (``14155550100``) as config.yaml writes it (``+14155550100``);
    anything that is not such a number (a SIP URI, an empty string) is returned unchanged."""
    digits = _PUNCTUATION.sub("", number).removeprefix("+")
    return "+" + digits if _DIGITS.fullmatch(digits) else number


def plivo_number(number: str) -> str:
    """An E.164 number as Plivo's XML writes it: without the plus."""
    return number[1:] if number.startswith("+") else number


class PlivoProtocolError(ValueError):
    """A message that cannot be used; the text says why (safe to log, never contains audio)."""

    def __init__(self, reason: str, event: str | None = None) -> None:
        super().__init__(reason)
        self.event = event  # the message's event name, when it had one


@dataclass(slots=True, frozen=True)
class Start:
    stream_id: str
    call_id: str
    account_id: str
    tracks: tuple[str, ...]
    extra_headers: str  # the <Stream extraHeaders> as Plivo passes them on (kept, not used)


@dataclass(slots=True, frozen=True)
class Media:
    payload: str
    track: str


@dataclass(slots=True, frozen=True)
class Dtmf:
    digit: str


@dataclass(slots=True, frozen=True)
class PlayedStream:
    name: str


@dataclass(slots=True, frozen=True)
class ClearedAudio:
    pass


@dataclass(slots=True, frozen=True)
class Stop:
    pass


@dataclass(slots=True, frozen=True)
class OtherEvent:
    event: str  # an event this gateway does not use; tolerated


PlivoEvent = Start | Media | Dtmf | PlayedStream | ClearedAudio | Stop | OtherEvent
CLEARED, STOP = ClearedAudio(), Stop()


def _rate(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return None


def parse_message(text: str | bytes) -> PlivoEvent:
    """Parse one inbound media-socket message (:class:`PlivoProtocolError` when it is not usable)."""
    msg, problem = load_json(text)
    if problem is not None:
        raise PlivoProtocolError(problem)
    if type(msg) is not dict:
        raise PlivoProtocolError("not a JSON object")
    event = msg.get("event")
    if event == "media":
        media = msg.get("media")
        if type(media) is not dict:
            raise PlivoProtocolError("media message without a media object")
        payload = media.get("payload")
        if not payload or not is_base64(payload):
            raise PlivoProtocolError("media payload is missing or not valid base64")
        track = media.get("track")
        return Media(payload, track if isinstance(track, str) and track else "inbound")
    if event == "playedStream":
        name = msg.get("name")
        if not isinstance(name, str):
            raise PlivoProtocolError("playedStream message without a name")
        return PlayedStream(name)
    if event == "clearedAudio":
        return CLEARED
    if event == "dtmf":
        dtmf = msg.get("dtmf")
        digit = dtmf.get("digit") if type(dtmf) is dict else None
        if not isinstance(digit, str) or not digit:
            raise PlivoProtocolError("dtmf message without dtmf.digit")
        key = keypad_key(digit)
        if key is None:
            raise PlivoProtocolError(f"dtmf message with {short(digit)!r}, which is not a keypad key")
        return Dtmf(key)
    if event == "start":
        try:
            return _parse_start(msg)
        except PlivoProtocolError as exc:
            raise PlivoProtocolError(str(exc), "start") from None
    if event == "stop":
        return STOP
    if not isinstance(event, str):
        raise PlivoProtocolError("message without an event name")
    return OtherEvent(event)


def _parse_start(msg: dict) -> Start:
    start = msg.get("start")
    if type(start) is not dict:
        raise PlivoProtocolError("start message without a start object")
    stream_id = start.get("streamId") or msg.get("streamId")
    call_id = start.get("callId")
    if not isinstance(stream_id, str) or not stream_id:
        raise PlivoProtocolError("start message without start.streamId")
    if not isinstance(call_id, str) or not call_id:
        raise PlivoProtocolError("start message without start.callId")
    fmt = start.get("mediaFormat")
    if type(fmt) is dict:
        encoding, rate = fmt.get("encoding"), _rate(fmt.get("sampleRate", SAMPLE_RATE))
        if encoding != ENCODING or rate != SAMPLE_RATE:
            raise PlivoProtocolError(f"unsupported media format {short(encoding)} at {short(rate)} Hz; expected "
                                     f"{ENCODING} at {SAMPLE_RATE} Hz (contentType=\"{CONTENT_TYPE}\")")
    tracks = start.get("tracks")
    extra = msg.get("extra_headers")
    return Start(
        stream_id=stream_id,
        call_id=call_id,
        account_id=str(start.get("accountId") or ""),
        tracks=tuple(str(t) for t in tracks) if isinstance(tracks, list) else ("inbound",),
        extra_headers=extra if isinstance(extra, str) else "",
    )


class PlivoEncoder:
    """Builds outbound messages for one stream. Audio is spliced in as text, never re-encoded."""

    __slots__ = ("_checkpoint_head", "_clear", "stream_id")

    _PLAY_HEAD = '{"event":"playAudio","media":{"contentType":"audio/x-mulaw","sampleRate":8000,"payload":"'

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        sid = json.dumps(stream_id)
        self._checkpoint_head = '{"event":"checkpoint","streamId":' + sid + ',"name":'
        self._clear = '{"event":"clearAudio","streamId":' + sid + "}"

    def play(self, payload: str) -> str:
        """``payload`` must be base64 (checked where it entered the gateway)."""
        return self._PLAY_HEAD + payload + '"}}'

    def checkpoint(self, name: str) -> str:
        return self._checkpoint_head + json.dumps(name) + "}"

    def clear(self) -> str:
        return self._clear


# --- Plivo XML -------------------------------------------------------------------------------------

_XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>'


def stream_xml(media_url: str, after_url: str | None = None) -> str:
    """Plivo XML that connects the call to a bidirectional µ-law stream on ``media_url``.

    ``keepCallAlive`` makes the stream the only element run while it is up; once it closes, Plivo
    goes on with the next element: a ``<Redirect>`` to ``after_url``, which says what next (a
    hang-up, or an apology first when the gateway failed the call).
    """
    stream = (f'<Stream bidirectional="true" keepCallAlive="true" audioTrack="inbound" '
              f'contentType="{CONTENT_TYPE}">{escape(media_url)}</Stream>')
    after = f'<Redirect method="POST">{escape(after_url)}</Redirect>' if after_url else ""
    return f"{_XML_HEAD}<Response>{stream}{after}</Response>"


def hangup_xml() -> str:
    return f"{_XML_HEAD}<Response><Hangup/></Response>"


def speak_xml(text: str) -> str:
    """Plivo XML that speaks a sentence and hangs up (used when a call cannot be taken)."""
    return f"{_XML_HEAD}<Response><Speak>{escape(text)}</Speak><Hangup/></Response>"


def dial_xml(number: str, caller_id: str | None = None) -> str:
    """Plivo XML that hands the call over to ``number`` (a transfer)."""
    attrs = f" callerId={quoteattr(plivo_number(caller_id))}" if caller_id else ""
    return f"{_XML_HEAD}<Response><Dial{attrs}><Number>{escape(plivo_number(number))}</Number></Dial></Response>"


class PlivoLeg:
    """The phone leg of one call on Plivo: wire text in and out of a :class:`Call`."""

    carrier = "plivo"
    binary = False  # JSON text frames only
    __slots__ = ("encoder", "start")

    def __init__(self, start: Start) -> None:
        self.start = start
        self.encoder = PlivoEncoder(start.stream_id)

    def feed(self, call: Call, text: str, now: float) -> tuple[str, str] | None:
        """Dispatch one inbound text message. Returns (problem, detail) when it was not usable."""
        try:
            event = parse_message(text)
        except PlivoProtocolError as exc:
            return "malformed", str(exc)
        kind = type(event)
        if kind is Media:
            if event.track == "inbound":  # type: ignore[union-attr]
                call.caller_audio(event.payload, now)  # type: ignore[union-attr]
        elif kind is PlayedStream:
            call.playback_mark(event.name, now)  # type: ignore[union-attr]
        elif kind is Dtmf:
            call.dtmf(event.digit, now)  # type: ignore[union-attr]
        elif kind is Stop:
            call.phone_ended("caller_hung_up", now)
        elif kind is Start:
            return "duplicate-start", "a second start message on the same stream"
        elif kind is OtherEvent:
            return "unknown-event", f"event {short(repr(event.event))} is not used"  # type: ignore[union-attr]
        return None  # clearedAudio: the flush was carried out; nothing more to do

    def encode(self, action: PhoneAction) -> str | None:
        """Wire text for a phone action (None: nothing to send; a hang-up closes the socket)."""
        kind = type(action)
        if kind is PlayAudio:
            return self.encoder.play(action.payload)  # type: ignore[union-attr]
        if kind is SendMark:
            return self.encoder.checkpoint(action.name)  # type: ignore[union-attr]
        if kind is ClearPlayback:
            return self.encoder.clear()
        return None

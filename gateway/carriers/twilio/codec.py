"""Twilio Media Streams: a sans-I/O codec for the media socket, and the voice webhook's TwiML.

Inbound messages are JSON text: connected, start, media, dtmf, mark, stop. Numbers may arrive as
JSON strings, unknown fields and unknown events are tolerated. Outbound: media, mark, clear, each
carrying the stream's ``streamSid``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from gateway.audio import is_base64
from gateway.call import Call, ClearPlayback, PhoneAction, PlayAudio, SendMark
from gateway.carriers.common import keypad_key, load_json, short


class TwilioProtocolError(ValueError):
    """A message that cannot be used; the text says why (safe to log, never contains audio)."""

    def __init__(self, reason: str, event: str | None = None) -> None:
        super().__init__(reason)
        self.event = event  # the message's event name, when it had one


@dataclass(slots=True, frozen=True)
class Connected:
    pass


@dataclass(slots=True, frozen=True)
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str
    params: dict[str, str]
    tracks: tuple[str, ...]


@dataclass(slots=True, frozen=True)
class Media:
    payload: str
    track: str


@dataclass(slots=True, frozen=True)
class Dtmf:
    digit: str


@dataclass(slots=True, frozen=True)
class MarkAck:
    name: str


@dataclass(slots=True, frozen=True)
class Stop:
    pass


@dataclass(slots=True, frozen=True)
class OtherEvent:
    event: str  # an event this gateway does not use; tolerated


TwilioEvent = Connected | Start | Media | Dtmf | MarkAck | Stop | OtherEvent
CONNECTED, STOP = Connected(), Stop()

_SUPPORTED_FORMAT = ("audio/x-mulaw", 8000, 1)


def _number(value: object, name: str) -> int:
    """Twilio sends some numbers as JSON strings."""
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        raise TwilioProtocolError(f"start.mediaFormat.{name} is not a number: {short(repr(value))}") from None


# An inbound media message exactly as Twilio serializes it (compact JSON, these fields in this order,
# streamSid before or after media): read without parsing. Anything else takes parse_message.
_TWILIO_MEDIA = re.compile(
    r'\{"event":"media",(?:"sequenceNumber":"\d+",)?(?:"streamSid":"[A-Za-z0-9_-]*",)?'
    r'"media":\{"track":"inbound","chunk":"\d+","timestamp":"\d+","payload":"([A-Za-z0-9+/]+={0,2})"\}'
    r'(?:,"streamSid":"[A-Za-z0-9_-]*")?\}'
).fullmatch


def fast_media_payload(text: str) -> str | None:
    """The payload of an inbound-track media message in Twilio's exact shape, found without
    parsing the JSON; None for anything else, which then takes :func:`parse_message`."""
    match = _TWILIO_MEDIA(text)
    if match is None:
        return None
    payload = match.group(1)
    return payload if not len(payload) % 4 else None


def parse_message(text: str | bytes) -> TwilioEvent:
    """Parse one inbound media-socket message."""
    msg, problem = load_json(text)
    if problem is not None:
        raise TwilioProtocolError(problem)
    if type(msg) is not dict:
        raise TwilioProtocolError("not a JSON object")
    event = msg.get("event")
    if event == "media":
        media = msg.get("media")
        if type(media) is not dict:
            raise TwilioProtocolError("media message without a media object")
        payload = media.get("payload")
        if not payload or not is_base64(payload):
            raise TwilioProtocolError("media payload is missing or not valid base64")
        return Media(payload, media.get("track") or "inbound")
    if event == "mark":
        mark = msg.get("mark")
        name = mark.get("name") if type(mark) is dict else None
        if not isinstance(name, str):
            raise TwilioProtocolError("mark message without mark.name")
        return MarkAck(name)
    if event == "start":
        try:
            return _parse_start(msg)
        except TwilioProtocolError as exc:
            raise TwilioProtocolError(str(exc), "start") from None
    if event == "connected":
        return CONNECTED
    if event == "stop":
        return STOP
    if event == "dtmf":
        dtmf = msg.get("dtmf")
        digit = dtmf.get("digit") if type(dtmf) is dict else None
        if not isinstance(digit, str) or not digit:
            raise TwilioProtocolError("dtmf message without dtmf.digit")
        key = keypad_key(digit)
        if key is None:
            raise TwilioProtocolError(f"dtmf message with {short(digit)!r}, which is not a keypad key")
        return Dtmf(key)
    if not isinstance(event, str):
        raise TwilioProtocolError("message without an event name")
    return OtherEvent(event)


def _parse_start(msg: dict) -> Start:
    start = msg.get("start")
    if type(start) is not dict:
        raise TwilioProtocolError("start message without a start object")
    stream_sid = start.get("streamSid") or msg.get("streamSid")
    call_sid = start.get("callSid")
    if not isinstance(stream_sid, str) or not stream_sid:
        raise TwilioProtocolError("start message without streamSid")
    if not isinstance(call_sid, str) or not call_sid:
        raise TwilioProtocolError("start message without callSid")
    fmt = start.get("mediaFormat")
    if type(fmt) is dict:
        got = (fmt.get("encoding"), _number(fmt.get("sampleRate", 8000), "sampleRate"),
               _number(fmt.get("channels", 1), "channels"))
        if got != _SUPPORTED_FORMAT:
            raise TwilioProtocolError(
                f"unsupported media format {got[0]} {got[1]} Hz {got[2]} channel(s); "
                "expected audio/x-mulaw 8000 Hz mono"
            )
    raw_params = start.get("customParameters")
    params = {str(k): str(v) for k, v in raw_params.items()} if type(raw_params) is dict else {}
    tracks = start.get("tracks")
    return Start(
        stream_sid=stream_sid,
        call_sid=call_sid,
        account_sid=str(start.get("accountSid") or ""),
        params=params,
        tracks=tuple(str(t) for t in tracks) if isinstance(tracks, list) else ("inbound",),
    )


class TwilioEncoder:
    """Builds outbound messages for one stream. Audio is spliced in as text, never re-encoded."""

    __slots__ = ("_clear", "_mark_head", "_media_head", "stream_sid")

    def __init__(self, stream_sid: str) -> None:
        self.stream_sid = stream_sid
        sid = json.dumps(stream_sid)
        self._media_head = '{"event":"media","streamSid":' + sid + ',"media":{"payload":"'
        self._mark_head = '{"event":"mark","streamSid":' + sid + ',"mark":{"name":'
        self._clear = '{"event":"clear","streamSid":' + sid + "}"

    def media(self, payload: str) -> str:
        """``payload`` must be base64 (checked where it entered the gateway)."""
        return self._media_head + payload + '"}}'

    def mark(self, name: str) -> str:
        return self._mark_head + json.dumps(name) + "}}"

    def clear(self) -> str:
        return self._clear


def stream_url(public_url: str, path: str = "/twilio/media") -> str:
    """The WebSocket URL carriers reach: https://x → wss://x/..., http://x → ws://x/..."""
    base = public_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://"):]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://"):]
    return base + path


def connect_twiml(media_url: str, parameters: dict[str, str], action: str | None = None) -> str:
    """TwiML that connects the call to a bidirectional media stream.

    Twilio drops query strings from stream URLs, so everything the media socket needs travels
    in ``<Parameter>`` elements and comes back in the ``start`` message. When the stream closes,
    Twilio asks ``action`` what to do next.
    """
    params = "".join(
        f"<Parameter name={quoteattr(name)} value={quoteattr(value)}/>" for name, value in parameters.items()
    )
    connect = f"<Connect action={quoteattr(action)}>" if action else "<Connect>"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response>{connect}<Stream url={quoteattr(media_url)}>{params}</Stream></Connect></Response>"
    )


def hangup_twiml() -> str:
    return '<?xml version="1.0" encoding="UTF-8"?><Response><Hangup/></Response>'


def dial_twiml(number: str) -> str:
    """TwiML that hands the call over to ``number`` (a transfer)."""
    return f'<?xml version="1.0" encoding="UTF-8"?><Response><Dial>{escape(number)}</Dial></Response>'


def say_twiml(text: str) -> str:
    """TwiML that speaks a sentence and hangs up (used when a call cannot be taken)."""
    return f'<?xml version="1.0" encoding="UTF-8"?><Response><Say>{escape(text)}</Say><Hangup/></Response>'


class TwilioLeg:
    """The phone leg of one call on Twilio: wire text in and out of a :class:`Call`."""

    carrier = "twilio"
    binary = False  # JSON text frames only
    __slots__ = ("encoder", "start")

    def __init__(self, start: Start) -> None:
        self.start = start
        self.encoder = TwilioEncoder(start.stream_sid)

    def feed(self, call: Call, text: str, now: float) -> tuple[str, str] | None:
        """Dispatch one inbound text message. Returns (problem, detail) when it was not usable."""
        payload = fast_media_payload(text)
        if payload is not None:
            call.caller_audio(payload, now)
            return None
        try:
            event = parse_message(text)
        except TwilioProtocolError as exc:
            return "malformed", str(exc)
        kind = type(event)
        if kind is Media:
            if event.track == "inbound":  # type: ignore[union-attr]
                call.caller_audio(event.payload, now)  # type: ignore[union-attr]
        elif kind is MarkAck:
            call.playback_mark(event.name, now)  # type: ignore[union-attr]
        elif kind is Stop:
            call.phone_ended("caller_hung_up", now)
        elif kind is Dtmf:
            call.dtmf(event.digit, now)  # type: ignore[union-attr]
        elif kind is Start:
            return "duplicate-start", "a second start message on the same stream"
        elif kind is OtherEvent:
            return "unknown-event", f"event {short(repr(event.event))} is not used"  # type: ignore[union-attr]
        return None

    def encode(self, action: PhoneAction) -> str | None:
        """Wire text for a phone action (None: nothing to send; a hang-up closes the socket)."""
        kind = type(action)
        if kind is PlayAudio:
            return self.encoder.media(action.payload)  # type: ignore[union-attr]
        if kind is SendMark:
            return self.encoder.mark(action.name)  # type: ignore[union-attr]
        if kind is ClearPlayback:
            return self.encoder.clear()
        return None

"""Telnyx media streaming: a sans-I/O codec for the media socket, and the voice webhook's TeXML.

Telnyx's media socket speaks JSON text with snake_case keys, close to Twilio's Media Streams.
Inbound: ``connected``, ``start`` (``stream_id``; ``start.call_control_id``, ``user_id``, ``from``,
``to``, ``client_state``, ``custom_parameters``, ``media_format {encoding, sample_rate,
channels}``), ``media`` (``media.track``, ``chunk``, ``timestamp``, ``payload``: the base64 RTP
payload, no RTP header), ``dtmf`` (``dtmf.digit``), ``mark`` (``mark.name``, sent back once the
audio queued before it has played, at once when nothing is queued, and for every queued mark on a
``clear``), ``error`` (``payload {code, title, detail}``) and ``stop``. Numbers may arrive as JSON
strings; unknown fields and events are tolerated. Outbound, in the ``rtp`` bidirectional mode:
``{"event":"media","media":{"payload":...}}`` (20 ms to 30 s of audio in the stream's codec),
``{"event":"mark","mark":{"name":...}}`` and ``{"event":"clear"}``.

The gateway asks for PCMU at 8 kHz both ways (``<Stream codec="PCMU" bidirectionalMode="rtp"
bidirectionalCodec="PCMU" bidirectionalSamplingRate="8000">``), which is Voice Live's
``g711_ulaw``: the payloads pass through untouched. A stream that announces another format is
refused at its start.

Frame order: Telnyx says media frames may arrive out of order and that ``media.chunk``,
``media.timestamp`` and ``sequence_number`` put them back in order. The gateway never holds caller
audio back to wait for a missing frame (a jitter buffer here would add its depth to every turn and
stall on a lost frame); it forwards each frame as it comes and drops a frame whose ``chunk`` is not
after the last one forwarded (a duplicate, or one that arrived after its successors: played late it
would be out of place in the caller's speech, as a jitter buffer drops a late packet). Each such
drop is reported as a problem (``late-media``), logged once per call and then at debug level. A
gap (a frame that never came) is not filled. Frames without a ``chunk`` are forwarded unchecked.

Assumed where the docs are silent: outbound messages carry no ``stream_id`` (the socket is the
stream; the reference's client frames show none); the media socket's URL is opened with its query
string as given (TeXML's ``<Stream>`` documents no ``<Parameter>``, so the call's token travels
there; ``custom_parameters`` of a stream started through Call Control are read too); the
``error`` frame's ``payload`` holds ``code``, ``title`` and ``detail`` and does not end the stream
(Telnyx sends ``stop`` for that); a bot audio piece shorter than the 20 ms the reference gives as
the smallest chunk (the tail of a Voice Live delta) is played, not refused.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from urllib.parse import urlencode
from xml.sax.saxutils import escape, quoteattr

from gateway.audio import is_base64
from gateway.call import Call, ClearPlayback, PhoneAction, PlayAudio, SendMark
from gateway.carriers.common import keypad_key, load_json, short


class TelnyxProtocolError(ValueError):
    """A message that cannot be used; the text says why (safe to log, never contains audio)."""

    def __init__(self, reason: str, event: str | None = None) -> None:
        super().__init__(reason)
        self.event = event  # the message's event name, when it had one


@dataclass(slots=True, frozen=True)
class Connected:
    pass


@dataclass(slots=True, frozen=True)
class Start:
    stream_id: str
    call_control_id: str
    account_id: str = ""  # start.user_id: the account (a TeXML call's AccountSid)
    from_: str = ""
    to: str = ""
    client_state: str = ""
    params: dict[str, str] = field(default_factory=dict)  # start.custom_parameters


@dataclass(slots=True, frozen=True)
class Media:
    payload: str
    track: str
    chunk: int | None = None  # media.chunk, when it is a number


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
class StreamError:
    code: str
    title: str
    detail: str


@dataclass(slots=True, frozen=True)
class OtherEvent:
    event: str  # an event this gateway does not use; tolerated


TelnyxEvent = Connected | Start | Media | Dtmf | MarkAck | Stop | StreamError | OtherEvent
CONNECTED, STOP = Connected(), Stop()

SUPPORTED_FORMAT = ("PCMU", 8000, 1)


def _number(value: object, name: str) -> int:
    """Telnyx sends some numbers as JSON strings."""
    if isinstance(value, bool):
        raise TelnyxProtocolError(f"start.media_format.{name} is not a number: {short(repr(value))}")
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        raise TelnyxProtocolError(f"start.media_format.{name} is not a number: {short(repr(value))}") from None


def _chunk(value: object) -> int | None:
    """``media.chunk`` as a number (None when it is absent or not a small whole number)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and 0 < len(value) <= 18 and value.isascii() and value.isdigit():
        return int(value)
    return None


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


# An inbound media message exactly as the docs show it (compact JSON, these fields in this order,
# stream_id before or after media): read without parsing. Anything else takes parse_message.
_TELNYX_MEDIA = re.compile(
    r'\{"event":"media",(?:"sequence_number":"\d+",)?(?:"stream_id":"[A-Za-z0-9_-]*",)?'
    r'"media":\{"track":"inbound","chunk":"(\d{1,18})","timestamp":"\d+","payload":"([A-Za-z0-9+/]+={0,2})"\}'
    r'(?:,"stream_id":"[A-Za-z0-9_-]*")?\}'
).fullmatch


def fast_media(text: str) -> tuple[int, str] | None:
    """(chunk, payload) of an inbound-track media message in the documented compact shape, found
    without parsing the JSON; None for anything else, which then takes :func:`parse_message`."""
    match = _TELNYX_MEDIA(text)
    if match is None:
        return None
    payload = match.group(2)
    return (int(match.group(1)), payload) if not len(payload) % 4 else None


def parse_message(text: str | bytes) -> TelnyxEvent:
    """Parse one inbound media-socket message."""
    msg, problem = load_json(text)
    if problem is not None:
        raise TelnyxProtocolError(problem)
    if type(msg) is not dict:
        raise TelnyxProtocolError("not a JSON object")
    event = msg.get("event")
    if event == "media":
        media = msg.get("media")
        if type(media) is not dict:
            raise TelnyxProtocolError("media message without a media object")
        payload = media.get("payload")
        if not payload or not is_base64(payload):
            raise TelnyxProtocolError("media payload is missing or not valid base64")
        return Media(payload, _text(media.get("track")) or "inbound", _chunk(media.get("chunk")))
    if event == "mark":
        mark = msg.get("mark")
        name = mark.get("name") if type(mark) is dict else None
        if not isinstance(name, str):
            raise TelnyxProtocolError("mark message without mark.name")
        return MarkAck(name)
    if event == "start":
        try:
            return _parse_start(msg)
        except TelnyxProtocolError as exc:
            raise TelnyxProtocolError(str(exc), "start") from None
    if event == "connected":
        return CONNECTED
    if event == "stop":
        return STOP
    if event == "dtmf":
        dtmf = msg.get("dtmf")
        digit = dtmf.get("digit") if type(dtmf) is dict else None
        if not isinstance(digit, str) or not digit:
            raise TelnyxProtocolError("dtmf message without dtmf.digit")
        key = keypad_key(digit)
        if key is None:
            raise TelnyxProtocolError(f"dtmf message with {short(digit)!r}, which is not a keypad key")
        return Dtmf(key)
    if event == "error":
        payload = msg.get("payload")
        body = payload if type(payload) is dict else {}
        code = body.get("code")
        return StreamError(short(code if isinstance(code, (str, int)) and not isinstance(code, bool) else ""),
                           short(_text(body.get("title")), 80), short(_text(body.get("detail")), 200))
    if not isinstance(event, str):
        raise TelnyxProtocolError("message without an event name")
    return OtherEvent(event)


def _parse_start(msg: dict) -> Start:
    start = msg.get("start")
    if type(start) is not dict:
        raise TelnyxProtocolError("start message without a start object")
    stream_id = msg.get("stream_id") or start.get("stream_id")
    call_control_id = start.get("call_control_id")
    if not isinstance(stream_id, str) or not stream_id:
        raise TelnyxProtocolError("start message without stream_id")
    if not isinstance(call_control_id, str) or not call_control_id:
        raise TelnyxProtocolError("start message without start.call_control_id")
    fmt = start.get("media_format")
    if type(fmt) is dict:
        encoding = fmt.get("encoding", "PCMU")
        got = (encoding.upper() if isinstance(encoding, str) else encoding,
               _number(fmt.get("sample_rate", 8000), "sample_rate"), _number(fmt.get("channels", 1), "channels"))
        if got != SUPPORTED_FORMAT:
            raise TelnyxProtocolError(
                f"unsupported media format {short(got[0])} {got[1]} Hz {got[2]} channel(s); expected PCMU 8000 Hz mono"
            )
    raw_params = start.get("custom_parameters")
    params = {str(k): str(v) for k, v in raw_params.items()} if type(raw_params) is dict else {}
    return Start(
        stream_id=stream_id,
        call_control_id=call_control_id,
        account_id=_text(start.get("user_id")),
        from_=_text(start.get("from")),
        to=_text(start.get("to")),
        client_state=_text(start.get("client_state")),
        params=params,
    )


class TelnyxEncoder:
    """Builds outbound messages. Audio is spliced in as text, never re-encoded."""

    __slots__ = ()

    MEDIA_HEAD = '{"event":"media","media":{"payload":"'
    MARK_HEAD = '{"event":"mark","mark":{"name":'
    CLEAR = '{"event":"clear"}'

    def media(self, payload: str) -> str:
        """``payload`` must be base64 (checked where it entered the gateway)."""
        return self.MEDIA_HEAD + payload + '"}}'

    def mark(self, name: str) -> str:
        return self.MARK_HEAD + json.dumps(name) + "}}"

    def clear(self) -> str:
        return self.CLEAR


# --- TeXML -------------------------------------------------------------------------------------

XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>'


def media_url(base_ws_url: str, parameters: dict[str, str]) -> str:
    """The media socket's URL with the call's parameters in its query string (TeXML's ``<Stream>``
    documents no ``<Parameter>``; the URL is opened as given)."""
    return base_ws_url + ("?" + urlencode(parameters) if parameters else "")


def connect_texml(stream_url: str, after_url: str) -> str:
    """TeXML that connects the call to a bidirectional PCMU 8 kHz media stream of the caller's
    audio, then, once the stream has ended, asks ``after_url`` what next (``<Redirect>``)."""
    stream = (f"<Stream url={quoteattr(stream_url)} track=\"inbound_track\" codec=\"PCMU\" "
              'bidirectionalMode="rtp" bidirectionalCodec="PCMU" bidirectionalSamplingRate="8000"/>')
    return (f"{XML_HEAD}<Response><Connect>{stream}</Connect>"
            f'<Redirect method="POST">{escape(after_url)}</Redirect></Response>')


def hangup_texml() -> str:
    return f"{XML_HEAD}<Response><Hangup/></Response>"


def dial_texml(number: str) -> str:
    """TeXML that hands the call over to ``number`` (a transfer)."""
    return f"{XML_HEAD}<Response><Dial>{escape(number)}</Dial></Response>"


def say_texml(text: str) -> str:
    """TeXML that speaks a sentence and hangs up (used when a call cannot be taken)."""
    return f"{XML_HEAD}<Response><Say>{escape(text)}</Say><Hangup/></Response>"


class TelnyxLeg:
    """The phone leg of one call on Telnyx: wire text in and out of a :class:`Call`."""

    carrier = "telnyx"
    binary = False  # JSON text frames only
    __slots__ = ("encoder", "last_chunk", "start")

    def __init__(self, start: Start) -> None:
        self.start = start
        self.encoder = TelnyxEncoder()
        self.last_chunk = 0  # the chunk of the last media frame forwarded (Telnyx counts from 1)

    def _in_order(self, chunk: int | None) -> tuple[str, str] | None:
        if chunk is None:
            return None
        if chunk <= self.last_chunk:
            return "late-media", f"media chunk {chunk} after chunk {self.last_chunk}: dropped (out of order)"
        self.last_chunk = chunk
        return None

    def feed(self, call: Call, text: str, now: float) -> tuple[str, str] | None:
        """Dispatch one inbound text message. Returns (problem, detail) when it was not usable."""
        fast = fast_media(text)
        if fast is not None:
            late = self._in_order(fast[0])
            if late is None:
                call.caller_audio(fast[1], now)
            return late
        try:
            event = parse_message(text)
        except TelnyxProtocolError as exc:
            return "malformed", str(exc)
        kind = type(event)
        if kind is Media:
            if event.track != "inbound":  # type: ignore[union-attr]
                return "other-track", f"media of track {short(repr(event.track))} is not used"  # type: ignore[union-attr]
            late = self._in_order(event.chunk)  # type: ignore[union-attr]
            if late is None:
                call.caller_audio(event.payload, now)  # type: ignore[union-attr]
            return late
        if kind is MarkAck:
            call.playback_mark(event.name, now)  # type: ignore[union-attr]
        elif kind is Stop:
            call.phone_ended("caller_hung_up", now)
        elif kind is Dtmf:
            call.dtmf(event.digit, now)  # type: ignore[union-attr]
        elif kind is StreamError:
            return "stream-error", (f"Telnyx reports error {event.code or '?'}: "  # type: ignore[union-attr]
                                    f"{event.title} {event.detail}".strip())  # type: ignore[union-attr]
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

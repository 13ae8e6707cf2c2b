"""Genesys Cloud AudioConnector: a sans-I/O codec for one AudioHook session (protocol version 2).

Genesys Cloud (the client) opens the WebSocket and drives the session with JSON text messages, each
``{"version": "2", "type", "seq", "serverseq", "id", "position", "parameters"}``; audio travels in
binary frames. The gateway (the server) answers with ``{"version": "2", "type", "seq", "clientseq",
"id", "parameters"}``. ``seq`` counts each side's own messages from 1; ``clientseq`` echoes the last
``seq`` the gateway took from Genesys, ``serverseq`` the last the client took from the gateway; ``id``
is the session id throughout.

Client messages read here: ``open`` (the open transaction: organizationId, conversationId,
participant {ani, dnis, ...}, media offers, language, customConfig, inputVariables), ``ping``,
``paused`` / ``resumed`` (a pause Genesys started: the caller's audio stops; the server answers
nothing), ``update`` (a language change: taken, not answered), ``dtmf`` (``parameters.digit``),
``playback_started`` / ``playback_completed`` (Genesys tells when the bot audio it buffers starts
and stops playing; too coarse to place a truncation, so only tolerated), ``discarded``, ``error``
(logged) and ``close`` (the close transaction). Server messages: ``opened`` (the chosen media),
``pong``, ``closed``, ``event`` with the ``barge_in`` entity (Genesys drops the bot audio it has
queued), and ``disconnect`` (reason ``completed`` with ``outputVariables`` when the bot ends the call,
``error`` with ``info`` when the gateway fails it).

Media: the gateway takes an offer of PCMU (G.711 µ-law) at 8000 Hz with the ``external`` channel, mono
(``["external"]``) preferred; a stereo offer (``["external", "internal"]``) is taken when there is no
mono one, and then only the external channel (the even bytes of each interleaved frame: µ-law is one
byte per sample, so the channel is split without decoding) reaches Voice Live. Without such an offer
the session is refused with a ``disconnect`` (reason ``error``) that says why. Caller audio passes to
Voice Live ``g711_ulaw`` byte for byte; the bot's ``g711_ulaw`` goes back as binary frames, never
transcoded. Genesys rate-limits bursts (its peers send frames of 1600 bytes to stay clear of
HTTP 429-style throttling), and it acknowledges no particular audio, so the call paces the bot's
audio on its own playout clock in pieces of at most 200 ms; each piece goes out as one binary frame of
at most :data:`FRAME_BYTES` (1600 bytes, 200 ms), and nothing is held back in the codec, so the
truncation point on barge-in is the playout clock's.

Assumed where the protocol leaves it open: a message whose ``seq`` is not one more than the last is
reported; one that goes backwards (a repeat) is dropped, one that skips ahead is taken. Messages of
another session ``id`` are dropped. Unknown message types are reported and ignored.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from gateway.bridge import FAILURE_ENDS
from gateway.call import Call, ClearPlayback, Hangup, PhoneAction, PlayAudio
from gateway.carriers.common import keypad_key, load_json, short

PROTOCOL_VERSION = "2"
GENESYS_PIECE_MS = 200  # the call releases bot audio in pieces of at most this
FRAME_BYTES = 1600  # µ-law at 8 kHz: 200 ms, the largest binary frame sent to Genesys
MAX_TEXT = 65535  # Genesys's limit on a text message
# Ends where the gateway failed the caller: the disconnect says "error" (Architect's failure path)
FAILED_ENDS = frozenset((*FAILURE_ENDS, "unsupported_audio_format"))
# The outputVariables of a disconnect the bot asks for (the Architect flow maps these names)
OUTPUT_ACTION, OUTPUT_TRANSFER_TO, OUTPUT_END_REASON = "action", "transferTo", "endReason"


class GenesysProtocolError(ValueError):
    """A message that cannot be used; the text says why (safe to log, never contains audio)."""


@dataclass(slots=True, frozen=True)
class Message:
    """One client control message."""

    type: str
    seq: int
    serverseq: int
    session_id: str
    parameters: dict[str, Any]


@dataclass(slots=True, frozen=True)
class MediaOffer:
    format: str
    rate: int
    channels: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {"type": "audio", "format": self.format, "channels": list(self.channels), "rate": self.rate}


@dataclass(slots=True, frozen=True)
class Open:
    """The ``open`` message's parameters, as far as the gateway uses them."""

    session_id: str
    organization_id: str
    conversation_id: str
    ani: str | None
    dnis: str | None
    media: tuple[MediaOffer, ...]
    language: str | None = None
    input_variables: dict[str, str] = field(default_factory=dict)


def _integer(value: Any, name: str) -> int:
    if type(value) is not int or value < 0:
        raise GenesysProtocolError(f"{name} is not a non-negative integer")
    return value


def parse_message(text: str | bytes) -> Message:
    """Parse one text message from Genesys."""
    if len(text) > MAX_TEXT:
        raise GenesysProtocolError(f"text message of {len(text)} characters (the protocol allows {MAX_TEXT})")
    msg, problem = load_json(text)
    if problem is not None:
        raise GenesysProtocolError(problem)
    if type(msg) is not dict:
        raise GenesysProtocolError("not a JSON object")
    kind = msg.get("type")
    if not isinstance(kind, str) or not kind:
        raise GenesysProtocolError("message without a type")
    if msg.get("version") != PROTOCOL_VERSION:
        raise GenesysProtocolError(f"{short(kind)}: version {short(repr(msg.get('version')))}, expected \"2\"")
    seq = _integer(msg.get("seq"), f"{short(kind)}.seq")
    serverseq = _integer(msg.get("serverseq", 0), f"{short(kind)}.serverseq")
    session = msg.get("id")
    if not isinstance(session, str) or not session:
        raise GenesysProtocolError(f"{short(kind)} without a session id")
    params = msg.get("parameters")
    if params is None:
        params = {}
    if type(params) is not dict:
        raise GenesysProtocolError(f"{short(kind)}.parameters is not an object")
    return Message(kind, seq, serverseq, session, params)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_open(message: Message) -> Open:
    """The parameters of an ``open`` message (GenesysProtocolError when they are unusable)."""
    params = message.parameters
    conversation = _text(params.get("conversationId"))
    if conversation is None:
        raise GenesysProtocolError("open without parameters.conversationId")
    participant = params.get("participant")
    participant = participant if type(participant) is dict else {}
    offers = params.get("media")
    if not isinstance(offers, list):
        raise GenesysProtocolError("open without a parameters.media list")
    media = []
    for offer in offers:
        if type(offer) is not dict or offer.get("type") != "audio":
            continue
        channels = offer.get("channels")
        rate = offer.get("rate")
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels) or type(rate) is not int:
            continue
        media.append(MediaOffer(str(offer.get("format")), rate, tuple(channels)))
    raw_vars = params.get("inputVariables")
    variables = {str(k): str(v) for k, v in raw_vars.items()} if type(raw_vars) is dict else {}
    return Open(session_id=message.session_id, organization_id=str(params.get("organizationId") or ""),
                conversation_id=conversation, ani=_text(participant.get("ani")), dnis=_text(participant.get("dnis")),
                media=tuple(media), language=_text(params.get("language")), input_variables=variables)


def choose_media(offers: tuple[MediaOffer, ...]) -> MediaOffer | None:
    """The offer the gateway takes: PCMU at 8000 Hz with the external channel, mono first."""
    usable = [o for o in offers if o.format.upper() == "PCMU" and o.rate == 8000 and o.channels
              and o.channels[0] == "external" and len(o.channels) <= 2 and len(set(o.channels)) == len(o.channels)]
    mono = [o for o in usable if len(o.channels) == 1]
    chosen = mono or usable
    return chosen[0] if chosen else None


NO_MEDIA = "no media offer the gateway can take: it needs PCMU at 8000 Hz with the external channel"


def called_number(opened: Open, route_variable: str = "dnis") -> str | None:
    """The number the call is routed by: an input variable of that name when the flow sets one, else
    the participant's DNIS (a ``tel:`` prefix dropped)."""
    number = opened.input_variables.get(route_variable) or opened.dnis
    if number and number.lower().startswith("tel:"):
        number = number[4:]
    return number or None


class GenesysLeg:
    """The phone leg of one AudioHook session: wire messages in and out of a :class:`Call` (paced).

    Replies the protocol asks of the server (``opened``, ``pong``, ``closed``) wait in ``outbox`` and
    go out before the call's own actions; every server message takes the next ``seq``."""

    carrier = "genesys"
    binary = True
    speaks_after_end = True  # the close transaction that follows the gateway's disconnect

    def __init__(self) -> None:
        self.outbox: list[str | bytes] = []
        self.session_id = ""
        self.seq = 0  # the last seq the gateway sent
        self.clientseq = 0  # the last seq taken from Genesys
        self.state = "new"  # new, open, paused, refused, disconnecting, closed
        self.media: MediaOffer | None = None
        self.opened: Open | None = None
        self.stereo = False

    # --- input ----------------------------------------------------------------------------

    def feed(self, call: Call, data: str | bytes, now: float) -> tuple[str, str] | None:
        if call.ended:  # the session is closing: only its close transaction (and pings) are answered
            reply, _ = self.after_end(data)
            if reply is not None:
                self.outbox.append(reply)
            return None
        if type(data) is bytes:
            return self._audio(call, data, now)
        try:
            message = parse_message(data)
        except GenesysProtocolError as exc:
            return "malformed", str(exc)
        problem = self._sequence(message)
        if problem is not None and problem[0] == "stale":
            return problem
        other = self._dispatch(call, message, now)
        return other or problem

    def _sequence(self, message: Message) -> tuple[str, str] | None:
        if self.session_id and message.session_id != self.session_id:
            return "stale", f"{short(message.type)} for session {short(message.session_id)}, not this session"
        expected = self.clientseq + 1
        if message.seq < expected:
            return "stale", f"{short(message.type)} with seq {message.seq} after {self.clientseq}: dropped"
        self.clientseq = message.seq
        if message.seq > expected:
            return "sequence", f"{short(message.type)} with seq {message.seq}, expected {expected}"
        if message.serverseq > self.seq:
            return "sequence", f"{short(message.type)} with serverseq {message.serverseq}; only {self.seq} sent"
        return None

    def _dispatch(self, call: Call, message: Message, now: float) -> tuple[str, str] | None:
        kind = message.type
        if kind == "open":
            return self._open(call, message, now)
        if kind == "ping":
            self._reply("pong", {})
            return None
        if kind == "close":
            self._reply("closed", {})
            reason = message.parameters.get("reason")
            self.state = "closed"
            call.phone_ended("caller_hung_up", now)
            if reason not in (None, "end", "disconnect"):
                return "close", f"Genesys closed the session with reason {short(repr(reason))}"
            return None
        if self.state == "new":
            return "before-open", f"{short(kind)} before the open transaction"
        if kind == "dtmf":
            digit = keypad_key(message.parameters.get("digit"))
            if digit is None:
                return "bad-dtmf", f"dtmf with {short(repr(message.parameters.get('digit')))}, not a keypad key"
            call.dtmf(digit, now)
            return None
        if kind in ("paused", "pause"):
            if self.state == "open":
                self.state = "paused"
            return None
        if kind in ("resumed", "resume"):
            if self.state == "paused":
                self.state = "open"
            return None
        if kind in ("update", "playback_started", "playback_completed", "discarded"):
            return None
        if kind == "error":
            code, text = message.parameters.get("code"), message.parameters.get("message")
            return "genesys-error", f"Genesys reported error {short(repr(code))}: {short(repr(text), 120)}"
        return "unknown-type", f"message type {short(repr(kind))} is not used"

    def _open(self, call: Call, message: Message, now: float) -> tuple[str, str] | None:
        if self.state != "new":
            return "open-again", "a second open in one session: ignored"
        self.session_id = message.session_id
        try:
            opened = parse_open(message)
        except GenesysProtocolError as exc:
            self._refuse(str(exc))
            call.phone_ended("unsupported_audio_format", now)
            return "bad-open", str(exc)
        self.opened = opened
        media = choose_media(opened.media)
        if media is None:
            offered = ", ".join(f"{o.format} {o.rate} Hz {'/'.join(o.channels)}" for o in opened.media) or "none"
            self._refuse(NO_MEDIA)
            call.phone_ended("unsupported_audio_format", now)
            return "unsupported-format", f"offered: {short(offered, 160)}; {NO_MEDIA}"
        self.media, self.stereo, self.state = media, len(media.channels) == 2, "open"
        self._reply("opened", {"media": [media.as_json()], "startPaused": False})
        return None

    def _refuse(self, info: str) -> None:
        self.state = "refused"
        self._reply("disconnect", {"reason": "error", "info": info})

    def _audio(self, call: Call, data: bytes, now: float) -> tuple[str, str] | None:
        if self.state != "open":
            return "audio-not-open", f"{len(data)} bytes of audio while the session is {self.state}: dropped"
        if not data:
            return "empty-audio", "an empty binary frame"
        if self.stereo:
            if len(data) % 2:
                return "bad-audio", f"a stereo frame of {len(data)} bytes (not whole sample pairs): dropped"
            data = data[0::2]  # the external channel: the first of each interleaved pair of µ-law bytes
        call.caller_audio(base64.b64encode(data).decode("ascii"), now)
        return None

    # --- output ---------------------------------------------------------------------------

    def message(self, kind: str, parameters: dict[str, Any]) -> str:
        """The next server message (it takes the next seq)."""
        self.seq += 1
        return json.dumps({"version": PROTOCOL_VERSION, "type": kind, "seq": self.seq, "clientseq": self.clientseq,
                           "id": self.session_id, "parameters": parameters}, separators=(",", ":"))

    def _reply(self, kind: str, parameters: dict[str, Any]) -> None:
        self.outbox.append(self.message(kind, parameters))

    def encode(self, action: PhoneAction) -> str | bytes | list[str | bytes] | None:
        kind = type(action)
        if self.state in ("new", "refused", "closed", "disconnecting"):
            return None
        if kind is PlayAudio:
            audio = base64.b64decode(action.payload)  # type: ignore[union-attr]
            if len(audio) <= FRAME_BYTES:
                return audio
            return [audio[i:i + FRAME_BYTES] for i in range(0, len(audio), FRAME_BYTES)]
        if kind is ClearPlayback:
            return self.message("event", {"entities": [{"type": "barge_in", "data": {}}]})
        if kind is Hangup:
            return self.disconnect(action)  # type: ignore[arg-type]
        return None

    def disconnect(self, hangup: Hangup) -> str:
        """The ``disconnect`` that ends the session when the gateway ends the call."""
        self.state = "disconnecting"
        if hangup.reason in FAILED_ENDS:
            return self.message("disconnect", {"reason": "error", "info": f"the voice bot failed ({hangup.reason})"})
        variables = {OUTPUT_ACTION: "transfer" if hangup.transfer_to else "hangup", OUTPUT_END_REASON: hangup.reason}
        if hangup.transfer_to:
            variables[OUTPUT_TRANSFER_TO] = hangup.transfer_to
        return self.message("disconnect", {"reason": "completed", "outputVariables": variables})

    def after_end(self, data: str | bytes) -> tuple[str | None, bool]:
        """A message that arrives once the call is over (the close transaction after a disconnect):
        (the reply, whether the session is closed). Audio and anything unusable get no reply."""
        if type(data) is bytes or self.state == "closed":
            return None, self.state == "closed"
        try:
            message = parse_message(data)
        except GenesysProtocolError:
            return None, False
        problem = self._sequence(message)
        if problem is not None and problem[0] == "stale":
            return None, False
        if message.type == "close":
            self.state = "closed"
            return self.message("closed", {}), True
        if message.type == "ping":
            return self.message("pong", {}), False
        return None, False

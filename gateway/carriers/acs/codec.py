"""Azure Communication Services media streaming: a sans-I/O codec for the media socket, and the
Event Grid / Call Automation pieces of answering a call.

Inbound (JSON text): AudioMetadata, AudioData (base64 PCM16 LE mono at the rate the call was
answered with, 24 or 16 kHz, 20 ms per message, silent frames included), DtmfData. Outbound:
AudioData and StopAudio, at the same rate. ACS matches kinds and keys case-insensitively; the
gateway accepts either casing and sends camelCase.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.audio import FORMATS, AudioFormat, b64_len, is_base64
from gateway.call import Call, ClearPlayback, PhoneAction, PlayAudio
from gateway.carriers.common import keypad_key, load_json, short

INCOMING_CALL = "Microsoft.Communication.IncomingCall"
AUDIO_FORMATS: dict[int, AudioFormat] = {f.sample_rate: f for f in FORMATS.values() if f.name == "pcm16"}
"""The PCM16 formats ACS media streaming offers (``acs.sample_rate``), by sample rate: 16 and 24 kHz.
Either one passes straight through to Voice Live, both ways."""


class AcsProtocolError(ValueError):
    """A media message that cannot be used; the text says why (never contains audio)."""


@dataclass(slots=True, frozen=True)
class AudioMetadata:
    encoding: str
    sample_rate: int
    channels: int


@dataclass(slots=True, frozen=True)
class Audio:
    data: str
    silent: bool


@dataclass(slots=True, frozen=True)
class DtmfDigit:
    digit: str


@dataclass(slots=True, frozen=True)
class OtherKind:
    kind: str


AcsEvent = AudioMetadata | Audio | DtmfDigit | OtherKind


def _field(obj: dict[str, Any], name: str) -> Any:
    """``obj[name]`` in camelCase or PascalCase."""
    value = obj.get(name)
    return obj.get(name[0].upper() + name[1:]) if value is None else value


def parse_message(text: str | bytes) -> AcsEvent:
    msg, problem = load_json(text)
    if problem is not None:
        raise AcsProtocolError(problem)
    if type(msg) is not dict:
        raise AcsProtocolError("not a JSON object")
    kind = _field(msg, "kind")
    if not isinstance(kind, str):
        raise AcsProtocolError("message without a kind")
    lowered = kind.lower()
    if lowered == "audiodata":
        body = _field(msg, "audioData")
        data = _field(body, "data") if type(body) is dict else None
        if not data or not is_base64(data) or b64_len(data) % 2:
            raise AcsProtocolError("AudioData without base64 PCM16 data")
        return Audio(data, _field(body, "silent") is True)
    if lowered == "audiometadata":
        body = _field(msg, "audioMetadata")
        if type(body) is not dict:
            raise AcsProtocolError("AudioMetadata without its object")
        try:
            rate, channels = int(_field(body, "sampleRate")), int(_field(body, "channels") or 1)
        except (TypeError, ValueError, OverflowError):
            raise AcsProtocolError("AudioMetadata with an unreadable sampleRate or channels") from None
        return AudioMetadata(str(_field(body, "encoding") or ""), rate, channels)
    if lowered == "dtmfdata":
        body = _field(msg, "dtmfData")
        data = _field(body, "data") if type(body) is dict else None
        if not isinstance(data, str) or not data:
            raise AcsProtocolError("DtmfData without a digit")
        digit = keypad_key(data)
        if digit is None:
            raise AcsProtocolError(f"DtmfData with {short(data)!r}, which is not a keypad key")
        return DtmfDigit(digit)
    return OtherKind(kind)


_AUDIO_HEAD = '{"kind":"AudioData","audioData":{"data":"'
STOP_AUDIO = '{"kind":"StopAudio","stopAudio":{}}'


class AcsLeg:
    """The phone leg of one call on ACS: wire text in and out of a :class:`Call` (paced playback)."""

    carrier = "acs"
    binary = False  # JSON text frames only
    __slots__ = ()

    def feed(self, call: Call, text: str, now: float) -> tuple[str, str] | None:
        try:
            event = parse_message(text)
        except AcsProtocolError as exc:
            return "malformed", str(exc)
        kind = type(event)
        if kind is Audio:
            call.caller_audio(event.data, now)  # type: ignore[union-attr]  # silent frames too
        elif kind is DtmfDigit:
            call.dtmf(event.digit, now)  # type: ignore[union-attr]
        elif kind is AudioMetadata:
            meta: AudioMetadata = event  # type: ignore[assignment]
            rate = call.audio.sample_rate  # the rate the call was answered with (acs.sample_rate)
            if (meta.encoding.upper(), meta.sample_rate, meta.channels) != ("PCM", rate, 1):
                call.phone_ended("unsupported_audio_format", now)
                return ("unsupported-format", f"{meta.encoding} {meta.sample_rate} Hz {meta.channels} channel(s); "
                        f"the call must stream PCM {rate} Hz mono (acs.sample_rate)")
        else:
            return "unknown-kind", f"kind {short(repr(event.kind))} is not used"  # type: ignore[union-attr]
        return None

    def encode(self, action: PhoneAction) -> str | None:
        kind = type(action)
        if kind is PlayAudio:
            return _AUDIO_HEAD + action.payload + '"}}'  # type: ignore[union-attr]
        if kind is ClearPlayback:
            return STOP_AUDIO
        return None


def _phone_of(party: Any) -> str | None:
    if not isinstance(party, dict):
        return None
    phone = party.get("phoneNumber")
    if isinstance(phone, dict) and isinstance(phone.get("value"), str):
        return phone["value"]
    raw = party.get("rawId")
    if isinstance(raw, str) and raw.startswith("4:"):
        return raw[2:]
    return None


def called_number(event_data: dict[str, Any]) -> str | None:
    """The number that was called, from an IncomingCall event's ``data.to``."""
    return _phone_of(event_data.get("to"))


def caller_number(event_data: dict[str, Any]) -> str | None:
    """The caller's number, from an IncomingCall event's ``data.from`` (None: not a phone)."""
    return _phone_of(event_data.get("from"))

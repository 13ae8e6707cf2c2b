"""Binary phone frames (carriers that carry raw audio): the shell's frames and the wire's legs."""

from __future__ import annotations

import base64
import struct

from gateway.call import CLEAR, Call, PhoneAction, PlayAudio
from gateway.config import parse_config
from gateway.frames import server_text_frames
from gateway.wire import WireCall


def test_text_and_binary_frames_in_one_write() -> None:
    data = server_text_frames(["hi", b"\x00\x01\x02", b"x" * 200])
    assert data[:4] == b"\x81\x02hi"  # FIN + text, 2 bytes
    assert data[4:9] == b"\x82\x03\x00\x01\x02"  # FIN + binary, 3 bytes
    assert data[9:13] == b"\x82" + bytes([126]) + struct.pack("!H", 200)
    assert data[13:] == b"x" * 200


class _RawLeg:
    """A leg that carries raw audio both ways, and cuts bot audio into 4-byte frames."""

    carrier = "raw"
    binary = True

    def feed(self, call: Call, data: str | bytes, now: float) -> tuple[str, str] | None:
        if isinstance(data, str):
            return "text", data
        call.caller_audio(base64.b64encode(data).decode(), now)
        return None

    def encode(self, action: PhoneAction) -> bytes | list[bytes] | None:
        if isinstance(action, PlayAudio):
            audio = base64.b64decode(action.payload)
            return [audio[i:i + 4] for i in range(0, len(audio), 4)]
        if action is CLEAR:
            return b"flush"
        return None


class _TextLeg(_RawLeg):
    binary = False


def _ready_call() -> Call:
    config = parse_config("profiles: {p: {model: m}}", env={})
    call = Call(call_id="c", stream_id="s", profile_name="p", profile=config.profiles["p"], started_at=0.0)
    call.voicelive_connected(0.0)
    call.voicelive_event({"type": "session.updated", "session": {
        "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}}, 0.0)
    call.to_voicelive.clear()
    return call


def test_a_binary_leg_takes_binary_frames_and_sends_several_per_action() -> None:
    wire = WireCall(_ready_call(), _RawLeg())
    wire.from_phone(b"\xff" * 160, 20.0)
    (append,) = wire.take_voicelive()
    assert base64.b64encode(b"\xff" * 160).decode() in append
    wire.call.to_phone += [PlayAudio(base64.b64encode(bytes(range(10))).decode()), CLEAR]
    assert wire.take_phone() == [bytes(range(4)), bytes(range(4, 8)), bytes(range(8, 10)), b"flush"]
    assert wire.bad_input == {}


def test_a_text_leg_refuses_binary_frames() -> None:
    wire = WireCall(_ready_call(), _TextLeg())
    wire.from_phone(b"\xff" * 160, 20.0)
    assert wire.take_voicelive() == []
    assert wire.bad_input == {"binary-frame": 1}


class _HoldingLeg(_RawLeg):
    """A leg that holds bot audio while its carrier says "pause", and lets it go on "resume"."""

    def __init__(self) -> None:
        self.outbox: list[str | bytes] = []
        self.held: list[str | bytes] = []
        self.paused = False

    def feed(self, call: Call, data: str | bytes, now: float) -> tuple[str, str] | None:
        if data == "pause":
            self.paused = True
        elif data == "resume":
            self.paused = False
            self.outbox += self.held
            self.held.clear()
        else:
            return super().feed(call, data, now)
        return None

    def encode(self, action: PhoneAction) -> bytes | list[bytes] | None:
        message = super().encode(action)
        if self.paused and message is not None:
            self.held += message if isinstance(message, list) else [message]
            return None
        return message


def test_messages_a_leg_releases_by_itself_go_out_first_and_in_order() -> None:
    wire = WireCall(_ready_call(), _HoldingLeg())
    assert wire.take_phone() == []
    wire.from_phone("pause", 10.0)
    wire.call.to_phone.append(PlayAudio(base64.b64encode(bytes(range(6))).decode()))
    assert wire.take_phone() == []  # held by the leg
    wire.from_phone("resume", 20.0)
    assert wire.take_phone() == [bytes(range(4)), bytes(range(4, 6))]  # with no action of the call's
    wire.from_phone("pause", 30.0)
    wire.call.to_phone.append(PlayAudio(base64.b64encode(b"abcd").decode()))
    wire.take_phone()
    wire.from_phone("resume", 40.0)
    wire.call.to_phone.append(CLEAR)
    assert wire.take_phone() == [b"abcd", b"flush"]  # what was held goes before what comes after it
    assert wire.take_phone() == [] and wire.bad_input == {}

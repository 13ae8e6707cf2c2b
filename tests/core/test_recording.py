"""The call recorder: what it writes, redaction, secrets, and a stalled disk that must not hurt a call
(recording live calls over sockets: tests/sockets/test_recording_calls.py)."""

from __future__ import annotations

import base64
import io
import json
import threading
from pathlib import Path

from gateway import log
from gateway.audio import G711_ULAW
from gateway.recording import FORMAT, CallRecorder, RecordingWriter, redact_audio


def test_redaction_keeps_length_and_every_other_field() -> None:
    audio = base64.b64encode(bytes(range(160))).decode()
    msg = json.dumps({"event": "media", "sequenceNumber": "7", "streamSid": "MZ1",
                      "media": {"track": "inbound", "chunk": "6", "timestamp": "120", "payload": audio}})
    redacted = redact_audio(msg, "phone", "in", 0xFF)
    parsed, original = json.loads(redacted), json.loads(msg)
    assert base64.b64decode(parsed["media"]["payload"]) == b"\xff" * 160
    parsed["media"].pop("payload")
    original["media"].pop("payload")
    assert parsed == original
    delta = json.dumps({"type": "response.audio.delta", "response_id": "r", "item_id": "i",
                        "delta": base64.b64encode(b"\x01" * 1001).decode()})
    assert base64.b64decode(json.loads(redact_audio(delta, "voicelive", "in", 0xFF))["delta"]) == b"\xff" * 1001
    other = '{"type":"session.update","session":{"instructions":"media"}}'
    assert redact_audio(other, "voicelive", "out", 0xFF) == other


def _writer(tmp_path: Path, **kw) -> tuple[RecordingWriter, CallRecorder]:
    writer = RecordingWriter(tmp_path / "rec", **kw)
    recorder = writer.open_call(carrier="twilio", call_id="CA1", stream_id="MZ1", profile_name="p",
                                profile={"model": "m"}, audio=G711_ULAW)
    return writer, recorder


def test_lines_hold_time_leg_direction_and_the_exact_message(tmp_path: Path) -> None:
    writer, recorder = _writer(tmp_path, redact_audio=False)
    recorder.record(1.5, "phone", "in", '{"event":"connected"}')
    recorder.record(2.25, "voicelive", "open")
    recorder.record(3.0, "phone", "in", b"\x00\x01")
    recorder.record(4.0, "voicelive", "closed", code=1011)
    recorder.close()
    writer.close()
    header, *lines = [json.loads(x) for x in recorder.path.read_text().splitlines()]
    assert header["format"] == FORMAT and header["carrier"] == "twilio" and header["call_id"] == "CA1"
    assert header["profile"] == {"model": "m"} and header["gateway_version"] and header["started_at"]
    assert lines == [
        {"t": 1.5, "leg": "phone", "dir": "in", "msg": '{"event":"connected"}'},
        {"t": 2.25, "leg": "voicelive", "event": "open"},
        {"t": 3.0, "leg": "phone", "dir": "in", "binary": "AAE="},
        {"t": 4.0, "leg": "voicelive", "event": "closed", "code": 1011},
    ]


def test_binary_phone_frames_are_redacted_to_silence_of_the_same_length(tmp_path: Path) -> None:
    writer, recorder = _writer(tmp_path)  # redact_audio: true, the default
    recorder.record(1.0, "phone", "in", bytes(range(160)))
    recorder.record(2.0, "phone", "out", b"\x01\x02\x03")
    recorder.record(3.0, "phone", "in", "MEDIA_XON")
    recorder.close()
    writer.close()
    _, *lines = [json.loads(x) for x in recorder.path.read_text().splitlines()]
    assert [base64.b64decode(line["binary"]) for line in lines[:2]] == [b"\xff" * 160, b"\xff" * 3]
    assert lines[2]["msg"] == "MEDIA_XON"


def test_secrets_never_reach_a_recording(tmp_path: Path) -> None:
    secret = "tok-very-secret-4242"
    log.register_secret(secret)
    writer, recorder = _writer(tmp_path)
    recorder.record(1.0, "phone", "in", json.dumps({"event": "start", "start": {"customParameters": {"t": secret}}}))
    recorder.close()
    writer.close()
    text = recorder.path.read_text()
    assert secret not in text and "***" in text


def test_a_stalled_disk_never_blocks_and_the_backlog_is_bounded(tmp_path: Path, monkeypatch) -> None:
    buf = io.StringIO()
    log.configure(level="info", json_output=True, stream=buf)
    release = threading.Event()
    original = CallRecorder._write

    def stalled(self: CallRecorder, text: str) -> None:
        release.wait()
        original(self, text)

    monkeypatch.setattr(CallRecorder, "_write", stalled)
    try:
        writer, recorder = _writer(tmp_path, max_backlog=50)
        for i in range(500):  # returns at once although nothing can be written
            recorder.record(float(i), "phone", "in", '{"event":"media"}')
        assert recorder.stopped and recorder.enqueued <= 52
        release.set()
        recorder.close()
        writer.close()
    finally:
        release.set()
        log.configure(level="info")
    errors = [json.loads(x) for x in buf.getvalue().splitlines() if '"error"' in x]
    assert len(errors) == 1 and "cannot keep up" in errors[0]["event"]
    assert len(recorder.path.read_text().splitlines()) == 1 + recorder.enqueued

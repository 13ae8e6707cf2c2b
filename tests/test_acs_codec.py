"""ACS media codec and the paced playback of the pure call (no sockets)."""

from __future__ import annotations

import base64
import json

import pytest

from gateway.audio import PCM16_24K
from gateway.call import CLEAR, Call, PlayAudio
from gateway.carriers import acs
from gateway.config import parse_config

PCM = base64.b64encode(b"\x01\x02" * 480).decode()  # 20 ms of 24 kHz PCM16


def test_messages_in_either_casing() -> None:
    assert acs.parse_message(json.dumps({"kind": "AudioData", "audioData": {
        "data": PCM, "timestamp": "2026-01-01T00:00:00Z", "participantRawID": "4:+1", "silent": False}})) == \
        acs.Audio(PCM, False)
    assert acs.parse_message(json.dumps({"Kind": "audiodata", "AudioData": {"Data": PCM, "Silent": True}})) == \
        acs.Audio(PCM, True)
    assert acs.parse_message(json.dumps({"kind": "AudioMetadata", "audioMetadata": {
        "subscriptionId": "s", "encoding": "PCM", "sampleRate": 24000, "channels": 1, "length": 960}})) == \
        acs.AudioMetadata("PCM", 24000, 1)
    assert acs.parse_message('{"kind":"DtmfData","dtmfData":{"data":"5"}}') == acs.DtmfDigit("5")
    other = acs.parse_message('{"kind":"TranscriptionData","transcriptionData":{}}')
    assert other == acs.OtherKind("TranscriptionData")


@pytest.mark.parametrize("text, reason", [
    ("nope", "not valid JSON"),
    ('{"audioData":{}}', "without a kind"),
    ('{"kind":"AudioData","audioData":{"data":"%%%"}}', "base64 PCM16"),
    ('{"kind":"AudioData","audioData":{"data":"AA=="}}', "base64 PCM16"),  # one byte: not whole samples
    ('{"kind":"DtmfData","dtmfData":{}}', "without a digit"),
])
def test_bad_messages(text: str, reason: str) -> None:
    with pytest.raises(acs.AcsProtocolError, match=reason):
        acs.parse_message(text)


def test_outbound_messages() -> None:
    leg = acs.AcsLeg()
    assert json.loads(leg.encode(PlayAudio(PCM))) == {"kind": "AudioData", "audioData": {"data": PCM}}
    assert json.loads(leg.encode(CLEAR)) == {"kind": "StopAudio", "stopAudio": {}}


def test_called_number() -> None:
    to = {"kind": "phoneNumber", "phoneNumber": {"value": "+15555550100"}}
    assert acs.called_number({"to": to}) == "+15555550100"
    assert acs.called_number({"to": {"rawId": "4:+15555550101"}}) == "+15555550101"
    assert acs.called_number({"to": {"rawId": "8:acs:user"}}) is None


def paced_call() -> Call:
    config = parse_config("profiles: {p: {model: m}}", env={})
    call = Call(call_id="cc", stream_id="s", profile_name="p", profile=config.profiles["p"], started_at=0.0,
                audio=PCM16_24K, paced=True, piece_ms=20)
    call.voicelive_connected(0.0)
    call.voicelive_event({"type": "session.updated", "session": {
        "input_audio_format": "pcm16", "output_audio_format": "pcm16"}}, 0.0)
    call.to_voicelive.clear()
    return call


def test_session_asks_for_pcm16_at_24_khz() -> None:
    config = parse_config("profiles: {p: {model: m}}", env={})
    call = Call(call_id="cc", stream_id="s", profile_name="p", profile=config.profiles["p"], started_at=0.0,
                audio=PCM16_24K, paced=True)
    call.voicelive_connected(0.0)
    session = json.loads(call.to_voicelive[0])["session"]
    assert (session["input_audio_format"], session["output_audio_format"], session["input_audio_sampling_rate"]) == \
        ("pcm16", "pcm16", 24000)


def test_bot_audio_is_released_in_real_time_a_little_ahead() -> None:
    call = paced_call()
    call.voicelive_event({"type": "response.created", "response": {"id": "r1"}}, 0.0)
    one_second = base64.b64encode(bytes(48000)).decode()
    call.voicelive_event({"type": "response.audio.delta", "response_id": "r1", "item_id": "i1",
                          "delta": one_second}, 0.0)
    first = [a for a in call.to_phone if isinstance(a, PlayAudio)]
    assert len(first) == 4  # 80 ms: what plays now plus a 60 ms lead
    call.to_phone.clear()
    assert call.next_tick() == pytest.approx(20.0)
    for now in range(20, 520, 20):
        call.tick(float(now))
    released = [a for a in call.to_phone if isinstance(a, PlayAudio)]
    assert len(released) == 25  # one 20 ms frame per 20 ms
    assert "".join(p.payload for p in first + released) == one_second[: len(first + released) * 1280]


def test_barge_in_stops_audio_and_truncates_at_the_playback_clock() -> None:
    call = paced_call()
    call.voicelive_event({"type": "response.created", "response": {"id": "r1"}}, 0.0)
    call.voicelive_event({"type": "response.audio.delta", "response_id": "r1", "item_id": "i1",
                          "delta": base64.b64encode(bytes(96000)).decode()}, 100.0)
    for now in range(120, 700, 20):
        call.tick(float(now))
    call.to_phone.clear()
    call.voicelive_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0}, 710.0)
    assert call.to_phone == [CLEAR]
    sent = [json.loads(m) for m in call.to_voicelive]
    truncate = next(m for m in sent if m["type"] == "conversation.item.truncate")
    assert truncate["audio_end_ms"] == 610  # played since t=100 by the clock
    call.to_phone.clear()
    call.tick(800.0)
    assert call.to_phone == [] and call.next_tick() is None  # the rest was dropped


def test_speech_after_paced_playback_ended_touches_nothing() -> None:
    call = paced_call()
    call.voicelive_event({"type": "response.created", "response": {"id": "r1"}}, 0.0)
    call.voicelive_event({"type": "response.audio.delta", "response_id": "r1", "item_id": "i1",
                          "delta": base64.b64encode(bytes(4800)).decode()}, 0.0)
    call.voicelive_event({"type": "response.done", "response": {"id": "r1", "status": "completed"}}, 1.0)
    for now in range(20, 200, 20):
        call.tick(float(now))
    call.to_phone.clear()
    call.to_voicelive.clear()
    call.voicelive_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0}, 300.0)
    assert call.to_phone == [] and call.to_voicelive == []

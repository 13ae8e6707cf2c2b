"""ACS media codec and the paced playback of the pure call (no sockets)."""

from __future__ import annotations

import base64
import json

import pytest
from structlog.testing import capture_logs

from gateway.audio import ASSETS, PCM16_16K, PCM16_24K, AudioFormat, b64_len, read_wav
from gateway.call import CLEAR, Call, PlayAudio
from gateway.carriers.acs import codec as acs
from gateway.carriers.acs.control import ACS_PIECE_MS, load_apology
from gateway.config import parse_config
from gateway.wire import WireCall

PCM = base64.b64encode(b"\x01\x02" * 480).decode()  # 20 ms of 24 kHz PCM16
RATES = [pytest.param(PCM16_24K, id="24kHz"), pytest.param(PCM16_16K, id="16kHz")]


def metadata(rate: int, channels: int = 1) -> str:
    """An AudioMetadata message as ACS sends it first on a media socket."""
    return json.dumps({"kind": "AudioMetadata", "audioMetadata": {
        "subscriptionId": "s", "encoding": "PCM", "sampleRate": rate, "channels": channels,
        "length": rate // 50 * 2 * channels}})


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


def new_call(audio: AudioFormat) -> Call:
    config = parse_config("profiles: {p: {model: m}}", env={})
    return Call(call_id="cc", stream_id="s", profile_name="p", profile=config.profiles["p"], started_at=0.0,
                audio=audio, paced=True, piece_ms=ACS_PIECE_MS)


def paced_call(audio: AudioFormat = PCM16_24K) -> Call:
    """A ready ACS call at ``audio``'s rate (Voice Live accepted the format)."""
    call = new_call(audio)
    call.voicelive_connected(0.0)
    call.voicelive_event({"type": "session.updated", "session": {
        "input_audio_format": "pcm16", "input_audio_sampling_rate": audio.sample_rate,
        "output_audio_format": audio.output_name}}, 0.0)
    assert call.ready_at == 0.0
    call.to_voicelive.clear()
    return call


@pytest.mark.parametrize(("audio", "output", "rate"), [
    pytest.param(PCM16_24K, "pcm16", 24000, id="24kHz"),
    pytest.param(PCM16_16K, "pcm16_16000hz", 16000, id="16kHz"),
])
def test_session_asks_for_pcm16_at_the_call_rate(audio: AudioFormat, output: str, rate: int) -> None:
    call = new_call(audio)
    call.voicelive_connected(0.0)
    session = json.loads(call.to_voicelive[0])["session"]
    assert (session["input_audio_format"], session["output_audio_format"], session["input_audio_sampling_rate"]) == \
        ("pcm16", output, rate)


@pytest.mark.parametrize("audio", RATES)
def test_metadata_at_the_call_rate_is_accepted_and_caller_audio_passes_untouched(audio: AudioFormat) -> None:
    call, leg = paced_call(audio), acs.AcsLeg()
    assert acs.parse_message(metadata(audio.sample_rate)) == acs.AudioMetadata("PCM", audio.sample_rate, 1)
    assert leg.feed(call, metadata(audio.sample_rate), 1.0) is None
    frame = base64.b64encode((bytes(range(256)) * 4)[: audio.bytes_per_ms * 20]).decode()
    assert b64_len(frame) == audio.bytes_per_ms * 20  # 20 ms: 960 bytes at 24 kHz, 640 at 16 kHz
    assert leg.feed(call, json.dumps({"kind": "AudioData", "audioData": {"data": frame, "silent": False}}), 2.0) \
        is None
    assert not call.ended
    assert [json.loads(m) for m in call.to_voicelive] == [{"type": "input_audio_buffer.append", "audio": frame}]


@pytest.mark.parametrize(("audio", "rate", "channels"), [
    pytest.param(PCM16_16K, 24000, 1, id="16kHz-call-24kHz-stream"),
    pytest.param(PCM16_24K, 16000, 1, id="24kHz-call-16kHz-stream"),
    pytest.param(PCM16_16K, 16000, 2, id="16kHz-stereo"),
])
def test_metadata_at_another_rate_ends_the_call_with_a_clear_line(audio: AudioFormat, rate: int,
                                                                  channels: int) -> None:
    call = paced_call(audio)
    wire = WireCall(call, acs.AcsLeg())
    with capture_logs() as logs:
        wire.from_phone(metadata(rate, channels), 1.0)
    assert call.ended and call.end_reason == "unsupported_audio_format"
    assert wire.bad_input == {"unsupported-format": 1}
    (line,) = [entry for entry in logs if entry.get("problem") == "unsupported-format"]
    assert line["log_level"] == "warning"
    assert line["detail"] == (f"PCM {rate} Hz {channels} channel(s); "
                              f"the call must stream PCM {audio.sample_rate} Hz mono (acs.sample_rate)")


@pytest.mark.parametrize("audio", RATES)
def test_the_apology_is_made_at_the_call_rate_in_whole_20_ms_frames(audio: AudioFormat) -> None:
    clip = read_wav(ASSETS / "apology.wav")
    pcm = base64.b64decode(load_apology(str(ASSETS / "apology.wav"), audio.sample_rate) or "")
    frame = audio.bytes_per_ms * 20
    assert len(pcm) % frame == 0
    assert len(pcm) // audio.bytes_per_ms - clip.duration_ms in range(0, 21)  # the same clip, the last frame padded
    assert load_apology(None, audio.sample_rate) is None


@pytest.mark.parametrize("audio", RATES)
def test_bot_audio_is_released_in_real_time_a_little_ahead(audio: AudioFormat) -> None:
    call = paced_call(audio)
    call.voicelive_event({"type": "response.created", "response": {"id": "r1"}}, 0.0)
    one_second = base64.b64encode(bytes(audio.bytes_per_ms * 1000)).decode()
    call.voicelive_event({"type": "response.audio.delta", "response_id": "r1", "item_id": "i1",
                          "delta": one_second}, 0.0)
    first = [a for a in call.to_phone if isinstance(a, PlayAudio)]
    piece = b64_len(first[0].payload)  # 20 ms of the call's rate, in whole samples and base64 quanta
    assert 19 * audio.bytes_per_ms < piece <= 20 * audio.bytes_per_ms
    assert len(first) == 4  # 80 ms: what plays now plus a 60 ms lead
    call.to_phone.clear()
    assert call.next_tick() == pytest.approx(4 * piece / audio.bytes_per_ms - 60)  # the next is 60 ms ahead
    for now in range(20, 520, 20):
        call.tick(float(now))
    released = [a for a in call.to_phone if isinstance(a, PlayAudio)]
    assert len(released) == 25  # one 20 ms frame per 20 ms
    sent = "".join(p.payload for p in first + released)
    assert one_second.startswith(sent) and b64_len(sent) == 29 * piece


@pytest.mark.parametrize("audio", RATES)
def test_barge_in_stops_audio_and_truncates_at_the_playback_clock(audio: AudioFormat) -> None:
    call = paced_call(audio)
    call.voicelive_event({"type": "response.created", "response": {"id": "r1"}}, 0.0)
    call.voicelive_event({"type": "response.audio.delta", "response_id": "r1", "item_id": "i1",
                          "delta": base64.b64encode(bytes(audio.bytes_per_ms * 2000)).decode()}, 100.0)
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


@pytest.mark.parametrize("audio", RATES)
def test_a_truncation_after_the_item_played_counts_its_bytes_at_the_call_rate(audio: AudioFormat) -> None:
    call = paced_call(audio)
    call.voicelive_event({"type": "response.created", "response": {"id": "r1"}}, 0.0)
    call.voicelive_event({"type": "response.audio.delta", "response_id": "r1", "item_id": "i1",
                          "delta": base64.b64encode(bytes(audio.bytes_per_ms * 300)).decode()}, 0.0)
    for now in range(20, 420, 20):
        call.tick(float(now))
    call.to_voicelive.clear()
    # the response goes on (no response.done) after its 300 ms have played: the caller heard all of them
    call.voicelive_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0}, 500.0)
    truncate = next(m for m in map(json.loads, call.to_voicelive) if m["type"] == "conversation.item.truncate")
    assert truncate["audio_end_ms"] == 300


@pytest.mark.parametrize("audio", RATES)
def test_speech_after_paced_playback_ended_touches_nothing(audio: AudioFormat) -> None:
    call = paced_call(audio)
    call.voicelive_event({"type": "response.created", "response": {"id": "r1"}}, 0.0)
    call.voicelive_event({"type": "response.audio.delta", "response_id": "r1", "item_id": "i1",
                          "delta": base64.b64encode(bytes(audio.bytes_per_ms * 100)).decode()}, 0.0)
    call.voicelive_event({"type": "response.done", "response": {"id": "r1", "status": "completed"}}, 1.0)
    for now in range(20, 200, 20):
        call.tick(float(now))
    call.to_phone.clear()
    call.to_voicelive.clear()
    call.voicelive_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0}, 300.0)
    assert call.to_phone == [] and call.to_voicelive == []

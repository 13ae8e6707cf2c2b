"""The Voice Live ``session.update`` for a profile.

Only what the profile sets is sent; everything else keeps the service default. The audio formats
and modalities are always sent, because the gateway passes the carrier's audio through untouched
and Voice Live must expect exactly that format.
"""

from __future__ import annotations

from typing import Any

from gateway.config import Profile, TurnDetectionOff

__all__ = ["AUDIO_FORMATS", "build_session", "session_update"]

# Formats a carrier leg can use without transcoding: Twilio sends g711_ulaw (or g711_alaw),
# ACS sends PCM16 24 kHz mono.
AUDIO_FORMATS = ("g711_ulaw", "g711_alaw", "pcm16")
PCM16_SAMPLE_RATE = 24000


def _typed(model: Any) -> dict[str, Any]:
    """A voice or turn detection object as the wire wants it: ``type`` first, unset fields left out."""
    fields = model.model_dump(exclude_none=True, exclude={"type"})
    return {"type": model.type, **fields}


def build_session(profile: Profile, audio_format: str = "g711_ulaw") -> dict[str, Any]:
    """The ``session`` object of a ``session.update`` for ``profile``, with the carrier's audio
    format used for both directions."""
    if audio_format not in AUDIO_FORMATS:
        raise ValueError(
            f"unsupported audio format {audio_format!r} (expected one of {', '.join(AUDIO_FORMATS)})"
        )
    session: dict[str, Any] = {"modalities": ["text", "audio"]}
    if profile.instructions is not None:
        session["instructions"] = profile.instructions
    voice = profile.voice
    if voice is not None:
        session["voice"] = voice if isinstance(voice, str) else _typed(voice)
    session["input_audio_format"] = audio_format
    session["output_audio_format"] = audio_format
    if audio_format == "pcm16":
        session["input_audio_sampling_rate"] = PCM16_SAMPLE_RATE
    turn = profile.turn_detection
    if isinstance(turn, TurnDetectionOff):
        session["turn_detection"] = None
    elif turn is not None:
        session["turn_detection"] = _typed(turn)
    if profile.noise_suppression is not None:
        session["input_audio_noise_reduction"] = {"type": profile.noise_suppression}
    if profile.echo_cancellation:
        session["input_audio_echo_cancellation"] = {"type": "server_echo_cancellation"}
    if profile.input_transcription is not None:
        session["input_audio_transcription"] = profile.input_transcription.model_dump(exclude_none=True)
    if profile.temperature is not None:
        session["temperature"] = profile.temperature
    if profile.max_output_tokens is not None:
        session["max_response_output_tokens"] = profile.max_output_tokens
    if profile.tools:
        session["tools"] = [
            {"type": "function", "name": tool.name, "description": tool.description, "parameters": tool.parameters}
            for tool in profile.tools
        ]
        session["tool_choice"] = "auto"
    interim = profile.interim_response
    if interim is not None:
        fields = interim.model_dump(exclude_none=True, exclude={"type"})
        if interim.type == "llm":
            fields.pop("texts", None)
        session["interim_response"] = {"type": f"{interim.type}_interim_response", **fields}
    return session


def session_update(
    profile: Profile, audio_format: str = "g711_ulaw", event_id: str | None = None
) -> dict[str, Any]:
    """The complete ``session.update`` client event for ``profile``."""
    event: dict[str, Any] = {"type": "session.update", "session": build_session(profile, audio_format)}
    if event_id is not None:
        event["event_id"] = event_id
    return event

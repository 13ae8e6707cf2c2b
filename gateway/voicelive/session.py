"""The Voice Live ``session.update`` for a profile.

Only what the profile sets is sent; everything else keeps the service default. The audio formats
and modalities are always sent, because the gateway passes the carrier's audio through untouched
and Voice Live must expect exactly that format.
"""

from __future__ import annotations

from typing import Any

from gateway.audio import FORMATS, G711_ULAW, AudioFormat
from gateway.config import METADATA_CALL_ID, Profile, TurnDetectionOff, default_transcription_model

__all__ = ["build_session", "session_update"]


def _typed(model: Any) -> dict[str, Any]:
    """A voice or turn detection object as the wire wants it: ``type`` first, unset fields left out."""
    fields = model.model_dump(exclude_none=True, exclude={"type"})
    return {"type": model.type, **fields}


def _format(audio: AudioFormat | str) -> AudioFormat:
    if isinstance(audio, AudioFormat):
        return audio
    fmt = FORMATS.get(audio)
    if fmt is None:
        raise ValueError(f"unsupported audio format {audio!r} (expected one of {', '.join(FORMATS)})")
    return fmt


def build_session(profile: Profile, audio: AudioFormat | str = G711_ULAW, *,
                  call_id: str | None = None) -> dict[str, Any]:
    """The ``session`` object of a ``session.update`` for ``profile``, with the phone leg's audio
    format used for both directions. ``call_id`` (the carrier's id of the call) goes into the
    session's metadata, so that Voice Live's resource logs can be joined with the gateway's.

    Caller transcription is asked for unless the profile turns it off: a session that is
    reconnected or renewed is given the conversation so far from transcripts."""
    fmt = _format(audio)
    session: dict[str, Any] = {"modalities": ["text", "audio"]}
    if profile.instructions is not None:
        session["instructions"] = profile.instructions
    voice = profile.voice
    if voice is not None:
        session["voice"] = voice if isinstance(voice, str) else _typed(voice)
    session["input_audio_format"] = fmt.name
    session["output_audio_format"] = fmt.output_name
    if fmt.name == "pcm16":
        session["input_audio_sampling_rate"] = fmt.sample_rate
    turn = profile.turn_detection
    if isinstance(turn, TurnDetectionOff):
        session["turn_detection"] = None
    elif turn is not None:
        session["turn_detection"] = _typed(turn)
    if profile.noise_suppression is not None:
        session["input_audio_noise_reduction"] = {"type": profile.noise_suppression}
    if profile.echo_cancellation:
        session["input_audio_echo_cancellation"] = {"type": "server_echo_cancellation"}
    transcription = profile.input_transcription
    if transcription is None:
        session["input_audio_transcription"] = {"model": default_transcription_model(profile)}
    elif transcription is not False:
        session["input_audio_transcription"] = transcription.model_dump(exclude_none=True)
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
    metadata = dict(profile.metadata)
    if call_id:
        metadata[METADATA_CALL_ID] = call_id[:512]
    if metadata:
        session["metadata"] = metadata
    return session


def session_update(
    profile: Profile, audio: AudioFormat | str = G711_ULAW, event_id: str | None = None, *,
    call_id: str | None = None,
) -> dict[str, Any]:
    """The complete ``session.update`` client event for ``profile``."""
    event: dict[str, Any] = {"type": "session.update",
                             "session": build_session(profile, audio, call_id=call_id)}
    if event_id is not None:
        event["event_id"] = event_id
    return event

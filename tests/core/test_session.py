"""session.update built from profiles: only what a profile sets is sent."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from gateway.audio import PCM16_16K
from gateway.config import (
    AzureSemanticVad,
    EndOfUtteranceDetection,
    Profile,
    load_config,
    parse_config,
)
from gateway.voicelive.session import build_session, session_update

SHIPPED = Path(__file__).resolve().parents[2] / "config.yaml"


def profile_from_yaml(body: str) -> Profile:
    text = "profiles:\n  p:\n" + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ") + "\n"
    return parse_config(text, env={}).profiles["p"]


def test_openai_voice_string_and_server_vad() -> None:
    profile = profile_from_yaml(
        """
        model: gpt-realtime
        instructions: Be brief.
        voice: marin
        turn_detection: {type: server_vad, threshold: 0.5, silence_duration_ms: 600, create_response: true}
        temperature: 0.7
        max_output_tokens: 300
        """
    )
    assert build_session(profile) == {
        "modalities": ["text", "audio"],
        "instructions": "Be brief.",
        "voice": "marin",
        "input_audio_format": "g711_ulaw",
        "output_audio_format": "g711_ulaw",
        "turn_detection": {
            "type": "server_vad",
            "threshold": 0.5,
            "silence_duration_ms": 600,
            "create_response": True,
        },
        "input_audio_transcription": {"model": "gpt-4o-mini-transcribe"},  # asked for by default
        "temperature": 0.7,
        "max_response_output_tokens": 300,
    }


def test_azure_standard_voice_prosody_numbers_become_text() -> None:
    profile = profile_from_yaml(
        """
        model: gpt-realtime
        voice:
          type: azure-standard
          name: en-US-Ava:DragonHDLatestNeural
          temperature: 0.8
          rate: 1.05
          pitch: 2
          volume: "+10%"
          prefer_locales: [en-US, en-GB]
        """
    )
    session = build_session(profile)
    assert session["voice"] == {
        "type": "azure-standard",
        "name": "en-US-Ava:DragonHDLatestNeural",
        "temperature": 0.8,
        "pitch": "2",
        "rate": "1.05",
        "volume": "+10%",
        "prefer_locales": ["en-US", "en-GB"],
    }
    assert "turn_detection" not in session
    assert "instructions" not in session


def test_azure_custom_and_personal_voices() -> None:
    custom = profile_from_yaml(
        """
        model: gpt-realtime
        voice: {type: azure-custom, name: ContosoVoice, endpoint_id: 0f1e2d3c, style: cheerful}
        """
    )
    assert build_session(custom)["voice"] == {
        "type": "azure-custom",
        "name": "ContosoVoice",
        "style": "cheerful",
        "endpoint_id": "0f1e2d3c",
    }
    personal = profile_from_yaml(
        """
        model: gpt-realtime
        voice: {type: azure-personal, name: speaker-1, model: DragonLatestNeural}
        """
    )
    assert build_session(personal)["voice"] == {
        "type": "azure-personal",
        "name": "speaker-1",
        "model": "DragonLatestNeural",
    }
    openai_object = profile_from_yaml("model: gpt-realtime\nvoice: {type: openai, name: cedar}")
    assert build_session(openai_object)["voice"] == {"type": "openai", "name": "cedar"}


def test_agent_profile_sends_no_instructions_and_no_model() -> None:
    profile = profile_from_yaml(
        """
        agent: {name: concierge, project: hotel}
        voice: alloy
        """
    )
    assert build_session(profile) == {
        "modalities": ["text", "audio"],
        "voice": "alloy",
        "input_audio_format": "g711_ulaw",
        "output_audio_format": "g711_ulaw",
        "input_audio_transcription": {"model": "azure-speech"},  # the choice for agents and text models
    }


@pytest.mark.parametrize("value", ["none", "null", "'none'"])
def test_turn_detection_off_is_sent_as_null(value: str) -> None:
    profile = profile_from_yaml(f"model: gpt-realtime\nturn_detection: {value}")
    session = build_session(profile)
    assert "turn_detection" in session
    assert session["turn_detection"] is None
    assert '"turn_detection": null' in json.dumps(session)


def test_turn_detection_not_configured_is_absent() -> None:
    assert "turn_detection" not in build_session(profile_from_yaml("model: gpt-realtime"))
    assert "turn_detection" not in build_session(profile_from_yaml("model: gpt-realtime\nturn_detection: ''"))


def test_semantic_vad_with_end_of_utterance_detection() -> None:
    profile = profile_from_yaml(
        """
        model: gpt-realtime
        turn_detection:
          type: azure_semantic_vad_multilingual
          languages: [en, es]
          remove_filler_words: true
          end_of_utterance_detection: {model: semantic_detection_v1_multilingual, timeout_ms: 800}
          auto_truncate: true
          appended_text_after_truncation: " [interrupted]"
        """
    )
    assert build_session(profile)["turn_detection"] == {
        "type": "azure_semantic_vad_multilingual",
        "remove_filler_words": True,
        "end_of_utterance_detection": {"model": "semantic_detection_v1_multilingual", "timeout_ms": 800},
        "auto_truncate": True,
        "appended_text_after_truncation": " [interrupted]",
        "languages": ["en", "es"],
    }


def test_openai_semantic_vad() -> None:
    profile = profile_from_yaml("model: gpt-realtime\nturn_detection: {type: semantic_vad, eagerness: low}")
    assert build_session(profile)["turn_detection"] == {"type": "semantic_vad", "eagerness": "low"}


def test_audio_processing_fields() -> None:
    profile = profile_from_yaml(
        """
        model: gpt-realtime
        noise_suppression: true
        echo_cancellation: true
        input_transcription: {model: azure-speech, language: en-US}
        max_output_tokens: inf
        """
    )
    session = build_session(profile)
    assert session["input_audio_noise_reduction"] == {"type": "azure_deep_noise_suppression"}
    assert session["input_audio_echo_cancellation"] == {"type": "server_echo_cancellation"}
    assert session["input_audio_transcription"] == {"model": "azure-speech", "language": "en-US"}
    assert session["max_response_output_tokens"] == "inf"

    near = profile_from_yaml("model: gpt-realtime\nnoise_suppression: near_field")
    assert build_session(near)["input_audio_noise_reduction"] == {"type": "near_field"}


def test_fields_the_profile_does_not_set_are_not_sent() -> None:
    profile = profile_from_yaml(
        """
        model: gpt-realtime
        noise_suppression: false
        echo_cancellation: false
        input_transcription: {model: whisper-1}
        greeting: Hello!
        barge_in: false
        """
    )
    session = build_session(profile)
    assert session == {
        "modalities": ["text", "audio"],
        "input_audio_format": "g711_ulaw",
        "output_audio_format": "g711_ulaw",
        "input_audio_transcription": {"model": "whisper-1"},
    }


def test_pcm16_adds_the_sampling_rate() -> None:
    profile = profile_from_yaml("model: gpt-realtime")
    session = build_session(profile, "pcm16")
    assert session["input_audio_format"] == "pcm16"
    assert session["output_audio_format"] == "pcm16"
    assert session["input_audio_sampling_rate"] == 24000
    assert "input_audio_sampling_rate" not in build_session(profile, "g711_ulaw")
    alaw = build_session(profile, "g711_alaw")
    assert alaw["input_audio_format"] == alaw["output_audio_format"] == "g711_alaw"
    wide = build_session(profile, PCM16_16K)  # ACS at 16 kHz: both directions at 16 kHz, no resampling
    assert (wide["input_audio_format"], wide["input_audio_sampling_rate"], wide["output_audio_format"]) == (
        "pcm16", 16000, "pcm16_16000hz")


def test_unknown_audio_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported audio format 'mp3'"):
        build_session(profile_from_yaml("model: gpt-realtime"), "mp3")


def test_session_update_event() -> None:
    profile = profile_from_yaml("model: gpt-realtime\nvoice: sage")
    event = session_update(profile, event_id="evt-1")
    assert event == {"type": "session.update", "session": build_session(profile), "event_id": "evt-1"}
    assert "event_id" not in session_update(profile)
    assert session_update(profile, "pcm16")["session"]["input_audio_sampling_rate"] == 24000
    tagged = session_update(profile, call_id="CA42")["session"]
    assert tagged["metadata"] == {"call_id": "CA42"}


def test_profiles_built_in_python() -> None:
    profile = Profile(
        model="gpt-realtime",
        turn_detection=AzureSemanticVad(
            silence_duration_ms=400,
            end_of_utterance_detection=EndOfUtteranceDetection(model="semantic_detection_v1", threshold_level="low"),
        ),
        noise_suppression=True,  # type: ignore[arg-type]
    )
    session = build_session(profile)
    assert session["turn_detection"] == {
        "type": "azure_semantic_vad",
        "silence_duration_ms": 400,
        "end_of_utterance_detection": {"model": "semantic_detection_v1", "threshold_level": "low"},
    }
    assert session["input_audio_noise_reduction"] == {"type": "azure_deep_noise_suppression"}
    assert "turn_detection" not in build_session(Profile(model="gpt-realtime"))


def test_shipped_profiles_serialize_to_json() -> None:
    config = load_config(SHIPPED, env={})
    for profile in config.profiles.values():
        event = session_update(profile, event_id="e")
        assert json.loads(json.dumps(event)) == event
    support = build_session(config.profiles["support"])
    assert support["voice"]["type"] == "azure-standard"
    assert support["turn_detection"]["type"] == "azure_semantic_vad"
    assert support["input_audio_echo_cancellation"] == {"type": "server_echo_cancellation"}

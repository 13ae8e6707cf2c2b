"""The checks and merges of client-supplied configuration: ``session.update`` (field by field,
as strict as the Voice Live reference) and the ``response`` of ``response.create``.

Pure functions. Each fault raises :class:`Invalid`, naming the field in ``param``; the protocol
turns it into one ``error`` event and leaves the session unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, NoReturn

from gateway.simulator.voice import INPUT_FORMATS, PCM16_INPUT_RATES, output_format

# --- session.update ----------------------------------------------------------------------------

_SESSION_KEYS = frozenset(
    {
        "model",
        "modalities",
        "animation",
        "voice",
        "instructions",
        "input_audio_sampling_rate",
        "input_audio_format",
        "output_audio_format",
        "turn_detection",
        "input_audio_noise_reduction",
        "input_audio_echo_cancellation",
        "avatar",
        "input_audio_transcription",
        "output_audio_timestamp_types",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "temperature",
        "max_response_output_tokens",
        "reasoning_effort",
        "interim_response",
        "include",
        "metadata",
    }
)
"""The fields of a RequestSession (SDK 1.3.1, 2026-07-15 reference)."""
_SERVER_OWNED_KEYS = frozenset({"id", "object", "expires_at", "agent"})
"""Fields of the session object a client may echo back; ignored."""

_REALTIME_MODELS = ("gpt-realtime", "gpt-realtime-mini")
"""The models that take ``semantic_vad`` and ``near_field`` / ``far_field`` noise reduction."""

_VAD_KEYS = (
    "type",
    "threshold",
    "prefix_padding_ms",
    "silence_duration_ms",
    "end_of_utterance_detection",
    "create_response",
    "interrupt_response",
    "auto_truncate",
)
_AZURE_VAD_KEYS = (
    *_VAD_KEYS,
    "speech_duration_ms",
    "remove_filler_words",
    "languages",
    "appended_text_after_truncation",
)
_TURN_DETECTION_KEYS: dict[str, frozenset[str]] = {
    "server_vad": frozenset(_VAD_KEYS),
    "azure_semantic_vad": frozenset(_AZURE_VAD_KEYS),
    "azure_semantic_vad_en": frozenset(_AZURE_VAD_KEYS) - {"languages"},
    "azure_semantic_vad_multilingual": frozenset(_AZURE_VAD_KEYS),
    "semantic_vad": frozenset({"type", "eagerness", "create_response", "interrupt_response", "auto_truncate"}),
}
"""The keys each ``turn_detection`` type takes. SDK 1.3.1's ServerVad has no speech_duration_ms."""
_VAD_TYPES = tuple(_TURN_DETECTION_KEYS)

_EOU_MODELS = ("semantic_detection_v1", "semantic_detection_v1_en", "semantic_detection_v1_multilingual")
_EOU_THRESHOLD_LEVELS = ("low", "medium", "high", "default")
_EAGERNESS = ("auto", "low", "medium", "high")
_NOISE_REDUCTION_TYPES = ("azure_deep_noise_suppression", "near_field", "far_field")

_TRANSCRIPTION_MODELS = (
    "azure-speech",
    "mai-transcribe",
    "mai-transcribe-1",
    "mai-transcribe-2",
    "whisper-1",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-4o-transcribe-diarize",
)
_TRANSCRIPTION_OPTION_MODELS: dict[str, tuple[str, ...]] = {
    "phrase_list": ("azure-speech", "mai-transcribe", "mai-transcribe-2"),
    "custom_speech": ("azure-speech",),
    # The OpenAI transcription reference: "For gpt-4o-transcribe models (excluding
    # gpt-4o-transcribe-diarize), the prompt is a free text string".
    "prompt": ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"),
}
"""Optional transcription settings that only some transcription models take."""

MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
TEMPERATURE_RANGE = (0.6, 1.2)
MAX_OUTPUT_TOKENS = 4096


def turn_detection_defaults(kind: str, api_version: str) -> dict[str, Any]:
    """The settings a ``turn_detection`` of type ``kind`` starts with in ``api_version``."""
    if kind == "semantic_vad":
        return {
            "type": kind,
            "eagerness": "auto",
            "create_response": True,
            "interrupt_response": True,
            "auto_truncate": False,
        }
    # prefix_padding_ms defaults rose in api-version 2026-04-10 (dated versions sort as text).
    new = api_version >= "2026-04-10"
    td: dict[str, Any] = {
        "type": kind,
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
        "create_response": True,
        "interrupt_response": True,
        "auto_truncate": False,
    }
    if kind == "server_vad":
        td["prefix_padding_ms"] = 400 if new else 300
    else:
        td.update(prefix_padding_ms=420 if new else 300, speech_duration_ms=80, remove_filler_words=False)
    return td


class Invalid(Exception):
    """A client event field the service would reject: becomes one ``error`` event."""

    def __init__(self, message: str, param: str | None, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


# Field checks: each raises Invalid naming ``param`` (the field's path, e.g. session.temperature).


def _invalid_type(param: str, expected: str) -> NoReturn:
    raise Invalid(f"Invalid type for '{param}': expected {expected}.", param, "invalid_type")


def _check_object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        _invalid_type(param, "an object")
    return value


def _check_known_keys(value: dict[str, Any], allowed: Collection[str], param: str) -> None:
    for key in value:
        if key not in allowed:
            raise Invalid(f"Unknown parameter: '{param}.{key}'.", f"{param}.{key}", "unknown_parameter")


def _check_required(value: dict[str, Any], key: str, param: str) -> Any:
    if value.get(key) is None:
        raise Invalid(
            f"Missing required parameter: '{param}.{key}'.", f"{param}.{key}", "missing_required_parameter"
        )
    return value[key]


def _check_choice(value: Any, choices: Collection[str], param: str) -> None:
    if not isinstance(value, str) or value not in choices:
        raise Invalid(f"Invalid value: {value!r}. Supported values are: " + ", ".join(choices) + ".", param)


def _check_bool(value: Any, param: str) -> None:
    if not isinstance(value, bool):
        _invalid_type(param, "a boolean")


def _check_string(value: Any, param: str) -> None:
    if not isinstance(value, str):
        _invalid_type(param, "a string")


def _check_strings(value: Any, param: str) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        _invalid_type(param, "an array of strings")


def _check_number(value: Any, param: str, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _invalid_type(param, "a number")
    if not low <= value <= high:
        raise Invalid(f"Invalid '{param}': {value} is not between {low} and {high}.", param)


def _check_int(value: Any, param: str, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        _invalid_type(param, "an integer")
    if value < low or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise Invalid(f"Invalid '{param}': {value} must be {bounds}.", param)


def _check_ms(value: Any, param: str) -> None:
    _check_int(value, param, 0)


def _check_eou(value: Any, param: str) -> None:
    """end_of_utterance_detection: null, or {model, threshold_level?, timeout_ms?}."""
    if value is None:
        return
    eou = _check_object(value, param)
    _check_known_keys(eou, ("model", "threshold_level", "timeout_ms"), param)
    _check_choice(_check_required(eou, "model", param), _EOU_MODELS, f"{param}.model")
    if "threshold_level" in eou:
        _check_choice(eou["threshold_level"], _EOU_THRESHOLD_LEVELS, f"{param}.threshold_level")
    if "timeout_ms" in eou:
        _check_ms(eou["timeout_ms"], f"{param}.timeout_ms")


_TURN_DETECTION_CHECKS: dict[str, Callable[[Any, str], None]] = {
    "threshold": lambda value, param: _check_number(value, param, 0.0, 1.0),
    "prefix_padding_ms": _check_ms,
    "silence_duration_ms": _check_ms,
    "speech_duration_ms": _check_ms,
    "end_of_utterance_detection": _check_eou,
    "create_response": _check_bool,
    "interrupt_response": _check_bool,
    "auto_truncate": _check_bool,
    "remove_filler_words": _check_bool,
    "languages": _check_strings,
    "appended_text_after_truncation": _check_string,
    "eagerness": lambda value, param: _check_choice(value, _EAGERNESS, param),
}
"""Value checks of the turn_detection keys (which keys a type takes: _TURN_DETECTION_KEYS)."""


def merge_turn_detection(
    current: dict[str, Any] | None, value: Any, api_version: str, model: str | None
) -> dict[str, Any] | None:
    """The effective turn_detection after an update to ``value``: the update's keys over the
    current settings (same type) or the type's defaults (new type)."""
    param = "session.turn_detection"
    if value is None:
        return None
    update = _check_object(value, param)
    kind = update.get("type", (current or {}).get("type", "server_vad"))
    _check_choice(kind, _VAD_TYPES, f"{param}.type")
    if kind == "semantic_vad" and model not in _REALTIME_MODELS:
        raise Invalid(
            "turn_detection type 'semantic_vad' is only supported with the models "
            + " and ".join(_REALTIME_MODELS)
            + f", not {model!r}.",
            f"{param}.type",
        )
    _check_known_keys(update, _TURN_DETECTION_KEYS[kind], param)
    for key, field_value in update.items():
        check = _TURN_DETECTION_CHECKS.get(key)
        if check is not None:
            check(field_value, f"{param}.{key}")
    base = (
        current
        if current is not None and current.get("type") == kind
        else turn_detection_defaults(kind, api_version)
    )
    return {**base, **update, "type": kind}


def _check_noise_reduction(value: Any, model: str | None) -> None:
    param = "session.input_audio_noise_reduction"
    if value is None:
        return
    kind = _check_required(_check_object(value, param), "type", param)
    _check_choice(kind, _NOISE_REDUCTION_TYPES, f"{param}.type")
    if kind != "azure_deep_noise_suppression" and model not in _REALTIME_MODELS:
        raise Invalid(
            f"Noise reduction type {kind!r} is only supported with the models "
            + " and ".join(_REALTIME_MODELS)
            + f", not {model!r}; use 'azure_deep_noise_suppression'.",
            f"{param}.type",
        )


def _check_transcription(value: Any, model: str | None) -> None:
    param = "session.input_audio_transcription"
    if value is None:
        return
    settings = _check_object(value, param)
    _check_known_keys(settings, ("model", "language", *_TRANSCRIPTION_OPTION_MODELS), param)
    stt = _check_required(settings, "model", param)
    _check_choice(stt, _TRANSCRIPTION_MODELS, f"{param}.model")
    if "language" in settings:
        _check_string(settings["language"], f"{param}.language")
    if "phrase_list" in settings:
        _check_strings(settings["phrase_list"], f"{param}.phrase_list")
    if "custom_speech" in settings:
        _check_object(settings["custom_speech"], f"{param}.custom_speech")
    if "prompt" in settings:
        _check_string(settings["prompt"], f"{param}.prompt")
    for option, models in _TRANSCRIPTION_OPTION_MODELS.items():
        if option in settings and stt not in models:
            raise Invalid(
                f"'{option}' is only supported with the transcription models {', '.join(models)}, not {stt!r}.",
                f"{param}.{option}",
            )


def _check_metadata(value: Any, model: str | None) -> None:
    param = "session.metadata"
    metadata = _check_object(value, param)
    if len(metadata) > MAX_METADATA_PAIRS:
        raise Invalid(f"'{param}' holds at most {MAX_METADATA_PAIRS} pairs, not {len(metadata)}.", param)
    for key, item in metadata.items():
        if len(key) > MAX_METADATA_KEY:
            raise Invalid(f"Metadata keys are at most {MAX_METADATA_KEY} characters: {key[:80]!r}.", param)
        _check_string(item, f"{param}.{key}")
        if len(item) > MAX_METADATA_VALUE:
            raise Invalid(f"Metadata values are at most {MAX_METADATA_VALUE} characters.", f"{param}.{key}")


def _check_temperature(value: Any, model: str | None) -> None:
    _check_number(value, "session.temperature", *TEMPERATURE_RANGE)


def _check_max_output_tokens(value: Any, model: str | None) -> None:
    if value != "inf":
        _check_int(value, "session.max_response_output_tokens", 1, MAX_OUTPUT_TOKENS)


def _check_avatar(value: Any, model: str | None) -> None:
    if value is not None:
        _check_object(value, "session.avatar")


_SESSION_CHECKS: dict[str, Callable[[Any, str | None], None]] = {
    "input_audio_noise_reduction": _check_noise_reduction,
    "input_audio_transcription": _check_transcription,
    "metadata": _check_metadata,
    "temperature": _check_temperature,
    "max_response_output_tokens": _check_max_output_tokens,
    "avatar": _check_avatar,
}
"""Value checks of session fields, given the value and the session's model."""


def merge_session(
    current: dict[str, Any], update: dict[str, Any], api_version: str, audio_started: bool
) -> dict[str, Any]:
    """The effective session after ``update``; raises :class:`Invalid` and leaves ``current``
    untouched on any invalid field."""
    new = dict(current)
    model = current.get("model")
    for key, value in update.items():
        if key in _SERVER_OWNED_KEYS:
            continue
        if key not in _SESSION_KEYS:
            raise Invalid(f"Unknown parameter: 'session.{key}'.", f"session.{key}", "unknown_parameter")
        if key == "model":
            if value not in (None, model):
                raise Invalid("The model can't be changed after the session has started", "session.model")
            continue
        if key == "instructions" and value is not None and "agent" in current:
            raise Invalid(
                "The instructions property isn't supported when you're using a custom agent.",
                "session.instructions",
                "unsupported_parameter",
            )
        if key == "turn_detection":
            new[key] = merge_turn_detection(current.get(key), value, api_version, model)
            continue
        check = _SESSION_CHECKS.get(key)
        if check is not None:
            check(value, model)
        new[key] = value
    _merge_audio_formats(new, current, update)
    if audio_started:
        for key in ("input_audio_format", "input_audio_sampling_rate", "output_audio_format"):
            if new.get(key) != current.get(key):
                raise Invalid(f"{key} can't be changed after audio has been sent in the session", f"session.{key}")
    modalities = new.get("modalities")
    if not isinstance(modalities, list) or not all(isinstance(m, str) for m in modalities):
        raise Invalid("modalities must be a list of strings", "session.modalities")
    return new


def _merge_audio_formats(new: dict[str, Any], current: dict[str, Any], update: dict[str, Any]) -> None:
    """Check the audio formats of ``new`` and set its effective input sampling rate (8000 for
    G.711; back to 24000 when G.711 input turns into pcm16 without a rate)."""
    if new.get("input_audio_format") not in INPUT_FORMATS:
        raise Invalid(
            f"Invalid input_audio_format {new.get('input_audio_format')!r}; supported: " + ", ".join(INPUT_FORMATS),
            "session.input_audio_format",
        )
    if output_format(new.get("output_audio_format")) is None:
        raise Invalid(
            f"Invalid output_audio_format {new.get('output_audio_format')!r}", "session.output_audio_format"
        )
    rate = update.get("input_audio_sampling_rate")
    if new["input_audio_format"] != "pcm16":
        if rate not in (None, 8000):
            raise Invalid("G.711 input audio is sampled at 8000 Hz", "session.input_audio_sampling_rate")
        new["input_audio_sampling_rate"] = 8000
    elif rate is None:
        if current["input_audio_format"] != "pcm16":
            new["input_audio_sampling_rate"] = 24000
    elif isinstance(rate, bool) or rate not in PCM16_INPUT_RATES:
        raise Invalid(
            f"Invalid input_audio_sampling_rate {rate!r}; supported: " + ", ".join(map(str, PCM16_INPUT_RATES)),
            "session.input_audio_sampling_rate",
        )


# --- response.create -----------------------------------------------------------------------


def check_response_params(params: Any, agent: bool) -> tuple[dict[str, Any], str | None]:
    """The ``response`` of a ``response.create`` (``{}`` if absent) and the text of its
    ``pre_generated_assistant_message`` (None if it has none); raises :class:`Invalid`."""
    if params is None:
        return {}, None
    params = _check_object(params, "response")
    if "output_audio_format" in params and output_format(params["output_audio_format"]) is None:
        raise Invalid(
            f"Invalid output_audio_format {params['output_audio_format']!r}", "response.output_audio_format"
        )
    if agent and params.get("instructions") is not None:
        raise Invalid(
            "The instructions property isn't supported when you're using a custom agent.",
            "response.instructions",
            "unsupported_parameter",
        )
    if "pre_generated_assistant_message" not in params:
        return params, None
    return params, _pre_generated_text(params["pre_generated_assistant_message"])


def _pre_generated_text(message: Any) -> str:
    """The text of a ``pre_generated_assistant_message``: an assistant message with exactly one
    text part ("You can only include one text entry in the content field"); raises :class:`Invalid`."""
    param = "response.pre_generated_assistant_message"
    message = _check_object(message, param)
    if message.get("type") != "message":
        raise Invalid(f"'{param}.type' must be 'message'.", f"{param}.type")
    if message.get("role") != "assistant":
        raise Invalid(f"'{param}.role' must be 'assistant'.", f"{param}.role")
    content = message.get("content")
    if not isinstance(content, list) or len(content) != 1:
        raise Invalid("You can only include one text entry in the content field.", f"{param}.content")
    part = _check_object(content[0], f"{param}.content[0]")
    if part.get("type") != "text":
        raise Invalid(f"'{param}.content[0].type' must be 'text'.", f"{param}.content[0].type")
    text = part.get("text")
    if not isinstance(text, str) or not text.strip():
        raise Invalid(f"'{param}.content[0].text' must be a non-empty string.", f"{param}.content[0].text")
    return text

"""A local Voice Live-compatible realtime server.

It speaks the Voice Live WebSocket protocol closely enough for the gateway, the real SDK and
plain WebSocket clients: session set-up, input audio with an energy VAD (or manual turns with
``turn_detection: null``), responses that stream recorded speech (gateway/assets) faster than real
time, ``pre_generated_assistant_message`` responses, scripted function calls, barge-in,
cancellation, truncation and the protocol's error paths. It is the gateway's backend when no
Azure endpoint is configured, the counterpart of the socket-level tests, and the demo's "model".

It is as strict as the Voice Live documentation (the 2026-07-15 API reference and SDK 1.3.1), so
that a client passing against it does not rely on leniency the service may not have:

* the upgrade needs a known ``api-version`` (:data:`API_VERSIONS`; ``v1`` speaks another wire
  shape) and ``model`` or ``agent-name`` + ``agent-project-name``, else HTTP 400;
* ``session.update`` is checked field by field (unknown keys, per-type ``turn_detection`` keys,
  noise reduction and transcription models, metadata, temperature, token limit, agent
  ``instructions``, format changes after audio); any fault gets one ``error`` naming the field in
  ``param``, the session stays unchanged and no ``session.updated`` is sent;
* ``output_audio_buffer.clear`` is answered only on avatar sessions (an ``error`` otherwise, see
  :attr:`SimulatorSettings.output_buffer_clear`);
* ``response.function_call_arguments.done`` carries no ``name`` (the function's name is on the
  ``function_call`` item), unless :attr:`SimulatorSettings.function_call_done_name` is set;
* agent sessions take no ``instructions`` in ``response.create``.

Run it alone with ``gateway simulator``; embed it with :func:`start_simulator`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import hmac
import itertools
import json
import re
import secrets
import signal
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

from aiohttp import WSMsgType, web

from gateway.audio import ASSETS, is_base64
from gateway.log import get_logger, register_secret
from gateway.simulator.voice import (
    GREETING,
    INPUT_FORMATS,
    PCM16_INPUT_RATES,
    REPLIES,
    OutputFormat,
    Speech,
    clip_speech,
    decode_input,
    output_format,
    text_speech,
)
from gateway.vad import EnergyVad, VadEvent


def _log(**fields: Any) -> Any:
    # Resolved at each use, never at import: a logger bound before gateway.log.configure() runs
    # would keep the default configuration (and skip secret scrubbing).
    return get_logger("simulator", **fields)


Observer = Callable[[str, dict[str, Any]], None]

MAX_CLIENT_MESSAGE = 24 * 1024 * 1024  # a 15 MiB append is 20 MiB of base64, plus JSON
MAX_APPEND_BYTES = 15 * 1024 * 1024
MAX_DELTA_BYTES = 2 * 1024 * 1024  # keeps every server message well under the SDK's 4 MiB
MIN_COMMIT_MS = 100
CLOSE_TIMEOUT_S = 5.0

API_VERSIONS = (
    "2025-05-01-preview",
    "2025-10-01",
    "2026-01-01-preview",
    "2026-04-10",
    "2026-06-01-preview",
    "2026-07-15",
    "2026-07-31-preview",
)
"""The api-versions the simulator accepts: the dated Voice Live versions, all with the same
(flat session, ``response.audio.*``) wire shape. The ``v1`` label, which uses the OpenAI GA shape,
is refused like any other unknown version."""

OutputBufferClear = Literal["auto", "ack", "error", "ignore"]


@dataclass(frozen=True)
class ToolCall:
    """A function call the simulated model makes instead of speaking (see
    :attr:`SimulatorSettings.tool_calls`)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("a tool call needs a function name")
        if not isinstance(self.arguments, dict):
            raise ValueError(f"the arguments of tool call {self.name!r} must be a JSON object (a dict)")
        try:
            self.arguments_json()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the arguments of tool call {self.name!r} are not JSON: {exc}") from None

    def arguments_json(self) -> str:
        """The arguments as the JSON text a model streams."""
        return json.dumps(self.arguments, separators=(",", ":"), allow_nan=False)


@dataclass
class SimulatorSettings:
    api_key: str | None = None
    """With ``api_key`` or ``bearer_token`` set, the upgrade needs a matching ``api-key`` header or
    ``Authorization: Bearer <token>`` (or the same as query parameters), else HTTP 401."""
    bearer_token: str | None = None
    output_buffer_clear: OutputBufferClear = "auto"
    """Answer to ``output_audio_buffer.clear``. ``auto`` (the documented behaviour: the event is for
    avatar sessions only): ``output_audio_buffer.cleared`` on a session with an ``avatar``
    configured, else an ``error`` (code ``unsupported_operation``). ``ack``, ``error`` and
    ``ignore`` force ``output_audio_buffer.cleared``, the error, or no answer on every session."""
    function_call_done_name: bool = False
    """Add the function's ``name`` to ``response.function_call_arguments.done``. The 2026-07-15
    reference lists no ``name`` there (it is on the ``function_call`` item of
    ``response.output_item.added`` / ``conversation.item.created`` / ``response.output_item.done``),
    so by default it is left out."""
    response_delay_ms: int = 300
    """From commit (or ``response.create``) to ``response.created``: the model "thinking"."""
    audio_speed: float = 4.0
    """Reply audio is streamed this many times faster than real time (``math.inf``: at once)."""
    chunk_pattern_ms: tuple[int, ...] = (120, 240, 80, 400, 200)
    """Audio per ``response.audio.delta``, cycled."""
    vad_threshold_dbfs: float = -40.0
    vad_min_speech_ms: int = 100
    session_lifetime_s: int | None = 1800
    """Sessions close after this long; announced as ``expires_at`` (None: no limit, not announced)."""
    observer: Observer | None = None
    """Called with (event_name, fields) at notable moments: ``session.created``, ``speech_started``,
    ``speech_stopped``, ``response.created`` (response_id; for speech: clip, the shipped clip or
    None for synthetic audio, and text, what the response says; for a function call: clip None and
    function), ``response.done`` (status), ``function_call`` (name, call_id, arguments: the JSON
    text), when a call has been sent whole, ``function_call_output`` (call_id, output),
    ``truncated`` (item_id, audio_end_ms, item_audio_ms), ``truncate_rejected``, ``cancelled``
    (reason), ``error`` (code), ``closed`` (code). Every call also carries ``session`` (the
    session id)."""
    record: bool = True
    """Keep every event and closed session in :class:`SimulatorState` for inspection. A
    long-running server turns this off."""
    assets: Path = ASSETS
    """Folder holding the reply clips and speech.txt."""
    tool_calls: Mapping[int, ToolCall] = field(default_factory=dict)
    """Scripted function calls, by caller turn (1: the caller's first turn in the session). The
    response to that turn is a call of the function instead of a spoken reply, if the session (or
    the ``response.create``) declares a function of that name and ``tool_choice`` is not
    ``"none"``; otherwise a warning is logged and the reply is spoken. After the client sends the
    ``function_call_output``, its ``response.create`` gets the next spoken reply. A
    ``response.create`` with a ``pre_generated_assistant_message`` is never a scripted call (nor
    a turn's reply: it says its own text)."""
    function_call_ms: int = 200
    """A function call's arguments are streamed over this long, split evenly between the deltas
    (not scaled by ``audio_speed``)."""

    def __post_init__(self) -> None:
        if not self.audio_speed > 0:
            raise ValueError("audio_speed must be > 0")
        if not self.chunk_pattern_ms or min(self.chunk_pattern_ms) <= 0:
            raise ValueError("chunk_pattern_ms needs at least one positive duration")
        if self.output_buffer_clear not in ("auto", "ack", "error", "ignore"):
            raise ValueError("output_buffer_clear must be auto, ack, error or ignore")
        if self.response_delay_ms < 0 or self.vad_min_speech_ms < 0 or self.function_call_ms < 0:
            raise ValueError("response_delay_ms, vad_min_speech_ms and function_call_ms must be >= 0")
        for turn, call in self.tool_calls.items():
            if isinstance(turn, bool) or not isinstance(turn, int) or turn < 1:
                raise ValueError(f"tool_calls keys are caller turns counted from 1, not {turn!r}")
            if not isinstance(call, ToolCall):
                raise ValueError(f"tool_calls[{turn}] must be a ToolCall, not {type(call).__name__}")


# --- session configuration -------------------------------------------------------------------

_CLIENT_EVENTS = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "output_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.retrieve",
    "conversation.item.truncate",
    "conversation.item.delete",
    "response.create",
    "response.cancel",
    "input_text.delta",
    "input_text.done",
)

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


def _turn_detection_defaults(kind: str, api_version: str) -> dict[str, Any]:
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


class _Invalid(Exception):
    """A client event field the service would reject: becomes one ``error`` event."""

    def __init__(self, message: str, param: str | None, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


# Field checks: each raises _Invalid naming ``param`` (the field's path, e.g. session.temperature).


def _invalid_type(param: str, expected: str) -> NoReturn:
    raise _Invalid(f"Invalid type for '{param}': expected {expected}.", param, "invalid_type")


def _check_object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        _invalid_type(param, "an object")
    return value


def _check_known_keys(value: dict[str, Any], allowed: Collection[str], param: str) -> None:
    for key in value:
        if key not in allowed:
            raise _Invalid(f"Unknown parameter: '{param}.{key}'.", f"{param}.{key}", "unknown_parameter")


def _check_required(value: dict[str, Any], key: str, param: str) -> Any:
    if value.get(key) is None:
        raise _Invalid(
            f"Missing required parameter: '{param}.{key}'.", f"{param}.{key}", "missing_required_parameter"
        )
    return value[key]


def _check_choice(value: Any, choices: Collection[str], param: str) -> None:
    if not isinstance(value, str) or value not in choices:
        raise _Invalid(f"Invalid value: {value!r}. Supported values are: " + ", ".join(choices) + ".", param)


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
        raise _Invalid(f"Invalid '{param}': {value} is not between {low} and {high}.", param)


def _check_int(value: Any, param: str, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        _invalid_type(param, "an integer")
    if value < low or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise _Invalid(f"Invalid '{param}': {value} must be {bounds}.", param)


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


def _merge_turn_detection(
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
        raise _Invalid(
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
        else _turn_detection_defaults(kind, api_version)
    )
    return {**base, **update, "type": kind}


def _check_noise_reduction(value: Any, model: str | None) -> None:
    param = "session.input_audio_noise_reduction"
    if value is None:
        return
    kind = _check_required(_check_object(value, param), "type", param)
    _check_choice(kind, _NOISE_REDUCTION_TYPES, f"{param}.type")
    if kind != "azure_deep_noise_suppression" and model not in _REALTIME_MODELS:
        raise _Invalid(
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
            raise _Invalid(
                f"'{option}' is only supported with the transcription models {', '.join(models)}, not {stt!r}.",
                f"{param}.{option}",
            )


def _check_metadata(value: Any, model: str | None) -> None:
    param = "session.metadata"
    metadata = _check_object(value, param)
    if len(metadata) > MAX_METADATA_PAIRS:
        raise _Invalid(f"'{param}' holds at most {MAX_METADATA_PAIRS} pairs, not {len(metadata)}.", param)
    for key, item in metadata.items():
        if len(key) > MAX_METADATA_KEY:
            raise _Invalid(f"Metadata keys are at most {MAX_METADATA_KEY} characters: {key[:80]!r}.", param)
        _check_string(item, f"{param}.{key}")
        if len(item) > MAX_METADATA_VALUE:
            raise _Invalid(f"Metadata values are at most {MAX_METADATA_VALUE} characters.", f"{param}.{key}")


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


def _merge_session(
    current: dict[str, Any], update: dict[str, Any], api_version: str, audio_started: bool
) -> dict[str, Any]:
    """The effective session after ``update``; raises :class:`_Invalid` and leaves ``current``
    untouched on any invalid field."""
    new = dict(current)
    model = current.get("model")
    for key, value in update.items():
        if key in _SERVER_OWNED_KEYS:
            continue
        if key not in _SESSION_KEYS:
            raise _Invalid(f"Unknown parameter: 'session.{key}'.", f"session.{key}", "unknown_parameter")
        if key == "model":
            if value not in (None, model):
                raise _Invalid("The model can't be changed after the session has started", "session.model")
            continue
        if key == "instructions" and value is not None and "agent" in current:
            raise _Invalid(
                "The instructions property isn't supported when you're using a custom agent.",
                "session.instructions",
                "unsupported_parameter",
            )
        if key == "turn_detection":
            new[key] = _merge_turn_detection(current.get(key), value, api_version, model)
            continue
        check = _SESSION_CHECKS.get(key)
        if check is not None:
            check(value, model)
        new[key] = value
    _merge_audio_formats(new, current, update)
    if audio_started:
        for key in ("input_audio_format", "input_audio_sampling_rate", "output_audio_format"):
            if new.get(key) != current.get(key):
                raise _Invalid(f"{key} can't be changed after audio has been sent in the session", f"session.{key}")
    modalities = new.get("modalities")
    if not isinstance(modalities, list) or not all(isinstance(m, str) for m in modalities):
        raise _Invalid("modalities must be a list of strings", "session.modalities")
    return new


def _merge_audio_formats(new: dict[str, Any], current: dict[str, Any], update: dict[str, Any]) -> None:
    """Check the audio formats of ``new`` and set its effective input sampling rate (8000 for
    G.711; back to 24000 when G.711 input turns into pcm16 without a rate)."""
    if new.get("input_audio_format") not in INPUT_FORMATS:
        raise _Invalid(
            f"Invalid input_audio_format {new.get('input_audio_format')!r}; supported: " + ", ".join(INPUT_FORMATS),
            "session.input_audio_format",
        )
    if output_format(new.get("output_audio_format")) is None:
        raise _Invalid(
            f"Invalid output_audio_format {new.get('output_audio_format')!r}", "session.output_audio_format"
        )
    rate = update.get("input_audio_sampling_rate")
    if new["input_audio_format"] != "pcm16":
        if rate not in (None, 8000):
            raise _Invalid("G.711 input audio is sampled at 8000 Hz", "session.input_audio_sampling_rate")
        new["input_audio_sampling_rate"] = 8000
    elif rate is None:
        if current["input_audio_format"] != "pcm16":
            new["input_audio_sampling_rate"] = 24000
    elif isinstance(rate, bool) or rate not in PCM16_INPUT_RATES:
        raise _Invalid(
            f"Invalid input_audio_sampling_rate {rate!r}; supported: " + ", ".join(map(str, PCM16_INPUT_RATES)),
            "session.input_audio_sampling_rate",
        )


# --- response.create -----------------------------------------------------------------------


def _check_response_params(params: Any, agent: bool) -> tuple[dict[str, Any], str | None]:
    """The ``response`` of a ``response.create`` (``{}`` if absent) and the text of its
    ``pre_generated_assistant_message`` (None if it has none); raises :class:`_Invalid`."""
    if params is None:
        return {}, None
    params = _check_object(params, "response")
    if "output_audio_format" in params and output_format(params["output_audio_format"]) is None:
        raise _Invalid(
            f"Invalid output_audio_format {params['output_audio_format']!r}", "response.output_audio_format"
        )
    if agent and params.get("instructions") is not None:
        raise _Invalid(
            "The instructions property isn't supported when you're using a custom agent.",
            "response.instructions",
            "unsupported_parameter",
        )
    if "pre_generated_assistant_message" not in params:
        return params, None
    return params, _pre_generated_text(params["pre_generated_assistant_message"])


def _pre_generated_text(message: Any) -> str:
    """The text of a ``pre_generated_assistant_message``: an assistant message with exactly one
    text part ("You can only include one text entry in the content field"); raises :class:`_Invalid`."""
    param = "response.pre_generated_assistant_message"
    message = _check_object(message, param)
    if message.get("type") != "message":
        raise _Invalid(f"'{param}.type' must be 'message'.", f"{param}.type")
    if message.get("role") != "assistant":
        raise _Invalid(f"'{param}.role' must be 'assistant'.", f"{param}.role")
    content = message.get("content")
    if not isinstance(content, list) or len(content) != 1:
        raise _Invalid("You can only include one text entry in the content field.", f"{param}.content")
    part = _check_object(content[0], f"{param}.content[0]")
    if part.get("type") != "text":
        raise _Invalid(f"'{param}.content[0].type' must be 'text'.", f"{param}.content[0].type")
    text = part.get("text")
    if not isinstance(text, str) or not text.strip():
        raise _Invalid(f"'{param}.content[0].text' must be a non-empty string.", f"{param}.content[0].text")
    return text


# --- one response --------------------------------------------------------------------------


@dataclass
class _Response:
    id: str
    clip: str | None  # the reply clip to speak; None for pre-generated text and function calls
    fmt: OutputFormat
    text: str | None = None  # a pre_generated_assistant_message's text, spoken instead of a clip
    call: ToolCall | None = None  # a function call instead of speech
    call_id: str | None = None
    arguments: str = ""  # a function call's arguments sent so far (JSON text)
    item_id: str | None = None
    created_sent: bool = False
    item_added: bool = False
    part_added: bool = False
    generating: bool = True  # audio still being produced: cancellable
    transcript: str = ""  # transcript sent so far
    audio_bytes: int = 0
    first_delta_at: float | None = None  # monotonic time of the first audio delta


@dataclass
class _AssistantAudio:
    """Bookkeeping for an assistant item that carried audio."""

    fmt: OutputFormat
    ms: int  # current length (after truncations)
    first_delta_at: float


_WORD_RE = re.compile(r"\s*\S+\s*")  # words with the spaces around them: they add up to the text


class SimSession:
    """One simulated Voice Live session: one WebSocket."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        settings: SimulatorSettings,
        query: dict[str, str],
        auth: str,
        index: int,
    ) -> None:
        self.id = "sess_" + secrets.token_hex(10)
        self.index = index
        self.query = query
        self.auth = auth
        self.received: list[dict[str, Any]] = []
        self.appended: list[str] = []
        self.sent: list[dict[str, Any]] = []
        self.truncations: list[dict[str, Any]] = []
        self.function_calls: list[dict[str, Any]] = []
        """Function calls the simulator made: call_id, name, arguments (JSON text), response_id,
        status (completed or cancelled)."""
        self.function_call_outputs: list[dict[str, Any]] = []
        """Accepted ``function_call_output`` items: item_id, call_id, output."""
        self.spoken: list[dict[str, Any]] = []
        """What each spoken response set out to say (recorded as it starts, whether or not it is
        then cut): response_id, text, clip (the shipped clip, None for synthetic speech),
        pre_generated (True for a ``pre_generated_assistant_message``)."""
        self.items_audio_bytes: dict[str, int] = {}
        self.closed = asyncio.Event()
        self.close_code: int | None = None

        self._ws = ws
        self._settings = settings
        self._log = _log(session=self.id)
        self._api_version = query["api-version"]
        self._counters = {"event": 0, "item": 0, "resp": 0, "call": 0}
        self._requested_close: int | None = None
        self._close_reason = ""
        self._runner: asyncio.Task[Any] | None = None
        self._in_receive = False
        self._wakeup_sent = False
        self._tasks: set[asyncio.Task[None]] = set()

        now = time.time()
        lifetime = settings.session_lifetime_s
        self._deadline = None if lifetime is None else asyncio.get_running_loop().time() + lifetime
        agent = query.get("agent-name")
        self.session: dict[str, Any] = {
            "id": self.id,
            "object": "realtime.session",
            "model": query.get("model"),
            "modalities": ["text", "audio"],
            "instructions": "",
            "voice": {"type": "azure-standard", "name": "en-US-AvaMultilingualNeural"},
            "input_audio_format": "pcm16",
            "output_audio_format": "pcm16",
            "input_audio_sampling_rate": 24000,
            "input_audio_noise_reduction": None,
            "input_audio_echo_cancellation": None,
            "input_audio_transcription": None,
            "turn_detection": _turn_detection_defaults("server_vad", self._api_version),
            "tools": [],
            "tool_choice": "auto",
            "temperature": 0.8,
            "max_response_output_tokens": "inf",
        }
        if agent:
            del self.session["instructions"]  # an agent has its own, and takes none from the client
            self.session["agent"] = {
                "type": "agent",
                "name": agent,
                "agent_id": agent,
                "thread_id": "thread_" + self.id[5:],
            }
        if lifetime is not None:
            self.session["expires_at"] = int(now) + lifetime

        # input audio
        self._audio_bytes_in = 0  # every appended byte, whatever the format
        self._clock = 0  # whole samples appended since the session started
        self._odd_byte = b""  # pcm16: half a sample left over from the last append
        self._buffer_samples = 0  # since the last commit or clear
        self._vad: EnergyVad | None = None
        self._speech: tuple[str, int] | None = None  # (item id, audio_start_ms) while speaking
        self._user_turns = 0
        self._last_reply = 0  # reply slot of the last spoken answer to a caller turn
        self._tool_turns: set[int] = set()  # caller turns whose scripted call has been decided
        self._call_ids: set[str] = set()  # call_id of every function_call item in the conversation

        # conversation
        self.items: dict[str, dict[str, Any]] = {}
        self._assistant_audio: dict[str, _AssistantAudio] = {}
        self._last_assistant: str | None = None
        self._response: _Response | None = None
        self._response_task: asyncio.Task[None] | None = None
        self._configure_vad()

    # --- ids, sending, errors -------------------------------------------------------------

    def _next_id(self, kind: str) -> str:
        self._counters[kind] += 1
        return f"{kind}_{self.index:03d}{self._counters[kind]:05d}"

    @property
    def _last_item_id(self) -> str | None:
        return next(reversed(self.items), None)

    def _notify(self, moment: str, /, **fields: Any) -> None:
        observer = self._settings.observer
        if observer is None:
            return
        try:
            observer(moment, {"session": self.id, **fields})
        except Exception:
            self._log.exception("simulator observer failed", moment=moment)

    async def send_event(self, ev: dict[str, Any]) -> None:
        """Send one server event (an ``event_id`` is added if missing). The frame is written before
        the first suspension point, so callers may update their state right before calling."""
        ev = {**ev}
        ev.setdefault("event_id", self._next_id("event"))
        if self._settings.record:
            self.sent.append(ev)
        if self._ws.closed:
            return
        try:
            await self._ws.send_str(json.dumps(ev, separators=(",", ":")))
        except ConnectionError:
            self._log.debug("simulator send on a closing socket", type=ev.get("type"))

    async def _error(
        self,
        code: str,
        message: str,
        client_event: dict[str, Any] | None = None,
        param: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        event_id = client_event.get("event_id") if isinstance(client_event, dict) else None
        self._notify("error", code=code)
        self._log.info("simulator error reply", code=code, error=message)
        await self.send_event(
            {
                "type": "error",
                "error": {
                    "type": kind,
                    "code": code,
                    "message": message,
                    "param": param,
                    "event_id": event_id if isinstance(event_id, str) else None,
                },
            }
        )

    async def close(self, code: int = 1011, reason: str = "") -> None:
        """Close the socket from the server side (fault injection) and wait until the session ends.

        The session's own task performs the closing handshake, so the client gets the close frame
        with ``code`` and has the time to answer it, as with a real server."""
        self._request_close(code, reason)
        await self.closed.wait()

    def _request_close(self, code: int, reason: str = "") -> None:
        if self._requested_close is not None or self.closed.is_set():
            return
        self._requested_close = code
        self._close_reason = reason
        if self._runner is not None and self._in_receive and self._runner is not asyncio.current_task():
            # Wake the session's task parked in receive(); it closes the socket itself.
            self._wakeup_sent = True
            self._runner.cancel()

    # --- main loop ------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._runner = asyncio.current_task()
        try:
            await self.send_event({"type": "session.created", "session": self.session})
            self._notify("session.created", model=self.session.get("model"))
            while self._requested_close is None:
                timeout = None if self._deadline is None else max(0.001, self._deadline - loop.time())
                self._in_receive = True
                try:
                    msg = await self._ws.receive(timeout=timeout)
                except TimeoutError:
                    lifetime = self._settings.session_lifetime_s
                    await self._error(
                        "session_expired", f"Your session hit the maximum duration of {lifetime} seconds."
                    )
                    self._request_close(1000, "session expired")
                    break
                except asyncio.CancelledError:
                    runner = self._runner
                    if self._wakeup_sent and runner is not None and runner.cancelling() == 1:
                        runner.uncancel()  # only our own wake-up: go and close
                        break
                    raise
                finally:
                    self._in_receive = False
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await self._on_message(msg.data)
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
        finally:
            try:
                await self._stop_tasks()
                if not self._ws.closed:
                    code = self._requested_close if self._requested_close is not None else 1000
                    with contextlib.suppress(ConnectionError):
                        await self._ws.close(code=code, message=self._close_reason.encode()[:120])
            finally:
                self.close_code = (
                    self._requested_close if self._requested_close is not None else self._ws.close_code
                )
                self.closed.set()
                self._notify("closed", code=self.close_code)
                self._log.info("simulator session closed", code=self.close_code)

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)

    async def _on_message(self, data: str | bytes) -> None:
        try:
            ev = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            await self._error("invalid_json", f"The message is not valid JSON: {exc}")
            return
        if not isinstance(ev, dict):
            await self._error("invalid_event", "A client event must be a JSON object")
            return
        kind = ev.get("type")
        try:
            if kind == "input_audio_buffer.append":
                await self._on_append(ev)
            else:
                await self._dispatch(kind, ev)
        except ConnectionError:
            raise
        except Exception:
            self._log.exception("simulator failed on a client event", type=kind)
            await self._error(
                "server_error", "The server had an error processing the event.", ev, kind="server_error"
            )

    async def _dispatch(self, kind: Any, ev: dict[str, Any]) -> None:
        if self._settings.record:
            self.received.append(ev)
        if not isinstance(kind, str):
            await self._error("missing_required_parameter", "Missing required parameter: 'type'.", ev, "type")
            return
        handler = self._HANDLERS.get(kind)
        if handler is None:
            await self._error(
                "invalid_value",
                f"Invalid value: '{kind}'. Supported values are: " + ", ".join(_CLIENT_EVENTS) + ".",
                ev,
                "type",
            )
            return
        await handler(self, ev)

    # --- session --------------------------------------------------------------------------

    async def _on_session_update(self, ev: dict[str, Any]) -> None:
        update = ev.get("session")
        if not isinstance(update, dict):
            await self._error(
                "missing_required_parameter", "Missing required parameter: 'session'.", ev, "session"
            )
            return
        try:
            new = _merge_session(self.session, update, self._api_version, self._audio_bytes_in > 0)
        except _Invalid as exc:
            await self._error(exc.code, exc.message, ev, exc.param)
            return
        self.session = new
        self._configure_vad()
        await self.send_event({"type": "session.updated", "session": self.session})

    def _configure_vad(self) -> None:
        td = self.session.get("turn_detection")
        if td is None:
            self._vad = None
            self._speech = None
            return
        silence = td.get("silence_duration_ms") or 500
        if self._vad is None or self._vad.rate != self.session["input_audio_sampling_rate"]:
            self._vad = EnergyVad(
                self.session["input_audio_sampling_rate"],
                self._settings.vad_threshold_dbfs,
                self._settings.vad_min_speech_ms,
                silence,
                origin_samples=self._clock,
            )
        self._vad.silence_ms = silence

    # --- input audio ----------------------------------------------------------------------

    async def _on_append(self, ev: dict[str, Any]) -> None:
        audio = ev.get("audio")
        if not isinstance(audio, str):
            if self._settings.record:
                self.received.append(ev)
            if audio is None:
                await self._error(
                    "missing_required_parameter", "Missing required parameter: 'audio'.", ev, "audio"
                )
            else:
                await self._error(
                    "invalid_type", "Invalid type for 'audio': expected a base64 string.", ev, "audio"
                )
            return
        if not is_base64(audio) or len(audio) > MAX_APPEND_BYTES * 4 // 3 + 4:
            if self._settings.record:
                self.received.append(ev)
            reason = "is not valid base64" if len(audio) <= MAX_APPEND_BYTES * 4 // 3 + 4 else "is too large"
            await self._error(
                "invalid_value", f"The 'audio' of input_audio_buffer.append {reason}.", ev, "audio"
            )
            return
        if self._settings.record:
            self.appended.append(audio)
        data = base64.b64decode(audio)
        if not data:
            return
        self._audio_bytes_in += len(data)
        fmt = self.session["input_audio_format"]
        if fmt == "pcm16":
            if self._odd_byte:
                data = self._odd_byte + data
            self._odd_byte = data[-1:] if len(data) % 2 else b""
            n = len(data) // 2
        else:
            n = len(data)
        events: list[VadEvent] = []
        if self._vad is not None and n:
            events = self._vad.feed(decode_input(fmt, data))
        self._clock += n
        self._buffer_samples += n
        for vad_event in events:
            if vad_event.kind == "start":
                await self._on_speech_started(vad_event.ms)
            else:
                await self._on_speech_stopped(vad_event.ms)

    def _rate(self) -> int:
        return int(self.session["input_audio_sampling_rate"])

    async def _on_speech_started(self, speech_ms: int) -> None:
        td = self.session["turn_detection"] or {}
        item_id = self._next_id("item")
        start_ms = max(0, speech_ms - int(td.get("prefix_padding_ms") or 0))
        self._speech = (item_id, start_ms)
        await self.send_event(
            {"type": "input_audio_buffer.speech_started", "audio_start_ms": start_ms, "item_id": item_id}
        )
        self._notify("speech_started", audio_start_ms=start_ms, item_id=item_id)
        interrupted = False
        if self._active_response() is not None and td.get("interrupt_response", True):
            await self._cancel_response("turn_detected")
            interrupted = True
        if td.get("auto_truncate") and (interrupted or self._active_response() is None):
            await self._auto_truncate()

    async def _on_speech_stopped(self, end_ms: int) -> None:
        td = self.session["turn_detection"] or {}
        if self._speech is None:
            return
        item_id, start_ms = self._speech
        self._speech = None
        await self.send_event(
            {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": end_ms, "item_id": item_id}
        )
        self._notify("speech_stopped", audio_end_ms=end_ms, item_id=item_id)
        await self._commit(item_id, end_ms - start_ms)
        if td.get("create_response", True):
            await self._start_response(None)

    async def _commit(self, item_id: str, speech_ms: int) -> None:
        previous = self._last_item_id
        self._buffer_samples = 0
        self._user_turns += 1
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "audio": None, "transcript": None}],
        }
        self.items[item_id] = item
        await self.send_event(
            {"type": "input_audio_buffer.committed", "previous_item_id": previous, "item_id": item_id}
        )
        await self.send_event(
            {"type": "conversation.item.created", "previous_item_id": previous, "item": copy.deepcopy(item)}
        )
        if self.session.get("input_audio_transcription"):
            transcript = f"(simulated transcript: {max(0, speech_ms) / 1000:.1f} s of speech)"
            item["content"][0]["transcript"] = transcript
            await self.send_event(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item_id,
                    "content_index": 0,
                    "transcript": transcript,
                }
            )

    async def _on_commit(self, ev: dict[str, Any]) -> None:
        buffered_ms = self._buffer_samples * 1000 // self._rate()
        if buffered_ms < MIN_COMMIT_MS:
            await self._error(
                "input_audio_buffer_commit_empty",
                f"Error committing input audio buffer: buffer too small. Expected at least {MIN_COMMIT_MS}ms "
                f"of audio, but buffer only has {buffered_ms}ms of audio.",
                ev,
            )
            return
        item_id = self._speech[0] if self._speech else self._next_id("item")
        self._speech = None
        if self._vad is not None:
            self._vad.reset()
        await self._commit(item_id, buffered_ms)

    async def _on_input_clear(self, ev: dict[str, Any]) -> None:
        self._buffer_samples = 0
        self._speech = None
        if self._vad is not None:
            self._vad.reset()
        await self.send_event({"type": "input_audio_buffer.cleared"})

    def _output_clear_answer(self) -> OutputBufferClear:
        """How to answer ``output_audio_buffer.clear``: the setting, or with ``auto`` the
        documented behaviour (it is for avatar sessions only)."""
        mode = self._settings.output_buffer_clear
        if mode != "auto":
            return mode
        return "ack" if self.session.get("avatar") else "error"

    async def _on_output_clear(self, ev: dict[str, Any]) -> None:
        answer = self._output_clear_answer()
        if answer == "ack":
            await self.send_event({"type": "output_audio_buffer.cleared"})
        elif answer == "error":
            await self._error(
                "unsupported_operation",
                "output_audio_buffer.clear is only supported in avatar mode; this session has no avatar.",
                ev,
            )

    # --- responses ------------------------------------------------------------------------

    def _active_response(self) -> _Response | None:
        resp = self._response
        return resp if resp is not None and resp.generating else None

    async def _on_response_create(self, ev: dict[str, Any]) -> None:
        try:
            params, text = _check_response_params(ev.get("response"), "agent" in self.session)
        except _Invalid as exc:
            await self._error(exc.code, exc.message, ev, exc.param)
            return
        if self._active_response() is not None:
            await self._error(
                "conversation_already_has_active_response",
                "Conversation already has an active response in progress.",
                ev,
            )
            return
        await self._start_response(params, text)

    async def _start_response(self, params: dict[str, Any] | None, text: str | None = None) -> None:
        """Start a response: saying ``text`` (a pre_generated_assistant_message), else the
        function call scripted for the turn, else the greeting or the turn's reply clip."""
        if self._active_response() is not None:
            self._log.info("simulator turn while a response is active: no new response")
            return
        if self._response_task is not None and not self._response_task.done():
            # The previous response is only sending its closing events: let it finish first.
            await asyncio.wait([self._response_task])
        fmt_name = (params or {}).get("output_audio_format") or self.session["output_audio_format"]
        fmt = output_format(fmt_name)
        assert fmt is not None  # validated by session.update / response.create
        call = self._scripted_call(params) if text is None else None
        clip: str | None = None
        if call is None and text is None:
            clip = GREETING if self._user_turns == 0 else self._next_reply()
        resp = _Response(id=self._next_id("resp"), clip=clip, fmt=fmt, text=text, call=call)
        self._response = resp
        task = asyncio.create_task(self._run_response(resp), name=f"simulator-{resp.id}")
        self._response_task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _next_reply(self) -> str:
        """The reply clip for a spoken answer after a caller turn: the clip of the turn, or the next
        one if that turn already had its spoken answer (after a function call's output, or a
        second ``response.create``)."""
        self._last_reply = max(self._user_turns, self._last_reply + 1)
        return REPLIES[(self._last_reply - 1) % len(REPLIES)]

    def _scripted_call(self, params: dict[str, Any] | None) -> ToolCall | None:
        """The function call scripted for the current caller turn, once per turn, if it can be made."""
        turn = self._user_turns
        call = self._settings.tool_calls.get(turn) if turn else None
        if call is None or turn in self._tool_turns:
            return None
        self._tool_turns.add(turn)
        params = params or {}
        tools = params["tools"] if "tools" in params else self.session.get("tools")
        choice = params["tool_choice"] if "tool_choice" in params else self.session.get("tool_choice")
        declared = {
            t.get("name")
            for t in (tools if isinstance(tools, list) else [])
            if isinstance(t, dict) and t.get("type") == "function"
        }
        if call.name not in declared:
            self._log.warning(
                "simulator skipped a scripted function call: the session declares no such function",
                turn=turn,
                function=call.name,
                declared=sorted(str(n) for n in declared),
            )
            return None
        if choice == "none":
            self._log.warning(
                "simulator skipped a scripted function call: tool_choice is none",
                turn=turn,
                function=call.name,
            )
            return None
        return call

    def _response_object(
        self,
        resp: _Response,
        status: str,
        output: list[dict[str, Any]],
        details: dict[str, Any] | None = None,
        usage: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return {
            "id": resp.id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": output,
            "usage": usage,
            "conversation_id": "conv_" + self.id[5:],
            "voice": self.session.get("voice"),
            "modalities": self.session.get("modalities"),
            "output_audio_format": resp.fmt.name,
            "temperature": self.session.get("temperature"),
            "max_output_tokens": self.session.get("max_response_output_tokens"),
        }

    def _usage(self, resp: _Response) -> dict[str, Any]:
        audio_ms = resp.fmt.ms(resp.audio_bytes)
        out_audio = audio_ms * 20 // 1000
        out_text = len(resp.transcript.split()) + (len(resp.arguments) + 3) // 4
        in_audio = self._clock * 10 // self._rate()
        return {
            "total_tokens": in_audio + out_audio + out_text,
            "input_tokens": in_audio,
            "output_tokens": out_audio + out_text,
            "input_token_details": {
                "cached_tokens": 0,
                "text_tokens": 0,
                "audio_tokens": in_audio,
                "image_tokens": 0,
                "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
            },
            "output_token_details": {
                "text_tokens": out_text,
                "audio_tokens": out_audio,
                "reasoning_tokens": 0,
            },
        }

    def _common(self, resp: _Response) -> dict[str, Any]:
        return {"response_id": resp.id, "item_id": resp.item_id, "output_index": 0, "content_index": 0}

    def _assistant_item(self, resp: _Response, status: str) -> dict[str, Any]:
        item = self.items.get(resp.item_id or "")
        content = [{"type": "audio", "transcript": resp.transcript}] if resp.part_added else []
        if item is not None:
            item["status"] = status
            item["content"] = content
        return {
            "id": resp.item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": [dict(c) for c in content],
        }

    def _function_item(self, resp: _Response, status: str) -> dict[str, Any]:
        item = self.items.get(resp.item_id or "")
        if item is not None:
            item["status"] = status
            item["arguments"] = resp.arguments
        assert resp.call is not None
        return {
            "id": resp.item_id,
            "object": "realtime.item",
            "type": "function_call",
            "status": status,
            "call_id": resp.call_id,
            "name": resp.call.name,
            "arguments": resp.arguments,
        }

    def _output_item(self, resp: _Response, status: str) -> dict[str, Any]:
        return self._function_item(resp, status) if resp.call else self._assistant_item(resp, status)

    async def _run_response(self, resp: _Response) -> None:
        try:
            if resp.call is not None:
                await self._run_function_call(resp, resp.call)
            else:
                await self._run_speech(resp)
        except ConnectionError:
            pass
        except Exception:
            self._log.exception("simulator response failed", response_id=resp.id)
            resp.generating = False
            await self.send_event(
                {
                    "type": "response.done",
                    "response": self._response_object(
                        resp,
                        "failed",
                        [],
                        {
                            "type": "failed",
                            "error": {"type": "server_error", "message": "The simulator failed."},
                        },
                    ),
                }
            )
            self._notify("response.done", response_id=resp.id, status="failed")
        finally:
            if self._response is resp:
                self._response = None

    def _load_speech(self, resp: _Response) -> Speech:
        """What ``resp`` says (blocking: call it off the event loop)."""
        if resp.text is not None:
            return text_speech(resp.text, resp.fmt, self._settings.assets)
        assert resp.clip is not None
        return clip_speech(resp.clip, resp.fmt, self._settings.assets)

    async def _response_created(self, resp: _Response, **notify: Any) -> None:
        """After the "thinking" delay: ``response.created``."""
        if self._settings.response_delay_ms:
            await asyncio.sleep(self._settings.response_delay_ms / 1000)
        resp.created_sent = True
        await self.send_event({"type": "response.created", "response": self._response_object(resp, "in_progress", [])})
        self._notify("response.created", response_id=resp.id, **notify)

    async def _add_output_item(self, resp: _Response, item: dict[str, Any]) -> None:
        """Put the response's (only) output item in the conversation: ``response.output_item.added``
        and ``conversation.item.created``."""
        previous = self._last_item_id
        self.items[item["id"]] = item
        resp.item_added = True
        await self.send_event(
            {"type": "response.output_item.added", "response_id": resp.id, "output_index": 0, "item": dict(item)}
        )
        await self.send_event({"type": "conversation.item.created", "previous_item_id": previous, "item": dict(item)})

    async def _run_speech(self, resp: _Response) -> None:
        """A spoken response, from ``response.created`` to ``response.done``."""
        speech = await asyncio.to_thread(self._load_speech, resp)
        resp.clip = speech.clip
        self.spoken.append(
            {"response_id": resp.id, "text": speech.text, "clip": speech.clip, "pre_generated": resp.text is not None}
        )
        await self._response_created(resp, clip=speech.clip, text=speech.text)
        await self.send_event(
            {
                "type": "rate_limits.updated",
                "rate_limits": [
                    {"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 60.0},
                    {"name": "tokens", "limit": 100000, "remaining": 99000, "reset_seconds": 60.0},
                ],
            }
        )
        resp.item_id = self._next_id("item")
        await self._add_output_item(
            resp,
            {
                "id": resp.item_id,
                "object": "realtime.item",
                "type": "message",
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            },
        )
        resp.part_added = True
        await self.send_event(
            {"type": "response.content_part.added", **self._common(resp), "part": {"type": "audio", "transcript": ""}}
        )
        await self._stream_speech(resp, speech)

        resp.generating = False  # from here on nothing can be cut: finish in order
        await self._send_closing_events(resp, "completed")
        await self.send_event(
            {
                "type": "response.done",
                "response": self._response_object(
                    resp, "completed", [self._assistant_item(resp, "completed")], usage=self._usage(resp)
                ),
            }
        )
        self._notify("response.done", response_id=resp.id, status="completed")

    async def _send_transcript_delta(self, resp: _Response, words: str) -> None:
        resp.transcript += words
        await self.send_event({"type": "response.audio_transcript.delta", **self._common(resp), "delta": words})

    async def _stream_speech(self, resp: _Response, speech: Speech) -> None:
        """The audio deltas, paced at ``audio_speed``, with each word's transcript delta sent when
        the audio reaches its share of the text. Suspends between deltas (a barge-in may cancel)."""
        loop = asyncio.get_running_loop()
        settings = self._settings
        assert resp.item_id is not None
        text, audio = speech.text, speech.audio
        words = [(m.group(), m.start() / max(1, len(text))) for m in _WORD_RE.finditer(text)]
        next_word = 0
        pos = 0
        sent_ms = 0.0
        t0: float | None = None
        played: _AssistantAudio | None = None
        pattern = settings.chunk_pattern_ms
        k = 0
        while pos < len(audio):
            if t0 is not None:
                delay = t0 + sent_ms / 1000.0 / settings.audio_speed - loop.time()
                await asyncio.sleep(max(0.0, delay))  # also lets client events through
            ms = pattern[k % len(pattern)]
            k += 1
            n = max(resp.fmt.sample_width, min(resp.fmt.nbytes(ms), MAX_DELTA_BYTES))
            piece = audio[pos : pos + n]
            end_fraction = (pos + len(piece)) / len(audio)
            while next_word < len(words) and words[next_word][1] < end_fraction:
                await self._send_transcript_delta(resp, words[next_word][0])
                next_word += 1
            pos += len(piece)
            resp.audio_bytes += len(piece)
            self.items_audio_bytes[resp.item_id] = resp.audio_bytes
            if t0 is None:
                t0 = loop.time()
                resp.first_delta_at = time.monotonic()
                self._last_assistant = resp.item_id
                played = self._assistant_audio[resp.item_id] = _AssistantAudio(resp.fmt, 0, resp.first_delta_at)
            assert played is not None
            played.ms = resp.fmt.ms(resp.audio_bytes)
            sent_ms += len(piece) / resp.fmt.sample_width * 1000.0 / resp.fmt.rate
            await self.send_event(
                {"type": "response.audio.delta", **self._common(resp), "delta": base64.b64encode(piece).decode("ascii")}
            )
        for word, _ in words[next_word:]:
            await self._send_transcript_delta(resp, word)

    async def _run_function_call(self, resp: _Response, call: ToolCall) -> None:
        """A response holding one function call: its arguments are streamed in two or three deltas."""
        settings = self._settings
        await self._response_created(resp, clip=None, function=call.name)
        resp.item_id = self._next_id("item")
        resp.call_id = self._next_id("call")
        item = {
            "id": resp.item_id,
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "call_id": resp.call_id,
            "name": call.name,
            "arguments": "",
        }
        self._call_ids.add(resp.call_id)
        await self._add_output_item(resp, item)

        text = call.arguments_json()
        n = 3 if len(text) >= 3 else 2
        cuts = [len(text) * k // n for k in range(n + 1)]
        pause = settings.function_call_ms / 1000 / n
        ids = {"response_id": resp.id, "item_id": resp.item_id, "output_index": 0, "call_id": resp.call_id}
        for start, end in itertools.pairwise(cuts):
            resp.arguments += text[start:end]
            item["arguments"] = resp.arguments
            await self.send_event({"type": "response.function_call_arguments.delta", **ids, "delta": text[start:end]})
            if pause:
                await asyncio.sleep(pause)  # also lets client events (a barge-in) through

        resp.generating = False  # from here on nothing can be cut: finish in order
        done = {"type": "response.function_call_arguments.done", **ids, "arguments": text}
        if settings.function_call_done_name:
            done["name"] = call.name
        await self.send_event(done)
        self.function_calls.append(
            {
                "call_id": resp.call_id,
                "name": call.name,
                "arguments": text,
                "response_id": resp.id,
                "status": "completed",
            }
        )
        self._notify("function_call", name=call.name, call_id=resp.call_id, arguments=text)
        done_item = self._function_item(resp, "completed")
        await self.send_event(
            {"type": "response.output_item.done", "response_id": resp.id, "output_index": 0, "item": done_item}
        )
        await self.send_event(
            {
                "type": "response.done",
                "response": self._response_object(resp, "completed", [dict(done_item)], usage=self._usage(resp)),
            }
        )
        self._notify("response.done", response_id=resp.id, status="completed")

    async def _send_closing_events(self, resp: _Response, item_status: str) -> None:
        """The .done events of whatever part and item the response had opened."""
        if resp.part_added:
            await self.send_event({"type": "response.audio.done", **self._common(resp)})
            await self.send_event(
                {
                    "type": "response.audio_transcript.done",
                    **self._common(resp),
                    "transcript": resp.transcript,
                }
            )
            await self.send_event(
                {
                    "type": "response.content_part.done",
                    **self._common(resp),
                    "part": {"type": "audio", "transcript": resp.transcript},
                }
            )
        if resp.item_added:
            await self.send_event(
                {
                    "type": "response.output_item.done",
                    "response_id": resp.id,
                    "output_index": 0,
                    "item": self._output_item(resp, item_status),
                }
            )

    async def _cancel_response(self, reason: str) -> None:
        resp = self._response
        task = self._response_task
        if resp is None or not resp.generating:
            return
        resp.generating = False
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
        self._response = None
        if not resp.created_sent:
            resp.created_sent = True
            await self.send_event(
                {"type": "response.created", "response": self._response_object(resp, "in_progress", [])}
            )
        resp.transcript = resp.transcript.rstrip()
        await self._send_closing_events(resp, "incomplete")
        output = [self._output_item(resp, "incomplete")] if resp.item_added else []
        if resp.call is not None and resp.call_id is not None:
            self.function_calls.append(
                {
                    "call_id": resp.call_id,
                    "name": resp.call.name,
                    "arguments": resp.arguments,
                    "response_id": resp.id,
                    "status": "cancelled",
                }
            )
        await self.send_event(
            {
                "type": "response.done",
                "response": self._response_object(
                    resp, "cancelled", output, {"type": "cancelled", "reason": reason}, self._usage(resp)
                ),
            }
        )
        self._notify("cancelled", response_id=resp.id, reason=reason)
        self._notify("response.done", response_id=resp.id, status="cancelled")

    async def _on_response_cancel(self, ev: dict[str, Any]) -> None:
        resp = self._active_response()
        wanted = ev.get("response_id")
        if resp is None or (wanted is not None and wanted != resp.id):
            await self._error(
                "response_cancel_not_active", "Cancellation failed: no active response found", ev
            )
            return
        await self._cancel_response("client_cancelled")

    # --- truncation -----------------------------------------------------------------------

    def _cut_transcript(self, item_id: str, fraction: float) -> None:
        item = self.items.get(item_id)
        if not item or not item.get("content"):
            return
        part = item["content"][0]
        text = part.get("transcript") or ""
        keep = int(len(text) * max(0.0, min(1.0, fraction)))
        if keep < len(text):
            cut = text[:keep]
            if keep and not text[keep].isspace():
                cut = cut.rsplit(" ", 1)[0] if " " in cut else ""
            part["transcript"] = cut.rstrip()

    async def _truncate(self, item_id: str, audio_end_ms: int, audio: _AssistantAudio) -> None:
        item_ms = audio.ms
        if item_ms:
            self._cut_transcript(item_id, audio_end_ms / item_ms)
        audio.ms = audio_end_ms
        self.truncations.append(
            {"item_id": item_id, "audio_end_ms": audio_end_ms, "item_audio_ms": item_ms, "ok": True}
        )
        await self.send_event(
            {
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": audio_end_ms,
            }
        )
        self._notify("truncated", item_id=item_id, audio_end_ms=audio_end_ms, item_audio_ms=item_ms)

    async def _auto_truncate(self) -> None:
        """Cut the last assistant item to what real-time playback would have reached by now."""
        item_id = self._last_assistant
        audio = self._assistant_audio.get(item_id or "")
        if item_id is None or audio is None:
            return
        played = int((time.monotonic() - audio.first_delta_at) * 1000)
        if played < audio.ms:
            await self._truncate(item_id, max(0, played), audio)

    async def _on_truncate(self, ev: dict[str, Any]) -> None:
        item_id = ev.get("item_id")
        end = ev.get("audio_end_ms")
        content_index = ev.get("content_index", 0)
        if not isinstance(item_id, str):
            await self._error(
                "missing_required_parameter", "Missing required parameter: 'item_id'.", ev, "item_id"
            )
            return
        if end is None:
            await self._error(
                "missing_required_parameter",
                "Missing required parameter: 'audio_end_ms'.",
                ev,
                "audio_end_ms",
            )
            return
        if isinstance(end, bool) or not isinstance(end, int) or end < 0:
            await self._error(
                "invalid_value", "audio_end_ms must be a non-negative integer.", ev, "audio_end_ms"
            )
            return
        if content_index != 0:
            await self._error(
                "invalid_value", "content_index must be 0 for an assistant audio item.", ev, "content_index"
            )
            return
        if item_id not in self.items:
            await self._error("item_not_found", f"Item with id '{item_id}' not found.", ev, "item_id")
            return
        active = self._active_response()
        if active is not None and active.item_id == item_id:
            await self._error(
                "invalid_value",
                f"Item '{item_id}' is still being generated: cancel its response before truncating it.",
                ev,
                "item_id",
            )
            return
        audio = self._assistant_audio.get(item_id)
        if audio is None:
            await self._error(
                "invalid_value", "Only assistant messages with audio can be truncated.", ev, "item_id"
            )
            return
        if end > audio.ms:
            self.truncations.append(
                {"item_id": item_id, "audio_end_ms": end, "item_audio_ms": audio.ms, "ok": False}
            )
            self._notify("truncate_rejected", item_id=item_id, audio_end_ms=end, item_audio_ms=audio.ms)
            await self._error(
                "invalid_value",
                f"Audio content of {audio.ms} ms is already shorter than {end} ms",
                ev,
                "audio_end_ms",
            )
            return
        await self._truncate(item_id, end, audio)

    # --- conversation items ---------------------------------------------------------------

    async def _on_item_create(self, ev: dict[str, Any]) -> None:
        item = ev.get("item")
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            await self._error("missing_required_parameter", "Missing required parameter: 'item'.", ev, "item")
            return
        item = copy.deepcopy(item)
        item_id = item.get("id") or self._next_id("item")
        if not isinstance(item_id, str):
            await self._error("invalid_type", "Invalid type for 'item.id': expected a string.", ev, "item.id")
            return
        if item_id in self.items:
            await self._error("invalid_value", f"Item with id '{item_id}' already exists.", ev, "item.id")
            return
        kind = item["type"]
        if kind == "function_call_output" and not await self._valid_function_output(item, ev):
            return
        item.update(id=item_id, object="realtime.item", status="completed")
        previous = ev.get("previous_item_id", self._last_item_id)
        self.items[item_id] = item
        if kind == "message" and item.get("role") == "user":
            self._user_turns += 1
        elif kind == "function_call" and isinstance(item.get("call_id"), str):
            self._call_ids.add(item["call_id"])
        await self.send_event(
            {"type": "conversation.item.created", "previous_item_id": previous, "item": copy.deepcopy(item)}
        )
        if kind == "function_call_output":
            self.function_call_outputs.append(
                {"item_id": item_id, "call_id": item["call_id"], "output": item["output"]}
            )
            self._notify("function_call_output", call_id=item["call_id"], output=item["output"])

    async def _valid_function_output(self, item: dict[str, Any], ev: dict[str, Any]) -> bool:
        """Check a function_call_output item; on a fault, send the error and return False."""
        call_id = item.get("call_id")
        output = item.get("output")
        if call_id is None:
            await self._error(
                "missing_required_parameter", "Missing required parameter: 'item.call_id'.", ev, "item.call_id"
            )
        elif not isinstance(call_id, str) or call_id not in self._call_ids:
            await self._error(
                "invalid_value",
                f"No function call with call_id {call_id!r} in this conversation.",
                ev,
                "item.call_id",
            )
        elif output is None:
            await self._error(
                "missing_required_parameter", "Missing required parameter: 'item.output'.", ev, "item.output"
            )
        elif not isinstance(output, str):
            await self._error(
                "invalid_type", "Invalid type for 'item.output': expected a string.", ev, "item.output"
            )
        else:
            return True
        return False

    async def _on_item_retrieve(self, ev: dict[str, Any]) -> None:
        item_id = ev.get("item_id")
        item = self.items.get(item_id) if isinstance(item_id, str) else None
        if item is None:
            await self._error(
                "item_not_found", f"Item with id '{ev.get('item_id')}' not found.", ev, "item_id"
            )
            return
        await self.send_event({"type": "conversation.item.retrieved", "item": copy.deepcopy(item)})

    async def _on_item_delete(self, ev: dict[str, Any]) -> None:
        item_id = ev.get("item_id")
        if not isinstance(item_id, str) or item_id not in self.items:
            await self._error("item_not_found", f"Item with id '{item_id}' not found.", ev, "item_id")
            return
        del self.items[item_id]
        self._assistant_audio.pop(item_id, None)
        await self.send_event({"type": "conversation.item.deleted", "item_id": item_id})

    async def _on_ignored(self, ev: dict[str, Any]) -> None:
        """Accepted without a reply (input_text.*: text streaming into a user item)."""

    _HANDLERS: dict[str, Callable[[SimSession, dict[str, Any]], Any]] = {
        "session.update": _on_session_update,
        "input_audio_buffer.commit": _on_commit,
        "input_audio_buffer.clear": _on_input_clear,
        "output_audio_buffer.clear": _on_output_clear,
        "conversation.item.create": _on_item_create,
        "conversation.item.retrieve": _on_item_retrieve,
        "conversation.item.truncate": _on_truncate,
        "conversation.item.delete": _on_item_delete,
        "response.create": _on_response_create,
        "response.cancel": _on_response_cancel,
        "input_text.delta": _on_ignored,
        "input_text.done": _on_ignored,
    }


# --- state, app, runner ----------------------------------------------------------------------


class SimulatorState:
    """Every session the server has had (or only the open ones when ``record`` is off)."""

    def __init__(self) -> None:
        self.sessions: list[SimSession] = []
        self._opened = 0
        self._changed = asyncio.Event()

    def _signal(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _next_index(self) -> int:
        self._opened += 1
        return self._opened

    @property
    def active(self) -> list[SimSession]:
        return [s for s in self.sessions if not s.closed.is_set()]

    async def wait_for_session(self, index: int = 0) -> SimSession:
        """The ``index``-th session (0: the first), once it exists."""
        while len(self.sessions) <= index:
            await self._changed.wait()
        return self.sessions[index]

    async def wait_closed(self, index: int = 0) -> SimSession:
        """The ``index``-th session, once it has closed."""
        session = await self.wait_for_session(index)
        await session.closed.wait()
        return session

    async def close_all(self, code: int = 1001, reason: str = "server shutting down") -> None:
        sessions = self.active
        if sessions:
            await asyncio.gather(*(s.close(code, reason) for s in sessions), return_exceptions=True)


STATE_KEY = web.AppKey("simulator_state", SimulatorState)
SETTINGS_KEY = web.AppKey("simulator_settings", SimulatorSettings)


def _presented_credentials(request: web.Request) -> tuple[str | None, str | None]:
    key = request.headers.get("api-key") or request.query.get("api-key")
    authz = request.headers.get("Authorization") or request.query.get("Authorization") or ""
    scheme, _, token = authz.partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return key, bearer


def _json_error(cls: type[web.HTTPException], code: str, message: str) -> web.HTTPException:
    return cls(
        text=json.dumps({"error": {"code": code, "message": message}}), content_type="application/json"
    )


def _check_query(query: Mapping[str, str]) -> None:
    """Raise the HTTP 400 (before the upgrade) for a realtime URL the service would refuse: no or
    an unknown ``api-version``, neither ``model`` nor ``agent-name``, an agent without a project."""
    version = query.get("api-version")
    if not version:
        raise _json_error(
            web.HTTPBadRequest, "missing_api_version", "The 'api-version' query parameter is required."
        )
    if version not in API_VERSIONS:
        raise _json_error(
            web.HTTPBadRequest,
            "unsupported_api_version",
            f"Unsupported api-version '{version}'. Supported versions: " + ", ".join(API_VERSIONS) + ".",
        )
    if not query.get("model") and not query.get("agent-name"):
        raise _json_error(
            web.HTTPBadRequest,
            "missing_model",
            "The 'model' query parameter (or 'agent-name' and 'agent-project-name') is required.",
        )
    if query.get("agent-name") and not query.get("agent-project-name"):
        raise _json_error(
            web.HTTPBadRequest,
            "missing_agent_project_name",
            "'agent-project-name' is required with 'agent-name'.",
        )


async def _realtime(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS_KEY]
    state = request.app[STATE_KEY]
    key, bearer = _presented_credentials(request)
    auth = "api-key" if key else "bearer" if bearer else "none"
    if settings.api_key or settings.bearer_token:
        ok_key = bool(
            settings.api_key and key and hmac.compare_digest(key.encode(), settings.api_key.encode())
        )
        ok_bearer = bool(
            settings.bearer_token
            and bearer
            and hmac.compare_digest(bearer.encode(), settings.bearer_token.encode())
        )
        if not (ok_key or ok_bearer):
            _log().info("simulator rejected a connection", reason="unauthorized", presented=auth)
            raise _json_error(
                web.HTTPUnauthorized,
                "401",
                "Access denied due to a missing or invalid api-key or bearer token.",
            )
        auth = "api-key" if ok_key else "bearer"
    query = dict(request.query)
    _check_query(query)
    ws = web.WebSocketResponse(compress=False, max_msg_size=MAX_CLIENT_MESSAGE, timeout=CLOSE_TIMEOUT_S)
    if not ws.can_prepare(request).ok:
        raise _json_error(
            web.HTTPBadRequest, "websocket_required", "This endpoint only accepts WebSocket upgrades."
        )
    await ws.prepare(request)
    session = SimSession(ws, settings, query, auth, state._next_index())
    state.sessions.append(session)
    state._signal()
    _log().info(
        "simulator session opened",
        session=session.id,
        model=query.get("model"),
        agent=query.get("agent-name"),
        auth=auth,
        path=request.path,
    )
    try:
        await session.run()
    finally:
        if not settings.record:
            state.sessions.remove(session)
        state._signal()
    return ws


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "sessions": len(request.app[STATE_KEY].active)})


async def _on_shutdown(app: web.Application) -> None:
    await app[STATE_KEY].close_all()


def create_app(settings: SimulatorSettings | None = None) -> web.Application:
    """The simulator as an aiohttp application: ``GET [prefix]/voice-live/realtime`` and ``/healthz``."""
    settings = settings or SimulatorSettings()
    register_secret(settings.api_key)
    register_secret(settings.bearer_token)
    app = web.Application()
    app[SETTINGS_KEY] = settings
    app[STATE_KEY] = SimulatorState()
    app.router.add_get("/voice-live/realtime", _realtime)
    app.router.add_get(r"/{prefix:.+}/voice-live/realtime", _realtime)
    app.router.add_get("/healthz", _healthz)
    app.on_shutdown.append(_on_shutdown)
    return app


@dataclass
class RunningSimulator:
    """A simulator listening on a TCP port. ``endpoint`` is what a Voice Live client is given."""

    runner: web.AppRunner
    host: str
    port: int
    state: SimulatorState = field(repr=False)
    _closed: bool = field(default=False, init=False, repr=False)

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The realtime WebSocket URL, without query parameters."""
        return "ws" + self.endpoint[4:] + "/voice-live/realtime"

    async def close(self) -> None:
        """Close every session (code 1001), then stop listening. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await self.state.close_all()
        await self.runner.cleanup()

    async def __aenter__(self) -> RunningSimulator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def start_simulator(
    settings: SimulatorSettings | None = None, host: str = "127.0.0.1", port: int = 0
) -> RunningSimulator:
    """Start the simulator on ``host``:``port`` (0: a free port)."""
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=CLOSE_TIMEOUT_S)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1] if runner.addresses else port
    return RunningSimulator(runner, host, int(bound), app[STATE_KEY])


# --- command line ------------------------------------------------------------------------------


def register_cli(subparsers: Any) -> None:
    """Add ``gateway simulator`` to an argparse subparsers object."""
    p = subparsers.add_parser(
        "simulator",
        help="run the local Voice Live-compatible simulator",
        description="Run a local Voice Live-compatible realtime server at /voice-live/realtime. "
        "Point a client (or the gateway, with AZURE_VOICELIVE_ENDPOINT) at the printed endpoint.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port to listen on (default: 8765)")
    p.add_argument("--api-key", default=None, help="require this api-key (default: no authentication)")
    p.add_argument(
        "--output-buffer-clear",
        choices=("auto", "ack", "error", "ignore"),
        default="auto",
        help="answer to output_audio_buffer.clear: auto (the documented behaviour: "
        "output_audio_buffer.cleared on avatar sessions, an error otherwise), or always ack, error or "
        "ignore (default: auto)",
    )
    p.add_argument(
        "--audio-speed",
        type=float,
        default=4.0,
        help="stream reply audio this many times faster than real time (default: 4)",
    )
    p.add_argument(
        "--response-delay-ms",
        type=int,
        default=300,
        help="delay between the end of a caller turn and the response (default: 300)",
    )
    p.add_argument(
        "--tool-call",
        dest="tool_calls",
        action="append",
        type=parse_tool_call,
        metavar="TURN:NAME[:JSON_ARGS]",
        help="answer caller turn TURN (1: the first) with a call of function NAME, with the JSON "
        "object JSON_ARGS as arguments (default: {}); the session must declare the function. "
        "Repeatable, e.g. --tool-call '1:lookup_order:{\"order\": \"42\"}'",
    )
    bench = p.add_argument_group("benchmark mode (a lean Voice Live for load tests: no VAD, scripted replies)")
    bench.add_argument("--bench", action="store_true", help="run the lean benchmark mode")
    bench.add_argument("--reply-every", type=float, default=4.0, metavar="S", help="a reply every S seconds")
    bench.add_argument("--reply-ms", type=int, default=2000, help="length of each reply")
    bench.add_argument("--barge-in-every", type=int, default=3, metavar="N",
                       help="interrupt every Nth reply (0: never)")
    p.set_defaults(func=_run_cli)


def _run_bench(args: argparse.Namespace) -> int:
    from aiohttp import web

    from gateway.simulator.bench import BenchSettings, create_bench_app

    settings = BenchSettings(reply_every_s=args.reply_every, reply_ms=args.reply_ms,
                             barge_in_every=args.barge_in_every, speed=args.audio_speed)
    _log().info("benchmark Voice Live listening", host=args.host, port=args.port)
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    web.run_app(create_bench_app(settings), host=args.host, port=args.port, print=None, access_log=None,
                loop=loop_factory() if loop_factory else None)
    return 0


def parse_tool_call(text: str) -> tuple[int, ToolCall]:
    """``TURN:NAME[:JSON_ARGS]`` (the ``--tool-call`` option) as (turn, ToolCall)."""
    turn_text, _, rest = text.partition(":")
    name, _, args_text = rest.partition(":")
    try:
        turn = int(turn_text)
    except ValueError:
        turn = 0
    if turn < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: TURN must be a caller turn number from 1")
    if not name:
        raise argparse.ArgumentTypeError(f"{text!r}: expected TURN:NAME[:JSON_ARGS], NAME is missing")
    arguments: Any = {}
    if args_text:
        try:
            arguments = json.loads(args_text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: JSON_ARGS is not valid JSON ({exc})") from None
    if not isinstance(arguments, dict):
        raise argparse.ArgumentTypeError(f"{text!r}: JSON_ARGS must be a JSON object")
    try:
        return turn, ToolCall(name, arguments)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def settings_from_args(args: argparse.Namespace) -> SimulatorSettings:
    """The settings ``gateway simulator`` runs with; ValueError if they are invalid."""
    tool_calls: dict[int, ToolCall] = {}
    for turn, call in getattr(args, "tool_calls", None) or []:
        if turn in tool_calls:
            raise ValueError(f"--tool-call: turn {turn} is scripted twice")
        tool_calls[turn] = call
    return SimulatorSettings(
        api_key=args.api_key or None,
        output_buffer_clear=args.output_buffer_clear,
        audio_speed=args.audio_speed,
        response_delay_ms=args.response_delay_ms,
        tool_calls=tool_calls,
        record=False,
    )


def _run_cli(args: argparse.Namespace) -> int:
    if getattr(args, "bench", False):
        return _run_bench(args)
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        _log().error("simulator settings are invalid", error=str(exc))
        return 2
    try:
        return asyncio.run(_serve(settings, args.host, args.port))
    except KeyboardInterrupt:
        return 0


async def _serve(settings: SimulatorSettings, host: str, port: int) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        sim = await start_simulator(settings, host, port)
    except OSError as exc:
        _log().error("simulator cannot listen", host=host, port=port, error=str(exc))
        return 1
    async with sim:
        _log().info(
            "simulator listening",
            endpoint=sim.endpoint,
            url=sim.ws_url,
            auth="api-key" if settings.api_key else "none",
            audio_speed=settings.audio_speed,
            tool_calls={turn: call.name for turn, call in sorted(settings.tool_calls.items())} or None,
        )
        await stop.wait()
        _log().info("simulator stopping", open_sessions=len(sim.state.active))
    return 0

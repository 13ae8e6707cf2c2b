"""The shape of config.yaml: pydantic models, their field validators and cross-field rules.

Every model is frozen and rejects unknown keys. Errors raised here carry the ops-facing message
directly (see ``fail``); the loader adds the file, the line and the key path.

Empty values: a setting that is empty (``""``, or empty after expansion) or YAML null counts as
"not set" and takes its default. The one exception is ``turn_detection``, where null (like the
string ``none``) means "no turn detection".
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Discriminator,
    Field,
    PrivateAttr,
    SecretStr,
    Tag,
)

from gateway.carriers.settings import carrier_root_rules, carrier_sections, with_carrier_sections
from gateway.config.numbers import E164, normalize_number
from gateway.settings_model import (
    Rule,
    SettingsModel,
    Text,
    between,
    fail,
    field_of,
    http_url,
    is_set,
    not_negative,
    not_negative_float,
    numeric,
    positive,
    socket_or_web_url,
    whole,
)

DEFAULT_API_VERSION = "2026-07-15"
# api-versions whose wire shape the gateway speaks: flat session fields, response.audio.* events,
# pre_generated_assistant_message (from 2026-01-01-preview). The label "v1" uses the OpenAI GA
# shape (nested session.audio, response.output_audio.* events) and is refused.
API_VERSIONS = ("2026-07-15", "2026-06-01-preview", "2026-04-10", "2026-01-01-preview")
DEFAULT_TOKEN_SCOPE = "https://ai.azure.com/.default"
SIMULATOR = "simulator"  # voicelive.endpoint naming the built-in simulator

OpenAIVoiceName = Literal[
    "alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"
]
OPENAI_VOICES: tuple[str, ...] = get_args(OpenAIVoiceName)
VOICE_TYPES = ("azure-standard", "azure-custom", "azure-personal", "openai")
TURN_DETECTION_TYPES = (
    "server_vad",
    "azure_semantic_vad",
    "azure_semantic_vad_en",
    "azure_semantic_vad_multilingual",
    "semantic_vad",
    "none",
)
NoiseSuppression = Literal["azure_deep_noise_suppression", "near_field", "far_field"]
NOISE_SUPPRESSION_TYPES: tuple[str, ...] = get_args(NoiseSuppression)
TranscriptionModel = Literal[
    "azure-speech",
    "mai-transcribe",
    "mai-transcribe-1",
    "mai-transcribe-2",
    "whisper-1",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-4o-transcribe-diarize",
]
PHRASE_LIST_MODELS = ("azure-speech", "mai-transcribe", "mai-transcribe-2")
MAX_PHRASES = 500
# Voice Live models that have semantic_vad and near/far-field noise suppression
GPT_REALTIME_MODELS = ("gpt-realtime", "gpt-realtime-mini")
# the key the gateway itself puts in a session's metadata: the carrier's call id
METADATA_CALL_ID = "call_id"
PersonalVoiceModel = Literal[
    "DragonLatestNeural", "DragonHDOmniLatestNeural", "PhoenixLatestNeural", "PhoenixV2Neural", "MAI-Voice-1"
]

_PROFILE_NAME = re.compile(r"[A-Za-z0-9_-]+")
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _prosody(value: Any) -> Any:
    """SSML prosody values are text on the wire ("1.05", "+10%"); YAML numbers become text."""
    if isinstance(value, bool):
        raise fail("expected text or a number, such as 1.05 or +10%")
    if isinstance(value, int | float):
        return str(value)
    return value


def _phone_number(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):  # YAML read +14155550100 as a number
        raise fail("expected an E.164 number in quotes, such as \"+14155550100\"")
    if not isinstance(value, str):
        raise fail("expected an E.164 number such as +14155550100")
    number = normalize_number(value)
    if not E164.fullmatch(number):
        raise fail("expected an E.164 number such as +14155550100")
    return number


PhoneNumber = Annotated[str, BeforeValidator(_phone_number)]


def _number_prefix(value: Any) -> Any:
    number = normalize_number(value) if isinstance(value, str) else value
    if not isinstance(number, str) or not re.fullmatch(r"\+[0-9]{1,15}", number):
        raise fail("expected the start of an E.164 number, such as +1415")
    return number


Unit = Annotated[float, BeforeValidator(numeric), AfterValidator(between(0, 1))]
Milliseconds = Annotated[int, BeforeValidator(whole), AfterValidator(not_negative)]
Prosody = Annotated[str, BeforeValidator(_prosody)]
Url = Annotated[str, AfterValidator(socket_or_web_url)]


_TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
_FALSE_WORDS = frozenset({"false", "no", "off", "0"})


# --------------------------------------------------------------------------------------------
# Voices


class _AzureVoiceFields(SettingsModel):
    name: Text
    temperature: Unit | None = None
    locale: Text | None = None
    style: Text | None = None
    pitch: Prosody | None = None
    rate: Prosody | None = None
    volume: Prosody | None = None
    custom_lexicon_url: Text | None = None
    custom_text_normalization_url: Text | None = None
    prefer_locales: list[Text] | None = None


class OpenAIVoice(SettingsModel):
    type: Literal["openai"] = "openai"
    name: OpenAIVoiceName


class AzureStandardVoice(_AzureVoiceFields):
    type: Literal["azure-standard"] = "azure-standard"


class AzureCustomVoice(_AzureVoiceFields):
    type: Literal["azure-custom"] = "azure-custom"
    endpoint_id: Text


class AzurePersonalVoice(_AzureVoiceFields):
    type: Literal["azure-personal"] = "azure-personal"
    model: PersonalVoiceModel


def _type_tag(value: Any) -> str | None:
    if isinstance(value, str):
        return "voice-name"
    tag = field_of(value, "type")
    return tag if isinstance(tag, str) else None


def _typed_mapping(value: Any, allowed: tuple[str, ...]) -> None:
    """Check the ``type`` key of a mapping so that the error names ``<key>.type``."""
    tag = value.get("type")
    if not is_set(tag):
        raise fail(
            f"required key missing (expected one of {', '.join(allowed)})", sub="type", show_got=False
        )
    if tag not in allowed:
        raise fail(f"expected one of {', '.join(allowed)}", sub="type")


def _check_voice(value: Any) -> Any:
    if isinstance(value, str):
        if value not in OPENAI_VOICES:
            raise fail(
                f"expected an OpenAI realtime voice: one of {', '.join(OPENAI_VOICES)}; "
                "Azure voices are written as a mapping such as {type: azure-standard, name: en-US-AvaNeural}"
            )
        return value
    if isinstance(value, dict):
        _typed_mapping(value, VOICE_TYPES)
        return value
    if isinstance(value, BaseModel):
        return value
    raise fail("expected an OpenAI voice name or a mapping with type and name")


Voice = Annotated[
    Annotated[OpenAIVoiceName, Tag("voice-name")]
    | Annotated[OpenAIVoice, Tag("openai")]
    | Annotated[AzureStandardVoice, Tag("azure-standard")]
    | Annotated[AzureCustomVoice, Tag("azure-custom")]
    | Annotated[AzurePersonalVoice, Tag("azure-personal")],
    Discriminator(_type_tag),
    BeforeValidator(_check_voice),
]


# --------------------------------------------------------------------------------------------
# Turn detection (every field optional: what is not written is not sent, the service default applies)


class EndOfUtteranceDetection(SettingsModel):
    model: Literal["semantic_detection_v1", "semantic_detection_v1_en", "semantic_detection_v1_multilingual"]
    threshold_level: Literal["low", "medium", "high", "default"] | None = None
    timeout_ms: Milliseconds | None = None


class _VadFields(SettingsModel):
    threshold: Unit | None = None
    prefix_padding_ms: Milliseconds | None = None
    silence_duration_ms: Milliseconds | None = None


class _ResponseSwitches(SettingsModel):
    create_response: bool | None = None
    interrupt_response: bool | None = None


class ServerVad(_VadFields, _ResponseSwitches):
    type: Literal["server_vad"] = "server_vad"
    end_of_utterance_detection: EndOfUtteranceDetection | None = None
    auto_truncate: bool | None = None

    @classmethod
    def _rules(cls, data: dict[str, Any]) -> list[Rule]:
        if "speech_duration_ms" in data:
            return [(("speech_duration_ms",), "not a server_vad setting (Voice Live's server_vad has no minimum "
                     "speech duration; the azure_semantic_vad types take it)", False)]
        return []

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in super()._prepare(data).items() if k != "speech_duration_ms"}


class _AzureSemanticFields(_VadFields, _ResponseSwitches):
    speech_duration_ms: Milliseconds | None = None
    remove_filler_words: bool | None = None
    end_of_utterance_detection: EndOfUtteranceDetection | None = None
    auto_truncate: bool | None = None
    appended_text_after_truncation: Text | None = None


class AzureSemanticVad(_AzureSemanticFields):
    type: Literal["azure_semantic_vad"] = "azure_semantic_vad"
    languages: list[Text] | None = None


class AzureSemanticVadEn(_AzureSemanticFields):
    type: Literal["azure_semantic_vad_en"] = "azure_semantic_vad_en"


class AzureSemanticVadMultilingual(_AzureSemanticFields):
    type: Literal["azure_semantic_vad_multilingual"] = "azure_semantic_vad_multilingual"
    languages: list[Text] | None = None


class SemanticVad(_ResponseSwitches):
    type: Literal["semantic_vad"] = "semantic_vad"
    eagerness: Literal["low", "medium", "high", "auto"] | None = None


class TurnDetectionOff(SettingsModel):
    """No turn detection at Voice Live: the session is sent ``turn_detection: null`` and the gateway
    decides the end of the caller's turn itself, from the energy of the caller's audio: speech
    starts after ``speech_duration_ms`` louder than ``threshold_dbfs`` and ends after
    ``silence_duration_ms`` quieter; then the gateway commits the audio and asks for a response.
    Speech over the bot interrupts it as with server turn detection."""

    type: Literal["none"] = "none"
    threshold_dbfs: Annotated[float, BeforeValidator(numeric), AfterValidator(between(-90, 0))] = -40.0
    speech_duration_ms: Annotated[int, BeforeValidator(whole), AfterValidator(between(10, 5000))] = 150
    silence_duration_ms: Annotated[int, BeforeValidator(whole), AfterValidator(between(100, 10000))] = 700


def _check_turn_detection(value: Any) -> Any:
    if value is None or value == "none":
        return {"type": "none"}
    if isinstance(value, dict):
        _typed_mapping(value, TURN_DETECTION_TYPES)
        return value
    if isinstance(value, BaseModel):
        return value
    raise fail(f"expected none, or a mapping with a type (one of {', '.join(TURN_DETECTION_TYPES[:-1])})")


TurnDetection = Annotated[
    Annotated[ServerVad, Tag("server_vad")]
    | Annotated[AzureSemanticVad, Tag("azure_semantic_vad")]
    | Annotated[AzureSemanticVadEn, Tag("azure_semantic_vad_en")]
    | Annotated[AzureSemanticVadMultilingual, Tag("azure_semantic_vad_multilingual")]
    | Annotated[SemanticVad, Tag("semantic_vad")]
    | Annotated[TurnDetectionOff, Tag("none")],
    Discriminator(_type_tag),
]


# --------------------------------------------------------------------------------------------
# Profiles


class AgentRef(SettingsModel):
    """A Foundry agent that answers instead of a model deployment."""

    name: Text
    project: Text


class InputTranscription(SettingsModel):
    model: TranscriptionModel
    language: Text | None = None
    phrase_list: list[Text] | None = None  # words and names the caller is likely to say

    @classmethod
    def _rules(cls, data: dict[str, Any]) -> list[Rule]:
        phrases, model = data.get("phrase_list"), data.get("model")
        rules: list[Rule] = []
        if is_set(phrases) and isinstance(model, str) and model not in PHRASE_LIST_MODELS:
            rules.append((("phrase_list",), f"only {', '.join(PHRASE_LIST_MODELS)} transcription takes a phrase "
                          f"list (the model is {model})", False))
        if isinstance(phrases, list) and len(phrases) > MAX_PHRASES:
            rules.append((("phrase_list",), f"expected at most {MAX_PHRASES} phrases (got {len(phrases)})", False))
        return rules


def _check_transcription(value: Any) -> Any:
    """``input_transcription: off`` (or false, none) turns caller transcription off; ``true`` or
    leaving it out asks for the default one."""
    if isinstance(value, str) and value.lower() in _FALSE_WORDS | {"none"}:
        return False
    if value is False or isinstance(value, dict | BaseModel):
        return value
    raise fail("expected a mapping with a model (such as {model: azure-speech, language: en-US}), or off")


def _metadata_value(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise fail("expected text")
    value = str(value)
    if len(value) > 512:
        raise fail(f"expected text of at most 512 characters (got {len(value)})", show_got=False)
    return value


def _metadata_key(value: Any) -> Any:
    if not isinstance(value, str) or not 1 <= len(value) <= 64:
        raise fail("expected a key of 1 to 64 characters")
    return value


MetadataValue = Annotated[str, BeforeValidator(_metadata_value)]
MetadataKey = Annotated[str, BeforeValidator(_metadata_key)]


class Greeting(SettingsModel):
    """What the bot says first: ``text`` is spoken as written, ``instructions`` let the model word it."""

    text: Text | None = None
    instructions: Text | None = None

    @classmethod
    def _rules(cls, data: dict[str, Any]) -> list[Rule]:
        has_text, has_instructions = is_set(data.get("text")), is_set(data.get("instructions"))
        if has_text and has_instructions:
            return [((), "expected either text or instructions, not both", False)]
        if not has_text and not has_instructions:
            return [((), "expected text, or a mapping with text or instructions", False)]
        return []


class BargeIn(SettingsModel):
    """What the gateway does when the caller talks over the bot."""

    enabled: bool = True
    response_cancel: bool = True
    output_audio_buffer_clear: bool = True




def _check_greeting(value: Any) -> Any:
    if isinstance(value, str):
        return {"text": value}
    if isinstance(value, dict | BaseModel):
        return value
    raise fail("expected text, or a mapping with text or instructions")


def _check_barge_in(value: Any) -> Any:
    """``barge_in: false`` is short for ``barge_in: {enabled: false}``."""
    if isinstance(value, str) and value.lower() in _TRUE_WORDS | _FALSE_WORDS:
        value = value.lower() in _TRUE_WORDS
    if isinstance(value, bool):
        return {"enabled": value}
    if isinstance(value, dict | BaseModel):
        return value
    raise fail("expected true, false, or a mapping with enabled, response_cancel, output_audio_buffer_clear")


def _check_noise_suppression(value: Any) -> Any:
    if isinstance(value, str) and value.lower() in _TRUE_WORDS | _FALSE_WORDS:
        value = value.lower() in _TRUE_WORDS
    if value is True:
        return "azure_deep_noise_suppression"
    if value is False or value is None:
        return None
    if value in NOISE_SUPPRESSION_TYPES:
        return value
    raise fail(f"expected true, false or one of {', '.join(NOISE_SUPPRESSION_TYPES)}")


def _check_max_tokens(value: Any) -> Any:
    message = "expected a whole number between 1 and 4096, or inf"
    if value is None:
        return None
    if isinstance(value, bool):
        raise fail(message)
    if value == "inf" or (isinstance(value, float) and math.isinf(value) and value > 0):
        return "inf"
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or not 1 <= value <= 4096:
        raise fail(message)
    return value


class HttpTool(SettingsModel):
    """A tool run by POSTing the model's arguments as JSON; the reply body is the tool's output."""

    url: Annotated[str, AfterValidator(http_url)]
    headers: dict[str, Text] = Field(default_factory=dict)  # values usually ${ENV} references
    timeout_s: Annotated[float, BeforeValidator(numeric), AfterValidator(positive)] = 10.0


BUILTIN_TOOLS = ("hang_up", "transfer_call", "send_dtmf")
DTMF_KEYS = frozenset("0123456789*#ABCD")


class Transfer(SettingsModel):
    """Where ``transfer_call`` may send the caller: named destinations the model chooses from, and
    optionally numbers the model gives itself when they start with an allowed prefix."""

    targets: dict[Text, PhoneNumber] = Field(default_factory=dict)
    allowed_prefixes: list[Annotated[str, BeforeValidator(_number_prefix)]] = Field(default_factory=list)

    @classmethod
    def _rules(cls, data: dict[str, Any]) -> list[Rule]:
        if not data.get("targets") and not data.get("allowed_prefixes"):
            return [(("targets",), "expected at least one destination (targets: {name: +number})", False)]
        return []


def _builtin_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """A built-in tool's description and parameters, unless the profile words them itself."""
    kind = data.get("builtin")
    description, parameters = "", {}
    if kind == "hang_up":
        description = ("End the phone call. Call it when the conversation is over or the caller asks to "
                       "hang up, after saying goodbye.")
        parameters = {"type": "object", "properties": {
            "reason": {"type": "string", "description": "Why the call ends, in a few words."}}}
    elif kind == "transfer_call":
        given = data.get("transfer")
        transfer: dict[str, Any] = given if isinstance(given, dict) else {}
        names = [str(n) for n in (transfer.get("targets") or {})]
        prefixes = [normalize_number(p) if isinstance(p, str) else str(p)
                    for p in (transfer.get("allowed_prefixes") or [])]
        properties: dict[str, Any] = {}
        if names:
            properties["destination"] = {"type": "string", "enum": names,
                                         "description": "Who to transfer the caller to."}
        if prefixes:
            properties["number"] = {"type": "string", "description": (
                "A phone number in E.164 form starting with " + " or ".join(prefixes)
                + (", when no named destination fits." if names else "."))}
        description = ("Transfer the caller to a person"
                       + (f" ({', '.join(names)})" if names else "")
                       + ". Tell the caller you are transferring them, then call it.")
        parameters = {"type": "object", "properties": properties}
    elif kind == "send_dtmf":
        description = "Press keys on the phone keypad (DTMF tones), for example to answer a phone menu."
        parameters = {"type": "object", "properties": {"digits": {
            "type": "string", "description": "The keys to press: 0-9, * and #."}}, "required": ["digits"]}
    elif is_set(kind):  # an unknown built-in: its own error says so, not a missing description
        description = "-"
    else:
        return data
    out = dict(data)
    if not is_set(out.get("description")):
        out["description"] = description
    if not is_set(out.get("parameters")):
        out["parameters"] = parameters
    return out


class Tool(SettingsModel):
    """A function the model may call, and how the gateway runs it: an ``http`` endpoint, or one of
    the gateway's own ``builtin`` tools (hang_up, transfer_call, send_dtmf)."""

    name: Text
    description: Text
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    http: HttpTool | None = None
    builtin: Literal["hang_up", "transfer_call", "send_dtmf"] | None = None
    transfer: Transfer | None = None

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        return _builtin_defaults(super()._prepare(data))

    @classmethod
    def _rules(cls, data: dict[str, Any]) -> list[Rule]:
        rules: list[Rule] = []
        name = data.get("name")
        if isinstance(name, str) and name and not _TOOL_NAME.fullmatch(name):
            rules.append((("name",), "expected a tool name of 1 to 64 letters, digits, - and _", True))
        has_http, builtin = is_set(data.get("http")), data.get("builtin")
        if has_http and is_set(builtin):
            rules.append((("builtin",), "expected either http or builtin, not both", False))
        elif not has_http and not is_set(builtin):
            rules.append((("http",), "required key missing (write http: {url: ...}, or builtin: "
                                     + " | ".join(BUILTIN_TOOLS) + ")", False))
        if builtin == "transfer_call" and not is_set(data.get("transfer")):
            rules.append((("transfer",), "required key missing for transfer_call "
                                         "(write transfer: {targets: {operator: \"+14155550100\"}})", False))
        if is_set(data.get("transfer")) and builtin != "transfer_call":
            rules.append((("transfer",), "only a transfer_call tool takes transfer", False))
        schema = data.get("parameters")
        if isinstance(schema, dict):
            if schema.get("type") != "object":
                rules.append((("parameters", "type"), "expected object (the parameters are a JSON object)", True))
            properties = schema.get("properties", {})
            if not isinstance(properties, dict):
                rules.append((("parameters", "properties"), "expected a mapping of parameter names", True))
                properties = {}
            for key, spec in properties.items():
                if not isinstance(spec, dict):
                    rules.append((("parameters", "properties", key), "expected a JSON schema mapping", True))
            required = schema.get("required", [])
            if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
                rules.append((("parameters", "required"), "expected a list of parameter names", True))
            else:
                for item in required:
                    if item not in properties:
                        rules.append((("parameters", "required"),
                                      f"names {item!r}, which is not in parameters.properties", False))
            # a built-in tool worded by the profile must still ask for what the gateway reads
            needs = {"send_dtmf": ("digits",), "transfer_call": ("destination", "number")}.get(str(builtin), ())
            if needs and not any(name in properties for name in needs):
                rules.append((("parameters", "properties"), f"a {builtin} tool needs a "
                              + " or ".join(repr(n) for n in needs) + " parameter", False))
        return rules


class DigitAction(SettingsModel):
    """What a key does by itself (pressed first, not as part of a longer entry)."""

    transfer_to: PhoneNumber | None = None
    hang_up: bool = False

    @classmethod
    def _rules(cls, data: dict[str, Any]) -> list[Rule]:
        flag = data.get("hang_up")
        hang_up = flag is True or (isinstance(flag, str) and flag.lower() in _TRUE_WORDS)
        has_transfer = is_set(data.get("transfer_to"))
        if has_transfer == hang_up:
            return [((), "expected one action: transfer_to: +number, or hang_up: true", False)]
        return []


def _dtmf_keys(value: Any) -> Any:
    if isinstance(value, str) and not all(ch in DTMF_KEYS for ch in value):
        raise fail("expected keypad keys (0-9, *, #, A-D)")
    return value


class Dtmf(SettingsModel):
    """Keys the caller presses. By default they reach the model as a line of the conversation
    ("the caller pressed 1 2 3 4"), collected until ``finish_on`` or a pause of ``digit_timeout_s``."""

    to_model: bool = True
    respond: bool = True  # the bot answers the keys (else they only join the conversation)
    digit_timeout_s: Annotated[float, BeforeValidator(numeric), AfterValidator(positive)] = 2.0
    finish_on: Annotated[str, AfterValidator(_dtmf_keys)] = "#"
    actions: dict[str, DigitAction] = Field(default_factory=dict)

    @classmethod
    def _rules(cls, data: dict[str, Any]) -> list[Rule]:
        actions = data.get("actions")
        rules: list[Rule] = []
        if isinstance(actions, dict):
            for key in actions:
                if not (isinstance(key, str | int) and len(str(key)) == 1 and str(key) in DTMF_KEYS):
                    rules.append((("actions", key), "expected a single keypad key (0-9, *, #, A-D)", False))
        return rules

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        data = super()._prepare(data)
        actions = data.get("actions")
        if isinstance(actions, dict):  # YAML reads 0: ... as a number
            data = {**data, "actions": {str(k): v for k, v in actions.items()}}
        if isinstance(data.get("finish_on"), int):
            data = {**data, "finish_on": str(data["finish_on"])}
        return data


def _reprompt(value: Any) -> Any:
    return _check_greeting(value)


class SilenceHandling(SettingsModel):
    """When the caller says nothing for ``reprompt_after_s`` after the bot finished speaking, the bot
    asks again; after ``max_reprompts`` unanswered ones it says goodbye and hangs up."""

    reprompt_after_s: Annotated[float, BeforeValidator(numeric), AfterValidator(positive)] | None = None
    max_reprompts: Annotated[int, BeforeValidator(whole), AfterValidator(not_negative)] = 2
    reprompt: Annotated[Greeting, BeforeValidator(_reprompt)] = Field(default_factory=lambda: Greeting(
        text="Are you still there?"))


InterimTrigger = Literal["tool", "latency"]


def _every_trigger() -> list[InterimTrigger]:
    return ["tool", "latency"]


class InterimResponse(SettingsModel):
    """What the caller hears while a tool runs or the model is slow: fixed ``texts`` (static), or a
    short filler the service words itself (llm)."""

    type: Literal["static", "llm"]
    texts: list[Text] = Field(default_factory=list)
    instructions: Text | None = None
    model: Text | None = None
    max_completion_tokens: Annotated[int, BeforeValidator(whole), AfterValidator(positive)] | None = None
    triggers: list[InterimTrigger] = Field(default_factory=_every_trigger)
    latency_threshold_ms: Annotated[int, BeforeValidator(whole), AfterValidator(positive)] | None = None

    @classmethod
    def _rules(cls, data: dict[str, Any]) -> list[Rule]:
        if data.get("type") == "static":
            llm_only = ("instructions", "model", "max_completion_tokens")
            rules: list[Rule] = [((key,), "only an llm interim response takes this", False)
                                 for key in llm_only if is_set(data.get(key))]
            if not data.get("texts"):
                rules.append((("texts",), "required for a static interim response (the phrases to say)", False))
            return rules
        if data.get("type") == "llm" and data.get("texts"):
            return [(("texts",), "only a static interim response takes texts", False)]
        return []


class ProfileRecord(SettingsModel):
    """A profile's post-call records: where they go and how they are masked (``record:``)."""

    enabled: bool = True  # False: this profile's calls get no record
    webhook: Annotated[str, AfterValidator(http_url)] | None = None  # None: the gateway's records.webhook
    mask_numbers: bool = True  # phone numbers keep only their last 4 digits
    mask_digits: bool = True  # runs of digits said aloud (card and phone numbers) are masked in the transcript
    min_digits: Annotated[int, BeforeValidator(whole), AfterValidator(between(2, 64))] = 8  # shortest masked run


class CallLimits(SettingsModel):
    """When the gateway ends a call by itself, with a spoken goodbye where it can."""

    max_duration_s: Annotated[float, BeforeValidator(numeric), AfterValidator(positive)] | None = 3600.0
    idle_timeout_s: Annotated[float, BeforeValidator(numeric), AfterValidator(positive)] | None = 120.0
    goodbye: Text = "I have to end the call now. Thank you for calling, goodbye."


class Voicemail(SettingsModel):
    """What an answering machine gets on a call the gateway placed: ``message`` spoken verbatim once
    its greeting has ended (the beep), then a hang-up; or ``action: hangup`` at once."""

    action: Literal["message", "hangup"] = "message"
    message: Text | None = None
    after: Literal["beep"] = "beep"

    @classmethod
    def _rules(cls, data: dict[str, Any]) -> list[Rule]:
        if data.get("action", "message") == "message" and not is_set(data.get("message")):
            return [(("message",), "required: the words the machine records (or write action: hangup)", False)]
        if data.get("action") == "hangup" and is_set(data.get("message")):
            return [(("message",), "not used with action: hangup (the call hangs up at once)", False)]
        return []


class OutboundSettings(SettingsModel):
    """How a call the gateway placed with this profile opens, and how many may run at once."""

    # a callee who says nothing gets the greeting after this pause (a person is heard first)
    greeting_after_s: Annotated[float, BeforeValidator(numeric), AfterValidator(between(0, 30))] = 1.5
    # ask the carrier whether a person or a machine answered (where it can tell)
    answering_machine_detection: bool = True
    # no answering-machine result by then (from when the call's session is ready): a person
    machine_wait_s: Annotated[float, BeforeValidator(numeric), AfterValidator(positive)] = 6.0
    max_calls: Annotated[int, BeforeValidator(whole), AfterValidator(positive)] | None = None  # at once, per worker


class Busy(SettingsModel):
    """What a caller gets when no Voice Live resource has a connection left in its budget."""

    # spoken by the carrier where it can speak text (None: gateway.apology); elsewhere the apology clip
    message: Text | None = None
    # wait this long for a connection to free up (the caller hears a soft hold tone) before the message
    wait_s: Annotated[float, BeforeValidator(numeric), AfterValidator(between(0, 30))] = 0.0


class Profile(SettingsModel):
    """What a caller gets: model or agent, voice, turn detection, greeting, barge-in behaviour.

    ``turn_detection`` is None when not configured (nothing is sent, the service default applies)
    and ``TurnDetectionOff`` when the profile turns it off (YAML ``none`` or null; in Python, an
    explicit ``turn_detection=None`` means off too). ``noise_suppression`` is None when off,
    else the Voice Live noise reduction type (``true`` in YAML means azure_deep_noise_suppression).
    """

    _keep_null: ClassVar[frozenset[str]] = frozenset({"turn_detection"})

    model: Text | None = None
    agent: AgentRef | None = None
    instructions: Text | None = None
    voice: Voice | None = None
    turn_detection: Annotated[TurnDetection | None, BeforeValidator(_check_turn_detection)] = None
    noise_suppression: Annotated[NoiseSuppression | None, BeforeValidator(_check_noise_suppression)] = None
    echo_cancellation: bool = False
    # None: the default transcription (the conversation is restored from transcripts after a
    # reconnect or a renewal); False: off (the profile opts out)
    input_transcription: Annotated[
        Annotated[Literal[False], Tag("transcription-off")] | Annotated[InputTranscription, Tag("transcription")],
        Discriminator(lambda v: "transcription-off" if v is False else "transcription"),
        BeforeValidator(_check_transcription),
    ] | None = None
    # up to 15 pairs for Voice Live's resource logs (the gateway adds the carrier's call id)
    metadata: dict[MetadataKey, MetadataValue] = Field(default_factory=dict)
    temperature: Annotated[float, BeforeValidator(numeric), AfterValidator(between(0.6, 1.2))] | None = None
    max_output_tokens: Annotated[int | Literal["inf"] | None, BeforeValidator(_check_max_tokens)] = None
    greeting: Annotated[Greeting | None, BeforeValidator(_check_greeting)] = None
    barge_in: Annotated[BargeIn, BeforeValidator(_check_barge_in)] = BargeIn()
    tools: list[Tool] = Field(default_factory=list)
    limits: CallLimits = CallLimits()
    dtmf: Dtmf = Dtmf()
    silence: SilenceHandling = SilenceHandling()
    interim_response: InterimResponse | None = None
    record: ProfileRecord = ProfileRecord()
    outbound: OutboundSettings = OutboundSettings()  # calls placed with this profile
    voicemail: Voicemail = Voicemail(action="hangup")  # an answering machine on a placed call: hang up
    # the Voice Live resources this profile's calls use, by name (None: every resource)
    resources: list[Annotated[str, AfterValidator(_resource_name)]] | None = None
    busy: Busy = Busy()

    @classmethod
    def _rules(cls, data: dict[str, Any]) -> list[Rule]:
        has_model, has_agent = is_set(data.get("model")), is_set(data.get("agent"))
        rules: list[Rule] = []
        tools = data.get("tools")
        if isinstance(tools, list):
            seen: set[str] = set()
            for index, tool in enumerate(tools):
                name = tool.get("name") if isinstance(tool, dict) else None
                if isinstance(name, str) and name in seen:
                    rules.append((("tools", index, "name"), f"another tool is already named {name!r}", False))
                if isinstance(name, str):
                    seen.add(name)
        if has_model and has_agent:
            rules.append((("agent",), "expected either model or agent, not both", False))
        elif not has_model and not has_agent:
            rules.append(
                (
                    ("model",),
                    "required key missing (write model: <deployment>, or agent: {name, project})",
                    False,
                )
            )
        if has_agent and is_set(data.get("instructions")):
            rules.append(
                (("instructions",), "not supported with an agent: the agent's own instructions apply", False)
            )
        if has_agent:  # agents take no per-response instructions: fixed phrases only
            greeting = data.get("greeting")
            if isinstance(greeting, dict) and is_set(greeting.get("instructions")):
                rules.append((("greeting", "instructions"), "not supported with an agent (it takes no per-response "
                              "instructions): write the greeting as text", False))
            silence = data.get("silence")
            reprompt = silence.get("reprompt") if isinstance(silence, dict) else None
            if isinstance(reprompt, dict) and is_set(reprompt.get("instructions")):
                rules.append((("silence", "reprompt", "instructions"), "not supported with an agent (it takes no "
                              "per-response instructions): write the re-prompt as text", False))
        metadata = data.get("metadata")
        if isinstance(metadata, dict):
            if METADATA_CALL_ID in metadata:
                rules.append((("metadata", METADATA_CALL_ID), "reserved: the gateway puts the carrier's call id "
                              "there", False))
            if len(metadata) > 15:
                rules.append((("metadata",), f"expected at most 15 pairs (Voice Live takes 16, and the gateway "
                              f"adds {METADATA_CALL_ID}; got {len(metadata)})", False))
        return rules

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        data = super()._prepare(data)
        value = data.get("input_transcription")
        if value is True or (isinstance(value, str) and value.lower() in _TRUE_WORDS):
            data = {k: v for k, v in data.items() if k != "input_transcription"}  # the default one
        return data

    @property
    def agent_mode(self) -> bool:
        return self.agent is not None

    @property
    def turn_detection_off(self) -> bool:
        return isinstance(self.turn_detection, TurnDetectionOff)


def default_transcription_model(profile: Profile) -> str:
    """The caller transcription a profile gets when it names none: the documented choices differ
    between gpt-realtime models and the other models and agents."""
    return "gpt-4o-mini-transcribe" if profile.model in GPT_REALTIME_MODELS else "azure-speech"


# --------------------------------------------------------------------------------------------
# Sections


def _api_version(value: str) -> str:
    if value not in API_VERSIONS:
        why = (" (v1 uses the OpenAI GA wire shape: nested session.audio and renamed events, which the gateway "
               "does not speak)" if value.strip().lower() == "v1" else "")
        raise fail(f"expected an api-version the gateway speaks: one of {', '.join(API_VERSIONS)}{why}")
    return value


def _endpoint(value: str) -> str:
    return value if value == SIMULATOR else socket_or_web_url(value)


RESOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")
DEFAULT_RESOURCE = "default"  # the one resource of a voicelive section with an endpoint (no list)
CONNECTIONS_PER_MINUTE = 30  # Voice Live's new connections per minute on an S0 resource


def _resource_name(value: str) -> str:
    if not RESOURCE_NAME.fullmatch(value):
        raise fail("expected a resource name of letters, digits, '.', '-' and '_' (at most 40)")
    return value


class VoiceLiveResource(SettingsModel):
    """One Voice Live resource calls may use: its endpoint, credentials and connection budget."""

    name: Annotated[str, AfterValidator(_resource_name)]
    endpoint: Annotated[str, AfterValidator(_endpoint)]
    api_key: SecretStr | None = None
    # new connections per minute the resource allows (Voice Live S0: 30), shared by every worker
    connections_per_minute: Annotated[int, BeforeValidator(whole), AfterValidator(positive)] = CONNECTIONS_PER_MINUTE
    region: Text | None = None  # a label for dashboards and check-config


class VoiceLiveSettings(SettingsModel):
    # a Voice Live URL, or "simulator": the built-in simulator asked for by name (left empty, a
    # gateway that has carrier credentials refuses to start: real callers must not reach it)
    endpoint: Annotated[str, AfterValidator(_endpoint)] | None = None
    api_key: SecretStr | None = None
    api_version: Annotated[str, AfterValidator(_api_version)] = DEFAULT_API_VERSION
    token_scope: Text = DEFAULT_TOKEN_SCOPE
    connect_timeout_s: Annotated[float, BeforeValidator(numeric), AfterValidator(positive)] = 10.0
    # A session that drops mid-call is reopened with backoff for at most this long (0: never).
    reconnect_budget_s: Annotated[float, BeforeValidator(numeric), AfterValidator(not_negative_float)] = 15.0
    # Renew a session this long before Voice Live's expires_at, at the first quiet moment.
    renew_before_expiry_s: Annotated[float, BeforeValidator(numeric), AfterValidator(positive)] = 120.0
    # A Voice Live socket that stops reading: end the call once this much is waiting to be sent.
    max_send_backlog_kib: Annotated[int, BeforeValidator(whole), AfterValidator(positive)] = 1024
    # Open a call's session when the carrier announces it (a voice webhook, an incoming-call event, the
    # gateway placing the call), before its media socket comes; closed unused after this long. auto:
    # on with one worker, off with several (the media lands on the announcing worker only 1 in N times,
    # and every miss spends one of the resource's connections per minute).
    prewarm: bool | Literal["auto"] = "auto"
    prewarm_timeout_s: Annotated[float, BeforeValidator(numeric), AfterValidator(positive)] = 10.0
    prewarm_outbound_timeout_s: Annotated[float, BeforeValidator(numeric), AfterValidator(positive)] = 60.0
    # The connection budget of the endpoint above (or give a list of resources instead).
    connections_per_minute: Annotated[int, BeforeValidator(whole), AfterValidator(positive)] = CONNECTIONS_PER_MINUTE
    # Several Voice Live resources: tried in order (ordered) or the least loaded first (spread).
    resources: list[VoiceLiveResource] | None = None
    strategy: Literal["ordered", "spread"] = "ordered"
    # Without GATEWAY_REDIS_URL every worker keeps its share of each resource's budget: the budget
    # divided by the workers of this replica and by this many replicas.
    replicas: Annotated[int, BeforeValidator(whole), AfterValidator(positive)] = 1
    # Connections a session renewal must leave in a resource's budget (for new calls and reconnects).
    renewal_reserve: Annotated[int, BeforeValidator(whole), AfterValidator(not_negative)] = 5
    # Renewals are spread over this long before renew_before_expiry_s (by call), not all at once.
    renew_spread_s: Annotated[float, BeforeValidator(numeric), AfterValidator(not_negative_float)] = 300.0

    @classmethod
    def _rules(cls, data: dict[str, Any]) -> list[Rule]:
        rules: list[Rule] = []
        resources = data.get("resources")
        if resources is None:
            return rules
        for key in ("endpoint", "api_key", "connections_per_minute"):
            if is_set(data.get(key)):
                rules.append(((key,), "not with voicelive.resources: give each resource its own", False))
        if isinstance(resources, list):
            if not resources:
                rules.append((("resources",), "expected at least one resource (or leave the list out)", False))
            seen: set[str] = set()
            for index, item in enumerate(resources):
                name = field_of(item, "name")
                if isinstance(name, str) and name in seen:
                    rules.append((("resources", index, "name"), "a second resource of this name", True))
                if isinstance(name, str):
                    seen.add(name)
        return rules

    def resource_list(self) -> list[VoiceLiveResource]:
        """The resources calls may use: the list, or the one endpoint as the resource "default"."""
        if self.resources is not None:
            return list(self.resources)
        return [VoiceLiveResource.model_construct(
            name=DEFAULT_RESOURCE, endpoint=self.endpoint or SIMULATOR, api_key=self.api_key,
            connections_per_minute=self.connections_per_minute, region=None)]


class OutboundLimits(SettingsModel):
    """Limits of the outbound-call API, per worker (beside ``max_calls``, which placed calls count in)."""

    calls_per_minute: Annotated[int, BeforeValidator(whole), AfterValidator(positive)] = 60
    max_per_profile: Annotated[int, BeforeValidator(whole), AfterValidator(positive)] | None = None
    # how long a placed call's state stays readable (GET /v1/calls/{id}) after it ended, and how
    # long an idempotency key returns the same call
    keep_s: Annotated[float, BeforeValidator(numeric), AfterValidator(positive)] = 3600.0


class GatewaySettings(SettingsModel):
    public_url: Url | None = None
    # HMAC key for the per-call tokens carriers hand back to the media sockets; every replica needs
    # the same one. Unset: a random key per process (fine for a single replica).
    signing_key: SecretStr | None = None
    # Accept carrier traffic that cannot be authenticated (a carrier's credentials are not set).
    # For local development only; the gateway says so loudly at start-up.
    insecure_dev_mode: bool = False
    max_calls: Annotated[int, BeforeValidator(whole), AfterValidator(positive)] = 200  # per worker
    # On SIGTERM: stop taking calls, let the active ones finish for at most this long, then exit.
    drain_timeout_s: Annotated[float, BeforeValidator(numeric), AfterValidator(positive)] = 600.0
    # What a caller hears when the call cannot be taken or Voice Live fails for good.
    apology: Text = "Sorry, we cannot take your call right now. Please call again later."
    # The operator token of the outbound-call API (POST /v1/calls). Unset: the API is off.
    api_token: SecretStr | None = None
    # The operator token of the console (GET /console: try profiles by microphone, watch and end calls).
    # Unset: the console is off, unless insecure_dev_mode is on (then it is open to anyone who reaches it).
    console_token: SecretStr | None = None
    outbound: OutboundLimits = OutboundLimits()


class RecordingSettings(SettingsModel):
    """Opt-in call recording: one JSON Lines fixture per call, replayable as a test."""

    directory: Text | None = None  # None: calls are not recorded
    redact_audio: bool = True  # audio replaced by silence of the same length (callers' voices are personal data)


WEBHOOK_SECRET_PREFIX = "whsec_"


def webhook_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: ``whsec_`` and the key in base64."""
    body = secret.removeprefix(WEBHOOK_SECRET_PREFIX)
    try:
        key = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not secret.startswith(WEBHOOK_SECRET_PREFIX) or not 24 <= len(key) <= 64:
        raise fail("expected a Standard Webhooks secret: whsec_ followed by 24 to 64 random bytes in base64 "
                   "(for example: python -c \"import base64,os; print('whsec_'+base64.b64encode(os.urandom(32))"
                   ".decode())\")", show_got=False)
    return key


def _webhook_secret(value: SecretStr) -> SecretStr:
    webhook_key(value.get_secret_value())
    return value


class RecordsSettings(SettingsModel):
    """Post-call records: written to a spool directory, then delivered to a webhook, signed the
    Standard Webhooks way, retried with backoff until it answers 2xx."""

    webhook: Annotated[str, AfterValidator(http_url)] | None = None  # None: only profiles' webhooks
    signing_secret: Annotated[SecretStr, AfterValidator(_webhook_secret)] | None = None  # ${VAR} only
    spool_directory: Text | None = None  # where records wait until delivered (shared by the workers)
    timeout_s: Annotated[float, BeforeValidator(numeric), AfterValidator(positive)] = 10.0  # one POST
    initial_backoff_s: Annotated[float, BeforeValidator(numeric), AfterValidator(positive)] = 2.0
    max_backoff_s: Annotated[float, BeforeValidator(numeric), AfterValidator(positive)] = 300.0
    max_attempts: Annotated[int, BeforeValidator(whole), AfterValidator(positive)] = 12  # then kept in the spool
    # on shutdown: how long deliveries in progress get to finish (the rest waits in the spool)
    drain_timeout_s: Annotated[float, BeforeValidator(numeric), AfterValidator(not_negative_float)] = 10.0


def _record_webhooks(data: Mapping[str, Any]) -> list[str]:
    """Where records go according to raw config data: the gateway's webhook, the profiles' ones."""
    found = []
    records = data.get("records")
    if is_set(field_of(records, "webhook")):
        found.append("records.webhook")
    profiles = data.get("profiles")
    if isinstance(profiles, Mapping):
        for name, profile in profiles.items():
            record = field_of(profile, "record") if isinstance(profile, Mapping) else None
            if is_set(field_of(record, "webhook")):
                found.append(f"profiles.{name}.record.webhook")
    return found


class Routes(SettingsModel):
    """Called number -> profile name. ``numbers`` keys are stored normalized (see normalize_number)."""

    default: Text
    numbers: dict[str, Text] = Field(default_factory=dict)

    @classmethod
    def _rules(cls, data: dict[str, Any]) -> list[Rule]:
        numbers = data.get("numbers")
        if not isinstance(numbers, dict):
            return []
        rules: list[Rule] = []
        seen: dict[str, str] = {}
        for key in numbers:
            if not isinstance(key, str):
                continue
            number = normalize_number(key)
            if not E164.fullmatch(number):
                rules.append(
                    (("numbers", key), f"expected an E.164 number such as +14155550100 (got {key!r})", False)
                )
            elif number in seen:
                rules.append(
                    (("numbers", key), f"the same number as {seen[number]!r} is already routed", False)
                )
            else:
                seen[number] = key
        return rules

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        data = super()._prepare(data)
        numbers = data.get("numbers")
        if isinstance(numbers, dict):
            normalized: dict[Any, Any] = {}
            for key, value in numbers.items():
                normalized.setdefault(normalize_number(key) if isinstance(key, str) else key, value)
            data = {**data, "numbers": normalized}
        return data


class _GatewaySections(SettingsModel):
    source: str = "config.yaml"
    voicelive: VoiceLiveSettings = VoiceLiveSettings()
    gateway: GatewaySettings = GatewaySettings()


# Each carrier's section (gateway/carriers/<name>/settings.py) follows the gateway's own.
if TYPE_CHECKING:
    _WithCarriers = _GatewaySections
else:
    _WithCarriers = with_carrier_sections(_GatewaySections)


class GatewayConfig(_WithCarriers):
    """The whole of config.yaml: the sections below and above, and one section per carrier named
    after it (see :mod:`gateway.carriers.settings`)."""

    recording: RecordingSettings = RecordingSettings()
    records: RecordsSettings = RecordsSettings()
    profiles: dict[str, Profile]
    routes: Routes

    _hidden: ClassVar[frozenset[str]] = frozenset({"source"})
    # key path -> environment variables its value was read from (for describe()).
    _env_refs: dict[str, tuple[str, ...]] = PrivateAttr(default_factory=dict)
    # values of environment variables written into tool URLs (?code=${KEY}): secrets to scrub
    _url_secrets: list[str] = PrivateAttr(default_factory=list)

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        data = super()._prepare(data)
        profiles = data.get("profiles")
        if profiles is None and "profiles" in data:
            data = {**data, "profiles": {}}
            profiles = {}
        # Top-level keys starting with "x-" are free for YAML anchors shared by profiles.
        if any(isinstance(key, str) and key.startswith("x-") for key in data):
            data = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}
        routes = data.get("routes")
        if routes is None:
            # Reported as "routes.default: required key missing" unless one profile makes it obvious.
            data = {**data, "routes": {}}
            routes = {}
        if isinstance(routes, dict) and not is_set(routes.get("default")):
            if isinstance(profiles, dict) and len(profiles) == 1:
                (only,) = profiles
                data = {**data, "routes": {**routes, "default": only}}
            elif not isinstance(profiles, dict) or not profiles:
                # Without profiles, a missing default is not worth a second problem line: any name
                # passes here, and the missing profiles are reported anyway.
                data = {**data, "routes": {**routes, "default": "-"}}
        return data

    @classmethod
    def _rules(cls, data: dict[str, Any]) -> list[Rule]:
        rules: list[Rule] = carrier_root_rules(data)
        webhooks = _record_webhooks(data)
        if webhooks:
            records = data.get("records")
            because = f"required when records are delivered ({webhooks[0]} is set)"
            if not is_set(field_of(records, "signing_secret")):
                rules.append((("records", "signing_secret"), f"{because}: write ${{GATEWAY_RECORDS_SECRET}}", False))
            if not is_set(field_of(records, "spool_directory")):
                rules.append((("records", "spool_directory"), f"{because}: a directory records wait in until "
                              "delivered", False))
        profiles = data.get("profiles")
        if "profiles" in data and (profiles is None or (isinstance(profiles, Mapping) and not profiles)):
            rules.append((("profiles",), "expected at least one profile", False))
        if not isinstance(profiles, Mapping):
            return rules
        for name in profiles:
            if not isinstance(name, str) or not _PROFILE_NAME.fullmatch(name):
                rules.append(
                    (
                        ("profiles", name),
                        f"expected a profile name of letters, digits, - and _ (got {name!r})",
                        False,
                    )
                )
        vl = data.get("voicelive")
        listed = field_of(vl, "resources")
        known = (list(dict.fromkeys(field_of(r, "name") for r in listed)) if isinstance(listed, list)
                 else [DEFAULT_RESOURCE])
        for name, profile in profiles.items():
            wanted = field_of(profile, "resources")
            if isinstance(wanted, list):
                if not wanted:
                    rules.append((("profiles", name, "resources"), "expected at least one resource (or leave "
                                  "the list out: every resource)", False))
                for index, resource in enumerate(wanted):
                    if isinstance(resource, str) and resource not in known:
                        rules.append((("profiles", name, "resources", index), "expected the name of a Voice Live "
                                      f"resource: one of {', '.join(str(k) for k in known)}", True))
        names = [n for n in profiles if isinstance(n, str)]
        expected = f"expected the name of a profile: one of {', '.join(names)}" if names else ""
        routes = data.get("routes")
        default = field_of(routes, "default")
        if names and isinstance(default, str) and default and default not in profiles:
            rules.append((("routes", "default"), expected, True))
        numbers = field_of(routes, "numbers")
        if names and isinstance(numbers, Mapping):
            for key, name in numbers.items():
                if isinstance(name, str) and name and name not in profiles:
                    rules.append((("routes", "numbers", key), expected, True))
        return rules

    def record_webhook(self, profile: Profile) -> str | None:
        """Where a profile's call records go (None: it gets no record)."""
        if not profile.record.enabled:
            return None
        return profile.record.webhook or self.records.webhook

    def route(self, to: str | None) -> tuple[str, Profile]:
        """The profile for a called number; numbers not listed get the default profile."""
        name = self.routes.default
        if to:
            name = self.routes.numbers.get(normalize_number(to), name)
        return name, self.profiles[name]

    def secrets(self) -> list[str]:
        """Plain values of every secret that is set, for the log scrubber (each carrier's section lists
        its own, such as a key inside a connection string)."""
        values: list[str] = []
        keys = [resource.api_key for resource in self.voicelive.resources or []]
        for secret in (self.voicelive.api_key, self.gateway.signing_key, self.records.signing_secret,
                       self.gateway.api_token, self.gateway.console_token, *keys):
            if secret is not None and secret.get_secret_value():
                values.append(secret.get_secret_value())
        for section in carrier_sections(self):
            values += section.secret_values()
        for profile_name, profile in self.profiles.items():  # tool headers read from the environment
            for index, tool in enumerate(profile.tools):
                for header, value in (tool.http.headers if tool.http is not None else {}).items():
                    if self._env_refs.get(f"profiles.{profile_name}.tools[{index}].http.headers.{header}"):
                        values.append(value)
                        values += [word for word in value.split() if len(word) >= 8 and word != value]
        values += self._url_secrets
        return values

    @property
    def uses_simulator(self) -> bool:
        """True when calls go to the built-in simulator: no Voice Live endpoint, or "simulator"."""
        vl = self.voicelive
        if vl.resources is not None:
            return all(resource.endpoint == SIMULATOR for resource in vl.resources)
        return vl.endpoint in (None, SIMULATOR)

    @property
    def voicelive_url(self) -> str | None:
        """The Voice Live endpoint, None for the built-in simulator."""
        return None if self.uses_simulator else self.voicelive.endpoint

    def simulator_refusal(self) -> str | None:
        """Why ``gateway serve`` must not start (None: it may): carrier credentials say real callers
        will ring, and no Voice Live endpoint is set, so they would reach the simulator by accident."""
        if self.voicelive.endpoint is not None or self.voicelive.resources or self.gateway.insecure_dev_mode:
            return None
        carriers = [f"{section.section}.{section.credential_key}" for section in carrier_sections(self)
                    if section.has_credential]
        if not carriers:
            return None
        names = self._env_refs.get("voicelive.endpoint")
        where = f"set {' or '.join(names)}" if names else "set voicelive.endpoint"
        return (f"{' and '.join(carriers)} {'are' if len(carriers) > 1 else 'is'} set (real calls), but no Voice "
                f"Live endpoint is: {where} to the Voice Live resource, or write voicelive.endpoint: simulator "
                "to send calls to the built-in simulator on purpose")

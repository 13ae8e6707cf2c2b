"""config.yaml loading: the shipped file, every kind of problem report, interpolation, secrets,
routes and the check-config description."""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from gateway.carriers.registry import CARRIERS
from gateway.carriers.settings import carrier_settings
from gateway.config import (
    AgentRef,
    AzureSemanticVad,
    AzureStandardVoice,
    ConfigError,
    DigitAction,
    Dtmf,
    GatewayConfig,
    Greeting,
    Profile,
    Routes,
    ServerVad,
    Tool,
    TurnDetectionOff,
    describe,
    load_config,
    normalize_number,
    parse_config,
)
from gateway.voicelive.session import build_session

SHIPPED = Path(__file__).resolve().parents[2] / "config.yaml"

FULL_ENV = {
    "AZURE_VOICELIVE_ENDPOINT": "https://contoso.services.ai.azure.com/",
    "AZURE_VOICELIVE_API_KEY": "vl-key-0123456789",
    "GATEWAY_PUBLIC_URL": "https://voice.example.com/",
    "TWILIO_AUTH_TOKEN": "twilio-token-abcdef",
    "ACS_CONNECTION_STRING": "endpoint=https://acs.example.com/;accesskey=acs-access-key-xyz==",
    "ACS_RESOURCE_ID": "00000000-0000-0000-0000-0000000000ac",
}

MINIMAL = "profiles:\n  main:\n    model: gpt-realtime\n"


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the n-th line containing ``needle`` (computed from the text itself)."""
    found = [i for i, line in enumerate(text.splitlines(), start=1) if needle in line]
    return found[occurrence - 1]


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env=env or {})
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


# ---------------------------------------------------------------------------------------------
# The shipped config


def test_shipped_config_loads_with_an_empty_environment() -> None:
    config = load_config(SHIPPED, env={})
    assert config.source == str(SHIPPED)
    assert config.uses_simulator
    assert config.voicelive.endpoint is None
    assert config.voicelive.api_key is None
    assert config.voicelive.api_version == "2026-07-15"
    assert config.voicelive.token_scope == "https://ai.azure.com/.default"
    assert config.voicelive.connect_timeout_s == 10
    assert config.gateway.public_url is None
    assert config.twilio.auth_token is None
    assert config.acs.connection_string is None
    assert config.secrets() == []
    assert set(config.profiles) == {"support", "sales"}
    assert config.routes.default == "support"
    assert config.routes.numbers == {"+15555550100": "sales"}

    support = config.profiles["support"]
    assert support.model == "gpt-realtime"
    assert isinstance(support.voice, AzureStandardVoice)
    assert support.voice.name == "en-US-Ava:DragonHDLatestNeural"
    assert support.voice.temperature == 0.8
    assert isinstance(support.turn_detection, AzureSemanticVad)
    assert support.turn_detection.silence_duration_ms == 500
    assert support.turn_detection.remove_filler_words is True
    assert support.noise_suppression == "azure_deep_noise_suppression"
    assert support.echo_cancellation is True
    assert support.input_transcription is not None
    assert support.input_transcription.model == "gpt-4o-mini-transcribe"
    assert support.temperature == 0.8
    assert support.max_output_tokens == "inf"
    assert support.greeting == Greeting(text="Hello, thanks for calling Contoso support. How can I help?")
    assert support.barge_in.enabled and support.barge_in.response_cancel
    assert support.barge_in.output_audio_buffer_clear

    sales = config.profiles["sales"]
    assert sales.voice == "marin"
    assert isinstance(sales.turn_detection, ServerVad)
    assert sales.greeting is not None and sales.greeting.instructions and sales.greeting.text is None


def test_shipped_config_loads_with_the_environment_set() -> None:
    config = load_config(SHIPPED, env=FULL_ENV)
    assert not config.uses_simulator
    assert config.voicelive.endpoint == "https://contoso.services.ai.azure.com"
    assert isinstance(config.voicelive.api_key, SecretStr)
    assert config.voicelive.api_key.get_secret_value() == "vl-key-0123456789"
    assert config.gateway.public_url == "https://voice.example.com"
    assert config.twilio.auth_token is not None
    assert config.twilio.auth_token.get_secret_value() == "twilio-token-abcdef"
    assert sorted(config.secrets()) == sorted(
        [
            "vl-key-0123456789",
            "twilio-token-abcdef",
            FULL_ENV["ACS_CONNECTION_STRING"],
            "acs-access-key-xyz==",
        ]
    )


def test_empty_environment_values_mean_not_set() -> None:
    env = dict.fromkeys(FULL_ENV, "")
    config = load_config(SHIPPED, env=env)
    assert config.uses_simulator
    assert config.secrets() == []
    assert config.gateway.public_url is None


def test_config_is_frozen() -> None:
    config = parse_config(MINIMAL, env={})
    with pytest.raises(ValidationError):
        config.routes = Routes(default="main")  # type: ignore[misc]
    with pytest.raises(ValidationError):
        config.profiles["main"].model = "other"  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# Problem reports: exact lines


def test_voice_type_error_matches_the_documented_format() -> None:
    text = dedent(
        """
        profiles:
          support:
            model: gpt-realtime
          sales:
            model: gpt-realtime
            voice:
              type: azure-foo
              name: en-US-AvaNeural
        routes:
          default: support
        """
    )
    assert problems_of(text) == [
        "config.yaml:7: profiles.sales.voice.type: expected one of azure-standard, azure-custom, "
        "azure-personal, openai (got 'azure-foo')"
    ]


@pytest.mark.parametrize(
    ("text", "needle", "expected"),
    [
        pytest.param(
            MINIMAL + "    agent: {name: a, project: p}\n",
            "agent:",
            "profiles.main.agent: expected either model or agent, not both",
            id="model-and-agent",
        ),
        pytest.param(
            "profiles:\n  main:\n    voice: marin\n",
            "main:",
            "profiles.main.model: required key missing "
            "(write model: <deployment>, or agent: {name, project})",
            id="neither-model-nor-agent",
        ),
        pytest.param(
            "profiles:\n  main:\n    agent: {name: a, project: p}\n    instructions: be brief\n",
            "instructions:",
            "profiles.main.instructions: not supported with an agent: the agent's own instructions apply",
            id="instructions-with-agent",
        ),
        pytest.param(
            "profiles:\n  main:\n    agent:\n      name: a\n",
            "agent:",
            "profiles.main.agent.project: required key missing",
            id="missing-key-uses-parent-line",
        ),
        pytest.param(
            MINIMAL + "    colour: blue\n",
            "colour",
            "profiles.main.colour: unknown key (expected one of: model, agent, instructions, voice, "
            "turn_detection, noise_suppression, echo_cancellation, input_transcription, metadata, temperature, "
            "max_output_tokens, greeting, barge_in, tools, limits, dtmf, silence, interim_response, record, "
            "outbound, voicemail, resources, busy)",
            id="unknown-key",
        ),
        pytest.param(
            MINIMAL + "    turn_detection: {type: server_vad, eagerness: low}\n",
            "turn_detection",
            "profiles.main.turn_detection.eagerness: unknown key (expected one of: type, create_response, "
            "interrupt_response, threshold, prefix_padding_ms, silence_duration_ms, end_of_utterance_detection, "
            "auto_truncate)",
            id="unknown-key-in-union-member",
        ),
        pytest.param(
            MINIMAL + "    temperature: 1.5\n",
            "temperature",
            "profiles.main.temperature: expected a number between 0.6 and 1.2 (got 1.5)",
            id="number-bounds",
        ),
        pytest.param(
            MINIMAL + "    temperature: warm\n",
            "temperature",
            "profiles.main.temperature: expected a number (got 'warm')",
            id="not-a-number",
        ),
        pytest.param(
            MINIMAL + "    temperature: true\n",
            "temperature",
            "profiles.main.temperature: expected a number (got True)",
            id="bool-is-not-a-number",
        ),
        pytest.param(
            "profiles:\n  main:\n    model: 42\n",
            "model:",
            "profiles.main.model: expected text (got 42)",
            id="not-text",
        ),
        pytest.param(
            MINIMAL + "    echo_cancellation: sometimes\n",
            "echo_cancellation",
            "profiles.main.echo_cancellation: expected true or false (got 'sometimes')",
            id="not-a-bool",
        ),
        pytest.param(
            MINIMAL + "    input_transcription:\n      model: whisper-9\n",
            "whisper-9",
            "profiles.main.input_transcription.model: expected one of azure-speech, mai-transcribe, "
            "mai-transcribe-1, mai-transcribe-2, whisper-1, gpt-4o-transcribe, gpt-4o-mini-transcribe, "
            "gpt-4o-transcribe-diarize (got 'whisper-9')",
            id="literal",
        ),
        pytest.param(
            MINIMAL + "    input_transcription: azure-speech\n",
            "input_transcription",
            "profiles.main.input_transcription: expected a mapping with a model (such as {model: azure-speech, "
            "language: en-US}), or off (got 'azure-speech')",
            id="not-a-mapping",
        ),
        pytest.param(
            MINIMAL + "    turn_detection: {threshold: 0.5}\n",
            "turn_detection",
            "profiles.main.turn_detection.type: required key missing (expected one of server_vad, "
            "azure_semantic_vad, azure_semantic_vad_en, azure_semantic_vad_multilingual, semantic_vad, none)",
            id="turn-detection-type-missing",
        ),
        pytest.param(
            MINIMAL + "    turn_detection: {type: semantic_vad, eagerness: eager}\n",
            "turn_detection",
            "profiles.main.turn_detection.eagerness: expected one of low, medium, high, auto (got 'eager')",
            id="eagerness",
        ),
        pytest.param(
            MINIMAL + "    turn_detection:\n      type: azure_semantic_vad\n      silence_duration_ms: -20\n",
            "silence_duration_ms",
            "profiles.main.turn_detection.silence_duration_ms: expected a whole number, 0 or more (got -20)",
            id="negative-ms",
        ),
        pytest.param(
            MINIMAL + "    turn_detection: {type: azure_semantic_vad_en, languages: [en-US]}\n",
            "turn_detection",
            "profiles.main.turn_detection.languages: unknown key (expected one of: type, create_response, "
            "interrupt_response, threshold, prefix_padding_ms, silence_duration_ms, speech_duration_ms, "
            "remove_filler_words, end_of_utterance_detection, auto_truncate, appended_text_after_truncation)",
            id="languages-not-for-en",
        ),
        pytest.param(
            MINIMAL + "    voice: {type: azure-standard, name: v, temperature: 2}\n",
            "voice",
            "profiles.main.voice.temperature: expected a number between 0 and 1 (got 2)",
            id="voice-temperature",
        ),
        pytest.param(
            MINIMAL + "    voice: {type: azure-custom, name: v}\n",
            "voice",
            "profiles.main.voice.endpoint_id: required key missing",
            id="custom-voice-needs-endpoint-id",
        ),
        pytest.param(
            MINIMAL + "    voice: {type: azure-personal, name: v, model: Dragon}\n",
            "voice",
            "profiles.main.voice.model: expected one of DragonLatestNeural, DragonHDOmniLatestNeural, "
            "PhoenixLatestNeural, PhoenixV2Neural, MAI-Voice-1 (got 'Dragon')",
            id="personal-voice-model",
        ),
        pytest.param(
            MINIMAL + "    voice: en-US-AvaNeural\n",
            "voice",
            "profiles.main.voice: expected an OpenAI realtime voice: one of alloy, ash, ballad, coral, echo, "
            "sage, shimmer, verse, marin, cedar; Azure voices are written as a mapping such as "
            "{type: azure-standard, name: en-US-AvaNeural} (got 'en-US-AvaNeural')",
            id="voice-string-not-openai",
        ),
        pytest.param(
            MINIMAL + "    noise_suppression: loud\n",
            "noise_suppression",
            "profiles.main.noise_suppression: expected true, false or one of azure_deep_noise_suppression, "
            "near_field, far_field (got 'loud')",
            id="noise-suppression",
        ),
        pytest.param(
            MINIMAL + "    max_output_tokens: 5000\n",
            "max_output_tokens",
            "profiles.main.max_output_tokens: expected a whole number between 1 and 4096, or inf (got 5000)",
            id="max-output-tokens",
        ),
        pytest.param(
            MINIMAL + "    greeting: {text: Hi, instructions: Greet the caller}\n",
            "greeting",
            "profiles.main.greeting: expected either text or instructions, not both",
            id="greeting-both",
        ),
        pytest.param(
            MINIMAL + "    barge_in: {enabled: perhaps}\n",
            "barge_in",
            "profiles.main.barge_in.enabled: expected true or false (got 'perhaps')",
            id="barge-in",
        ),
        pytest.param(
            "voicelive:\n  endpoint: ftp://example.com\n" + MINIMAL,
            "endpoint",
            "voicelive.endpoint: expected a URL starting with https://, http://, wss:// or ws:// "
            "(got 'ftp://example.com')",
            id="endpoint-scheme",
        ),
        pytest.param(
            "gateway:\n  public_url: voice.example.com\n" + MINIMAL,
            "public_url",
            "gateway.public_url: expected a URL starting with https://, http://, wss:// or ws:// "
            "(got 'voice.example.com')",
            id="public-url-scheme",
        ),
        pytest.param(
            "voicelive:\n  connect_timeout_s: 0\n" + MINIMAL,
            "connect_timeout_s",
            "voicelive.connect_timeout_s: expected a number greater than 0 (got 0)",
            id="timeout",
        ),
        pytest.param(
            "profiles:\n  main:\n    model: m\n  main:  # again\n    model: n\n",
            "# again",
            "profiles.main: duplicate key (first written on line 2)",
            id="duplicate-key",
        ),
        pytest.param(
            "profiles:\n  main room:\n    model: m\n",
            "main room",
            "profiles.main room: expected a profile name of letters, digits, - and _ (got 'main room')",
            id="profile-name",
        ),
        pytest.param(
            "profiles:\n",
            "profiles",
            "profiles: expected at least one profile",
            id="no-profiles",
        ),
        pytest.param(
            MINIMAL + "routes:\n  default: nobody\n",
            "nobody",
            "routes.default: expected the name of a profile: one of main (got 'nobody')",
            id="unknown-default-profile",
        ),
        pytest.param(
            MINIMAL + "routes:\n  numbers:\n    '+15555550100': ghost\n",
            "ghost",
            "routes.numbers.+15555550100: expected the name of a profile: one of main (got 'ghost')",
            id="unknown-number-profile",
        ),
        pytest.param(
            MINIMAL + "routes:\n  numbers:\n    '5550100': main\n",
            "5550100",
            "routes.numbers.5550100: expected an E.164 number such as +14155550100 (got '5550100')",
            id="not-e164",
        ),
        pytest.param(
            MINIMAL + "routes:\n  numbers:\n    '+1 555 555 0100': main\n    '+1-555-555-0100': main\n",
            "+1-555",
            "routes.numbers.+1-555-555-0100: the same number as '+1 555 555 0100' is already routed",
            id="duplicate-number",
        ),
        pytest.param(
            "profiles:\n  a: {model: m}\n  b: {model: m}\n",
            "profiles",
            "routes.default: required key missing",
            id="default-needed-with-several-profiles",
        ),
        pytest.param(
            "twilio:\n  auth_token: AC0123456789abcdef\n" + MINIMAL,
            "auth_token",
            "twilio.auth_token: secrets come from the environment only: write ${VAR_NAME}",
            id="secret-literal",
        ),
        pytest.param(
            "acs:\n  connection_string: ${ACS:-endpoint=x;accesskey=y}\n" + MINIMAL,
            "connection_string",
            "acs.connection_string: secrets come from the environment only: write ${VAR_NAME}",
            id="secret-in-default",
        ),
        pytest.param(
            "source: elsewhere.yaml\n" + MINIMAL,
            "source",
            "source: unknown key (expected one of: voicelive, gateway, " + ", ".join(CARRIERS)
            + ", recording, records, profiles, routes)",
            id="unknown-top-level-key",
        ),
    ],
)
def test_each_problem_is_reported_with_file_line_path_and_expectation(
    text: str, needle: str, expected: str
) -> None:
    assert problems_of(text) == [f"config.yaml:{line_of(text, needle)}: {expected}"]


def test_missing_sections_are_reported_at_the_top() -> None:
    text = "voicelive:\n  api_version: '2026-07-15'\n"
    assert problems_of(text) == ["config.yaml:1: profiles: required key missing"]
    text += "profiles:\n  a: {model: m}\n  b: {model: m}\n"
    assert problems_of(text) == ["config.yaml:1: routes.default: required key missing"]


def test_all_problems_are_collected_in_line_order() -> None:
    text = dedent(
        """
        voicelive:
          endpoint: ${NO_SUCH_ENDPOINT}
          api_key: plain-text-key
          connect_timeout_s: fast
        profiles:
          support:
            model: gpt-realtime
            voice: {type: azure-foo}
            temperature: 9
            turn_detection: {type: server_vad, threshold: 3}
          sales:
            agent: {name: seller}
            instructions: Sell things.
        routes:
          default: support
          numbers:
            "+15555550100": sales
            "555": support
        """
    )
    assert problems_of(text) == [
        "config.yaml:2: voicelive.endpoint: environment variable NO_SUCH_ENDPOINT is not set",
        "config.yaml:3: voicelive.api_key: secrets come from the environment only: write ${VAR_NAME}",
        "config.yaml:4: voicelive.connect_timeout_s: expected a number (got 'fast')",
        "config.yaml:8: profiles.support.voice.type: expected one of azure-standard, azure-custom, "
        "azure-personal, openai (got 'azure-foo')",
        "config.yaml:9: profiles.support.temperature: expected a number between 0.6 and 1.2 (got 9)",
        "config.yaml:10: profiles.support.turn_detection.threshold: "
        "expected a number between 0 and 1 (got 3)",
        "config.yaml:12: profiles.sales.agent.project: required key missing",
        "config.yaml:13: profiles.sales.instructions: not supported with an agent: "
        "the agent's own instructions apply",
        "config.yaml:18: routes.numbers.555: expected an E.164 number such as +14155550100 (got '555')",
    ]


def test_messages_never_show_validation_library_internals() -> None:
    text = dedent(
        """
        voicelive: [1, 2]
        profiles:
          a:
            model: [m]
            agent: 3
            voice: {type: openai, name: nova}
            turn_detection:
              {type: azure_semantic_vad, languages: en, end_of_utterance_detection: {timeout_ms: x}}
            input_transcription: {}
            barge_in: yes please
            max_output_tokens: lots
        routes: {default: a, numbers: [1]}
        """
    )
    problems = problems_of(text)
    assert len(problems) >= 8
    for line in problems:
        assert line.startswith("config.yaml:")
        for internal in ("Input should", "pydantic", "For further information", "function-", "literal["):
            assert internal not in line, line


def test_yaml_syntax_error() -> None:
    text = "profiles:\n  main:\n    model: m\n   voice: [marin\n"
    problems = problems_of(text)
    assert len(problems) == 1
    assert problems[0].startswith("config.yaml:4: YAML syntax error: ")


def test_yaml_tab_indentation_is_a_syntax_error() -> None:
    assert problems_of("profiles:\n\tmain: {model: m}\n") == [
        "config.yaml:2: YAML syntax error: found character '\\t' that cannot start any token"
    ]


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, env={})
    assert info.value.problems == [f"{missing}: file not found"]


def test_errors_name_the_file_given(tmp_path: Path) -> None:
    path = tmp_path / "ops.yaml"
    path.write_text(MINIMAL + "    temperature: 2\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.problems == [
        f"{path}:4: profiles.main.temperature: expected a number between 0.6 and 1.2 (got 2)"
    ]


def test_empty_file_and_non_mapping_root() -> None:
    assert problems_of("") == ["config.yaml: the file is empty (expected at least a profiles section)"]
    assert problems_of("- a\n- b\n") == [
        "config.yaml:1: expected a mapping of sections (profiles, routes...)"
    ]


def test_python_construction_applies_the_same_rules() -> None:
    with pytest.raises(ValidationError, match="expected either model or agent, not both"):
        Profile(model="m", agent=AgentRef(name="a", project="p"))
    with pytest.raises(ValidationError, match="not supported with an agent"):
        Profile(agent={"name": "a", "project": "p"}, instructions="x")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="expected the name of a profile"):
        GatewayConfig(profiles={"a": Profile(model="m")}, routes=Routes(default="b"))
    config = GatewayConfig(profiles={"a": Profile(model="m")}, routes=Routes(default="a"))
    assert config.route("+15555550100") == ("a", config.profiles["a"])


# ---------------------------------------------------------------------------------------------
# Interpolation


def test_interpolation_defaults_escapes_and_several_references() -> None:
    text = dedent(
        """
        voicelive:
          endpoint: ${SCHEME:-https}://${HOST}/base/
          api_version: ${API_VERSION:-2026-07-15}
          connect_timeout_s: ${TIMEOUT:-7.5}
        profiles:
          main:
            model: ${MODEL:-gpt-realtime}
            instructions: "Plans cost $$5 or $3 a month; you are ${BOT_NAME}; literal $${BOT_NAME}."
            temperature: ${TEMPERATURE:-0.9}
            max_output_tokens: ${MAX_TOKENS:-200}
            echo_cancellation: ${ECHO:-true}
        """
    )
    config = parse_config(
        text, env={"HOST": "vl.example.com", "BOT_NAME": "Ava", "SCHEME": "", "TIMEOUT": "3"}
    )
    assert config.voicelive.endpoint == "https://vl.example.com/base"
    assert config.voicelive.api_version == "2026-07-15"
    assert config.voicelive.connect_timeout_s == 3.0
    profile = config.profiles["main"]
    assert profile.model == "gpt-realtime"
    assert profile.instructions == "Plans cost $5 or $3 a month; you are Ava; literal ${BOT_NAME}."
    assert profile.temperature == 0.9
    assert profile.max_output_tokens == 200
    assert profile.echo_cancellation is True


def test_unset_and_empty_variables_are_problems_for_plain_references() -> None:
    text = "gateway:\n  public_url: ${URL}\nprofiles:\n  main:\n    model: ${MODEL}\n"
    assert problems_of(text, env={"MODEL": ""}) == [
        "config.yaml:2: gateway.public_url: environment variable URL is not set",
        "config.yaml:5: profiles.main.model: environment variable MODEL is not set (it is empty)",
    ]


def test_empty_default_means_not_set() -> None:
    text = "gateway:\n  public_url: ${URL:-}\n" + MINIMAL + "    instructions: ${PROMPT:-}\n"
    config = parse_config(text, env={})
    assert config.gateway.public_url is None
    assert config.profiles["main"].instructions is None


def test_malformed_reference() -> None:
    text = "profiles:\n  main:\n    model: ${1MODEL}\n"
    assert problems_of(text) == [
        "config.yaml:3: profiles.main.model: "
        "malformed environment reference: write ${NAME} or ${NAME:-default}"
    ]


def test_yaml_anchors_merge_keys_and_dates_as_text() -> None:
    text = dedent(
        """
        x-common: &common
          model: gpt-realtime
          voice: marin
          temperature: 0.7
        voicelive:
          api_version: 2026-07-15
        profiles:
          a:
            <<: *common
            voice: alloy
          b: *common
        routes:
          default: a
        """
    )
    config = parse_config(text, env={})
    assert config.voicelive.api_version == "2026-07-15"
    assert config.profiles["a"].voice == "alloy"
    assert config.profiles["a"].temperature == 0.7
    assert config.profiles["b"].voice == "marin"


# ---------------------------------------------------------------------------------------------
# Secrets


def test_secrets_never_appear_in_str_repr_or_describe() -> None:
    config = load_config(SHIPPED, env=FULL_ENV)
    secret_values = config.secrets()
    assert len(secret_values) == 4
    rendered = [str(config), repr(config), describe(config), config.model_dump_json()]
    for text in rendered:
        for secret in secret_values:
            assert secret not in text


def test_a_secret_misused_in_a_plain_setting_is_hidden_in_errors() -> None:
    text = (
        dedent(
            """
        voicelive:
          endpoint: ${AZURE_VOICELIVE_API_KEY}
          api_key: ${AZURE_VOICELIVE_API_KEY}
        """
        )
        + MINIMAL
    )
    problems = problems_of(text, env={"AZURE_VOICELIVE_API_KEY": "s3cr3t-value-123"})
    assert problems == [
        "config.yaml:2: voicelive.endpoint: expected a URL starting with https://, http://, wss:// or ws:// "
        "(got '***')"
    ]


def test_secret_with_empty_default_is_accepted() -> None:
    text = "twilio:\n  auth_token: ${TOKEN:-}\n" + MINIMAL
    assert parse_config(text, env={}).twilio.auth_token is None
    token = parse_config(text, env={"TOKEN": "abcdefgh"}).twilio.auth_token
    assert token is not None and token.get_secret_value() == "abcdefgh"


# ---------------------------------------------------------------------------------------------
# Routes


def test_routes_normalize_numbers() -> None:
    text = MINIMAL + dedent(
        """
          other:
            model: gpt-realtime
        routes:
          default: main
          numbers:
            "+1 (555) 555-0100": other
            "+44.20.7946.0018": other
        """
    )
    config = parse_config(text, env={})
    assert config.routes.numbers == {"+15555550100": "other", "+442079460018": "other"}
    assert config.route("+15555550100")[0] == "other"
    assert config.route("+1 555-555 0100")[0] == "other"
    assert config.route("(+44) 20 7946 0018")[0] == "other"
    assert config.route("+15555550199")[0] == "main"
    assert config.route(None)[0] == "main"
    name, profile = config.route("+15555550100")
    assert profile is config.profiles[name]


def test_single_profile_is_the_default_route() -> None:
    config = parse_config(MINIMAL, env={})
    assert config.routes.default == "main"
    assert config.route("+15555550100") == ("main", config.profiles["main"])


def test_normalize_number() -> None:
    assert normalize_number("+1 (415) 555-0100") == "+14155550100"
    assert normalize_number("+49.30.1234.5678") == "+493012345678"


# ---------------------------------------------------------------------------------------------
# describe()


def test_describe_with_the_simulator() -> None:
    config = load_config(SHIPPED, env={})
    lines = describe(config).splitlines()
    assert lines[0] == f"{SHIPPED}: OK (2 profiles, 1 number)"
    assert lines[1] == "Voice Live: built-in simulator (AZURE_VOICELIVE_ENDPOINT is not set)"
    assert any(line.startswith("Twilio auth token: not set; ACS connection string: not set") for line in lines)
    (sales_line,) = [line for line in lines if line.startswith("+15555550100 -> sales: ")]
    assert "model gpt-realtime" in sales_line
    assert "voice marin" in sales_line
    assert "turn detection: server_vad" in sales_line
    assert "greeting: yes (instructions)" in sales_line
    assert "barge-in: on (response.cancel on, output_audio_buffer.clear on)" in sales_line
    assert sales_line.endswith(", tools: none")
    (default_line,) = [line for line in lines if line.startswith("any other number -> support: ")]
    assert "voice en-US-Ava:DragonHDLatestNeural (azure-standard)" in default_line
    assert "turn detection: azure_semantic_vad" in default_line
    assert default_line.endswith(", tools: hang_up, transfer_to_operator")
    assert not any(line.startswith("unused profile") for line in lines)
    assert lines[-1].startswith("note: profile support transfers calls, but ")  # every carrier's credential named
    assert lines[-1].endswith(" is set: transfers will be refused")
    assert all(f"{m.section}.{m.credential_key}" in lines[-1] for m in carrier_settings() if m.transfers)
    with_token = describe(load_config(SHIPPED, env={"TWILIO_AUTH_TOKEN": "t" * 32}))
    assert "note:" not in with_token


def test_describe_notes_interim_responses_on_realtime_models() -> None:
    text = MINIMAL + "    interim_response: {type: static, texts: [One moment.]}\n"
    (note,) = [line for line in describe(parse_config(text, env={})).splitlines() if line.startswith("note:")]
    assert note.startswith("note: profile main sets interim_response, which Voice Live does not support")


@pytest.mark.parametrize(("section", "named"), [
    pytest.param("twilio: {auth_token: \"${T}\"}\n", "twilio", id="a carrier without keys to press"),
    pytest.param("vonage: {signature_secret: \"${T}\"}\n", "vonage", id="without the keys credentials"),
    pytest.param("acs: {connection_string: \"${ACS}\", resource_id: res-1}\n", None, id="a carrier that presses keys"),
    pytest.param("", None, id="no carrier in use"),
])
def test_describe_notes_a_key_pressing_tool_where_calls_cannot_press_keys(section: str, named: str | None) -> None:
    text = section + MINIMAL + "    tools:\n      - {name: press_keys, builtin: send_dtmf}\n"
    env = {"T": "t" * 32, "ACS": FULL_ENV["ACS_CONNECTION_STRING"]}
    notes = [line for line in describe(parse_config(text, env=env)).splitlines()
             if "send_dtmf" in line]
    if named is None:
        assert notes == []
    else:
        (note,) = notes
        assert note.startswith(f"note: profile main presses keys (send_dtmf), which {named} calls cannot do")


def test_describe_with_an_endpoint_and_entra_id() -> None:
    text = dedent(
        """
        voicelive:
          endpoint: https://contoso.services.ai.azure.com
        twilio:
          auth_token: ${TOKEN}
        profiles:
          main:
            agent: {name: concierge, project: hotel}
            turn_detection: none
            barge_in: {response_cancel: false}
          spare:
            model: gpt-realtime
            barge_in: false
        routes:
          default: main
        """
    )
    config = parse_config(text, env={"TOKEN": "twilio-secret-999"})
    out = describe(config)
    lines = out.splitlines()
    assert lines[0] == "config.yaml: OK (2 profiles, 0 numbers)"
    assert lines[1] == (
        "Voice Live: https://contoso.services.ai.azure.com (api-version 2026-07-15), "
        "auth: Microsoft Entra ID (token scope https://ai.azure.com/.default)"
    )
    assert any(line.startswith("Twilio auth token: set; ACS connection string: not set") for line in lines)
    assert (
        "any number -> main: agent concierge (project hotel), service default voice, turn detection: in the "
        "gateway (end of speech after 700 ms), caller transcription: azure-speech (default), greeting: no, "
        "barge-in: on (response.cancel off, output_audio_buffer.clear on), tools: none"
    ) in lines
    assert lines[-3] == (
        "unused profile spare: model gpt-realtime, service default voice, "
        "turn detection: service default, caller transcription: gpt-4o-mini-transcribe (default), greeting: no, "
        "barge-in: off, tools: none"
    )
    assert lines[-2] == "Outbound calls: API off (gateway.api_token not set)"
    assert lines[-1] == "Post-call records: off (no records.webhook, and no profile names a record.webhook)"
    assert "twilio-secret-999" not in out


def test_describe_says_where_post_call_records_go_without_a_webhook_s_query_string() -> None:
    text = dedent(
        """
        records:
          webhook: https://ops.example.com/calls?key=not-for-the-log
          signing_secret: ${SECRET}
          spool_directory: /var/spool/gateway
        profiles:
          main: {model: gpt-realtime}
          private: {model: gpt-realtime, record: {enabled: false}}
          sales: {model: gpt-realtime, record: {webhook: "https://crm.example.com/hook"}}
        routes:
          default: main
        """
    )
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    out = describe(parse_config(text, env={"SECRET": secret}))
    (line,) = [line for line in out.splitlines() if line.startswith("Post-call records:")]
    assert line == ("Post-call records: to https://ops.example.com/calls (profiles main); "
                    "https://crm.example.com/hook (profiles sales), signed, spooled in /var/spool/gateway, "
                    "up to 12 attempts")
    assert "not-for-the-log" not in out and secret not in out


def test_describe_with_an_api_key() -> None:
    config = load_config(SHIPPED, env=FULL_ENV)
    lines = describe(config).splitlines()
    assert (
        lines[1]
        == "Voice Live: https://contoso.services.ai.azure.com (api-version 2026-07-15), auth: api-key"
    )
    assert "Public URL: https://voice.example.com" in lines


def test_turn_detection_none_null_and_absent() -> None:
    text = dedent(
        """
        profiles:
          word: {model: m, turn_detection: none}
          null: {model: m, turn_detection: null}
          empty: {model: m, turn_detection: ""}
          absent: {model: m}
        routes: {default: word}
        """
    )
    profiles = parse_config(text, env={}).profiles
    assert isinstance(profiles["word"].turn_detection, TurnDetectionOff)
    assert isinstance(profiles["null"].turn_detection, TurnDetectionOff)
    assert profiles["empty"].turn_detection is None
    assert profiles["absent"].turn_detection is None


# ---------------------------------------------------------------------------------------------
# Call control: built-in tools, caller keys, silence, interim responses, the Twilio REST API

HANG_UP_DESCRIPTION = (
    "End the phone call. Call it when the conversation is over or the caller asks to hang up, "
    "after saying goodbye."
)
HANG_UP_PARAMETERS = {
    "type": "object",
    "properties": {"reason": {"type": "string", "description": "Why the call ends, in a few words."}},
}
SEND_DTMF_DESCRIPTION = "Press keys on the phone keypad (DTMF tones), for example to answer a phone menu."
SEND_DTMF_PARAMETERS = {
    "type": "object",
    "properties": {"digits": {"type": "string", "description": "The keys to press: 0-9, * and #."}},
    "required": ["digits"],
}


def with_profile(body: str) -> str:
    """MINIMAL with ``body`` (YAML written from column 0) added to its profile ``main``."""
    return MINIMAL + textwrap.indent(dedent(body), "    ")


def test_call_control_settings_parse_and_fill_defaults() -> None:
    text = with_profile(
        """
        tools:
          - name: bye
            builtin: hang_up
          - name: transfer
            builtin: transfer_call
            transfer:
              targets: {operator: "+1 (415) 555-0100", billing: "+44 20 7946 0018"}
              allowed_prefixes: ["+1415", "+1650"]
          - name: press
            builtin: send_dtmf
        dtmf:
          to_model: false
          respond: false
          digit_timeout_s: 3.5
          finish_on: "*"
          actions:
            0: {transfer_to: "+1 415 555 0199"}
            "9": {hang_up: true}
        silence:
          reprompt_after_s: 8
          max_reprompts: 1
          reprompt: Are you still there?
        interim_response:
          type: static
          texts: ["One moment, please."]
          triggers: [tool]
          latency_threshold_ms: 1500
        """
    )
    profile = parse_config(text, env={}).profiles["main"]
    bye, transfer, press = profile.tools

    assert (bye.name, bye.builtin, bye.http, bye.transfer) == ("bye", "hang_up", None, None)
    assert bye.description == HANG_UP_DESCRIPTION
    assert bye.parameters == HANG_UP_PARAMETERS

    assert (transfer.name, transfer.builtin, transfer.http) == ("transfer", "transfer_call", None)
    assert transfer.transfer is not None
    assert transfer.transfer.targets == {"operator": "+14155550100", "billing": "+442079460018"}
    assert transfer.transfer.allowed_prefixes == ["+1415", "+1650"]
    assert transfer.description == (
        "Transfer the caller to a person (operator, billing). "
        "Tell the caller you are transferring them, then call it."
    )
    assert transfer.parameters == {
        "type": "object",
        "properties": {
            "destination": {
                "type": "string",
                "enum": ["operator", "billing"],
                "description": "Who to transfer the caller to.",
            },
            "number": {
                "type": "string",
                "description": "A phone number in E.164 form starting with +1415 or +1650, "
                "when no named destination fits.",
            },
        },
    }

    assert (press.name, press.builtin, press.transfer) == ("press", "send_dtmf", None)
    assert press.description == SEND_DTMF_DESCRIPTION
    assert press.parameters == SEND_DTMF_PARAMETERS

    assert profile.dtmf == Dtmf(
        to_model=False,
        respond=False,
        digit_timeout_s=3.5,
        finish_on="*",
        actions={"0": DigitAction(transfer_to="+14155550199"), "9": DigitAction(hang_up=True)},
    )
    assert profile.dtmf.actions["0"].hang_up is False
    assert profile.dtmf.actions["9"].transfer_to is None

    assert profile.silence.reprompt_after_s == 8
    assert profile.silence.max_reprompts == 1
    assert profile.silence.reprompt == Greeting(text="Are you still there?")

    interim = profile.interim_response
    assert interim is not None
    assert (interim.type, interim.texts, interim.triggers) == ("static", ["One moment, please."], ["tool"])
    assert interim.latency_threshold_ms == 1500
    assert (interim.instructions, interim.model, interim.max_completion_tokens) == (None, None, None)


def test_call_control_defaults_when_not_written() -> None:
    profile = parse_config(MINIMAL, env={}).profiles["main"]
    assert profile.tools == []
    assert (profile.dtmf.to_model, profile.dtmf.respond) == (True, True)
    assert (profile.dtmf.digit_timeout_s, profile.dtmf.finish_on, profile.dtmf.actions) == (2.0, "#", {})
    assert profile.silence.reprompt_after_s is None  # no re-prompts
    assert profile.silence.max_reprompts == 2
    assert profile.silence.reprompt == Greeting(text="Are you still there?")  # spoken as written
    assert profile.interim_response is None
    llm = parse_config(with_profile("interim_response: {type: llm}\n"), env={}).profiles["main"]
    assert llm.interim_response is not None
    assert (llm.interim_response.texts, llm.interim_response.triggers) == ([], ["tool", "latency"])
    assert llm.interim_response.latency_threshold_ms is None


def test_transfer_parameters_follow_targets_and_prefixes() -> None:
    text = with_profile(
        """
        tools:
          - name: to_desk
            builtin: transfer_call
            transfer: {targets: {front_desk: "+1-415-555-0100"}}
          - name: to_number
            builtin: transfer_call
            transfer: {allowed_prefixes: ["+1 (415)"]}
        """
    )
    to_desk, to_number = parse_config(text, env={}).profiles["main"].tools
    assert to_desk.transfer is not None and to_desk.transfer.targets == {"front_desk": "+14155550100"}
    assert to_desk.transfer.allowed_prefixes == []
    assert to_desk.parameters == {
        "type": "object",
        "properties": {
            "destination": {"type": "string", "enum": ["front_desk"], "description": "Who to transfer the caller to."}
        },
    }
    assert to_number.transfer is not None and to_number.transfer.targets == {}
    assert to_number.transfer.allowed_prefixes == ["+1415"]
    assert list(to_number.parameters["properties"]) == ["number"]
    assert to_number.description == (
        "Transfer the caller to a person. Tell the caller you are transferring them, then call it."
    )


def test_a_builtin_tool_keeps_its_own_description_and_parameters() -> None:
    parameters = {"type": "object", "properties": {"why": {"type": "string"}}, "required": ["why"]}
    text = with_profile(
        """
        tools:
          - name: end_call
            builtin: hang_up
            description: Hang up once the caller has said goodbye.
            parameters: {type: object, properties: {why: {type: string}}, required: [why]}
        """
    )
    (tool,) = parse_config(text, env={}).profiles["main"].tools
    assert tool.description == "Hang up once the caller has said goodbye."
    assert tool.parameters == parameters


def test_python_construction_fills_the_same_defaults() -> None:
    tool = Tool(name="bye", builtin="hang_up")
    assert (tool.description, tool.parameters) == (HANG_UP_DESCRIPTION, HANG_UP_PARAMETERS)
    assert Dtmf(actions={0: {"hang_up": True}}).actions == {"0": DigitAction(hang_up=True)}  # type: ignore[dict-item]
    with pytest.raises(ValidationError):
        Tool(name="bye", builtin="hang_up", transfer={"targets": {"op": "+14155550100"}})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("body", "needle", "expected"),
    [
        pytest.param(
            "tools:\n  - name: bye\n    builtin: hang_up\n    http: {url: 'https://hooks.example.com/bye'}\n",
            "builtin:",
            "profiles.main.tools[0].builtin: expected either http or builtin, not both",
            id="http-and-builtin",
        ),
        pytest.param(
            "tools:\n  - name: lookup\n    description: Find an order.\n",
            "- name: lookup",
            "profiles.main.tools[0].http: required key missing "
            "(write http: {url: ...}, or builtin: hang_up | transfer_call | send_dtmf)",
            id="neither-http-nor-builtin",
        ),
        pytest.param(
            "tools:\n  - name: bye\n    builtin: hang\n",
            "builtin:",
            "profiles.main.tools[0].builtin: expected one of hang_up, transfer_call, send_dtmf (got 'hang')",
            id="unknown-builtin",
        ),
        pytest.param(
            "tools:\n  - name: xfer\n    builtin: transfer_call\n",
            "- name: xfer",
            "profiles.main.tools[0].transfer: required key missing for transfer_call "
            '(write transfer: {targets: {operator: "+14155550100"}})',
            id="transfer-call-without-transfer",
        ),
        pytest.param(
            "tools:\n  - name: bye\n    builtin: hang_up\n    transfer: {targets: {op: '+14155550100'}}\n",
            "transfer:",
            "profiles.main.tools[0].transfer: only a transfer_call tool takes transfer",
            id="transfer-on-hang-up",
        ),
        pytest.param(
            "tools:\n  - name: t\n    description: d\n    http: {url: 'https://x.example.com'}\n"
            "    transfer: {targets: {op: '+14155550100'}}\n",
            "transfer:",
            "profiles.main.tools[0].transfer: only a transfer_call tool takes transfer",
            id="transfer-on-http-tool",
        ),
        pytest.param(
            "tools:\n  - name: xfer\n    builtin: transfer_call\n    transfer:\n      targets:\n"
            "        operator: '555-0100'\n",
            "operator:",
            "profiles.main.tools[0].transfer.targets.operator: expected an E.164 number such as "
            "+14155550100 (got '555-0100')",
            id="bad-target-number",
        ),
        pytest.param(
            "tools:\n  - name: xfer\n    builtin: transfer_call\n    transfer:\n      allowed_prefixes:\n"
            "        - '1415'\n",
            "'1415'",
            "profiles.main.tools[0].transfer.allowed_prefixes[0]: expected the start of an E.164 number, "
            "such as +1415 (got '1415')",
            id="bad-prefix",
        ),
        pytest.param(
            "tools:\n  - name: xfer\n    builtin: transfer_call\n    transfer: {}\n",
            "transfer:",
            "profiles.main.tools[0].transfer.targets: expected at least one destination "
            "(targets: {name: +number})",
            id="transfer-without-destinations",
        ),
        pytest.param(
            "tools:\n  - name: end call\n    builtin: hang_up\n",
            "end call",
            "profiles.main.tools[0].name: expected a tool name of 1 to 64 letters, digits, - and _ "
            "(got 'end call')",
            id="tool-name",
        ),
        pytest.param(
            "tools:\n  - name: t\n    description: d\n    parameters: {type: array}\n"
            "    http: {url: 'https://x.example.com'}\n",
            "parameters:",
            "profiles.main.tools[0].parameters.type: expected object (the parameters are a JSON object) "
            "(got 'array')",
            id="parameters-not-an-object",
        ),
        pytest.param(
            "dtmf:\n  actions:\n    '0': {transfer_to: '+14155550100', hang_up: true}\n",
            "'0':",
            "profiles.main.dtmf.actions.0: expected one action: transfer_to: +number, or hang_up: true",
            id="dtmf-action-both",
        ),
        pytest.param(
            "dtmf:\n  actions:\n    '0': {hang_up: false}\n",
            "'0':",
            "profiles.main.dtmf.actions.0: expected one action: transfer_to: +number, or hang_up: true",
            id="dtmf-action-neither",
        ),
        pytest.param(
            "dtmf:\n  actions:\n    '5': {transfer_to: '415-555-0100'}\n",
            "'5':",
            "profiles.main.dtmf.actions.5.transfer_to: expected an E.164 number such as +14155550100 "
            "(got '415-555-0100')",
            id="dtmf-action-bad-number",
        ),
        pytest.param(
            "dtmf:\n  actions:\n    '12': {hang_up: true}\n",
            "'12':",
            "profiles.main.dtmf.actions.12: expected a single keypad key (0-9, *, #, A-D)",
            id="dtmf-action-key-too-long",
        ),
        pytest.param(
            "dtmf:\n  actions:\n    x: {hang_up: true}\n",
            "x:",
            "profiles.main.dtmf.actions.x: expected a single keypad key (0-9, *, #, A-D)",
            id="dtmf-action-key-not-a-key",
        ),
        pytest.param(
            "dtmf:\n  actions:\n    '1': {transfer_to: +14155550100}\n",
            "'1':",
            'profiles.main.dtmf.actions.1.transfer_to: expected an E.164 number in quotes, such as "+14155550100" '
            "(got 14155550100)",
            id="dtmf-action-unquoted-number",
        ),
        pytest.param(
            "interim_response: {type: static, texts: [One moment.], model: gpt-4.1-mini}\n",
            "interim_response:",
            "profiles.main.interim_response.model: only an llm interim response takes this",
            id="static-interim-with-llm-field",
        ),
        pytest.param(
            "tools:\n  - name: keys\n    builtin: send_dtmf\n"
            "    parameters: {type: object, properties: {tones: {type: string}}}\n",
            "properties: {tones",
            "profiles.main.tools[0].parameters.properties: a send_dtmf tool needs a 'digits' parameter",
            id="send-dtmf-own-schema-without-digits",
        ),
        pytest.param(
            "dtmf:\n  finish_on: x\n",
            "finish_on",
            "profiles.main.dtmf.finish_on: expected keypad keys (0-9, *, #, A-D) (got 'x')",
            id="finish-on-not-a-key",
        ),
        pytest.param(
            "dtmf:\n  digit_timeout_s: 0\n",
            "digit_timeout_s",
            "profiles.main.dtmf.digit_timeout_s: expected a number greater than 0 (got 0)",
            id="digit-timeout",
        ),
        pytest.param(
            "silence:\n  reprompt_after_s: -5\n",
            "reprompt_after_s",
            "profiles.main.silence.reprompt_after_s: expected a number greater than 0 (got -5)",
            id="silence-negative",
        ),
        pytest.param(
            "silence:\n  reprompt_after_s: 0\n",
            "reprompt_after_s",
            "profiles.main.silence.reprompt_after_s: expected a number greater than 0 (got 0)",
            id="silence-zero",
        ),
        pytest.param(
            "silence:\n  max_reprompts: -1\n",
            "max_reprompts",
            "profiles.main.silence.max_reprompts: expected a whole number, 0 or more (got -1)",
            id="max-reprompts",
        ),
        pytest.param(
            "silence:\n  reprompt: {text: Hello there, instructions: Ask if they are there.}\n",
            "reprompt:",
            "profiles.main.silence.reprompt: expected either text or instructions, not both",
            id="reprompt-both",
        ),
        pytest.param(
            "interim_response:\n  type: static\n",
            "interim_response:",
            "profiles.main.interim_response.texts: required for a static interim response (the phrases to say)",
            id="static-without-texts",
        ),
        pytest.param(
            "interim_response:\n  type: llm\n  texts: [One moment.]\n",
            "texts:",
            "profiles.main.interim_response.texts: only a static interim response takes texts",
            id="llm-with-texts",
        ),
        pytest.param(
            "interim_response:\n  texts: [One moment.]\n",
            "interim_response:",
            "profiles.main.interim_response.type: required key missing",
            id="interim-without-type",
        ),
        pytest.param(
            "interim_response:\n  type: llm\n  triggers: [speech]\n",
            "triggers:",
            "profiles.main.interim_response.triggers[0]: expected one of tool, latency (got 'speech')",
            id="interim-trigger",
        ),
    ],
)
def test_call_control_problems(body: str, needle: str, expected: str) -> None:
    text = MINIMAL + textwrap.indent(body, "    ")
    assert problems_of(text) == [f"config.yaml:{line_of(text, needle)}: {expected}"]


def test_a_dtmf_action_key_that_is_not_a_keypad_key_is_refused() -> None:
    text = with_profile("dtmf:\n  actions:\n    x: {hang_up: true}\n")
    problems = problems_of(text)
    assert problems
    prefix = f"config.yaml:{line_of(text, 'x:')}: profiles.main.dtmf.actions.x"
    assert all(line.startswith(prefix) and "(0-9, *, #, A-D)" in line for line in problems), problems


def test_a_non_keypad_action_key_is_reported_once_at_the_key_itself() -> None:
    for key in ("x", "xy"):
        text = with_profile(f"dtmf:\n  actions:\n    {key}: {{hang_up: true}}\n")
        (problem,) = problems_of(text)
        assert problem.startswith(f"config.yaml:{line_of(text, key + ':')}: profiles.main.dtmf.actions.{key}: ")
        assert "[key]" not in problem and "(0-9, *, #, A-D)" in problem


def test_http_tool_headers_read_the_environment() -> None:
    text = with_profile(
        """
        tools:
          - name: lookup_order
            description: Find an order by its number.
            http:
              url: https://orders.example.com/lookup
              headers: {Authorization: "Bearer ${ORDERS_TOKEN}"}
        """
    )
    line = line_of(text, "Authorization")
    path = "profiles.main.tools[0].http.headers.Authorization"
    assert problems_of(text) == [f"config.yaml:{line}: {path}: environment variable ORDERS_TOKEN is not set"]
    assert problems_of(text, env={"ORDERS_TOKEN": ""}) == [
        f"config.yaml:{line}: {path}: environment variable ORDERS_TOKEN is not set (it is empty)"
    ]
    config = parse_config(text, env={"ORDERS_TOKEN": "orders-secret-123"})
    (tool,) = config.profiles["main"].tools
    assert tool.http is not None and tool.builtin is None
    assert tool.http.headers == {"Authorization": "Bearer orders-secret-123"}
    assert tool.http.timeout_s == 10.0
    assert config.secrets() == ["Bearer orders-secret-123", "orders-secret-123"]


def test_secrets_with_builtin_tools() -> None:
    text = with_profile(
        """
        tools:
          - name: bye
            builtin: hang_up
          - name: lookup_order
            description: Find an order by its number.
            http: {url: "https://orders.example.com/lookup", headers: {Authorization: "Bearer ${ORDERS_TOKEN}"}}
        """
    )
    config = parse_config(text, env={"ORDERS_TOKEN": "orders-secret-123"})
    assert config.secrets() == ["Bearer orders-secret-123", "orders-secret-123"]


def test_twilio_api_base_url() -> None:
    assert parse_config(MINIMAL, env={}).twilio.api_base_url == "https://api.twilio.com"
    local = parse_config("twilio:\n  api_base_url: http://127.0.0.1:8099\n" + MINIMAL, env={})
    assert local.twilio.api_base_url == "http://127.0.0.1:8099"
    for url in ("api.twilio.com", "wss://api.twilio.com"):
        assert problems_of(f"twilio:\n  api_base_url: {url}\n" + MINIMAL) == [
            f"config.yaml:2: twilio.api_base_url: expected a URL starting with https:// or http:// (got '{url}')"
        ]


def test_shipped_config_call_control() -> None:
    config = load_config(SHIPPED, env={})
    assert config.twilio.api_base_url == "https://api.twilio.com"
    support = config.profiles["support"]
    assert [(tool.name, tool.builtin) for tool in support.tools] == [
        ("hang_up", "hang_up"),
        ("transfer_to_operator", "transfer_call"),
    ]
    transfer = support.tools[1].transfer
    assert transfer is not None
    assert (transfer.targets, transfer.allowed_prefixes) == ({"operator": "+15555550199"}, [])
    assert support.dtmf.actions == {"0": DigitAction(transfer_to="+15555550199")}
    assert (support.dtmf.finish_on, support.dtmf.digit_timeout_s) == ("#", 2.0)
    assert (support.silence.reprompt_after_s, support.silence.max_reprompts) == (8, 2)
    assert support.silence.reprompt == Greeting(text="Are you still there?")
    assert support.interim_response is None  # realtime audio models have no interim responses
    sales = config.profiles["sales"]
    assert sales.tools == [] and sales.silence.reprompt_after_s is None and sales.dtmf.actions == {}

    moved = load_config(SHIPPED, env={"OPERATOR_NUMBER": "+1 (415) 555-0100"}).profiles["support"]
    assert moved.tools[1].transfer is not None
    assert moved.tools[1].transfer.targets == {"operator": "+14155550100"}
    assert moved.dtmf.actions["0"].transfer_to == "+14155550100"


def test_call_control_on_the_wire() -> None:
    text = dedent(
        """
        profiles:
          static:
            model: m
            tools:
              - {name: bye, builtin: hang_up}
              - {name: xfer, builtin: transfer_call, transfer: {targets: {operator: "+14155550100"}}}
            interim_response:
              type: static
              texts: ["One moment, please.", "Let me check."]
              triggers: [tool]
              latency_threshold_ms: 1500
          llm:
            model: m
            interim_response:
              type: llm
              instructions: Say briefly that you are checking.
              model: gpt-4.1-mini
              max_completion_tokens: 40
          plain:
            model: m
        routes:
          default: plain
        """
    )
    profiles = parse_config(text, env={}).profiles
    static = build_session(profiles["static"])
    assert static["interim_response"] == {
        "type": "static_interim_response",
        "texts": ["One moment, please.", "Let me check."],
        "triggers": ["tool"],
        "latency_threshold_ms": 1500,
    }
    assert static["tools"] == [
        {"type": "function", "name": "bye", "description": HANG_UP_DESCRIPTION, "parameters": HANG_UP_PARAMETERS},
        {
            "type": "function",
            "name": "xfer",
            "description": profiles["static"].tools[1].description,
            "parameters": {
                "type": "object",
                "properties": {
                    "destination": {
                        "type": "string",
                        "enum": ["operator"],
                        "description": "Who to transfer the caller to.",
                    }
                },
            },
        },
    ]
    assert static["tool_choice"] == "auto"
    llm = build_session(profiles["llm"])
    assert llm["interim_response"] == {
        "type": "llm_interim_response",
        "instructions": "Say briefly that you are checking.",
        "model": "gpt-4.1-mini",
        "max_completion_tokens": 40,
        "triggers": ["tool", "latency"],
    }
    assert "texts" not in llm["interim_response"]
    plain = build_session(profiles["plain"])
    assert "interim_response" not in plain and "tools" not in plain


def test_hang_up_actions_read_yes_words_like_other_switches() -> None:
    for word in ("on", "True", "yes"):
        config = parse_config(MINIMAL + textwrap.indent(f"dtmf:\n  actions:\n    '9': {{hang_up: '{word}'}}\n", "    "),
                              env={})
        assert config.profiles["main"].dtmf.actions["9"].hang_up is True


def test_transfer_description_names_the_prefixes_as_they_are_matched() -> None:
    config = parse_config(MINIMAL + textwrap.indent(
        "tools:\n  - name: transfer\n    builtin: transfer_call\n    transfer: {allowed_prefixes: ['+1 415']}\n",
        "    "), env={})
    (tool,) = config.profiles["main"].tools
    assert tool.transfer.allowed_prefixes == ["+1415"]
    assert "starting with +1415" in tool.parameters["properties"]["number"]["description"]


# ---------------------------------------------------------------------------------------------
# What Voice Live's 2026-07-15 API documents: every setting check-config accepts gives a working call


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param("turn_detection: {type: server_vad, end_of_utterance_detection: {threshold_level: low}}",
                     "profiles.main.turn_detection.end_of_utterance_detection.model: required key missing",
                     id="eou-without-model"),
        pytest.param("turn_detection: {type: server_vad, speech_duration_ms: 200}",
                     "profiles.main.turn_detection.speech_duration_ms: not a server_vad setting (Voice Live's "
                     "server_vad has no minimum speech duration; the azure_semantic_vad types take it)",
                     id="speech-duration-on-server-vad"),
        pytest.param("input_transcription: {model: whisper-1, phrase_list: [Contoso]}",
                     "profiles.main.input_transcription.phrase_list: only azure-speech, mai-transcribe, "
                     "mai-transcribe-2 transcription takes a phrase list (the model is whisper-1)",
                     id="phrase-list-needs-azure-speech"),
        pytest.param("metadata: {call_id: mine}",
                     "profiles.main.metadata.call_id: reserved: the gateway puts the carrier's call id there",
                     id="metadata-call-id-reserved"),
        pytest.param("metadata: {note: " + "x" * 513 + "}",
                     "profiles.main.metadata.note: expected text of at most 512 characters (got 513)",
                     id="metadata-value-too-long"),
        pytest.param("metadata: {" + ", ".join(f"k{i}: v" for i in range(16)) + "}",
                     "profiles.main.metadata: expected at most 15 pairs (Voice Live takes 16, and the gateway "
                     "adds call_id; got 16)",
                     id="metadata-too-many"),
        pytest.param("turn_detection: {type: none, threshold_dbfs: 3}",
                     "profiles.main.turn_detection.threshold_dbfs: expected a number between -90 and 0 (got 3)",
                     id="gateway-turn-detection-threshold"),
    ],
)
def test_voice_live_settings_are_checked_as_the_api_documents(body: str, expected: str) -> None:
    text = with_profile(body + "\n")
    assert problems_of(text) == [f"config.yaml:4: {expected}"]


def test_documented_settings_the_gateway_used_to_refuse_are_accepted() -> None:
    text = with_profile(
        """
        turn_detection:
          type: server_vad
          end_of_utterance_detection: {model: semantic_detection_v1, threshold_level: high, timeout_ms: 800}
        input_transcription: {model: mai-transcribe-1, language: en-US}
        metadata: {tenant: contoso, tier: 2}
        """
    )
    profile = parse_config(text, env={}).profiles["main"]
    session = build_session(profile)
    assert session["turn_detection"]["end_of_utterance_detection"] == {
        "model": "semantic_detection_v1", "threshold_level": "high", "timeout_ms": 800}
    assert session["input_audio_transcription"] == {"model": "mai-transcribe-1", "language": "en-US"}
    assert session["metadata"] == {"tenant": "contoso", "tier": "2"}
    phrase_list = "input_transcription: {model: azure-speech, phrase_list: [Contoso, Fabrikam]}\n"
    phrases = parse_config(with_profile(phrase_list), env={}).profiles["main"]
    assert build_session(phrases)["input_audio_transcription"]["phrase_list"] == ["Contoso", "Fabrikam"]


@pytest.mark.parametrize("version", ["v1", "2025-10-01", "latest"])
def test_only_api_versions_whose_wire_shape_the_gateway_speaks_are_accepted(version: str) -> None:
    text = f"voicelive:\n  api_version: {version}\n" + MINIMAL
    (problem,) = problems_of(text)
    assert problem.startswith("config.yaml:2: voicelive.api_version: expected an api-version the gateway speaks: "
                              "one of 2026-07-15, 2026-06-01-preview, 2026-04-10, 2026-01-01-preview")
    assert ("OpenAI GA wire shape" in problem) is (version == "v1")


def test_an_agent_takes_fixed_words_only() -> None:
    text = dedent(
        """
        profiles:
          main:
            agent: {name: concierge, project: hotel}
            greeting: {instructions: Greet the caller.}
            silence: {reprompt_after_s: 5, reprompt: {instructions: Ask again.}}
        """
    )
    assert problems_of(text) == [
        f"config.yaml:{line_of(text, 'greeting')}: profiles.main.greeting.instructions: not supported with an agent "
        "(it takes no per-response instructions): write the greeting as text",
        f"config.yaml:{line_of(text, 'silence')}: profiles.main.silence.reprompt.instructions: not supported with "
        "an agent (it takes no per-response instructions): write the re-prompt as text",
    ]


def test_check_config_says_what_a_setting_needs_or_costs() -> None:
    text = dedent(
        """
        profiles:
          cascaded:
            model: gpt-4.1
            turn_detection: {type: semantic_vad}
            noise_suppression: far_field
          agent:
            agent: {name: concierge, project: hotel}
            noise_suppression: near_field
          private:
            model: gpt-realtime
            input_transcription: off
          realtime:
            model: gpt-realtime
            turn_detection: {type: semantic_vad}
            noise_suppression: near_field
        routes: {default: cascaded}
        """
    )
    notes = [line for line in describe(parse_config(text, env={})).splitlines() if line.startswith("note:")]
    assert notes == [
        "note: profile cascaded uses turn_detection semantic_vad, which Voice Live offers only with gpt-realtime "
        "or gpt-realtime-mini; this profile uses model gpt-4.1 (azure_semantic_vad works with every model)",
        "note: profile cascaded uses far_field noise suppression, which Voice Live offers only with gpt-realtime "
        "or gpt-realtime-mini; this profile uses model gpt-4.1 (azure_deep_noise_suppression works with every "
        "model)",
        "note: profile agent uses near_field noise suppression, which Voice Live offers only with gpt-realtime or "
        "gpt-realtime-mini; this profile uses agent concierge (azure_deep_noise_suppression works with every "
        "model)",
        "note: profile private turns caller transcription off: if its Voice Live session is reconnected or "
        "renewed, the new session hears none of what the caller said before (the conversation is restored from "
        "transcripts), and logs and records carry no caller words",
    ]


def test_acs_sample_rate() -> None:
    assert parse_config("acs: {sample_rate: 16000}\n" + MINIMAL, env={}).acs.sample_rate == 16000
    assert parse_config(MINIMAL, env={}).acs.sample_rate == 24000
    assert problems_of("acs:\n  sample_rate: 8000\n" + MINIMAL) == [
        "config.yaml:2: acs.sample_rate: expected 16000 or 24000 (the PCM16 rates ACS media streaming offers) "
        "(got 8000)"]


@pytest.mark.parametrize(("gateway", "env", "expected"), [
    ("{}", {}, "Console: off (gateway.console_token not set)"),
    ('{console_token: "${GATEWAY_CONSOLE_TOKEN:-}"}', {}, "Console: off (GATEWAY_CONSOLE_TOKEN not set)"),
    ('{console_token: "${GATEWAY_CONSOLE_TOKEN:-}"}', {"GATEWAY_CONSOLE_TOKEN": "s3cret-console"},
     "Console: on at /console (operators log in with gateway.console_token)"),
    ("{insecure_dev_mode: true}", {},
     "Console: OPEN at /console to anyone who reaches the gateway (insecure_dev_mode, no console token)"),
])
def test_describe_says_whether_the_console_is_on(gateway: str, env: dict[str, str], expected: str) -> None:
    text = f"voicelive: {{endpoint: simulator}}\ngateway: {gateway}\nprofiles: {{main: {{model: gpt-realtime}}}}\n" \
           "routes: {default: main}\n"
    out = describe(parse_config(text, env=env))
    assert expected in out.splitlines()
    assert "s3cret-console" not in out

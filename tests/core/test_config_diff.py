"""What ``gateway check-config --diff OLD NEW`` says a change of config.yaml does: every kind of
change, field by field, secrets never shown, defaults not reported, restart-only settings marked."""

from __future__ import annotations

import textwrap

import pytest

from gateway.carriers.twilio.settings import TwilioSettings
from gateway.config import GatewayConfig, parse_config
from gateway.config.diff import RESTART_ONLY, Change, config_diff, format_diff, needs_restart, restart_paths

ENV = {
    "SIGNING_KEY": "signing-key-0123456789abcdef",
    "TWILIO_TOKEN": "twilio-token-abcdef-42",
    "ORDERS_TOKEN": "orders-bearer-secret-77",
    "ORDERS_CODE": "orders-url-code-31337",
}

INSTRUCTIONS = ("You are the assistant of Contoso. You answer questions about orders, opening hours and returns. "
                "Keep it short.")

BASE = """
voicelive: {endpoint: simulator}
gateway:
  signing_key: ${SIGNING_KEY}
twilio:
  auth_token: ${TWILIO_TOKEN}
profiles:
  main:
    model: gpt-realtime
    instructions: INSTRUCTIONS
    voice: {type: azure-standard, name: "en-US-Ava:DragonHDLatestNeural"}
    tools:
      - name: hours
        description: Opening hours
        http: {url: "https://tools.example.com/hours"}
      - name: orders
        description: Look up an order
        http:
          url: "https://tools.example.com/orders?code=${ORDERS_CODE}"
          headers: {Authorization: "Bearer ${ORDERS_TOKEN}", X-Team: support}
  legacy:
    model: gpt-realtime
routes:
  default: main
  numbers:
    "+15559870000": main
    "+15550001111": main
""".replace("INSTRUCTIONS", INSTRUCTIONS)


def load(text: str, **env: str) -> GatewayConfig:
    return parse_config(textwrap.dedent(text), env={**ENV, **env})


def diff(old: str, new: str, old_env: dict[str, str] | None = None, new_env: dict[str, str] | None = None) -> str:
    return format_diff(config_diff(load(old, **(old_env or {})), load(new, **(new_env or {}))))


def lines(old: str, new: str, **kwargs: dict[str, str]) -> list[str]:
    return diff(old, new, **kwargs).splitlines()


# ---------------------------------------------------------------------------------------------
# No change


def test_the_same_file_is_no_change() -> None:
    assert config_diff(load(BASE), load(BASE)) == []
    assert format_diff([]) == "no change"


def test_a_default_written_out_is_no_change() -> None:
    explicit = BASE.replace("gateway:\n", "gateway:\n  max_calls: 200\n  drain_timeout_s: 600\n").replace(
        "    model: gpt-realtime\n    instructions", "    model: gpt-realtime\n    barge_in: true\n"
        "    limits: {max_duration_s: 3600}\n    dtmf: {finish_on: '#'}\n    instructions").replace(
        "voicelive: {endpoint: simulator}", "voicelive: {endpoint: simulator, connect_timeout_s: 10.0, "
        "api_version: '2026-07-15'}")
    assert explicit != BASE
    assert diff(BASE, explicit) == "no change"


def test_other_spellings_of_the_same_settings_are_no_change() -> None:
    spelled = BASE.replace('"+15559870000"', '"+1 (555) 987-0000"').replace(
        "url: \"https://tools.example.com/hours\"", "url: \"${HOURS_URL}\"")
    assert diff(BASE, spelled, new_env={"HOURS_URL": "https://tools.example.com/hours"}) == "no change"
    openai = "profiles:\n  main: {model: gpt-realtime, voice: marin}\n"
    assert diff(openai, openai.replace("voice: marin", "voice: {type: openai, name: marin}")) == "no change"


# ---------------------------------------------------------------------------------------------
# Each kind of change


def test_profiles_added_and_removed_and_a_nested_field_changed() -> None:
    new = BASE.replace("  legacy:\n    model: gpt-realtime\n", "  sales:\n    model: gpt-realtime-mini\n").replace(
        "en-US-Ava:DragonHDLatestNeural", "en-US-Andrew:DragonHDLatestNeural")
    assert lines(BASE, new) == [
        "profiles: added sales; removed legacy",
        'profiles.main.voice.name: "en-US-Ava:DragonHDLatestNeural" -> "en-US-Andrew:DragonHDLatestNeural"',
    ]


def test_a_setting_added_removed_and_changed() -> None:
    old = "profiles:\n  main: {model: gpt-realtime, temperature: 0.8, greeting: Hello}\n"
    new = ("gateway: {max_calls: 300}\nprofiles:\n"
           "  main: {model: gpt-realtime, echo_cancellation: true, metadata: {team: billing}}\n")
    assert lines(old, new) == [
        "profiles.main.echo_cancellation: false -> true",
        'profiles.main.metadata: added team -> "billing"',
        "profiles.main.temperature: 0.8 -> not set",
        'profiles.main.greeting: {text: "Hello"} -> not set',
        "gateway.max_calls: 200 -> 300",
    ]
    changes = config_diff(load(old), load(new))
    assert [(c.path, c.kind) for c in changes] == [
        ("profiles.main.echo_cancellation", "changed"), ("profiles.main.metadata", "added"),
        ("profiles.main.temperature", "removed"), ("profiles.main.greeting", "removed"),
        ("gateway.max_calls", "changed")]
    assert changes[1] == Change("profiles.main.metadata", "added", None, '"billing"', False, "team")


def test_a_voice_of_another_type_and_turn_detection_of_another_type() -> None:
    old = "profiles:\n  main: {model: gpt-realtime, voice: marin, turn_detection: {type: server_vad, threshold: 0.5}}\n"
    new = ("profiles:\n  main:\n    model: gpt-realtime\n    voice: {type: azure-standard, name: en-US-AvaNeural}\n"
           "    turn_detection: {type: azure_semantic_vad, threshold: 0.5, languages: [en, fr]}\n")
    assert lines(old, new) == [
        'profiles.main.voice: "marin" -> {type: "azure-standard", name: "en-US-AvaNeural"}',
        'profiles.main.turn_detection.type: "server_vad" -> "azure_semantic_vad"',
        'profiles.main.turn_detection.languages: not set -> ["en", "fr"]',
    ]


def test_tools_added_removed_reordered_and_changed_by_name() -> None:
    new = BASE.replace(
        "      - name: hours\n        description: Opening hours\n        http: {url: \"https://tools.example.com/hours\"}\n",
        "").replace("description: Look up an order", "description: Look up an order by its number").replace(
        "    tools:\n", "    tools:\n      - {name: hang_up, builtin: hang_up}\n")
    assert lines(BASE, new) == [
        "profiles.main.tools: added hang_up; removed hours",
        'profiles.main.tools[orders].description: "Look up an order" -> "Look up an order by its number"',
    ]
    swapped = BASE.replace("- name: hours", "- name: first").replace("- name: orders", "- name: hours").replace(
        "- name: first", "- name: orders")
    changed = lines(BASE, swapped)
    assert changed[0] == "profiles.main.tools: order hours, orders -> orders, hours"


def test_routes_numbers_added_removed_and_changed_on_one_line() -> None:
    new = BASE.replace('"+15559870000": main', '"+15551230000": legacy').replace(
        '"+15550001111": main', '"+15550001111": legacy').replace("default: main", "default: legacy")
    assert lines(BASE, new) == [
        'routes.default: "main" -> "legacy"',
        'routes.numbers: added +15551230000 -> "legacy"; removed +15559870000 (was "main"); '
        '+15550001111: "main" -> "legacy"',
    ]


def test_lists_of_words_say_what_was_added_and_removed() -> None:
    old = ("profiles:\n  main:\n    model: gpt-realtime\n"
           "    input_transcription: {model: azure-speech, phrase_list: [Contoso, Fabrikam]}\n")
    new = old.replace("[Contoso, Fabrikam]", "[Contoso, Northwind, Tailspin]")
    assert lines(old, new) == [
        'profiles.main.input_transcription.phrase_list: added "Northwind"; added "Tailspin"; removed "Fabrikam"']


def test_a_long_text_is_shown_by_its_lengths_and_the_part_that_changed() -> None:
    new = BASE.replace("orders, opening hours and returns", "orders and returns")
    (line,) = lines(BASE, new)
    assert line.startswith("profiles.main.instructions: changed (110 -> 95 characters): ")
    assert '"...ns about orders, opening hours..." -> "...ns about orders..."' in line
    assert "You are the assistant of Contoso" not in line  # not printed whole
    multi = "profiles:\n  main:\n    model: gpt-realtime\n    instructions: |\n      Line one.\n      Line two.\n"
    (line,) = lines(multi, multi.replace("Line two.", "Line 2."))
    assert line == 'profiles.main.instructions: changed (20 -> 18 characters): "Line one.\\nLine two..." -> ' \
                   '"Line one.\\nLine 2..."'


def test_a_long_text_added_is_cut_with_its_length() -> None:
    old = "profiles:\n  main: {model: gpt-realtime}\n"
    new = "profiles:\n  main: {model: gpt-realtime, instructions: " + "Say hello. " * 10 + "}\n"
    assert lines(old, new) == [
        'profiles.main.instructions: not set -> "Say hello. Say hello. Say hello. Say hel..." (109 characters)']


def test_environment_references_are_compared_by_the_values_they_read() -> None:
    text = "voicelive: {endpoint: \"${ENDPOINT}\"}\nprofiles: {main: {model: gpt-realtime}}\n"
    assert diff(text, text, {"ENDPOINT": "https://a.example.com"}, {"ENDPOINT": "https://a.example.com"}) == "no change"
    assert diff(text, text, {"ENDPOINT": "https://a.example.com"}, {"ENDPOINT": "https://b.example.com"}) == (
        'voicelive.endpoint: "https://a.example.com" -> "https://b.example.com" (needs a restart)')


# ---------------------------------------------------------------------------------------------
# Secrets


def test_secrets_are_set_unset_or_changed_never_their_values() -> None:
    rotated = {"SIGNING_KEY": "signing-key-NEW-0123456789", "TWILIO_TOKEN": "twilio-token-NEW-99",
               "ORDERS_TOKEN": "orders-bearer-NEW-88", "ORDERS_CODE": "orders-url-code-NEW-1"}
    out = diff(BASE, BASE, new_env=rotated)
    assert out.splitlines() == [
        "profiles.main.tools[orders].http.url: changed",
        "profiles.main.tools[orders].http.headers: Authorization: changed",
        "gateway.signing_key: changed (needs a restart)",
        "twilio.auth_token: changed",
    ]
    unset = BASE.replace("twilio:\n  auth_token: ${TWILIO_TOKEN}\n", "").replace(
        "  signing_key: ${SIGNING_KEY}\n", "  api_token: ${API_TOKEN}\n  signing_key:\n")
    out = diff(BASE, unset, new_env={"API_TOKEN": "api-token-secret-5"})
    assert out.splitlines() == ["gateway.signing_key: unset (needs a restart)", "gateway.api_token: set",
                                "twilio.auth_token: unset"]
    for env in (ENV, rotated, {"API_TOKEN": "api-token-secret-5"}):
        for value in env.values():
            assert value not in out and value not in diff(BASE, BASE, new_env=rotated)


def test_headers_and_urls_that_hold_secrets_are_never_shown() -> None:
    added = BASE.replace("X-Team: support", "X-Team: support, X-Key: \"${EXTRA}\"").replace(
        "url: \"https://tools.example.com/hours\"", "url: \"https://tools.example.com/hours?site=${EXTRA}\"")
    out = diff(BASE, added, new_env={"EXTRA": "extra-secret-value-1"})
    assert out.splitlines() == [
        "profiles.main.tools[hours].http.url: changed",
        "profiles.main.tools[orders].http.headers: added X-Key",
    ]
    literal = BASE.replace("X-Team: support", "X-Team: sales")  # written in the file: not a secret
    assert diff(BASE, literal) == 'profiles.main.tools[orders].http.headers: X-Team: "support" -> "sales"'


def test_a_url_is_shown_without_its_query_string() -> None:
    old = ("records: {webhook: \"https://hooks.example.com/a?sig=abc\", signing_secret: \"${WH}\",\n"
           "          spool_directory: /tmp/s}\nprofiles: {main: {model: gpt-realtime}}\n")
    secret = {"WH": "whsec_" + "QUJD" * 8}
    out = diff(old, old.replace("/a?sig=abc", "/b?sig=xyz"), secret, secret)
    assert out == 'records.webhook: "https://hooks.example.com/a?..." -> "https://hooks.example.com/b?..." ' \
                  "(needs a restart)"
    assert "abc" not in out and "xyz" not in out


def test_resources_with_their_keys_compared_by_name() -> None:
    old = """
    voicelive:
      resources:
        - {name: east, endpoint: "https://east.example.com", api_key: "${EAST_KEY}"}
    profiles: {main: {model: gpt-realtime}}
    """
    new = old.replace("api_key: \"${EAST_KEY}\"}", "api_key: \"${EAST_KEY}\", connections_per_minute: 60}\n"
                      "        - {name: west, endpoint: \"https://west.example.com\", api_key: \"${WEST_KEY}\"}")
    keys = {"EAST_KEY": "east-key-0123456", "WEST_KEY": "west-key-0123456"}
    out = diff(old, new, keys, {**keys, "EAST_KEY": "east-key-ROTATED"})
    assert out.splitlines() == [
        "voicelive.resources: added west (needs a restart)",
        "voicelive.resources[east].api_key: changed (needs a restart)",
        "voicelive.resources[east].connections_per_minute: 30 -> 60 (needs a restart)",
    ]
    assert not any(value in out for value in (*keys.values(), "east-key-ROTATED"))


def test_a_whole_value_shown_hides_the_secrets_in_it() -> None:
    old = "profiles: {main: {model: gpt-realtime}}\n"
    new = ("voicelive:\n  resources:\n    - {name: east, endpoint: \"https://east.example.com\", api_key: \"${K}\"}\n"
           + old)
    out = diff(old, new, new_env={"K": "the-east-resource-key"})
    assert out == "voicelive.resources: added east (needs a restart)"
    assert "the-east-resource-key" not in out


# ---------------------------------------------------------------------------------------------
# Restart-only settings, order and format


def test_restart_only_settings_are_marked_and_the_others_not() -> None:
    old = "profiles: {main: {model: gpt-realtime}}\n"
    new = ("voicelive: {endpoint: simulator, connections_per_minute: 60}\nrecording: {directory: /tmp/calls}\n"
           "records: {spool_directory: /tmp/spool}\ngateway: {max_calls: 10, outbound: {calls_per_minute: 5}}\n" + old)
    assert lines(old, new) == [
        'voicelive.endpoint: not set -> "simulator" (needs a restart)',
        "voicelive.connections_per_minute: 30 -> 60 (needs a restart)",
        "gateway.max_calls: 200 -> 10",
        "gateway.outbound.calls_per_minute: 60 -> 5 (needs a restart)",
        'recording.directory: not set -> "/tmp/calls" (needs a restart)',
        'records.spool_directory: not set -> "/tmp/spool" (needs a restart)',
    ]


def test_restart_paths_match_below_them_only() -> None:
    paths = ("voicelive", "gateway.signing_key")
    assert needs_restart("voicelive.endpoint", paths) and needs_restart("voicelive.resources[east].api_key", paths)
    assert needs_restart("gateway.signing_key", paths)
    assert not needs_restart("gateway.signing_keys", paths) and not needs_restart("voicelive_x", paths)
    assert set(RESTART_ONLY) <= set(restart_paths())


def test_a_carriers_restart_keys_are_marked(monkeypatch: pytest.MonkeyPatch) -> None:
    old = "twilio: {api_base_url: \"https://api.twilio.com\"}\nprofiles: {main: {model: gpt-realtime}}\n"
    new = old.replace("https://api.twilio.com", "https://twilio.example.com")
    expected = 'twilio.api_base_url: "https://api.twilio.com" -> "https://twilio.example.com"'
    monkeypatch.setattr(TwilioSettings, "restart_keys", (), raising=False)
    assert diff(old, new) == expected
    monkeypatch.setattr(TwilioSettings, "restart_keys", ("api_base_url",), raising=False)
    assert "twilio.api_base_url" in restart_paths()
    assert diff(old, new) == expected + " (needs a restart)"


def test_profiles_and_routes_come_first_then_the_sections_in_schema_order() -> None:
    old = "profiles: {main: {model: gpt-realtime}, other: {model: gpt-realtime}}\nroutes: {default: main}\n"
    new = ("records: {max_attempts: 3}\ngateway: {max_calls: 5}\nvoicelive: {replicas: 2}\n"
           "profiles: {main: {model: gpt-realtime-mini}, other: {model: gpt-realtime}}\nroutes: {default: other}\n")
    assert [line.split(":")[0] for line in lines(old, new)] == [
        "profiles.main.model", "routes.default", "voicelive.replicas", "gateway.max_calls", "records.max_attempts"]


def test_format_groups_a_collections_members_on_one_line() -> None:
    changes = [
        Change("profiles", "added", member="sales"),
        Change("gateway.max_calls", "changed", "200", "300"),
        Change("profiles", "removed", member="legacy"),
        Change("voicelive.resources", "added", member="west", restart=True),
        Change("gateway.signing_key", "added", restart=True),
        Change("profiles.main.instructions", "changed", '"a"', '"b"', note="412 -> 388 characters"),
    ]
    assert format_diff(changes).splitlines() == [
        "profiles: added sales; removed legacy",
        "gateway.max_calls: 200 -> 300",
        "voicelive.resources: added west (needs a restart)",
        "gateway.signing_key: set (needs a restart)",
        'profiles.main.instructions: changed (412 -> 388 characters): "a" -> "b"',
    ]

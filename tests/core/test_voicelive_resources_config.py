"""voicelive.resources, profiles' resources and busy settings: validation, and what check-config says."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, describe, parse_config

RESOURCES = """
voicelive:
  strategy: spread
  resources:
    - {name: east, endpoint: "https://east.example.com", api_key: "${EAST_KEY}", region: eastus}
    - {name: west, endpoint: "https://west.example.com", connections_per_minute: 60}
profiles:
  main: {model: gpt-realtime}
  west_only:
    model: gpt-realtime
    resources: [west]
    busy: {message: "Busy, sorry.", wait_s: 5}
routes: {default: main, numbers: {"+15555550100": west_only}}
"""


def test_check_config_prints_each_resource_and_each_profiles_resources() -> None:
    config = parse_config(RESOURCES, env={"EAST_KEY": "east-secret-key-123"})
    text = describe(config)
    assert "Voice Live resources (spread):" in text
    assert "  east: https://east.example.com, region eastus, 30 new connections per minute, auth: api-key" in text
    assert "  west: https://west.example.com, 60 new connections per minute, auth: Microsoft Entra ID" in text
    assert "-> west_only: " in text and "Voice Live resources: west, waits up to 5 s" in text
    assert "any other number -> main: " in text and "Voice Live resources: east, west" in text
    assert "east-secret-key-123" not in text
    assert "east-secret-key-123" in config.secrets()  # the log scrubber knows it


@pytest.mark.parametrize(("text", "problem"), [
    (RESOURCES.replace('api_key: "${EAST_KEY}"', "api_key: literal-key"),
     "voicelive.resources[0].api_key: secrets come from the environment only"),
    (RESOURCES.replace("name: west", "name: east"), "voicelive.resources[1].name: a second resource of this name"),
    (RESOURCES.replace("resources: [west]", "resources: [north]"),
     "profiles.west_only.resources[0]: expected the name of a Voice Live resource: one of east, west"),
    (RESOURCES.replace("  strategy: spread\n", "  strategy: spread\n  endpoint: https://x.example.com\n"),
     "voicelive.endpoint: not with voicelive.resources"),
    (RESOURCES.replace("wait_s: 5", "wait_s: 90"),
     "profiles.west_only.busy.wait_s: expected a number between 0 and 30"),
    (RESOURCES.replace("name: east,", "name: 'east{1}',"), "voicelive.resources[0].name: expected a resource name"),
])
def test_bad_resource_settings_are_reported_where_they_are(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as failed:
        parse_config(text, env={"EAST_KEY": "k" * 12})
    assert any(problem in line for line in failed.value.problems), failed.value.problems


def test_the_one_endpoint_gets_a_budget_line() -> None:
    config = parse_config("""
voicelive: {endpoint: "https://one.example.com", connections_per_minute: 12, replicas: 3}
profiles: {main: {model: gpt-realtime}}
routes: {default: main}
""")
    text = describe(config)
    assert "Voice Live budget: 12 new connections per minute" in text
    assert "divided by the workers times 3 replicas" in text

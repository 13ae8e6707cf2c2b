"""Start-up notes about carriers: a carrier with no credential at all is one the gateway takes no
calls from, so that its requests are refused is information; with a credential set, a note is a
warning."""

from __future__ import annotations

from typing import Any

from structlog.testing import capture_logs

from gateway.app import _announce_security
from gateway.carriers.registry import default_carriers
from gateway.carriers.twilio.carrier import TwilioCarrier
from gateway.config import parse_config


def _levels(config: Any, carriers: list[Any]) -> dict[str, str]:
    with capture_logs() as logs:
        _announce_security(config, carriers)
    return {entry["event"]: entry["log_level"] for entry in logs}


def test_carriers_without_credentials_are_information() -> None:
    config = parse_config("profiles: {p: {model: m}}", env={})
    levels = _levels(config, default_carriers())
    refused = {event: level for event, level in levels.items() if "refused" in event}
    assert len(refused) >= 5  # the carriers with notes, none configured
    assert set(refused.values()) == {"info"}


class _NotingTwilio(TwilioCarrier):
    def notes(self, config: Any) -> list[str]:
        return ["something about a carrier in use"]


def test_a_note_about_a_carrier_with_its_credential_set_is_a_warning() -> None:
    config = parse_config("twilio: {auth_token: \"${TOKEN}\"}\nprofiles: {p: {model: m}}", env={"TOKEN": "t" * 32})
    assert _levels(config, [_NotingTwilio()])["something about a carrier in use"] == "warning"
    unset = parse_config("profiles: {p: {model: m}}", env={})
    assert _levels(unset, [_NotingTwilio()])["something about a carrier in use"] == "info"

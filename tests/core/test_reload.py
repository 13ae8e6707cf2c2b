"""What a configuration reload keeps and what it takes, without sockets or files."""

from __future__ import annotations

from textwrap import dedent

import pytest

from gateway.config import GatewayConfig, parse_config
from gateway.config.diff import RESTART_ONLY, restart_paths
from gateway.reload import changed_restart_keys, keep_running, restart_refusal

BASE = dedent(
    """
    voicelive: {endpoint: "https://one.services.ai.azure.com", api_key: "${K}"}
    gateway: {max_calls: 50}
    recording: {directory: /var/rec/one}
    acs: {connection_string: "${ACS}", resource_id: 5f1c0d6e-0000-4000-8000-000000000001, sample_rate: 24000}
    profiles:
      main: {model: gpt-realtime, voice: alloy}
    routes: {default: main}
    """
)
ENV = {"K": "key-one", "ACS": "endpoint=https://a.communication.azure.com/;accesskey=c2VjcmV0"}


def config(text: str = BASE, **env: str) -> GatewayConfig:
    return parse_config(text, env={**ENV, **env})


def test_the_keys_read_only_at_start_up_are_the_gateway_s_and_each_carrier_s() -> None:
    keys = restart_paths()
    assert keys[: len(RESTART_ONLY)] == RESTART_ONLY
    assert {"voicelive", "recording", "records", "gateway.signing_key", "acs.connection_string",
            "acs.sample_rate"} <= set(keys)
    assert "gateway.max_calls" not in keys and not any(key.startswith("profiles") for key in keys)


def test_a_reload_takes_profiles_and_limits_and_keeps_what_needs_a_restart() -> None:
    running = config()
    new = config(BASE.replace("voice: alloy", "voice: marin").replace("max_calls: 50", "max_calls: 80")
                 .replace("/var/rec/one", "/var/rec/two").replace("24000", "16000"), K="key-two")
    keys = restart_paths()
    assert changed_restart_keys(new, running, keys) == ["voicelive", "recording", "acs.sample_rate"]
    merged = keep_running(new, running, keys)
    assert merged.profiles["main"].voice == new.profiles["main"].voice != running.profiles["main"].voice
    assert merged.gateway.max_calls == 80
    assert merged.voicelive == running.voicelive and merged.voicelive.api_key is not None
    assert merged.voicelive.api_key.get_secret_value() == "key-one"  # the running connection's key
    assert merged.recording.directory == "/var/rec/one"
    assert merged.acs.sample_rate == 24000 and merged.acs.connection_string == running.acs.connection_string
    assert running.profiles["main"].voice is not None and running.gateway.max_calls == 50  # (not changed in place)


def test_nothing_changed_merges_to_an_equal_configuration() -> None:
    running = config()
    again = config()
    assert changed_restart_keys(again, running, restart_paths()) == []
    assert keep_running(again, running, restart_paths()) == running


def test_a_configuration_serve_would_not_start_with_is_refused() -> None:
    on_simulator = parse_config("profiles: {main: {model: gpt-realtime}}\nroutes: {default: main}\n")
    assert restart_refusal(on_simulator) is None
    with_callers = parse_config("twilio: {auth_token: \"${T}\"}\n"
                                "profiles: {main: {model: gpt-realtime}}\nroutes: {default: main}\n", env={"T": "tok"})
    refusal = restart_refusal(with_callers)
    assert refusal is not None and "twilio.auth_token" in refusal


def test_a_profile_a_reload_removed_stays_known_to_calls_announced_with_it() -> None:
    from gateway.bridge import GatewayContext

    two = BASE.replace("routes:", "  sales: {model: gpt-realtime, voice: marin}\nroutes:")
    ctx = GatewayContext(config(two), pool=None, tokens=None)  # type: ignore[arg-type]
    sales = ctx.profile("sales")
    ctx.reconfigure(config(BASE.replace("voice: alloy", "voice: verse")))
    assert "sales" not in ctx.config.profiles
    assert ctx.profile("sales") is sales  # a webhook answered before the reload named it
    assert ctx.profile("main").voice == ctx.config.profiles["main"].voice
    ctx.reconfigure(config(two.replace("voice: marin", "voice: cedar")))  # back again: the file's
    assert ctx.profile("sales").voice == ctx.config.profiles["sales"].voice != sales.voice
    with pytest.raises(KeyError):
        ctx.profile("never")  # a profile no configuration had is not known

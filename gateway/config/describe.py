"""What ``gateway check-config`` prints: the backend, what every called number gets, and notes on
settings that are valid but will not do what they say with the rest of the configuration."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from gateway.carriers.settings import CarrierSettings, carrier_sections
from gateway.config.schema import (
    GPT_REALTIME_MODELS,
    SIMULATOR,
    GatewayConfig,
    Profile,
    SemanticVad,
    TurnDetectionOff,
    default_transcription_model,
)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _voice_text(voice: Any) -> str:
    if voice is None:
        return "service default voice"
    if isinstance(voice, str):
        return f"voice {voice}"
    return f"voice {voice.name} ({voice.type})"


def _turn_text(turn: Any) -> str:
    if turn is None:
        return "turn detection: service default"
    if isinstance(turn, TurnDetectionOff):
        return f"turn detection: in the gateway (end of speech after {turn.silence_duration_ms} ms)"
    return f"turn detection: {turn.type}"


def _profile_text(profile: Profile, config: GatewayConfig | None = None) -> str:
    text = _profile_core(profile)
    if config is not None and config.voicelive.resources is not None:
        names = profile.resources or [r.name for r in config.voicelive.resources]
        text += ", Voice Live resources: " + ", ".join(names)
    if config is not None and profile.busy.wait_s:
        text += f", waits up to {profile.busy.wait_s:g} s for a Voice Live connection"
    return text


def _budget_lines(config: GatewayConfig) -> list[str]:
    """The Voice Live resources and their connection budgets."""
    vl = config.voicelive
    lines = []
    if vl.resources is not None:
        lines.append(f"Voice Live resources ({vl.strategy}):")
        for r in vl.resources:
            where = "built-in simulator" if r.endpoint == SIMULATOR else r.endpoint
            loopback = (urlsplit(r.endpoint).hostname or "").lower() in ("127.0.0.1", "localhost", "::1")
            auth = "api-key" if r.api_key is not None else ("none (loopback)" if loopback or r.endpoint == SIMULATOR
                                                            else "Microsoft Entra ID")
            region = f", region {r.region}" if r.region else ""
            lines.append(f"  {r.name}: {where}{region}, {r.connections_per_minute} new connections per minute, "
                         f"auth: {auth}")
    else:
        lines.append(f"Voice Live budget: {vl.connections_per_minute} new connections per minute")
    divided = f"the workers times {vl.replicas} replicas" if vl.replicas > 1 else "the workers"
    prewarm = {True: "on", False: "off", "auto": "on with one worker"}[vl.prewarm]
    lines.append(f"  each worker takes its share of each budget (divided by {divided}; one budget shared by all "
                 f"through Redis when GATEWAY_REDIS_URL is set); renewals leave {vl.renewal_reserve} "
                 "(at most a third of a budget) for new calls; "
                 f"sessions opened when a call is announced: {prewarm}")
    return lines


def _profile_core(profile: Profile) -> str:
    who = (
        f"agent {profile.agent.name} (project {profile.agent.project})"
        if profile.agent is not None
        else f"model {profile.model}"
    )
    if profile.greeting is None:
        greeting = "greeting: no"
    else:
        greeting = (
            "greeting: yes (text)" if profile.greeting.text is not None else "greeting: yes (instructions)"
        )
    barge = profile.barge_in
    if not barge.enabled:
        barge_text = "barge-in: off"
    else:
        cancel = "on" if barge.response_cancel else "off"
        clear = "on" if barge.output_audio_buffer_clear else "off"
        barge_text = f"barge-in: on (response.cancel {cancel}, output_audio_buffer.clear {clear})"
    tools = "tools: " + (", ".join(t.name for t in profile.tools) if profile.tools else "none")
    transcription = profile.input_transcription
    if transcription is False:
        heard = "caller transcription: off"
    elif transcription is None:
        heard = f"caller transcription: {default_transcription_model(profile)} (default)"
    else:
        heard = f"caller transcription: {transcription.model}"
    return ", ".join(
        [who, _voice_text(profile.voice), _turn_text(profile.turn_detection), heard, greeting, barge_text, tools]
    )


def describe(config: GatewayConfig) -> str:
    """What ``gateway check-config`` prints: backend, then what every called number gets.
    Secrets are never printed, only whether they are set."""
    numbers = config.routes.numbers
    out = [
        f"{config.source}: OK ({_plural(len(config.profiles), 'profile')}, {_plural(len(numbers), 'number')})"
    ]
    vl = config.voicelive
    if config.uses_simulator:
        names = config._env_refs.get("voicelive.endpoint")
        reason = f"{' and '.join(names)} is not set" if names else "voicelive.endpoint is not set"
        if vl.endpoint == SIMULATOR:
            reason = "voicelive.endpoint: simulator"
        out.append(f"Voice Live: built-in simulator ({reason})")
        refusal = config.simulator_refusal()
        if refusal is not None:
            out.append(f"gateway serve will refuse to start: {refusal}")
    else:
        if vl.api_key is not None:
            auth = "api-key"
        else:
            auth = f"Microsoft Entra ID (token scope {vl.token_scope})"
        out.append(f"Voice Live: {vl.endpoint} (api-version {vl.api_version}), auth: {auth}")
    out += _budget_lines(config)
    public_url = config.gateway.public_url or "not set"
    out.append(f"Public URL: {public_url}")
    out.append(_console_line(config))
    out.append("; ".join(f"{section.credential_label}: {'set' if section.has_credential else 'not set'}"
                         for section in carrier_sections(config) if section.credential_label is not None))
    used: set[str] = set()
    for number, name in numbers.items():
        used.add(name)
        out.append(f"{number} -> {name}: {_profile_text(config.profiles[name], config)}")
    default = config.routes.default
    used.add(default)
    label = "any other number" if numbers else "any number"
    out.append(f"{label} -> {default}: {_profile_text(config.profiles[default], config)}")
    for name, profile in config.profiles.items():
        if name not in used:
            out.append(f"unused profile {name}: {_profile_text(profile, config)}")
    out += _outbound_lines(config)
    out.append(_records_line(config))
    out += config_notes(config)
    return "\n".join(out)


def _console_line(config: GatewayConfig) -> str:
    """Whether the operator console (GET /console) is on, and who may use it."""
    token = config.gateway.console_token
    if token is not None and token.get_secret_value():
        return "Console: on at /console (operators log in with gateway.console_token)"
    if config.gateway.insecure_dev_mode:
        return "Console: OPEN at /console to anyone who reaches the gateway (insecure_dev_mode, no console token)"
    names = config._env_refs.get("gateway.console_token")
    return f"Console: off ({' or '.join(names) if names else 'gateway.console_token'} not set)"


def _webhook_address(url: str) -> str:
    """A webhook as check-config shows it: without its query string (which may carry a credential)."""
    return url.split("?", 1)[0].split("#", 1)[0]


def _records_line(config: GatewayConfig) -> str:
    """Where post-call records go: which profiles' calls get one, to which webhook, from which spool."""
    goes: dict[str, list[str]] = {}
    for name, profile in config.profiles.items():
        webhook = config.record_webhook(profile)
        if webhook is not None:
            goes.setdefault(_webhook_address(webhook), []).append(name)
    if not goes:
        return "Post-call records: off (no records.webhook, and no profile names a record.webhook)"
    where = "; ".join(f"{address} (profiles {', '.join(names)})" for address, names in goes.items())
    records = config.records
    return (f"Post-call records: to {where}, signed, spooled in {records.spool_directory}, "
            f"up to {records.max_attempts} attempts")


def _outbound_lines(config: GatewayConfig) -> list[str]:
    """The outbound-call API: on or off, its limits, the carriers that can place calls, and what the
    profiles that set it up do with a placed call."""
    from gateway.carriers.registry import default_carriers  # (the carriers import the config)

    gateway = config.gateway
    if gateway.api_token is None:
        names = config._env_refs.get("gateway.api_token")
        return [f"Outbound calls: API off ({' or '.join(names) if names else 'gateway.api_token'} not set)"]
    limits = gateway.outbound
    cap = f", at most {limits.max_per_profile} at once per profile" if limits.max_per_profile else ""
    able, unable = [], []
    for carrier in default_carriers():
        why = carrier.outbound_refusal(config)
        if why is None:
            able.append(carrier.name)
        elif carrier.places_calls:
            unable.append(why)
    lines = [f"Outbound calls: API on (POST /v1/calls), up to {limits.calls_per_minute} a minute{cap}, counted "
             f"in max_calls; placed through {', '.join(able) if able else 'no carrier'}"
             + (f" ({'; '.join(unable)})" if unable else "")]
    for name, profile in config.profiles.items():
        if not {"outbound", "voicemail"} & profile.model_fields_set:
            continue
        settings, voicemail = profile.outbound, profile.voicemail
        machine = (("answering machines get the voicemail message after the beep" if voicemail.action == "message"
                    else "answering machines are hung up on") if settings.answering_machine_detection
                   else "no answering-machine detection")
        cap = f", at most {settings.max_calls} at once" if settings.max_calls else ""
        lines.append(f"placed calls with profile {name}: greeting once the callee spoke or after "
                     f"{settings.greeting_after_s:g} s of silence, {machine}{cap}")
    return lines


def _none_set(sections: list[CarrierSettings]) -> str:
    keys = [f"{section.section}.{section.credential_key}" for section in sections]
    if len(keys) == 1:
        return f"{keys[0]} is not set"
    if len(keys) == 2:
        return f"neither {keys[0]} nor {keys[1]} is set"
    return f"none of {', '.join(keys)} is set"


def config_notes(config: GatewayConfig) -> list[str]:
    """Settings that are valid but will not do what they say with the rest of the configuration."""
    notes: list[str] = []
    sections = carrier_sections(config)
    for section in sections:
        notes += section.notes()
    transferring = [section for section in sections if section.transfers]  # carriers that can transfer a call
    can_transfer = any(section.has_credential for section in transferring)
    for name, profile in config.profiles.items():
        transfers = any(t.builtin == "transfer_call" for t in profile.tools) or any(
            a.transfer_to for a in profile.dtmf.actions.values())
        if transfers and not can_transfer:
            notes.append(f"note: profile {name} transfers calls, but {_none_set(transferring)}: transfers will be "
                         "refused")
        keyless = [section.section for section in sections if section.has_credential and not section.sends_keys]
        if keyless and any(t.builtin == "send_dtmf" for t in profile.tools):
            notes.append(f"note: profile {name} presses keys (send_dtmf), which {', '.join(keyless)} calls cannot "
                         "do: there the tool answers that the line cannot send keypad tones")
        notes += _model_notes(name, profile)
        if profile.interim_response is not None and profile.model is not None and "realtime" in profile.model:
            notes.append(f"note: profile {name} sets interim_response, which Voice Live does not support with "
                         f"realtime audio models such as {profile.model} (it serves agents and text models "
                         "with an Azure voice)")
    return notes


# Transcription models the 2026-07-15 reference lists only for gpt-realtime models (True) or only for
# the other models and agents (False); mai-transcribe is listed for both.
_TRANSCRIPTION_FOR = {
    True: ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-transcribe-diarize"),
    False: ("azure-speech",),
}


def _model_notes(name: str, profile: Profile) -> list[str]:
    """Settings Voice Live offers only with some models, and what turning transcription off costs."""
    notes: list[str] = []
    who = f"agent {profile.agent.name}" if profile.agent is not None else f"model {profile.model}"
    gpt_realtime = profile.model in GPT_REALTIME_MODELS
    only = " or ".join(GPT_REALTIME_MODELS)
    if isinstance(profile.turn_detection, SemanticVad) and not gpt_realtime:
        notes.append(f"note: profile {name} uses turn_detection semantic_vad, which Voice Live offers only with "
                     f"{only}; this profile uses {who} (azure_semantic_vad works with every model)")
    if profile.noise_suppression in ("near_field", "far_field") and not gpt_realtime:
        notes.append(f"note: profile {name} uses {profile.noise_suppression} noise suppression, which Voice Live "
                     f"offers only with {only}; this profile uses {who} (azure_deep_noise_suppression works with "
                     "every model)")
    transcription = profile.input_transcription
    if transcription and profile.agent is None and transcription.model in _TRANSCRIPTION_FOR[not gpt_realtime]:
        listed = ", ".join((*_TRANSCRIPTION_FOR[gpt_realtime], "mai-transcribe", "mai-transcribe-2"))
        notes.append(f"note: profile {name} transcribes the caller with {transcription.model}, which Voice Live's "
                     f"reference does not list for {who}; it lists {listed}")
    if transcription is False:
        notes.append(f"note: profile {name} turns caller transcription off: if its Voice Live session is "
                     "reconnected or renewed, the new session hears none of what the caller said before (the "
                     "conversation is restored from transcripts), and logs and records carry no caller words")
    elif transcription is not None and transcription.phrase_list and profile.model is not None and (
            "realtime" in profile.model):
        notes.append(f"note: profile {name} gives a phrase list, which Voice Live's documentation says realtime "
                     f"audio models such as {profile.model} do not use yet (agents and text models do)")
    return notes

"""Property-based tests (hypothesis) of the code that reads untrusted input: the carrier codecs, the
base64 helpers and config.yaml.

The contract checked everywhere: whatever arrives, a parser answers with one of its own results or
its own error type, never another exception. Inputs are arbitrary text, arbitrary JSON/YAML values,
and mutations of valid messages and configs (fields dropped, wrong types, numbers written as text,
unknown fields and events, truncation).

Known gaps in the gateway are pinned at the end of the file as strict expected failures, with the
exact input; the general properties leave those inputs out so that they keep guarding the rest.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import json
import re
import string
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from gateway.audio import G711_ULAW, PCM16_24K, b64_len, is_base64, split_b64
from gateway.call import Call, ClearPlayback, Hangup, PlayAudio, SendMark
from gateway.carriers.acs import codec as acs
from gateway.carriers.twilio import codec as twilio
from gateway.config import ConfigError, GatewayConfig, parse_config
from gateway.wire import WireCall

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
QUICK = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TWILIO_EVENTS = (twilio.Connected, twilio.Start, twilio.Media, twilio.Dtmf, twilio.MarkAck, twilio.Stop,
                 twilio.OtherEvent)
ACS_EVENTS = (acs.AudioMetadata, acs.Audio, acs.DtmfDigit, acs.OtherKind)


def tally(label: str) -> None:
    """Count outcomes for hypothesis' statistics (pytest --hypothesis-show-statistics)."""
    with contextlib.suppress(InvalidArgument):  # (outside a hypothesis test)
        event(label)


# --- strategies ----------------------------------------------------------------------------------

# Keys the codecs and the config look at, so that generated documents reach past the first checks.
TWILIO_KEYS = ("event", "media", "payload", "track", "mark", "name", "start", "streamSid", "callSid",
               "mediaFormat", "encoding", "sampleRate", "channels", "customParameters", "tracks", "dtmf",
               "digit", "stop", "sequenceNumber", "accountSid")
ACS_KEYS = ("kind", "Kind", "audioData", "AudioData", "data", "Data", "silent", "audioMetadata", "sampleRate",
            "channels", "encoding", "dtmfData", "DtmfData", "timestamp", "participantRawID")

# Finite numbers only: non-finite ones (JSON Infinity, 1e999) crash the start / AudioMetadata
# parsers, pinned below in test_hostile_*.
json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**64), max_value=2**64)
                | st.floats(allow_infinity=False) | st.text(max_size=30))


def json_values(keys: tuple[str, ...] = ()) -> st.SearchStrategy[Any]:
    key = st.sampled_from(keys) | st.text(max_size=10) if keys else st.text(max_size=10)
    return st.recursive(
        json_scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(key, inner, max_size=5),
        max_leaves=20,
    )


b64_text = st.binary(max_size=400).map(lambda b: base64.b64encode(b).decode())
nonempty_b64 = st.binary(min_size=1, max_size=400).map(lambda b: base64.b64encode(b).decode())
even_b64 = st.binary(min_size=2, max_size=400).filter(lambda b: len(b) % 2 == 0).map(
    lambda b: base64.b64encode(b).decode())


@st.composite
def twilio_messages(draw: st.DrawFn) -> dict[str, Any]:
    """A message of the shape Twilio sends, with arbitrary values where Twilio's vary."""
    sid = "MZ" + draw(st.text(string.hexdigits, min_size=1, max_size=32))
    seq = str(draw(st.integers(1, 10**6)))
    kind = draw(st.sampled_from(["connected", "start", "media", "mark", "dtmf", "stop"]))
    if kind == "connected":
        return {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    if kind == "start":
        return {"event": "start", "sequenceNumber": seq, "streamSid": sid, "start": {
            "streamSid": sid, "accountSid": "AC1", "callSid": "CA" + draw(st.text(string.hexdigits, min_size=1)),
            "tracks": ["inbound"],
            "customParameters": draw(st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3)),
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}
    if kind == "media":
        return {"event": "media", "sequenceNumber": seq, "streamSid": sid, "media": {
            "track": "inbound", "chunk": seq, "timestamp": str(draw(st.integers(0, 10**7))),
            "payload": draw(nonempty_b64)}}
    if kind == "mark":
        return {"event": "mark", "sequenceNumber": seq, "streamSid": sid, "mark": {"name": draw(st.text())}}
    if kind == "dtmf":
        return {"event": "dtmf", "sequenceNumber": seq, "streamSid": sid,
                "dtmf": {"track": "inbound_track", "digit": draw(st.sampled_from("0123456789*#"))}}
    return {"event": "stop", "sequenceNumber": seq, "streamSid": sid, "stop": {"accountSid": "AC1", "callSid": "CA1"}}


def pascal(obj: Any) -> Any:
    """ACS keys in PascalCase (ACS matches them case-insensitively)."""
    if isinstance(obj, dict):
        return {k[:1].upper() + k[1:]: pascal(v) for k, v in obj.items()}
    return obj


@st.composite
def acs_messages(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["AudioMetadata", "AudioData", "DtmfData"]))
    if kind == "AudioMetadata":
        msg: dict[str, Any] = {"kind": kind, "audioMetadata": {
            "subscriptionId": "sub", "encoding": "PCM", "sampleRate": 24000, "channels": 1, "length": 640}}
    elif kind == "AudioData":
        msg = {"kind": kind, "audioData": {"timestamp": "2026-11-21T10:00:00.000Z", "participantRawID": "4:+1555",
                                           "data": draw(even_b64), "silent": draw(st.booleans())}}
    else:
        msg = {"kind": kind, "dtmfData": {"timestamp": "2026-11-21T10:00:00.000Z", "participantRawID": "4:+1555",
                                          "data": draw(st.sampled_from("0123456789*#ABCD"))}}
    return pascal(msg) if draw(st.booleans()) else msg


def _slots(obj: Any, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key-or-index) in a JSON-like value."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            out.append((obj, key))
            _slots(value, out)
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            out.append((obj, index))
            _slots(value, out)
    return out


def _containers(obj: Any) -> list[dict[str, Any]]:
    found = [obj] if isinstance(obj, dict) else []
    for container, key in _slots(obj, []):
        if isinstance(container[key], dict):
            found.append(container[key])
    return found


def _numbers_as_text(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _numbers_as_text(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_numbers_as_text(v) for v in obj]
    if isinstance(obj, int | float) and not isinstance(obj, bool):
        return str(obj)
    return obj


def mutate(draw: st.DrawFn, doc: Any, keys: tuple[str, ...], values: st.SearchStrategy[Any]) -> Any:
    """Apply one to three mutations to a copy of ``doc``."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["drop", "retype", "numbers-as-text", "add", "rename"]))
        slots = _slots(doc, [])
        if how == "drop" and slots:
            container, key = draw(st.sampled_from(slots))
            if isinstance(container, dict) and key in container:
                del container[key]
            elif isinstance(container, list) and key < len(container):
                container.pop(key)
        elif how == "retype" and slots:
            container, key = draw(st.sampled_from(slots))
            if isinstance(container, dict) or key < len(container):
                container[key] = draw(values)
        elif how == "numbers-as-text":
            doc = _numbers_as_text(doc)
        elif how == "add":
            containers = _containers(doc)
            if containers:
                target = draw(st.sampled_from(containers))
                target[draw(st.sampled_from(keys) | st.text(max_size=8))] = draw(values)
        elif how == "rename" and isinstance(doc, dict):
            tag = "event" if "event" in doc else "kind"
            doc[tag] = draw(st.sampled_from(["media", "start", "mark", "AudioData", "audiodata", "DTMFDATA"])
                            | st.text(max_size=12))
    return doc


@st.composite
def mutated_wire_text(draw: st.DrawFn, messages: st.SearchStrategy[dict[str, Any]], keys: tuple[str, ...]) -> str:
    doc = draw(messages)
    if draw(st.booleans()):
        doc = mutate(draw, doc, keys, json_values(keys))
    compact = draw(st.booleans())
    text = json.dumps(doc, separators=(",", ":") if compact else None)
    if draw(st.integers(0, 3)) == 0:  # truncation
        text = text[: draw(st.integers(0, max(0, len(text) - 1)))]
    return text


twilio_texts = (st.text() | json_values(TWILIO_KEYS).map(json.dumps)
                | mutated_wire_text(twilio_messages(), TWILIO_KEYS))
acs_texts = st.text() | json_values(ACS_KEYS).map(json.dumps) | mutated_wire_text(acs_messages(), ACS_KEYS)


# --- Twilio --------------------------------------------------------------------------------------


def check_twilio(text: str | bytes) -> twilio.TwilioEvent | None:
    """parse_message's contract; returns the event (None for a protocol error)."""
    try:
        event = twilio.parse_message(text)
    except twilio.TwilioProtocolError as exc:
        assert str(exc)
        tally("protocol error")
        return None
    tally(type(event).__name__)
    assert isinstance(event, TWILIO_EVENTS), event
    if isinstance(event, twilio.Media):
        assert event.payload and is_base64(event.payload)
    if isinstance(event, twilio.Start):
        assert event.stream_sid and event.call_sid and isinstance(event.stream_sid, str)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in event.params.items())
    if isinstance(event, twilio.MarkAck):
        assert isinstance(event.name, str)
    if isinstance(event, twilio.Dtmf):
        assert isinstance(event.digit, str) and event.digit
    return event


@FAST
@given(twilio_texts)
def test_twilio_parser_answers_an_event_or_its_own_error(text: str) -> None:
    check_twilio(text)


@FAST
@given(twilio_messages())
def test_twilio_parser_reads_valid_messages(msg: dict[str, Any]) -> None:
    event = check_twilio(json.dumps(msg))
    kind = msg["event"]
    if kind == "media":
        assert event == twilio.Media(msg["media"]["payload"], "inbound")
    elif kind == "start":
        start = msg["start"]
        assert event == twilio.Start(start["streamSid"], start["callSid"], "AC1", start["customParameters"],
                                     ("inbound",))
    elif kind == "mark":
        assert event == twilio.MarkAck(msg["mark"]["name"])
    elif kind == "dtmf":
        assert event == twilio.Dtmf(msg["dtmf"]["digit"])
    else:
        assert event == (twilio.CONNECTED if kind == "connected" else twilio.STOP)


def check_fast_path(text: str) -> None:
    fast = twilio.fast_media_payload(text)
    if fast is not None:
        event = twilio.parse_message(text)
        assert event == twilio.Media(fast, "inbound"), (text, event)


# The fast path finds a payload by its place in the text; it agrees with the parser on JSON that
# json.dumps writes. (It also accepts text that is not JSON, see the known gaps below.)
fast_shaped = st.builds(
    lambda msg, payload, extra, compact: json.dumps(
        {**{k: v for k, v in msg.items() if k != "media"},
         "media": {**extra, "track": "inbound", "payload": payload}} if payload is not None else msg,
        separators=(",", ":") if compact else None),
    twilio_messages(),
    st.none() | b64_text | st.text(max_size=12),
    st.dictionaries(st.sampled_from(["chunk", "timestamp", "x"]), json_scalars, max_size=3),
    st.booleans(),
)


@FAST
@given(twilio_texts | fast_shaped)
def test_the_fast_media_path_is_none_or_the_parsers_inbound_payload(text: str) -> None:
    check_fast_path(text)


@FAST
@given(twilio_messages().filter(lambda m: m["event"] == "media"))
def test_the_fast_media_path_takes_media_as_twilio_sends_it(msg: dict[str, Any]) -> None:
    text = json.dumps(msg, separators=(",", ":"))
    assert twilio.fast_media_payload(text) == msg["media"]["payload"]
    check_fast_path(text)


@FAST
@given(st.text(), b64_text, st.text())
def test_twilio_encoder_writes_json_that_round_trips(stream_sid: str, payload: str, name: str) -> None:
    encoder = twilio.TwilioEncoder(stream_sid)
    assert json.loads(encoder.media(payload)) == {"event": "media", "streamSid": stream_sid,
                                                  "media": {"payload": payload}}
    assert json.loads(encoder.mark(name)) == {"event": "mark", "streamSid": stream_sid, "mark": {"name": name}}
    assert json.loads(encoder.clear()) == {"event": "clear", "streamSid": stream_sid}
    start = twilio.Start(stream_sid or "MZ1", "CA1", "AC1", {}, ("inbound",))
    leg = twilio.TwilioLeg(start)
    for action in (PlayAudio(payload), SendMark(name), ClearPlayback()):
        out = leg.encode(action)
        assert out is not None and json.loads(out)["streamSid"] == start.stream_sid
    assert leg.encode(Hangup("done")) is None


# --- ACS -----------------------------------------------------------------------------------------


def check_acs(text: str | bytes) -> acs.AcsEvent | None:
    try:
        event = acs.parse_message(text)
    except acs.AcsProtocolError as exc:
        assert str(exc)
        tally("protocol error")
        return None
    tally(type(event).__name__)
    assert isinstance(event, ACS_EVENTS), event
    if isinstance(event, acs.Audio):
        assert event.data and is_base64(event.data) and b64_len(event.data) % 2 == 0
    if isinstance(event, acs.AudioMetadata):
        assert isinstance(event.sample_rate, int) and isinstance(event.channels, int)
    if isinstance(event, acs.DtmfDigit):
        assert isinstance(event.digit, str) and event.digit
    return event


@FAST
@given(acs_texts)
def test_acs_parser_answers_an_event_or_its_own_error(text: str) -> None:
    check_acs(text)


@FAST
@given(acs_messages())
def test_acs_parser_reads_valid_messages_in_either_casing(msg: dict[str, Any]) -> None:
    event = check_acs(json.dumps(msg))
    kind = msg.get("kind") or msg["Kind"]
    body = next(v for k, v in msg.items() if k.lower() == kind.lower())
    fields = {k.lower(): v for k, v in body.items()}
    if kind == "AudioData":
        assert event == acs.Audio(fields["data"], fields["silent"])
    elif kind == "DtmfData":
        assert event == acs.DtmfDigit(fields["data"])
    else:
        assert event == acs.AudioMetadata("PCM", 24000, 1)


@FAST
@given(b64_text)
def test_acs_leg_writes_json(payload: str) -> None:
    leg = acs.AcsLeg()
    out = leg.encode(PlayAudio(payload))
    assert out is not None
    assert json.loads(out) == {"kind": "AudioData", "audioData": {"data": payload}}
    stop = leg.encode(ClearPlayback())
    assert stop is not None and json.loads(stop)["kind"] == "StopAudio"
    assert leg.encode(Hangup("done")) is None
    assert leg.encode(SendMark("m")) is None


# --- a whole leg: wire text into a live Call never raises -------------------------------------------

LEG_CONFIG = parse_config("profiles:\n  main:\n    model: gpt-realtime\n", env={})


def _wire(leg: Any, paced: bool) -> WireCall:
    call = Call(call_id="CA1", stream_id="MZ1", profile_name="main", profile=LEG_CONFIG.profiles["main"],
                started_at=0.0, audio=PCM16_24K if paced else G711_ULAW, paced=paced)
    return WireCall(call, leg)


@QUICK
@given(st.lists(twilio_texts | st.binary(max_size=20), max_size=8))
def test_a_twilio_leg_takes_any_sequence_of_messages(messages: list[str | bytes]) -> None:
    wire = _wire(twilio.TwilioLeg(twilio.Start("MZ1", "CA1", "AC1", {}, ("inbound",))), paced=False)
    for i, message in enumerate(messages):
        wire.from_phone(message, float(i))
        for out in wire.take_phone():
            json.loads(out)
    assert sum(wire.bad_input.values()) <= len(messages)
    assert set(wire.bad_input) <= {"malformed", "binary-frame", "duplicate-start", "unknown-event"}


@QUICK
@given(st.lists(acs_texts | st.binary(max_size=20), max_size=8))
def test_an_acs_leg_takes_any_sequence_of_messages(messages: list[str | bytes]) -> None:
    wire = _wire(acs.AcsLeg(), paced=True)
    for i, message in enumerate(messages):
        wire.from_phone(message, float(i))
        for out in wire.take_phone():
            json.loads(out)
    assert set(wire.bad_input) <= {"malformed", "binary-frame", "unknown-kind", "unsupported-format"}


# --- base64 helpers ------------------------------------------------------------------------------


@FAST
@given(st.binary(max_size=3000), st.integers(1, 300))
def test_split_b64_pieces_are_base64_and_join_back(data: bytes, quads: int) -> None:
    text = base64.b64encode(data).decode()
    pieces = split_b64(text, quads * 4)
    assert "".join(pieces) == text
    assert all(len(piece) <= quads * 4 for piece in pieces)
    assert b"".join(base64.b64decode(piece, validate=True) for piece in pieces) == data
    for piece in pieces:
        assert is_base64(piece)


@FAST
@given(st.binary(max_size=3000))
def test_b64_len_is_the_decoded_length(data: bytes) -> None:
    assert b64_len(base64.b64encode(data).decode()) == len(data)


def strictly_base64(text: str) -> bool:
    """A strict binascii decode, and no '=' beyond the last group's padding (binascii's strict
    mode tolerates surplus '=' after a complete group, as in 'AAAA=')."""
    try:
        decoded = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII text
        return False
    return len(text) == 4 * -(-len(decoded) // 3)


base64ish = st.text(alphabet=string.ascii_letters[:6] + "09+/=-_ \n\x00é", max_size=16)


@FAST
@given(st.text() | base64ish | b64_text | b64_text.map(lambda t: t + "="))
def test_is_base64_agrees_with_a_strict_decode(text: str) -> None:
    assert is_base64(text) == strictly_base64(text), text


def test_is_base64_edge_cases() -> None:
    assert strictly_base64("AAAA") and not strictly_base64("AAAA=")  # the oracle itself
    for good in ("", "AAAA", "AA==", "AAA=", "AB=="):
        assert is_base64(good)
    for bad in ("A", "AAA", "A===", "====", "AAAA=", "AA==AA==", "AA AA", "AAAA\n", "ÄAAA", None, 42, b"AAAA"):
        assert not is_base64(bad)


# --- config.yaml ---------------------------------------------------------------------------------

SOURCE = "fuzz/gateway.yaml"
CONFIG_KEYS = ("voicelive", "gateway", "twilio", "acs", "recording", "profiles", "routes", "default", "numbers",
               "main", "model", "agent", "instructions", "voice", "type", "name", "turn_detection", "greeting",
               "barge_in", "tools", "limits", "endpoint", "api_key", "public_url", "max_calls", "temperature",
               "max_output_tokens", "noise_suppression", "http", "url", "parameters", "x-anchor", "<<")

yaml_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20)
                | st.sampled_from(["${A}", "${A:-x}", "$$", "${", "none", "inf", "+15555550100"]))
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(CONFIG_KEYS) | st.text(max_size=8),
                                                                inner, max_size=5),
    max_leaves=25,
)
yaml_documents = yaml_values | st.dictionaries(st.sampled_from(CONFIG_KEYS), yaml_values, max_size=6)

VALID_CONFIG: dict[str, Any] = {
    "voicelive": {"endpoint": "https://contoso.services.ai.azure.com", "api_key": "${VL_KEY:-}",
                  "connect_timeout_s": 10},
    "gateway": {"public_url": "https://voice.example.com", "max_calls": 50, "insecure_dev_mode": False},
    "twilio": {"auth_token": "${TWILIO_TOKEN:-}"},
    "acs": {"connection_string": "${ACS:-}", "resource_id": "res-1", "reconnect_grace_s": 2.5},
    "recording": {"redact_audio": True},
    "profiles": {
        "support": {
            "model": "gpt-realtime", "instructions": "Be brief.",
            "voice": {"type": "azure-standard", "name": "en-US-AvaNeural", "temperature": 0.8},
            "turn_detection": {"type": "azure_semantic_vad", "silence_duration_ms": 500},
            "noise_suppression": True, "temperature": 0.8, "max_output_tokens": "inf",
            "greeting": "Hello.", "barge_in": {"response_cancel": True},
            "limits": {"max_duration_s": 600, "idle_timeout_s": 60},
            "tools": [{"name": "hours", "description": "Opening hours.",
                       "parameters": {"type": "object", "properties": {"day": {"type": "string"}}},
                       "http": {"url": "https://tools.example.com/hours", "timeout_s": 2}}],
        },
        "sales": {"model": "gpt-realtime", "voice": "marin", "turn_detection": "none"},
    },
    "routes": {"default": "support", "numbers": {"+15555550100": "sales"}},
}


def check_config(text: str, env: dict[str, str] | None = None) -> GatewayConfig | None:
    try:
        config = parse_config(text, source=SOURCE, env=env or {})
    except ConfigError as exc:
        assert exc.problems, text
        for line in exc.problems:
            assert line.startswith(SOURCE + ":"), (line, text)
        tally("ConfigError, 1 problem" if len(exc.problems) == 1 else "ConfigError, several problems")
        return None
    tally("GatewayConfig")
    assert isinstance(config, GatewayConfig)
    assert config.routes.default in config.profiles
    return config


def test_the_valid_config_seed_is_valid() -> None:
    config = check_config(yaml.safe_dump(VALID_CONFIG))
    assert config is not None and set(config.profiles) == {"support", "sales"}


@FAST
@given(yaml_documents)
def test_config_from_arbitrary_yaml_is_a_config_or_a_config_error(doc: Any) -> None:
    check_config(yaml.safe_dump(doc, allow_unicode=True))


@FAST
@given(st.data())
def test_config_mutations_are_a_config_or_a_config_error(data: st.DataObject) -> None:
    doc = mutate(data.draw, VALID_CONFIG, CONFIG_KEYS, yaml_values)
    check_config(yaml.safe_dump(doc, allow_unicode=True), env={"VL_KEY": "vl-key-0123456789"})


@QUICK
@given(st.integers(0, 2000), st.text(max_size=6), st.booleans())
def test_config_text_cut_or_spliced_is_a_config_or_a_config_error(at: int, junk: str, cut: bool) -> None:
    text = yaml.safe_dump(VALID_CONFIG)
    at = min(at, len(text))
    check_config(text[:at] if cut else text[:at] + junk + text[at:])


@QUICK
@given(st.text(max_size=200))
def test_config_from_arbitrary_text_is_a_config_or_a_config_error(text: str) -> None:
    check_config(text)


env_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True)
# Values may hold '$' and braces: they are used as read, never expanded again.
env_values = st.text(alphabet=string.ascii_letters + string.digits + " -_./:@+=,%${}", max_size=20)
plain = st.text(alphabet=string.ascii_letters + string.digits + " -_.,:", max_size=10)


def _instructions(template: str, env: dict[str, str]) -> str | None:
    doc = {"profiles": {"main": {"model": "gpt-realtime", "instructions": template}}}
    config = parse_config(yaml.safe_dump(doc), source=SOURCE, env=env)
    return config.profiles["main"].instructions


@FAST
@given(env_names, env_values.filter(bool), plain, plain)
def test_env_reference_takes_the_variables_value(name: str, value: str, before: str, after: str) -> None:
    assert _instructions(f"{before}${{{name}}}{after}", {name: value}) == before + value + after


@FAST
@given(env_names, st.sampled_from([None, ""]) | env_values, plain, plain)
def test_env_reference_with_a_default(name: str, value: str | None, default: str, before: str) -> None:
    env = {} if value is None else {name: value}
    expected = before + (value or default)
    assert _instructions(f"{before}${{{name}:-{default}}}", env) == (expected or None)  # empty: not set


@FAST
@given(env_names, st.sampled_from([None, ""]))
def test_env_reference_to_a_missing_variable_is_reported(name: str, value: str | None) -> None:
    env = {} if value is None else {name: value}
    with pytest.raises(ConfigError) as err:
        _instructions(f"${{{name}}}", env)
    (line,) = err.value.problems
    assert line.startswith(SOURCE + ":") and f"environment variable {name} is not set" in line


# --- known gaps, pinned with their exact inputs (they pass once the gateway handles them) ---------

TWILIO_START_INFINITE_RATE = ('{"event":"start","start":{"streamSid":"MZ1","callSid":"CA1",'
                              '"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":1e999,"channels":1}}}')
ACS_METADATA_INFINITE_RATE = '{"kind":"AudioMetadata","audioMetadata":{"encoding":"PCM","sampleRate":Infinity}}'
LONG_NUMBER = '{"event":"media","kind":"AudioData","n":' + "1" * 4301 + "}"  # past int-from-text's digit limit
DEEP = "[" * 100_000 + "]" * 100_000  # deeper than json.loads parses on 3.11-3.13


def _gap(parser: str, text: str | bytes, raises: type[BaseException], why: str) -> Any:
    """An input that once escaped the parser with ``raises`` (``why``); now a clean protocol error."""
    return pytest.param(parser, text, id=f"{parser}-{raises.__name__}-{why.split(':')[0]}")


@pytest.mark.parametrize("parser, text", [
    _gap("twilio", TWILIO_START_INFINITE_RATE, OverflowError, "1e999: int(inf) in start.mediaFormat"),
    _gap("acs", ACS_METADATA_INFINITE_RATE, OverflowError, "Infinity: int(inf) in AudioMetadata"),
    _gap("twilio", LONG_NUMBER, AttributeError, "4301 digits: json's ValueError has no .msg"),
    _gap("acs", LONG_NUMBER, AttributeError, "4301 digits: json's ValueError has no .msg"),
    _gap("twilio", DEEP, RecursionError, "nesting: json.loads recursion"),
    _gap("acs", DEEP, RecursionError, "nesting: json.loads recursion"),
    _gap("twilio", b"\xff{}", AttributeError, "bytes: UnicodeDecodeError has no .msg"),
    _gap("acs", b"\x00\xf0\x90\x80\x80", AttributeError, "bytes: UnicodeDecodeError has no .msg"),
])
def test_hostile_inputs_that_escape_the_parsers(parser: str, text: str | bytes) -> None:
    (check_twilio if parser == "twilio" else check_acs)(text)


@pytest.mark.parametrize("text", [
    '{"event":"media",,"media":{"track":"inbound","payload":"AAAA"}}',  # not JSON (a comma too many)
    '{"event":"media" junk "track":"inbound","payload":"AAAA"}}',  # not JSON at all
    '{"event":"media","track":"inbound","media":{"track":"outbound","payload":"AAAA"}}',  # outbound track
    '{"event":"media","event":"stop","media":{"track":"inbound","payload":"AAAA"}}',  # duplicate key: a stop
], ids=["double-comma", "garbage", "outbound", "duplicate-event"])
def test_hostile_fast_media_path(text: str) -> None:
    check_fast_path(text)


@pytest.mark.parametrize("leg, text", [
    (twilio.TwilioLeg(twilio.Start("MZ1", "CA1", "AC1", {}, ("inbound",))), json.dumps({"event": "e" * 100_000})),
    (acs.AcsLeg(), json.dumps({"kind": "k" * 100_000})),
], ids=["twilio", "acs"])
def test_hostile_problem_details_are_bounded(leg: Any, text: str) -> None:
    wire = _wire(leg, paced=False)
    problem = wire.leg.feed(wire.call, text, 0.0)
    assert problem is not None
    assert len(problem[1]) <= 1000


def test_hostile_a_secret_inside_the_file_name() -> None:
    text = "voicelive:\n  api_key: ${KEY}\nprofiles:\n  main: {voice: nobody}\n"
    with pytest.raises(ConfigError) as err:
        parse_config(text, source="config.yaml", env={"KEY": "config"})
    assert all(line.startswith("config.yaml:") for line in err.value.problems), err.value.problems


def test_hostile_a_nan_reconnect_budget() -> None:
    with pytest.raises(ConfigError):
        parse_config("voicelive: {reconnect_budget_s: .nan}\nprofiles: {main: {model: m}}\n", env={})


def test_the_pinned_inputs_are_what_they_claim() -> None:
    """So that the hostile inputs above are what they claim to be."""
    assert json.loads(TWILIO_START_INFINITE_RATE)["start"]["mediaFormat"]["sampleRate"] == float("inf")
    assert json.loads(ACS_METADATA_INFINITE_RATE)["audioMetadata"]["sampleRate"] == float("inf")
    with pytest.raises(ValueError, match="digits"):
        json.loads(LONG_NUMBER)
    with pytest.raises(RecursionError):
        json.loads(DEEP)


_B64_SHAPE = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


@FAST
@given(st.text(alphabet="AZaz09+/=é\n -_\\", max_size=24) | st.binary(max_size=40).map(
    lambda b: base64.b64encode(b).decode()))
def test_is_base64_is_exactly_the_padded_alphabet(text: str) -> None:
    """Against a regular expression of whole groups, the last one padded: what every decoder accepts."""
    shape = _B64_SHAPE.fullmatch(text) is not None
    assert is_base64(text) == shape
    if shape:
        base64.b64decode(text, validate=True)

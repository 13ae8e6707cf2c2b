"""The local Voice Live simulator, driven over real sockets by an independent WebSocket client."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.audio import ASSETS, load_ulaw_8k, read_wav
from gateway.simulator import ToolCall
from gateway.simulator.server import (
    RunningSimulator,
    SimulatorSettings,
    parse_tool_call,
    register_cli,
    settings_from_args,
    start_simulator,
)
from gateway.simulator.voice import (
    decode_input,
    output_format,
    read_speech_txt,
    synthetic_speech,
    synthetic_speech_ms,
)
from gateway.vad import EnergyVad

TIMEOUT = 5.0
FRAME = 160  # 20 ms of 8 kHz µ-law
TEXTS = read_speech_txt(ASSETS / "speech.txt")
# A spoken response's events in order, leaving out the deltas and rate_limits.updated
SPOKEN_RESPONSE_EVENTS = [
    "response.created",
    "response.output_item.added",
    "conversation.item.created",
    "response.content_part.added",
    "response.audio.done",
    "response.audio_transcript.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.done",
]


def ulaw_silence(ms: int) -> bytes:
    return b"\xff" * (ms * 8)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Client:
    """A thin JSON layer over a `websockets` connection, with bounded waits."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._markers = 0

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))

    async def recv(self) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT))

    async def until(self, kind: str, **match: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Read events up to the first of type ``kind`` (whose fields equal ``match``); returns it and
        every event read, itself included."""
        seen: list[dict[str, Any]] = []
        while True:
            ev = await self.recv()
            seen.append(ev)
            if ev["type"] == kind and all(ev.get(k) == v for k, v in match.items()):
                return ev, seen

    async def error_for(self, event_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        ev, seen = await self.until("error")
        while ev["error"].get("event_id") != event_id:
            ev, more = await self.until("error")
            seen += more
        return ev, seen

    async def sync(self) -> list[dict[str, Any]]:
        """Everything the server sent before it answered a probe sent now (the server handles client
        events in order, so this is "all it had to say about what was sent before")."""
        self._markers += 1
        marker = f"probe-{self._markers}"
        await self.send({"type": "conversation.item.retrieve", "item_id": "no-such-item", "event_id": marker})
        _, seen = await self.error_for(marker)
        return seen[:-1]

    async def append(self, audio: bytes, frame: int = FRAME) -> None:
        """Send audio as input_audio_buffer.append events, as fast as possible."""
        for i in range(0, len(audio), frame):
            await self.send({"type": "input_audio_buffer.append", "audio": b64(audio[i : i + frame])})

    async def update(self, **session: Any) -> dict[str, Any]:
        await self.send({"type": "session.update", "session": session})
        ev, _ = await self.until("session.updated")
        return ev["session"]


@pytest.fixture
async def make_sim() -> AsyncIterator[Callable[..., Awaitable[RunningSimulator]]]:
    sims: list[RunningSimulator] = []

    async def make(**settings: Any) -> RunningSimulator:
        settings = {"audio_speed": 200.0, "response_delay_ms": 0, **settings}
        sim = await start_simulator(SimulatorSettings(**settings))
        sims.append(sim)
        return sim

    yield make
    for sim in sims:
        await sim.close()


@asynccontextmanager
async def client(
    sim: RunningSimulator,
    query: str = "api-version=2026-07-15&model=gpt-realtime",
    path: str = "/voice-live/realtime",
    headers: dict[str, str] | None = None,
) -> AsyncIterator[Client]:
    url = sim.endpoint.replace("http://", "ws://") + path + ("?" + query if query else "")
    async with connect(url, additional_headers=headers, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        c = Client(ws)
        created = await c.recv()
        assert created["type"] == "session.created"
        yield c


async def g711_session(c: Client, **extra: Any) -> dict[str, Any]:
    return await c.update(input_audio_format="g711_ulaw", output_audio_format="g711_ulaw", **extra)


def expected_bytes(clip: str, rate: int, width: int) -> int:
    wav = read_wav(ASSETS / f"{clip}.wav")
    return round(len(wav.samples) * rate / wav.rate) * width


# --- the speech assets ----------------------------------------------------------------------------


def wav_format(name: str) -> tuple[int, int, int, int]:
    """(format tag, channels, rate, bits) from a WAV file's fmt chunk."""
    data = (ASSETS / name).read_bytes()
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if cid == b"fmt ":
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, pos + 8)
            return tag, channels, rate, bits
        pos += 8 + size + (size & 1)
    raise AssertionError(f"{name}: no fmt chunk")


def test_speech_assets_have_the_formats_and_lengths_the_demo_relies_on() -> None:
    wavs = sorted(p.name for p in ASSETS.glob("*.wav"))
    assert sorted(f"{stem}.wav" for stem in TEXTS) == wavs
    for name in wavs:
        if name.startswith("caller_"):
            assert wav_format(name) == (7, 1, 8000, 8), name  # µ-law, as Twilio sends it
        else:
            assert wav_format(name) == (1, 1, 24000, 16), name  # Voice Live pcm16
    ms = {name: read_wav(ASSETS / name).duration_ms for name in wavs}
    assert 9000 <= ms["bot_reply_2.wav"] <= 12000
    assert all(2000 <= ms[n] <= 5000 for n in wavs if n != "bot_reply_2.wav")
    assert sum((ASSETS / n).stat().st_size for n in wavs) < 2_000_000
    # Trimmed: speech within ~150 ms of both ends.
    for name in wavs:
        samples = read_wav(ASSETS / name).samples.astype(np.float64)
        loud = np.flatnonzero(np.abs(samples) > 1000)
        rate = wav_format(name)[2]
        assert loud[0] < 0.15 * rate and len(samples) - loud[-1] < 0.15 * rate, name


# --- handshake ------------------------------------------------------------------------------


async def test_handshake_rejects_missing_or_wrong_credentials(make_sim) -> None:
    sim = await make_sim(api_key="sim-api-key-1", bearer_token="sim-token-2")
    for headers in (
        None,
        {"api-key": "wrong"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "sim-token-2"},
    ):
        with pytest.raises(InvalidStatus) as info:
            async with client(sim, headers=headers):
                pass
        assert info.value.response.status_code == 401
    assert sim.state.sessions == []

    async with client(sim, headers={"api-key": "sim-api-key-1"}):
        pass
    async with client(sim, headers={"Authorization": "Bearer sim-token-2"}):
        pass
    async with client(sim, query="api-version=2026-07-15&model=m&api-key=sim-api-key-1"):
        pass
    assert [s.auth for s in sim.state.sessions] == ["api-key", "bearer", "api-key"]


async def test_handshake_requires_model_or_agent(make_sim) -> None:
    sim = await make_sim()
    for query in ("api-version=2026-07-15", "api-version=2026-07-15&agent-name=a"):
        with pytest.raises(InvalidStatus) as info:
            async with client(sim, query=query):
                pass
        assert info.value.response.status_code == 400

    query = "api-version=2026-07-15&agent-name=desk&agent-project-name=p&x-ms-client-sdk=any&extra=1"
    async with client(sim, query=query):
        pass
    session = await sim.state.wait_closed(0)
    assert session.query["agent-name"] == "desk" and session.query["extra"] == "1"
    assert session.auth == "none"

    # A path prefix is kept by SDKs that append /voice-live/realtime to the endpoint's path.
    async with client(sim, path="/base/voice-live/realtime"):
        pass
    assert len(sim.state.sessions) == 2


@pytest.mark.parametrize("version", [None, "", "v1", "2024-10-01-preview", "2026-07-15x"])
async def test_handshake_refuses_a_missing_or_unknown_api_version(make_sim, version: str | None) -> None:
    sim = await make_sim()
    query = "model=gpt-realtime" + ("" if version is None else f"&api-version={version}")
    with pytest.raises(InvalidStatus) as info:
        async with client(sim, query=query):
            pass
    response = info.value.response
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("application/json")
    error = json.loads(response.body)["error"]
    assert error["code"] == ("missing_api_version" if not version else "unsupported_api_version")
    assert sim.state.sessions == []


async def test_handshake_accepts_every_known_api_version(make_sim) -> None:
    sim = await make_sim()
    versions = [
        "2025-05-01-preview",
        "2025-10-01",
        "2026-01-01-preview",
        "2026-04-10",
        "2026-06-01-preview",
        "2026-07-15",
        "2026-07-31-preview",
    ]
    padding = {}
    for version in versions:
        async with client(sim, query=f"api-version={version}&model=gpt-realtime") as c:
            s = await c.update(turn_detection={"type": "server_vad"})
            padding[version] = s["turn_detection"]["prefix_padding_ms"]
    # server_vad's default prefix padding rose from 300 to 400 ms in 2026-04-10.
    assert padding == {v: 300 if v < "2026-04-10" else 400 for v in versions}


# --- session ------------------------------------------------------------------------------


async def test_session_created_then_update_to_g711(make_sim) -> None:
    sim = await make_sim()
    url = sim.ws_url + "?api-version=2026-07-15&model=gpt-realtime"
    async with connect(url, open_timeout=TIMEOUT) as ws:
        c = Client(ws)
        created = await c.recv()
        s = created["session"]
        assert created["type"] == "session.created"
        assert s["id"].startswith("sess_") and s["object"] == "realtime.session"
        assert s["model"] == "gpt-realtime"
        assert s["input_audio_format"] == "pcm16" and s["input_audio_sampling_rate"] == 24000
        assert s["turn_detection"]["type"] == "server_vad"
        assert s["modalities"] == ["text", "audio"]
        assert isinstance(s["expires_at"], int)

        # `type` last, in a BINARY frame, with server-owned fields echoed back.
        update = {
            "session": {
                "input_audio_format": "g711_ulaw",
                "output_audio_format": "g711_ulaw",
                "instructions": "Be brief.",
                "id": "sess_other",
                "object": "realtime.session",
            },
            "type": "session.update",
        }
        await ws.send(json.dumps(update).encode())
        updated, _ = await c.until("session.updated")
        u = updated["session"]
        assert u["id"] == s["id"]
        assert u["input_audio_format"] == "g711_ulaw" and u["output_audio_format"] == "g711_ulaw"
        assert u["input_audio_sampling_rate"] == 8000
        assert u["instructions"] == "Be brief."
        assert u["turn_detection"] == s["turn_detection"]

        # The whole session, as the server describes it, can be sent back as is.
        echoed = await c.update(**u)
        assert echoed == u
    session = await sim.state.wait_closed(0)
    ids = [ev["event_id"] for ev in session.sent]
    assert len(ids) == len(set(ids)) == 3
    assert [e["type"] for e in session.received] == ["session.update", "session.update"]


async def test_format_change_after_audio_is_rejected(make_sim) -> None:
    sim = await make_sim()
    async with client(sim) as c:
        await g711_session(c)
        await c.append(ulaw_silence(100))
        await c.send(
            {
                "type": "session.update",
                "event_id": "fmt-1",
                "session": {"input_audio_format": "pcm16", "input_audio_sampling_rate": 24000},
            }
        )
        err, _ = await c.error_for("fmt-1")
        assert err["error"]["type"] == "invalid_request_error"
        assert "input_audio_format" in err["error"]["message"]
        # Unchanged, and other fields can still be updated.
        s = await c.update(instructions="still here")
        assert s["input_audio_format"] == "g711_ulaw" and s["input_audio_sampling_rate"] == 8000
        assert s["instructions"] == "still here"


def eou(**fields: Any) -> dict[str, Any]:
    return {"type": "server_vad", "end_of_utterance_detection": fields}


def transcription(**fields: Any) -> dict[str, Any]:
    return {"input_audio_transcription": fields}


@pytest.mark.parametrize(
    ("update", "code", "param"),
    [
        ({"foo": 1}, "unknown_parameter", "session.foo"),
        ({"input_audio_transcription_model": "x"}, "unknown_parameter", "session.input_audio_transcription_model"),
        # turn_detection keys, per type
        (
            {"turn_detection": {"type": "server_vad", "speech_duration_ms": 200}},
            "unknown_parameter",
            "session.turn_detection.speech_duration_ms",
        ),
        (
            {"turn_detection": {"type": "server_vad", "remove_filler_words": True}},
            "unknown_parameter",
            "session.turn_detection.remove_filler_words",
        ),
        (
            {"turn_detection": {"type": "server_vad", "appended_text_after_truncation": " [cut]"}},
            "unknown_parameter",
            "session.turn_detection.appended_text_after_truncation",
        ),
        (
            {"turn_detection": {"type": "azure_semantic_vad_en", "languages": ["en"]}},
            "unknown_parameter",
            "session.turn_detection.languages",
        ),
        (
            {"turn_detection": {"type": "azure_semantic_vad", "eagerness": "low"}},
            "unknown_parameter",
            "session.turn_detection.eagerness",
        ),
        (
            {"turn_detection": {"type": "azure_semantic_vad", "speech_duration_assistant_speaking_ms": 800}},
            "unknown_parameter",
            "session.turn_detection.speech_duration_assistant_speaking_ms",
        ),
        (
            {"turn_detection": {"type": "semantic_vad", "threshold": 0.5}},
            "unknown_parameter",
            "session.turn_detection.threshold",
        ),
        (
            {"turn_detection": {"type": "semantic_vad", "end_of_utterance_detection": None}},
            "unknown_parameter",
            "session.turn_detection.end_of_utterance_detection",
        ),
        ({"turn_detection": {"type": "bogus_vad"}}, "invalid_value", "session.turn_detection.type"),
        ({"turn_detection": "server_vad"}, "invalid_type", "session.turn_detection"),
        # turn_detection values
        (
            {"turn_detection": {"type": "server_vad", "threshold": 1.5}},
            "invalid_value",
            "session.turn_detection.threshold",
        ),
        (
            {"turn_detection": {"type": "server_vad", "silence_duration_ms": -1}},
            "invalid_value",
            "session.turn_detection.silence_duration_ms",
        ),
        (
            {"turn_detection": {"type": "server_vad", "create_response": "yes"}},
            "invalid_type",
            "session.turn_detection.create_response",
        ),
        (
            {"turn_detection": {"type": "semantic_vad", "eagerness": "eager"}},
            "invalid_value",
            "session.turn_detection.eagerness",
        ),
        (
            {"turn_detection": {"type": "azure_semantic_vad", "languages": "en"}},
            "invalid_type",
            "session.turn_detection.languages",
        ),
        # end of utterance detection
        (
            {"turn_detection": eou(model="semantic_detection_v2")},
            "invalid_value",
            "session.turn_detection.end_of_utterance_detection.model",
        ),
        (
            {"turn_detection": eou(threshold_level="low")},
            "missing_required_parameter",
            "session.turn_detection.end_of_utterance_detection.model",
        ),
        (
            {"turn_detection": eou(model="semantic_detection_v1", threshold_level="max")},
            "invalid_value",
            "session.turn_detection.end_of_utterance_detection.threshold_level",
        ),
        (
            {"turn_detection": eou(model="semantic_detection_v1", timeout_ms=-5)},
            "invalid_value",
            "session.turn_detection.end_of_utterance_detection.timeout_ms",
        ),
        (
            {"turn_detection": eou(model="semantic_detection_v1", timeout_ms=1.5)},
            "invalid_type",
            "session.turn_detection.end_of_utterance_detection.timeout_ms",
        ),
        (
            {"turn_detection": eou(model="semantic_detection_v1", mode="fast")},
            "unknown_parameter",
            "session.turn_detection.end_of_utterance_detection.mode",
        ),
        # noise reduction
        (
            {"input_audio_noise_reduction": {"type": "studio"}},
            "invalid_value",
            "session.input_audio_noise_reduction.type",
        ),
        (
            {"input_audio_noise_reduction": {}},
            "missing_required_parameter",
            "session.input_audio_noise_reduction.type",
        ),
        # transcription
        (transcription(model="whisper-2"), "invalid_value", "session.input_audio_transcription.model"),
        (transcription(language="en-US"), "missing_required_parameter", "session.input_audio_transcription.model"),
        (
            transcription(model="whisper-1", phrase_list=["Contoso"]),
            "invalid_value",
            "session.input_audio_transcription.phrase_list",
        ),
        (
            transcription(model="mai-transcribe-1", phrase_list=["Contoso"]),
            "invalid_value",
            "session.input_audio_transcription.phrase_list",
        ),
        (
            transcription(model="azure-speech", phrase_list="Contoso"),
            "invalid_type",
            "session.input_audio_transcription.phrase_list",
        ),
        (
            transcription(model="mai-transcribe", custom_speech={"en-US": "id"}),
            "invalid_value",
            "session.input_audio_transcription.custom_speech",
        ),
        (
            transcription(model="azure-speech", prompt="orders"),
            "invalid_value",
            "session.input_audio_transcription.prompt",
        ),
        (
            transcription(model="gpt-4o-transcribe-diarize", prompt="orders"),
            "invalid_value",
            "session.input_audio_transcription.prompt",
        ),
        (
            transcription(model="azure-speech", language=["en-US"]),
            "invalid_type",
            "session.input_audio_transcription.language",
        ),
        (
            transcription(model="azure-speech", enabled=True),
            "unknown_parameter",
            "session.input_audio_transcription.enabled",
        ),
        # metadata
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "invalid_value", "session.metadata"),
        ({"metadata": {"k" * 65: "v"}}, "invalid_value", "session.metadata"),
        ({"metadata": {"call": "v" * 513}}, "invalid_value", "session.metadata.call"),
        ({"metadata": {"call": 42}}, "invalid_type", "session.metadata.call"),
        ({"metadata": ["call"]}, "invalid_type", "session.metadata"),
        # temperature and the token limit
        ({"temperature": 0.5}, "invalid_value", "session.temperature"),
        ({"temperature": 1.3}, "invalid_value", "session.temperature"),
        ({"temperature": "0.8"}, "invalid_type", "session.temperature"),
        ({"max_response_output_tokens": 0}, "invalid_value", "session.max_response_output_tokens"),
        ({"max_response_output_tokens": 4097}, "invalid_value", "session.max_response_output_tokens"),
        ({"max_response_output_tokens": "infinite"}, "invalid_type", "session.max_response_output_tokens"),
        ({"max_response_output_tokens": True}, "invalid_type", "session.max_response_output_tokens"),
        # audio formats (checked before)
        ({"input_audio_format": "opus"}, "invalid_value", "session.input_audio_format"),
        ({"input_audio_format": "g711_ulaw", "input_audio_sampling_rate": 16000}, "invalid_value",
         "session.input_audio_sampling_rate"),
    ],
)
async def test_session_update_with_an_invalid_field_changes_nothing(
    make_sim, update: dict[str, Any], code: str, param: str
) -> None:
    sim = await make_sim()
    async with client(sim) as c:
        session = await sim.state.wait_for_session(0)
        before = json.loads(json.dumps(session.session))
        # A valid change in the same update must not be applied either.
        await c.send({"type": "session.update", "session": {"instructions": "new", **update}, "event_id": "up-1"})
        err, seen = await c.error_for("up-1")
        assert len(seen) == 1, seen
        assert err["error"]["type"] == "invalid_request_error"
        assert (err["error"]["code"], err["error"]["param"]) == (code, param), err["error"]["message"]
        assert await c.sync() == []  # and no session.updated after the error
        assert session.session == before


async def test_unknown_session_field_error_has_the_documented_shape(make_sim) -> None:
    sim = await make_sim()
    async with client(sim) as c:
        await c.send({"type": "session.update", "session": {"foo": 1}, "event_id": "up-foo"})
        err, _ = await c.error_for("up-foo")
    assert set(err) == {"type", "event_id", "error"}
    assert err["error"] == {
        "type": "invalid_request_error",
        "code": "unknown_parameter",
        "message": "Unknown parameter: 'session.foo'.",
        "param": "session.foo",
        "event_id": "up-foo",
    }


@pytest.mark.parametrize(
    ("model", "update", "param"),
    [
        ("gpt-4o", {"turn_detection": {"type": "semantic_vad"}}, "session.turn_detection.type"),
        ("phi4-mm-realtime", {"input_audio_noise_reduction": {"type": "near_field"}},
         "session.input_audio_noise_reduction.type"),
        ("gpt-4.1", {"input_audio_noise_reduction": {"type": "far_field"}}, "session.input_audio_noise_reduction.type"),
    ],
)
async def test_realtime_model_only_settings_are_refused_with_other_models(
    make_sim, model: str, update: dict[str, Any], param: str
) -> None:
    sim = await make_sim()
    async with client(sim, query=f"api-version=2026-07-15&model={model}") as c:
        await c.send({"type": "session.update", "session": update, "event_id": "up-model"})
        err, seen = await c.error_for("up-model")
        assert len(seen) == 1 and (err["error"]["code"], err["error"]["param"]) == ("invalid_value", param)
    for realtime_model in ("gpt-realtime", "gpt-realtime-mini"):
        async with client(sim, query=f"api-version=2026-07-15&model={realtime_model}") as c:
            s = await c.update(**update)
            assert all(s[key] == {**s[key], **value} for key, value in update.items())


async def test_session_update_accepts_every_documented_setting(make_sim) -> None:
    sim = await make_sim()
    full_azure_vad = {
        "type": "azure_semantic_vad",
        "threshold": 0.3,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 600,
        "speech_duration_ms": 100,
        "remove_filler_words": True,
        "languages": ["en", "es"],
        "appended_text_after_truncation": " [The user interrupted me.]",
        "end_of_utterance_detection": {
            "model": "semantic_detection_v1_multilingual",
            "threshold_level": "default",
            "timeout_ms": 1000,
        },
        "create_response": True,
        "interrupt_response": True,
        "auto_truncate": True,
    }
    full_server_vad = {
        "type": "server_vad",
        "threshold": 0.6,
        "prefix_padding_ms": 200,
        "silence_duration_ms": 400,
        "end_of_utterance_detection": {"model": "semantic_detection_v1_en"},
        "create_response": False,
        "interrupt_response": False,
        "auto_truncate": False,
    }
    full_semantic_vad = {
        "type": "semantic_vad",
        "eagerness": "high",
        "create_response": True,
        "interrupt_response": True,
        "auto_truncate": False,
    }
    azure_vad_en = {k: v for k, v in full_azure_vad.items() if k != "languages"}
    every_other_field = {
        "model": "gpt-realtime",
        "instructions": "Be brief.",
        "voice": {"type": "azure-standard", "name": "en-US-AvaNeural"},
        "modalities": ["text", "audio"],
        "tools": [],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning_effort": "low",
        "include": ["item.input_audio_transcription.logprobs"],
        "output_audio_timestamp_types": ["word"],
        "input_audio_echo_cancellation": {"type": "server_echo_cancellation"},
        "interim_response": {"type": "static_interim_response", "texts": ["One moment."], "triggers": ["tool"]},
        "animation": {"model_name": "default", "outputs": ["viseme_id"]},
    }
    updates: list[dict[str, Any]] = [
        {"turn_detection": full_azure_vad},
        {"turn_detection": {**full_azure_vad, "type": "azure_semantic_vad_multilingual"}},
        {"turn_detection": {**azure_vad_en, "type": "azure_semantic_vad_en"}},
        {"turn_detection": full_server_vad},
        {"turn_detection": full_semantic_vad},
        {"turn_detection": None},
        {"input_audio_noise_reduction": {"type": "azure_deep_noise_suppression"}},
        {"input_audio_noise_reduction": {"type": "near_field"}},
        {"input_audio_noise_reduction": None},
        transcription(model="azure-speech", language="en-US,es-ES", phrase_list=["Contoso"], custom_speech={"a": "b"}),
        transcription(model="mai-transcribe-2", phrase_list=["Contoso"]),
        transcription(model="whisper-1", prompt="order numbers"),
        transcription(model="gpt-4o-mini-transcribe", prompt="order numbers", language="en"),
        {"input_audio_transcription": None},
        {"metadata": {**{f"k{i}": "v" for i in range(15)}, "k" * 64: "v" * 512}},
        {"temperature": 0.6},
        {"temperature": 1.2},
        {"max_response_output_tokens": 1},
        {"max_response_output_tokens": 4096},
        {"max_response_output_tokens": "inf"},
        {"avatar": {"character": "lisa", "style": "casual-sitting"}},
        every_other_field,
    ]
    async with client(sim) as c:
        for update in updates:
            await c.send({"type": "session.update", "session": update})
            reply = await c.recv()
            assert reply["type"] == "session.updated", (update, reply)
            for key, value in update.items():
                got = reply["session"][key]
                if key == "turn_detection" and value is not None:
                    assert got == {**got, **value}  # completed with the type's defaults
                else:
                    assert got == value, key
        assert reply["session"]["turn_detection"] is None  # the last turn_detection update: manual turns


# --- a caller turn and the full response ------------------------------------------------------


async def test_caller_turn_gets_a_full_g711_response(make_sim) -> None:
    moments: list[tuple[str, dict[str, Any]]] = []
    sim = await make_sim(observer=lambda name, fields: moments.append((name, fields)))
    caller = load_ulaw_8k(ASSETS / "caller_hours.wav")
    async with client(sim) as c:
        await g711_session(c, input_audio_transcription={"model": "azure-speech"})
        await c.append(ulaw_silence(1000) + caller + ulaw_silence(1000))

        started, _ = await c.until("input_audio_buffer.speech_started")
        # Speech begins ~100 ms into the clip (after 1 s of silence); default prefix padding is 400 ms.
        assert 650 <= started["audio_start_ms"] <= 760
        stopped, _ = await c.until("input_audio_buffer.speech_stopped")
        assert stopped["item_id"] == started["item_id"]
        assert 1000 + 2600 <= stopped["audio_end_ms"] <= 1000 + 2700
        committed, _ = await c.until("input_audio_buffer.committed")
        assert committed["item_id"] == started["item_id"]
        created, _ = await c.until("conversation.item.created")
        assert created["item"]["role"] == "user" and created["item"]["content"][0]["audio"] is None
        transcript, _ = await c.until("conversation.item.input_audio_transcription.completed")
        assert transcript["transcript"].startswith("(simulated transcript: 2.")

        done, events = await c.until("response.done")
        order = [
            ev["type"]
            for ev in events
            if ev["type"]
            not in ("response.audio.delta", "response.audio_transcript.delta", "rate_limits.updated")
        ]
        assert order == SPOKEN_RESPONSE_EVENTS
        resp_id = events[0]["response"]["id"]
        item_id = next(ev["item"]["id"] for ev in events if ev["type"] == "response.output_item.added")
        deltas = [ev for ev in events if ev["type"] == "response.audio.delta"]
        for ev in deltas:
            assert (ev["response_id"], ev["item_id"], ev["output_index"], ev["content_index"]) == (
                resp_id,
                item_id,
                0,
                0,
            )
        audio = b"".join(base64.b64decode(ev["delta"]) for ev in deltas)
        assert abs(len(audio) - expected_bytes("bot_reply_1", 8000, 1)) <= FRAME
        assert audio == load_ulaw_8k(ASSETS / "bot_reply_1.wav")
        words = "".join(ev["delta"] for ev in events if ev["type"] == "response.audio_transcript.delta")
        assert words.strip() == TEXTS["bot_reply_1"]
        assert done["response"]["status"] == "completed"
        assert done["response"]["output"][0]["content"][0]["transcript"] == TEXTS["bot_reply_1"]
        assert done["response"]["usage"]["output_tokens"] > 0

    session = await sim.state.wait_closed(0)
    assert session.items_audio_bytes[item_id] == len(audio)
    sent_audio = ulaw_silence(1000) + caller + ulaw_silence(1000)
    assert session.appended == [b64(sent_audio[i : i + FRAME]) for i in range(0, len(sent_audio), FRAME)]
    names = [name for name, _ in moments]
    assert names[:5] == [
        "session.created",
        "speech_started",
        "speech_stopped",
        "response.created",
        "response.done",
    ]
    assert names[-1] == "closed"
    assert moments[4][1]["status"] == "completed" and moments[4][1]["session"] == session.id


@pytest.mark.parametrize(
    ("fmt", "rate", "width"),
    [
        ("pcm16", 24000, 2),
        ("pcm16_8000hz", 8000, 2),
        ("pcm16_16000hz", 16000, 2),
        ("g711_ulaw", 8000, 1),
        ("g711_alaw", 8000, 1),
    ],
)
async def test_greeting_in_every_output_format(make_sim, fmt: str, rate: int, width: int) -> None:
    sim = await make_sim()
    async with client(sim) as c:
        await c.update(output_audio_format=fmt, turn_detection=None)
        await c.send({"type": "response.create"})
        done, events = await c.until("response.done")
        audio = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.audio.delta")
        assert abs(len(audio) - expected_bytes("bot_greeting", rate, width)) <= 20 * rate // 1000 * width
        assert done["response"]["output_audio_format"] == fmt
        assert done["response"]["output"][0]["content"][0]["transcript"] == TEXTS["bot_greeting"]
        # Real speech, not silence, whatever the encoding.
        samples = decode_input(fmt, audio) if width == 1 else np.frombuffer(audio, "<i2")
        assert np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 1000
        if fmt == "g711_ulaw":
            assert audio == load_ulaw_8k(ASSETS / "bot_greeting.wav")


async def test_manual_turns_without_vad_cycle_through_the_replies(make_sim) -> None:
    sim = await make_sim()
    caller = load_ulaw_8k(ASSETS / "caller_delivery.wav")
    async with client(sim) as c:
        await g711_session(c, turn_detection=None)
        await c.send({"type": "input_audio_buffer.commit", "event_id": "empty"})
        err, _ = await c.error_for("empty")
        assert err["error"]["code"] == "input_audio_buffer_commit_empty"

        transcripts = []
        for _ in range(4):
            await c.append(caller + ulaw_silence(600))
            assert await c.sync() == []  # no VAD: audio alone does nothing
            await c.send({"type": "input_audio_buffer.commit"})
            await c.until("input_audio_buffer.committed")
            await c.send({"type": "response.create"})
            done, _ = await c.until("response.done")
            transcripts.append(done["response"]["output"][0]["content"][0]["transcript"])
        assert transcripts == [
            TEXTS["bot_reply_1"],
            TEXTS["bot_reply_2"],
            TEXTS["bot_reply_3"],
            TEXTS["bot_reply_1"],
        ]


async def test_manual_turn_commit_response_and_cancel(make_sim) -> None:
    sim = await make_sim(audio_speed=1.0)  # real time: the reply is still playing when the cancel arrives
    caller = load_ulaw_8k(ASSETS / "caller_hours.wav")
    async with client(sim) as c:
        await g711_session(c, turn_detection=None, input_audio_transcription={"model": "azure-speech"})
        await c.append(caller[:480])  # 60 ms of speech
        await c.send({"type": "input_audio_buffer.commit", "event_id": "short"})
        err, seen = await c.error_for("short")
        assert len(seen) == 1
        assert err["error"]["code"] == "input_audio_buffer_commit_empty"
        assert "60ms" in err["error"]["message"]

        # Audio alone does nothing: no VAD events, no commit, no response.
        await c.append(caller[480:] + ulaw_silence(1500))
        assert await c.sync() == []

        await c.send({"type": "input_audio_buffer.commit"})
        committed = await c.sync()
        assert [e["type"] for e in committed] == [
            "input_audio_buffer.committed",
            "conversation.item.created",
            "conversation.item.input_audio_transcription.completed",
        ]
        item_id = committed[0]["item_id"]
        assert committed[1]["item"]["id"] == item_id and committed[1]["item"]["role"] == "user"
        assert committed[2]["item_id"] == item_id and committed[2]["transcript"]
        assert await c.sync() == []  # a commit does not start a response

        await c.send({"type": "response.create"})
        first, events = await c.until("response.audio.delta")
        assert events[0]["type"] == "response.created"
        reply = load_ulaw_8k(ASSETS / "bot_reply_1.wav")
        assert reply.startswith(base64.b64decode(first["delta"]))  # the spoken reply to the first turn
        await c.send({"type": "response.cancel"})
        done, events = await c.until("response.done")
        assert done["response"]["id"] == first["response_id"]
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
        assert done["response"]["output"][0]["status"] == "incomplete"
        assert TEXTS["bot_reply_1"].startswith(done["response"]["output"][0]["content"][0]["transcript"])
        sent = b"".join(base64.b64decode(e["delta"]) for e in [first, *events] if e["type"] == "response.audio.delta")
        assert len(sent) < len(reply)


# --- pre-generated assistant messages, agent sessions -------------------------------------------------


def pre_generated(text: Any, **message: Any) -> dict[str, Any]:
    """A response.create whose pre_generated_assistant_message says ``text``."""
    content = [{"type": "text", "text": text}]
    return {
        "type": "response.create",
        "response": {
            "pre_generated_assistant_message": {"type": "message", "role": "assistant", "content": content, **message}
        },
    }


def window_dbfs(samples: np.ndarray, rate: int) -> np.ndarray:
    """Level of each 10 ms window, in dBFS."""
    window = rate // 100
    frames = samples[: samples.size // window * window].astype(np.float64).reshape(-1, window)
    return 20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) / 32768 + 1e-12)


def test_synthetic_speech_is_audible_and_grows_with_the_text() -> None:
    fmt = output_format("pcm16")
    assert fmt is not None
    short, text = "Hi.", "Your order 42 shipped on Monday and arrives tomorrow before noon."
    assert synthetic_speech_ms(short) == 400 + 200
    assert synthetic_speech_ms(text) == 65 * len(text) + 200
    audio = synthetic_speech(text, fmt)
    samples = np.frombuffer(audio, "<i2")
    assert samples.size == synthetic_speech_ms(text) * 24
    levels = window_dbfs(samples, 24000)
    assert np.all(samples[:2400] == 0) and np.all(samples[-2400:] == 0)  # 100 ms of silence each end
    voiced = levels[12:-12]  # past the pads and the 10 ms fades
    assert voiced.min() > -30 and voiced.max() < -6
    assert voiced.max() - voiced.min() > 4  # a syllable envelope, not a steady tone
    vad = EnergyVad(24000, threshold_dbfs=-40.0, min_speech_ms=100, silence_ms=300)
    events = vad.feed(np.concatenate([samples, np.zeros(24000, np.int16)]))
    assert [e.kind for e in events] == ["start", "stop"]
    assert len(synthetic_speech(text + " And more.", fmt)) > len(audio)


@pytest.mark.parametrize(("fmt", "rate", "width"), [("g711_ulaw", 8000, 1), ("pcm16", 24000, 2)])
async def test_pre_generated_message_is_said_verbatim(make_sim, fmt: str, rate: int, width: int) -> None:
    moments: list[tuple[str, dict[str, Any]]] = []
    sim = await make_sim(observer=lambda name, fields: moments.append((name, fields)))
    text = " Welcome to Contoso Pizza.  Your order 42 is on its way! "  # every space kept as given
    async with client(sim) as c:
        await c.update(output_audio_format=fmt, turn_detection=None)
        await c.send(pre_generated(text))
        done, events = await c.until("response.done")
        order = [
            e["type"]
            for e in events
            if e["type"] not in ("response.audio.delta", "response.audio_transcript.delta", "rate_limits.updated")
        ]
        assert order == SPOKEN_RESPONSE_EVENTS
        deltas = "".join(e["delta"] for e in events if e["type"] == "response.audio_transcript.delta")
        transcript_done = next(e for e in events if e["type"] == "response.audio_transcript.done")
        item = done["response"]["output"][0]
        assert deltas == transcript_done["transcript"] == item["content"][0]["transcript"] == text
        assert done["response"]["status"] == "completed" and item["role"] == "assistant"

        audio = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.audio.delta")
        assert len(audio) == synthetic_speech_ms(text) * rate // 1000 * width
        samples = decode_input(fmt, audio) if width == 1 else np.frombuffer(audio, "<i2")
        levels = window_dbfs(samples, rate)
        assert levels[12:-12].min() > -30  # clearly audible to an energy VAD
        assert levels[:9].max() < -60 and levels[-9:].max() < -60  # ~100 ms of silence at each end

        # It is in the conversation history like any assistant message.
        await c.send({"type": "conversation.item.retrieve", "item_id": item["id"]})
        retrieved, _ = await c.until("conversation.item.retrieved")
        assert retrieved["item"]["content"][0]["transcript"] == text
    session = await sim.state.wait_closed(0)
    resp_id = done["response"]["id"]
    assert session.spoken == [{"response_id": resp_id, "text": text, "clip": None, "pre_generated": True}]
    created = [f for name, f in moments if name == "response.created"]
    assert created == [{"session": session.id, "response_id": resp_id, "clip": None, "text": text}]


async def test_pre_generated_message_with_a_clip_text_plays_the_clip(make_sim) -> None:
    sim = await make_sim()
    async with client(sim) as c:
        await g711_session(c, turn_detection=None)
        await c.send(pre_generated(TEXTS["bot_reply_2"]))
        done, events = await c.until("response.done")
        # Then a model response: the greeting, as if nothing had been said before.
        await c.send({"type": "response.create"})
        greeting, _ = await c.until("response.done")
    audio = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.audio.delta")
    assert audio == load_ulaw_8k(ASSETS / "bot_reply_2.wav")
    assert done["response"]["output"][0]["content"][0]["transcript"] == TEXTS["bot_reply_2"]
    assert greeting["response"]["output"][0]["content"][0]["transcript"] == TEXTS["bot_greeting"]
    session = await sim.state.wait_closed(0)
    assert [(s["clip"], s["pre_generated"]) for s in session.spoken] == [("bot_reply_2", True), ("bot_greeting", False)]


async def test_pre_generated_message_is_neither_a_scripted_call_nor_a_turns_reply(make_sim) -> None:
    sim = await make_sim(tool_calls={1: ToolCall("lookup_order", {"order": "42"})}, function_call_ms=0)
    async with client(sim) as c:
        await g711_session(c, turn_detection=None, tools=[LOOKUP_ORDER])
        await c.append(load_ulaw_8k(ASSETS / "caller_hours.wav"))
        await c.send({"type": "input_audio_buffer.commit"})
        await c.send(pre_generated("One moment, let me check."))
        said, events = await c.until("response.done")
        assert not [e for e in events if e["type"] in FUNCTION_CALL_EVENTS]
        assert said["response"]["output"][0]["content"][0]["transcript"] == "One moment, let me check."
        # The turn's own response is still the scripted call...
        await c.send({"type": "response.create"})
        call, _ = await c.until("response.done")
        assert call["response"]["output"][0]["type"] == "function_call"
        # ... and its spoken answer is still the turn's reply clip.
        output = {"type": "function_call_output", "call_id": call["response"]["output"][0]["call_id"], "output": "{}"}
        await c.send({"type": "conversation.item.create", "item": output})
        await c.send({"type": "response.create"})
        answer, _ = await c.until("response.done")
        assert answer["response"]["output"][0]["content"][0]["transcript"] == TEXTS["bot_reply_1"]
    session = await sim.state.wait_closed(0)
    assert [f["name"] for f in session.function_calls] == ["lookup_order"]


async def test_pre_generated_message_is_cut_by_barge_in(make_sim) -> None:
    sim = await make_sim(audio_speed=1.0)
    text = "Thanks for calling Contoso. " * 8  # about 14 s of speech at real time
    async with client(sim) as c:
        await g711_session(c)
        await c.send(pre_generated(text))
        first, _ = await c.until("response.audio.delta")
        await caller_turn(c, "caller_interrupt.wav")
        done, _ = await c.until("response.done")
    assert done["response"]["id"] == first["response_id"]
    assert done["response"]["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    said = done["response"]["output"][0]["content"][0]["transcript"]
    assert text.startswith(said) and len(said) < len(text) / 2


def assistant_message(content: Any, **fields: Any) -> dict[str, Any]:
    return {"type": "message", "role": "assistant", "content": content, **fields}


TEXT_HI = {"type": "text", "text": "Hi"}


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ("Hello", ""),
        (assistant_message([TEXT_HI], type="item"), ".type"),
        (assistant_message([TEXT_HI], role="user"), ".role"),
        (assistant_message([]), ".content"),
        (assistant_message([TEXT_HI, TEXT_HI]), ".content"),
        (assistant_message("Hi"), ".content"),
        (assistant_message([{"type": "audio", "transcript": "Hi"}]), ".content[0].type"),
        (assistant_message([{"type": "text", "text": "  "}]), ".content[0].text"),
        (assistant_message([{"type": "text", "text": 42}]), ".content[0].text"),
        (assistant_message([{"type": "text"}]), ".content[0].text"),
    ],
)
async def test_a_bad_pre_generated_message_gets_an_error_and_no_response(
    make_sim, message: Any, param: str
) -> None:
    sim = await make_sim()
    async with client(sim) as c:
        await c.update(turn_detection=None)
        event = {"type": "response.create", "response": {"pre_generated_assistant_message": message}}
        await c.send({**event, "event_id": "pre-1"})
        err, seen = await c.error_for("pre-1")
        assert len(seen) == 1, seen
        assert err["error"]["type"] == "invalid_request_error"
        assert err["error"]["param"] == "response.pre_generated_assistant_message" + param
        assert await c.sync() == []  # no response.created after it either
    session = await sim.state.wait_closed(0)
    assert session.spoken == []


AGENT = "api-version=2026-07-15&agent-name=desk&agent-project-name=proj"


async def test_agent_sessions_take_no_instructions(make_sim) -> None:
    sim = await make_sim()
    async with client(sim, query=AGENT) as c:
        # The session as the server describes it can be sent back as is.
        session = await sim.state.wait_for_session(0)
        echoed = await c.update(**json.loads(json.dumps(session.session)))
        assert echoed["agent"]["name"] == "desk" and "instructions" not in echoed

        await c.send({"type": "session.update", "session": {"instructions": "Be brief."}, "event_id": "up-1"})
        err, seen = await c.error_for("up-1")
        assert len(seen) == 1
        assert err["error"]["param"] == "session.instructions"
        assert "custom agent" in err["error"]["message"]

        await c.update(turn_detection=None)
        await c.send({"type": "response.create", "response": {"instructions": "Say hi."}, "event_id": "rc-1"})
        err, seen = await c.error_for("rc-1")
        assert len(seen) == 1 and err["error"]["param"] == "response.instructions"
        assert await c.sync() == []  # no response started

        await c.send({"type": "response.create", "response": {"metadata": {"turn": "1"}}})
        done, _ = await c.until("response.done")
        assert done["response"]["status"] == "completed"
    # The same requests are fine on a model session.
    async with client(sim) as c:
        await c.update(instructions="Be brief.", turn_detection=None)
        await c.send({"type": "response.create", "response": {"instructions": "Say hi."}})
        done, _ = await c.until("response.done")
        assert done["response"]["status"] == "completed"


# --- barge-in, cancel, truncate --------------------------------------------------------------


async def test_barge_in_cancels_the_response_and_auto_truncates(make_sim) -> None:
    sim = await make_sim(audio_speed=1.0)
    async with client(sim) as c:
        td = {"type": "server_vad", "auto_truncate": True}
        await g711_session(c, turn_detection=td)
        await c.send({"type": "response.create"})
        first, _ = await c.until("response.audio.delta")
        item_id = first["item_id"]

        await c.append(load_ulaw_8k(ASSETS / "caller_interrupt.wav") + ulaw_silence(800))
        _, before = await c.until("input_audio_buffer.speech_started")
        done, events = await c.until("response.done")
        assert not [e for e in before if e["type"] == "response.done"]
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
        assert done["response"]["output"][0]["status"] == "incomplete"
        item_done = [e for e in events if e["type"] == "response.output_item.done"]
        assert item_done and item_done[0]["item"]["status"] == "incomplete"
        assert [e["type"] for e in events if e["type"].endswith(".done")][:3] == [
            "response.audio.done",
            "response.audio_transcript.done",
            "response.content_part.done",
        ]

        truncated, _ = await c.until("conversation.item.truncated")
        session = sim.state.sessions[0]
        sent_ms = session.items_audio_bytes[item_id] // 8
        assert truncated["item_id"] == item_id and 0 <= truncated["audio_end_ms"] <= sent_ms
        # Streaming at real time, only a fraction of the 3.6 s greeting went out before the cancel.
        assert sent_ms < 2000
        assert session.truncations == [
            {
                "item_id": item_id,
                "audio_end_ms": truncated["audio_end_ms"],
                "item_audio_ms": sent_ms,
                "ok": True,
            }
        ]
        # The caller's turn then goes on as usual.
        await c.until("input_audio_buffer.speech_stopped")
        await c.until("input_audio_buffer.committed")


async def test_response_cancel(make_sim) -> None:
    sim = await make_sim(audio_speed=1.0)
    async with client(sim) as c:
        await g711_session(c, turn_detection=None)
        await c.send({"type": "response.cancel", "event_id": "cancel-1"})
        err, _ = await c.error_for("cancel-1")
        assert err["error"] == {
            "type": "invalid_request_error",
            "code": "response_cancel_not_active",
            "message": "Cancellation failed: no active response found",
            "param": None,
            "event_id": "cancel-1",
        }

        await c.send({"type": "response.create"})
        await c.until("response.audio.delta")
        await c.send({"type": "response.cancel"})
        done, _ = await c.until("response.done")
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"]["reason"] == "client_cancelled"
        assert TEXTS["bot_greeting"].startswith(done["response"]["output"][0]["content"][0]["transcript"])

        await c.send({"type": "response.cancel", "event_id": "cancel-2"})
        err, _ = await c.error_for("cancel-2")
        assert err["error"]["code"] == "response_cancel_not_active"


async def test_truncate_within_and_past_the_audio(make_sim) -> None:
    moments: list[str] = []
    sim = await make_sim(observer=lambda name, fields: moments.append(name))
    async with client(sim) as c:
        await g711_session(c, turn_detection=None)
        await c.send({"type": "response.create"})
        done, _ = await c.until("response.done")
        item_id = done["response"]["output"][0]["id"]
        full_ms = expected_bytes("bot_greeting", 8000, 1) // 8

        await c.send(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": 1000,
            }
        )
        truncated, _ = await c.until("conversation.item.truncated")
        assert truncated == {**truncated, "item_id": item_id, "content_index": 0, "audio_end_ms": 1000}
        await c.send({"type": "conversation.item.retrieve", "item_id": item_id})
        retrieved, _ = await c.until("conversation.item.retrieved")
        kept = retrieved["item"]["content"][0]["transcript"]
        assert kept and TEXTS["bot_greeting"].startswith(kept) and len(kept) < len(TEXTS["bot_greeting"]) / 2

        await c.send(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": 1500,
                "event_id": "trunc-2",
            }
        )
        err, _ = await c.error_for("trunc-2")
        assert err["error"]["code"] == "invalid_value"
        assert err["error"]["message"] == "Audio content of 1000 ms is already shorter than 1500 ms"

        await c.send(
            {
                "type": "conversation.item.truncate",
                "item_id": "item_nope",
                "content_index": 0,
                "audio_end_ms": 10,
                "event_id": "trunc-3",
            }
        )
        err, _ = await c.error_for("trunc-3")
        assert err["error"]["type"] == "invalid_request_error"
    session = await sim.state.wait_closed(0)
    assert session.truncations == [
        {"item_id": item_id, "audio_end_ms": 1000, "item_audio_ms": full_ms, "ok": True},
        {"item_id": item_id, "audio_end_ms": 1500, "item_audio_ms": 1000, "ok": False},
    ]
    assert "truncated" in moments and "truncate_rejected" in moments


@pytest.mark.parametrize("mode", ["ack", "error", "ignore"])
async def test_output_audio_buffer_clear_modes(make_sim, mode: str) -> None:
    sim = await make_sim(output_buffer_clear=mode)
    async with client(sim) as c:
        await c.send({"type": "output_audio_buffer.clear", "event_id": "clear-1"})
        replies = await c.sync()
    if mode == "ack":
        assert [e["type"] for e in replies] == ["output_audio_buffer.cleared"]
    elif mode == "error":
        assert [e["type"] for e in replies] == ["error"]
        assert replies[0]["error"]["event_id"] == "clear-1"
    else:
        assert replies == []


async def test_output_audio_buffer_clear_is_for_avatar_sessions_only(make_sim) -> None:
    sim = await make_sim()  # the default: output_buffer_clear="auto"
    async with client(sim) as c:
        await c.send({"type": "output_audio_buffer.clear", "event_id": "clear-plain"})
        replies = await c.sync()
        assert [e["type"] for e in replies] == ["error"]
        error = replies[0]["error"]
        assert {k: error[k] for k in ("type", "code", "param", "event_id")} == {
            "type": "invalid_request_error",
            "code": "unsupported_operation",
            "param": None,
            "event_id": "clear-plain",
        }
        assert "avatar" in error["message"]

        await c.update(avatar={"character": "lisa", "style": "casual-sitting"})
        await c.send({"type": "output_audio_buffer.clear", "event_id": "clear-avatar"})
        assert [e["type"] for e in await c.sync()] == ["output_audio_buffer.cleared"]

        await c.update(avatar=None)
        await c.send({"type": "output_audio_buffer.clear", "event_id": "clear-again"})
        assert [e["type"] for e in await c.sync()] == ["error"]


def test_output_buffer_clear_setting_and_command_line_option() -> None:
    assert SimulatorSettings().output_buffer_clear == "auto"
    with pytest.raises(ValueError, match="auto, ack, error or ignore"):
        SimulatorSettings(output_buffer_clear="sometimes")  # type: ignore[arg-type]
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers())
    assert settings_from_args(parser.parse_args(["simulator"])).output_buffer_clear == "auto"
    for mode in ("auto", "ack", "error", "ignore"):
        args = parser.parse_args(["simulator", "--output-buffer-clear", mode])
        assert settings_from_args(args).output_buffer_clear == mode
    with pytest.raises(SystemExit):
        parser.parse_args(["simulator", "--output-buffer-clear", "sometimes"])


# --- function calls -------------------------------------------------------------------------------

LOOKUP_ORDER = {
    "type": "function",
    "name": "lookup_order",
    "description": "Find an order by its number.",
    "parameters": {"type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"]},
}
FUNCTION_CALL_EVENTS = ("response.function_call_arguments.delta", "response.function_call_arguments.done")


async def caller_turn(c: Client, clip: str = "caller_hours.wav") -> None:
    """One caller utterance, then enough silence for the VAD to end the turn."""
    await c.append(load_ulaw_8k(ASSETS / clip) + ulaw_silence(800))


async def test_scripted_function_call_then_a_spoken_reply_to_its_output(make_sim) -> None:
    moments: list[tuple[str, dict[str, Any]]] = []
    sim = await make_sim(
        tool_calls={1: ToolCall("lookup_order", {"order": "42"})},
        function_call_ms=0,
        observer=lambda name, fields: moments.append((name, fields)),
    )
    async with client(sim) as c:
        await g711_session(c, tools=[LOOKUP_ORDER])
        await caller_turn(c)
        await c.until("input_audio_buffer.committed")
        user_item, _ = await c.until("conversation.item.created")
        done, events = await c.until("response.done")

        kinds = [e["type"] for e in events]
        n_deltas = kinds.count("response.function_call_arguments.delta")
        assert 2 <= n_deltas <= 3
        assert kinds == [
            "response.created",
            "response.output_item.added",
            "conversation.item.created",
            *["response.function_call_arguments.delta"] * n_deltas,
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.done",
        ]
        created, added, item_created = events[:3]
        resp_id = created["response"]["id"]
        assert created["response"]["status"] == "in_progress"
        item = added["item"]
        call_id = item["call_id"]
        assert call_id.startswith("call_")
        assert item == {
            "id": item["id"],
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "call_id": call_id,
            "name": "lookup_order",
            "arguments": "",
        }
        assert added["response_id"] == resp_id and added["output_index"] == 0
        assert item_created["item"] == item
        assert item_created["previous_item_id"] == user_item["item"]["id"]

        ids = {"response_id": resp_id, "item_id": item["id"], "output_index": 0, "call_id": call_id}
        deltas = events[3 : 3 + n_deltas]
        for ev in deltas:
            assert set(ev) == {"type", "event_id", *ids, "delta"}
            assert {k: ev[k] for k in ids} == ids and ev["delta"]
        args_done = events[3 + n_deltas]
        # As in the 2026-07-15 reference: no `name` here (it is on the function_call item).
        assert set(args_done) == {"type", "event_id", *ids, "arguments"}
        assert {k: args_done[k] for k in ids} == ids
        assert "".join(ev["delta"] for ev in deltas) == args_done["arguments"]
        assert json.loads(args_done["arguments"]) == {"order": "42"}

        item_done = events[-2]
        completed_item = {**item, "status": "completed", "arguments": args_done["arguments"]}
        assert item_done["item"] == completed_item and item_done["response_id"] == resp_id
        assert done["response"]["id"] == resp_id and done["response"]["status"] == "completed"
        assert done["response"]["output"] == [completed_item]
        assert done["response"]["usage"]["output_tokens"] > 0
        assert await c.sync() == []  # no audio, before or after

        # The gateway runs the tool and answers; its response.create gets a spoken reply.
        output = json.dumps({"status": "shipped"})
        await c.send(
            {
                "type": "conversation.item.create",
                "item": {"type": "function_call_output", "call_id": call_id, "output": output},
            }
        )
        out_created, seen = await c.until("conversation.item.created")
        assert len(seen) == 1
        assert out_created["previous_item_id"] == item["id"]
        assert out_created["item"] == {
            "id": out_created["item"]["id"],
            "object": "realtime.item",
            "type": "function_call_output",
            "status": "completed",
            "call_id": call_id,
            "output": output,
        }
        await c.send({"type": "response.create"})
        spoken, events = await c.until("response.done")
        audio = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.audio.delta")
        assert audio == load_ulaw_8k(ASSETS / "bot_reply_1.wav")
        assert not [e for e in events if e["type"] in FUNCTION_CALL_EVENTS]
        assert spoken["response"]["status"] == "completed"
        assert spoken["response"]["output"][0]["type"] == "message"
        assert spoken["response"]["output"][0]["content"][0]["transcript"] == TEXTS["bot_reply_1"]

        # The reply cycle went on: the caller's next turn gets the next clip.
        await caller_turn(c, "caller_delivery.wav")
        second, _ = await c.until("response.done")
        assert second["response"]["output"][0]["content"][0]["transcript"] == TEXTS["bot_reply_2"]

    session = await sim.state.wait_closed(0)
    assert session.function_calls == [
        {
            "call_id": call_id,
            "name": "lookup_order",
            "arguments": args_done["arguments"],
            "response_id": resp_id,
            "status": "completed",
        }
    ]
    assert session.function_call_outputs == [
        {"item_id": out_created["item"]["id"], "call_id": call_id, "output": output}
    ]
    calls = [f for name, f in moments if name == "function_call"]
    outputs = [f for name, f in moments if name == "function_call_output"]
    assert calls == [
        {
            "session": session.id,
            "name": "lookup_order",
            "call_id": call_id,
            "arguments": args_done["arguments"],
        }
    ]
    assert outputs == [{"session": session.id, "call_id": call_id, "output": output}]
    names = [name for name, _ in moments]
    assert names.index("response.created") < names.index("function_call") < names.index("response.done")


async def test_function_call_output_needs_a_known_call_id(make_sim) -> None:
    sim = await make_sim()
    async with client(sim) as c:
        await c.update(tools=[LOOKUP_ORDER], turn_detection=None)
        cases = [
            ({"call_id": "call_nope", "output": "{}"}, "invalid_value", "item.call_id"),
            ({"output": "{}"}, "missing_required_parameter", "item.call_id"),
        ]
        for n, (fields, code, param) in enumerate(cases):
            event_id = f"out-{n}"
            item = {"type": "function_call_output", **fields}
            await c.send({"type": "conversation.item.create", "item": item, "event_id": event_id})
            err, seen = await c.error_for(event_id)
            assert len(seen) == 1, seen  # no conversation.item.created
            assert err["error"]["type"] == "invalid_request_error"
            assert (err["error"]["code"], err["error"]["param"]) == (code, param)

        # A function call the client put in the conversation itself counts too.
        call = {"type": "function_call", "call_id": "call_c1", "name": "lookup_order", "arguments": "{}"}
        await c.send({"type": "conversation.item.create", "item": call})
        await c.until("conversation.item.created")
        bad_output = {"type": "function_call_output", "call_id": "call_c1", "output": {"not": "a string"}}
        await c.send({"type": "conversation.item.create", "item": bad_output, "event_id": "out-type"})
        err, _ = await c.error_for("out-type")
        assert err["error"]["code"] == "invalid_type" and err["error"]["param"] == "item.output"
        good = {"type": "function_call_output", "call_id": "call_c1", "output": "ok"}
        await c.send({"type": "conversation.item.create", "item": good})
        accepted, _ = await c.until("conversation.item.created")
        assert accepted["item"]["call_id"] == "call_c1"
    session = await sim.state.wait_closed(0)
    assert session.function_call_outputs == [
        {"item_id": accepted["item"]["id"], "call_id": "call_c1", "output": "ok"}
    ]
    assert [i["type"] for i in session.items.values()] == ["function_call", "function_call_output"]


@pytest.mark.parametrize(
    ("session_tools", "scripted"),
    [
        ({"tools": [LOOKUP_ORDER]}, "transfer_call"),  # another function
        ({}, "lookup_order"),  # no tools at all
        ({"tools": [LOOKUP_ORDER], "tool_choice": "none"}, "lookup_order"),
    ],
)
async def test_a_call_the_session_cannot_make_gets_a_spoken_reply(
    make_sim, session_tools: dict[str, Any], scripted: str
) -> None:
    moments: list[str] = []
    sim = await make_sim(
        tool_calls={1: ToolCall(scripted, {"order": "42"})},
        observer=lambda name, fields: moments.append(name),
    )
    async with client(sim) as c:
        await g711_session(c, turn_detection=None, **session_tools)
        await c.append(load_ulaw_8k(ASSETS / "caller_hours.wav"))
        await c.send({"type": "input_audio_buffer.commit"})
        await c.until("input_audio_buffer.committed")
        await c.send({"type": "response.create"})
        done, events = await c.until("response.done")
    assert not [e for e in events if e["type"] in FUNCTION_CALL_EVENTS]
    assert [e for e in events if e["type"] == "response.audio.delta"]
    assert done["response"]["output"][0]["type"] == "message"
    assert done["response"]["output"][0]["content"][0]["transcript"] == TEXTS["bot_reply_1"]
    session = await sim.state.wait_closed(0)
    assert session.function_calls == [] and "function_call" not in moments


async def test_speech_during_a_function_call_cancels_it(make_sim) -> None:
    moments: list[str] = []
    # The arguments take 30 s to stream: the caller surely talks before they are complete.
    sim = await make_sim(
        tool_calls={1: ToolCall("lookup_order", {"order": "42"})},
        function_call_ms=30_000,
        observer=lambda name, fields: moments.append(name),
    )
    async with client(sim) as c:
        await g711_session(c, tools=[LOOKUP_ORDER])
        await caller_turn(c)
        first, _ = await c.until("response.function_call_arguments.delta")

        await caller_turn(c, "caller_interrupt.wav")
        _, before = await c.until("input_audio_buffer.speech_started")
        done, events = await c.until("response.done")
        assert not [e for e in before + events if e["type"] == "response.function_call_arguments.done"]
        assert not [e for e in before if e["type"] == "response.done"]
        assert done["response"]["id"] == first["response_id"]
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
        cut = {
            "id": first["item_id"],
            "object": "realtime.item",
            "type": "function_call",
            "status": "incomplete",
            "call_id": first["call_id"],
            "name": "lookup_order",
            "arguments": first["delta"],
        }
        assert done["response"]["output"] == [cut]
        assert [e["item"] for e in events if e["type"] == "response.output_item.done"] == [cut]

        # The interrupting turn gets its own (spoken) answer.
        answer, _ = await c.until("response.done")
        assert answer["response"]["status"] == "completed"
        assert answer["response"]["output"][0]["content"][0]["transcript"] == TEXTS["bot_reply_2"]
    session = await sim.state.wait_closed(0)
    assert session.function_calls == [
        {
            "call_id": first["call_id"],
            "name": "lookup_order",
            "arguments": first["delta"],
            "response_id": first["response_id"],
            "status": "cancelled",
        }
    ]
    assert "function_call" not in moments and "cancelled" in moments


@pytest.mark.parametrize("with_name", [False, True])
async def test_function_call_arguments_done_names_the_function_only_if_asked(make_sim, with_name: bool) -> None:
    settings: dict[str, Any] = {"function_call_done_name": True} if with_name else {}
    sim = await make_sim(tool_calls={1: ToolCall("lookup_order", {"order": "42"})}, function_call_ms=0, **settings)
    async with client(sim) as c:
        await g711_session(c, turn_detection=None, tools=[LOOKUP_ORDER])
        await c.append(load_ulaw_8k(ASSETS / "caller_hours.wav"))
        await c.send({"type": "input_audio_buffer.commit"})
        await c.send({"type": "response.create"})
        added, _ = await c.until("response.output_item.added")
        args_done, _ = await c.until("response.function_call_arguments.done")
        item_done, _ = await c.until("response.output_item.done")
    assert added["item"]["name"] == item_done["item"]["name"] == "lookup_order"
    if with_name:
        assert args_done["name"] == "lookup_order"
    else:
        assert "name" not in args_done
    assert json.loads(args_done["arguments"]) == {"order": "42"}


def test_tool_call_settings_and_command_line_option() -> None:
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers())
    args = parser.parse_args(
        ["simulator", "--tool-call", '1:lookup_order:{"order": "42", "at": "10:30"}', "--tool-call", "3:hang_up"]
    )
    settings = settings_from_args(args)
    assert settings.tool_calls == {
        1: ToolCall("lookup_order", {"order": "42", "at": "10:30"}),
        3: ToolCall("hang_up", {}),
    }
    assert settings_from_args(parser.parse_args(["simulator"])).tool_calls == {}
    twice = parser.parse_args(["simulator", "--tool-call", "2:a", "--tool-call", "2:b"])
    with pytest.raises(ValueError, match="turn 2"):
        settings_from_args(twice)

    for text in ("0:f", "x:f", "2", "2:", "2:f:[1]", "2:f:{bad", "2:f:{\"x\": NaN}"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_tool_call(text)
    for bad in ({0: ToolCall("f")}, {True: ToolCall("f")}, {1: "f"}):
        with pytest.raises(ValueError):
            SimulatorSettings(tool_calls=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ToolCall("")
    with pytest.raises(ValueError):
        ToolCall("f", {"when": object()})


# --- bad input ----------------------------------------------------------------------------------


async def test_bad_client_events_get_errors_and_the_session_survives(make_sim) -> None:
    sim = await make_sim()
    async with client(sim) as c:
        await c.ws.send("{not json")
        err, _ = await c.until("error")
        assert err["error"]["code"] == "invalid_json" and err["error"]["event_id"] is None

        cases = [
            ({"type": "no.such.event", "event_id": "e1"}, "invalid_value", "type"),
            ({"event_id": "e2", "session": {}}, "missing_required_parameter", "type"),
            (
                {"type": "input_audio_buffer.append", "audio": "not base64!", "event_id": "e3"},
                "invalid_value",
                "audio",
            ),
            ({"type": "input_audio_buffer.append", "audio": 1234, "event_id": "e4"}, "invalid_type", "audio"),
            ({"type": "input_audio_buffer.append", "event_id": "e5"}, "missing_required_parameter", "audio"),
            ({"type": "session.update", "event_id": "e6"}, "missing_required_parameter", "session"),
            (
                {"type": "session.update", "session": {"output_audio_format": "mp3"}, "event_id": "e7"},
                "invalid_value",
                "session.output_audio_format",
            ),
            (
                {"type": "conversation.item.truncate", "item_id": "x", "event_id": "e8"},
                "missing_required_parameter",
                "audio_end_ms",
            ),
        ]
        for event, code, param in cases:
            await c.send(event)
            err, seen = await c.error_for(event["event_id"])
            assert len(seen) == 1, seen
            assert err["error"]["code"] == code, (event, err)
            assert err["error"]["param"] == param, (event, err)
            assert err["error"]["type"] == "invalid_request_error"

        s = await c.update(voice="alloy")
        assert s["voice"] == "alloy" and s["output_audio_format"] == "pcm16"
    session = await sim.state.wait_closed(0)
    assert session.appended == []
    assert {"type": "no.such.event", "event_id": "e1"} in session.received
    ids = [e["event_id"] for e in session.sent]
    assert len(ids) == len(set(ids))


# --- VAD ----------------------------------------------------------------------------------------


async def test_vad_stays_silent_on_digital_silence(make_sim) -> None:
    sim = await make_sim()
    async with client(sim) as c:
        await g711_session(c)
        await c.append(b"\xff" * 16000 + b"\x7f" * 16000)  # both µ-law codes for zero, 4 s in all
        events = await c.sync()
    assert events == []


async def test_vad_on_pcm16_sent_in_odd_sized_chunks(make_sim) -> None:
    sim = await make_sim()
    rate = 24000
    t = np.arange(int(0.6 * rate)) / rate
    tone = (np.sin(2 * np.pi * 440 * t) * 3000).astype("<i2")  # about -21 dBFS
    # Quiet background (about -54 dBFS) whose byte-swapped reading (0x4000) would be loud: a sample
    # split across two appends must be put back together, not shifted by a byte.
    hum = np.full(int(0.3 * rate), 64, "<i2")
    audio = np.concatenate([hum, tone, np.tile(hum, 4)]).tobytes()
    async with client(sim) as c:
        s = await c.update(
            turn_detection={
                "type": "server_vad",
                "prefix_padding_ms": 0,
                "silence_duration_ms": 300,
                "create_response": False,
            }
        )
        assert s["turn_detection"]["silence_duration_ms"] == 300 and s["input_audio_sampling_rate"] == 24000
        await c.append(audio, frame=999)
        events = await c.sync()
        # No response was started for the turn (the server handles events in order).
        await c.send({"type": "response.cancel", "event_id": "no-response"})
        err, _ = await c.error_for("no-response")
        assert err["error"]["code"] == "response_cancel_not_active"
    kinds = [e["type"] for e in events]
    assert kinds == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.created",
    ]
    assert events[0]["audio_start_ms"] == 300
    assert events[1]["audio_end_ms"] == 900


def test_energy_vad_windows_and_thresholds() -> None:
    rate = 8000
    vad = EnergyVad(rate, threshold_dbfs=-40.0, min_speech_ms=100, silence_ms=200)
    quiet = (np.sin(np.arange(rate) * 0.3) * 100).astype(np.int16)  # about -53 dBFS: not speech
    loud = (np.sin(np.arange(rate // 2) * 0.3) * 8000).astype(np.int16)
    assert vad.feed(quiet) == []
    # A 50 ms burst is shorter than min_speech_ms.
    assert vad.feed(loud[:400]) == [] and vad.feed(np.zeros(800, np.int16)) == []
    events = []
    for i in range(0, len(loud), 7):  # tiny, unaligned pieces
        events += vad.feed(loud[i : i + 7])
    events += vad.feed(np.zeros(rate, np.int16))
    assert [(e.kind, e.ms) for e in events] == [("start", 1150), ("stop", 1650)]


# --- closing --------------------------------------------------------------------------------------


async def test_server_side_close_code_reaches_the_client(make_sim) -> None:
    sim = await make_sim()
    async with client(sim) as c:
        session = await sim.state.wait_for_session(0)
        await session.close(4002, "fault injection")
        with pytest.raises(ConnectionClosed) as info:
            await c.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 4002
    assert session.closed.is_set() and session.close_code == 4002
    assert sim.state.active == []


async def test_stopping_the_simulator_closes_open_sessions(make_sim) -> None:
    sim = await make_sim(audio_speed=1.0)
    async with client(sim) as c:
        await c.update(turn_detection=None)
        await c.send({"type": "response.create"})
        await c.until("response.audio.delta")
        await asyncio.wait_for(sim.close(), TIMEOUT)
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await c.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    session = sim.state.sessions[0]
    assert session.closed.is_set()
    assert not [e for e in session.sent if e["type"] == "response.done"]

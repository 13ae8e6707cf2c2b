"""Vonage: signed answer and event webhooks, the NCCO, the media socket bound to its call by the
answer's token, whole calls through the gateway and the simulator with the Vonage softphone, and call
control through a local stand-in of the Voice API (127.0.0.1 only)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway import metrics
from gateway.app import create_app
from gateway.audio import ASSETS, load_ulaw_8k
from gateway.bridge import CONTEXT
from gateway.carriers.vonage.auth import webhook_token
from gateway.carriers.vonage.codec import FRAME_BYTES
from gateway.carriers.vonage.phone import place_vonage_call
from gateway.config import parse_config
from gateway.simulator import RunningSimulator, SimulatorSettings, ToolCall, start_simulator
from gateway.softphone import CallRejected, Dtmf, Hangup, Say, Silence, WaitForBot
from tests.sockets.loopback import serve

SECRET = "vonage-signature-secret-for-tests"
APP_ID = "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab"
HOURS = load_ulaw_8k(ASSETS / "caller_hours.wav")
INTERRUPT = load_ulaw_8k(ASSETS / "caller_interrupt.wav")
BPM = 32  # PCM16 at 16 kHz: bytes per millisecond
_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE_PEM = _KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode()
PUBLIC_KEY = _KEY.public_key()

CONFIG = """
voicelive: {{endpoint: "{endpoint}"}}
gateway: {{insecure_dev_mode: {insecure}}}
vonage:
  signature_secret: ${{SECRET}}
  application_id: ${{APP_ID}}
  private_key: ${{PRIVATE_KEY}}
  api_base_url: {api}
profiles:
  main: {{model: gpt-realtime, voice: alloy}}
  sales: {{model: gpt-realtime, voice: marin}}
  greeter:
    model: gpt-realtime
    voice: alloy
    greeting: Hello, thanks for calling. How can I help you today?
  control:
    model: gpt-realtime
    tools:
      - {{name: transfer_call, builtin: transfer_call, transfer: {{targets: {{operator: "+14155550100"}}}}}}
      - {{name: press_keys, builtin: send_dtmf}}
      - {{name: hang_up, builtin: hang_up}}
routes:
  default: main
  numbers: {{"+15555550123": sales, "+15555550111": greeter, "+15555550222": control}}
"""


@dataclass
class VoiceApi:
    """A local stand-in for the Vonage Voice API: records every request it gets."""

    requests: list[tuple[str, str, dict[str, Any], str]] = field(default_factory=list)  # method, path, body, auth
    status: int = 204

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path, await request.json(),
                              request.headers.get("Authorization", "")))
        return web.Response(status=self.status)


@dataclass
class VonageRig:
    sim: RunningSimulator
    app: web.Application
    base: str
    api: VoiceApi

    @property
    def answer_url(self) -> str:
        return self.base + "/vonage/answer"

    async def request(self, method: str, path: str, *, params: dict[str, str] | None = None, body: Any = None,
                      headers: dict[str, str] | None = None) -> tuple[int, str]:
        data = json.dumps(body).encode() if body is not None else None
        async with aiohttp.ClientSession() as http, http.request(
                method, self.base + path, params=params, data=data,
                headers={**({"Content-Type": "application/json"} if data else {}), **(headers or {})}) as reply:
            return reply.status, await reply.text()


def signed(body: bytes | None = None, secret: str = SECRET, **kwargs: Any) -> dict[str, str]:
    return {"Authorization": "Bearer " + webhook_token(secret, body, **kwargs)}


def answer_params(to: str = "15555550123", call_uuid: str = "call-1") -> dict[str, str]:
    return {"to": to, "from": "14255550123", "uuid": call_uuid, "conversation_uuid": "CON-1"}


@contextlib.asynccontextmanager
async def vonage_rig(*, credentials: bool = True, insecure: bool = False, secret: str | None = SECRET,
                     voicelive_endpoint: str | None = None,
                     tool_calls: dict[int, ToolCall] | None = None) -> AsyncIterator[VonageRig]:
    sim = await start_simulator(SimulatorSettings(audio_speed=4.0, tool_calls=tool_calls or {}))
    api = VoiceApi()
    api_app = web.Application()
    api_app.router.add_put("/v1/calls/{uuid}", api.handle)
    api_app.router.add_put("/v1/calls/{uuid}/dtmf", api.handle)
    api_runner, api_base = await serve(api_app)
    env = {"SECRET": secret or "", "APP_ID": APP_ID if credentials else "",
           "PRIVATE_KEY": PRIVATE_PEM if credentials else ""}
    config = parse_config(CONFIG.format(endpoint=voicelive_endpoint or sim.endpoint, insecure=str(insecure).lower(), api=api_base), env=env)
    app = create_app(config)
    runner, base = await serve(app)
    try:
        yield VonageRig(sim, app, base, api)
    finally:
        await runner.cleanup()
        await api_runner.cleanup()
        await sim.close()


@pytest.fixture
async def vonage() -> AsyncIterator[VonageRig]:
    async with vonage_rig() as rig:
        yield rig


async def _finished(rig: VonageRig, index: int = 0) -> Any:
    session = await asyncio.wait_for(rig.sim.state.wait_closed(index), 10)
    await asyncio.wait_for(rig.app[CONTEXT].wait_idle(), 10)
    return session


def _spoken(session: Any, item_id: str | None = None) -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in session.sent
                    if e.get("type") == "response.audio.delta" and (item_id is None or e.get("item_id") == item_id))


def _heard(report: Any) -> bytes:
    return b"".join(base64.b64decode(p) for p in report.received_payloads)


# --- whole calls ----------------------------------------------------------------------------------


async def test_a_whole_call_greeting_then_question_audio_byte_exact_both_ways(vonage: VonageRig) -> None:
    report = await place_vonage_call(vonage.answer_url, [WaitForBot(), Say(HOURS, "hours"), WaitForBot(), Hangup()],
                                     to="15555550111", signature_secret=SECRET)
    session = await _finished(vonage)
    assert report.violations == 0, report.violation_samples
    assert (session.session["input_audio_format"], session.session["input_audio_sampling_rate"],
            session.session["output_audio_format"]) == ("pcm16", 16000, "pcm16_16000hz")
    # what the caller sent is what Voice Live got: every 640-byte frame, base64 once, silence included
    assert {len(base64.b64decode(p)) for p in report.sent_payloads} == {FRAME_BYTES}
    assert session.appended == report.sent_payloads
    # what Voice Live sent is what the phone got, in 640-byte frames (the last partial frame of the
    # last answer waits for more audio that never comes: the caller hung up)
    spoken, heard = _spoken(session), _heard(report)
    assert len(session.items_audio_bytes) == 2  # the greeting and the answer
    assert {len(base64.b64decode(p)) for p in report.received_payloads} == {FRAME_BYTES}
    assert heard == spoken[:len(heard)] and len(spoken) - len(heard) < FRAME_BYTES
    assert report.marks_received and report.marks_echoed == report.marks_received  # every notify answered
    assert report.closed_by == "caller" and vonage.api.requests == []  # the caller hung up: nothing to do

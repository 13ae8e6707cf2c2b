"""Voice Live client: URL building, auth headers, the shared token cache, handshake errors."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web

from gateway.config import parse_config
from gateway.voicelive.client import TokenProvider, VoiceLiveConnectError, VoiceLiveConnector, realtime_url
from tests.loopback import serve


@pytest.mark.parametrize("endpoint, scheme, path", [
    ("https://res.services.ai.azure.com", "wss", "/voice-live/realtime"),
    ("https://res.services.ai.azure.com/", "wss", "/voice-live/realtime"),
    ("http://127.0.0.1:9000", "ws", "/voice-live/realtime"),
    ("wss://res.example.com/prefix", "wss", "/prefix/voice-live/realtime"),
    ("ws://127.0.0.1:9000/voice-live/realtime", "ws", "/voice-live/realtime"),
])
def test_realtime_url(endpoint: str, scheme: str, path: str) -> None:
    url = realtime_url(endpoint, api_version="2026-07-15", model="gpt-realtime")
    parts = urlsplit(url)
    assert (parts.scheme, parts.path) == (scheme, path)
    assert parse_qs(parts.query) == {"api-version": ["2026-07-15"], "model": ["gpt-realtime"]}


def test_agent_mode_replaces_model() -> None:
    url = realtime_url("https://r.example", api_version="v", agent_name="bot", agent_project="proj")
    assert parse_qs(urlsplit(url).query) == {"api-version": ["v"], "agent-name": ["bot"],
                                             "agent-project-name": ["proj"]}


def test_bad_endpoint_is_refused() -> None:
    with pytest.raises(ValueError, match="https://"):
        realtime_url("ftp://x", api_version="v", model="m")


@dataclass
class _Token:
    token: str
    expires_on: int


class FakeCredential:
    def __init__(self, clock: list[float], lifetime: int = 3600) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls = 0
        self.fail = False
        self.scopes: list[tuple[str, ...]] = []
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def get_token(self, *scopes: str, **_: object) -> _Token:
        self.calls += 1
        self.scopes.append(scopes)
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("identity endpoint down")
        return _Token(f"tok{self.calls}", int(self.clock[0]) + self.lifetime)


async def test_token_is_cached_and_refreshed_before_expiry() -> None:
    clock = [1000.0]
    cred = FakeCredential(clock)
    tokens = TokenProvider(cred, "https://ai.azure.com/.default", refresh_margin_s=300, clock=lambda: clock[0])
    assert await tokens.get() == "tok1"
    clock[0] += 3000  # 600 s left: still fresh
    assert await tokens.get() == "tok1"
    clock[0] += 301  # inside the refresh margin
    assert await tokens.get() == "tok2"
    assert cred.calls == 2
    assert cred.scopes[0] == ("https://ai.azure.com/.default",)


async def test_concurrent_calls_share_one_token_request() -> None:
    clock = [0.0]
    cred = FakeCredential(clock)
    cred.gate = asyncio.Event()
    tokens = TokenProvider(cred, "scope", clock=lambda: clock[0])
    waiters = [asyncio.create_task(tokens.get()) for _ in range(20)]
    await cred.entered.wait()  # the first request is in flight; the others queue behind it
    cred.gate.set()
    assert set(await asyncio.gather(*waiters)) == {"tok1"}
    assert cred.calls == 1


async def test_failed_refresh_keeps_a_still_valid_token() -> None:
    clock = [0.0]
    cred = FakeCredential(clock)
    tokens = TokenProvider(cred, "scope", refresh_margin_s=300, clock=lambda: clock[0])
    await tokens.get()
    clock[0] = 3400  # in the margin, not expired
    cred.fail = True
    assert await tokens.get() == "tok1"
    clock[0] = 3700  # expired: the failure surfaces
    with pytest.raises(RuntimeError):
        await tokens.get()


CONFIG = """
voicelive:
  endpoint: ${EP}
  api_key: ${KEY:-}
profiles:
  p: {model: gpt-realtime}
"""


@pytest.fixture
async def handshake_server():
    seen: list[dict] = []
    status = {"code": 101}

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append({"path": request.path, "query": dict(request.query), "headers": dict(request.headers)})
        if status["code"] != 101:
            return web.Response(status=status["code"])
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/voice-live/realtime", handler)
    runner, base = await serve(app)
    yield base, seen, status
    await runner.cleanup()


async def test_api_key_header(handshake_server) -> None:
    endpoint, seen, _ = handshake_server
    config = parse_config(CONFIG, env={"EP": endpoint, "KEY": "secret-key-123"})
    connector = VoiceLiveConnector(config.voicelive)
    ws = await connector.connect(config.profiles["p"])
    await ws.close()
    assert seen[0]["headers"]["api-key"] == "secret-key-123"
    assert "Authorization" not in seen[0]["headers"]
    assert seen[0]["query"]["model"] == "gpt-realtime"


async def test_entra_token_header_and_no_token_per_call(handshake_server) -> None:
    endpoint, seen, _ = handshake_server
    config = parse_config(CONFIG, env={"EP": endpoint})
    cred = FakeCredential([time.time()])  # the connector's token cache runs on the real clock
    connector = VoiceLiveConnector(config.voicelive, credential=cred)
    for _ in range(3):
        ws = await connector.connect(config.profiles["p"])
        await ws.close()
    assert [s["headers"]["Authorization"] for s in seen] == ["Bearer tok1"] * 3
    assert cred.calls == 1
    assert cred.scopes == [("https://ai.azure.com/.default",)]


@pytest.mark.parametrize("code", [401, 403, 429, 503])
async def test_refused_handshake_reports_the_status(handshake_server, code: int) -> None:
    endpoint, _, status = handshake_server
    status["code"] = code
    config = parse_config(CONFIG, env={"EP": endpoint, "KEY": "secret-key-123"})
    with pytest.raises(VoiceLiveConnectError) as err:
        await VoiceLiveConnector(config.voicelive).connect(config.profiles["p"])
    assert err.value.status == code
    assert "secret-key-123" not in str(err.value)


async def test_unreachable_endpoint() -> None:
    config = parse_config(CONFIG, env={"EP": "http://127.0.0.1:9", "KEY": "k-123456"})
    with pytest.raises(VoiceLiveConnectError, match="unreachable"):
        await VoiceLiveConnector(config.voicelive).connect(config.profiles["p"])


async def test_loopback_endpoint_without_key_sends_no_credentials(handshake_server) -> None:
    endpoint, seen, _ = handshake_server
    config = parse_config(CONFIG, env={"EP": endpoint})
    connector = VoiceLiveConnector(config.voicelive)
    assert connector.auth_kind == "none"
    ws = await connector.connect(config.profiles["p"])
    await ws.close()
    headers = {k.lower() for k in seen[0]["headers"]}
    assert "authorization" not in headers and "api-key" not in headers


def test_remote_endpoint_without_key_uses_entra_id() -> None:
    config = parse_config(CONFIG, env={"EP": "https://res.services.ai.azure.com"})
    assert VoiceLiveConnector(config.voicelive).auth_kind == "entra-id"

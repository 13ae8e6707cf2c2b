"""Voice Live client: URL building, the shared token cache, which credentials an endpoint gets (handshakes
over sockets: tests/sockets/test_voicelive_handshake.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import pytest

from gateway.config import parse_config
from gateway.voicelive.client import TokenProvider, VoiceLiveConnector, realtime_url


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


def test_remote_endpoint_without_key_uses_entra_id() -> None:
    config = parse_config(CONFIG, env={"EP": "https://res.services.ai.azure.com"})
    assert VoiceLiveConnector(config.voicelive).auth_kind == "entra-id"

"""Voice Live client handshakes against a WebSocket endpoint on 127.0.0.1: auth headers, one Entra ID
token for many calls, refused and unreachable endpoints."""

from __future__ import annotations

import time

import pytest
from aiohttp import web

from gateway.config import parse_config
from gateway.voicelive.client import VoiceLiveConnectError, VoiceLiveConnector
from tests.core.test_voicelive_client import CONFIG, FakeCredential
from tests.sockets.loopback import voicelive_route


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

    async with voicelive_route(handler) as base:
        yield base, seen, status


async def test_api_key_header(handshake_server) -> None:
    endpoint, seen, _ = handshake_server
    config = parse_config(CONFIG, env={"EP": endpoint, "KEY": "secret-key-123"})
    connector = VoiceLiveConnector(config.voicelive)
    ws = await connector.connect(config.profiles["p"])
    await ws.close()
    assert seen[0]["headers"]["api-key"] == "secret-key-123"
    assert "Authorization" not in seen[0]["headers"]
    assert seen[0]["query"]["model"] == "gpt-realtime"


async def test_an_open_session_keeps_no_handshake_headers(handshake_server) -> None:
    endpoint, _, _ = handshake_server
    config = parse_config(CONFIG, env={"EP": endpoint, "KEY": "secret-key-123"})
    ws = await VoiceLiveConnector(config.voicelive).connect(config.profiles["p"])
    try:
        assert ws.request is None  # (its api-key header included)
        assert ws.response is not None and ws.response.status_code == 101  # websockets: the handshake is over
        assert len(ws.response.headers) == 0
    finally:
        await ws.close()


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


async def test_a_redirect_is_not_followed(handshake_server) -> None:
    # a redirect would open a second socket the connection budget never counted, and take the
    # api-key header (which websockets keeps across origins) to whatever host it names
    other, seen, _ = handshake_server

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(other.replace("http://", "ws://", 1) + request.path_qs)

    async with voicelive_route(redirect) as endpoint:
        config = parse_config(CONFIG, env={"EP": endpoint, "KEY": "secret-key-123"})
        with pytest.raises(VoiceLiveConnectError) as err:
            await VoiceLiveConnector(config.voicelive).connect(config.profiles["p"])
    assert err.value.status == 302
    assert seen == []  # the other host was never asked, and never saw the key

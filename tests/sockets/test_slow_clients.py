"""Slow clients over real sockets: late request headers close the connection, a late webhook body
gets 408, and neither deadline touches a WebSocket or an idle kept-alive connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from gateway.app import create_app
from gateway.config import parse_config
from gateway.server_limits import GuardedAppRunner, ServerLimits
from tests.sockets.loopback import listen

LIMIT_S = 0.5
SAFETY_S = 5.0  # a generous bound: without the deadlines these tests fail here instead of hanging
TRICKLE_S = 0.05  # the slow client's pace: one byte each


async def _echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        await ws.send_str(message.data)
    return ws


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[str, int]]:
    """The gateway's application with 0.5 s deadlines, plus a WebSocket echo: (base URL, port)."""
    config = parse_config("profiles: {main: {model: gpt-realtime}}\n")
    app = create_app(config, voicelive_endpoint="ws://127.0.0.1:9/unused")
    app.router.add_get("/echo", _echo)
    runner = GuardedAppRunner(app, limits=ServerLimits(header_timeout_s=LIMIT_S, body_timeout_s=LIMIT_S))
    try:
        base = await listen(runner)
        yield base, int(base.rsplit(":", 1)[1])
    finally:
        await runner.cleanup()


async def _trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes,
                   filler: bytes = b"a") -> tuple[bytes, float]:
    """Send ``head``, then ``filler`` a byte at a time, until the server closes the connection:
    (all the server sent, seconds it took)."""
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def everything() -> bytes:  # until the server closes (b"": it answered nothing)
        chunks = []
        try:
            while chunk := await reader.read(65536):
                chunks.append(chunk)
        except ConnectionResetError:  # closed with our trickled bytes unread, the kernel resets: a close too
            pass  # (what came before the reset was read, and counts)
        return b"".join(chunks)

    answer = asyncio.create_task(everything())
    writer.write(head)
    try:
        async with asyncio.timeout(SAFETY_S):
            while not answer.done():
                writer.write(filler)
                await asyncio.wait({answer}, timeout=TRICKLE_S)
        return answer.result(), loop.time() - started
    finally:
        answer.cancel()
        writer.close()


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> bytes:
    """One kept-alive request on a raw connection: its response's status line."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length"))
    await reader.readexactly(length)
    return lines[0]


async def test_a_client_trickling_its_headers_is_closed_while_others_are_served(gateway) -> None:
    base, port = gateway
    slow = asyncio.create_task(_trickle(*await asyncio.open_connection("127.0.0.1", port),
                                        b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: "))
    async with aiohttp.ClientSession() as http, http.get(base + "/healthz") as reply:
        assert reply.status == 200
    assert not slow.done()  # answered while the slow client still held its connection
    answer, seconds = await slow
    assert answer == b""  # closed, nothing answered
    assert LIMIT_S * 0.9 <= seconds < SAFETY_S


async def test_late_headers_of_a_second_request_close_the_connection_but_idle_ones_stay(gateway) -> None:
    _, port = gateway
    idle = await asyncio.open_connection("127.0.0.1", port)
    assert await _get(*idle, "/healthz") == b"HTTP/1.1 200 OK"
    slow = await asyncio.open_connection("127.0.0.1", port)
    assert await _get(*slow, "/healthz") == b"HTTP/1.1 200 OK"
    answer, seconds = await _trickle(*slow, b"GET /healthz HTTP/1.1\r\nX-Slow: ")
    assert answer == b"" and LIMIT_S * 0.9 <= seconds < SAFETY_S
    # the idle kept-alive connection has been idle longer than the header deadline: still served
    assert await _get(*idle, "/healthz") == b"HTTP/1.1 200 OK"
    idle[1].close()


async def test_a_trickled_webhook_body_gets_408_and_the_connection_closes(gateway) -> None:
    _, port = gateway
    head = (b"POST /twilio/voice HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 100000\r\n\r\nCallSid=CA1&To=")
    answer, seconds = await _trickle(*await asyncio.open_connection("127.0.0.1", port), head, b"1")
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert LIMIT_S * 0.9 <= seconds < SAFETY_S


async def test_a_websocket_outlives_the_deadlines(gateway) -> None:
    base, port = gateway
    async with aiohttp.ClientSession() as http, http.ws_connect(base + "/echo") as ws:
        # the slow client connects after the WebSocket: once it is closed, the WebSocket's own
        # deadlines (were they still armed) would have passed too
        answer, _ = await _trickle(*await asyncio.open_connection("127.0.0.1", port), b"GET / HTTP/1.1\r\nX-Slow: ")
        assert answer == b""
        await ws.send_str("still here")
        assert (await ws.receive_str()) == "still here"

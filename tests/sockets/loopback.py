"""Helpers the socket tests share: serving an aiohttp app on 127.0.0.1 (on the test's loop or on a
thread of its own; or one handler as Voice Live's realtime route), a port that refuses connections,
requests signed like Twilio signs them, ACS signing keys published on a JWKS endpoint, and a Call
Automation transport that answers like ACS without leaving the machine. The fixtures built on them
are in conftest.py."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
from aiohttp import web
from azure.core.pipeline.transport import AsyncHttpResponse, AsyncHttpTransport

from gateway.carriers.acs.auth import ACS_ISSUER
from gateway.carriers.twilio.auth import twilio_signature

THREAD_TIMEOUT_S = 5.0  # safety bound for a server thread to start and to stop

LogCapture = Callable[[str], contextlib.AbstractContextManager[io.StringIO]]  # the log_capture fixture


async def listen(runner: web.BaseRunner) -> str:
    """Set ``runner`` up and serve it on a free loopback port: its ``http://127.0.0.1:PORT``."""
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return f"http://127.0.0.1:{port}"


async def serve(app: web.Application, **runner_options: Any) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on a free loopback port: (its runner, to clean up; its ``http://127.0.0.1:PORT``)."""
    runner = web.AppRunner(app, **runner_options)
    return runner, await listen(runner)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def route(path: str, handler: Handler) -> AsyncIterator[str]:
    """Serve ``handler`` as ``GET path`` on a free loopback port, for as long as the block runs:
    ``http://127.0.0.1:PORT``."""
    app = web.Application()
    app.router.add_get(path, handler)
    runner, base = await serve(app)
    try:
        yield base
    finally:
        await runner.cleanup()


def voicelive_route(handler: Handler) -> contextlib.AbstractAsyncContextManager[str]:
    """Serve ``handler`` as Voice Live's realtime route (``/voice-live/realtime``) on a free loopback
    port, for as long as the block runs: the endpoint, ``http://127.0.0.1:PORT``."""
    return route("/voice-live/realtime", handler)


@contextlib.contextmanager
def serve_in_thread(app: web.Application, **runner_options: Any) -> Iterator[str]:
    """Serve ``app`` on a free loopback port from a thread with its own event loop, for code under test
    that runs its own loop (the ``gateway call`` command): yields ``http://127.0.0.1:PORT``."""
    ready = threading.Event()
    state: dict[str, Any] = {}

    def run() -> None:
        async def main() -> None:
            runner, state["base"] = await serve(app, **runner_options)
            state["stop"] = stop = asyncio.Event()
            state["loop"] = asyncio.get_running_loop()
            ready.set()
            await stop.wait()
            await runner.cleanup()

        asyncio.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(THREAD_TIMEOUT_S)
    try:
        yield state["base"]
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(THREAD_TIMEOUT_S)


def refusing_port() -> tuple[socket.socket, int]:
    """A bound socket that does not listen: connecting to it is refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


def twilio_signed(token: str, url: str, form: Mapping[str, str] | None = None) -> dict[str, str]:
    """The header Twilio signs a request to ``url`` with (a webhook's ``form``, or a media socket's upgrade)."""
    return {"X-Twilio-Signature": twilio_signature(token, url, form)}


async def post_as_twilio(url: str, form: dict[str, str], token: str) -> tuple[int, str]:
    """POST ``form`` to ``url`` signed the way Twilio signs its webhooks: (status, body)."""
    async with aiohttp.ClientSession() as http, http.post(url, data=form, headers=twilio_signed(token, url, form)) \
            as response:
        return response.status, await response.text()


@dataclass
class AcsKeys:
    """An RSA key ACS signs its tokens with, and the JWKS endpoint that publishes it (see conftest.py)."""

    private: Any
    kid: str
    jwks_url: str
    audience: str = ""  # the ACS resource id tokens are for, unless one is given

    def mint(self, audience: str | None = None, issuer: str = ACS_ISSUER, ttl: int = 300, key: Any = None) -> str:
        now = int(time.time())
        claims = {"iss": issuer, "aud": self.audience if audience is None else audience,
                  "iat": now, "nbf": now - 5, "exp": now + ttl}
        return jwt.encode(claims, key or self.private, algorithm="RS256", headers={"kid": self.kid})

    def bearer(self, **kwargs: Any) -> str:
        return "Bearer " + self.mint(**kwargs)


class _Response(AsyncHttpResponse):
    def __init__(self, request: Any, status: int, body: bytes) -> None:
        super().__init__(request, None)
        self.status_code = status
        self.reason = "OK"
        self.headers = {"Content-Type": "application/json"}
        self.content_type = "application/json"
        self._body = body

    def body(self) -> bytes:
        return self._body

    async def load_body(self) -> None:
        return None

    def text(self, encoding: str | None = None) -> str:
        return self._body.decode()

    def stream_download(self, pipeline: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


class CapturingTransport(AsyncHttpTransport):
    """Answers Call Automation like ACS would, and keeps every request."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    async def __aenter__(self) -> CapturingTransport:
        return self

    async def __aexit__(self, *args: Any) -> None:
        return None

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def send(self, request: Any, **kwargs: Any) -> _Response:
        self.requests.append(request)
        if ":terminate" in request.url:
            return _Response(request, 204, b"")
        if ":transferToParticipant" in request.url or ":sendDtmfTones" in request.url:
            return _Response(request, 202, b'{"operationContext": "accepted"}')
        user = {"rawId": "8:acs:bot", "kind": "communicationUser", "communicationUser": {"id": "8:acs:bot"}}
        body = {"callConnectionId": f"cc-{len(self.requests)}", "serverCallId": "srv", "targets": [],
                "callConnectionState": "connecting", "callbackUri": "x", "source": user, "answeredBy": user}
        created = request.url.split("?")[0].endswith("/calling/callConnections")  # createCall answers 201
        return _Response(request, 201 if created else 200, json.dumps(body).encode())

    def of(self, marker: str) -> list[Any]:
        return [r for r in self.requests if marker in r.url]

"""Helpers the socket tests share: serving an aiohttp app on 127.0.0.1, and a Call Automation
transport that answers like ACS without leaving the machine."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from azure.core.pipeline.transport import AsyncHttpResponse, AsyncHttpTransport


async def serve(app: web.Application, **runner_options: Any) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on a free loopback port: (its runner, to clean up; its ``http://127.0.0.1:PORT``)."""
    runner = web.AppRunner(app, **runner_options)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


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
        return _Response(request, 200, json.dumps(body).encode())

    def of(self, marker: str) -> list[Any]:
        return [r for r in self.requests if marker in r.url]

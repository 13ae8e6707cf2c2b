"""Deadlines for slow clients: request headers and bodies must arrive in time.

aiohttp's server waits for request headers and bodies as long as the client keeps the connection
open, so a client sending its headers a byte at a time (slowloris) holds a connection, and a
handler, for as long as it likes. :class:`GuardedAppRunner` serves an application with two
deadlines instead:

- the headers of a request must be complete within ``header_timeout_s``, counted from the moment
  the connection opened (first request) or the first byte of the request arrived (later requests
  on a kept-alive connection); otherwise the connection is closed. An idle kept-alive connection
  is left to aiohttp's keep-alive timeout.
- the body of a request must be complete within ``body_timeout_s`` of its handler starting;
  otherwise a handler still reading it gets ``408 Request Timeout`` and the connection is closed.

A WebSocket, once upgraded, has neither deadline: a media stream lasts as long as its call.

This leans on aiohttp's ``RequestHandler`` internals (it has no such options of its own, up to 3.14
at least); tests/sockets/test_slow_clients.py checks both deadlines over real sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse
from aiohttp.web_server import Server

from gateway.log import get_logger

log = get_logger("gateway.server")


@dataclass(frozen=True)
class ServerLimits:
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0


class GuardedRequestHandler(RequestHandler):
    """aiohttp's HTTP protocol, with a deadline on each request's headers and body."""

    __slots__ = ("_header_timer", "_limits")

    def __init__(self, manager: Server, limits: ServerLimits, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = limits
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._upgraded:  # a WebSocket's frames: no deadline, nothing added
            super().data_received(data)
            return
        if self._header_timer is None and self._waiting_for_request():
            self._arm_header_timer()  # the first bytes of a new request on a kept-alive connection
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:  # a request's headers are complete
            self._disarm_header_timer()

    async def _handle_request(
        self,
        request: BaseRequest,
        start_time: float | None,
        request_handler: Callable[[BaseRequest], Awaitable[StreamResponse]],
    ) -> tuple[StreamResponse, bool]:
        payload = request.content
        if payload.is_eof():  # no body, or all of it already here (WebSocket upgrades have none)
            return await super()._handle_request(request, start_time, request_handler)
        timer = self._loop.call_later(self._limits.body_timeout_s, self._body_late, payload)
        try:
            return await super()._handle_request(request, start_time, request_handler)
        finally:
            timer.cancel()

    def _waiting_for_request(self) -> bool:
        """The connection is idle between requests: bytes arriving now start a new request."""
        return self._waiter is not None and not self._waiter.done() and not self._messages

    def _arm_header_timer(self) -> None:
        self._header_timer = self._loop.call_later(self._limits.header_timeout_s, self._headers_late)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport is None or self._upgraded:
            return
        log.info("closed a connection whose request headers were late", peer=str(self.peername),
                 timeout_s=self._limits.header_timeout_s)
        self.force_close()

    def _body_late(self, payload: StreamReader) -> None:
        if payload.is_eof() or self.transport is None:
            return
        log.info("request body late: answering 408 and closing the connection", peer=str(self.peername),
                 timeout_s=self._limits.body_timeout_s)
        self._lingering_time = 0.0  # read no more of it after the answer: close
        payload.set_exception(web.HTTPRequestTimeout(text="the request body was not received in time"))


class GuardedServer(Server):
    """aiohttp's server, making :class:`GuardedRequestHandler` connections."""

    def __init__(self, *args: Any, limits: ServerLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, self.limits, loop=self._loop, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections have the deadlines of ``limits``."""

    def __init__(self, app: web.Application, *, limits: ServerLimits | None = None, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.limits = limits or ServerLimits()

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        return GuardedServer(server.request_handler, request_factory=server.request_factory,
                             handler_cancellation=server.handler_cancellation, loop=server._loop,
                             limits=self.limits, **server._kwargs)

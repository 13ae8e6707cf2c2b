"""The phone's media socket (gateway.phonesocket.PhoneSocket) over real sockets: data messages are
offered to a taker as they are parsed, only while nothing waits in the queue, so that the reading
task and the taker together see the phone's messages in the order they came."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from gateway.phonesocket import PhoneSocket
from tests.sockets.loopback import route

LEFT = object()  # what a taker hands the reading task in a message's place


class Server:
    """One PhoneSocket, its taker's decisions and what reached each side."""

    def __init__(self) -> None:
        self.socket: PhoneSocket | None = None
        self.opened = asyncio.Event()
        self.taken: list[Any] = []  # offered and handled by the taker
        self.offered: list[Any] = []  # every offer
        self.decide: Callable[[Any], object] = lambda data: None
        self.change = asyncio.Condition()  # a message reached the reading task
        self.offer = asyncio.Event()  # a message was offered
        self.read_gate = asyncio.Event()  # the reading task reads once it is set
        self.received: list[Any] = []  # what the reading task read

    def take(self, data: Any) -> object:
        self.offered.append(data)
        self.offer.set()
        left = self.decide(data)
        if left is None:
            self.taken.append(data)
        return left

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = PhoneSocket(autoping=True)
        await ws.prepare(request)
        self.socket = ws
        self.opened.set()
        await self.read_gate.wait()
        async for msg in ws:
            async with self.change:
                self.received.append(msg.data)
                self.change.notify_all()
        return ws


@pytest.fixture
async def server() -> AsyncIterator[tuple[Server, str]]:
    srv = Server()
    async with route("/media", srv.handler) as base:
        try:
            yield srv, base.replace("http://", "ws://") + "/media"
        finally:
            srv.read_gate.set()  # a handler held at the gate ends, so the server shuts down at once


async def _offered(srv: Server, count: int) -> None:
    """Until the taker has been offered ``count`` messages (each offer is a parse of the socket's bytes)."""
    while len(srv.offered) < count:
        srv.offer.clear()
        await srv.offer.wait()


async def test_messages_are_taken_as_they_are_parsed_while_the_reading_task_is_held(server) -> None:
    srv, url = server
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as client:
        await srv.opened.wait()
        assert srv.socket is not None and srv.socket.direct
        assert srv.socket.offer_to(srv.take)
        for n in range(5):
            await client.send_str(f"frame {n}")
        await client.send_bytes(b"\x7f\xff")
        await asyncio.wait_for(_offered(srv, 6), 5)  # (the reading task has not read once: it is held)
        assert srv.taken == ["frame 0", "frame 1", "frame 2", "frame 3", "frame 4", b"\x7f\xff"]
        srv.read_gate.set()
        await client.send_str("after")  # the reading task reads nothing of what was taken
        await asyncio.wait_for(_offered(srv, 7), 5)
        assert srv.received == []


async def test_once_a_message_is_queued_the_ones_behind_it_are_queued_too(server) -> None:
    """A message the taker declines waits for the reading task; until the task has read it, the
    messages after it are not offered (they would overtake it)."""
    srv, url = server
    srv.decide = lambda data: data if data == "mark 1" else None
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as client:
        await srv.opened.wait()
        assert srv.socket is not None and srv.socket.offer_to(srv.take)
        await client.send_str("frame 0")
        await client.send_str("mark 1")
        await client.send_str("frame 2")
        await client.send_str("frame 3")
        await asyncio.wait_for(_offered(srv, 2), 5)
        srv.read_gate.set()
        async with srv.change:
            await asyncio.wait_for(srv.change.wait_for(lambda: len(srv.received) == 3), 5)
        assert srv.taken == ["frame 0"]
        assert srv.offered == ["frame 0", "mark 1"]
        assert srv.received == ["mark 1", "frame 2", "frame 3"]  # in the order they came
        await client.send_str("frame 4")  # the queue is empty again: offered
        await asyncio.wait_for(_offered(srv, 3), 5)
        assert srv.taken == ["frame 0", "frame 4"]


async def test_a_taker_can_leave_work_for_the_reading_task_in_the_messages_place(server) -> None:
    srv, url = server
    srv.decide = lambda data: LEFT if data == "stop" else None
    srv.read_gate.set()
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as client:
        await srv.opened.wait()
        assert srv.socket is not None and srv.socket.offer_to(srv.take)
        await client.send_str("frame 0")
        await client.send_str("stop")
        async with srv.change:
            await asyncio.wait_for(srv.change.wait_for(lambda: len(srv.received) == 1), 5)
        assert srv.received[0] is LEFT
        assert srv.taken == ["frame 0"]


async def test_control_frames_stay_aiohttps_and_no_taker_means_the_queue(server) -> None:
    srv, url = server
    srv.read_gate.set()
    async with aiohttp.ClientSession() as http, http.ws_connect(url, autoping=False) as client:
        await srv.opened.wait()
        assert srv.socket is not None and srv.socket.offer_to(srv.take)
        await client.ping(b"are you there")
        pong = await asyncio.wait_for(client.receive(), 5)
        assert pong.type is WSMsgType.PONG and pong.data == b"are you there"
        assert srv.offered == []  # a ping is not a phone message
        assert srv.socket.offer_to(None)
        await client.send_str("queued")
        async with srv.change:
            await asyncio.wait_for(srv.change.wait_for(lambda: srv.received == ["queued"]), 5)
        assert srv.offered == []

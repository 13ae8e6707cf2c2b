"""The benchmark's phone (bench/loadgen.py) against a stand-in for the gateway on loopback: what it
sends back when the gateway flushes its playback."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

from bench.loadgen import LoadGenerator, SimCall, TwilioDialect
from tests.sockets.loopback import serve


def compact(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))  # as the gateway writes its messages


@contextlib.asynccontextmanager
async def one_call(gateway: Callable[[web.Request], Awaitable[web.WebSocketResponse]],
                   kernel_clock: bool = False) -> AsyncIterator[tuple[LoadGenerator, SimCall]]:
    """The load generator with one call open on a stand-in gateway (``gateway``: its media socket)."""
    app = web.Application()
    app.router.add_get("/twilio/media", gateway)
    runner, base = await serve(app)
    try:
        args = argparse.Namespace(twilio_token="token", signing_key="k" * 64)
        phone = LoadGenerator(base.replace("http", "ws") + "/twilio/media", TwilioDialect(args), (0.0, 1e12),
                              kernel_clock=kernel_clock)
        await phone.open_call(0)  # (its opening messages are written by now)
        (call,) = phone.calls
        yield phone, call
    finally:
        await runner.cleanup()


async def test_after_a_clear_the_phone_echoes_every_pending_mark_at_once_in_one_write() -> None:
    echoes: asyncio.Queue[str] = asyncio.Queue()

    async def gateway(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        assert json.loads((await ws.receive()).data)["event"] == "connected"
        sid = json.loads((await ws.receive()).data)["streamSid"]
        audio = "/" * 16_000  # 1.5 s of µ-law (12,000 bytes): the marks after it stay pending
        for name in ("1", "2", "3"):
            await ws.send_str(compact({"event": "media", "streamSid": sid, "media": {"payload": audio}}))
            await ws.send_str(compact({"event": "mark", "streamSid": sid, "mark": {"name": name}}))
        await ws.send_str(compact({"event": "clear", "streamSid": sid}))
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await echoes.put(msg.data)
        return ws

    writes: list[bytes] = []
    async with one_call(gateway) as (_, call):
        transport: Any = call.ws.transport
        write = transport.write
        transport.write = lambda data: (writes.append(bytes(data)), write(data))[1]
        try:
            names = [json.loads(await asyncio.wait_for(echoes.get(), 5))["mark"]["name"] for _ in range(3)]
        finally:
            transport.write = write
            await call.ws.close()
    assert names == ["1", "2", "3"]
    assert len(writes) == 1  # one write carried all three (no caller frames here: the phones' clock is not running)


async def test_the_phone_plays_and_stops_by_when_the_bytes_arrived_not_by_when_its_busy_process_reads_them() -> None:
    """A phone plays the bot's audio from its arrival and stops when the ``clear`` arrives; the
    harness's process may read both late (its core is busy). Its figures follow the kernel's receive
    time, and the read time is kept beside them."""
    busy_s = 0.15
    sent: list[float] = []
    echoes: list[str] = []

    async def gateway(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        assert json.loads((await ws.receive()).data)["event"] == "connected"
        sid = json.loads((await ws.receive()).data)["streamSid"]
        sent.append(time.monotonic())
        await ws.send_str(compact({"event": "media", "streamSid": sid, "media": {"payload": "/" * 16_000}}))
        await ws.send_str(compact({"event": "mark", "streamSid": sid, "mark": {"name": "1"}}))
        await ws.send_str(compact({"event": "clear", "streamSid": sid}))
        time.sleep(busy_s)  # noqa: ASYNC251 (the phone's process is busy: one event loop here; it reads all three late)
        echoes.append(json.loads((await ws.receive()).data)["mark"]["name"])  # once it has handled the clear
        await ws.close()
        return ws

    async with one_call(gateway, kernel_clock=True) as (phone, call):
        await asyncio.gather(*phone._readers)  # the call's reader, until the stand-in closes after its messages
    assert phone.errors == []
    assert echoes == ["1"]
    assert call.ws.stamped is not None and call.ws.stamped.arrived is not None, "no kernel receive time"
    (arrived,), (read,) = call.clears, call.clears_read
    assert sent[0] <= arrived < sent[0] + 0.05  # within the sender's three writes, not the busy pause
    assert read - arrived >= busy_s * 0.9
    (_, _, played_ms, at), = call.played
    (_, _, played_read_ms, at_read), = call.played_read
    assert (at, at_read) == (arrived, read)
    assert played_ms < 50  # the clear came right behind the audio: next to nothing was played
    assert played_read_ms >= busy_s * 900  # counted by the read, the busy pause would have played

"""The benchmark's phone (bench/loadgen.py) against a stand-in for the gateway on loopback: what it
sends back when the gateway flushes its playback."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from aiohttp import WSMsgType, web

from bench.loadgen import LoadGenerator, TwilioDialect
from tests.sockets.loopback import serve


def compact(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))  # as the gateway writes its messages


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

    app = web.Application()
    app.router.add_get("/twilio/media", gateway)
    runner, base = await serve(app)
    writes: list[bytes] = []
    try:
        args = argparse.Namespace(twilio_token="token", signing_key="k" * 64)
        phone = LoadGenerator(base.replace("http", "ws") + "/twilio/media", TwilioDialect(args), (0.0, 1e12))
        await phone.open_call(0)  # (its opening messages are written by now)
        (call,) = phone.calls
        transport: Any = call.ws.transport
        write = transport.write
        transport.write = lambda data: (writes.append(bytes(data)), write(data))[1]
        try:
            names = [json.loads(await asyncio.wait_for(echoes.get(), 5))["mark"]["name"] for _ in range(3)]
        finally:
            transport.write = write
            await call.ws.close()
    finally:
        await runner.cleanup()
    assert names == ["1", "2", "3"]
    assert len(writes) == 1  # one write carried all three (no caller frames here: the phones' clock is not running)

"""A naive forwarder, the floor a gateway is compared with: Twilio media in, Voice Live out, nothing else.

One aiohttp server for Twilio's media socket; per call one aiohttp WebSocket client to Voice Live
(here the benchmark stand-in) with a g711_ulaw session. Caller ``media`` becomes
``input_audio_buffer.append``, each ``response.audio.delta`` becomes one Twilio ``media`` message,
``speech_started`` becomes ``clear``. No authentication, no marks (so no truncation), no logs, no
reconnects. JSON is written compact, as the load generator and the stand-in read it.

    python -m bench.forwarder --port 8080 --voicelive http://127.0.0.1:8765
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import aiohttp
from aiohttp import web

COMPACT = (",", ":")
HTTP = web.AppKey("http", aiohttp.ClientSession)
SESSION: dict[str, Any] = {"input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw",
                           "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}


class Passthrough:
    """The audio as it is: both legs are µ-law at 8 kHz (a transcoder converts here, per call)."""

    session = SESSION

    def to_voicelive(self, payload: str) -> str:
        return payload

    def to_phone(self, delta: str) -> str:
        return delta


async def from_voicelive(vl: aiohttp.ClientWebSocketResponse, phone: web.WebSocketResponse, sid: str,
                         codec: Passthrough) -> None:
    async for msg in vl:
        if msg.type is not aiohttp.WSMsgType.TEXT:
            continue
        event = json.loads(msg.data)
        kind = event.get("type")
        if kind == "response.audio.delta":
            payload = codec.to_phone(event["delta"])
            await phone.send_str(json.dumps({"event": "media", "streamSid": sid, "media": {"payload": payload}},
                                            separators=COMPACT))
        elif kind == "input_audio_buffer.speech_started":
            await phone.send_str(json.dumps({"event": "clear", "streamSid": sid}, separators=COMPACT))


def make_app(voicelive: str, codec: type[Passthrough] = Passthrough) -> web.Application:
    url = (voicelive.replace("http", "ws", 1).rstrip("/")
           + "/voice-live/realtime?api-version=2026-01-01-preview&model=gpt-realtime")

    async def media(request: web.Request) -> web.WebSocketResponse:
        phone = web.WebSocketResponse(compress=False)
        await phone.prepare(request)
        http: aiohttp.ClientSession = request.app[HTTP]
        vl: aiohttp.ClientWebSocketResponse | None = None
        pump: asyncio.Task[None] | None = None
        call = codec()
        try:
            async for msg in phone:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                event = json.loads(msg.data)
                kind = event.get("event")
                if kind == "media" and vl is not None:
                    audio = call.to_voicelive(event["media"]["payload"])
                    await vl.send_str(json.dumps({"type": "input_audio_buffer.append", "audio": audio},
                                                 separators=COMPACT))
                elif kind == "start" and vl is None:
                    vl = await http.ws_connect(url, max_msg_size=1 << 24)
                    await vl.send_str(json.dumps({"type": "session.update", "session": call.session}))
                    pump = asyncio.create_task(from_voicelive(vl, phone, event["start"]["streamSid"], call))
                elif kind == "stop":
                    break
        finally:
            if pump is not None:
                pump.cancel()
            if vl is not None:
                await vl.close()
        return phone

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def session(app: web.Application) -> Any:
        # no pool limit: aiohttp's default of 100 connections would cap a step at 100 calls
        app[HTTP] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        yield
        await app[HTTP].close()

    app = web.Application()
    app.router.add_get("/twilio/media", media)
    app.router.add_get("/healthz", healthz)
    app.cleanup_ctx.append(session)
    return app


def main(codec: type[Passthrough] = Passthrough, doc: str | None = __doc__) -> None:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--voicelive", required=True, help="the Voice Live endpoint (http://host:port)")
    args = parser.parse_args()
    try:
        import uvloop  # the same event loop as the gateway's, where installed
        loop: asyncio.AbstractEventLoop | None = uvloop.new_event_loop()
    except ImportError:
        loop = None
    web.run_app(make_app(args.voicelive, codec), host=args.host, port=args.port, print=None,
                access_log=None, backlog=4096, loop=loop)


if __name__ == "__main__":
    main()

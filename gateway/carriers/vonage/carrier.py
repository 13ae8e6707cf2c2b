"""Vonage as the application sees it (see :class:`gateway.carriers.base.Carrier`)."""

from __future__ import annotations

import binascii
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp
from aiohttp import web

from gateway.carriers.base import Carrier, OutboundRequest, PlacedCall, ReplayError, ReplayStart
from gateway.carriers.vonage import codec
from gateway.carriers.vonage import outbound as placed
from gateway.carriers.vonage.routes import PIECE_MS, REST, vonage_answer, vonage_event, vonage_media
from gateway.carriers.vonage.settings import VonageSettings

if TYPE_CHECKING:
    from gateway.config import GatewayConfig


class VonageCarrier(Carrier):
    name: ClassVar[str] = "vonage"
    places_calls: ClassVar[bool] = True

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/vonage/answer", vonage_answer), web.post("/vonage/answer", vonage_answer),
                web.post("/vonage/event", vonage_event), web.get("/vonage/event", vonage_event),
                web.get("/vonage/media", vonage_media), *placed.routes()]

    def outbound_refusal(self, config: GatewayConfig) -> str | None:
        return placed.refusal(config)

    async def place_call(self, app: web.Application, request: OutboundRequest) -> PlacedCall:
        return await placed.place_call(app, request)

    async def running(self, app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as rest:  # the Voice API (placing calls, hang-up, transfer, keys)
            app[REST] = rest
            yield

    def notes(self, config: GatewayConfig) -> list[str]:
        settings = VonageSettings.of(config)
        if settings.signature_secret is None and not config.gateway.insecure_dev_mode:
            return ["VONAGE_SIGNATURE_SECRET is not set: Vonage webhooks are refused (403)"]
        return []

    def replay_start(self, header: dict[str, Any], records: list[dict[str, Any]]) -> ReplayStart:
        for index, rec in enumerate(records):
            if rec["leg"] == "phone" and rec.get("dir") == "in" and isinstance(rec.get("msg"), str):
                try:
                    event = codec.parse_event(rec["msg"])
                except codec.VonageProtocolError:
                    continue
                if isinstance(event, codec.Connected):
                    call_id = str(header.get("call_id") or event.headers.get("call") or "")
                    stream_id = str(header.get("stream_id") or call_id)
                    return ReplayStart(index, codec.VonageLeg(), call_id, stream_id, codec.AUDIO,
                                       started_at=rec["t"], options={"piece_ms": PIECE_MS})
        raise ReplayError("no websocket:connected message in the recording")

    def replay_socket(self, header: dict[str, Any]) -> tuple[str, dict[str, str]]:
        return "/vonage/media", {}  # the recorded websocket:connected names the call (insecure dev mode)

    def caller_audio(self, message: str | bytes) -> str | None:
        if type(message) is bytes and message and not len(message) & 1:
            return binascii.b2a_base64(message, newline=False).decode("ascii")
        return None

    def playback_ack(self, message: str | bytes) -> bool:
        return isinstance(message, str) and '"websocket:notify"' in message

    def outbound_kind(self, message: str | bytes) -> str | None:
        if type(message) is bytes:
            return "audio"
        return "flush" if message == codec.CLEAR else None


CARRIER = VonageCarrier

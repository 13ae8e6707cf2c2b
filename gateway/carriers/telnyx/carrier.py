"""Telnyx as the application sees it (see :class:`gateway.carriers.base.Carrier`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp
from aiohttp import web

from gateway.audio import FORMATS, G711_ULAW
from gateway.carriers.base import Carrier, OutboundRequest, PlacedCall, ReplayError, ReplayStart
from gateway.carriers.telnyx import codec
from gateway.carriers.telnyx import outbound as placed
from gateway.carriers.telnyx.routes import REST, telnyx_media, telnyx_stream_ended, telnyx_voice
from gateway.carriers.telnyx.settings import TelnyxSettings

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

_OUTBOUND_KINDS = {"media": "audio", "clear": "flush"}


class TelnyxCarrier(Carrier):
    name: ClassVar[str] = "telnyx"
    places_calls: ClassVar[bool] = True

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/telnyx/voice", telnyx_voice), web.get("/telnyx/media", telnyx_media),
                web.post("/telnyx/stream-ended", telnyx_stream_ended), *placed.routes()]

    def outbound_refusal(self, config: GatewayConfig) -> str | None:
        return placed.refusal(config)

    async def place_call(self, app: web.Application, request: OutboundRequest) -> PlacedCall:
        return await placed.place_call(app, request)

    async def running(self, app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as rest:  # the TeXML REST API (transfers, placed calls)
            app[REST] = rest
            yield

    def notes(self, config: GatewayConfig) -> list[str]:
        if TelnyxSettings.of(config).public_key is None and not config.gateway.insecure_dev_mode:
            return ["TELNYX_PUBLIC_KEY is not set: Telnyx requests are refused (403)"]
        return []

    def replay_start(self, header: dict[str, Any], records: list[dict[str, Any]]) -> ReplayStart:
        for index, rec in enumerate(records):
            if rec["leg"] == "phone" and rec.get("dir") == "in" and isinstance(rec.get("msg"), str):
                try:
                    event = codec.parse_message(rec["msg"])
                except codec.TelnyxProtocolError:
                    continue
                if isinstance(event, codec.Start):
                    audio = FORMATS.get(header.get("audio_format", "g711_ulaw"), G711_ULAW)
                    return ReplayStart(index, codec.TelnyxLeg(event), event.call_control_id, event.stream_id,
                                       audio, started_at=rec["t"])
        raise ReplayError("no Telnyx start message in the recording")

    def replay_socket(self, header: dict[str, Any]) -> tuple[str, dict[str, str]]:
        return "/telnyx/media", {}  # the recorded start message names the call

    def caller_audio(self, message: str | bytes) -> str | None:
        try:
            event = codec.parse_message(message)
        except codec.TelnyxProtocolError:
            return None
        return event.payload if isinstance(event, codec.Media) and event.track == "inbound" else None

    def playback_ack(self, message: str | bytes) -> bool:
        try:
            return isinstance(codec.parse_message(message), codec.MarkAck)
        except codec.TelnyxProtocolError:
            return False

    def outbound_kind(self, message: str | bytes) -> str | None:
        try:
            event = json.loads(message).get("event")
        except (ValueError, AttributeError):
            return None
        return _OUTBOUND_KINDS.get(event) if isinstance(event, str) else None


CARRIER = TelnyxCarrier

"""Plivo as the application sees it (see :class:`gateway.carriers.base.Carrier`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp
from aiohttp import web

from gateway.audio import G711_ULAW
from gateway.carriers.base import Carrier, OutboundRequest, PlacedCall, ReplayError, ReplayStart
from gateway.carriers.plivo import codec
from gateway.carriers.plivo import outbound as placed
from gateway.carriers.plivo.routes import (
    CALL_UUIDS,
    REST,
    plivo_answer,
    plivo_media,
    plivo_stream_ended,
    plivo_transfer,
)
from gateway.carriers.plivo.settings import PlivoSettings

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

_OUTBOUND_KINDS = {"playAudio": "audio", "clearAudio": "flush"}


class PlivoCarrier(Carrier):
    name: ClassVar[str] = "plivo"
    places_calls: ClassVar[bool] = True

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/plivo/answer", plivo_answer), web.get("/plivo/media", plivo_media),
                web.post("/plivo/stream-ended", plivo_stream_ended), web.post("/plivo/transfer", plivo_transfer),
                *placed.routes()]

    def install(self, app: web.Application, config: GatewayConfig) -> None:
        app[CALL_UUIDS] = {}

    def outbound_refusal(self, config: GatewayConfig) -> str | None:
        return placed.refusal(config)

    async def place_call(self, app: web.Application, request: OutboundRequest) -> PlacedCall:
        return await placed.place_call(app, request)

    async def running(self, app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as rest:  # the REST API (transfers, placing calls)
            app[REST] = rest
            yield

    def notes(self, config: GatewayConfig) -> list[str]:
        if PlivoSettings.of(config).auth_token is None and not config.gateway.insecure_dev_mode:
            return ["PLIVO_AUTH_TOKEN is not set: Plivo requests are refused (403)"]
        return []

    def replay_start(self, header: dict[str, Any], records: list[dict[str, Any]]) -> ReplayStart:
        for index, rec in enumerate(records):
            if rec["leg"] == "phone" and rec.get("dir") == "in" and isinstance(rec.get("msg"), str):
                try:
                    event = codec.parse_message(rec["msg"])
                except codec.PlivoProtocolError:
                    continue
                if isinstance(event, codec.Start):
                    # a call the gateway placed ran under its request's id, not the stream's CallUUID
                    recorded = header.get("call_id")
                    call_id = recorded if isinstance(recorded, str) and recorded else event.call_id
                    return ReplayStart(index, codec.PlivoLeg(event), call_id, event.stream_id, G711_ULAW,
                                       started_at=rec["t"], options={"late_acks": True})
        raise ReplayError("no Plivo start message in the recording")

    def replay_socket(self, header: dict[str, Any]) -> tuple[str, dict[str, str]]:
        return "/plivo/media", {}  # the recorded start message names the call; the profile is the default

    def caller_audio(self, message: str | bytes) -> str | None:
        try:
            event = codec.parse_message(message)
        except codec.PlivoProtocolError:
            return None
        return event.payload if isinstance(event, codec.Media) and event.track == "inbound" else None

    def playback_ack(self, message: str | bytes) -> bool:
        # a checkpoint played, or a clearAudio carried out: both answer what the gateway sent
        return isinstance(message, str) and ('"event":"playedStream"' in message or '"event":"clearedAudio"' in message)

    def outbound_kind(self, message: str | bytes) -> str | None:
        try:
            event = json.loads(message).get("event")
        except (ValueError, AttributeError):
            return None
        return _OUTBOUND_KINDS.get(event) if isinstance(event, str) else None


CARRIER = PlivoCarrier

"""Asterisk (chan_websocket) as the application sees it (see :class:`gateway.carriers.base.Carrier`)."""

from __future__ import annotations

import asyncio
import binascii
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp
from aiohttp import web

from gateway.audio import FORMATS, G711_ULAW, apology_clip
from gateway.carriers.asterisk import codec
from gateway.carriers.asterisk import outbound as placed
from gateway.carriers.asterisk.routes import PACED_PIECE_MS, asterisk_media
from gateway.carriers.asterisk.settings import AsteriskSettings
from gateway.carriers.base import Carrier, OutboundRequest, PlacedCall, ReplayError, ReplayStart

if TYPE_CHECKING:
    from gateway.config import GatewayConfig


def _is_mark(message: str) -> bool:
    return message.startswith("MARK_MEDIA") or (message.startswith("{") and '"MARK_MEDIA"' in message)


class AsteriskCarrier(Carrier):
    name: ClassVar[str] = "asterisk"
    places_calls: ClassVar[bool] = True  # through ARI (see gateway.carriers.asterisk.outbound)

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/asterisk/media", asterisk_media)]

    def outbound_refusal(self, config: GatewayConfig) -> str | None:
        return placed.refusal(config)

    async def place_call(self, app: web.Application, request: OutboundRequest) -> PlacedCall:
        return await placed.place_call(app, request)

    async def running(self, app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as ari:  # ARI: originating placed calls, following their channels
            app[placed.ARI] = ari
            app[placed.WATCHES] = {}
            try:
                yield
            finally:
                watches = list(app[placed.WATCHES].values())
                for task in watches:
                    task.cancel()
                await asyncio.gather(*watches, return_exceptions=True)

    def notes(self, config: GatewayConfig) -> list[str]:
        if not AsteriskSettings.of(config).has_credential and not config.gateway.insecure_dev_mode:
            return ["Asterisk credentials are not set (asterisk.username and ASTERISK_WS_PASSWORD, or "
                    "ASTERISK_WS_TOKEN): Asterisk media sockets are refused (401)"]
        return []

    def replay_start(self, header: dict[str, Any], records: list[dict[str, Any]]) -> ReplayStart:
        for index, rec in enumerate(records):
            if rec["leg"] == "phone" and rec.get("dir") == "in" and isinstance(rec.get("msg"), str):
                try:
                    event = codec.parse_control(rec["msg"])
                except codec.AsteriskProtocolError:
                    continue
                if isinstance(event, codec.MediaStart):
                    audio = FORMATS.get(header.get("audio_format", "g711_ulaw"), G711_ULAW)
                    # a call without playback marks paced its audio: it sent audio and never a mark
                    sent = [r.get("msg") for r in records if r["leg"] == "phone" and r.get("dir") == "out"]
                    audio_out = any(r["leg"] == "phone" and r.get("dir") == "out" and "binary" in r
                                    for r in records)
                    paced = audio_out and not any(isinstance(m, str) and _is_mark(m) for m in sent)
                    options: dict[str, Any] = ({"paced": True, "piece_ms": PACED_PIECE_MS} if paced
                                               else {"late_acks": True})
                    options["fallback_audio"] = apology_clip(audio)
                    call_id = str(header.get("call_id") or event.channel_id or event.connection_id)
                    return ReplayStart(index, codec.AsteriskLeg(event), call_id, event.connection_id, audio,
                                       started_at=rec["t"], options=options)
        raise ReplayError("no Asterisk MEDIA_START in the recording")

    def replay_socket(self, header: dict[str, Any]) -> tuple[str, dict[str, str]]:
        return "/asterisk/media", {}  # the recorded MEDIA_START names the call

    def caller_audio(self, message: str | bytes) -> str | None:
        if isinstance(message, bytes) and message:
            return binascii.b2a_base64(message, newline=False).decode("ascii")
        return None

    def playback_ack(self, message: str | bytes) -> bool:
        if not isinstance(message, str):
            return False
        return message.startswith("MEDIA_MARK_PROCESSED") or (
            message.startswith("{") and '"MEDIA_MARK_PROCESSED"' in message)

    def outbound_kind(self, message: str | bytes) -> str | None:
        if isinstance(message, bytes):
            return "audio"
        if message == "FLUSH_MEDIA" or (message.startswith("{") and '"FLUSH_MEDIA"' in message):
            return "flush"
        return None


CARRIER = AsteriskCarrier

"""Genesys Cloud AudioConnector as the application sees it (see :class:`gateway.carriers.base.Carrier`)."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, ClassVar

from aiohttp import web

from gateway.audio import G711_ULAW
from gateway.carriers.base import Carrier, ReplayError, ReplayStart
from gateway.carriers.genesys import codec
from gateway.carriers.genesys.auth import NonceCache
from gateway.carriers.genesys.routes import NONCES, genesys_audiohook
from gateway.carriers.genesys.settings import GenesysSettings

if TYPE_CHECKING:
    from gateway.config import GatewayConfig


class GenesysCarrier(Carrier):
    name: ClassVar[str] = "genesys"

    def routes(self) -> list[web.RouteDef]:
        # Genesys appends the Architect action's Connector ID to the integration's URI: any one is taken
        return [web.get("/genesys/audiohook", genesys_audiohook),
                web.get("/genesys/audiohook/{connector_id}", genesys_audiohook)]

    def install(self, app: web.Application, config: GatewayConfig) -> None:
        app[NONCES] = NonceCache()

    def notes(self, config: GatewayConfig) -> list[str]:
        settings = GenesysSettings.of(config)
        if (settings.api_key is None or settings.client_secret is None) and not config.gateway.insecure_dev_mode:
            return ["GENESYS_API_KEY or GENESYS_CLIENT_SECRET is not set: Genesys AudioHook sessions are refused (403)"]
        return []

    def replay_start(self, header: dict[str, Any], records: list[dict[str, Any]]) -> ReplayStart:
        if not any(rec["leg"] == "phone" and rec.get("dir") == "in" for rec in records):
            raise ReplayError("no message from the Genesys AudioHook socket in the recording")
        # the call began with its socket, before the open: every record is replayed (index -1)
        return ReplayStart(-1, codec.GenesysLeg(), str(header.get("call_id") or ""), str(header.get("stream_id") or ""),
                           G711_ULAW, started_at=0.0, options={"paced": True, "piece_ms": codec.GENESYS_PIECE_MS})

    def replay_socket(self, header: dict[str, Any]) -> tuple[str, dict[str, str]]:
        return "/genesys/audiohook", {"Audiohook-Session-Id": str(header.get("stream_id") or ""),
                                      "Audiohook-Organization-Id": "00000000-0000-0000-0000-000000000000",
                                      "Audiohook-Correlation-Id": str(header.get("call_id") or "")}

    def __init__(self) -> None:
        self._stereo = False  # the session read so far chose a stereo offer (see caller_audio)

    def caller_audio(self, message: str | bytes) -> str | None:
        """The caller's audio in a binary frame: the frame itself, or its external channel when the
        session's open (read before, in order) chose a stereo offer."""
        if type(message) is not bytes:
            if '"open"' in message:
                try:
                    opened = codec.parse_open(codec.parse_message(message))
                except codec.GenesysProtocolError:
                    return None
                media = codec.choose_media(opened.media)
                self._stereo = media is not None and len(media.channels) == 2
            return None
        if not message or (self._stereo and len(message) % 2):
            return None
        return base64.b64encode(message[0::2] if self._stereo else message).decode("ascii")

    def playback_ack(self, message: str | bytes) -> bool:
        """Genesys acknowledges no playback; but its ``close`` with reason ``disconnect`` answers the
        gateway's ``disconnect``, so a replay over sockets sends it in answer to that, not on the clock."""
        if type(message) is not str or '"close"' not in message:
            return False
        try:
            parsed = codec.parse_message(message)
        except codec.GenesysProtocolError:
            return False
        return parsed.type == "close" and parsed.parameters.get("reason") == "disconnect"

    def phone_reply(self, message: str | bytes) -> bool:
        return type(message) is str and '"type":"pong"' in message

    def outbound_kind(self, message: str | bytes) -> str | None:
        if type(message) is bytes:
            return "audio"
        return "flush" if '"type":"event"' in message and '"barge_in"' in message else None


CARRIER = GenesysCarrier

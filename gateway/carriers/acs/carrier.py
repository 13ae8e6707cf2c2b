"""Azure Communication Services as the application sees it (see :class:`gateway.carriers.base.Carrier`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar

from aiohttp import web

from gateway.audio import ASSETS, FORMATS, PCM16_24K
from gateway.carriers.acs import codec
from gateway.carriers.acs import outbound as placed
from gateway.carriers.acs.auth import AcsJwtValidator
from gateway.carriers.acs.control import ACS_PIECE_MS, load_apology
from gateway.carriers.acs.routes import STATE, AcsState, acs_callbacks, acs_incoming, acs_incoming_options, acs_media
from gateway.carriers.acs.settings import AcsSettings
from gateway.carriers.base import Carrier, OutboundRequest, PlacedCall, ReplayError, ReplayStart

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

_OUTBOUND_KINDS = {"audiodata": "audio", "stopaudio": "flush"}
REPLAY_RECONNECT_GRACE_S = 1.0


class AcsCarrier(Carrier):
    """``client`` (a Call Automation client) replaces the one made from the connection string."""

    name: ClassVar[str] = "acs"
    places_calls: ClassVar[bool] = True

    def __init__(self, client: Any = None) -> None:
        self._client = client
        self._config: GatewayConfig | None = None

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/acs/incoming", acs_incoming), web.route("OPTIONS", "/acs/incoming", acs_incoming_options),
                web.post("/acs/callbacks", acs_callbacks), web.get("/acs/media", acs_media)]

    def outbound_refusal(self, config: GatewayConfig) -> str | None:
        has_client = self._client is not None or AcsSettings.of(config).connection_string is not None
        return placed.refusal(config, object() if has_client else None)

    async def place_call(self, app: web.Application, request: OutboundRequest) -> PlacedCall:
        return await placed.place_call(app, request)

    def install(self, app: web.Application, config: GatewayConfig) -> None:
        self._config = config
        acs = AcsSettings.of(config)
        clip = acs.fallback_clip or str(ASSETS / "apology.wav")
        app[STATE] = AcsState(apology=load_apology(clip, acs.sample_rate))

    async def running(self, app: web.Application) -> AsyncIterator[None]:
        config, state = self._config, app[STATE]
        assert config is not None, "install() first"
        acs, owned = AcsSettings.of(config), None
        if self._client is None and acs.connection_string is not None:
            from azure.communication.callautomation.aio import CallAutomationClient

            owned = CallAutomationClient.from_connection_string(acs.connection_string.get_secret_value())
        state.client = self._client or owned
        if acs.resource_id:
            state.validator = AcsJwtValidator(acs.jwks_url, audience=acs.resource_id, issuer=acs.issuer)
        try:
            yield
        finally:
            if state.validator is not None:
                await state.validator.close()
            if owned is not None:
                await owned.close()

    def replay_start(self, header: dict[str, Any], records: list[dict[str, Any]]) -> ReplayStart:
        audio = FORMATS.get(header.get("audio_format", "pcm16"), PCM16_24K)
        if not any(rec["leg"] == "phone" and rec.get("dir") == "in" for rec in records):
            raise ReplayError("no message from the ACS media socket in the recording")
        # the call began with its socket, before any message: every record is replayed (index -1)
        clip = load_apology(str(ASSETS / "apology.wav"), audio.sample_rate)
        return ReplayStart(-1, codec.AcsLeg(), str(header.get("call_id") or ""), str(header.get("stream_id") or ""),
                           audio, started_at=0.0,
                           options={"paced": True, "piece_ms": ACS_PIECE_MS, "fallback_audio": clip})

    def replay_socket(self, header: dict[str, Any]) -> tuple[str, dict[str, str]]:
        return "/acs/media", {"x-ms-call-connection-id": str(header.get("call_id") or ""),
                              "x-ms-call-correlation-id": str(header.get("stream_id") or "")}

    def replay_settings(self, header: dict[str, Any]) -> dict[str, Any]:
        audio = FORMATS.get(header.get("audio_format", "pcm16"), PCM16_24K)
        # a replayed phone that hangs up closes its socket: the call ends after the grace for a reconnect
        return {"acs": {"sample_rate": audio.sample_rate, "reconnect_grace_s": REPLAY_RECONNECT_GRACE_S}}

    def caller_audio(self, message: str | bytes) -> str | None:
        try:
            event = codec.parse_message(message)
        except codec.AcsProtocolError:
            return None
        return event.data if isinstance(event, codec.Audio) else None

    def outbound_kind(self, message: str | bytes) -> str | None:
        try:
            kind = json.loads(message).get("kind")
        except (ValueError, AttributeError):
            return None
        return _OUTBOUND_KINDS.get(kind.lower()) if isinstance(kind, str) else None


CARRIER = AcsCarrier

"""The console's phone as the application sees it (see :class:`gateway.carriers.base.Carrier`)."""

from __future__ import annotations

import binascii
from typing import TYPE_CHECKING, Any, ClassVar

from aiohttp import web

from gateway.audio import FORMATS, apology_clip
from gateway.carriers.base import Carrier, ReplayError, ReplayStart
from gateway.carriers.browser import codec
from gateway.carriers.browser.routes import console_media
from gateway.console.auth import console_mode
from gateway.console.routes import MEDIA_PATH  # (the page opens it: the console owns the path)

if TYPE_CHECKING:
    from gateway.config import GatewayConfig



class BrowserCarrier(Carrier):
    """Operators' calls from the console page: the page is the phone, its microphone the caller."""

    name: ClassVar[str] = "browser"

    def routes(self) -> list[web.RouteDef]:
        return [web.get(MEDIA_PATH, console_media)]

    def notes(self, config: GatewayConfig) -> list[str]:
        # (an open console, and one behind its token, are announced with the application's security notes)
        if console_mode(config) == "off":
            return ["GATEWAY_CONSOLE_TOKEN (gateway.console_token) is not set: the console and its media socket "
                    "are off (404)"]
        return []

    # --- recordings -----------------------------------------------------------------------------

    def replay_start(self, header: dict[str, Any], records: list[dict[str, Any]]) -> ReplayStart:
        for index, rec in enumerate(records):
            if rec["leg"] == "phone" and rec.get("dir") == "in" and isinstance(rec.get("msg"), str):
                try:
                    message = codec.parse_message(rec["msg"])
                except codec.BrowserProtocolError:
                    continue
                if isinstance(message, codec.Start):
                    call_id = str(header.get("call_id") or "")
                    if not call_id:
                        raise ReplayError("the recording names no call id")
                    audio = FORMATS.get(header.get("audio_format", codec.AUDIO.key), codec.AUDIO)
                    profile = str(header.get("profile_name") or message.profile)
                    leg = codec.BrowserLeg(call_id, profile, rec["t"])
                    # the page saw the call's events as they came: the replayed call reports them to it too
                    options: dict[str, Any] = {"observer": leg.observe, "fallback_audio": apology_clip(audio)}
                    return ReplayStart(index, leg, call_id, str(header.get("stream_id") or call_id), audio,
                                       started_at=rec["t"], options=options)
        raise ReplayError("no start message from the console page in the recording")

    def replay_socket(self, header: dict[str, Any]) -> tuple[str, dict[str, str]]:
        return MEDIA_PATH, {}  # (a replay's gateway runs in insecure development mode: the console is open)

    def caller_audio(self, message: str | bytes) -> str | None:
        if isinstance(message, bytes) and codec.frame_problem(message) is None:
            return binascii.b2a_base64(message, newline=False).decode("ascii")
        return None

    def playback_ack(self, message: str | bytes) -> bool:
        if not isinstance(message, str) or '"played"' not in message:
            return False
        try:
            return isinstance(codec.parse_message(message), codec.Played)
        except codec.BrowserProtocolError:
            return False

    def outbound_kind(self, message: str | bytes) -> str | None:
        if isinstance(message, bytes):
            return "audio"
        return "flush" if message == codec.CLEAR_MESSAGE else None


CARRIER = BrowserCarrier

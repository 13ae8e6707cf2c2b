"""Call control on Vonage: hang-up, transfer and keys through the Voice API (``PUT /v1/calls/{uuid}``
and ``PUT /v1/calls/{uuid}/dtmf``), signed with the application JWT.

Without the application's credentials the gateway hangs up by closing the media socket: the NCCO's
``connect`` ends and, nothing following it, so does the call. When the gateway failed the call
(Voice Live unavailable), it also only closes the socket: Vonage then posts ``disconnected`` to the
event webhook, which answers with an apology (see :mod:`gateway.carriers.vonage.routes`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

import aiohttp

from gateway.bridge import FAILURE_ENDS, CallBridge
from gateway.carriers.vonage import codec
from gateway.carriers.vonage.auth import application_jwt
from gateway.carriers.vonage.settings import VonageSettings

API_TIMEOUT_S = 10.0


class VonageApiError(RuntimeError):
    """A Voice API request did not succeed (the text says why; no secrets)."""


async def call_api(rest: aiohttp.ClientSession | None, settings: VonageSettings, uuid: str, body: dict[str, Any],
                   path: str = "") -> None:
    """``PUT {api_base_url}/v1/calls/{uuid}{path}`` with ``body``; VonageApiError when it fails."""
    if rest is None or not settings.can_call_api:
        raise VonageApiError("no Vonage application credentials")
    assert settings.application_id is not None and settings.private_key is not None
    try:
        token = application_jwt(settings.application_id, settings.private_key.get_secret_value())
    except ValueError as exc:
        raise VonageApiError(str(exc)) from None
    url = f"{settings.api_base_url.rstrip('/')}/v1/calls/{quote(uuid, safe='')}{path}"
    try:
        async with asyncio.timeout(API_TIMEOUT_S), rest.put(
                url, json=body, headers={"Authorization": f"Bearer {token}"}) as reply:
            if reply.status >= 300:
                raise VonageApiError(f"HTTP {reply.status}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise VonageApiError(str(exc) or type(exc).__name__) from None


class VonageBridge(CallBridge):
    """A Vonage call: ``call.call_id`` is the call's uuid (the inbound leg the answer webhook named)."""

    carrier = "vonage"

    def __init__(self, *args: Any, rest: aiohttp.ClientSession | None = None, called: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rest = rest  # the Voice API session (None: no credentials)
        self.called = called  # the number the caller dialled: the caller id shown on a transfer

    def _settings(self) -> VonageSettings:
        return VonageSettings.of(self.ctx.config)

    async def _end_phone_call(self) -> None:
        settings = self._settings()
        number = self.call.transfer_to
        if number is not None:
            try:
                await call_api(self.rest, settings, self.call.call_id, codec.transfer_body(number, self.called))
                self.log.info("call transferred through the Voice API", carrier="vonage")
                return
            except VonageApiError as exc:
                self.log.error("the transfer failed; the caller hears the apology", error=str(exc))
                self.ctx.note_failure(self.call.call_id)
                return
        if self.call.end_reason in FAILURE_ENDS or not settings.can_call_api:
            return  # closing the socket ends the NCCO; the event webhook apologises for a failure
        try:
            await call_api(self.rest, settings, self.call.call_id, codec.HANGUP_BODY)
            self.log.info("call hung up through the Voice API", carrier="vonage")
        except VonageApiError as exc:  # closing the socket still ends the call
            self.log.warning("Voice API hang-up failed; closing the media socket", error=str(exc))

    async def _send_dtmf(self, digits: str) -> str:
        try:
            await call_api(self.rest, self._settings(), self.call.call_id, {"digits": digits}, "/dtmf")
        except VonageApiError as exc:
            self.log.warning("sending keypad tones failed", error=str(exc))
            return json.dumps({"error": "the keypad tones could not be sent"})
        return json.dumps({"status": f"pressed {len(digits)} key(s)"})

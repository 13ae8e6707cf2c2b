"""Call control on Twilio: ending the call hands it back to Twilio, which asks the ``<Connect
action>`` URL what next; a transfer first replaces the call's TwiML with a ``<Dial>`` through
Twilio's REST API."""

from __future__ import annotations

import asyncio
import base64
from typing import Any
from urllib.parse import quote

import aiohttp

from gateway.bridge import CallBridge
from gateway.carriers.twilio import codec as twilio
from gateway.carriers.twilio.settings import TwilioSettings

TRANSFER_TIMEOUT_S = 10.0


class TwilioBridge(CallBridge):
    """Ending the call: closing the media socket hands the call back to Twilio, which asks the
    ``<Connect action>`` URL what next (a hang-up). A transfer first replaces the call's TwiML
    with a ``<Dial>`` through Twilio's REST API."""

    carrier = "twilio"

    def __init__(self, *args: Any, account_sid: str = "", rest: aiohttp.ClientSession | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.account_sid = account_sid
        self.rest = rest  # the REST API session (transfers)

    async def _end_phone_call(self) -> None:
        number = self.call.transfer_to
        if number is None:
            return
        settings = TwilioSettings.of(self.ctx.config)
        token = settings.auth_token
        url = (f"{settings.api_base_url.rstrip('/')}/2010-04-01/Accounts/{quote(self.account_sid, safe='')}"
               f"/Calls/{quote(self.call.call_id, safe='')}.json")
        try:
            if token is None or not self.account_sid or self.rest is None:
                raise RuntimeError("no Twilio auth token or account")
            basic = base64.b64encode(f"{self.account_sid}:{token.get_secret_value()}".encode()).decode()
            async with asyncio.timeout(TRANSFER_TIMEOUT_S), self.rest.post(
                    url, data={"Twiml": twilio.dial_twiml(number)}, headers={"Authorization": "Basic " + basic},
            ) as reply:
                if reply.status >= 300:
                    raise RuntimeError(f"HTTP {reply.status}")
            self.log.info("call transferred", carrier="twilio")
        except (RuntimeError, aiohttp.ClientError, TimeoutError) as exc:
            self.log.error("the transfer failed; the caller hears the apology", error=str(exc) or type(exc).__name__)
            self.ctx.note_failure(self.call.call_id)



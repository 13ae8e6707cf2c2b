"""Call control on Telnyx: ending the call hands it back to Telnyx, whose TeXML goes on after the
``<Connect><Stream>`` to a ``<Redirect>`` that asks the gateway what next (a hang-up, or the apology
when the gateway failed the call); a transfer first replaces the call's TeXML with a ``<Dial>``
through the TeXML REST API (``POST /v2/texml/Accounts/{AccountSid}/Calls/{CallSid}``, form field
``Texml``, a bearer API key)."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import aiohttp

from gateway.bridge import CallBridge
from gateway.carriers.telnyx import codec as telnyx
from gateway.carriers.telnyx.settings import TelnyxSettings

TRANSFER_TIMEOUT_S = 10.0


def update_call_url(api_base_url: str, account_sid: str, call_sid: str) -> str:
    """The TeXML REST API's "update call" URL for a call."""
    return (f"{api_base_url.rstrip('/')}/v2/texml/Accounts/{quote(account_sid, safe='')}"
            f"/Calls/{quote(call_sid, safe='')}")


class TelnyxBridge(CallBridge):
    """Ending the call: closing the media socket ends the ``<Connect>``; Telnyx then follows the
    ``<Redirect>`` to the gateway, which answers a hang-up. A transfer first replaces the call's
    TeXML with a ``<Dial>`` through the TeXML REST API."""

    carrier = "telnyx"

    def __init__(self, *args: Any, account_sid: str = "", rest: aiohttp.ClientSession | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.account_sid = account_sid
        self.rest = rest  # the REST API session (transfers)

    async def _end_phone_call(self) -> None:
        number = self.call.transfer_to
        if number is None:
            return
        settings = TelnyxSettings.of(self.ctx.config)
        key = settings.api_key
        url = update_call_url(settings.api_base_url, self.account_sid, self.call.call_id)
        try:
            if key is None or not self.account_sid or self.rest is None:
                raise RuntimeError("no Telnyx API key or account")
            async with asyncio.timeout(TRANSFER_TIMEOUT_S), self.rest.post(
                    url, data={"Texml": telnyx.dial_texml(number)},
                    headers={"Authorization": "Bearer " + key.get_secret_value(), "Accept": "application/json"},
            ) as reply:
                if reply.status >= 300:
                    raise RuntimeError(f"HTTP {reply.status}")
            self.log.info("call transferred", carrier="telnyx")
        except (RuntimeError, aiohttp.ClientError, TimeoutError) as exc:
            self.log.error("the transfer failed; the caller hears the apology", error=str(exc) or type(exc).__name__)
            self.ctx.note_failure(self.call.call_id)

"""Call control on Plivo: ending the call closes the stream, and Plivo goes on with the answer's
next element (a ``<Redirect>`` to the gateway, which hangs up, with an apology first when the
gateway failed the call); a transfer first points the call at new XML (a ``<Dial>``) through
Plivo's REST API."""

from __future__ import annotations

import asyncio
import base64
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

from gateway.auth import public_url_for
from gateway.bridge import CallBridge
from gateway.carriers.plivo.settings import PlivoSettings

TRANSFER_TIMEOUT_S = 10.0
TRANSFER_PATH = "/plivo/transfer"


def call_url(api_base_url: str, auth_id: str, call_uuid: str) -> str:
    """The REST API's resource for one call."""
    return (f"{api_base_url.rstrip('/')}/v1/Account/{quote(auth_id, safe='')}/Call/"
            f"{quote(call_uuid, safe='')}/")


class PlivoBridge(CallBridge):
    """Ending the call closes the media stream (Plivo then follows the ``<Redirect>`` after it). A
    transfer first asks Plivo's REST API to fetch the call's next XML from the gateway's transfer
    URL, which answers with a ``<Dial>`` to the number."""

    carrier = "plivo"

    def __init__(self, *args: Any, public: str = "", called: str = "", rest: aiohttp.ClientSession | None = None,
                 call_uuid: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.public = public  # the gateway's public base URL, as Plivo reaches it
        self.called = called  # the caller id shown on a transfer: the number dialled (or placed from)
        self.rest = rest  # the REST API session (transfers)
        # Plivo's CallUUID, which its REST API knows the call by (a placed call's id is its request's)
        self.call_uuid = call_uuid or self.call.call_id

    async def _end_phone_call(self) -> None:
        number = self.call.transfer_to
        if number is None:
            return
        settings = PlivoSettings.of(self.ctx.config)
        token, auth_id = settings.auth_token, settings.auth_id
        query = urlencode({"to": number, **({"from": self.called} if self.called else {})})
        body = {"legs": "aleg", "aleg_url": public_url_for(self.public, TRANSFER_PATH, query), "aleg_method": "POST"}
        try:
            if token is None or auth_id is None or self.rest is None or not self.public:
                raise RuntimeError("no Plivo auth id and token")
            basic = base64.b64encode(f"{auth_id}:{token.get_secret_value()}".encode()).decode()
            async with asyncio.timeout(TRANSFER_TIMEOUT_S), self.rest.post(
                    call_url(settings.api_base_url, auth_id, self.call_uuid), json=body,
                    headers={"Authorization": "Basic " + basic}) as reply:
                if reply.status >= 300:
                    raise RuntimeError(f"HTTP {reply.status}")
            self.log.info("call transferred", carrier="plivo")
        except (RuntimeError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.log.error("the transfer failed; the caller hears the apology", error=str(exc) or type(exc).__name__)
            self.ctx.note_failure(self.call.call_id)

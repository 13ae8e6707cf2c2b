"""Call control on Genesys AudioConnector: there is no REST call to make. The gateway ends a session
with a ``disconnect`` on the AudioHook socket itself (``outputVariables`` tell the Architect flow
whether to transfer, and where); Genesys then runs the close transaction (``close``, answered with
``closed``) and closes the socket. Keys reach the model from ``dtmf`` messages; the gateway cannot
press keys towards the caller."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import WSMsgType, web

from gateway.bridge import CallBridge
from gateway.call import Hangup
from gateway.carriers.genesys.codec import GenesysLeg, Message

CLOSE_WAIT_S = 5.0  # how long the gateway waits for Genesys's close after its disconnect


async def await_close(ws: web.WebSocketResponse, leg: GenesysLeg, timeout_s: float = CLOSE_WAIT_S) -> bool:
    """Answer the close transaction Genesys runs after a disconnect (and its pings meanwhile); True
    once ``closed`` went out, False when the socket closed or the time ran out first."""
    try:
        async with asyncio.timeout(timeout_s):
            while not ws.closed:
                msg = await ws.receive()
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    return False
                reply, closed = leg.after_end(msg.data)
                if reply is not None:
                    await ws.send_str(reply)
                if closed:
                    return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return False
    return False


async def refuse_session(ws: web.WebSocketResponse, message: Message, info: str) -> None:
    """Refuse an AudioHook session at its open: a ``disconnect`` (reason ``error``) that says why,
    then the close transaction."""
    leg = GenesysLeg()
    leg.session_id, leg.clientseq, leg.state = message.session_id, message.seq, "refused"
    try:
        await ws.send_str(leg.message("disconnect", {"reason": "error", "info": info}))
    except ConnectionResetError:
        return
    await await_close(ws, leg)


class GenesysBridge(CallBridge):
    carrier = "genesys"

    def __init__(self, *args: Any, prelude: list[tuple[float, str | bytes]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._prelude = prelude or []  # what the socket sent up to the open, with its times

    async def _phone_side(self) -> None:
        for t, data in self._prelude:  # the open transaction: answered at once, Voice Live or not
            self.wire.from_phone(data, t)
        await self._flush()
        if self.call.ended:
            return
        await super()._phone_side()

    async def _end_phone_call(self) -> None:
        """The gateway ends the call: the disconnect goes out (if the call's own did not already), then
        the close transaction is answered before the socket is closed."""
        leg = self.wire.leg
        assert isinstance(leg, GenesysLeg)
        if self.phone.closed or leg.state == "closed":
            return
        messages = self.wire.take_phone()  # a disconnect the call queued as it was cut
        if leg.state not in ("disconnecting", "refused"):
            messages.append(leg.disconnect(Hangup(self.call.end_reason or "gateway_error")))
        try:
            for message in messages:
                if type(message) is bytes:
                    await self.phone.send_bytes(message)
                else:
                    await self.phone.send_str(message)  # type: ignore[arg-type]
        except ConnectionResetError:
            return
        if await self._answer_close(leg):
            self.log.info("AudioHook session closed after the gateway's disconnect")
        else:
            self.log.warning("Genesys did not close the AudioHook session after the disconnect", wait_s=CLOSE_WAIT_S)

    async def _answer_close(self, leg: GenesysLeg) -> bool:
        """Read the socket through the wire (so that the close transaction is recorded) until Genesys
        closes the session; True once ``closed`` went out."""
        try:
            async with asyncio.timeout(CLOSE_WAIT_S):
                while not self.phone.closed:
                    msg = await self.phone.receive()
                    if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                        return False
                    self.wire.from_phone(msg.data, self._now())
                    for message in self.wire.take_phone():
                        if type(message) is bytes:
                            await self.phone.send_bytes(message)
                        else:
                            await self.phone.send_str(message)  # type: ignore[arg-type]
                    if leg.state == "closed":
                        return True
        except (TimeoutError, ConnectionResetError):
            return False
        return False

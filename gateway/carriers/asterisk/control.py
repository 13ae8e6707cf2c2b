"""Call control on Asterisk: the media socket is the only line to Asterisk. Ending the call sends
``HANGUP`` (Asterisk hangs the WebSocket channel up) before the socket closes; chan_websocket
offers no transfer and no way to press keys towards the caller."""

from __future__ import annotations

from typing import Any

from gateway.bridge import CallBridge
from gateway.carriers.asterisk.codec import AsteriskLeg


class AsteriskBridge(CallBridge):
    carrier = "asterisk"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        leg = self.wire.leg
        assert isinstance(leg, AsteriskLeg)
        self.leg = leg

    async def _end_phone_call(self) -> None:
        """The gateway ends the call: ``HANGUP``, unless the call's own hang-up already said it (the
        socket is closed next either way, which Asterisk also takes as a hang-up)."""
        message = self.leg.hangup_message()
        if message is None or self.phone.closed:
            return
        try:
            await self.phone.send_str(message)
        except (ConnectionError, RuntimeError) as exc:  # the socket went away: Asterisk hangs up anyway
            self.log.debug("sending HANGUP failed", error=type(exc).__name__)

"""Call control on the console's phone: the media socket is the only line to the page. When the
gateway ends the call (the bot hung up, an operator ended it from the calls list, a drain ran out
of time, Voice Live failed), the page gets ``ended`` with the reason before the socket closes. The
console's phone has no number: no transfer, and no keys pressed towards it."""

from __future__ import annotations

from typing import Any

from gateway.bridge import CallBridge
from gateway.carriers.browser.codec import BrowserLeg


class BrowserBridge(CallBridge):
    carrier = "browser"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        leg = self.wire.leg
        assert isinstance(leg, BrowserLeg)
        self.leg = leg

    async def announce(self) -> None:
        """Tell the page its call exists (``started``, waiting in the leg's outbox) at once, before
        the Voice Live session opens."""
        await self._flush()

    async def _end_phone_call(self) -> None:
        """The gateway ends the call: what the call still had for the page (its last events, and the
        ``ended`` of its own hang-up when the call was cut), then ``ended`` if the page was not told
        yet. The socket is closed next."""
        if self.phone.closed:
            return
        messages = self.wire.take_phone()
        final = self.leg.ended(self.call.end_reason or "ended")
        if final is not None:
            messages.append(final)
        try:
            for message in messages:
                if isinstance(message, bytes):
                    await self.phone.send_bytes(message)
                else:
                    await self.phone.send_str(message)
        except (ConnectionError, RuntimeError) as exc:  # the page went away: nothing to tell
            self.log.debug("telling the page the call ended failed", error=type(exc).__name__)

"""The phone's media socket: aiohttp's server WebSocket, with caller frames taken as they are parsed.

aiohttp parses a socket's bytes when the event loop reads them, and queues each message for the
task that reads the socket; that task runs later, in the loop's next pass over its ready tasks. In a
reply burst that pass is long (tens of calls' barge-ins, the phones' returned marks, Voice Live's
answers), and a caller frame parsed just after it started waits for all of it. A :class:`PhoneSocket`
offers each text or binary message, as it is parsed, to a taker (the call's bridge, while it reads
the socket): the taker forwards a caller frame there and then, or declines and the message is
queued as usual. It is offered only while nothing waits in the queue, so that the call sees the
phone's messages in the order they came.

Everything else (control frames, closing, limits, flow control) is aiohttp's own. Where aiohttp's
internals are not what this module expects, the socket is a plain ``WebSocketResponse`` and every
message goes through the queue (``direct`` is False).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web, web_ws
from aiohttp._websocket.reader import WebSocketDataQueue

__all__ = ["PhoneSocket", "Taker"]

# Offered a text (str) or binary (bytes) message's data, returns what to queue for the reading task:
# the data itself (the message as it came), None (nothing: it was handled), or a value of the taker's
# own that the reading task receives as the message's data (say, a note that work is left for it)
Taker = Callable[[Any], object]

_DATA = (WSMsgType.TEXT, WSMsgType.BINARY)


class _OfferingQueue(WebSocketDataQueue):
    """aiohttp's message queue, offering each data message to a taker before queueing it."""

    take: Taker | None = None

    def feed_data(self, data: Any, size: int) -> None:
        take = self.take
        if take is not None and not self._buffer and data[0] in _DATA:
            left = take(data[1])
            if left is None:
                return
            if left is not data[1]:
                data = data._replace(data=left)
        super().feed_data(data, size)


class PhoneSocket(web.WebSocketResponse):
    """A server WebSocket whose data messages can be taken as they are parsed (:meth:`offer_to`)."""

    def _post_start(self, request: Any, protocol: Any, writer: Any) -> None:
        # aiohttp makes the socket's message queue here: make it ours for this one synchronous call
        made = getattr(web_ws, "WebSocketDataQueue", None)
        if made is WebSocketDataQueue:
            web_ws.WebSocketDataQueue = _OfferingQueue
        try:
            super()._post_start(request, protocol, writer)
        finally:
            if made is WebSocketDataQueue:
                web_ws.WebSocketDataQueue = made

    @property
    def direct(self) -> bool:
        """Whether messages can be taken as they are parsed (False: aiohttp's internals differ)."""
        return isinstance(self._reader, _OfferingQueue)

    @property
    def taker(self) -> Taker | None:
        """What each message is offered to now (None: none)."""
        reader = self._reader
        return reader.take if isinstance(reader, _OfferingQueue) else None

    def offer_to(self, take: Taker | None) -> bool:
        """Offer each text or binary message to ``take`` as it is parsed, while nothing waits in the
        queue (None: stop). Returns False if this socket cannot (every message is queued)."""
        reader = self._reader
        if not isinstance(reader, _OfferingQueue):
            return False
        reader.take = take
        return True

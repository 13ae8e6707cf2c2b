"""The first messages of a JSON media stream (Twilio and its look-alikes): read until ``start``.

Nothing is opened on Voice Live before a valid ``start``. Every message read, the start included, is
kept in the prelude with its arrival time (ms since the socket opened), so that a recording holds it.
Bad messages get one warning per kind of problem, then debug lines. A carrier says what one text
message means before the start with a ``read`` function returning a :data:`Step`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from gateway.bridge import log, now_ms

# What a text message before ``start`` is:
#   ("start", event)        the stream's start: reading stops
#   ("refuse", reason)      an unusable start: the socket is closed (1003)
#   ("stop", None)          the stream stopped before it started
#   ("reject", (p, detail)) bad input, logged as problem ``p``
#   ("ignore", None)        tolerated
Step = tuple[str, Any]


async def await_start(ws: web.WebSocketResponse, opened_at: float, prelude: list[tuple[float, str | bytes]],
                      read: Callable[[str], Step], timeout_s: float, binary: Step | None = None) -> Any | None:
    """The start event, or None (the socket was refused, stopped, broke, or sent no start in time).
    ``binary``: what a binary frame before the start is, on a carrier that sends audio in binary
    frames (by default, bad input: text frames only)."""
    seen: dict[str, int] = {}

    def reject(problem: str, detail: str) -> None:
        seen[problem] = seen.get(problem, 0) + 1
        level = log.warning if seen[problem] == 1 else log.debug
        level("ignored a message before start", problem=problem, detail=detail, count=seen[problem])

    try:
        async with asyncio.timeout(timeout_s):
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    prelude.append((now_ms() - opened_at, msg.data))
                    kind, value = read(msg.data)
                    if kind == "start":
                        return value
                    if kind == "refuse":
                        log.error("media stream refused: unusable start message", reason=value)
                        await ws.close(code=1003, message=b"unsupported start")
                        return None
                    if kind == "stop":
                        log.info("stream stopped before it started")
                        return None
                    if kind == "reject":
                        reject(*value)
                elif msg.type is WSMsgType.BINARY:
                    prelude.append((now_ms() - opened_at, msg.data))
                    if binary is None:
                        reject("binary-frame", f"{len(msg.data)} bytes; text frames only")
                    elif binary[0] == "reject":
                        reject(*binary[1])
                elif msg.type is WSMsgType.ERROR:
                    log.warning("media socket error before start; closing", error=str(ws.exception())[:200])
                    return None
    except TimeoutError:
        log.warning("no start message in time; closing the media socket", timeout_s=timeout_s)
    return None


MEDIA_BEFORE_START: Step = ("reject", ("media-before-start", "media before start: dropped, there is no call yet"))

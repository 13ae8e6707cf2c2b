"""Caller audio first: a bounded share of each pass of the event loop for Voice Live's messages.

When many calls' replies arrive in the same instant (Voice Live sends audio faster than real time,
and replies often start together), every call's session has a message to handle at once. An event
loop runs the tasks woken in one pass in the order they were woken, so caller frames that arrive
meanwhile wait for every one of those messages. The phone has seconds of bot audio buffered; Voice
Live needs the caller's audio now (its voice activity detection, and so barge-in, hears the caller
only as fast as the frames come).

So Voice Live's messages get at most ``budget_s`` of each pass: a session whose message comes after
that yields, and handles it in the next pass, before that pass's new input, in the order the
sessions yielded; the callers' frames that arrived meanwhile are handled in that pass too. Each
pass handles at least one message, so every session makes progress, and a message waits at most
``max_wait_s`` in all: on a worker short of CPU, the bot's audio is not held back without end. A
caller starting to speak (``speech_started``: barge-in) never waits for room; it comes after its
session's earlier messages, and those stop waiting as soon as it has arrived behind them (the
session counts what it has received and not handled yet: ``urgent_waiting``), so that a barge-in in
a burst of replies is not held back by the audio before it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from gateway import metrics

__all__ = ["URGENT", "URGENT_BYTES", "LoopShare", "Session", "urgent"]

URGENT = '"input_audio_buffer.speech_started"'  # handled at once, whatever the share
URGENT_BYTES = URGENT.encode()
_HEAD = 80  # an event's type is at the start of the message (its first key, as Voice Live writes it)


class Session(Protocol):
    urgent_waiting: int  # urgent messages the session has received and not handled yet


def urgent(message: str | bytes | bytearray | memoryview) -> bool:
    """Whether ``message`` is one that never waits for room (a barge-in)."""
    if isinstance(message, str):
        return URGENT in message[:_HEAD]
    head = message[:_HEAD]
    return URGENT_BYTES in (head if type(head) is bytes else bytes(head))


class LoopShare:
    """Voice Live's share of each pass of one event loop (one per worker)."""

    __slots__ = ("_started", "budget_s", "deferred", "max_wait_s")

    def __init__(self, budget_s: float = 0.001, max_wait_s: float = 0.02) -> None:
        self.budget_s = budget_s
        self.max_wait_s = max_wait_s
        self._started: float | None = None  # when this pass's first message was handled
        self.deferred = 0  # how many times a message waited for the next pass (and the metric)

    def over(self, message: str | bytes) -> bool:
        """True when ``message`` waits for a later pass (:meth:`wait`)."""
        now = time.perf_counter()
        started = self._started
        if started is None:
            self._started = now
            asyncio.get_running_loop().call_soon(self._next_pass)  # at the head of the next pass
            return False
        if now - started <= self.budget_s or (type(message) is str and URGENT in message[:_HEAD]):
            return False
        self.deferred += 1
        metrics.VOICELIVE_DEFERRED.inc()
        return True

    async def wait(self, message: str | bytes, session: Session | None = None) -> None:
        """Until a pass has room for ``message`` (after :meth:`over` said it has none in this one), it
        has waited ``max_wait_s``, or an urgent message has arrived behind it on its ``session``."""
        until = time.perf_counter() + self.max_wait_s
        await asyncio.sleep(0)  # the next pass of the loop
        while (time.perf_counter() < until and not (session is not None and session.urgent_waiting)  # noqa: ASYNC110
               and self.over(message)):  # (a pass of the loop, not an event)
            await asyncio.sleep(0)

    def _next_pass(self) -> None:
        self._started = None

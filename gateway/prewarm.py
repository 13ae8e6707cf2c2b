"""Pre-warmed Voice Live sessions: opened when a carrier announces a call, handed to its media socket.

A carrier announces a call before its media arrives (a voice webhook, an incoming-call event, an
answer hook, or the gateway placing the call). The gateway opens the call's Voice Live session at
that moment instead of when the media socket comes, so that the caller does not wait one session
set-up before hearing the bot.

The warm session is driven by a *shadow* of the call: a :class:`gateway.call.Call` built with what the
call will be built with (its id, profile, audio format, and for a placed call its plan). Its
``session.update`` (and, for a call that greets at once, the greeting's ``response.create``) are sent
and what Voice Live answers is kept, in order. When the media socket arrives, the real call is fed that
exchange again at its own start (:meth:`gateway.bridge.CallBridge`): it produces the same messages,
which are not sent twice, and it hears the same answers, so the greeting audio already waiting goes to
the phone at once. The call's recording holds the exchange as if it had happened at the call's start,
so a replay computes exactly what the live call did.

A session whose media never comes (the socket landed on another worker or replica, or the caller hung
up while it rang) is closed after a timeout and counted as wasted. The shadow reads only until the
session is configured and the first response is done (or a size bound): anything later waits in the
socket for the real call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed

from gateway import metrics
from gateway.audio import AudioFormat
from gateway.call import Call
from gateway.carriers.common import load_json
from gateway.config import Profile
from gateway.core.outbound import OutboundPlan
from gateway.log import get_logger
from gateway.loopshare import urgent
from gateway.voicelive.client import VoiceLiveConnectError, VoiceLiveConnection
from gateway.voicelive.pool import NoBudget

log = get_logger("gateway.prewarm")

__all__ = ["WarmSession", "WarmSessions"]

MAX_WARM_BYTES = 1 << 20  # what a warm session keeps of Voice Live's answers before it stops reading
MAX_WARM_SESSIONS = 500  # per worker: a flood of announced calls cannot open sessions without bound
KEPT_OVERHEAD = 128  # what keeping one message costs besides its text (its object, its tuple, its slot)

Connect = Callable[[Profile, str], Awaitable[VoiceLiveConnection]]  # (profile, carrier)


class _Quiet:
    """The shadow call's logger: what the real call will log anyway is not logged twice; warnings
    and errors (a refused configuration) are, marked as coming from the warm session."""

    def __init__(self, call_id: str) -> None:
        self._log = log.bind(call_id=call_id, warm=True)

    def bind(self, **_fields: Any) -> _Quiet:
        return self

    def debug(self, *_a: Any, **_k: Any) -> None:
        return None

    info = debug

    def warning(self, event: str, **fields: Any) -> None:
        self._log.warning(event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log.error(event, **fields)


@dataclass(eq=False)
class WarmSession:
    """One call's pre-warmed session: its socket and the exchange so far, in order (``True``: a
    message the gateway sent; ``False``: one Voice Live sent)."""

    carrier: str
    call_id: str
    profile_name: str
    profile: Profile
    audio: AudioFormat
    outbound: OutboundPlan | None
    binding: str | None = None  # what else the media socket must name to take it (e.g. the call's correlation id)
    created: float = field(default_factory=time.monotonic)
    connection: VoiceLiveConnection | None = None
    exchange: list[tuple[bool, str | bytes]] = field(default_factory=list)
    failed: str | None = None  # why the session is not usable (None: it is, or is still opening)
    _opening: asyncio.Task[None] | None = None
    _reading: asyncio.Task[None] | None = None
    _expiry: asyncio.TimerHandle | None = None
    _bytes: int = 0

    def matches(self, call: Call) -> bool:
        """The real call is the call this session was opened for, configured the same way: fed the
        same answers, it sends the same messages."""
        return (call.call_id == self.call_id and call.profile_name == self.profile_name
                and call.audio == self.audio and call.outbound == self.outbound
                and (call.profile == self.profile if self.outbound is None else True))

    async def _open(self, connect: Connect) -> None:
        try:
            self.connection = await connect(self.profile, self.carrier)  # (timed and counted by the pool)
        except VoiceLiveConnectError as exc:
            self.failed = f"connect failed: {exc}"
            if not isinstance(exc, NoBudget):  # (no budget: the call's own connect counts it, if it finds none)
                metrics.VOICELIVE_FAILURES.inc(self.carrier, metrics.status_label(exc.status))
            return
        self._reading = asyncio.create_task(self._read(), name=f"warm-{self.call_id}")

    async def _read(self) -> None:
        """Drive the shadow call: send what it sends, keep what Voice Live answers, until the session
        is configured and the first response is done (or the size bound)."""
        ws = self.connection
        assert ws is not None
        shadow = Call(self.call_id, "", self.profile_name, self.profile, 0.0, audio=self.audio,
                      outbound=self.outbound, log=_Quiet(self.call_id))
        shadow.voicelive_connected(0.0)
        try:
            self._send(ws, shadow)
            while not shadow.ended and self._bytes < MAX_WARM_BYTES:
                raw = await ws.recv()  # (cancelling recv loses nothing: the next recv returns this message)
                if ws.urgent_waiting and urgent(raw):
                    ws.urgent_waiting -= 1  # (taken here, not by the call's pump)
                self.exchange.append((False, raw))
                self._bytes += len(raw) + KEPT_OVERHEAD  # (a stream of tiny messages is bounded too)
                event, _ = load_json(raw)  # (as the call takes it: gateway.wire.WireCall.from_voicelive)
                if type(event) is dict:
                    try:
                        shadow.voicelive_event(event, 0.0)
                    except Exception:  # the live call rejects it and goes on: so does its shadow
                        pass
                self._send(ws, shadow)
                if isinstance(event, dict) and event.get("type") == "response.done":
                    return  # the greeting is ready (or there is none): the rest waits for the call
        except ConnectionClosed as exc:
            self.failed = f"Voice Live closed the session ({exc.rcvd.code if exc.rcvd else 'no code'})"
            return
        if shadow.ended:
            self.failed = f"the session cannot serve the call ({shadow.end_reason})"

    def _send(self, ws: VoiceLiveConnection, shadow: Call) -> None:
        for text in shadow.to_voicelive:
            if not ws.send_nowait(text):
                raise ConnectionClosed(None, None)
            self.exchange.append((True, text))
        shadow.to_voicelive.clear()
        shadow.to_phone.clear()
        shadow.to_tools.clear()
        shadow.to_shell.clear()

    async def take(self, timeout_s: float) -> VoiceLiveConnection | None:
        """The session for its call, its reading stopped at a message boundary: None when it failed or
        did not open within ``timeout_s``."""
        if self._expiry is not None:
            self._expiry.cancel()
        if self._opening is not None and not self._opening.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._opening), timeout_s)
            except TimeoutError:
                self.failed = "still opening"
        reading, self._reading = self._reading, None  # (a cancelled task's traceback holds this session)
        if reading is not None and not reading.done():
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
        if reading is not None and reading.done() and not reading.cancelled() and reading.exception() is not None:
            self.failed = f"gateway error: {reading.exception()!r}"
        if self.failed is not None or self.connection is None:
            return None
        return self.connection

    async def close(self) -> None:
        tasks, self._opening, self._reading = (self._opening, self._reading), None, None
        for task in tasks:
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self.connection is not None:
            try:
                await self.connection.close()
            except Exception as exc:  # closed either way
                log.debug("closing a warm session failed", call_id=self.call_id, error=repr(exc))


class WarmSessions:
    """The pre-warmed sessions of one worker, by carrier and call id. A session is claimed once, by
    the media socket of its call (after the socket's own authentication), or closed by its timeout."""

    def __init__(self, connect: Connect) -> None:
        self._connect = connect
        self._sessions: dict[tuple[str, str], WarmSession] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._sessions)

    def start(self, carrier: str, call_id: str, profile_name: str, profile: Profile, audio: AudioFormat, *,
              timeout_s: float, outbound: OutboundPlan | None = None, binding: str | None = None) -> bool:
        """Open the session of a call just announced. False: none is opened (no call id, one is open
        for this call already, or too many are waiting)."""
        key = (carrier, call_id)
        if not call_id or key in self._sessions:
            return False
        if len(self._sessions) >= MAX_WARM_SESSIONS:
            log.warning("too many pre-warmed sessions waiting for their calls; this call opens its own",
                        call_id=call_id, waiting=len(self._sessions))
            metrics.WARM_SESSIONS.inc("skipped")
            return False
        warm = WarmSession(carrier, call_id, profile_name, profile, audio, outbound, binding)
        self._sessions[key] = warm
        warm._opening = asyncio.create_task(warm._open(self._connect), name=f"warm-open-{call_id}")
        warm._expiry = asyncio.get_running_loop().call_later(timeout_s, self._expire, key, warm)
        metrics.WARM_SESSIONS.inc("opened")
        return True

    def claim(self, carrier: str, call_id: str) -> WarmSession | None:
        """The warm session of this call, taken out (None: there is none on this worker)."""
        return self._sessions.pop((carrier, call_id), None)

    def discard(self, warm: WarmSession, reason: str) -> None:
        """A claimed session that the call does not use: closed in the background, counted."""
        log.info("pre-warmed session not used", call_id=warm.call_id, reason=warm.failed or reason)
        metrics.WARM_SESSIONS.inc("failed" if warm.failed else reason)
        if warm._expiry is not None:  # (its timer would hold it, and what it received, until it fires)
            warm._expiry.cancel()
        self._close_later(warm)

    def _expire(self, key: tuple[str, str], warm: WarmSession) -> None:
        warm._expiry = None  # (the timer that fired holds this session in its arguments: no cycle)
        if self._sessions.get(key) is not warm:
            return
        del self._sessions[key]
        log.info("pre-warmed session closed: its call's media did not come", call_id=warm.call_id,
                 waited_s=round(time.monotonic() - warm.created, 1))
        metrics.WARM_SESSIONS.inc("wasted")
        self._close_later(warm)

    def _close_later(self, warm: WarmSession) -> None:
        task = asyncio.create_task(warm.close(), name=f"warm-close-{warm.call_id}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close every session still waiting (the gateway stops)."""
        sessions = list(self._sessions.values())
        self._sessions.clear()
        for warm in sessions:
            if warm._expiry is not None:
                warm._expiry.cancel()
        await asyncio.gather(*(warm.close() for warm in sessions), *self._closing, return_exceptions=True)

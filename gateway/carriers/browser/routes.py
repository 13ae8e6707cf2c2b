"""The console's phone on the HTTP side: the media WebSocket the console page opens.

``GET /console/media`` is checked as every console request is (:mod:`gateway.carriers.browser.auth`)
before the socket is accepted, then like every carrier's media socket (a draining or full gateway
refuses it, 503). The page's first message is ``start``, naming the profile to call; a profile
the configuration does not have gets ``error`` and the socket is closed (1008). The call then gets
an id of its own (``console-`` and random hex), no numbers, PCM16 at 24 kHz both ways, and marks
after each piece of bot audio that the page acknowledges once its playout clock has passed them.
"""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from gateway import metrics
from gateway.audio import apology_clip
from gateway.bridge import CONTEXT, MAX_PHONE_MESSAGE, GatewayContext, log, now_ms
from gateway.call import Call, Observer
from gateway.carriers.browser import codec
from gateway.carriers.browser.auth import media_refusal
from gateway.carriers.browser.control import BrowserBridge
from gateway.carriers.browser.settings import BrowserSettings
from gateway.carriers.common import short
from gateway.carriers.prelude import MEDIA_BEFORE_START, Step, await_start
from gateway.phonesocket import PhoneSocket

START_TIMEOUT_S = 10.0  # from the socket's opening to the page's start


def call_id() -> str:
    """A console call's id: unique, and telling where the call came from."""
    return "console-" + secrets.token_hex(8)


def _before_start(text: str) -> Step:
    """What a text message from the page means before its ``start`` (see gateway.carriers.prelude)."""
    try:
        message = codec.parse_message(text)
    except codec.BrowserProtocolError as exc:
        return "reject", ("malformed", str(exc))
    if type(message) is codec.Start:
        return "start", message
    if type(message) is codec.HangUp:
        return "stop", None
    return "reject", ("before-start", f"{type(message).__name__} before start")


async def _refuse(ws: web.WebSocketResponse, code: int, text: str) -> None:
    """Tell the page why its call cannot go on, then close the socket."""
    try:
        await ws.send_str(codec.error_message(text))
    except (ConnectionError, RuntimeError):
        pass  # (the page went away)
    await ws.close(code=code, message=text.encode()[:120])


def _chained(first: Observer, then: Observer) -> Observer:
    """An observer that tells ``first``, then ``then``, of every event."""

    def observe(event: str, t: float, fields: dict[str, Any]) -> None:
        first(event, t, fields)
        then(event, t, fields)

    return observe


async def console_media(request: web.Request) -> web.StreamResponse:
    """``GET /console/media``: the console page's phone."""
    ctx: GatewayContext = request.app[CONTEXT]
    refusal = media_refusal(request, ctx.config)
    if refusal is not None:
        return refusal
    busy = ctx.media_refusal("browser", None)
    if busy is not None:
        metrics.CALLS.inc("browser", f"refused ({busy})")
        log.warning("console call refused", reason=busy)
        return web.Response(status=503, text=f"{busy}\n")
    ws = PhoneSocket(max_msg_size=MAX_PHONE_MESSAGE, autoping=True)
    await ws.prepare(request)
    opened_at = now_ms()
    prelude: list[tuple[float, str | bytes]] = []
    try:
        start: codec.Start | None = await await_start(ws, opened_at, prelude, _before_start, START_TIMEOUT_S,
                                                      binary=MEDIA_BEFORE_START)
        if start is None:
            return ws
        profiles = ctx.config.profiles
        if start.profile not in profiles:
            log.warning("console call refused: no such profile", profile=short(start.profile))
            await _refuse(ws, 1008, f"no profile named {short(start.profile)!r}")
            return ws
        busy = ctx.media_refusal("browser", None)
        if busy is not None:  # the gateway began to drain (or filled up) while the page was starting
            metrics.CALLS.inc("browser", f"refused ({busy})")
            log.warning("console call refused at its start", reason=busy)
            await _refuse(ws, 1013, f"the gateway takes no call now ({busy})")
            return ws
        await _run_call(request, ctx, ws, start.profile, opened_at, prelude)
    finally:
        if not ws.closed:
            await ws.close()
    return ws


async def _run_call(request: web.Request, ctx: GatewayContext, ws: web.WebSocketResponse, name: str,
                    opened_at: float, prelude: list[tuple[float, str | bytes]]) -> None:
    """Build the console's call and bridge it until it ends."""
    ident = call_id()
    started_at = prelude[-1][0]
    leg = codec.BrowserLeg(ident, name, started_at)
    observer = ctx.observer_for(ident, "browser")
    observer.downstream = _chained(leg.observe, observer.downstream)  # the page sees the call's events too
    call_log = log.bind(call_id=ident, stream_id=ident)
    call = Call(call_id=ident, stream_id=ident, profile_name=name, profile=ctx.profile(name),
                started_at=started_at, audio=codec.AUDIO, observer=observer, log=call_log,
                piece_ms=BrowserSettings.of(ctx.config).piece_ms,
                fallback_audio=apology_clip(codec.AUDIO),  # heard when the gateway fails the call
                **ctx.call_options(), caller=None, called=None)
    recorder = ctx.open_recorder("browser", call)
    if recorder is not None:
        for t, message in prelude:
            recorder.record(t, "phone", "in", message)
    prelude.clear()  # (recorded if recording): the call does not keep what came before it
    bridge = BrowserBridge(ctx, ws, call, leg, opened_at, recorder, request.transport)
    await bridge.announce()
    await bridge.run()


"""Asterisk's HTTP side: the media WebSocket that chan_websocket dials.

There is no webhook: Asterisk opens ``GET /asterisk/media`` itself when the dialplan runs
``Dial(WebSocket/<connection>/c(ulaw)v(to=...))`` or an ARI application creates an
``externalMedia`` channel with ``transport=websocket``. The upgrade must carry the configured
credentials (:mod:`gateway.carriers.asterisk.auth`); without any configured, every upgrade is refused
unless ``gateway.insecure_dev_mode`` is on. The query string (the dial string's ``v()`` option)
gives the numbers and chooses the profile: ``to`` is the called number, routed like every carrier's (``routes`` in
config.yaml), ``from`` is the caller's number (``${CALLERID(num)}``), and ``profile`` names a
profile outright. Both numbers are untrusted text (a caller chooses their caller id): only a value
that is a phone number is kept (:func:`~gateway.carriers.asterisk.codec.uri_number`), for the
call's record, which masks them. The call starts at Asterisk's ``MEDIA_START``.

A call the gateway placed through ARI (:mod:`gateway.carriers.asterisk.outbound`) comes back here
too, its dial string adding ``call`` (the id the gateway gave the originated channel) and ``amd``
(``${AMDSTATUS}``): a socket whose ``call`` names a call this worker placed on Asterisk is that call
(its profile, its numbers, how it opens), and its answering-machine result is read from ``amd``.
"""

from __future__ import annotations

import asyncio
import uuid

from aiohttp import WSMsgType, web

from gateway import metrics
from gateway.audio import apology_clip
from gateway.bridge import CONTEXT, MAX_PHONE_MESSAGE, GatewayContext, log, now_ms, rejected
from gateway.call import Call
from gateway.carriers.asterisk import codec
from gateway.carriers.asterisk.auth import check_authorization
from gateway.carriers.asterisk.control import AsteriskBridge
from gateway.carriers.asterisk.outbound import answering_machine
from gateway.carriers.asterisk.settings import AsteriskSettings
from gateway.carriers.common import short
from gateway.outbound import DONE, PlacedState
from gateway.phonesocket import PhoneSocket

START_TIMEOUT_S = 10.0
PACED_PIECE_MS = 20  # without playback marks, bot audio goes out in 20 ms frames on the call's clock
SUBPROTOCOLS = ("media",)  # what websocket_client.conf's ``protocols`` names for chan_websocket


def _check_credentials(request: web.Request, ctx: GatewayContext) -> web.Response | None:
    """None when the upgrade may go on; else the refusal (401)."""
    settings = AsteriskSettings.of(ctx.config)
    if not settings.has_credential and ctx.insecure:
        return None
    problem = check_authorization(
        request.headers.get("Authorization"), username=settings.username,
        password=settings.password.get_secret_value() if settings.password is not None else None,
        token=settings.token.get_secret_value() if settings.token is not None else None)
    if problem is None:
        return None
    response = rejected("asterisk", "media", problem, status=401)
    response.headers["WWW-Authenticate"] = 'Basic realm="gateway"'
    return response


async def _await_start(ws: web.WebSocketResponse, opened_at: float,
                       prelude: list[tuple[float, str | bytes]]) -> codec.MediaStart | None:
    """Read the socket until ``MEDIA_START``; nothing is opened on Voice Live before it. Every
    message read is kept in ``prelude`` with its arrival time (ms since the socket opened)."""
    seen: dict[str, int] = {}

    def reject(problem: str, detail: str) -> None:
        seen[problem] = seen.get(problem, 0) + 1
        level = log.warning if seen[problem] == 1 else log.debug
        level("ignored a message before MEDIA_START", problem=problem, detail=detail, count=seen[problem])

    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    prelude.append((now_ms() - opened_at, msg.data))
                    try:
                        event = codec.parse_control(msg.data)
                    except codec.AsteriskProtocolError as exc:
                        if "MEDIA_START" in msg.data[:80]:  # the start itself is unusable: no call to take
                            log.error("media socket refused: unusable MEDIA_START", reason=str(exc))
                            await ws.close(code=1003, message=b"unusable MEDIA_START")
                            return None
                        reject("malformed", str(exc))
                        continue
                    if type(event) is codec.MediaStart:
                        return event
                    reject("before-start", f"{type(event).__name__} before MEDIA_START")
                elif msg.type is WSMsgType.BINARY:
                    prelude.append((now_ms() - opened_at, msg.data))
                    reject("media-before-start", "audio before MEDIA_START: dropped, there is no call yet")
                elif msg.type is WSMsgType.ERROR:
                    log.warning("media socket error before MEDIA_START; closing", error=str(ws.exception())[:200])
                    return None
    except TimeoutError:
        log.warning("no MEDIA_START in time; closing the media socket", timeout_s=START_TIMEOUT_S)
    return None


def _numbers(request: web.Request, call_id: str) -> tuple[str | None, str | None]:
    """The caller's and the called numbers the dial string gave (``from`` and ``to``), each None
    when absent or not a phone number. Never logged: a value that is not a number is reported by
    its length only."""
    numbers = []
    for key in ("from", "to"):
        value = request.query.get(key)
        number = codec.uri_number(value)
        if value and number is None:
            log.info("a number in the media socket's URI is not a phone number; left out", call_id=call_id,
                     key=key, length=len(value))
        numbers.append(number)
    return numbers[0], numbers[1]


def _profile_for(request: web.Request, ctx: GatewayContext, call_id: str, called: str | None) -> str:
    """The profile the dial string asked for (``profile``), else the one routed for the called number."""
    name = request.query.get("profile", "")
    if name in ctx.config.profiles:
        return name
    if name:
        log.warning("unknown profile in the media socket's URI; routing by number instead", call_id=call_id,
                    profile=short(name))
    name, _ = ctx.config.route(called)
    return name


def _placed_call(request: web.Request, ctx: GatewayContext) -> PlacedState | None:
    """The call this worker placed that the dial string names (``call``), else None."""
    call = request.query.get("call")
    return ctx.outbound.placed(call, "asterisk") if call else None


async def _take_answering_machine(request: web.Request, ctx: GatewayContext, placed: PlacedState) -> None:
    """A placed call's answering-machine result, as the dialplan's ``AMD()`` gave it (``amd``): known
    before the media starts, the call opens with it. Without a result (detection not run, or NOTSURE)
    the call opens as for a person."""
    if not placed.plan.detect_machine:
        return
    given = request.query.get("amd", "")
    result = answering_machine(given)
    if given and given.strip().upper() not in ("HUMAN", "MACHINE", "NOTSURE", "HANGUP"):
        log.warning("an answering-machine result in the media socket's URI the gateway does not know: taken as "
                    "unknown", call_id=placed.id, amd=short(given))
    await ctx.answering_machine(placed.id, result, carrier="asterisk")


def _refusal(ctx: GatewayContext, placed: PlacedState | None) -> str | None:
    """Why this socket cannot be taken now: a call this worker placed takes the place it holds."""
    return ctx.refusal() if placed is None else ctx.media_refusal("asterisk", placed.id)


async def asterisk_media(request: web.Request) -> web.StreamResponse:
    """``GET /asterisk/media``: the chan_websocket media socket."""
    ctx: GatewayContext = request.app[CONTEXT]
    refusal = _check_credentials(request, ctx)
    if refusal is not None:
        return refusal
    placed = _placed_call(request, ctx)
    if placed is not None and placed.state in DONE:  # (a replayed dial string: the call is over)
        log.warning("a media socket for a placed call that has ended: refused", call_id=placed.id)
        return web.Response(status=409, text="the call has ended\n")
    busy = _refusal(ctx, placed)
    if busy is not None:
        metrics.CALLS.inc("asterisk", f"refused ({busy})")
        return web.Response(status=503, text=f"{busy}\n")
    ws = PhoneSocket(max_msg_size=MAX_PHONE_MESSAGE, autoping=True, protocols=SUBPROTOCOLS)
    await ws.prepare(request)
    opened_at = now_ms()
    prelude: list[tuple[float, str | bytes]] = []
    try:
        start = await _await_start(ws, opened_at, prelude)
        if start is None:
            return ws
        call_id = placed.id if placed is not None else start.channel_id or start.channel or str(uuid.uuid4())
        audio = codec.AUDIO_FORMATS.get(start.format)
        if audio is None:
            log.error("media socket refused: a codec that does not pass through to Voice Live", call_id=call_id,
                      format=short(start.format), supported=sorted(codec.AUDIO_FORMATS))
            await ws.close(code=1003, message=b"unsupported format")
            return ws
        busy = _refusal(ctx, placed)
        if busy is not None:  # the gateway began to drain (or filled up) while this socket was opening
            metrics.CALLS.inc("asterisk", f"refused ({busy})")
            log.warning("media socket refused at MEDIA_START", reason=busy, call_id=call_id)
            await ws.close(code=1013, message=busy.encode())
            return ws
        if call_id in ctx.calls:
            log.warning("a second media socket for a call in progress: refused (one session per call)",
                        call_id=call_id)
            await ws.close(code=1008, message=b"duplicate call")
            return ws
        caller: str | None
        called: str | None
        if placed is not None:
            caller, called, name = placed.from_, placed.to, placed.profile
            await _take_answering_machine(request, ctx, placed)
        else:
            caller, called = _numbers(request, call_id)
            name = _profile_for(request, ctx, call_id, called)
        settings = AsteriskSettings.of(ctx.config)
        paced = not settings.playback_marks
        call_log = log.bind(call_id=call_id, stream_id=start.connection_id)
        call = Call(call_id=call_id, stream_id=start.connection_id, profile_name=name,
                    profile=ctx.profile(name), started_at=prelude[-1][0], audio=audio,
                    observer=ctx.observer_for(call_id, "asterisk"), log=call_log, paced=paced,
                    # (a flush drops its marks)
                    piece_ms=PACED_PIECE_MS if paced else Call.piece_ms, late_acks=not paced,
                    fallback_audio=apology_clip(audio),  # heard when the gateway fails the call (no budget...)
                    **ctx.call_options(call_id if placed is not None else None), caller=caller, called=called)
        recorder = ctx.open_recorder("asterisk", call)
        if recorder is not None:
            for t, message in prelude:
                recorder.record(t, "phone", "in", message)
        prelude.clear()  # (recorded if recording): the call does not keep what came before it
        leg = codec.AsteriskLeg(start, log=call_log)
        await AsteriskBridge(ctx, ws, call, leg, opened_at, recorder, request.transport).run()
    finally:
        if not ws.closed:
            await ws.close()
    return ws

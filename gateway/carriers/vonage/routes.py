"""Vonage's HTTP side: the answer webhook (an NCCO), the event webhook and the media WebSocket.

Every webhook must be signed by Vonage (:func:`~gateway.carriers.vonage.auth.check_signed_webhook`,
with ``vonage.signature_secret``); without the secret they are refused, unless the gateway runs in
insecure dev mode. The answer issues a signed per-call token that the NCCO puts in the media
socket's ``Authorization`` header: the socket is taken only with it, binds to the call Vonage
announced and to the profile chosen for it, on any replica, and opens once.
"""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from gateway import metrics
from gateway.auth import TokenError, public_base, public_url_for
from gateway.bridge import CONTEXT, MAX_PHONE_MESSAGE, GatewayContext, log, now_ms, rejected
from gateway.call import Call
from gateway.carriers.common import load_json, short
from gateway.carriers.vonage import codec
from gateway.carriers.vonage.auth import check_signed_webhook
from gateway.carriers.vonage.control import VonageBridge
from gateway.carriers.vonage.settings import VonageSettings
from gateway.phonesocket import PhoneSocket

REST: web.AppKey[aiohttp.ClientSession] = web.AppKey("vonage_rest", aiohttp.ClientSession)  # the Voice API

CONNECTED_TIMEOUT_S = 10.0
CALL_TOKEN_TTL_S = 600.0  # from the answer webhook to the media socket
PIECE_MS = 60  # bot audio pieces: three 20 ms frames, each piece followed by a notify
MAX_WEBHOOK_BODY = 64 * 1024
FAILED_STATUSES = ("failed", "unanswered", "rejected", "timeout", "busy", "cancelled")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


async def _signed_params(request: web.Request, ctx: GatewayContext, route: str) -> dict[str, Any] | web.Response:
    """The webhook's parameters (query of a GET, JSON body of a POST) once its signature holds; else the
    refusal."""
    body = b""
    if request.method == "POST":
        if request.content_length is not None and request.content_length > MAX_WEBHOOK_BODY:
            return rejected("vonage", route, "webhook body too large", status=413)
        body = await request.read()  # (aiohttp refuses bodies over its client_max_size itself)
        if len(body) > MAX_WEBHOOK_BODY:
            return rejected("vonage", route, "webhook body too large", status=413)
    secret = VonageSettings.of(ctx.config).signature_secret
    if secret is None:
        if not ctx.insecure:
            return rejected("vonage", route, "no Vonage signature secret configured")
    else:
        problem = check_signed_webhook(secret.get_secret_value(), request.headers.get("Authorization"), body)
        if problem is not None:
            return rejected("vonage", route, f"signed webhook refused: {problem}", status=401)
    params: dict[str, Any] = dict(request.query)
    if body:
        value, problem = load_json(body)
        if problem is not None or type(value) is not dict:
            log.warning("Vonage webhook body refused", route=route, detail=problem or "not a JSON object")
            return web.Response(status=400, text="expected a JSON object\n")
        params.update(value)
    return params


async def vonage_answer(request: web.Request) -> web.Response:
    """``GET /vonage/answer`` (or POST): Vonage's answer webhook. Answers with the NCCO that connects
    the call to the media socket."""
    ctx = request.app[CONTEXT]
    params = await _signed_params(request, ctx, "answer")
    if isinstance(params, web.Response):
        return params
    call_uuid, to = _text(params.get("uuid")), codec.e164(_text(params.get("to")))
    if call_uuid is None:
        log.warning("Vonage answer webhook without a call uuid")
        return web.Response(status=400, text="no call uuid\n")
    busy = ctx.refusal()
    if busy is not None:
        log.warning("call refused", call_id=call_uuid, reason=busy)
        metrics.CALLS.inc("vonage", f"refused ({busy})")
        return web.json_response(codec.talk_ncco(ctx.config.gateway.apology))
    profile_name, _ = ctx.config.route(to)
    busy_message = ctx.refuse_busy("vonage", call_uuid, profile_name)
    if busy_message is not None:
        return web.json_response(codec.talk_ncco(busy_message))
    claims = {"call": call_uuid, "profile": profile_name}
    if to is not None:
        claims["to"] = to
    caller = codec.e164(_text(params.get("from")))
    if caller is not None:
        claims["from"] = caller  # in the signed token only: the call's record shows it (masked)
    token = ctx.tokens.issue(claims, CALL_TOKEN_TTL_S, carrier="vonage")
    headers = {"call": call_uuid, "profile": profile_name}
    if to is not None:
        headers["to"] = to
    conversation = _text(params.get("conversation_uuid"))
    if conversation is not None:
        headers["conversation"] = conversation
    base = public_base(request, ctx.config.gateway.public_url)
    ncco = codec.connect_ncco(public_url_for(base, "/vonage/media", websocket=True), headers, f"Bearer {token}",
                              public_url_for(base, "/vonage/event"))
    log.info("incoming Vonage call", call_id=call_uuid, profile=profile_name)
    # the call's session opens now: the media socket's token names the same call (its uuid) and profile,
    # and the socket carries L16 at 16 kHz (codec.AUDIO, what its call is built with)
    ctx.prewarm("vonage", call_uuid, profile_name, codec.AUDIO)
    return web.json_response(ncco)


async def vonage_event(request: web.Request) -> web.Response:
    """``POST /vonage/event`` (or GET): what became of the media socket's ``connect`` (synchronous: the
    answer may be an NCCO). An apology when the socket could not be opened or the gateway failed the
    call; otherwise nothing, and the NCCO goes on (it ends: the call hangs up)."""
    ctx = request.app[CONTEXT]
    params = await _signed_params(request, ctx, "event")
    if isinstance(params, web.Response):
        return params
    status = _text(params.get("status")) or ""
    headers = params.get("headers")
    call_id = (_text(headers.get("call")) if isinstance(headers, dict) else None) or _text(params.get("uuid")) or ""
    if status in FAILED_STATUSES:
        log.warning("Vonage could not open the media socket; the caller hears the apology", call_id=call_id,
                    status=status)
        return web.json_response(codec.talk_ncco(ctx.config.gateway.apology))
    message = await ctx.failure_message(call_id) if status == "disconnected" else None
    if message is not None:
        log.info("media socket closed after a failure; the caller hears the apology", call_id=call_id)
        return web.json_response(codec.talk_ncco(message))
    log.debug("Vonage call event", call_id=call_id, status=short(status))
    return web.Response(status=204)


async def _await_connected(ws: web.WebSocketResponse, opened_at: float,
                           prelude: list[tuple[float, str | bytes]]) -> codec.Connected | None:
    """The socket's ``websocket:connected`` (None: it did not come, or was unusable; logged)."""
    seen: dict[str, int] = {}

    def reject(problem: str, detail: str) -> None:
        seen[problem] = seen.get(problem, 0) + 1
        level = log.warning if seen[problem] == 1 else log.debug
        level("ignored a message before websocket:connected", problem=problem, detail=detail, count=seen[problem])

    try:
        async with asyncio.timeout(CONNECTED_TIMEOUT_S):
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    prelude.append((now_ms() - opened_at, msg.data))
                    try:
                        event = codec.parse_event(msg.data)
                    except codec.VonageProtocolError as exc:
                        reject("malformed", str(exc))
                        continue
                    if type(event) is codec.Connected:
                        return event
                    reject("event-before-connected", f"{type(event).__name__} before websocket:connected")
                elif msg.type is WSMsgType.BINARY:
                    prelude.append((now_ms() - opened_at, msg.data))
                    reject("audio-before-connected", "audio before websocket:connected: dropped, no call yet")
                elif msg.type is WSMsgType.ERROR:
                    log.warning("media socket error before websocket:connected; closing",
                                error=str(ws.exception())[:200])
                    return None
    except TimeoutError:
        log.warning("no websocket:connected in time; closing the media socket", timeout_s=CONNECTED_TIMEOUT_S)
    return None


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _socket_claims(request: web.Request, ctx: GatewayContext) -> dict[str, str] | web.Response:
    """The claims of the call token in the socket's Authorization header (checked, not yet spent), or
    the refusal. In insecure dev mode a socket without one is taken with no claims."""
    token = _bearer(request)
    if token is None:
        if ctx.insecure:
            return {}
        return rejected("vonage", "media", "no call token in Authorization", status=401)
    try:
        claims = ctx.tokens.verify(token, carrier="vonage")
    except TokenError as exc:
        return rejected("vonage", "media", f"call token {exc.reason}", status=403)
    if _text(claims.get("call")) is None:
        return rejected("vonage", "media", "call token names no call", status=403)
    return claims


async def vonage_media(request: web.Request) -> web.StreamResponse:
    """``GET /vonage/media``: the Vonage media WebSocket (binary L16 16 kHz, JSON text events)."""
    ctx: GatewayContext = request.app[CONTEXT]
    claims = _socket_claims(request, ctx)
    if isinstance(claims, web.Response):
        return claims
    busy = ctx.media_refusal("vonage", _text(claims.get("call")))  # (a placed call takes the place it holds)
    if busy is not None:
        metrics.CALLS.inc("vonage", f"refused ({busy})")
        return web.Response(status=503, text=f"{busy}\n")
    ws = PhoneSocket(max_msg_size=MAX_PHONE_MESSAGE, autoping=True)
    await ws.prepare(request)
    opened_at = now_ms()
    prelude: list[tuple[float, str | bytes]] = []
    try:
        connected = await _await_connected(ws, opened_at, prelude)
        if connected is None:
            return ws
        if not codec.same_content_type(connected.content_type):
            log.error("media socket refused: unsupported audio", content_type=short(connected.content_type),
                      expected=codec.CONTENT_TYPE)
            await ws.close(code=1003, message=b"unsupported content-type")
            return ws
        await _run_call(request, ctx, ws, connected, claims, opened_at, prelude)
    finally:
        if not ws.closed:
            await ws.close()
    return ws


async def _run_call(request: web.Request, ctx: GatewayContext, ws: web.WebSocketResponse, connected: codec.Connected,
                    claims: dict[str, str], opened_at: float, prelude: list[tuple[float, str | bytes]]) -> None:
    headers = connected.headers
    token_call = claims.get("call")
    call_id = token_call or headers.get("call") or str(uuidlib.uuid4())
    if token_call is not None:
        if headers.get("call", token_call) != token_call:
            rejected("vonage", "media", "call token for another call", call_id=short(headers.get("call")))
            await ws.close(code=1008, message=b"call token refused")
            return
        try:
            ctx.tokens.spend(_bearer(request) or "")  # a token opens its call's socket once
        except TokenError as exc:
            rejected("vonage", "media", f"call token {exc.reason}", call_id=call_id)
            await ws.close(code=1008, message=b"call token refused")
            return
    busy = ctx.media_refusal("vonage", call_id)
    if busy is not None:  # the gateway began to drain (or filled up) while the socket was opening
        metrics.CALLS.inc("vonage", f"refused ({busy})")
        log.warning("media socket refused at websocket:connected", reason=busy, call_id=call_id)
        ctx.note_failure(call_id)  # the event webhook apologises to the caller
        await ws.close(code=1013, message=busy.encode())
        return
    if call_id in ctx.calls:
        log.warning("a second media socket for a call in progress: refused (one session per call)", call_id=call_id)
        await ws.close(code=1008, message=b"duplicate stream")
        return
    name = claims.get("profile") if token_call is not None else headers.get("profile")
    to = claims.get("to") if token_call is not None else headers.get("to")
    if name not in ctx.config.profiles:
        if name:
            log.warning("unknown profile for the call; routing by number instead", call_id=call_id, profile=name)
        name, _ = ctx.config.route(to)
    settings = VonageSettings.of(ctx.config)
    stream_id = headers.get("conversation") or call_id
    call = Call(call_id=call_id, stream_id=stream_id, profile_name=name, profile=ctx.profile(name),
                started_at=prelude[-1][0], audio=codec.AUDIO, piece_ms=PIECE_MS,
                observer=ctx.observer_for(call_id, "vonage"), log=log.bind(call_id=call_id, stream_id=stream_id),
                **ctx.call_options(call_id), can_transfer=settings.can_call_api,
                can_send_dtmf=settings.can_call_api, called=to or None,
                caller=(claims.get("from") or None) if token_call is not None else None)
    recorder = ctx.open_recorder("vonage", call)
    if recorder is not None:
        for t, message in prelude:
            recorder.record(t, "phone", "in", message)
    prelude.clear()  # (recorded if recording): the call does not keep what came before it
    await VonageBridge(ctx, ws, call, codec.VonageLeg(), opened_at, recorder, request.transport,
                       rest=request.app[REST] if settings.can_call_api else None,
                       called=call.caller if call.direction == "outbound" else to).run()

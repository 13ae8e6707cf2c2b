"""Genesys's HTTP side: the AudioHook WebSocket ``GET /genesys/audiohook``.

Genesys Cloud opens it with ``Audiohook-Organization-Id``, ``Audiohook-Correlation-Id``,
``Audiohook-Session-Id``, ``X-API-KEY`` and an HTTP message signature; the upgrade is refused (401)
unless the API key and the signature hold (``genesys.api_key``, ``genesys.client_secret``), and (403)
when they are not configured, unless ``gateway.insecure_dev_mode`` is on. Then the session's ``open``
is awaited: its media offer must fit, the called number (``participant.dnis``, or the input variable
``dnis``) chooses the profile, and the call runs with the conversation id as its call id and the
AudioHook session id as its stream id. A session refused after the upgrade (no usable media, the
gateway draining, a second session for a conversation in progress) gets a ``disconnect`` that says why.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from gateway import metrics
from gateway.audio import G711_ULAW
from gateway.auth import DEFAULT_PORTS, public_base
from gateway.bridge import CONTEXT, MAX_PHONE_MESSAGE, GatewayContext, log, now_ms, rejected
from gateway.call import Call
from gateway.carriers.genesys import codec
from gateway.carriers.genesys.auth import AuthError, NonceCache, decode_client_secret, verify_request
from gateway.carriers.genesys.control import GenesysBridge, refuse_session
from gateway.carriers.genesys.settings import GenesysSettings
from gateway.phonesocket import PhoneSocket

OPEN_TIMEOUT_S = 10.0
NONCES: web.AppKey[NonceCache] = web.AppKey("genesys_nonces", NonceCache)


def _authority(netloc: str, scheme: str) -> str:
    host = netloc.lower()
    default = DEFAULT_PORTS.get(scheme.lower())
    if default is not None and host.endswith(f":{default}"):
        host = host[: -len(f":{default}")]
    return host


def _check_auth(request: web.Request, ctx: GatewayContext) -> web.Response | None:
    """None when the upgrade may go on; else the refusal."""
    settings = GenesysSettings.of(ctx.config)
    if settings.api_key is None or settings.client_secret is None:
        if ctx.insecure:
            return None
        return rejected("genesys", "audiohook", "Genesys credentials not configured (genesys.api_key and "
                        "genesys.client_secret)")
    try:
        secret = decode_client_secret(settings.client_secret.get_secret_value())
    except ValueError as exc:
        return rejected("genesys", "audiohook", str(exc), status=503)
    base = urlsplit(public_base(request, ctx.config.gateway.public_url))
    scheme = {"http": "ws", "https": "wss"}.get(base.scheme, base.scheme)
    authorities = [_authority(base.netloc, base.scheme)]
    host = request.headers.get("Host")
    if host and _authority(host, base.scheme) not in authorities:
        authorities.append(_authority(host, base.scheme))
    target = base.path.rstrip("/") + request.rel_url.raw_path_qs
    try:
        verify_request(method=request.method, target=target, authorities=authorities, scheme=scheme,
                       headers=request.headers, api_key=settings.api_key.get_secret_value(), client_secret=secret,
                       now=time.time(), max_age_s=settings.max_signature_age_s, nonces=request.app[NONCES])
    except AuthError as exc:
        return rejected("genesys", "audiohook", exc.reason, status=401,
                        session_id=request.headers.get("Audiohook-Session-Id", "")[:64])
    return None


async def _await_open(ws: web.WebSocketResponse, opened_at: float,
                      prelude: list[tuple[float, str | bytes]]) -> codec.Message | None:
    """Read the socket until the session's ``open``; every message read is kept in ``prelude`` with
    its arrival time (ms since the socket opened)."""
    try:
        async with asyncio.timeout(OPEN_TIMEOUT_S):
            async for msg in ws:
                if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
                    prelude.append((now_ms() - opened_at, msg.data))
                    if msg.type is WSMsgType.BINARY:
                        continue  # the leg reports it: audio before the open transaction
                    try:
                        message = codec.parse_message(msg.data)
                    except codec.GenesysProtocolError:
                        continue  # reported when the leg reads it
                    if message.type == "open":
                        return message
                    if message.type == "close":
                        log.info("AudioHook session closed before it opened")
                        return None
                elif msg.type is WSMsgType.ERROR:
                    log.warning("AudioHook socket error before open; closing", error=str(ws.exception())[:200])
                    return None
    except TimeoutError:
        log.warning("no open message in time; closing the AudioHook socket", timeout_s=OPEN_TIMEOUT_S)
    return None


async def genesys_audiohook(request: web.Request) -> web.StreamResponse:
    """``GET /genesys/audiohook``: the AudioConnector (bidirectional AudioHook) WebSocket."""
    ctx: GatewayContext = request.app[CONTEXT]
    refusal = _check_auth(request, ctx)
    if refusal is not None:
        return refusal
    session_header = request.headers.get("Audiohook-Session-Id", "")
    if not session_header:
        return rejected("genesys", "audiohook", "no Audiohook-Session-Id header", status=400)
    busy = ctx.refusal()
    if busy is not None:
        metrics.CALLS.inc("genesys", f"refused ({busy})")
        return web.Response(status=503, text=f"{busy}\n")
    ws = PhoneSocket(max_msg_size=MAX_PHONE_MESSAGE, autoping=True)
    await ws.prepare(request)
    opened_at = now_ms()
    prelude: list[tuple[float, str | bytes]] = []
    try:
        message = await _await_open(ws, opened_at, prelude)
        if message is None:
            return ws
        if message.session_id != session_header:
            rejected("genesys", "open", "session id of the open is not the Audiohook-Session-Id header")
            await refuse_session(ws, message, "the session id does not match the Audiohook-Session-Id header")
            return ws
        try:
            opened = codec.parse_open(message)
        except codec.GenesysProtocolError as exc:
            rejected("genesys", "open", str(exc), status=400, session_id=message.session_id)
            await refuse_session(ws, message, str(exc))
            return ws
        if codec.choose_media(opened.media) is None:
            offered = [f"{o.format}/{o.rate}/{'+'.join(o.channels)}" for o in opened.media]
            rejected("genesys", "open", "no usable media offer", status=415, call_id=opened.conversation_id,
                     offered=offered[:8])
            await refuse_session(ws, message, codec.NO_MEDIA)
            return ws
        busy = ctx.refusal()
        if busy is not None:  # the gateway began to drain (or filled up) while the session was opening
            metrics.CALLS.inc("genesys", f"refused ({busy})")
            log.warning("AudioHook session refused at its open", reason=busy, call_id=opened.conversation_id)
            await refuse_session(ws, message, f"the gateway cannot take the call now ({busy})")
            return ws
        if opened.conversation_id in ctx.calls:
            log.warning("a second AudioHook session for a conversation in progress: refused",
                        call_id=opened.conversation_id)
            await refuse_session(ws, message, "another session for this conversation is in progress")
            return ws
        number = codec.called_number(opened)
        name, _ = ctx.config.route(number)
        call = Call(call_id=opened.conversation_id, stream_id=opened.session_id, profile_name=name,
                    profile=ctx.profile(name), started_at=0.0, audio=G711_ULAW, paced=True,
                    piece_ms=codec.GENESYS_PIECE_MS, observer=ctx.observer_for(opened.conversation_id, "genesys"),
                    log=log.bind(call_id=opened.conversation_id, stream_id=opened.session_id),
                    **ctx.call_options(), can_transfer=True, caller=opened.ani, called=number)
        log.info("incoming Genesys AudioHook session", call_id=call.call_id, stream_id=call.stream_id, profile=name,
                 organization_id=opened.organization_id)
        await GenesysBridge(ctx, ws, call, codec.GenesysLeg(), opened_at, ctx.open_recorder("genesys", call),
                            request.transport, prelude=prelude).run()
    finally:
        if not ws.closed:
            await ws.close()
    return ws

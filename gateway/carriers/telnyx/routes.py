"""Telnyx's HTTP side: the TeXML voice webhook, the stream's end and the media WebSocket.

Telnyx signs its webhooks with Ed25519 (see :mod:`gateway.carriers.telnyx.auth`); both webhooks are
refused without a valid signature unless no public key is configured and the gateway runs in
insecure dev mode. The media socket's upgrade carries no Telnyx signature, so the voice webhook
hands the stream a signed per-call token in the stream URL's query string (with the profile and
the called number), which the media socket checks at ``start``: it binds the stream to the call
Telnyx announced (a TeXML call's ``CallSid`` is its ``call_control_id``) and to the profile chosen
for it, on any replica, and opens that stream once (a replayed ``start`` is refused by the replica
that saw the first one).
"""

from __future__ import annotations

import functools
import time
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway import metrics
from gateway.audio import G711_ULAW
from gateway.auth import TokenError, public_base, public_url_for
from gateway.bridge import CONTEXT, MAX_PHONE_MESSAGE, GatewayContext, log, now_ms, rejected
from gateway.call import Call
from gateway.carriers.prelude import MEDIA_BEFORE_START, Step, await_start
from gateway.carriers.telnyx import codec as telnyx
from gateway.carriers.telnyx.auth import check_telnyx_signature, public_key_from_base64
from gateway.carriers.telnyx.control import TelnyxBridge
from gateway.carriers.telnyx.settings import TelnyxSettings
from gateway.phonesocket import PhoneSocket

REST: web.AppKey[aiohttp.ClientSession] = web.AppKey("telnyx_rest", aiohttp.ClientSession)  # transfers, placing

START_TIMEOUT_S = 10.0
CALL_TOKEN_TTL_S = 600.0  # from the webhook to the stream's start
MAX_WEBHOOK_BODY = 64 * 1024


@functools.lru_cache(maxsize=4)
def _public_key(text: str) -> Ed25519PublicKey:
    return public_key_from_base64(text)


async def _signed_form(request: web.Request, ctx: GatewayContext, route: str) -> dict[str, str] | web.Response:
    """The webhook's form fields when Telnyx signed it; else the refusal."""
    settings = TelnyxSettings.of(ctx.config)
    if request.content_length is not None and request.content_length > MAX_WEBHOOK_BODY:
        return rejected("telnyx", route, "webhook body too large", status=413)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return rejected("telnyx", route, "webhook body too large", status=413)
    if settings.public_key is None:
        if not ctx.insecure:
            return rejected("telnyx", route, "no Telnyx public key configured")
    else:
        problem = check_telnyx_signature(_public_key(settings.public_key), request.headers, body, time.time(),
                                         settings.signature_tolerance_s)
        if problem is not None:
            return rejected("telnyx", route, problem)
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except (UnicodeDecodeError, ValueError):
        return rejected("telnyx", route, "webhook body is not a form", status=400)


async def telnyx_voice(request: web.Request) -> web.Response:
    """``POST /telnyx/voice``: Telnyx's TeXML voice webhook. Answers with TeXML that opens the media stream."""
    ctx = request.app[CONTEXT]
    form = await _signed_form(request, ctx, "voice")
    if isinstance(form, web.Response):
        return form
    to, call_sid = form.get("To", ""), form.get("CallSid", "")
    busy = ctx.refusal()
    if busy is not None:
        log.warning("call refused", call_id=call_sid, reason=busy)
        metrics.CALLS.inc("telnyx", f"refused ({busy})")
        return web.Response(text=telnyx.say_texml(ctx.config.gateway.apology), content_type="text/xml")
    profile_name, _ = ctx.config.route(to or None)
    busy_message = ctx.refuse_busy("telnyx", call_sid, profile_name)
    if busy_message is not None:
        return web.Response(text=telnyx.say_texml(busy_message), content_type="text/xml")
    parameters = {"profile": profile_name, "to": to}
    if call_sid:
        claims = {"call": call_sid, "profile": profile_name, "account": form.get("AccountSid", "")}
        parameters["token"] = ctx.tokens.issue(claims, CALL_TOKEN_TTL_S, carrier="telnyx")
    log.info("incoming Telnyx call", call_id=call_sid, profile=profile_name)
    # the call's session opens now: its stream's start names the same call (call_control_id, the
    # CallSid), the token the same profile, and the stream carries PCMU (the call's default audio)
    ctx.prewarm("telnyx", call_sid, profile_name, G711_ULAW)
    base = public_base(request, ctx.config.gateway.public_url)
    stream = telnyx.media_url(public_url_for(base, "/telnyx/media", websocket=True), parameters)
    texml = telnyx.connect_texml(stream, public_url_for(base, "/telnyx/stream-ended"))
    return web.Response(text=texml, content_type="text/xml")


async def telnyx_stream_ended(request: web.Request) -> web.Response:
    """``POST /telnyx/stream-ended``: the ``<Redirect>`` after the ``<Connect><Stream>``. Telnyx asks
    what next once the media stream has closed: an apology and a hang-up when the gateway failed the
    call, else a hang-up."""
    ctx = request.app[CONTEXT]
    form = await _signed_form(request, ctx, "stream-ended")
    if isinstance(form, web.Response):
        return form
    call_sid = form.get("CallSid", "")
    message = await ctx.failure_message(call_sid)
    if message is not None:
        log.info("apologising to the caller before hanging up", call_id=call_sid)
        return web.Response(text=telnyx.say_texml(message), content_type="text/xml")
    return web.Response(text=telnyx.hangup_texml(), content_type="text/xml")


def _before_start(text: str) -> Step:
    """What a message before ``start`` is (see :func:`gateway.carriers.prelude.await_start`)."""
    try:
        event = telnyx.parse_message(text)
    except telnyx.TelnyxProtocolError as exc:
        return ("refuse", str(exc)) if exc.event == "start" else ("reject", ("malformed", str(exc)))
    kind = type(event)
    if kind is telnyx.Start:
        return "start", event
    if kind is telnyx.Media:
        return MEDIA_BEFORE_START
    if kind is telnyx.StreamError:
        return "reject", ("stream-error", f"Telnyx reports error {event.code or '?'}: {event.title}")  # type: ignore[union-attr]
    return ("stop", None) if kind is telnyx.Stop else ("ignore", None)


def _stream_parameters(request: web.Request, start: telnyx.Start) -> dict[str, str]:
    """The call's parameters: the media URL's query string as the webhook wrote it, then any
    ``custom_parameters`` of the start message (a stream started through Call Control)."""
    params = {k: v for k, v in request.query.items()}
    for name, value in start.params.items():
        params.setdefault(name, value)
    return params


def _redeem_token(ctx: GatewayContext, start: telnyx.Start, token: str) -> dict[str, str] | None:
    """The claims of the stream's call token, used up: a token opens the stream of its call once.
    None (logged, counted) when it does not hold."""
    try:
        claims = ctx.tokens.verify(token, carrier="telnyx")
        if claims.get("call") != start.call_control_id:
            raise TokenError("for another call")
        ctx.tokens.spend(token)
    except TokenError as exc:
        rejected("telnyx", "media", f"call token {exc.reason}", call_id=start.call_control_id)
        return None
    return claims


def _profile_for(ctx: GatewayContext, start: telnyx.Start, params: dict[str, str]) -> tuple[str, str] | None:
    """(profile, account) this stream was given by the webhook; None when its token does not hold."""
    token = params.get("token")
    account = start.account_id
    if token or not ctx.insecure:
        claims = _redeem_token(ctx, start, token or "")
        if claims is None:
            return None
        name = claims.get("profile", "")
        account = claims.get("account") or account
    else:
        name = params.get("profile", "")
    if name not in ctx.config.profiles:
        if name:
            log.warning("unknown profile in stream parameters; routing by number instead",
                        call_id=start.call_control_id, profile=name)
        name, _ = ctx.config.route(params.get("to") or start.to or None)
    return name, account


def _note_refused_call(ctx: GatewayContext, token: str | None) -> None:
    """A stream refused before its start: the call its token names (when it holds) hears the apology
    at the ``<Redirect>``. The token is not used up: it opens nothing."""
    if not token:
        return
    try:
        call_id = ctx.tokens.verify(token, carrier="telnyx").get("call")
    except TokenError:
        return
    if call_id:
        log.warning("media stream refused before its start", call_id=call_id)
        ctx.note_failure(call_id)


async def telnyx_media(request: web.Request) -> web.StreamResponse:
    """``GET /telnyx/media``: the Telnyx media streaming WebSocket."""
    ctx: GatewayContext = request.app[CONTEXT]
    busy = ctx.media_refusal("telnyx", None)  # (a call this worker placed takes the place it holds)
    if busy is not None:
        metrics.CALLS.inc("telnyx", f"refused ({busy})")
        _note_refused_call(ctx, request.query.get("token"))
        return web.Response(status=503, text=f"{busy}\n")
    ws = PhoneSocket(max_msg_size=MAX_PHONE_MESSAGE, autoping=True)
    await ws.prepare(request)
    opened_at = now_ms()
    prelude: list[tuple[float, str | bytes]] = []
    try:
        start: telnyx.Start | None = await await_start(ws, opened_at, prelude, _before_start, START_TIMEOUT_S)
        if start is None:
            return ws
        call_id = start.call_control_id
        busy = ctx.media_refusal("telnyx", call_id)
        if busy is not None:  # the gateway began to drain (or filled up) while this stream was opening
            metrics.CALLS.inc("telnyx", f"refused ({busy})")
            log.warning("media stream refused at its start", reason=busy, call_id=call_id)
            ctx.note_failure(call_id)  # the <Redirect> after the stream apologises to the caller
            await ws.close(code=1013, message=busy.encode())
            return ws
        params = _stream_parameters(request, start)
        chosen = _profile_for(ctx, start, params)
        if chosen is None:
            await ws.close(code=1008, message=b"call token refused")
            return ws
        name, account = chosen
        settings = TelnyxSettings.of(ctx.config)
        call = Call(call_id=call_id, stream_id=start.stream_id, profile_name=name,
                    profile=ctx.profile(name), started_at=prelude[-1][0],
                    observer=ctx.observer_for(call_id, "telnyx"),
                    log=log.bind(call_id=call_id, stream_id=start.stream_id), **ctx.call_options(call_id),
                    can_transfer=settings.api_key is not None and bool(account), caller=start.from_, called=start.to)
        if call.call_id in ctx.calls:
            call.log.warning("a second media stream for a call in progress: refused (one session per call)")
            await ws.close(code=1008, message=b"duplicate stream")
            return ws
        recorder = ctx.open_recorder("telnyx", call)
        if recorder is not None:
            if params.get("token"):
                recorder.call_secrets.append(params["token"])
            for t, message in prelude:
                recorder.record(t, "phone", "in", message)
        prelude.clear()  # (recorded if recording): the call does not keep what came before it
        await TelnyxBridge(ctx, ws, call, telnyx.TelnyxLeg(start), opened_at, recorder, request.transport,
                           account_sid=account, rest=request.app[REST]).run()
    finally:
        if not ws.closed:
            await ws.close()
    return ws

"""Twilio's HTTP side: the voice webhook (TwiML) and the Media Streams WebSocket.

Both requests must carry Twilio's ``X-Twilio-Signature``, checked against the configured public
URL (so it holds behind a TLS-terminating proxy). The webhook also hands the stream a signed
per-call token in a ``<Parameter>``, which the media socket checks at ``start``: it binds the
stream to the call Twilio announced and to the profile chosen for it, on any replica, and opens
that stream once (a replayed ``start`` is refused by the replica that saw the first one).
"""

from __future__ import annotations

import aiohttp
from aiohttp import web

from gateway import metrics
from gateway.audio import G711_ULAW
from gateway.auth import TokenError, public_base, public_url_for
from gateway.bridge import CONTEXT, MAX_PHONE_MESSAGE, GatewayContext, log, now_ms, rejected
from gateway.call import Call
from gateway.carriers.prelude import MEDIA_BEFORE_START, Step, await_start
from gateway.carriers.twilio import codec as twilio
from gateway.carriers.twilio.auth import check_twilio_signature
from gateway.carriers.twilio.control import TwilioBridge
from gateway.carriers.twilio.settings import TwilioSettings
from gateway.phonesocket import PhoneSocket

REST: web.AppKey[aiohttp.ClientSession] = web.AppKey("twilio_rest", aiohttp.ClientSession)  # transfers

START_TIMEOUT_S = 10.0
CALL_TOKEN_TTL_S = 600.0  # from the webhook to the stream's start


def _signed_url(request: web.Request, ctx: GatewayContext, websocket: bool = False) -> str:
    """The URL Twilio signed for this request: the public address, then the path and the query
    string exactly as Twilio sent them (percent-encoding kept, as Twilio signs it)."""
    url = request.rel_url
    base = public_base(request, ctx.config.gateway.public_url)
    return public_url_for(base, url.raw_path, url.raw_query_string, websocket=websocket)


def _check_signature(request: web.Request, ctx: GatewayContext, route: str, url: str,
                     params: dict[str, str] | None) -> web.Response | None:
    """None when the request may go on; else the refusal."""
    token = TwilioSettings.of(ctx.config).auth_token
    if token is None:
        if ctx.insecure:
            return None
        return rejected("twilio", route, "no Twilio auth token configured")
    if not check_twilio_signature(token.get_secret_value(), url, params, request.headers.get("X-Twilio-Signature")):
        return rejected("twilio", route, "bad or missing X-Twilio-Signature", url=url)
    return None


async def twilio_voice(request: web.Request) -> web.Response:
    """``POST /twilio/voice``: Twilio's voice webhook. Answers with TwiML that opens the media stream."""
    ctx = request.app[CONTEXT]
    form = {k: str(v) for k, v in (await request.post()).items()}
    refusal = _check_signature(request, ctx, "voice", _signed_url(request, ctx), form)
    if refusal is not None:
        return refusal
    to, call_sid = form.get("To", ""), form.get("CallSid", "")
    busy = ctx.refusal()
    if busy is not None:
        log.warning("call refused", call_id=call_sid, reason=busy)
        metrics.CALLS.inc("twilio", f"refused ({busy})")
        return web.Response(text=twilio.say_twiml(ctx.config.gateway.apology), content_type="text/xml")
    profile_name, _ = ctx.config.route(to or None)
    busy_message = ctx.refuse_busy("twilio", call_sid, profile_name)
    if busy_message is not None:
        return web.Response(text=twilio.say_twiml(busy_message), content_type="text/xml")
    parameters = {"profile": profile_name, "to": to, "from": form.get("From", "")}
    if call_sid:
        parameters["token"] = ctx.tokens.issue({"call": call_sid, "profile": profile_name}, CALL_TOKEN_TTL_S,
                                               carrier="twilio")
    log.info("incoming Twilio call", call_id=call_sid, profile=profile_name)
    ctx.prewarm("twilio", call_sid, profile_name, G711_ULAW)
    base = public_base(request, ctx.config.gateway.public_url)
    twiml = twilio.connect_twiml(public_url_for(base, "/twilio/media", websocket=True), parameters,
                                 action=public_url_for(base, "/twilio/stream-ended"))
    return web.Response(text=twiml, content_type="text/xml")


async def twilio_stream_ended(request: web.Request) -> web.Response:
    """``POST /twilio/stream-ended``: the ``<Connect action>``. Twilio asks what next once the media
    stream has closed: an apology and a hang-up when the gateway failed the call, else a hang-up."""
    ctx = request.app[CONTEXT]
    form = {k: str(v) for k, v in (await request.post()).items()}
    refusal = _check_signature(request, ctx, "stream-ended", _signed_url(request, ctx), form)
    if refusal is not None:
        return refusal
    call_sid = form.get("CallSid", "")
    message = await ctx.failure_message(call_sid)
    if message is not None:
        log.info("apologising to the caller before hanging up", call_id=call_sid)
        return web.Response(text=twilio.say_twiml(message), content_type="text/xml")
    return web.Response(text=twilio.hangup_twiml(), content_type="text/xml")


def _before_start(text: str) -> Step:
    """What a message before ``start`` is (see :func:`gateway.carriers.prelude.await_start`)."""
    try:
        event = twilio.parse_message(text)
    except twilio.TwilioProtocolError as exc:
        return ("refuse", str(exc)) if exc.event == "start" else ("reject", ("malformed", str(exc)))
    kind = type(event)
    if kind is twilio.Start:
        return "start", event
    if kind is twilio.Media:
        return MEDIA_BEFORE_START
    return ("stop", None) if kind is twilio.Stop else ("ignore", None)


def _redeem_token(ctx: GatewayContext, start: twilio.Start, token: str) -> dict[str, str] | None:
    """The claims of the stream's call token, used up: a token opens the stream of its call once.
    None (logged, counted) when it does not hold."""
    try:
        claims = ctx.tokens.verify(token, carrier="twilio")
        if claims.get("call") != start.call_sid:
            raise TokenError("for another call")
        ctx.tokens.spend(token)
    except TokenError as exc:
        rejected("twilio", "media", f"call token {exc.reason}", call_id=start.call_sid)
        return None
    return claims


def _profile_for(ctx: GatewayContext, start: twilio.Start) -> str | None:
    """The profile this stream was given by the webhook; None when its token does not hold."""
    params = start.params
    token = params.get("token")
    if token or not ctx.insecure:
        claims = _redeem_token(ctx, start, token or "")
        if claims is None:
            return None
        name = claims.get("profile", "")
    else:
        name = params.get("profile", "")
    if name not in ctx.config.profiles:
        if name:
            log.warning("unknown profile in stream parameters; routing by number instead",
                        call_id=start.call_sid, profile=name)
        name, _ = ctx.config.route(params.get("to"))
    return name


async def twilio_media(request: web.Request) -> web.StreamResponse:
    """``GET /twilio/media``: the Twilio Media Streams WebSocket."""
    ctx: GatewayContext = request.app[CONTEXT]
    refusal = _check_signature(request, ctx, "media", _signed_url(request, ctx, websocket=True), None)
    if refusal is not None:
        return refusal
    busy = ctx.media_refusal("twilio", None)  # (a call this worker placed takes the place it holds)
    if busy is not None:
        metrics.CALLS.inc("twilio", f"refused ({busy})")
        return web.Response(status=503, text=f"{busy}\n")
    ws = PhoneSocket(max_msg_size=MAX_PHONE_MESSAGE, autoping=True)
    await ws.prepare(request)
    opened_at = now_ms()
    prelude: list[tuple[float, str | bytes]] = []
    try:
        start: twilio.Start | None = await await_start(ws, opened_at, prelude, _before_start, START_TIMEOUT_S)
        if start is None:
            return ws
        busy = ctx.media_refusal("twilio", start.call_sid)
        if busy is not None:  # the gateway began to drain (or filled up) while this stream was opening
            metrics.CALLS.inc("twilio", f"refused ({busy})")
            log.warning("media stream refused at its start", reason=busy, call_id=start.call_sid)
            ctx.note_failure(start.call_sid)  # the <Connect action> apologises to the caller
            await ws.close(code=1013, message=busy.encode())
            return ws
        name = _profile_for(ctx, start)
        if name is None:
            await ws.close(code=1008, message=b"call token refused")
            return ws
        call = Call(call_id=start.call_sid, stream_id=start.stream_sid, profile_name=name,
                    profile=ctx.profile(name), started_at=prelude[-1][0],
                    observer=ctx.observer_for(start.call_sid, "twilio"),
                    log=log.bind(call_id=start.call_sid, stream_id=start.stream_sid),
                    **ctx.call_options(start.call_sid),
                    can_transfer=TwilioSettings.of(ctx.config).auth_token is not None and bool(start.account_sid),
                    caller=start.params.get("from") or None, called=start.params.get("to") or None)
        if call.call_id in ctx.calls:
            call.log.warning("a second media stream for a call in progress: refused (one session per call)")
            await ws.close(code=1008, message=b"duplicate stream")
            return ws
        recorder = ctx.open_recorder("twilio", call)
        if recorder is not None:
            if start.params.get("token"):
                recorder.call_secrets.append(start.params["token"])
            for t, message in prelude:
                recorder.record(t, "phone", "in", message)
        prelude.clear()  # (recorded if recording): the call does not keep what came before it
        await TwilioBridge(ctx, ws, call, twilio.TwilioLeg(start), opened_at, recorder, request.transport,
                           account_sid=start.account_sid, rest=request.app[REST]).run()
    finally:
        if not ws.closed:
            await ws.close()
    return ws

"""Plivo's HTTP side: the answer URL (Plivo XML), the audio stream's WebSocket, what follows the
stream, and the XML of a transfer.

Every request Plivo makes to the gateway's URLs carries ``X-Plivo-Signature-V3`` (with its
nonce), checked against the configured public URL (so it holds behind a TLS-terminating proxy).
Plivo's documentation does not say that the stream's WebSocket upgrade is signed, so the media
socket is authenticated by a signed per-call token instead: the answer puts it in the stream URL's
query string, the upgrade is refused without a valid one, and at ``start`` it must name the call
Plivo announced. It binds the stream to that call and to the profile chosen for it, on any
replica, and opens that stream once (a replayed ``start`` is refused by the replica that saw the
first one). (The ``<Stream extraHeaders>`` attribute would carry it into ``start``, but it takes
letters and digits only, and the token is base64url with a dot.)
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from gateway import metrics
from gateway.audio import G711_ULAW
from gateway.auth import TokenError, public_base, public_url_for
from gateway.bridge import CONTEXT, MAX_PHONE_MESSAGE, GatewayContext, log, now_ms, rejected
from gateway.call import Call
from gateway.carriers.plivo import codec as plivo
from gateway.carriers.plivo.auth import NONCE_HEADER, SIGNATURE_HEADER, check_plivo_signature
from gateway.carriers.plivo.control import PlivoBridge
from gateway.carriers.plivo.settings import PlivoSettings
from gateway.carriers.prelude import MEDIA_BEFORE_START, Step, await_start
from gateway.phonesocket import PhoneSocket

REST: web.AppKey[aiohttp.ClientSession] = web.AppKey("plivo_rest", aiohttp.ClientSession)  # transfers, placing
# CallUUID -> the request_uuid of the call the gateway placed it for (see gateway.carriers.plivo.outbound)
CALL_UUIDS: web.AppKey[dict[str, str]] = web.AppKey("plivo_placed_call_uuids", dict)

START_TIMEOUT_S = 10.0
CALL_TOKEN_TTL_S = 600.0  # from the answer to the stream's start
_NUMBER = re.compile(r"\+?[0-9]{2,20}")  # a number a transfer may dial (E.164 or digits)


def _signed_url(request: web.Request, ctx: GatewayContext) -> str:
    """The URL Plivo signed for this request: the public address, then the path and the query
    string as Plivo sent them."""
    url = request.rel_url
    return public_url_for(public_base(request, ctx.config.gateway.public_url), url.raw_path, url.raw_query_string)


async def _signed_form(request: web.Request, ctx: GatewayContext, route: str,
                       ) -> tuple[dict[str, str], web.Response | None]:
    """The request's form fields, and None when the request may go on (else the refusal)."""
    token = PlivoSettings.of(ctx.config).auth_token
    if token is None and not ctx.insecure:
        return {}, rejected("plivo", route, "no Plivo auth token configured")
    try:
        posted = await request.post()
    except ValueError:  # a multipart body without its boundary, bytes that are not UTF-8...
        return {}, rejected("plivo", route, "request body is not a form", status=400)
    form = {k: str(v) for k, v in posted.items()}
    if token is None:
        return form, None
    url = _signed_url(request, ctx)
    signed = {name: [str(v) for v in posted.getall(name)] for name in posted}  # every value of a repeated name
    if not check_plivo_signature(token.get_secret_value(), request.method, url, signed,
                                 request.headers.get(SIGNATURE_HEADER), request.headers.get(NONCE_HEADER)):
        return {}, rejected("plivo", route, f"bad or missing {SIGNATURE_HEADER}", url=url)
    return form, None


def _xml(text: str) -> web.Response:
    return web.Response(text=text, content_type="application/xml")


async def plivo_answer(request: web.Request) -> web.Response:
    """``POST /plivo/answer``: Plivo's answer URL. Answers with XML that opens a bidirectional stream."""
    ctx = request.app[CONTEXT]
    form, refusal = await _signed_form(request, ctx, "answer")
    if refusal is not None:
        return refusal
    to, call_uuid = plivo.e164(form.get("To", "")), form.get("CallUUID", "")
    busy = ctx.refusal()
    if busy is not None:
        log.warning("call refused", call_id=call_uuid, reason=busy)
        metrics.CALLS.inc("plivo", f"refused ({busy})")
        return _xml(plivo.speak_xml(ctx.config.gateway.apology))
    profile_name, _ = ctx.config.route(to or None)
    busy_message = ctx.refuse_busy("plivo", call_uuid, profile_name)
    if busy_message is not None:
        return _xml(plivo.speak_xml(busy_message))
    query = {"profile": profile_name, "to": to}
    if call_uuid:
        # the caller's number travels in the signed token only (for the call's record), not in the URL
        claims = {"call": call_uuid, "profile": profile_name, "to": to}
        if caller := plivo.e164(form.get("From", "")):
            claims["from"] = caller
        query["token"] = ctx.tokens.issue(claims, CALL_TOKEN_TTL_S, carrier="plivo")
    log.info("incoming Plivo call", call_id=call_uuid, profile=profile_name)
    # the call's session opens now: its stream's start names the same call (callId, the CallUUID), the
    # token the same profile, and the stream carries µ-law at 8 kHz (the call's default audio)
    ctx.prewarm("plivo", call_uuid, profile_name, G711_ULAW)
    base = public_base(request, ctx.config.gateway.public_url)
    media = public_url_for(base, "/plivo/media", urlencode(query), websocket=True)
    return _xml(plivo.stream_xml(media, after_url=public_url_for(base, "/plivo/stream-ended")))


async def plivo_stream_ended(request: web.Request) -> web.Response:
    """``POST /plivo/stream-ended``: the ``<Redirect>`` after the stream. Plivo asks what next once
    the stream has closed: an apology and a hang-up when the gateway failed the call, else a hang-up."""
    ctx = request.app[CONTEXT]
    form, refusal = await _signed_form(request, ctx, "stream-ended")
    if refusal is not None:
        return refusal
    call_uuid = form.get("CallUUID", "")
    # a call the gateway placed is known by its request's id (see gateway.carriers.plivo.outbound)
    ids = (call_uuid, form.get("ALegRequestUUID", ""), request.app[CALL_UUIDS].get(call_uuid, ""))
    for call_id in dict.fromkeys(i for i in ids if i):
        message = await ctx.failure_message(call_id)
        if message is not None:
            log.info("apologising to the caller before hanging up", call_id=call_uuid)
            return _xml(plivo.speak_xml(message))
    return _xml(plivo.hangup_xml())


async def plivo_transfer(request: web.Request) -> web.Response:
    """``POST /plivo/transfer?to=NUMBER``: the XML a transferred call fetches (the REST API's
    ``aleg_url``): a ``<Dial>`` to the number."""
    ctx = request.app[CONTEXT]
    _, refusal = await _signed_form(request, ctx, "transfer")
    if refusal is not None:
        return refusal
    number, caller_id = request.query.get("to", ""), request.query.get("from", "")
    if not _NUMBER.fullmatch(number):
        return rejected("plivo", "transfer", "no number to dial", status=400)
    return _xml(plivo.dial_xml(number, caller_id if _NUMBER.fullmatch(caller_id) else None))


def _before_start(text: str) -> Step:
    """What a message before ``start`` is (see :func:`gateway.carriers.prelude.await_start`)."""
    try:
        event = plivo.parse_message(text)
    except plivo.PlivoProtocolError as exc:
        return ("refuse", str(exc)) if exc.event == "start" else ("reject", ("malformed", str(exc)))
    kind = type(event)
    if kind is plivo.Start:
        return "start", event
    if kind is plivo.Media:
        return MEDIA_BEFORE_START
    return ("stop", None) if kind is plivo.Stop else ("ignore", None)


def _bind(ctx: GatewayContext, start: plivo.Start, token: str, claims: dict[str, str] | None,
          query: dict[str, str]) -> str | None:
    """The profile of this stream: the token's, once it is checked to name this call and used up;
    None (logged, counted) when it does not hold. Without a token (insecure dev mode only) the
    query's profile, else the called number's route."""
    if claims is not None:
        try:
            if claims.get("call") != start.call_id:
                raise TokenError("for another call")
            ctx.tokens.spend(token)
        except TokenError as exc:
            rejected("plivo", "media", f"call token {exc.reason}", call_id=start.call_id)
            return None
        name, to = claims.get("profile", ""), claims.get("to")
    else:
        name, to = query.get("profile", ""), query.get("to")
    if name not in ctx.config.profiles:
        if name:
            log.warning("unknown profile in the stream's URL; routing by number instead",
                        call_id=start.call_id, profile=name)
        name, _ = ctx.config.route(to or None)
    return name


async def plivo_media(request: web.Request) -> web.StreamResponse:
    """``GET /plivo/media``: the Plivo audio stream's WebSocket."""
    ctx: GatewayContext = request.app[CONTEXT]
    query = {k: v for k, v in request.query.items() if isinstance(v, str)}
    token = query.get("token", "")
    claims: dict[str, str] | None = None
    if token or not ctx.insecure:
        try:
            claims = ctx.tokens.verify(token, carrier="plivo")
        except TokenError as exc:
            return rejected("plivo", "media", f"call token {exc.reason}")
    # (a call this worker placed takes the place it holds: its token names it)
    busy = ctx.media_refusal("plivo", (claims or {}).get("placed") or (claims or {}).get("call"))
    if busy is not None:
        metrics.CALLS.inc("plivo", f"refused ({busy})")
        return web.Response(status=503, text=f"{busy}\n")
    ws = PhoneSocket(max_msg_size=MAX_PHONE_MESSAGE, autoping=True)
    await ws.prepare(request)
    opened_at = now_ms()
    prelude: list[tuple[float, str | bytes]] = []
    try:
        start: plivo.Start | None = await await_start(ws, opened_at, prelude, _before_start, START_TIMEOUT_S)
        if start is None:
            return ws
        # a call the gateway placed is known by the id its placing gave it (the token names it)
        call_id = (claims or {}).get("placed") or start.call_id
        busy = ctx.media_refusal("plivo", call_id)
        if busy is not None:  # the gateway began to drain (or filled up) while this stream was opening
            metrics.CALLS.inc("plivo", f"refused ({busy})")
            log.warning("media stream refused at its start", reason=busy, call_id=call_id)
            ctx.note_failure(call_id)  # the <Redirect> after the stream apologises to the caller
            await ws.close(code=1013, message=busy.encode())
            return ws
        name = _bind(ctx, start, token, claims, query)
        if name is None:
            await ws.close(code=1008, message=b"call token refused")
            return ws
        settings = PlivoSettings.of(ctx.config)
        numbers = claims or query
        call = Call(call_id=call_id, stream_id=start.stream_id, profile_name=name,
                    profile=ctx.profile(name), started_at=prelude[-1][0],
                    observer=ctx.observer_for(call_id, "plivo"),
                    log=log.bind(call_id=call_id, stream_id=start.stream_id), **ctx.call_options(call_id),
                    can_transfer=settings.can_transfer, called=numbers.get("to") or None,
                    caller=numbers.get("from") or None, late_acks=True)  # (a clearAudio drops its checkpoints)
        if call.call_id in ctx.calls:
            call.log.warning("a second media stream for a call in progress: refused (one session per call)")
            await ws.close(code=1008, message=b"duplicate stream")
            return ws
        recorder = ctx.open_recorder("plivo", call)
        if recorder is not None:
            if token:
                recorder.call_secrets.append(token)
            for t, message in prelude:
                recorder.record(t, "phone", "in", message)
        prelude.clear()  # (recorded if recording): the call does not keep what came before it
        # the number shown as caller id on a transfer: the one the caller dialled, or the one the
        # gateway placed the call from
        shown = numbers.get("from", "") if "placed" in numbers else numbers.get("to") or ""
        await PlivoBridge(ctx, ws, call, plivo.PlivoLeg(start), opened_at, recorder, request.transport,
                          public=public_base(request, ctx.config.gateway.public_url), called=shown,
                          rest=request.app[REST], call_uuid=start.call_id).run()
    finally:
        if not ws.closed:
            await ws.close()
    return ws

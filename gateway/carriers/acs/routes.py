"""Azure Communication Services' HTTP side: Event Grid call entry, Call Automation callbacks and
the bidirectional media-streaming WebSocket.

- ``POST /acs/incoming`` takes Event Grid deliveries (and ``OPTIONS`` the CloudEvents handshake):
  the subscription validation, and ``Microsoft.Communication.IncomingCall``, which is answered with
  media streaming to ``/acs/media`` (PCM mono at ``acs.sample_rate``, 24 or 16 kHz, both ways, as
  Voice Live takes and gives it; DTMF on). Event Grid delivers at least once: a repeated event
  answers nothing twice.
- ``POST /acs/callbacks`` takes Call Automation events; a failed stream ends the call.
- ``GET /acs/media`` is the media socket. ACS signs each upgrade with a JWT; what the socket needs
  to know (the profile, and the call it is for: its correlation id) travels in a token the gateway
  signed into its URL, so any replica can serve it. ACS may reconnect the socket mid-call: the new
  socket continues the same call and the same Voice Live session, if its token names that call.

Ending a call on ACS means hanging up through Call Automation, not only closing the socket.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway import metrics
from gateway.auth import TokenError, public_base, public_url_for, secret_matches
from gateway.bridge import CONTEXT, MAX_PHONE_MESSAGE, GatewayContext, log, now_ms, rejected
from gateway.call import Call
from gateway.carriers.acs.auth import AcsJwtValidator, AuthError, SigningKeysUnavailable, eventgrid_validation_code
from gateway.carriers.acs.codec import AUDIO_FORMATS, INCOMING_CALL, AcsLeg, called_number, caller_number
from gateway.carriers.acs.control import ACS_PIECE_MS, AcsBridge
from gateway.carriers.acs.settings import AcsSettings
from gateway.carriers.common import load_json
from gateway.config import GatewayConfig
from gateway.phonesocket import PhoneSocket

# Call Automation events -> the state of a call the gateway placed
_PLACED_STATES = {"CallConnected": ("answered", None), "CallDisconnected": ("completed", "hung_up"),
                  "CreateCallFailed": ("failed", "create_call_failed")}
STREAM_TOKEN_TTL_S = 24 * 3600.0  # the socket may reconnect at any time during the call
SEEN_TTL_S = 600.0
MAX_JSON_DEPTH = 32  # Event Grid and Call Automation events nest a few levels; deeper is an attack


@dataclass
class AcsState:
    """What the ACS routes share while the application runs."""

    apology: str | None = None  # base64 PCM16 at the call rate: what a caller hears when Voice Live fails
    client: Any = None  # azure.communication.callautomation.aio.CallAutomationClient (None: not configured)
    validator: AcsJwtValidator | None = None  # Call Automation's tokens (None: acs.resource_id not set)
    seen: dict[str, float] = field(default_factory=dict)  # IncomingCall correlation ids already answered


STATE: web.AppKey[AcsState] = web.AppKey("acs_state", AcsState)


def _too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether parsed JSON nests deeper than ``limit`` (checked without recursion)."""
    level: list[Any] = [value]
    for _ in range(limit):
        level = [item for node in level if isinstance(node, dict | list)
                 for item in (node.values() if isinstance(node, dict) else node)]
        if not level:
            return False
    return any(isinstance(node, dict | list) for node in level)


def _events(body: Any) -> list[dict[str, Any]] | None:
    """The events of a delivery (one event object, or an array of them); None if it is not one."""
    items = body if isinstance(body, list) else [body]
    if not items or not all(isinstance(item, dict) for item in items):
        return None
    return items


async def _read_events(request: web.Request, route: str) -> tuple[Any, list[dict[str, Any]] | None]:
    """(the JSON body, its events); (body or None, None) after one warning when it is not a delivery
    of events (then answer 400). Never raises on hostile input."""
    body, problem = load_json(await request.read())
    if problem is None and _too_deep(body):
        problem = f"not usable JSON (nested deeper than {MAX_JSON_DEPTH} levels)"
    events = _events(body) if problem is None else None
    if problem is None and events is None:
        problem = "not an event or an array of events"
    if problem is not None:
        log.warning("ACS request refused: not a delivery of events", route=route, problem=problem)
    return body, events


def _text(value: Any) -> str | None:
    """``value`` when it is non-empty text (ids from a request: anything else is not an id)."""
    return value if isinstance(value, str) and value else None


def _object(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one (a field of an event is not trusted)."""
    return value if isinstance(value, dict) else {}


BAD_DELIVERY = "expected JSON: an event or an array of events\n"


async def acs_incoming_options(request: web.Request) -> web.Response:
    """The CloudEvents webhook handshake."""
    ctx = request.app[CONTEXT]
    secret = AcsSettings.of(ctx.config).eventgrid_secret
    if not secret_matches(secret.get_secret_value() if secret else None, request.query.get("secret")):
        return rejected("acs", "incoming", "bad or missing Event Grid secret", status=401)
    origin = request.headers.get("WebHook-Request-Origin", "")
    return web.Response(status=200, headers={"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*"})


async def acs_incoming(request: web.Request) -> web.Response:
    """``POST /acs/incoming``: Event Grid deliveries (validation handshake, IncomingCall)."""
    ctx = request.app[CONTEXT]
    secret = AcsSettings.of(ctx.config).eventgrid_secret
    if not secret_matches(secret.get_secret_value() if secret else None, request.query.get("secret")):
        return rejected("acs", "incoming", "bad or missing Event Grid secret", status=401)
    body, events = await _read_events(request, "incoming")
    if events is None:
        return web.Response(status=400, text=BAD_DELIVERY)
    code = eventgrid_validation_code(body)
    if code is not None:
        log.info("Event Grid subscription validated")
        return web.json_response({"validationResponse": code})
    failed = False
    for event in events:
        kind = _text(event.get("eventType")) or _text(event.get("type"))
        if kind != INCOMING_CALL:
            log.debug("Event Grid event not used", event_type=kind)
            continue
        if not await _answer(request, ctx, event):
            failed = True
    return web.Response(status=500 if failed else 200)


def streaming_options(config: GatewayConfig, base: str, token: str) -> Any:
    """Bidirectional media streaming to the gateway's media socket, with the call's stream token."""
    from azure.communication.callautomation import AudioFormat as StreamingFormat
    from azure.communication.callautomation import (
        MediaStreamingAudioChannelType,
        MediaStreamingContentType,
        MediaStreamingOptions,
        StreamingTransportType,
    )

    return MediaStreamingOptions(
        transport_url=public_url_for(base, "/acs/media", f"ctx={token}", websocket=True),
        transport_type=StreamingTransportType.WEBSOCKET,
        content_type=MediaStreamingContentType.AUDIO,
        audio_channel_type=MediaStreamingAudioChannelType.MIXED,
        start_media_streaming=True,
        enable_bidirectional=True,
        audio_format={16000: StreamingFormat.PCM16_K_MONO, 24000: StreamingFormat.PCM24_K_MONO}[
            AcsSettings.of(config).sample_rate],
        enable_dtmf_tones=True,
    )


async def _answer(request: web.Request, ctx: GatewayContext, event: dict[str, Any]) -> bool:
    """Answer one IncomingCall with media streaming. False when it should be retried."""
    data = _object(event.get("data"))
    context = data.get("incomingCallContext")
    key = _text(data.get("correlationId")) or _text(event.get("id")) or _text(context) or ""
    state = request.app[STATE]
    seen = state.seen
    now = time.monotonic()
    for old in [k for k, t in seen.items() if now - t > SEEN_TTL_S]:
        del seen[old]
    if key in seen:
        log.info("IncomingCall delivered again; already answered", correlation_id=key)
        return True
    if not isinstance(context, str) or not context:
        log.warning("IncomingCall without an incomingCallContext; ignored", correlation_id=key)
        return True
    if state.client is None:
        log.error("IncomingCall, but ACS is not configured (acs.connection_string)")
        return True
    busy = ctx.refusal()
    if busy is not None:  # Event Grid delivers it again, possibly to another replica
        log.warning("IncomingCall not answered", correlation_id=key, reason=busy)
        return False
    # (No busy message here when Voice Live has no connection left: answering a call cannot speak
    # before its media streams, so the call is answered and its media socket finds the budget spent.)
    to = called_number(data)
    profile_name, _ = ctx.config.route(to)
    base = public_base(request, ctx.config.gateway.public_url)
    claims = {"profile": profile_name, "correlation": key}
    caller = caller_number(data)
    if caller is not None:
        claims["caller"] = caller
    if to is not None:
        claims["called"] = to
    token = ctx.tokens.issue(claims, STREAM_TOKEN_TTL_S, carrier="acs")
    options = streaming_options(ctx.config, base, token)
    seen[key] = now
    try:
        result = await state.client.answer_call(
            incoming_call_context=context, callback_url=public_url_for(base, "/acs/callbacks"),
            media_streaming=options, operation_context=profile_name)
    except Exception as exc:
        del seen[key]
        log.error("answering the ACS call failed", correlation_id=key, error=type(exc).__name__,
                  detail=str(exc)[:300])
        return False
    call_id = getattr(result, "call_connection_id", None)
    log.info("incoming ACS call answered", call_id=call_id, correlation_id=key, profile=profile_name)
    if isinstance(call_id, str) and call_id not in ctx.calls:
        # the call's session opens now (the media socket may already be on its way): the socket names
        # the call by this id (x-ms-call-connection-id), its token the same profile, and it streams at
        # the rate the call was answered with (see _new_call)
        ctx.prewarm("acs", call_id, profile_name, AUDIO_FORMATS[AcsSettings.of(ctx.config).sample_rate],
                    binding=key)  # (taken only by the socket whose stream token names this call)
    return True


async def _check_jwt(request: web.Request, ctx: GatewayContext, route: str) -> web.Response | None:
    validator = request.app[STATE].validator
    if validator is None:
        if ctx.insecure:
            return None
        return rejected("acs", route, "ACS is not configured for authentication (acs.resource_id)", status=503)
    try:
        await validator.validate(request.headers.get("Authorization"))
    except AuthError as exc:
        status = 503 if isinstance(exc, SigningKeysUnavailable) else 401
        return rejected("acs", route, f"token refused: {exc.reason}", status=status)
    return None


async def acs_callbacks(request: web.Request) -> web.Response:
    """``POST /acs/callbacks``: Call Automation events for answered calls."""
    ctx = request.app[CONTEXT]
    refusal = await _check_jwt(request, ctx, "callbacks")
    if refusal is not None:
        return refusal
    _, events = await _read_events(request, "callbacks")
    if events is None:
        return web.Response(status=400, text=BAD_DELIVERY)
    for event in events:
        kind = _text(event.get("type")) or _text(event.get("eventType")) or ""
        data = _object(event.get("data"))
        call_id = _text(data.get("callConnectionId"))
        short = kind.rsplit(".", 1)[-1]
        result = _object(data.get("resultInformation"))
        fields = {"call_id": call_id, "acs_event": short, "code": result.get("code"),
                  "sub_code": result.get("subCode"), "detail": result.get("message")}
        ctx.outbound.status(call_id or "", *_PLACED_STATES.get(short, ("", None)), carrier="acs")  # (placed ones)
        bridge = ctx.calls.get(call_id or "")
        if not isinstance(bridge, AcsBridge):  # an id of another carrier's call is not an ACS call
            bridge = None
        if short in ("MediaStreamingFailed", "CallDisconnected", "CreateCallFailed", "AnswerFailed"):
            level = log.info if short == "CallDisconnected" else log.error
            level("ACS call event", **{k: v for k, v in fields.items() if v is not None})
            if bridge is not None and not bridge.call.ended:
                bridge.hung_up("caller_hung_up" if short == "CallDisconnected" else "acs_media_failed")
        else:
            log.info("ACS call event", **{k: v for k, v in fields.items() if v is not None})
    return web.Response(status=200)


def _stream_claims(request: web.Request, ctx: GatewayContext, call_id: str) -> dict[str, str] | web.Response:
    """The claims of the socket's stream token (``ctx`` in its URL), or the refusal. The token must
    be one the gateway issued for an ACS call, and name that call (its correlation id)."""
    try:
        claims = ctx.tokens.verify(request.query.get("ctx", ""), carrier="acs")
    except TokenError as exc:
        if not ctx.insecure:
            return rejected("acs", "media", f"stream token {exc.reason}", status=403, call_id=call_id)
        claims = {}
    if not ctx.insecure and _text(claims.get("correlation")) is None:
        return rejected("acs", "media", "stream token names no call", status=403, call_id=call_id)
    return claims


def _continued_call(ctx: GatewayContext, call_id: str, correlation: str) -> tuple[AcsBridge | None, str | None]:
    """(the live call this socket continues, None) after a reconnect; (None, None) for a new call;
    (None, why the socket is refused) when ``call_id`` is a call this socket's token does not name."""
    existing = ctx.calls.get(call_id)
    if existing is None:
        return None, None
    if not isinstance(existing, AcsBridge):
        return None, "call id of another carrier's call"
    if existing.correlation != correlation:
        return None, "stream token for another call"
    if existing.call.ended:
        return None, "call already ended"
    return existing, None


async def acs_media(request: web.Request) -> web.StreamResponse:
    """``GET /acs/media``: the ACS bidirectional media-streaming WebSocket."""
    ctx: GatewayContext = request.app[CONTEXT]
    call_id = request.headers.get("x-ms-call-connection-id", "")
    if not call_id:
        return rejected("acs", "media", "no x-ms-call-connection-id header", status=400)
    claims = _stream_claims(request, ctx, call_id)
    if isinstance(claims, web.Response):
        return claims
    refusal = await _check_jwt(request, ctx, "media")
    if refusal is not None:
        return refusal
    correlation = claims.get("correlation", "") or request.headers.get("x-ms-call-correlation-id", "")
    existing, problem = _continued_call(ctx, call_id, correlation)
    if problem is not None:
        return rejected("acs", "media", problem, status=403, call_id=call_id)
    busy = ctx.media_refusal("acs", call_id)  # (a call this worker placed takes the place it holds)
    if existing is None and busy is not None:
        metrics.CALLS.inc("acs", f"refused ({busy})")
        return web.Response(status=503, text=f"{busy}\n")
    ws = PhoneSocket(max_msg_size=MAX_PHONE_MESSAGE, autoping=True)
    await ws.prepare(request)
    try:
        existing, problem = _continued_call(ctx, call_id, correlation)  # again: calls came and went meanwhile
        if problem is not None:
            rejected("acs", "media", problem, call_id=call_id)
        elif existing is not None:
            await existing.attach(ws, request.transport)
        else:
            await _new_call(request, ctx, ws, call_id, correlation, claims)
    finally:
        if not ws.closed:
            await ws.close(code=1008 if problem is not None else 1000)
    return ws


async def _new_call(request: web.Request, ctx: GatewayContext, ws: web.WebSocketResponse, call_id: str,
                    correlation: str, claims: dict[str, str]) -> None:
    """Run a new call on this media socket, to its end."""
    opened_at = now_ms()
    name = claims.get("profile", "")
    if name not in ctx.config.profiles:
        name, _ = ctx.config.route(None)
    stream_id = request.headers.get("x-ms-call-correlation-id", "") or correlation
    audio = AUDIO_FORMATS[AcsSettings.of(ctx.config).sample_rate]  # what the call was answered with: no resampling
    caller, called = _text(claims.get("caller")), _text(claims.get("called"))
    state = request.app[STATE]
    call = Call(call_id=call_id, stream_id=stream_id, profile_name=name, profile=ctx.profile(name),
                started_at=0.0, audio=audio, paced=True, piece_ms=ACS_PIECE_MS,
                observer=ctx.observer_for(call_id, "acs"), log=log.bind(call_id=call_id, stream_id=stream_id),
                fallback_audio=state.apology, **ctx.call_options(call_id),
                can_transfer=state.client is not None,
                can_send_dtmf=state.client is not None and caller is not None, caller=caller, called=called)
    await AcsBridge(ctx, ws, call, AcsLeg(), opened_at, ctx.open_recorder("acs", call), request.transport,
                    client=state.client, correlation=correlation, caller=caller, called=called).run()

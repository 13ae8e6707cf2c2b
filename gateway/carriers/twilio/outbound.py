"""Calls the gateway places on Twilio.

The call is created through Twilio's REST API with the twilio package's client (pointed at
``twilio.api_base_url``), run in a worker thread so that the event loop never waits on it. Its
``Url`` is the gateway's answer webhook: once the callee picks up, Twilio fetches TwiML that
connects the call to the media stream with a signed per-call token, as for incoming calls.
Asynchronous answering-machine detection (``DetectMessageEnd``: the result comes once a machine's
greeting has ended, at the beep) reports to ``/twilio/amd``; the call's progress to
``/twilio/call-status``. All three callbacks must carry a valid ``X-Twilio-Signature``.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.audio import G711_ULAW
from gateway.auth import public_base, public_url_for
from gateway.bridge import CONTEXT, log
from gateway.carriers.base import OutboundError, OutboundRequest, PlacedCall
from gateway.carriers.common import short
from gateway.carriers.twilio import codec as twilio
from gateway.carriers.twilio.routes import CALL_TOKEN_TTL_S, _check_signature, _signed_url
from gateway.carriers.twilio.settings import TwilioSettings
from gateway.config import GatewayConfig
from gateway.core.outbound import UNKNOWN

CREATE_TIMEOUT_S = 15.0
RING_TIMEOUT_S = 30  # how long Twilio lets the callee's phone ring
# Twilio's call statuses -> the states of a placed call (and the end reason of those that ended)
_STATES = {"queued": "queued", "initiated": "queued", "ringing": "ringing", "in-progress": "answered",
           "completed": "completed", "busy": "failed", "no-answer": "failed", "failed": "failed",
           "canceled": "failed"}
# Twilio's documented AnsweredBy values (asynchronous detection) -> the gateway's results
_ANSWERED_BY = {"human": "human", "machine_start": "machine_start", "machine_end_beep": "machine_end_beep",
                "machine_end_silence": "machine_end_silence", "machine_end_other": "machine_end_other",
                "fax": "fax", "unknown": UNKNOWN}


def refusal(config: GatewayConfig) -> str | None:
    settings = TwilioSettings.of(config)
    if settings.auth_token is None or not settings.account_sid:
        return "twilio needs twilio.auth_token and twilio.account_sid (TWILIO_ACCOUNT_SID) to place calls"
    return None


def _create(config: GatewayConfig, request: OutboundRequest) -> str:
    """Create the call (blocking: run in a worker thread). Its SID, or ``OutboundError``."""
    from twilio.base.exceptions import TwilioException, TwilioRestException
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    settings = TwilioSettings.of(config)
    token = settings.auth_token
    assert token is not None and settings.account_sid
    client = Client(settings.account_sid, token.get_secret_value(),
                    http_client=TwilioHttpClient(timeout=CREATE_TIMEOUT_S))
    client.api.base_url = settings.api_base_url.rstrip("/")
    base = request.public_base
    extra: dict[str, object] = {}
    if request.detect_machine:
        extra = {"machine_detection": "DetectMessageEnd", "async_amd": "true",
                 "async_amd_status_callback": public_url_for(base, "/twilio/amd"),
                 "async_amd_status_callback_method": "POST"}
    try:
        call = client.calls.create(
            to=request.to, from_=request.from_, url=public_url_for(base, "/twilio/placed-answer"), method="POST",
            status_callback=public_url_for(base, "/twilio/call-status"), status_callback_method="POST",
            status_callback_event=["initiated", "ringing", "answered", "completed"], timeout=RING_TIMEOUT_S,
            **extra)
    except TwilioRestException as exc:
        status = 400 if 400 <= (exc.status or 0) < 500 else 502
        raise OutboundError(f"Twilio refused the call (HTTP {exc.status}, code {exc.code}): {exc.msg}",
                            status=status) from None
    except (TwilioException, OSError) as exc:
        raise OutboundError(f"Twilio's REST API cannot be reached: {exc}") from None
    if not call.sid:
        raise OutboundError("Twilio's REST API answered without a call SID")
    return call.sid


async def place_call(app: web.Application, request: OutboundRequest) -> PlacedCall:
    config = app[CONTEXT].config
    why = refusal(config)
    if why is not None:
        raise OutboundError(why, status=400)
    sid = await asyncio.to_thread(_create, config, request)
    return PlacedCall(sid, "queued", detects_machine=request.detect_machine, audio=G711_ULAW)  # (the stream's)


async def _form(request: web.Request, route: str) -> tuple[dict[str, str], web.Response | None]:
    ctx = request.app[CONTEXT]
    form = {k: str(v) for k, v in (await request.post()).items()}
    return form, _check_signature(request, ctx, route, _signed_url(request, ctx), form)


async def twilio_placed_answer(request: web.Request) -> web.Response:
    """``POST /twilio/placed-answer``: the callee of a placed call picked up: TwiML that connects
    the call to the media stream, with the call's profile in its signed token."""
    ctx = request.app[CONTEXT]
    form, refused = await _form(request, "placed-answer")
    if refused is not None:
        return refused
    call_sid = form.get("CallSid", "")
    placed = ctx.outbound.placed(call_sid, "twilio")
    if placed is None:  # not placed by this worker (or forgotten): nothing to connect it to
        log.warning("an answer webhook for a call this worker did not place", call_id=call_sid)
        return web.Response(text=twilio.hangup_twiml(), content_type="text/xml")
    ctx.outbound.status(call_sid, "answered", carrier="twilio")
    token = ctx.tokens.issue({"call": call_sid, "profile": placed.profile}, CALL_TOKEN_TTL_S, carrier="twilio")
    base = public_base(request, ctx.config.gateway.public_url)
    twiml = twilio.connect_twiml(public_url_for(base, "/twilio/media", websocket=True),
                                 {"profile": placed.profile, "to": placed.to, "token": token},
                                 action=public_url_for(base, "/twilio/stream-ended"))
    return web.Response(text=twiml, content_type="text/xml")


async def twilio_amd(request: web.Request) -> web.Response:
    """``POST /twilio/amd``: the asynchronous answering-machine result of a placed call."""
    ctx = request.app[CONTEXT]
    form, refused = await _form(request, "amd")
    if refused is not None:
        return refused
    call_sid = form.get("CallSid", "")
    if not await ctx.answering_machine(call_sid, answered_by(form, call_sid), carrier="twilio"):
        log.warning("an answering-machine result for a call this worker did not place", call_id=short(call_sid, 64))
    return web.Response(status=204)


def answered_by(form: dict[str, str], call_sid: str) -> str:
    """The gateway's result for the ``AnsweredBy`` of an answering-machine callback: an unexpected
    value (or none) counts as ``unknown``, with a warning that shows the start of what came."""
    value = form.get("AnsweredBy")
    result = _ANSWERED_BY.get(value) if value is not None else None
    if result is None:
        log.warning("an AnsweredBy value Twilio does not document: taken as unknown", call_id=short(call_sid, 64),
                    answered_by=short(value) if value is not None else None)
        return UNKNOWN
    return result


async def twilio_call_status(request: web.Request) -> web.Response:
    """``POST /twilio/call-status``: a placed call's progress (ringing, answered, completed...)."""
    ctx = request.app[CONTEXT]
    form, refused = await _form(request, "call-status")
    if refused is not None:
        return refused
    status = form.get("CallStatus", "")
    state = _STATES.get(status)
    if state is not None:
        ended = state in ("completed", "failed")
        ctx.outbound.status(form.get("CallSid", ""), state, end_reason=status.replace("-", "_") if ended else None,
                            carrier="twilio")
    return web.Response(status=204)


def routes() -> list[web.RouteDef]:
    return [web.post("/twilio/placed-answer", twilio_placed_answer), web.post("/twilio/amd", twilio_amd),
            web.post("/twilio/call-status", twilio_call_status)]

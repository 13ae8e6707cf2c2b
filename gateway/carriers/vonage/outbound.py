"""Calls the gateway places on Vonage.

The call is created with the Voice API (``POST {vonage.api_base_url}/v1/calls``, signed with the
application JWT as the other Voice API requests are): a phone endpoint to call, the gateway's number
as ``from``, the gateway's answer webhook as ``answer_url`` and its call event webhook as
``event_url``. Once the callee picks up, Vonage fetches ``/vonage/placed-answer``, which answers with
the same NCCO as an incoming call gets: a ``connect`` to the media socket whose ``authorization``
carries a signed per-call token bound to the call's ``uuid`` (the id the media socket's headers and
the gateway's API and record all use).

Answering-machine detection is asynchronous: ``advanced_machine_detection`` (mode ``default``,
behaviour ``continue``) by default, or the free standard ``machine_detection: continue`` with
``vonage.machine_detection: standard``. Its results come to ``/vonage/call-event`` as events of
status ``human`` or ``machine`` (the latter again with ``sub_state`` ``beep_start`` once the greeting
ends at the beep, or ``beep_timeout``), as does the call's progress (started, ringing, answered,
completed, busy, ...). Every callback must carry Vonage's signed-webhook JWT.

Assumed where the documentation is silent:

* ``machine`` without a ``sub_state`` means the machine's greeting has begun (``machine_start``: the
  call then waits, at most the profile's ``machine_wait_s``, for the beep before it leaves its
  message); ``beep_start`` is ``machine_end_beep``; ``beep_timeout`` (no beep heard) is
  ``machine_end_other``. Standard detection reports no beep, so its ``machine`` is ``machine_start``
  too.
* A result event names its call by ``uuid`` or, failing that, ``call_uuid``.
* An answer webhook for a call this worker did not place (or has forgotten) gets the apology
  (``gateway.apology``), after which the call ends: there is nothing to connect it to.
* A placed call that ends with ``busy``, ``timeout``, ``unanswered``, ``rejected``, ``cancelled`` or
  ``failed`` failed, with that status as its end reason.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from gateway.auth import public_base, public_url_for
from gateway.bridge import CONTEXT, log
from gateway.carriers.base import OutboundError, OutboundRequest, PlacedCall
from gateway.carriers.common import load_json, short
from gateway.carriers.vonage import codec
from gateway.carriers.vonage.auth import application_jwt
from gateway.carriers.vonage.routes import CALL_TOKEN_TTL_S, REST, _signed_params, _text
from gateway.carriers.vonage.settings import VonageSettings
from gateway.config import GatewayConfig

CREATE_TIMEOUT_S = 15.0
RING_TIMEOUT_S = 30  # how long Vonage lets the callee's phone ring (ringing_timer)
# Vonage's call statuses -> the states of a placed call (those that ended give their status as reason)
_STATES = {"started": "queued", "ringing": "ringing", "answered": "answered", "completed": "completed",
           "busy": "failed", "timeout": "failed", "unanswered": "failed", "rejected": "failed",
           "cancelled": "failed", "failed": "failed"}
# a machine result's sub_state -> the core's answering-machine values
_MACHINE_SUB_STATES = {"beep_start": "machine_end_beep", "beep_timeout": "machine_end_other"}


def refusal(config: GatewayConfig) -> str | None:
    settings = VonageSettings.of(config)
    if not settings.can_call_api:
        return ("vonage needs vonage.application_id and vonage.private_key (VONAGE_APPLICATION_ID, "
                "VONAGE_PRIVATE_KEY) to place calls")
    if settings.signature_secret is None and not config.gateway.insecure_dev_mode:
        return "vonage needs vonage.signature_secret (VONAGE_SIGNATURE_SECRET) to take a placed call's webhooks"
    return None


def answered_by(params: dict[str, Any]) -> str | None:
    """The core's answering-machine value of a call event (None: the event is not a detection result)."""
    status = params.get("status")
    if status == "human":
        return "human"
    if status == "machine":
        sub_state = params.get("sub_state")
        return _MACHINE_SUB_STATES.get(sub_state, "unknown") if sub_state else "machine_start"
    return None


def create_body(settings: VonageSettings, request: OutboundRequest) -> dict[str, Any]:
    """The ``POST /v1/calls`` body of a placed call."""
    base = request.public_base
    body: dict[str, Any] = {
        "to": [{"type": "phone", "number": codec.vonage_number(request.to)}],
        "from": {"type": "phone", "number": codec.vonage_number(request.from_)},
        "answer_url": [public_url_for(base, "/vonage/placed-answer")], "answer_method": "GET",
        "event_url": [public_url_for(base, "/vonage/call-event")], "event_method": "POST",
        "ringing_timer": RING_TIMEOUT_S}
    if request.detect_machine:
        if settings.machine_detection == "standard":
            body["machine_detection"] = "continue"
        else:
            body["advanced_machine_detection"] = {"behavior": "continue", "mode": "default",
                                                  "beep_timeout": settings.beep_timeout_s}
    return body


def _api_problem(text: str) -> str:
    """What a Voice API error answer says (its ``title`` and ``detail``), short."""
    value, _ = load_json(text)
    if isinstance(value, dict):
        words = [str(value[k]) for k in ("title", "detail") if isinstance(value.get(k), str | int)]
        if words:
            return short(": ".join(words), 200)
    return short(text.strip(), 200) or "no details"


async def place_call(app: web.Application, request: OutboundRequest) -> PlacedCall:
    config = app[CONTEXT].config
    why = refusal(config)
    if why is not None:
        raise OutboundError(why, status=400)
    settings = VonageSettings.of(config)
    assert settings.application_id is not None and settings.private_key is not None
    try:
        token = application_jwt(settings.application_id, settings.private_key.get_secret_value())
    except ValueError as exc:
        raise OutboundError(f"Vonage: {exc}", status=500) from None
    url = f"{settings.api_base_url.rstrip('/')}/v1/calls"
    try:
        async with asyncio.timeout(CREATE_TIMEOUT_S), app[REST].post(
                url, json=create_body(settings, request), headers={"Authorization": f"Bearer {token}"}) as reply:
            text = await reply.text()
            status = reply.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise OutboundError(f"Vonage's Voice API cannot be reached: {str(exc) or type(exc).__name__}") from None
    if status >= 300:
        raise OutboundError(f"Vonage refused the call (HTTP {status}): {_api_problem(text)}",
                            status=400 if 400 <= status < 500 else 502)
    value, _ = load_json(text)
    call_uuid = _text(value.get("uuid")) if isinstance(value, dict) else None
    if call_uuid is None:
        raise OutboundError("Vonage's Voice API answered without a call uuid")
    return PlacedCall(call_uuid, "queued", detects_machine=request.detect_machine, audio=codec.AUDIO)


async def vonage_placed_answer(request: web.Request) -> web.Response:
    """``GET /vonage/placed-answer`` (or POST): the callee of a placed call picked up: the NCCO that
    connects the call to the media socket, with the call's profile in its signed token."""
    ctx = request.app[CONTEXT]
    params = await _signed_params(request, ctx, "placed-answer")
    if isinstance(params, web.Response):
        return params
    call_uuid = _text(params.get("uuid"))
    placed = ctx.outbound.placed(call_uuid or "", "vonage")
    if call_uuid is None or placed is None:  # not placed by this worker (or forgotten): nothing to connect
        log.warning("an answer webhook for a call this worker did not place", call_id=short(call_uuid or ""))
        return web.json_response(codec.talk_ncco(ctx.config.gateway.apology))  # then the call ends
    ctx.outbound.status(call_uuid, "answered", carrier="vonage")
    claims = {"call": call_uuid, "profile": placed.profile, "to": placed.to, "from": placed.from_}
    token = ctx.tokens.issue(claims, CALL_TOKEN_TTL_S, carrier="vonage")
    headers = {"call": call_uuid, "profile": placed.profile, "to": placed.to}
    conversation = _text(params.get("conversation_uuid"))
    if conversation is not None:
        headers["conversation"] = conversation
    base = public_base(request, ctx.config.gateway.public_url)
    ncco = codec.connect_ncco(public_url_for(base, "/vonage/media", websocket=True), headers, f"Bearer {token}",
                              public_url_for(base, "/vonage/event"))
    return web.json_response(ncco)


async def vonage_call_event(request: web.Request) -> web.Response:
    """``POST /vonage/call-event`` (or GET): a placed call's progress and its answering-machine result."""
    ctx = request.app[CONTEXT]
    params = await _signed_params(request, ctx, "call-event")
    if isinstance(params, web.Response):
        return params
    call_uuid = _text(params.get("uuid")) or _text(params.get("call_uuid")) or ""
    result = answered_by(params)
    if result is not None:
        if not await ctx.answering_machine(call_uuid, result, carrier="vonage"):
            log.warning("an answering-machine result for a call this worker did not place",
                        call_id=short(call_uuid))
        return web.Response(status=204)
    status = _text(params.get("status")) or ""
    state = _STATES.get(status)
    if state is not None:
        ctx.outbound.status(call_uuid, state, end_reason=status if state in ("completed", "failed") else None,
                            carrier="vonage")
    return web.Response(status=204)


def routes() -> list[web.RouteDef]:
    return [web.get("/vonage/placed-answer", vonage_placed_answer),
            web.post("/vonage/placed-answer", vonage_placed_answer),
            web.post("/vonage/call-event", vonage_call_event), web.get("/vonage/call-event", vonage_call_event)]

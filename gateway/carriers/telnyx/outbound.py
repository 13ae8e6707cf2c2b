"""Calls the gateway places on Telnyx.

The call is created through the TeXML REST API: ``POST {api_base_url}/v2/texml/Accounts/{account_sid}/Calls``
with a bearer API key and a JSON body naming the TeXML Application (``ApplicationSid``), sent with
aiohttp so that the event loop never waits on it. Its ``Url`` is the gateway's answer webhook: once
the callee picks up, Telnyx fetches TeXML that connects the call to the media stream with a signed
per-call token, the same ``<Connect><Stream>`` as for incoming calls. Asynchronous answering-machine
detection (``MachineDetection: DetectMessageEnd`` with ``AsyncAmd``: the result comes once a
machine's greeting has ended) reports to ``/telnyx/amd``; the call's progress to
``/telnyx/call-status``. All three callbacks must carry a valid Ed25519 signature, as every Telnyx
webhook does (see :mod:`gateway.carriers.telnyx.auth`).

Assumed where Telnyx's documentation leaves it open: the create answer names the call in
``call_sid`` (at the top level, or inside ``data`` as the older path answers), which is the
``CallSid`` of its webhooks and the ``call_control_id`` of its media stream's ``start``; the account in the path
is the one its webhooks name in ``AccountSid``; an ``AnsweredBy`` outside the values the gateway
knows counts as ``unknown``.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from gateway.audio import G711_ULAW
from gateway.auth import public_base, public_url_for
from gateway.bridge import CONTEXT, log
from gateway.carriers.base import OutboundError, OutboundRequest, PlacedCall
from gateway.carriers.telnyx import codec as telnyx
from gateway.carriers.telnyx.routes import CALL_TOKEN_TTL_S, REST, _signed_form
from gateway.carriers.telnyx.settings import TelnyxSettings
from gateway.config import GatewayConfig
from gateway.core.outbound import ANSWERED_BY

CREATE_TIMEOUT_S = 15.0
RING_TIMEOUT_S = 30  # how long Telnyx lets the callee's phone ring
# TeXML call statuses -> the states of a placed call (and the end reason of those that ended)
_STATES = {"queued": "queued", "initiated": "queued", "ringing": "ringing", "in-progress": "answered",
           "completed": "completed", "busy": "failed", "no-answer": "failed", "failed": "failed",
           "canceled": "failed"}


def refusal(config: GatewayConfig) -> str | None:
    settings = TelnyxSettings.of(config)
    missing = [name for name, value in (("telnyx.api_key (TELNYX_API_KEY)", settings.api_key),
                                        ("telnyx.application_id (TELNYX_APPLICATION_ID)", settings.application_id),
                                        ("telnyx.account_sid (TELNYX_ACCOUNT_SID)", settings.account_sid))
               if not value]
    if missing:
        return "telnyx needs " + ", ".join(missing) + " to place calls"
    return None


def create_call_url(api_base_url: str, account_sid: str) -> str:
    """The TeXML REST API's "initiate an outbound call" URL."""
    return f"{api_base_url.rstrip('/')}/v2/texml/Accounts/{quote(account_sid, safe='')}/Calls"


def create_body(settings: TelnyxSettings, request: OutboundRequest) -> dict[str, Any]:
    """The JSON body of the create request."""
    base = request.public_base
    body: dict[str, Any] = {
        "ApplicationSid": settings.application_id, "To": request.to, "From": request.from_,
        "Url": public_url_for(base, "/telnyx/placed-answer"), "UrlMethod": "POST",
        "StatusCallback": public_url_for(base, "/telnyx/call-status"), "StatusCallbackMethod": "POST",
        "StatusCallbackEvent": "initiated ringing answered completed", "Timeout": RING_TIMEOUT_S,
    }
    if request.detect_machine:
        body.update({"MachineDetection": "DetectMessageEnd", "AsyncAmd": True,
                     "AsyncAmdStatusCallback": public_url_for(base, "/telnyx/amd"),
                     "AsyncAmdStatusCallbackMethod": "POST"})
    return body


def _problem(answer: Any) -> str:
    """What Telnyx's error answer says (its first error's title and detail), briefly."""
    if isinstance(answer, dict) and isinstance(answer.get("errors"), list) and answer["errors"]:
        first = answer["errors"][0]
        if isinstance(first, dict):
            parts = [str(first[k]) for k in ("code", "title", "detail") if first.get(k)]
            if parts:
                return ": ".join(parts)[:300]
    return "no error detail"


def _call_sid(answer: Any) -> str | None:
    for holder in (answer, answer.get("data") if isinstance(answer, dict) else None):
        if isinstance(holder, dict) and isinstance(holder.get("call_sid"), str) and holder["call_sid"]:
            return str(holder["call_sid"])
    return None


async def place_call(app: web.Application, request: OutboundRequest) -> PlacedCall:
    config = app[CONTEXT].config
    why = refusal(config)
    if why is not None:
        raise OutboundError(why, status=400)
    settings = TelnyxSettings.of(config)
    assert settings.api_key is not None and settings.account_sid
    url = create_call_url(settings.api_base_url, settings.account_sid)
    headers = {"Authorization": "Bearer " + settings.api_key.get_secret_value(), "Accept": "application/json"}
    try:
        async with asyncio.timeout(CREATE_TIMEOUT_S), app[REST].post(
                url, json=create_body(settings, request), headers=headers) as reply:
            status = reply.status
            try:
                answer = await reply.json(content_type=None)
            except ValueError:
                answer = None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise OutboundError(f"Telnyx's TeXML REST API cannot be reached: {str(exc) or type(exc).__name__}") from None
    if status >= 300:
        raise OutboundError(f"Telnyx refused the call (HTTP {status}): {_problem(answer)}",
                            status=400 if 400 <= status < 500 else 502)
    sid = _call_sid(answer)
    if sid is None:
        raise OutboundError("Telnyx's TeXML REST API answered without a call_sid")
    return PlacedCall(sid, "queued", detects_machine=request.detect_machine, audio=G711_ULAW)  # (the stream's)


async def telnyx_placed_answer(request: web.Request) -> web.Response:
    """``POST /telnyx/placed-answer``: the callee of a placed call picked up: TeXML that connects the
    call to the media stream, with the call's profile in its signed token."""
    ctx = request.app[CONTEXT]
    form = await _signed_form(request, ctx, "placed-answer")
    if isinstance(form, web.Response):
        return form
    call_sid = form.get("CallSid", "")
    placed = ctx.outbound.placed(call_sid, "telnyx")
    if placed is None:  # not placed by this worker (or forgotten): nothing to connect it to
        log.warning("an answer webhook for a call this worker did not place", call_id=call_sid)
        return web.Response(text=telnyx.hangup_texml(), content_type="text/xml")
    ctx.outbound.status(call_sid, "answered", carrier="telnyx")
    claims = {"call": call_sid, "profile": placed.profile, "account": form.get("AccountSid", "")}
    token = ctx.tokens.issue(claims, CALL_TOKEN_TTL_S, carrier="telnyx")
    base = public_base(request, ctx.config.gateway.public_url)
    stream = telnyx.media_url(public_url_for(base, "/telnyx/media", websocket=True),
                              {"profile": placed.profile, "to": placed.to, "token": token})
    texml = telnyx.connect_texml(stream, public_url_for(base, "/telnyx/stream-ended"))
    return web.Response(text=texml, content_type="text/xml")


async def telnyx_amd(request: web.Request) -> web.Response:
    """``POST /telnyx/amd``: the asynchronous answering-machine result of a placed call."""
    ctx = request.app[CONTEXT]
    form = await _signed_form(request, ctx, "amd")
    if isinstance(form, web.Response):
        return form
    call_sid, answered_by = form.get("CallSid", ""), form.get("AnsweredBy", "unknown")
    if answered_by not in ANSWERED_BY:
        answered_by = "unknown"
    if not await ctx.answering_machine(call_sid, answered_by, carrier="telnyx"):
        log.warning("an answering-machine result for a call this worker did not place", call_id=call_sid)
    return web.Response(status=204)


async def telnyx_call_status(request: web.Request) -> web.Response:
    """``POST /telnyx/call-status``: a placed call's progress (ringing, answered, completed...)."""
    ctx = request.app[CONTEXT]
    form = await _signed_form(request, ctx, "call-status")
    if isinstance(form, web.Response):
        return form
    status = form.get("CallStatus", "")
    state = _STATES.get(status)
    if state is not None:
        ended = state in ("completed", "failed")
        ctx.outbound.status(form.get("CallSid", ""), state, end_reason=status.replace("-", "_") if ended else None,
                            carrier="telnyx")
    return web.Response(status=204)


def routes() -> list[web.RouteDef]:
    return [web.post("/telnyx/placed-answer", telnyx_placed_answer), web.post("/telnyx/amd", telnyx_amd),
            web.post("/telnyx/call-status", telnyx_call_status)]

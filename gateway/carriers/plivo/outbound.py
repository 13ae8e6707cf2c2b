"""Calls the gateway places on Plivo.

The call is created through Plivo's REST API (``POST /v1/Account/{auth_id}/Call/`` on
``plivo.api_base_url``, Basic auth with the Auth ID and Auth Token, a JSON body) with aiohttp, so
the event loop never waits on it. Its ``answer_url`` is ``/plivo/placed-answer``: once the callee
picks up, Plivo fetches the same bidirectional ``<Stream>`` XML an incoming call gets, with a
signed per-call token in the stream's URL. Its progress comes to ``/plivo/ring`` (``ring_url``)
and ``/plivo/hangup`` (``hangup_url``); asynchronous machine detection (``machine_detection:
true`` with ``machine_detection_url``) reports to ``/plivo/machine``. Every one of these requests
must carry a valid ``X-Plivo-Signature-V3``, as the answer URL of an incoming call does.

One id for the call. Plivo answers the create request with a ``request_uuid`` only; the call's
``CallUUID`` (which the stream's ``start`` carries as ``callId``) is another id, learnt later. The
gateway's id of a placed call is the ``request_uuid``: the API answers with it at once, and Plivo
repeats it in the callbacks of the call (``ALegRequestUUID`` / ``RequestUUID``). The answer binds
the stream's token both to the ``CallUUID`` (the stream's ``start`` must name it) and to the
``request_uuid``, under which the media socket opens the call: so the plan, the state of
``GET /v1/calls/{id}`` and the post-call record all use the ``request_uuid``, while the REST API
(a transfer) is still addressed by the ``CallUUID``. A callback that carries only a ``CallUUID``
is matched through the ``CallUUID`` the answer (or an earlier callback) paired with the request.

What the documentation leaves open, and what is assumed here:

* Plivo's detection says whether a machine answered (``Machine: true``), not when its greeting
  ended: it decides within ``machine_detection_time``, usually while the greeting still plays. The
  result is taken as ``machine_start``, so the call waits out the profile's
  ``outbound.machine_wait_s`` (from when the call's session is ready) before the voicemail message,
  as the core does for a machine whose greeting has not ended. ``machine_detection_time`` is asked
  to fit in that wait (2 to 10 s, as Plivo allows).
* The documentation describes the callback for a detected machine. ``Machine: false`` is taken as
  a person when it comes; when nothing comes, the wait runs out and the callee is treated as a
  person (the core's rule).
* A call that ends before it was answered reports ``busy``, ``no-answer``, ``timeout``,
  ``cancel`` or ``failed`` to the hangup URL: the placed call fails with that reason
  (``no_answer``...); ``completed`` completes it.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from aiohttp import web

from gateway.audio import G711_ULAW
from gateway.auth import public_base, public_url_for
from gateway.bridge import CONTEXT, GatewayContext, log
from gateway.carriers.base import OutboundError, OutboundRequest, PlacedCall
from gateway.carriers.plivo import codec as plivo
from gateway.carriers.plivo.routes import CALL_TOKEN_TTL_S, CALL_UUIDS, REST, _signed_form, _xml
from gateway.carriers.plivo.settings import PlivoSettings
from gateway.config import GatewayConfig

CREATE_TIMEOUT_S = 15.0
RING_TIMEOUT_S = 30  # how long Plivo lets the callee's phone ring
MAX_PAIRS = 10_000  # CallUUID -> request_uuid pairs kept (placed calls no longer known are dropped first)

# Plivo's call statuses at the hangup URL -> the state a placed call ends in
_ENDED = {"completed": "completed", "busy": "failed", "no-answer": "failed", "timeout": "failed",
          "cancel": "failed", "failed": "failed"}


def refusal(config: GatewayConfig) -> str | None:
    settings = PlivoSettings.of(config)
    if settings.auth_token is None or settings.auth_id is None:
        return "plivo needs plivo.auth_id (PLIVO_AUTH_ID) and plivo.auth_token (PLIVO_AUTH_TOKEN) to place calls"
    return None


def create_body(request: OutboundRequest) -> dict[str, Any]:
    """The JSON body of Plivo's create-call request for ``request``."""
    base = request.public_base
    body: dict[str, Any] = {
        "from": plivo.plivo_number(request.from_), "to": plivo.plivo_number(request.to),  # E.164 without the plus
        "answer_url": public_url_for(base, "/plivo/placed-answer"), "answer_method": "POST",
        "ring_url": public_url_for(base, "/plivo/ring"), "ring_method": "POST",
        "hangup_url": public_url_for(base, "/plivo/hangup"), "hangup_method": "POST",
        "ring_timeout": RING_TIMEOUT_S,
    }
    if request.detect_machine:
        body.update({"machine_detection": "true", "machine_detection_url": public_url_for(base, "/plivo/machine"),
                     "machine_detection_method": "POST",
                     "machine_detection_time": int(min(10_000, max(2_000, request.machine_wait_s * 1000)))})
    return body


def _error_text(text: str) -> str:
    """What Plivo's error answer says (its ``error`` field, else the text), short."""
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    if isinstance(answer, dict) and answer.get("error"):
        error = answer["error"]
        text = error if isinstance(error, str) else json.dumps(error)
    return " ".join(text.split())[:200] or "no detail"


async def place_call(app: web.Application, request: OutboundRequest) -> PlacedCall:
    config = app[CONTEXT].config
    why = refusal(config)
    if why is not None:
        raise OutboundError(why, status=400)
    settings = PlivoSettings.of(config)
    assert settings.auth_id is not None and settings.auth_token is not None
    basic = base64.b64encode(f"{settings.auth_id}:{settings.auth_token.get_secret_value()}".encode()).decode()
    url = f"{settings.api_base_url.rstrip('/')}/v1/Account/{quote(settings.auth_id, safe='')}/Call/"
    try:
        async with asyncio.timeout(CREATE_TIMEOUT_S), app[REST].post(
                url, json=create_body(request), headers={"Authorization": "Basic " + basic}) as reply:
            status, text = reply.status, await reply.text()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise OutboundError(f"Plivo's REST API cannot be reached: {str(exc) or type(exc).__name__}") from None
    if status >= 300:
        raise OutboundError(f"Plivo refused the call (HTTP {status}): {_error_text(text)}",
                            status=400 if 400 <= status < 500 and status not in (401, 403, 429) else 502)
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    uuid = answer.get("request_uuid") if isinstance(answer, dict) else None
    if isinstance(uuid, list) and len(uuid) == 1:  # one destination: one request
        uuid = uuid[0]
    if not isinstance(uuid, str) or not uuid:
        raise OutboundError("Plivo's REST API answered without a request_uuid")
    return PlacedCall(uuid, "queued", detects_machine=request.detect_machine, audio=G711_ULAW)  # (the stream's)


# --- the callbacks of a placed call -----------------------------------------------------------------


def _pair(app: web.Application, call_uuid: str, placed_id: str) -> None:
    pairs = app[CALL_UUIDS]
    if call_uuid and call_uuid not in pairs:
        if len(pairs) >= MAX_PAIRS:
            known = app[CONTEXT].outbound.calls
            for stale in [k for k, v in pairs.items() if v not in known] or list(pairs)[: MAX_PAIRS // 10]:
                del pairs[stale]
        pairs[call_uuid] = placed_id


def placed_id(request: web.Request, form: dict[str, str]) -> str | None:
    """The id (``request_uuid``) of the placed call a callback is about; None: not one this worker
    placed. Pairs the callback's ``CallUUID`` with it for the callbacks to come."""
    ctx: GatewayContext = request.app[CONTEXT]
    call_uuid = form.get("CallUUID", "")
    candidates = [form.get("ALegRequestUUID", ""), form.get("RequestUUID", ""),
                  request.app[CALL_UUIDS].get(call_uuid, "")]
    found = next((c for c in candidates if c and ctx.outbound.placed(c, "plivo") is not None), None)
    if found is not None:
        _pair(request.app, call_uuid, found)
    return found


async def plivo_placed_answer(request: web.Request) -> web.Response:
    """``POST /plivo/placed-answer``: the callee of a placed call picked up: XML that connects the
    call to a bidirectional stream, its token naming the call (both ids) and its profile."""
    ctx = request.app[CONTEXT]
    form, refused = await _signed_form(request, ctx, "placed-answer")
    if refused is not None:
        return refused
    call_uuid, call_id = form.get("CallUUID", ""), placed_id(request, form)
    placed = ctx.outbound.placed(call_id, "plivo") if call_id is not None else None
    if placed is None or not call_uuid:  # not placed by this worker (or forgotten): nothing to connect it to
        log.warning("an answer URL request for a call this worker did not place", call_id=call_uuid)
        return _xml(plivo.hangup_xml())
    ctx.outbound.status(placed.id, "answered", carrier="plivo")
    claims = {"call": call_uuid, "placed": placed.id, "profile": placed.profile, "to": placed.to,
              "from": placed.from_}
    token = ctx.tokens.issue(claims, CALL_TOKEN_TTL_S, carrier="plivo")
    log.info("placed Plivo call answered", call_id=placed.id, call_uuid=call_uuid, profile=placed.profile)
    base = public_base(request, ctx.config.gateway.public_url)
    media = public_url_for(base, "/plivo/media", urlencode({"profile": placed.profile, "token": token}),
                           websocket=True)
    return _xml(plivo.stream_xml(media, after_url=public_url_for(base, "/plivo/stream-ended")))


async def plivo_machine(request: web.Request) -> web.Response:
    """``POST /plivo/machine``: the asynchronous machine detection of a placed call."""
    ctx = request.app[CONTEXT]
    form, refused = await _signed_form(request, ctx, "machine")
    if refused is not None:
        return refused
    machine = form.get("Machine", "").strip().lower()
    result = "machine_start" if machine == "true" else "human" if machine == "false" else "unknown"
    call_id = placed_id(request, form)
    if call_id is None or not await ctx.answering_machine(call_id, result, carrier="plivo"):
        log.warning("a machine detection result for a call this worker did not place",
                    call_id=form.get("CallUUID", ""))
    return web.Response(status=204)


async def plivo_ring(request: web.Request) -> web.Response:
    """``POST /plivo/ring``: a placed call's callee's phone is ringing."""
    ctx = request.app[CONTEXT]
    form, refused = await _signed_form(request, ctx, "ring")
    if refused is not None:
        return refused
    call_id = placed_id(request, form)
    if call_id is not None:
        ctx.outbound.status(call_id, "ringing", carrier="plivo")
    return web.Response(status=204)


async def plivo_hangup(request: web.Request) -> web.Response:
    """``POST /plivo/hangup``: a placed call ended (answered or not), with Plivo's status."""
    ctx = request.app[CONTEXT]
    form, refused = await _signed_form(request, ctx, "hangup")
    if refused is not None:
        return refused
    status = form.get("CallStatus", "").strip().lower()
    call_id = placed_id(request, form)
    if call_id is not None:
        state = _ENDED.get(status, "completed")
        ctx.outbound.status(call_id, state, end_reason=(status or "completed").replace("-", "_"), carrier="plivo")
        request.app[CALL_UUIDS].pop(form.get("CallUUID", ""), None)
    return web.Response(status=204)


def routes() -> list[web.RouteDef]:
    return [web.post("/plivo/placed-answer", plivo_placed_answer), web.post("/plivo/machine", plivo_machine),
            web.post("/plivo/ring", plivo_ring), web.post("/plivo/hangup", plivo_hangup)]

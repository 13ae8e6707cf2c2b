"""Calls the gateway places through Asterisk's REST interface (ARI).

The call is originated with ``POST {ari_url}/ari/channels`` (HTTP basic credentials of an ari.conf
user, a JSON body, sent with aiohttp so that the event loop never waits on it): the channel dials
``asterisk.outbound_endpoint`` with the callee's number, and once the callee answers it runs the
dialplan at ``outbound_context``/``outbound_extension``/``outbound_priority``. The gateway picks the
channel's unique id itself (``channelId``, also given to the dialplan as ``GATEWAY_CALL``): it is
the placed call's id, the one the media socket names. The dialplan (see the README) runs ``AMD()``
when ``GATEWAY_AMD`` is ``yes`` (and, for a machine, waits for its greeting to end), then dials the
gateway's media socket with ``v(call=${GATEWAY_CALL},to=...,from=...,amd=${AMDSTATUS})``: the media
route (:mod:`gateway.carriers.asterisk.routes`) takes a socket whose ``call`` is a call this worker
placed as that call, its answering-machine result read from ``amd``.

Asterisk sends no progress callbacks to a dialplan-driven call, and following them would take an
ARI application's event WebSocket; the gateway asks instead: until the call's media starts it reads
the channel every ``asterisk.ari_poll_s`` (``GET /ari/channels/{id}``): ``Ringing`` is ringing,
``Up`` answered, and a channel that is gone (404: busy, no answer, hung up before the media socket
opened, or the socket refused) ends the call as ``failed``, ``ended_before_media``. Once the media
runs, the socket's closing ends the call.

Assumed: ARI takes every originate parameter in the JSON body (Asterisk 13 and later do), answers
with the channel (its ``id``, the ``channelId`` asked for, and its ``state``), and answers 404 for
a channel that no longer exists.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from gateway.bridge import CONTEXT
from gateway.carriers.asterisk.auth import basic_header
from gateway.carriers.asterisk.settings import AsteriskSettings
from gateway.carriers.base import OutboundError, OutboundRequest, PlacedCall
from gateway.config import GatewayConfig
from gateway.core.outbound import UNKNOWN
from gateway.log import get_logger
from gateway.outbound import WAITING

log = get_logger("gateway.asterisk")

ARI: web.AppKey[aiohttp.ClientSession] = web.AppKey("asterisk_ari", aiohttp.ClientSession)
WATCHES: web.AppKey[dict[str, asyncio.Task[None]]] = web.AppKey("asterisk_watches", dict)  # call id -> watch
ENDED_BEFORE_MEDIA = "ended_before_media"

# ARI channel states (of the originated channel, as the originate answer gives it) -> placed-call states
_STATES = {"Down": "queued", "Rsrvd": "queued", "OffHook": "queued", "Dialing": "queued", "Pre-ring": "queued",
           "Ring": "ringing", "Ringing": "ringing", "Up": "answered"}
# AMDSTATUS -> the gateway's answering-machine results. The dialplan connects a machine once its
# greeting has ended (WaitForSilence after AMD()), so MACHINE is a machine whose greeting is over.
# NOTSURE (and HANGUP: the callee hung up during detection) say nothing: "unknown", a person once they
# spoke or paused.
_AMD = {"HUMAN": "human", "MACHINE": "machine_end_silence", "NOTSURE": UNKNOWN, "HANGUP": UNKNOWN}


def refusal(config: GatewayConfig) -> str | None:
    """What is missing for Asterisk to place calls (None: nothing)."""
    settings = AsteriskSettings.of(config)
    missing = [name for name, value in (("asterisk.ari_url", settings.ari_url),
                                        ("asterisk.ari_username", settings.ari_username),
                                        ("asterisk.ari_password (ASTERISK_ARI_PASSWORD)", settings.ari_password),
                                        ("asterisk.outbound_endpoint", settings.outbound_endpoint))
               if not value]
    if not settings.has_credential and not config.gateway.insecure_dev_mode:
        missing.append("media socket credentials (ASTERISK_WS_USERNAME and ASTERISK_WS_PASSWORD, or "
                       "ASTERISK_WS_TOKEN): the placed call's media socket would be refused")
    if missing:
        return "asterisk needs " + ", ".join(missing) + " to place calls"
    return None


def originate_url(ari_url: str) -> str:
    return ari_url.rstrip("/") + "/ari/channels"


def endpoint_for(template: str, number: str) -> str:
    """The ARI endpoint that dials ``number`` (E.164): ``{number}`` as it is, ``{digits}`` without its +."""
    return template.replace("{number}", number).replace("{digits}", number.lstrip("+"))


def originate_body(settings: AsteriskSettings, request: OutboundRequest, call_id: str) -> dict[str, Any]:
    """The JSON body of ``POST /ari/channels`` for a call whose channel gets the unique id ``call_id``."""
    assert settings.outbound_endpoint is not None
    return {
        "endpoint": endpoint_for(settings.outbound_endpoint, request.to),
        "context": settings.outbound_context, "extension": settings.outbound_extension,
        "priority": settings.outbound_priority,
        "callerId": request.from_, "timeout": settings.ring_timeout_s, "channelId": call_id,
        "variables": {"GATEWAY_CALL": call_id, "GATEWAY_TO": request.to, "GATEWAY_FROM": request.from_,
                      "GATEWAY_AMD": "yes" if request.detect_machine else "no"},
    }


def answering_machine(status: str | None) -> str:
    """The gateway's answering-machine result for the ``amd`` the dialplan gave (``${AMDSTATUS}``):
    anything but HUMAN and MACHINE, an empty or missing value included, is ``unknown``."""
    return _AMD.get((status or "").strip().upper(), UNKNOWN)


def placed_state(answer: Any) -> str:
    """The placed call's state from the originate answer (the channel's ``state``)."""
    state = answer.get("state") if isinstance(answer, dict) else None
    return _STATES.get(state, "queued") if isinstance(state, str) else "queued"


def problem(answer: Any, text: str) -> str:
    """What ARI's error answer says (its ``message``), briefly."""
    if isinstance(answer, dict) and isinstance(answer.get("message"), str) and answer["message"].strip():
        detail = answer["message"]
    else:
        detail = text or "no error detail"
    return " ".join(detail.split())[:300]


def refused(status: int, answer: Any, text: str) -> OutboundError:
    """The API's error for an ARI answer that is not a success."""
    detail = problem(answer, text)
    if status in (401, 403):
        return OutboundError(f"ARI refused the gateway's credentials (HTTP {status}): check asterisk.ari_username "
                             "and ASTERISK_ARI_PASSWORD")
    if status in (400, 409, 422):  # the request (a number, the endpoint it makes) does not suit Asterisk
        return OutboundError(f"Asterisk refused the call (HTTP {status}): {detail}", status=400)
    return OutboundError(f"Asterisk's ARI failed to place the call (HTTP {status}): {detail}")


def channel_url(ari_url: str, call_id: str) -> str:
    return originate_url(ari_url) + "/" + quote(call_id, safe="")


def _authorization(settings: AsteriskSettings) -> dict[str, str]:
    assert settings.ari_username is not None and settings.ari_password is not None
    return {"Accept": "application/json",
            "Authorization": basic_header(settings.ari_username, settings.ari_password.get_secret_value())}


async def watch(app: web.Application, call_id: str) -> None:
    """Follow a placed call's channel through ARI until its media starts or the channel is gone."""
    ctx = app[CONTEXT]
    settings = AsteriskSettings.of(ctx.config)
    assert settings.ari_url is not None
    url, headers = channel_url(settings.ari_url, call_id), _authorization(settings)
    failures = 0
    while True:
        await asyncio.sleep(settings.ari_poll_s)  # (an HTTP API: it is asked again)
        placed = ctx.outbound.placed(call_id, "asterisk")
        if placed is None or placed.state not in WAITING:
            return  # its media runs (the socket says when it ends), or it ended
        try:
            async with asyncio.timeout(settings.ari_timeout_s), app[ARI].get(url, headers=headers) as reply:
                status = reply.status
                answer = await reply.json(content_type=None) if status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            failures += 1
            (log.warning if failures == 1 else log.debug)(
                "ARI did not say how a placed call's channel is; asked again", call_id=call_id,
                error=str(exc)[:200] or type(exc).__name__, failures=failures)
            continue
        if status == 404:
            if call_id not in ctx.calls:  # (its media may have started meanwhile: the socket ends it)
                ctx.outbound.status(call_id, "failed", end_reason=ENDED_BEFORE_MEDIA, carrier="asterisk")
            return
        if status == 200:
            state = placed_state(answer)
            if state != "queued":
                ctx.outbound.status(call_id, state, carrier="asterisk")
        else:
            failures += 1
            (log.warning if failures == 1 else log.debug)(
                "ARI did not say how a placed call's channel is; asked again", call_id=call_id, status=status,
                failures=failures)


def _start_watch(app: web.Application, call_id: str) -> None:
    watches = app[WATCHES]
    task = asyncio.create_task(watch(app, call_id), name=f"asterisk-watch-{call_id}")
    watches[call_id] = task
    task.add_done_callback(lambda done: watches.pop(call_id, None) if watches.get(call_id) is done else None)


async def place_call(app: web.Application, request: OutboundRequest) -> PlacedCall:
    config = app[CONTEXT].config
    why = refusal(config)
    if why is not None:
        raise OutboundError(why, status=400)
    settings = AsteriskSettings.of(config)
    assert settings.ari_url is not None
    call_id = str(uuid.uuid4())
    headers = _authorization(settings)
    try:
        async with asyncio.timeout(settings.ari_timeout_s), app[ARI].post(
                originate_url(settings.ari_url), json=originate_body(settings, request, call_id),
                headers=headers) as reply:
            status = reply.status
            text = await reply.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise OutboundError(f"Asterisk's ARI cannot be reached: {str(exc) or type(exc).__name__}") from None
    try:
        answer = json.loads(text) if text else None
    except ValueError:
        answer = None
    if not 200 <= status < 300:
        raise refused(status, answer, text)
    if isinstance(answer, dict) and answer.get("id") not in (None, call_id):
        raise OutboundError("Asterisk's ARI created a channel with another id than the one asked for "
                            "(channelId): its media socket could not be matched to the call")
    _start_watch(app, call_id)
    return PlacedCall(call_id, placed_state(answer), detects_machine=request.detect_machine)

"""Calls the gateway places: the operator API (``POST /v1/calls``, ``GET /v1/calls/{id}``) and the
state of each placed call.

A placed call's state lives in the worker process that placed it, for ``gateway.outbound.keep_s``
after it ended. With several workers (or replicas), ``GET /v1/calls/{id}`` must reach the worker
that answered the ``POST`` (or read the call's post-call record instead); the limits
(``calls_per_minute``, ``max_per_profile``, ``max_calls``) are per worker too.

The carrier places the call (:meth:`gateway.carriers.base.Carrier.place_call`); its media stream
then comes to the carrier's media socket like any other call, where :meth:`Outbound.plan_for`
tells the call it was placed (how it opens, its instruction variables). Its Voice Live session is
opened as soon as the carrier returned the call's id (see :mod:`gateway.prewarm`), for the media
socket to take; a call is not placed when no Voice Live resource of its profile has a connection
left in its budget (429). The carrier's callbacks report the call's progress
(:meth:`Outbound.status`) and the answering-machine result (:meth:`Outbound.answered`), which
reaches the live call at once.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway import metrics
from gateway.carriers.base import Carrier, OutboundError, OutboundRequest
from gateway.config.numbers import E164, normalize_number
from gateway.core.outbound import OutboundPlan, VariableError, fill_variables
from gateway.log import get_logger

if TYPE_CHECKING:
    from gateway.bridge import GatewayContext
    from gateway.call import Call
    from gateway.config import GatewayConfig
    from gateway.config.schema import OutboundLimits

log = get_logger("gateway.outbound")

CARRIERS: web.AppKey[dict[str, Carrier]] = web.AppKey("outbound_carriers", dict)
STATES = ("queued", "ringing", "answered", "in-progress", "completed", "failed")
DONE = ("completed", "failed")
WAITING = ("queued", "ringing", "answered")  # placed, its media not started yet: it holds a place in max_calls
MAX_KEY_CHARS = 128
BUSY_RETRY_S = 5  # Retry-After when the worker or the profile is full
BUDGET_RETRY_S = 60  # Retry-After when no Voice Live connection is left: a budget frees up within its minute
START_WITHIN_S = 180.0  # a placed call whose media has not started by then never will


@dataclass
class PlacedState:
    """One placed call, as ``GET /v1/calls/{id}`` shows it."""

    id: str  # the carrier's call id (the id of the call's media stream and of its record)
    carrier: str
    profile: str
    to: str
    from_: str
    plan: OutboundPlan
    state: str = "queued"
    answered_by: str | None = None
    end_reason: str | None = None
    created_at: float = field(default_factory=time.time)
    answered_at: float | None = None
    ended_at: float | None = None
    idempotency_key: str | None = None

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "carrier": self.carrier, "profile": self.profile,
                "to": self.to, "from": self.from_, "answered_by": self.answered_by, "end_reason": self.end_reason,
                "created_at": self.created_at, "answered_at": self.answered_at, "ended_at": self.ended_at}


class Outbound:
    """The calls this worker placed, its idempotency keys and its outbound limits."""

    def __init__(self, limits: OutboundLimits) -> None:
        self.limits = limits
        self.calls: dict[str, PlacedState] = {}
        self.keys: dict[str, tuple[str, float]] = {}  # idempotency key -> (call id, when placed)
        self.placing: dict[str, asyncio.Future[PlacedState]] = {}  # keys whose call is being placed now
        self.placing_profiles: list[str] = []  # profiles of the calls being placed now
        self.recent: deque[float] = deque()  # when calls were placed (the per-minute cap)
        # told (carrier, call id) when a placed call ended before its media started
        self.ended_without_media: Callable[[str, str], None] | None = None

    def _prune(self, now: float) -> None:
        keep = self.limits.keep_s
        for placed in self.calls.values():
            if placed.state in WAITING and placed.created_at + START_WITHIN_S < now:
                # no media and no word from the carrier: it no longer holds a place in the limits
                placed.state, placed.end_reason, placed.ended_at = "failed", "never_connected", now
        for call_id in [k for k, c in self.calls.items() if c.ended_at is not None and c.ended_at + keep < now]:
            del self.calls[call_id]
        for key in [k for k, (_, t) in self.keys.items() if t + keep < now]:
            del self.keys[key]
        while self.recent and self.recent[0] <= now - 60.0:
            self.recent.popleft()

    def refusal(self, profile_name: str, profile_cap: int | None, active_calls: int,
                max_calls: int) -> tuple[str, float] | None:
        """Why a call cannot be placed now, and when to try again (None: it can)."""
        now = time.time()
        self._prune(now)
        if len(self.recent) >= self.limits.calls_per_minute:
            return (f"at outbound.calls_per_minute ({self.limits.calls_per_minute})",
                    max(1.0, self.recent[0] + 60.0 - now))
        if active_calls + self.places_held() >= max_calls:
            return f"at max_calls ({max_calls})", BUSY_RETRY_S
        caps = [cap for cap in (profile_cap, self.limits.max_per_profile) if cap is not None]
        if caps:
            live = sum(1 for c in self.calls.values() if c.profile == profile_name and c.state not in DONE)
            live += self.placing_profiles.count(profile_name)
            if live >= min(caps):
                return f"at the outbound cap of profile {profile_name} ({min(caps)})", BUSY_RETRY_S
        return None

    def places_held(self, running: Container[str] = (), carrier: str | None = None,
                    call_id: str | None = None) -> int:
        """The places in ``max_calls`` that calls of this worker hold before their media runs: calls
        being placed now, and placed calls that have neither started their media nor ended (those
        with ids in ``running``, the worker's calls in progress, are counted there instead). With
        ``carrier``, for the media stream of a call of that carrier: its own call's place is not
        counted against it (``call_id``: None while the stream has not said which call it is; then one
        place of that carrier's placed calls is its own). Call :meth:`_prune` first."""
        waiting = [c for c in self.calls.values() if c.state in WAITING and c.id not in running]
        held = len(waiting) + len(self.placing_profiles)
        if carrier is not None and any(c.carrier == carrier and call_id in (None, c.id) for c in waiting):
            held -= 1
        return held

    def plan_for(self, call_id: str) -> OutboundPlan | None:
        """The plan of a call this worker placed (None: not one of them); its stream has started."""
        placed = self.calls.get(call_id)
        if placed is None:
            return None
        placed.state = "in-progress"
        placed.answered_at = placed.answered_at or time.time()
        return placed.plan

    def call_options(self, call_id: str) -> dict[str, Any]:
        plan = self.plan_for(call_id)
        return {} if plan is None else {"outbound": plan}

    def placed(self, call_id: str, carrier: str) -> PlacedState | None:
        """A call this worker placed through ``carrier`` (None: not one of them). A carrier's callback
        (signed by that carrier only) never reaches a call of another."""
        placed = self.calls.get(call_id)
        return placed if placed is not None and placed.carrier == carrier else None

    def status(self, call_id: str, state: str, end_reason: str | None = None, *, carrier: str) -> None:
        """The carrier reported the call's progress (one of :data:`STATES`)."""
        placed = self.placed(call_id, carrier)
        if placed is None or placed.state in DONE or state not in STATES:
            return
        if state not in DONE and STATES.index(state) <= STATES.index(placed.state):
            return  # a late (or repeated) callback: the call is further along already
        waiting = placed.state in WAITING
        placed.state = state
        if state == "answered":
            placed.answered_at = placed.answered_at or time.time()
        if state in DONE:
            placed.ended_at = time.time()
            placed.end_reason = placed.end_reason or end_reason
        log.info("placed call", call_id=call_id, state=state, end_reason=end_reason)
        if state in DONE and waiting and self.ended_without_media is not None:
            self.ended_without_media(carrier, call_id)

    def answered(self, call_id: str, result: str, *, carrier: str) -> PlacedState | None:
        """The carrier's answering-machine result for a placed call (None: not one of this worker's)."""
        placed = self.placed(call_id, carrier)
        if placed is None or placed.state in DONE:  # (a result after the call ended changes nothing)
            return placed
        placed.answered_by = result
        if placed.state not in ("in-progress", *DONE):  # the result came before the media stream
            placed.plan = OutboundPlan(**{**_plan_fields(placed.plan), "answered_by": result})
        return placed

    def ended(self, call: Call) -> None:
        """A placed call's media ended: the call is over."""
        placed = self.calls.get(call.call_id)
        if placed is None:
            return
        placed.state = "completed"  # (the carrier may have said so already: the call's own reason wins)
        placed.end_reason = call.end_reason or placed.end_reason
        placed.answered_by = call.answered_by or placed.answered_by
        placed.ended_at = placed.ended_at or time.time()


def _plan_fields(plan: OutboundPlan) -> dict[str, Any]:
    return {name: getattr(plan, name) for name in plan.__slots__}


# --- the API -------------------------------------------------------------------------------------


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def _authorized(request: web.Request, config: GatewayConfig) -> web.Response | None:
    """None when the request carries the operator token; else the refusal."""
    token = config.gateway.api_token
    if token is None or not token.get_secret_value():
        return _error(404, "the outbound-call API is off: set gateway.api_token (GATEWAY_API_TOKEN) to turn it on")
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode("utf-8", "surrogateescape"),
                                                               token.get_secret_value().encode()):
        log.warning("outbound-call API request refused: bad or missing token", path=request.path)
        return _error(401, "a valid Authorization: Bearer <GATEWAY_API_TOKEN> header is required",
                      **{"WWW-Authenticate": "Bearer"})
    return None


def _pick_carrier(carriers: dict[str, Carrier], config: GatewayConfig, name: Any) -> Carrier | str:
    """The carrier to place the call with, or why there is none."""
    if name is not None:
        if not isinstance(name, str) or name not in carriers:
            return f"carrier: expected one of {', '.join(carriers)}"
        why = carriers[name].outbound_refusal(config)
        return carriers[name] if why is None else f"carrier: {why}"
    able = [c for c in carriers.values() if c.outbound_refusal(config) is None]
    if len(able) == 1:
        return able[0]
    if not able:
        return "no carrier can place calls with this configuration: " + "; ".join(
            str(c.outbound_refusal(config)) for c in carriers.values())
    return f"carrier: several carriers can place calls ({', '.join(c.name for c in able)}): name one"


def _number(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if not isinstance(value, str):
        return None
    number = normalize_number(value)
    return number if E164.fullmatch(number) else None


async def create_call(request: web.Request) -> web.Response:
    """``POST /v1/calls``: place a call. Answers with the call's id and state."""
    from gateway.bridge import CONTEXT  # the shell imports this module

    ctx: GatewayContext = request.app[CONTEXT]
    config = ctx.config
    refused = _authorized(request, config)
    if refused is not None:
        return refused
    if ctx.draining:
        return _error(503, "the gateway is draining: it places no new calls", **{"Retry-After": "30"})
    try:
        body = await request.json()
    except (ValueError, RecursionError):  # (not JSON, or nested too deep to decode)
        return _error(400, "expected a JSON object")
    if not isinstance(body, dict):
        return _error(400, "expected a JSON object")
    unknown = sorted(set(body) - {"to", "from", "profile", "carrier", "variables", "idempotency_key"})
    if unknown:
        return _error(400, f"{unknown[0]}: unknown field (expected to, from, profile, carrier, variables, "
                           "idempotency_key)")
    to, from_ = _number(body, "to"), _number(body, "from")
    for name, value in (("to", to), ("from", from_)):
        if value is None:
            return _error(400, f"{name}: expected an E.164 number such as +14155550100")
    profile_name = body.get("profile")
    if not isinstance(profile_name, str) or profile_name not in config.profiles:
        return _error(400, f"profile: expected one of {', '.join(config.profiles)}")
    profile = config.profiles[profile_name]
    variables = body.get("variables", {})
    if not isinstance(variables, dict):
        return _error(400, "variables: expected an object of names to strings")
    try:
        fill_variables(profile.instructions, variables)
    except VariableError as exc:
        return _error(400, str(exc))
    key = body.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_CHARS):
        return _error(400, f"idempotency_key: expected a string of 1 to {MAX_KEY_CHARS} characters")
    carrier = _pick_carrier(request.app[CARRIERS], config, body.get("carrier"))
    if isinstance(carrier, str):
        return _error(400, carrier)
    outbound = ctx.outbound
    if key is not None:  # the same key within keep_s: the same call
        outbound._prune(time.time())
        if key in outbound.placing:
            try:
                placed = await asyncio.shield(outbound.placing[key])
            except OutboundError as exc:
                return _error(exc.status, str(exc))
            return web.json_response(placed.view())
        known = outbound.keys.get(key)
        if known is not None and known[0] in outbound.calls:
            return web.json_response(outbound.calls[known[0]].view())
    busy = outbound.refusal(profile_name, profile.outbound.max_calls, len(ctx.calls), config.gateway.max_calls)
    if busy is not None:
        reason, retry = busy
        return _error(429, f"call refused: {reason}", **{"Retry-After": str(round(retry + 0.49))})
    if ctx.busy_message(profile_name) is not None:  # no Voice Live resource of the profile has a connection left
        metrics.CALLS.inc(carrier.name, "refused (no budget)")
        log.warning("a call was not placed: no Voice Live connection left in the budget", profile=profile_name)
        return _error(429, f"call refused: no Voice Live connection left in the budget of profile {profile_name} "
                           "(every resource it may use has spent its connections of this minute)",
                      **{"Retry-After": str(BUDGET_RETRY_S)})
    settings = profile.outbound
    detect = settings.answering_machine_detection
    from gateway.auth import public_base

    want = OutboundRequest(to=to or "", from_=from_ or "", profile=str(profile_name), detect_machine=detect,
                           machine_wait_s=settings.machine_wait_s,
                           public_base=public_base(request, config.gateway.public_url))
    future: asyncio.Future[PlacedState] = asyncio.get_running_loop().create_future()
    if key is not None:
        outbound.placing[key] = future
    outbound.placing_profiles.append(profile_name)
    outbound.recent.append(time.time())
    ref = secrets.token_hex(4)
    log.info("placing a call", carrier=carrier.name, profile=profile_name, ref=ref)
    try:
        placed_call = await carrier.place_call(request.app, want)
    except OutboundError as exc:
        future.set_exception(exc)
        future.exception()  # retrieved: a waiter gets it, nobody else needs to
        log.warning("a call could not be placed", carrier=carrier.name, ref=ref, error=str(exc))
        return _error(exc.status, str(exc))
    except Exception as exc:  # a failure the carrier did not foresee: its waiters must not wait forever
        failure = OutboundError(f"the call could not be placed: {carrier.name} failed unexpectedly")
        future.set_exception(failure)
        future.exception()
        log.error("a call could not be placed", carrier=carrier.name, ref=ref, error=type(exc).__name__)
        return _error(failure.status, str(failure))
    except asyncio.CancelledError:
        future.set_exception(OutboundError("the call was not placed: its request was cancelled"))
        future.exception()
        raise
    finally:
        outbound.placing_profiles.remove(profile_name)
        if key is not None:
            outbound.placing.pop(key, None)
    plan = OutboundPlan(  # no answering-machine result coming: the call opens as for a person
        greeting_after_ms=settings.greeting_after_s * 1000.0, detect_machine=detect and placed_call.detects_machine,
        machine_wait_ms=settings.machine_wait_s * 1000.0,
        voicemail_message=profile.voicemail.message if profile.voicemail.action == "message" else None,
        variables=tuple((str(k), str(v)) for k, v in variables.items()))
    placed = PlacedState(id=placed_call.call_id, carrier=carrier.name, profile=profile_name, to=want.to,
                         from_=want.from_, plan=plan, state=placed_call.state, idempotency_key=key)
    outbound.calls[placed.id] = placed
    if key is not None:
        outbound.keys[key] = (placed.id, time.time())
    future.set_result(placed)
    log.info("call placed", carrier=carrier.name, call_id=placed.id, ref=ref)
    if placed_call.audio is not None and placed.id not in ctx.calls:
        # its Voice Live session opens now, while the callee's phone rings: the media socket takes it
        # (the call's id, profile, audio and plan are those the socket builds the call with)
        ctx.prewarm(carrier.name, placed.id, profile_name, placed_call.audio, outbound=plan)
    return web.json_response(placed.view(), status=201)


async def get_call(request: web.Request) -> web.Response:
    """``GET /v1/calls/{id}``: a placed call's state (on the worker that placed it)."""
    from gateway.bridge import CONTEXT

    ctx: GatewayContext = request.app[CONTEXT]
    refused = _authorized(request, ctx.config)
    if refused is not None:
        return refused
    ctx.outbound._prune(time.time())
    placed = ctx.outbound.calls.get(request.match_info["id"])
    if placed is None:
        return _error(404, "no such call on this worker (a call's state is kept by the worker that placed it, "
                           "for gateway.outbound.keep_s after it ended)")
    return web.json_response(placed.view())


def routes() -> list[web.RouteDef]:
    return [web.post("/v1/calls", create_call), web.get("/v1/calls/{id}", get_call)]

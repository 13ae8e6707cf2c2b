"""The console's HTTP side: the page (``GET /console``), logging in and out, its static files, and
the JSON the page reads: the profiles, the calls in progress (and ending one), the last calls'
post-call records.

The console's phone (the microphone and speaker of the operator's web page) is a carrier of its own,
with its media socket at :data:`MEDIA_PATH`; this module only serves the page that uses it.

Several workers (``gateway serve --workers N``) each know only their own calls; they share them
through a directory (see :mod:`gateway.console.shared`), so that whichever worker answers lists the
calls of all of them, each with its ``worker`` (pid), and ends one of another worker by asking it
to. :func:`share_calls` (an aiohttp cleanup context) is each worker's side of that. One worker
shares nothing. Replicas (other machines, other containers) each list only their own calls.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.bridge import CONTEXT, CallBridge, GatewayContext
from gateway.config import GatewayConfig
from gateway.console.auth import (
    COOKIE,
    LOGIN_THROTTLE,
    console_mode,
    end_session,
    refusal,
    same_origin,
    set_session,
    token_matches,
    valid_cookie,
)
from gateway.console.shared import CallBoard, merge_calls, shared_dir, worker_of
from gateway.log import get_logger
from gateway.workers import worker_count

__all__ = ["CALL_BOARD", "END_REASON", "MEDIA_PATH", "SHARE_INTERVAL_S", "console_routes", "phone_carrier",
           "share_calls"]

log = get_logger("gateway.console")

MEDIA_PATH = "/console/media"  # the console's phone: its media socket (served by its carrier)
END_REASON = "ended_from_console"  # the end reason of a call an operator ended from the calls list
STATIC = Path(__file__).resolve().parent / "static"
MAX_TRANSCRIPT = 200  # entries of a record's transcript the API returns (a long call keeps its start)
SHARE_INTERVAL_S = 1.0  # how often each of several workers shares its calls (and takes end requests)
CALL_BOARD: web.AppKey[CallBoard] = web.AppKey("console_call_board", CallBoard)

_TYPES = {
    ".js": "text/javascript; charset=utf-8",  # (worklet modules must be served as JavaScript)
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
_PAGES = ("index.html", "login.html")  # served as /console only, never as static files


def _load_static() -> tuple[dict[str, tuple[bytes, str]], dict[str, bytes]]:
    """The console's files, read once: the allow-list of ``/console/static/{name}`` (a name not in it
    does not exist, whatever it spells), and the two pages."""
    files: dict[str, tuple[bytes, str]] = {}
    pages: dict[str, bytes] = {}
    for path in sorted(STATIC.iterdir()) if STATIC.is_dir() else []:
        content_type = _TYPES.get(path.suffix)
        if not path.is_file() or content_type is None:
            continue
        if path.name in _PAGES:
            pages[path.name] = path.read_bytes()
        else:
            files[path.name] = (path.read_bytes(), content_type)
    return files, pages


FILES, PAGES = _load_static()
LOGIN_ERROR_SLOT = b"<!--login-error-->"  # where login.html shows why the last attempt failed
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(?::[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?$")


def phone_carrier() -> str | None:
    """The name of the carrier whose media socket is the console's phone (None: no carrier serves it).
    Found by its route, so that nothing outside the carriers' packages names a carrier."""
    from gateway.carriers.registry import default_carriers

    for carrier in default_carriers():
        if any(getattr(route, "path", None) == MEDIA_PATH for route in carrier.routes()):
            return carrier.name
    return None


# --- responses ---------------------------------------------------------------------------------------


def _policy(request: web.Request) -> str:
    """The Content-Security-Policy of the console's pages: everything from the gateway itself, no
    inline script, no other site; the media socket on the same host."""
    sockets = ""
    host = request.host
    if _HOST.match(host):  # (a Host header that is not a plain host[:port] adds nothing to the policy)
        sockets = f" ws://{host} wss://{host}"
    return ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "media-src 'self' blob:; worker-src 'self'; font-src 'self'; "
            f"connect-src 'self'{sockets}; object-src 'none'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")


def _secured(request: web.Request, response: web.Response) -> web.Response:
    headers = response.headers
    headers["Content-Security-Policy"] = _policy(request)
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "no-referrer"
    headers["Cache-Control"] = "no-store"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    return response


def _page(request: web.Request, name: str, status: int = 200, error: str | None = None) -> web.Response:
    body = PAGES.get(name)
    if body is None:  # (an installation without the console's files)
        log.error("the console's page is missing from the installation", page=name)
        return _secured(request, web.Response(status=500, text="the console's files are not installed\n"))
    if error is not None:
        safe = error.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        body = body.replace(LOGIN_ERROR_SLOT, safe.encode())
    return _secured(request, web.Response(status=status, body=body, content_type="text/html", charset="utf-8"))


def _off(request: web.Request) -> web.Response:
    return _secured(request, web.Response(
        status=404, text="The console is off. Set GATEWAY_CONSOLE_TOKEN (gateway.console_token in config.yaml) to "
                         "turn it on; operators then log in with that token.\n"))


def _json(request: web.Request, body: Any, status: int = 200) -> web.Response:
    return _secured(request, web.json_response(body, status=status))


def _config(request: web.Request) -> GatewayConfig:
    return request.app[CONTEXT].config


def _secure_cookie(request: web.Request, config: GatewayConfig) -> bool:
    """Whether the session cookie is for HTTPS only: the request came over HTTPS, or the gateway's
    public address is an HTTPS one (a proxy in front ends TLS)."""
    public = config.gateway.public_url
    return request.secure or (public is not None and str(public).lower().startswith("https://"))


# --- the page, logging in and out, static files --------------------------------------------------------


async def console_page(request: web.Request) -> web.Response:
    """``GET /console``: the console (404 while it is off; the login form until the operator logged in)."""
    config = _config(request)
    mode = console_mode(config)
    if mode == "off":
        return _off(request)
    if mode == "token" and not valid_cookie(config, request.cookies.get(COOKIE)):
        return _page(request, "login.html")
    return _page(request, "index.html")


async def console_slash(request: web.Request) -> web.Response:
    """``GET /console/``: the console is at ``/console``."""
    return _secured(request, web.Response(status=308, headers={"Location": "/console"}))


async def login(request: web.Request) -> web.Response:
    """``POST /console/login`` (form field ``token``): the right token gets a session cookie and goes
    to the console; a wrong one gets the login form again, with an error."""
    config = _config(request)
    mode = console_mode(config)
    if mode == "off":
        return _off(request)
    if not same_origin(request):
        log.warning("console login refused: from another site", origin=request.headers.get("Origin", "")[:100])
        return _json(request, {"error": "log in from the console's own page"}, status=403)
    if mode == "open":  # (no token to give: the console is open)
        return _secured(request, web.Response(status=303, headers={"Location": "/console"}))
    throttle, address, now = request.app[LOGIN_THROTTLE], request.remote or "?", time.monotonic()
    wait = throttle.retry_after(address, now)
    if wait is not None:
        log.warning("console login refused: too many wrong tokens from this address", remote=address)
        response = _page(request, "login.html", status=429,
                         error=f"Too many wrong tokens: try again in {math.ceil(wait)} s.")
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    form = await request.post()
    given = form.get("token")
    if not isinstance(given, str) or not given or not token_matches(config, given):
        throttle.failed(address, now)
        log.warning("console login refused: wrong token", remote=address)
        return _page(request, "login.html", status=401, error="That token is not the console's token.")
    throttle.succeeded(address)
    log.info("console login", remote=address)
    response = web.Response(status=303, headers={"Location": "/console"})
    set_session(response, config, secure=_secure_cookie(request, config))
    return _secured(request, response)


async def logout(request: web.Request) -> web.Response:
    """``POST /console/logout``: the session cookie is cleared; back to the login form."""
    if console_mode(_config(request)) == "off":
        return _off(request)
    if not same_origin(request):
        return _json(request, {"error": "log out from the console's own page"}, status=403)
    response = web.Response(status=303, headers={"Location": "/console"})
    end_session(response)
    return _secured(request, response)


async def static_file(request: web.Request) -> web.Response:
    """``GET /console/static/{name}``: one of the console's files (scripts, styles). They hold no
    data, so the login form can use them before the operator logged in."""
    if console_mode(_config(request)) == "off":
        return _off(request)
    found = FILES.get(request.match_info["name"])
    if found is None:
        return _secured(request, web.Response(status=404, text="no such file\n"))
    body, content_type = found
    response = web.Response(body=body, headers={"Content-Type": content_type})
    return _secured(request, response)


# --- the API -----------------------------------------------------------------------------------------


def _worker(app: web.Application) -> dict[str, Any]:
    """Which worker answered, of how many; with several workers sharing their calls, ``all`` (true):
    the calls listed are those of every worker."""
    worker: dict[str, Any] = {"pid": os.getpid(), "workers": worker_count()}
    if CALL_BOARD in app:
        worker["all"] = True
    return worker


def call_view(bridge: CallBridge) -> dict[str, Any]:
    """One call in progress as the console lists it: no numbers, nothing secret."""
    call = bridge.call
    elapsed_ms = max(0.0, bridge._now() - call.started_at)  # (the bridge's clock, the call's own)
    return {
        "call_id": call.call_id,
        "carrier": bridge.carrier,
        "direction": call.direction,
        "profile": call.profile_name,
        "duration_s": round(elapsed_ms / 1000.0, 1),
        "state": call.state.value,
        "turns": call.stats.caller_turns,
        "started": round(time.time() - elapsed_ms / 1000.0, 3),
    }


def record_view(record: dict[str, Any]) -> dict[str, Any]:
    """A post-call record (masked already) as the console shows it: what it was, how it ended, what
    was said. Its numbers are left out."""
    transcript = record.get("transcript") or []
    return {
        "id": record.get("id"),
        "call_id": record.get("call_id"),
        "carrier": record.get("carrier"),
        "profile": record.get("profile"),
        "direction": record.get("direction"),
        "started_at": record.get("started_at"),
        "duration_ms": record.get("duration_ms"),
        "end_reason": record.get("end_reason"),
        "outcome": record.get("outcome"),
        "turns": record.get("caller_turns", sum(1 for entry in transcript if entry.get("role") == "caller"
                                                 and not entry.get("keys"))),
        "barge_ins": len(record.get("barge_ins") or []),
        "transcript": [{key: entry[key] for key in ("role", "text", "at_ms", "interrupted", "keys") if key in entry}
                       for entry in transcript[:MAX_TRANSCRIPT]],
    }


async def _calls(app: web.Application, ctx: GatewayContext) -> list[dict[str, Any]]:
    """The calls in progress: this worker's; with several workers, every worker's (with ``worker``)."""
    own = [call_view(bridge) for bridge in list(ctx.calls.values())]
    board = app.get(CALL_BOARD)
    if board is None:
        return own
    others = await asyncio.to_thread(board.others)
    return merge_calls(board.pid, own, others, time.time())


async def api_state(request: web.Request) -> web.Response:
    """``GET /console/api/state``: what the page shows at once."""
    ctx: GatewayContext = request.app[CONTEXT]
    refused = refusal(request, ctx.config)
    if refused is not None:
        return _secured(request, refused)
    default, _ = ctx.config.route(None)
    return _json(request, {
        "mode": console_mode(ctx.config),
        "profiles": list(ctx.config.profiles),
        "default_profile": default,
        "calls": await _calls(request.app, ctx),
        "records": [record_view(record) for record in reversed(ctx.recent_records)],
        "records_on": ctx.records is not None,
        "worker": _worker(request.app),
    })


async def api_calls(request: web.Request) -> web.Response:
    """``GET /console/api/calls``: the calls in progress (on every worker, with several)."""
    ctx: GatewayContext = request.app[CONTEXT]
    refused = refusal(request, ctx.config)
    if refused is not None:
        return _secured(request, refused)
    return _json(request, {"calls": await _calls(request.app, ctx), "worker": _worker(request.app)})


async def api_end_call(request: web.Request) -> web.Response:
    """``POST /console/api/calls/{call_id}/end``: the gateway ends the call and hangs up through its
    carrier (the call's end reason: ``ended_from_console``). A call of this worker is cut at once; a
    call of another worker (several workers) is ended by that worker within a second. Either way the
    answer is 202 (the call is ending); with several workers it says which worker has the call."""
    ctx: GatewayContext = request.app[CONTEXT]
    refused = refusal(request, ctx.config)
    if refused is not None:
        return _secured(request, refused)
    call_id = request.match_info["call_id"]
    board = request.app.get(CALL_BOARD)
    bridge = ctx.calls.get(call_id)
    if bridge is not None:
        log.info("call ended from the console", call_id=call_id, carrier=bridge.carrier, remote=request.remote)
        bridge.cut(END_REASON)
        body: dict[str, Any] = {"call_id": call_id, "ending": True}
        if board is not None:
            body.update(worker=board.pid, answered_by=board.pid)
        return _json(request, body, status=202)
    if board is not None:
        others = await asyncio.to_thread(board.others)
        owner = worker_of(call_id, board.pid, others, time.time())
        if owner is not None:
            try:
                await asyncio.to_thread(board.request_end, owner, call_id)
            except OSError as exc:
                log.error("could not ask another worker to end a call from the console", call_id=call_id,
                          worker=owner, error=str(exc))
                return _json(request, {"error": "the call's worker could not be asked to end it"}, status=503)
            log.info("ending a call of another worker from the console", call_id=call_id, worker=owner,
                     remote=request.remote)
            return _json(request, {"call_id": call_id, "ending": True, "worker": owner, "answered_by": board.pid},
                         status=202)
        return _json(request, {"error": "no such call in progress on this gateway's workers"}, status=404)
    return _json(request, {"error": "no such call in progress on this worker"}, status=404)


async def _share(app: web.Application, board: CallBoard) -> None:
    """Every SHARE_INTERVAL_S: this worker's calls to the shared directory, and the end requests the
    other workers left for it carried out. While the console is off (it may be turned on or off by a
    configuration reload) nothing is shared."""
    shared = False
    failing = False
    listed: list[str] | None = None  # the call ids last shared
    while True:
        ctx: GatewayContext | None = app.get(CONTEXT)
        try:
            if ctx is not None and console_mode(ctx.config) != "off":
                calls = [call_view(bridge) for bridge in list(ctx.calls.values())]
                requests = await asyncio.to_thread(board.publish, calls)
                shared = True
                ids = sorted(call["call_id"] for call in calls)
                if ids != listed:
                    log.debug("calls shared with the other workers' console", pid=board.pid, calls=ids)
                    listed = ids
                for request in requests:
                    bridge = ctx.calls.get(request.call_id)
                    if bridge is None:
                        log.info("a call another worker was asked to end from the console had ended already",
                                 call_id=request.call_id, requested_by=request.by)
                        continue
                    log.info("call ended from the console", call_id=request.call_id, carrier=bridge.carrier,
                             requested_by=request.by, pid=board.pid)
                    bridge.cut(END_REASON)
            elif shared:
                await asyncio.to_thread(board.withdraw)
                shared, listed = False, None
        except Exception as exc:  # (a full disk, a directory removed under it: the calls go on regardless)
            if not failing:  # (once per episode: every second would drown the log)
                log.error("could not share this worker's calls with the console of the other workers",
                          directory=str(board.directory), error=f"{type(exc).__name__}: {exc}")
            failing = True
        else:
            if failing:
                log.info("sharing this worker's calls with the console works again", directory=str(board.directory))
            failing = False
        await asyncio.sleep(SHARE_INTERVAL_S)  # (the period of the sharing, not a wait for an event)


async def share_calls(app: web.Application) -> AsyncIterator[None]:
    """An aiohttp cleanup context: with several workers (the directory they share set), this worker
    shares its calls with the console of the others and takes their end requests, in one task it
    cancels when the application stops (its snapshot then removed). One worker: nothing at all."""
    directory = shared_dir()
    if directory is None:
        yield
        return
    board = CallBoard(directory)
    app[CALL_BOARD] = board
    task = asyncio.create_task(_share(app, board), name="console-share-calls")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        try:
            await asyncio.to_thread(board.withdraw)
        except OSError as exc:
            log.warning("could not remove this worker's call list for the console", error=str(exc))


def console_routes() -> list[web.RouteDef]:
    return [
        web.get("/console", console_page),
        web.get("/console/", console_slash),
        web.post("/console/login", login),
        web.post("/console/logout", logout),
        web.get("/console/static/{name}", static_file),
        web.get("/console/api/state", api_state),
        web.get("/console/api/calls", api_calls),
        web.post("/console/api/calls/{call_id}/end", api_end_call),
    ]

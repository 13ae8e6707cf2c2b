"""A local Voice Live-compatible realtime server.

It speaks the Voice Live WebSocket protocol closely enough for the gateway, the real SDK and
plain WebSocket clients: session set-up, input audio with an energy VAD (or manual turns with
``turn_detection: null``), responses that stream recorded speech (gateway/assets) faster than real
time, ``pre_generated_assistant_message`` responses, scripted function calls, barge-in,
cancellation, truncation and the protocol's error paths. It is the gateway's backend when no
Azure endpoint is configured, the counterpart of the socket-level tests, and the demo's "model".

It is as strict as the Voice Live documentation (the 2026-07-15 API reference and SDK 1.3.1), so
that a client passing against it does not rely on leniency the service may not have:

* the upgrade needs a known ``api-version`` (:data:`API_VERSIONS`; ``v1`` speaks another wire
  shape) and ``model`` or ``agent-name`` + ``agent-project-name``, else HTTP 400;
* ``session.update`` is checked field by field (unknown keys, per-type ``turn_detection`` keys,
  noise reduction and transcription models, metadata, temperature, token limit, agent
  ``instructions``, format changes after audio); any fault gets one ``error`` naming the field in
  ``param``, the session stays unchanged and no ``session.updated`` is sent;
* ``output_audio_buffer.clear`` is answered only on avatar sessions (an ``error`` otherwise, see
  :attr:`SimulatorSettings.output_buffer_clear`);
* ``response.function_call_arguments.done`` carries no ``name`` (the function's name is on the
  ``function_call`` item), unless :attr:`SimulatorSettings.function_call_done_name` is set;
* agent sessions take no ``instructions`` in ``response.create``.

The rules live in :mod:`gateway.simulator.protocol` (sans-I/O: events and times in, events out)
and :mod:`gateway.simulator.validation`; this module is the I/O around them: the HTTP handshake,
one task per socket that feeds the protocol, the task that runs a response's steps when they are
due, session expiry and closing. Run it alone with ``gateway simulator``
(:mod:`gateway.simulator.cli`); embed it with :func:`start_simulator`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import math
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from gateway.log import get_logger, register_secret
from gateway.simulator.cli import parse_tool_call, register_cli, settings_from_args
from gateway.simulator.limits import ConnectionLimit
from gateway.simulator.protocol import Event, Response, SimProtocol, SpeechRequest
from gateway.simulator.settings import SimulatorSettings, ToolCall
from gateway.simulator.validation import Invalid as _Invalid
from gateway.simulator.validation import merge_session as _merge_session
from gateway.simulator.voice import Speech, clip_speech, text_speech

# The names tests and callers import from here: the command line now lives in cli.py and the
# session checks in validation.py (``_Invalid`` and ``_merge_session`` are their old names).
__all__ = [
    "API_VERSIONS",
    "CLOSE_TIMEOUT_S",
    "MAX_CLIENT_MESSAGE",
    "RunningSimulator",
    "SimSession",
    "SimulatorSettings",
    "SimulatorState",
    "ToolCall",
    "_Invalid",
    "_merge_session",
    "create_app",
    "parse_tool_call",
    "register_cli",
    "settings_from_args",
    "start_simulator",
]


def _log(**fields: Any) -> Any:
    # Resolved at each use, never at import: a logger bound before gateway.log.configure() runs
    # would keep the default configuration (and skip secret scrubbing).
    return get_logger("simulator", **fields)


MAX_CLIENT_MESSAGE = 24 * 1024 * 1024  # a 15 MiB append is 20 MiB of base64, plus JSON
CLOSE_TIMEOUT_S = 5.0

API_VERSIONS = (
    "2025-05-01-preview",
    "2025-10-01",
    "2026-01-01-preview",
    "2026-04-10",
    "2026-06-01-preview",
    "2026-07-15",
    "2026-07-31-preview",
)
"""The api-versions the simulator accepts: the dated Voice Live versions, all with the same
(flat session, ``response.audio.*``) wire shape. The ``v1`` label, which uses the OpenAI GA shape,
is refused like any other unknown version."""


def _load_speech(request: SpeechRequest, assets: Path) -> Speech:
    """What a spoken response says (blocking: reads and converts audio files)."""
    if request.text is not None:
        return text_speech(request.text, request.fmt, assets)
    assert request.clip is not None
    return clip_speech(request.clip, request.fmt, assets)


class SimSession:
    """One simulated Voice Live session: one WebSocket around one :class:`SimProtocol`.

    Every step of the protocol (a client event, a response's next step) runs under one lock
    together with the sending of the events it returns, so the events go out in the order the
    protocol produced them and the response task is never stopped half-way through a step."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        settings: SimulatorSettings,
        query: dict[str, str],
        auth: str,
        index: int,
    ) -> None:
        self.id = "sess_" + secrets.token_hex(10)
        self.index = index
        self.query = query
        self.auth = auth
        self.protocol = SimProtocol(settings, query, session_id=self.id, index=index, wall_time=time.time())
        self.sent: list[dict[str, Any]] = []
        self.closed = asyncio.Event()
        self.close_code: int | None = None

        self._ws = ws
        self._settings = settings
        self._log = _log(session=self.id)
        self._loop = asyncio.get_running_loop()
        self._lock = asyncio.Lock()
        self._requested_close: int | None = None
        self._close_reason = ""
        self._runner: asyncio.Task[Any] | None = None
        self._in_receive = False
        self._wakeup_sent = False
        self._response_task: asyncio.Task[None] | None = None
        self._pumped: Response | None = None  # the protocol's response that _response_task runs
        lifetime = settings.session_lifetime_s
        self._deadline = None if lifetime is None else self._loop.time() + lifetime

    # --- what the protocol keeps, for inspection ----------------------------------------------

    @property
    def session(self) -> dict[str, Any]:
        """The session object, as ``session.updated`` last described it."""
        return self.protocol.session

    @property
    def items(self) -> dict[str, dict[str, Any]]:
        return self.protocol.items

    @property
    def received(self) -> list[dict[str, Any]]:
        return self.protocol.received

    @property
    def appended(self) -> list[str]:
        return self.protocol.appended

    @property
    def truncations(self) -> list[dict[str, Any]]:
        return self.protocol.truncations

    @property
    def function_calls(self) -> list[dict[str, Any]]:
        return self.protocol.function_calls

    @property
    def function_call_outputs(self) -> list[dict[str, Any]]:
        return self.protocol.function_call_outputs

    @property
    def spoken(self) -> list[dict[str, Any]]:
        return self.protocol.spoken

    @property
    def items_audio_bytes(self) -> dict[str, int]:
        return self.protocol.items_audio_bytes

    # --- sending, closing -----------------------------------------------------------------------

    async def _write(self, events: list[Event]) -> None:
        """Send events the protocol produced (call with the lock held)."""
        for ev in events:
            if self._settings.record:
                self.sent.append(ev)
            if self._ws.closed:
                continue
            try:
                await self._ws.send_str(json.dumps(ev, separators=(",", ":")))
            except ConnectionError:
                self._log.debug("simulator send on a closing socket", type=ev.get("type"))

    async def send_event(self, ev: dict[str, Any]) -> None:
        """Send one server event out of turn (an ``event_id`` is added if missing)."""
        async with self._lock:
            await self._write([self.protocol.stamp(ev)])

    async def close(self, code: int = 1011, reason: str = "") -> None:
        """Close the socket from the server side (fault injection) and wait until the session ends.

        The session's own task performs the closing handshake, so the client gets the close frame
        with ``code`` and has the time to answer it, as with a real server."""
        self._request_close(code, reason)
        await self.closed.wait()

    def _request_close(self, code: int, reason: str = "") -> None:
        if self._requested_close is not None or self.closed.is_set():
            return
        self._requested_close = code
        self._close_reason = reason
        if self._runner is not None and self._in_receive and self._runner is not asyncio.current_task():
            # Wake the session's task parked in receive(); it closes the socket itself.
            self._wakeup_sent = True
            self._runner.cancel()

    # --- the socket's task ------------------------------------------------------------------------

    async def run(self) -> None:
        self._runner = asyncio.current_task()
        try:
            async with self._lock:
                await self._write(self.protocol.open())
            while self._requested_close is None:
                timeout = None if self._deadline is None else max(0.001, self._deadline - self._loop.time())
                self._in_receive = True
                try:
                    msg = await self._ws.receive(timeout=timeout)
                except TimeoutError:
                    async with self._lock:
                        await self._write(self.protocol.expire())
                    self._request_close(1000, "session expired")
                    break
                except asyncio.CancelledError:
                    runner = self._runner
                    if self._wakeup_sent and runner is not None and runner.cancelling() == 1:
                        runner.uncancel()  # only our own wake-up: go and close
                        break
                    raise
                finally:
                    self._in_receive = False
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await self._on_message(msg.data)
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
        finally:
            try:
                await self._stop_response_task()
                if not self._ws.closed:
                    code = self._requested_close if self._requested_close is not None else 1000
                    with contextlib.suppress(ConnectionError):
                        await self._ws.close(code=code, message=self._close_reason.encode()[:120])
            finally:
                self.close_code = (
                    self._requested_close if self._requested_close is not None else self._ws.close_code
                )
                self.closed.set()
                self.protocol.closed(self.close_code)
                self._log.info("simulator session closed", code=self.close_code)

    async def _on_message(self, data: str | bytes) -> None:
        try:
            ev: object = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            async with self._lock:
                await self._write(self.protocol.invalid_json(str(exc)))
            return
        async with self._lock:
            try:
                events = self.protocol.receive(ev, self._loop.time())
            except Exception:
                kind = ev.get("type") if isinstance(ev, dict) else None
                self._log.exception("simulator failed on a client event", type=kind)
                events = self.protocol.server_error(ev)
            self._follow_response()
            await self._write(events)

    # --- the response's task ----------------------------------------------------------------------

    def _follow_response(self) -> None:
        """After a client event (lock held): stop the task of a response the protocol has ended
        (the task is asleep, loading audio or waiting for the lock: never half-way through a
        step) and start one for a response the protocol has started."""
        resp = self.protocol.response
        if resp is self._pumped:
            return
        task = self._response_task
        if task is not None and not task.done():
            task.cancel()
        self._pumped = resp
        self._response_task = None
        if resp is not None:
            self._response_task = asyncio.create_task(self._run_response(resp), name=f"simulator-{resp.id}")

    async def _run_response(self, resp: Response) -> None:
        """Run the response's steps when they are due: load its audio first if it is spoken, then
        sleep until :attr:`SimProtocol.wakeup`, run :meth:`SimProtocol.advance`, send, again."""
        protocol = self.protocol
        try:
            request = protocol.speech_wanted
            if request is not None and request.response_id == resp.id:
                speech = await asyncio.to_thread(_load_speech, request, self._settings.assets)
                async with self._lock:
                    if protocol.response is resp:
                        await self._write(protocol.speech_ready(speech, self._loop.time()))
            while protocol.response is resp and (wake := protocol.wakeup) is not None:
                await asyncio.sleep(max(0.0, wake - self._loop.time()))  # also lets client events in
                async with self._lock:
                    if protocol.response is resp:
                        await self._write(protocol.advance(self._loop.time()))
        except Exception:
            self._log.exception("simulator response failed", response_id=resp.id)
            async with self._lock:
                if protocol.response is resp:
                    await self._write(protocol.fail_response())

    async def _stop_response_task(self) -> None:
        task = self._response_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])


# --- state, app, runner ----------------------------------------------------------------------


class SimulatorState:
    """Every session the server has had (or only the open ones when ``record`` is off)."""

    def __init__(self, max_connections_per_minute: int | None = None) -> None:
        self.sessions: list[SimSession] = []
        self.connections = ConnectionLimit(max_connections_per_minute)  # upgrades past auth and query checks
        self._opened = 0
        self._changed = asyncio.Event()

    def _signal(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _next_index(self) -> int:
        self._opened += 1
        return self._opened

    @property
    def active(self) -> list[SimSession]:
        return [s for s in self.sessions if not s.closed.is_set()]

    async def wait_for_session(self, index: int = 0) -> SimSession:
        """The ``index``-th session (0: the first), once it exists."""
        while len(self.sessions) <= index:
            await self._changed.wait()
        return self.sessions[index]

    async def wait_closed(self, index: int = 0) -> SimSession:
        """The ``index``-th session, once it has closed."""
        session = await self.wait_for_session(index)
        await session.closed.wait()
        return session

    async def close_all(self, code: int = 1001, reason: str = "server shutting down") -> None:
        sessions = self.active
        if sessions:
            await asyncio.gather(*(s.close(code, reason) for s in sessions), return_exceptions=True)


STATE_KEY = web.AppKey("simulator_state", SimulatorState)
SETTINGS_KEY = web.AppKey("simulator_settings", SimulatorSettings)


def _presented_credentials(request: web.Request) -> tuple[str | None, str | None]:
    key = request.headers.get("api-key") or request.query.get("api-key")
    authz = request.headers.get("Authorization") or request.query.get("Authorization") or ""
    scheme, _, token = authz.partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return key, bearer


def _json_error(cls: type[web.HTTPException], code: str, message: str) -> web.HTTPException:
    return cls(
        text=json.dumps({"error": {"code": code, "message": message}}), content_type="application/json"
    )


def _check_query(query: Mapping[str, str]) -> None:
    """Raise the HTTP 400 (before the upgrade) for a realtime URL the service would refuse: no or
    an unknown ``api-version``, neither ``model`` nor ``agent-name``, an agent without a project."""
    version = query.get("api-version")
    if not version:
        raise _json_error(
            web.HTTPBadRequest, "missing_api_version", "The 'api-version' query parameter is required."
        )
    if version not in API_VERSIONS:
        raise _json_error(
            web.HTTPBadRequest,
            "unsupported_api_version",
            f"Unsupported api-version '{version}'. Supported versions: " + ", ".join(API_VERSIONS) + ".",
        )
    if not query.get("model") and not query.get("agent-name"):
        raise _json_error(
            web.HTTPBadRequest,
            "missing_model",
            "The 'model' query parameter (or 'agent-name' and 'agent-project-name') is required.",
        )
    if query.get("agent-name") and not query.get("agent-project-name"):
        raise _json_error(
            web.HTTPBadRequest,
            "missing_agent_project_name",
            "'agent-project-name' is required with 'agent-name'.",
        )


async def _realtime(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS_KEY]
    state = request.app[STATE_KEY]
    key, bearer = _presented_credentials(request)
    auth = "api-key" if key else "bearer" if bearer else "none"
    if settings.api_key or settings.bearer_token:
        ok_key = bool(
            settings.api_key and key and hmac.compare_digest(key.encode(), settings.api_key.encode())
        )
        ok_bearer = bool(
            settings.bearer_token
            and bearer
            and hmac.compare_digest(bearer.encode(), settings.bearer_token.encode())
        )
        if not (ok_key or ok_bearer):
            _log().info("simulator rejected a connection", reason="unauthorized", presented=auth)
            raise _json_error(
                web.HTTPUnauthorized,
                "401",
                "Access denied due to a missing or invalid api-key or bearer token.",
            )
        auth = "api-key" if ok_key else "bearer"
    query = dict(request.query)
    _check_query(query)
    wait_s = state.connections.attempt(asyncio.get_running_loop().time())
    if wait_s > 0:
        seconds = math.ceil(wait_s)
        _log().info("simulator rejected a connection", reason="rate limit", retry_after_s=seconds)
        raise web.HTTPTooManyRequests(
            headers={"Retry-After": str(seconds)}, content_type="application/json",
            text=json.dumps({"error": {"code": "429", "message": "Rate limit is exceeded: too many new "
                                       f"connections per minute. Try again in {seconds} seconds."}}))
    if settings.setup_delay_ms:
        await asyncio.sleep(settings.setup_delay_ms / 1000)  # the set-up time of a service far away
    ws = web.WebSocketResponse(compress=False, max_msg_size=MAX_CLIENT_MESSAGE, timeout=CLOSE_TIMEOUT_S)
    if not ws.can_prepare(request).ok:
        raise _json_error(
            web.HTTPBadRequest, "websocket_required", "This endpoint only accepts WebSocket upgrades."
        )
    await ws.prepare(request)
    session = SimSession(ws, settings, query, auth, state._next_index())
    state.sessions.append(session)
    state._signal()
    _log().info(
        "simulator session opened",
        session=session.id,
        model=query.get("model"),
        agent=query.get("agent-name"),
        auth=auth,
        path=request.path,
    )
    try:
        await session.run()
    finally:
        if not settings.record:
            state.sessions.remove(session)
        state._signal()
    return ws


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "sessions": len(request.app[STATE_KEY].active)})


async def _stats(request: web.Request) -> web.Response:
    """``GET /stats``: the sessions' upgrades so far: accepted, refused (429), the most accepted in any
    60-second window, and the limit (None: none)."""
    state = request.app[STATE_KEY]
    counts = state.connections.counts
    return web.json_response({
        "connections": {"limit_per_minute": counts.limit, "accepted": counts.accepted, "refused": counts.refused,
                        "most_in_any_minute": counts.most_in_window,
                        "in_last_minute": state.connections.in_window(asyncio.get_running_loop().time())},
        "sessions": len(state.active)})


async def _on_shutdown(app: web.Application) -> None:
    await app[STATE_KEY].close_all()


def create_app(settings: SimulatorSettings | None = None) -> web.Application:
    """The simulator as an aiohttp application: ``GET [prefix]/voice-live/realtime`` and ``/healthz``."""
    settings = settings or SimulatorSettings()
    register_secret(settings.api_key)
    register_secret(settings.bearer_token)
    app = web.Application()
    app[SETTINGS_KEY] = settings
    app[STATE_KEY] = SimulatorState(settings.max_connections_per_minute)
    app.router.add_get("/voice-live/realtime", _realtime)
    app.router.add_get(r"/{prefix:.+}/voice-live/realtime", _realtime)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/stats", _stats)
    app.on_shutdown.append(_on_shutdown)
    return app


@dataclass
class RunningSimulator:
    """A simulator listening on a TCP port. ``endpoint`` is what a Voice Live client is given."""

    runner: web.AppRunner
    host: str
    port: int
    state: SimulatorState = field(repr=False)
    _closed: bool = field(default=False, init=False, repr=False)

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The realtime WebSocket URL, without query parameters."""
        return "ws" + self.endpoint[4:] + "/voice-live/realtime"

    async def close(self) -> None:
        """Close every session (code 1001), then stop listening. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await self.state.close_all()
        await self.runner.cleanup()

    async def __aenter__(self) -> RunningSimulator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def start_simulator(
    settings: SimulatorSettings | None = None, host: str = "127.0.0.1", port: int = 0
) -> RunningSimulator:
    """Start the simulator on ``host``:``port`` (0: a free port)."""
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=CLOSE_TIMEOUT_S)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1] if runner.addresses else port
    return RunningSimulator(runner, host, int(bound), app[STATE_KEY])

"""The aiohttp application: routes, start-up and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import secrets
import signal
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
from aiohttp import web

from gateway import __version__, metrics
from gateway.auth import CallTokens
from gateway.bridge import CONTEXT, GatewayContext
from gateway.call import Observer
from gateway.carriers.base import Carrier
from gateway.carriers.registry import default_carriers
from gateway.carriers.settings import carrier_settings
from gateway.config import SIMULATOR as SIMULATOR_ENDPOINT
from gateway.config import GatewayConfig, config_notes
from gateway.console.auth import LOGIN_THROTTLE, LoginThrottle, console_mode
from gateway.console.routes import console_routes, share_calls
from gateway.failures import FailedCalls
from gateway.log import get_logger, register_secret
from gateway.outbound import CARRIERS as OUTBOUND_CARRIERS
from gateway.outbound import routes as outbound_routes
from gateway.recording import RecordingWriter
from gateway.reload import WATCH_INTERVAL_S, ConfigReloader
from gateway.tools import ToolRunner, http_tool_runner
from gateway.tracing import Tracing
from gateway.voicelive.pool import ResourcePool, build_budget
from gateway.webhooks import RecordDelivery
from gateway.workers import worker_count

REDIS_URL_ENV = "GATEWAY_REDIS_URL"  # shared Voice Live connection budgets (unset: each worker its share)

log = get_logger("gateway.app")

SIMULATOR: web.AppKey[Any] = web.AppKey("embedded_simulator", object)
RELOADER: web.AppKey[ConfigReloader] = web.AppKey("config_reloader", ConfigReloader)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": __version__})


async def readyz(request: web.Request) -> web.Response:
    """Ready while new calls are taken: 503 while draining or at ``max_calls``."""
    ctx = request.app[CONTEXT]
    refusal = ctx.refusal()
    body = {"status": refusal or "ready", "active_calls": len(ctx.calls)}
    return web.json_response(body, status=503 if refusal else 200)


async def metrics_route(request: web.Request) -> web.Response:
    """Prometheus exposition of the whole gateway (every worker's samples, with several)."""
    ctx = request.app.get(CONTEXT)
    if ctx is not None:
        ctx.pool.refresh_gauges()  # (budgets free up with time, not only when a connect is taken)
    body, content_type = await asyncio.get_running_loop().run_in_executor(
        None, metrics.REGISTRY.exposition, request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type})


def _announce_security(config: GatewayConfig, carriers: Sequence[Carrier]) -> None:
    if config.gateway.insecure_dev_mode:
        log.warning("INSECURE DEVELOPMENT MODE: carrier requests that cannot be authenticated are accepted; "
                    "never run a public gateway like this")
    sections = {model.section: model.of(config) for model in carrier_settings()}
    for carrier in carriers:
        # a carrier with no credential at all is one this gateway does not take calls from: its notes
        # (its requests are refused) are information; with a credential set, they are warnings
        section = sections.get(carrier.name)
        say = log.info if section is not None and not section.has_credential else log.warning
        for note in carrier.notes(config):
            say(note)
    console = console_mode(config)
    if console == "open":
        log.warning("the console (/console) is open to anyone who reaches the gateway, without a login "
                    "(insecure development mode); set GATEWAY_CONSOLE_TOKEN to require one")
    elif console == "token":
        log.info("the console is on: /console (operators log in with GATEWAY_CONSOLE_TOKEN)")
    if config.gateway.signing_key is None:
        log.warning("GATEWAY_SIGNING_KEY is not set: call tokens use a random key of this process, "
                    "so every replica must share one; set it when running more than one")


def create_app(
    config: GatewayConfig,
    *,
    voicelive_endpoint: str | None = None,
    observer_factory: Callable[[str], Observer] | None = None,
    simulator_settings: Any = None,
    tool_runner: ToolRunner | None = None,
    carriers: Sequence[Carrier] | None = None,
    record_outcomes: Callable[[str, str], None] | None = None,
    tracing: Tracing | None = None,
    reload_from: str | None = None,
    reload_interval_s: float = WATCH_INTERVAL_S,
) -> web.Application:
    """Build the gateway application from its carriers (by default every carrier of the registry).

    ``voicelive_endpoint`` overrides the configured endpoint. With neither, the built-in Voice
    Live simulator is started on a free loopback port when the application starts.
    ``record_outcomes(record_id, outcome)`` hears how each post-call record's delivery attempts end.
    ``tracing``: where the calls' traces go (by default, what the ``OTEL_*`` environment asks for, if
    anything); the application flushes and shuts it down when it stops.
    ``reload_from``: the configuration file to reload from when it changes or when asked
    (``app[RELOADER].request()``, which ``serve`` calls on SIGHUP), looking at the file every
    ``reload_interval_s``; see :mod:`gateway.reload`.
    """
    carriers = list(carriers) if carriers is not None else default_carriers()
    for secret in config.secrets():
        register_secret(secret)
    app = web.Application()
    for carrier in carriers:
        carrier.install(app, config)
        metrics.ACTIVE_CALLS.declare(carrier.name)  # 0 calls in progress from the first scrape on

    async def start_backend(app: web.Application) -> Any:
        simulator = None
        resources = config.voicelive.resource_list()
        simulated = None
        if not voicelive_endpoint and any(r.endpoint == SIMULATOR_ENDPOINT for r in resources):
            from gateway.simulator import SimulatorSettings, start_simulator

            # a long-running gateway must not keep every simulated event in memory
            simulator = await start_simulator(simulator_settings or SimulatorSettings(record=False))
            simulated = simulator.endpoint
            app[SIMULATOR] = simulator
            log.warning("using the built-in Voice Live simulator: AZURE_VOICELIVE_ENDPOINT is not set"
                        if config.voicelive.endpoint is None and config.voicelive.resources is None
                        else "using the built-in Voice Live simulator", simulator=simulated)
        endpoints = {r.name: voicelive_endpoint or (simulated if r.endpoint == SIMULATOR_ENDPOINT else r.endpoint)
                     for r in resources}
        workers = worker_count()
        pool = ResourcePool.build(config.voicelive, endpoints=endpoints, workers=workers,  # type: ignore[arg-type]
                                  budget=build_budget(config.voicelive, workers, os.environ.get(REDIS_URL_ENV)))
        recording = None
        if config.recording.directory:
            recording = RecordingWriter(config.recording.directory, config.recording.redact_audio)
            log.info("recording calls", directory=config.recording.directory,
                     redact_audio=config.recording.redact_audio)
        key = config.gateway.signing_key
        tokens = CallTokens(key.get_secret_value().encode() if key else secrets.token_bytes(32))
        http = aiohttp.ClientSession()  # shared by the calls' tools
        records = None
        if config.records.spool_directory and config.records.signing_secret is not None and (
                config.records.webhook or any(p.record.webhook for p in config.profiles.values())):
            records = RecordDelivery(config.records, on_outcome=record_outcomes)
            records.start()  # what an earlier run left in the spool goes out first
            log.info("post-call records on", spool=config.records.spool_directory)
        failed_calls = FailedCalls.from_environment(os.environ.get(REDIS_URL_ENV) or None)
        traces = tracing if tracing is not None else Tracing.from_environment()
        app[CONTEXT] = GatewayContext(
            config, pool, tokens, observer_factory, recording, tool_runner or http_tool_runner(http),
            records=records, failed_calls=failed_calls, tracing=traces)
        for resource in pool.resources:
            if resource.connector.endpoint != simulated:
                log.info("Voice Live backend", resource=resource.name, endpoint=resource.connector.endpoint,
                         auth=resource.connector.auth_kind, connections_per_minute=resource.limit,
                         worker_share=resource.share)
        if os.environ.get(REDIS_URL_ENV):
            log.info("Voice Live connection budgets are shared through Redis")
        if not config.gateway.public_url:
            log.warning("GATEWAY_PUBLIC_URL is not set: carrier URLs are built from each request's Host header")
        _announce_security(config, carriers)
        for note in config_notes(config):
            log.warning(note.removeprefix("note: "))
        # (named apart from the calls' own tasks, "phone-..." and "voicelive-...")
        keepalive = asyncio.create_task(pool.keepalive.run(), name="sessions-keepalive")
        try:
            yield
        finally:
            keepalive.cancel()
            await asyncio.gather(keepalive, return_exceptions=True)
            await app[CONTEXT].warm.close()
            await failed_calls.close()
            if records is not None:  # (the calls have ended: their records are spooled or on their way)
                await records.close()
            await http.close()
            await pool.close()
            if recording is not None:
                await asyncio.get_running_loop().run_in_executor(None, recording.close)
            if simulator is not None:
                await simulator.close()
            if traces is not None:  # (the calls have ended: their spans are all finished)
                await asyncio.get_running_loop().run_in_executor(None, traces.shutdown)

    async def watch_loop_lag(app: web.Application) -> Any:
        async def watch() -> None:
            loop = asyncio.get_running_loop()
            while True:
                due = loop.time() + 0.1
                await asyncio.sleep(0.1)  # the measurement: how late this timer fires
                metrics.LOOP_LAG.observe(max(0.0, loop.time() - due))

        task = asyncio.create_task(watch(), name="loop-lag")
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def end_calls(app: web.Application) -> None:
        ctx = app.get(CONTEXT)
        if ctx is None:
            return
        for bridge in list(ctx.calls.values()):
            with contextlib.suppress(Exception):
                await bridge.phone.close(code=1001, message=b"gateway shutting down")

    app.cleanup_ctx.append(start_backend)
    for carrier in carriers:
        app.cleanup_ctx.append(carrier.running)
        app.add_routes(carrier.routes())
    app.cleanup_ctx.append(watch_loop_lag)
    if reload_from is not None:
        async def watch_config(app: web.Application) -> Any:
            ctx = app[CONTEXT]
            reloader = ConfigReloader(reload_from, lambda: ctx.config, ctx.reconfigure, interval_s=reload_interval_s)
            app[RELOADER] = reloader
            task = asyncio.create_task(reloader.run(), name="config-reload")
            try:
                yield
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

        app.cleanup_ctx.append(watch_config)
    app.on_shutdown.append(end_calls)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_route)
    app[OUTBOUND_CARRIERS] = {carrier.name: carrier for carrier in carriers}
    app.add_routes(outbound_routes())
    app[LOGIN_THROTTLE] = LoginThrottle()
    app.add_routes(console_routes())  # (off, they answer 404: see gateway.console.auth)
    app.cleanup_ctx.append(share_calls)  # (several workers: each shares its calls with the console of all)
    return app


CUT_GRACE_S = 5.0  # after a drain timeout: how long the cut calls get to hang up through their carrier


async def drain(app: web.Application, timeout_s: float) -> bool:
    """Take no new calls and let the active ones finish; True when they all did within the timeout."""
    ctx = app[CONTEXT]
    ctx.draining = True
    log.info("draining: no new calls; waiting for the active ones to end", active_calls=len(ctx.calls),
             timeout_s=timeout_s)
    try:
        await asyncio.wait_for(ctx.wait_idle(), timeout_s)
    except TimeoutError:
        log.warning("drain timeout: ending the calls still in progress", active_calls=len(ctx.calls))
        for bridge in list(ctx.calls.values()):
            bridge.cut("drain_timeout")
        with contextlib.suppress(TimeoutError):  # each closes its legs and hangs up through its carrier
            await asyncio.wait_for(ctx.wait_idle(), CUT_GRACE_S)
        return False
    log.info("drained: every call has ended")
    return True


def _reload_requested(app: web.Application) -> None:
    reloader = app.get(RELOADER)
    if reloader is None:
        log.warning("SIGHUP: no configuration file to reload from (the configuration did not come from a file)")
        return
    reloader.request("SIGHUP")


async def serve(config: GatewayConfig, host: str, port: int, reuse_port: bool = False,
                reload_from: str | None = None) -> None:
    """Run the gateway until SIGINT or SIGTERM, then drain: calls in progress run to their end (up
    to ``gateway.drain_timeout_s``). With ``reuse_port``, several processes share the port. With
    ``reload_from`` (the configuration's file), SIGHUP and changes of the file reload it."""
    from gateway.server_limits import GuardedAppRunner  # slow clients get deadlines, not connections

    app = create_app(config, reload_from=reload_from)
    runner = GuardedAppRunner(app, access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before listening: a SIGTERM at start-up drains too
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload_requested, app)
    try:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
        await site.start()
        # Everything loaded so far (the SDKs, pydantic, numpy...) lives as long as the process: keep it
        # out of the garbage collector's full passes, which otherwise pause every call for tens of ms.
        gc.collect()
        gc.freeze()
        log.info("gateway listening", host=host, port=port, config=config.source, version=__version__,
                 pid=os.getpid())
        await stop.wait()
        log.info("shutting down")
        await drain(app, app[CONTEXT].config.gateway.drain_timeout_s)  # (as reloaded, if it was)
    finally:
        await runner.cleanup()

"""The aiohttp application: routes, start-up and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from gateway import __version__
from gateway.bridge import CONTEXT, GatewayContext, twilio_media
from gateway.call import Observer
from gateway.carriers.twilio import connect_twiml, stream_url
from gateway.config import GatewayConfig
from gateway.log import get_logger, register_secret
from gateway.recording import RecordingWriter
from gateway.tools import ToolRunner, http_tool_runner
from gateway.voicelive.client import VoiceLiveConnector

log = get_logger("gateway.app")

SIMULATOR: web.AppKey[Any] = web.AppKey("embedded_simulator", object)


def _public_base(request: web.Request, config: GatewayConfig) -> str:
    if config.gateway.public_url:
        return config.gateway.public_url
    proto = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0].strip()
    return f"{proto}://{request.host}"


async def twilio_voice(request: web.Request) -> web.Response:
    """``POST /twilio/voice``: Twilio's voice webhook. Answers with TwiML that opens the media stream."""
    ctx = request.app[CONTEXT]
    form = await request.post()
    to = str(form.get("To") or "")
    profile_name, _ = ctx.config.route(to or None)
    media_url = stream_url(_public_base(request, ctx.config))
    log.info("incoming Twilio call", call_id=str(form.get("CallSid") or ""), profile=profile_name)
    twiml = connect_twiml(media_url, {"profile": profile_name, "to": to})
    return web.Response(text=twiml, content_type="text/xml")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": __version__})


async def readyz(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return web.json_response({"status": "ready", "active_calls": len(ctx.calls)})


def create_app(
    config: GatewayConfig,
    *,
    voicelive_endpoint: str | None = None,
    observer_factory: Callable[[str], Observer] | None = None,
    simulator_settings: Any = None,
    tool_runner: ToolRunner | None = None,
) -> web.Application:
    """Build the gateway application.

    ``voicelive_endpoint`` overrides the configured endpoint. With neither, the built-in Voice
    Live simulator is started on a free loopback port when the application starts.
    """
    for secret in config.secrets():
        register_secret(secret)
    app = web.Application()
    endpoint = voicelive_endpoint or config.voicelive.endpoint

    async def start_backend(app: web.Application) -> Any:
        nonlocal endpoint
        simulator = None
        if not endpoint:
            from gateway.simulator import SimulatorSettings, start_simulator

            # a long-running gateway must not keep every simulated event in memory
            simulator = await start_simulator(simulator_settings or SimulatorSettings(record=False))
            endpoint = simulator.endpoint
            app[SIMULATOR] = simulator
            log.warning("using the built-in Voice Live simulator: AZURE_VOICELIVE_ENDPOINT is not set",
                        simulator=endpoint)
        connector = VoiceLiveConnector(config.voicelive, endpoint=endpoint)
        recording = None
        if config.recording.directory:
            recording = RecordingWriter(config.recording.directory, config.recording.redact_audio)
            log.info("recording calls", directory=config.recording.directory,
                     redact_audio=config.recording.redact_audio)
        http = aiohttp.ClientSession()  # shared by the calls' tools
        app[CONTEXT] = GatewayContext(config, connector, observer_factory, recording,
                                      tool_runner or http_tool_runner(http))
        if simulator is None:
            log.info("Voice Live backend", endpoint=endpoint, auth=connector.auth_kind)
        if not config.gateway.public_url:
            log.warning("GATEWAY_PUBLIC_URL is not set: stream URLs are built from each webhook's Host header")
        try:
            yield
        finally:
            await http.close()
            await connector.close()
            if recording is not None:
                await asyncio.get_running_loop().run_in_executor(None, recording.close)
            if simulator is not None:
                await simulator.close()

    async def end_calls(app: web.Application) -> None:
        ctx = app.get(CONTEXT)
        if ctx is None:
            return
        for bridge in list(ctx.calls.values()):
            with contextlib.suppress(Exception):
                await bridge.phone.close(code=1001, message=b"gateway shutting down")

    app.cleanup_ctx.append(start_backend)
    app.on_shutdown.append(end_calls)
    app.router.add_post("/twilio/voice", twilio_voice)
    app.router.add_get("/twilio/media", twilio_media)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def serve(config: GatewayConfig, host: str, port: int) -> None:
    """Run the gateway until SIGINT or SIGTERM."""
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("gateway listening", host=host, port=port, config=config.source, version=__version__)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()

"""Fixtures the socket tests share: a running Voice Live simulator, the gateway's log lines as JSON,
ACS signing keys on a local JWKS endpoint, and clients that open a connection per request. The
plain helpers they are built on (serving an app on 127.0.0.1, Twilio-signed requests, a gateway
process) are in loopback.py and served.py."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from gateway import log
from gateway.simulator import RunningSimulator, SimulatorSettings, start_simulator
from tests.sockets.loopback import AcsKeys, LogCapture, serve
from tests.sockets.served import use_separate_connections


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    """The Voice Live simulator on a loopback port, speaking eight times faster than real time; closed
    after the test."""
    simulator = await start_simulator(SimulatorSettings(audio_speed=8.0))
    try:
        yield simulator
    finally:
        await simulator.close()


@contextlib.contextmanager
def _json_logs(level: str = "info") -> Iterator[io.StringIO]:
    buf = io.StringIO()
    log.configure(level=level, json_output=True, stream=buf)
    try:
        yield buf
    finally:
        log.configure(level="info")


@pytest.fixture
def log_capture() -> LogCapture:
    """``with log_capture("debug") as buf:`` the gateway logs JSON lines at that level into ``buf``
    (a fresh one each time) until the block ends, then logs as by default again."""
    return _json_logs


@pytest.fixture
async def acs_keys() -> AsyncIterator[AcsKeys]:
    """A new RSA signing key, published as ACS publishes its keys, on a JWKS endpoint on 127.0.0.1."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = "test-key-1"
    jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    jwk.update(kid=kid, use="sig", alg="RS256")

    async def jwks(request: web.Request) -> web.Response:
        return web.json_response({"keys": [jwk]})

    app = web.Application()
    app.router.add_get("/calling/keys", jwks)
    runner, base = await serve(app)
    try:
        yield AcsKeys(private, kid, f"{base}/calling/keys")
    finally:
        await runner.cleanup()


@pytest.fixture
def separate_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every aiohttp session in the test opens a connection per request (see served.py)."""
    use_separate_connections(monkeypatch)

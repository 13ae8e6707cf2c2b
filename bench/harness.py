"""What the pre-warm and burst benchmarks share: the processes they start (the gateway, the Voice Live
stand-in, a Redis), and Twilio's HTTP side of a call (the voice webhook, the ``<Connect action>``),
signed the way Twilio signs it.

The stand-in is ``gateway simulator``: a separate process, the same one the gateway's users run, with
``--setup-delay-ms`` (a service far away) and ``--max-connections-per-minute`` (Voice Live's 429 beyond
a resource's new connections per minute); it knows nothing of the gateway's own budget and counts
every upgrade it decided (``GET /stats``).
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp

from gateway.carriers.twilio.phone import new_sid, parse_twiml, twilio_signature

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
REDIS_SERVER = "/usr/bin/redis-server"
GREETING = "Hello, thanks for calling. How can I help you today?"
_CONFIG = """\
# The gateway of a benchmark: one Voice Live resource allowing {budget} new connections per minute,
# one profile that greets (and says a busy message when no connection is left).
voicelive:
  endpoint: ${{AZURE_VOICELIVE_ENDPOINT}}
  connections_per_minute: {budget}
  prewarm: {prewarm}
gateway:
  signing_key: ${{GATEWAY_SIGNING_KEY}}
twilio:
  auth_token: ${{TWILIO_AUTH_TOKEN}}
profiles:
  desk:
    model: gpt-realtime
    instructions: You answer the phone. Be brief.
    voice: alloy
    turn_detection: {{type: server_vad, silence_duration_ms: 500}}
    greeting: {{text: "{greeting}"}}
{busy}routes:
  default: desk
"""


def gateway_config(*, budget: int, prewarm: str, busy: str | None = None) -> str:
    """The config.yaml of a benchmark's gateway (``prewarm``: auto, true or false)."""
    line = f'    busy: {{message: "{busy}"}}\n' if busy else ""
    return _CONFIG.format(budget=budget, prewarm=prewarm, greeting=GREETING, busy=line)


_GIVEN: set[int] = set()  # the ports free_port gave in this process


def _ephemeral_low() -> int:
    """The lowest port the kernel gives client sockets (Linux: ip_local_port_range)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A free loopback port for a process to listen on later, outside the range the kernel gives client
    sockets: with hundreds of calls connecting meanwhile, a port from that range (as binding port 0
    gives) is often taken by one of them before the process binds it."""
    low = _ephemeral_low()
    candidates = range(10_000, low) if low > 11_000 else range(0)
    for _ in range(100):
        port = secrets.choice(candidates) if candidates else 0
        if port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = int(s.getsockname()[1])
            _GIVEN.add(port)  # (two processes of one run must not be given the same port)
            return port
    raise RuntimeError("no free loopback port below the ephemeral range")


def _tail(log: Path | None) -> str:
    return log.read_text(errors="replace")[-600:] if log is not None and log.exists() else ""


async def wait_http(url: str, within_s: float = 30.0, process: subprocess.Popen[bytes] | None = None,
                    log: Path | None = None) -> None:
    """Return once ``url`` answers 200 (a process that is starting up); RuntimeError at once if
    ``process`` exits first (with the end of its ``log``)."""
    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"{process.args!r:.80} exited with {process.returncode}: {_tail(log)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not come up within {within_s:g} s")
            await asyncio.sleep(0.1)  # polling a process that is starting up


async def get_text(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return await response.text()


def metric_values(text: str, prefix: str = "gateway_voicelive_") -> dict[str, float]:
    """The samples of the metrics whose names start with ``prefix`` (labels kept in the key), summed
    over duplicates; histograms' buckets left out."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(prefix) or "_bucket{" in line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            values[name] = values.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return values


@dataclass
class Processes:
    """The processes of one run, stopped (and their logs closed) at the end."""

    logs: Path
    started: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    _files: list[IO[bytes]] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        out = open(self.logs / f"{name}.log", "wb")
        self._files.append(out)
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.started.append((name, proc))
        return proc

    def stop(self) -> None:
        for _, proc in reversed(self.started):
            if proc.poll() is None:
                proc.terminate()
        for _, proc in reversed(self.started):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for out in self._files:
            out.close()

    def dead(self) -> list[str]:
        """The processes that exited early (their names)."""
        return [name for name, proc in self.started if proc.poll() is not None]


@contextmanager
def processes(logs: Path) -> Iterator[Processes]:
    procs = Processes(logs)
    try:
        yield procs
    finally:
        procs.stop()


def start_standin(procs: Processes, port: int, *, setup_delay_ms: int = 0, response_delay_ms: int = 300,
                  max_connections_per_minute: int | None = None) -> str:
    """The Voice Live stand-in (``gateway simulator``); its endpoint."""
    argv = [PY, "-m", "gateway", "simulator", "--host", "127.0.0.1", "--port", str(port),
            "--setup-delay-ms", str(setup_delay_ms), "--response-delay-ms", str(response_delay_ms)]
    if max_connections_per_minute is not None:
        argv += ["--max-connections-per-minute", str(max_connections_per_minute)]
    procs.start("voicelive", argv, env={**os.environ, "GATEWAY_LOG_FORMAT": "json"})
    return f"http://127.0.0.1:{port}"


def start_redis(procs: Processes, port: int) -> str:
    """A throw-away ``redis-server`` (no persistence); its URL."""
    procs.start("redis", [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--dir", str(procs.logs)])
    return f"redis://127.0.0.1:{port}/0"


@dataclass(frozen=True)
class Gateway:
    base: str  # http://127.0.0.1:port
    auth_token: str  # Twilio's, for signing


def start_gateway(procs: Processes, config_text: str, port: int, endpoint: str, *, workers: int = 1,
                  redis_url: str | None = None) -> Gateway:
    """``gateway serve`` with ``config_text`` (which reads AZURE_VOICELIVE_ENDPOINT, TWILIO_AUTH_TOKEN
    and GATEWAY_SIGNING_KEY) at ``endpoint``."""
    config = procs.logs / "gateway.yaml"
    procs.logs.mkdir(parents=True, exist_ok=True)
    config.write_text(config_text)
    token = secrets.token_hex(16)
    env = {**os.environ, "AZURE_VOICELIVE_ENDPOINT": endpoint, "TWILIO_AUTH_TOKEN": token,
           "GATEWAY_SIGNING_KEY": secrets.token_hex(32), "GATEWAY_LOG_FORMAT": "json", "GATEWAY_LOG_LEVEL": "info"}
    env.pop("GATEWAY_REDIS_URL", None)
    if redis_url:
        env["GATEWAY_REDIS_URL"] = redis_url
    argv = [PY, "-m", "gateway", "serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    if workers > 1:
        argv += ["--workers", str(workers)]
    procs.start("gateway", argv, env=env)
    return Gateway(f"http://127.0.0.1:{port}", token)


# --- Twilio's HTTP side of a call ---------------------------------------------------------------------


@dataclass
class Answer:
    """The TwiML the gateway answered: a media stream to open, or words Twilio says (then hangs up)."""

    stream_url: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    say: str | None = None
    verbs: list[str] = field(default_factory=list)


def read_twiml(body: bytes, url: str) -> Answer:
    """What a TwiML answer tells Twilio to do. ValueError when it is not TwiML."""
    root = ET.fromstring(body)  # (ParseError is a ValueError)
    if root.tag != "Response":
        raise ValueError(f"not a TwiML <Response>: {body[:80]!r}")
    verbs = [child.tag for child in root]
    if root.find("Connect/Stream") is not None:
        stream_url, params = parse_twiml(body, url)
        return Answer(stream_url, params, verbs=verbs)
    say = root.find("Say")
    return Answer(say=re.sub(r"\s+", " ", say.text or "").strip() if say is not None else None, verbs=verbs)


async def post_twilio(http: aiohttp.ClientSession, gateway: Gateway, path: str, form: dict[str, str]) -> Answer:
    """POST a form to the gateway signed like Twilio; the TwiML it answered. RuntimeError on an HTTP error."""
    url = gateway.base + path
    headers = {"X-Twilio-Signature": twilio_signature(gateway.auth_token, url, form)}
    async with http.post(url, data=form, headers=headers) as resp:
        body = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{path} answered HTTP {resp.status}: {body[:120]!r}")
    return read_twiml(body, url)


def call_form(call_sid: str, account_sid: str) -> dict[str, str]:
    return {"AccountSid": account_sid, "ApiVersion": "2010-04-01", "CallSid": call_sid, "CallStatus": "ringing",
            "Called": "+15555550100", "Caller": "+15555550199", "Direction": "inbound", "From": "+15555550199",
            "To": "+15555550100"}


async def voice_webhook(http: aiohttp.ClientSession, gateway: Gateway, call_sid: str, account_sid: str) -> Answer:
    return await post_twilio(http, gateway, "/twilio/voice", call_form(call_sid, account_sid))


async def stream_ended(http: aiohttp.ClientSession, gateway: Gateway, call_sid: str, account_sid: str) -> Answer:
    """What Twilio asks the ``<Connect action>`` once the media stream has closed."""
    form = {**call_form(call_sid, account_sid), "CallStatus": "in-progress"}
    return await post_twilio(http, gateway, "/twilio/stream-ended", form)


def new_call() -> tuple[str, str]:
    """A call's (CallSid, AccountSid)."""
    return new_sid("CA"), new_sid("AC")


def percentiles(values: list[float]) -> dict[str, Any]:
    """n, p50, p95, max (nearest-rank; None when there is nothing), in the values' unit, rounded to 0.1."""
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 1)

    return {"n": len(ordered), "p50": rank(0.50), "p95": rank(0.95), "max": round(ordered[-1], 1)}

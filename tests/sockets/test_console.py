"""The console's HTTP side over real sockets on 127.0.0.1: off by default (404 everywhere), the login
(wrong and right token, the cookie), the API's refusals (401 without a session, 403 from another
site), the page and its files with their security headers, a live call of another carrier listed
(no numbers) and ended from the console (the carrier's socket closes; the end reason is
``ended_from_console``; its post-call record shows up), and ``gateway demo --browser``."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway import metrics
from gateway.app import create_app
from gateway.audio import ASSETS, load_ulaw_8k
from gateway.bridge import CONTEXT
from gateway.carriers.twilio.phone import place_call
from gateway.config import parse_config
from gateway.console.auth import COOKIE
from gateway.console.routes import END_REASON, FILES
from gateway.simulator import RunningSimulator
from gateway.softphone import Hangup, Say, Silence, WaitForBot
from tests.sockets.loopback import LogCapture, listen, serve
from tests.sockets.served import ROOT, clean_env

TOKEN = "console-sockets-token-5b9e1f"
TWILIO_TOKEN = "console-test-twilio-token-31"
SECRET = "whsec_" + base64.b64encode(hashlib.sha256(b"console test").digest()).decode()
WAIT_S = 15  # a bound on awaiting what the test causes (never waited out when all is well)
CONFIG = """
voicelive:
  endpoint: ${EP}
twilio:
  auth_token: ${TWILIO_TOKEN}
gateway:
  console_token: ${CONSOLE:-}
  public_url: ${PUBLIC:-}
records:
  webhook: ${HOOK:-}
  signing_secret: ${RECORDS_SECRET:-}
  spool_directory: ${SPOOL:-}
profiles:
  main:
    model: gpt-realtime
    instructions: Be brief.
    voice: alloy
    turn_detection: {type: server_vad, silence_duration_ms: 400}
  sales:
    model: gpt-realtime
    voice: marin
routes:
  default: main
"""
HOURS = load_ulaw_8k(ASSETS / "caller_hours.wav")
CALL_FIELDS = {"call_id", "carrier", "direction", "profile", "duration_s", "state", "turns", "started"}


@dataclass
class Console:
    """A gateway (with the simulator as Voice Live) and what its calls report, by call."""

    app: web.Application
    base: str
    events: dict[str, list[tuple[str, dict[str, Any]]]] = field(default_factory=dict)
    seen: dict[str, asyncio.Event] = field(default_factory=dict)

    def moment(self, event: str) -> asyncio.Event:
        """Set once any call reports ``event``."""
        return self.seen.setdefault(event, asyncio.Event())

    def observer_for(self, call_id: str):
        def observe(event: str, _t: float, fields: dict[str, Any]) -> None:
            self.events.setdefault(call_id, []).append((event, dict(fields)))
            self.moment(event).set()
        return observe

    async def login(self, http: aiohttp.ClientSession) -> str:
        """Log in with the token like the login form does: the session cookie's value."""
        async with http.post(self.base + "/console/login", data={"token": TOKEN}, allow_redirects=False) as reply:
            assert reply.status == 303, await reply.text()
            return reply.cookies[COOKIE].value


@contextlib.asynccontextmanager
async def console(sim: RunningSimulator, **env: str) -> AsyncIterator[Console]:
    config = parse_config(CONFIG, env={"EP": sim.endpoint, "TWILIO_TOKEN": TWILIO_TOKEN, **env})
    holder: list[Console] = []
    app = create_app(config, observer_factory=lambda call_id: holder[0].observer_for(call_id))
    runner, base = await serve(app)
    holder.append(Console(app, base))
    try:
        yield holder[0]
    finally:
        await runner.cleanup()


@pytest.fixture
async def hook() -> AsyncIterator[str]:
    """A webhook that takes every post-call record."""
    async def take(request: web.Request) -> web.Response:
        await request.read()
        return web.Response()

    app = web.Application()
    app.router.add_post("/records", take)
    runner = web.AppRunner(app)
    try:
        yield await listen(runner) + "/records"
    finally:
        await runner.cleanup()


@pytest.fixture
async def gateway(sim: RunningSimulator, hook: str, tmp_path: Path) -> AsyncIterator[Console]:
    """The console on (with a token) and post-call records on."""
    async with console(sim, CONSOLE=TOKEN, HOOK=hook, RECORDS_SECRET=SECRET, SPOOL=str(tmp_path / "spool")) as c:
        yield c


def jar(cookie: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={cookie}"}


async def test_the_console_is_off_without_a_token_and_every_route_says_404(sim: RunningSimulator) -> None:
    async with console(sim) as c, aiohttp.ClientSession() as http:
        for method, path in (("GET", "/console"), ("POST", "/console/login"), ("POST", "/console/logout"),
                             ("GET", "/console/static/console.js"), ("GET", "/console/api/state"),
                             ("GET", "/console/api/calls"), ("POST", "/console/api/calls/CA1/end")):
            async with http.request(method, c.base + path, data={"token": ""}, allow_redirects=False) as reply:
                assert reply.status == 404, (method, path)
                assert "GATEWAY_CONSOLE_TOKEN" in await reply.text(), path


async def test_a_wrong_token_gets_the_form_again_and_the_right_one_a_session(
        gateway: Console, log_capture: LogCapture) -> None:
    async with aiohttp.ClientSession() as http:
        with log_capture("info") as logs:
            async with http.post(gateway.base + "/console/login", data={"token": "not-the-token-1234"},
                                 allow_redirects=False) as reply:
                assert reply.status == 401
                page = await reply.text()
                assert COOKIE not in reply.cookies
        assert 'id="login-form"' in page
        assert re.search(r'id="login-error"[^>]*>[^<]*not the console', page), page
        lines = [json.loads(line) for line in logs.getvalue().splitlines()]
        assert any(line["event"] == "console login refused: wrong token" and line["level"] == "warning"
                   for line in lines)
        assert "not-the-token-1234" not in logs.getvalue()

        async with http.post(gateway.base + "/console/login", data={"token": TOKEN}, allow_redirects=False) as reply:
            assert reply.status == 303 and reply.headers["Location"] == "/console"
            set_cookie = reply.headers["Set-Cookie"]
            cookie = reply.cookies[COOKIE].value
        assert TOKEN not in set_cookie
        assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Path=/console" in set_cookie
        assert "Secure" not in set_cookie  # (plain http, and no https public address)

        async with http.get(gateway.base + "/console") as reply:  # no cookie: the login form
            assert reply.status == 200 and 'id="login-form"' in await reply.text()
        async with http.get(gateway.base + "/console", headers=jar(cookie)) as reply:
            assert reply.status == 200
            page = await reply.text()
        assert 'id="call-button"' in page and 'id="login-form"' not in page

        async with http.post(gateway.base + "/console/logout", headers=jar(cookie), allow_redirects=False) as reply:
            assert reply.status == 303 and reply.headers["Location"] == "/console"
            assert reply.cookies[COOKIE].value == "" and "Path=/console" in reply.headers["Set-Cookie"]


async def test_an_address_that_gave_ten_wrong_tokens_waits_even_with_the_right_one(gateway: Console) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(10):
            async with http.post(gateway.base + "/console/login", data={"token": "guess"}) as reply:
                assert reply.status == 401
        async with http.post(gateway.base + "/console/login", data={"token": TOKEN}, allow_redirects=False) as reply:
            assert reply.status == 429
            assert 0 < int(reply.headers["Retry-After"]) <= 60
            assert COOKIE not in reply.cookies
            assert re.search(r'id="login-error"[^>]*>[^<]*Too many wrong tokens', await reply.text())


async def test_a_login_from_another_site_is_refused_even_with_the_right_token(gateway: Console) -> None:
    async with aiohttp.ClientSession() as http, http.post(
            gateway.base + "/console/login", data={"token": TOKEN}, headers={"Origin": "http://evil.example"},
            allow_redirects=False) as reply:
        assert reply.status == 403
        assert COOKIE not in reply.cookies


async def test_the_cookie_is_secure_when_the_public_address_is_https(sim: RunningSimulator) -> None:
    async with console(sim, CONSOLE=TOKEN, PUBLIC="https://gateway.example") as c, aiohttp.ClientSession() as http, \
            http.post(c.base + "/console/login", data={"token": TOKEN}, allow_redirects=False) as reply:
        assert reply.status == 303
        assert "Secure" in reply.headers["Set-Cookie"]


async def test_the_api_wants_a_session_from_the_console_s_own_page(gateway: Console) -> None:
    async with aiohttp.ClientSession() as http:
        cookie = await gateway.login(http)
        for method, path in (("GET", "/console/api/state"), ("GET", "/console/api/calls"),
                             ("POST", "/console/api/calls/CA1/end")):
            async with http.request(method, gateway.base + path) as reply:
                assert reply.status == 401, path
            async with http.request(method, gateway.base + path, headers=jar("123.forged")) as reply:
                assert reply.status == 401, path
            async with http.request(method, gateway.base + path,
                                    headers={**jar(cookie), "Origin": "http://evil.example"}) as reply:
                assert reply.status == 403, path
        own = {**jar(cookie), "Origin": gateway.base}
        async with http.get(gateway.base + "/console/api/state", headers=own) as reply:
            assert reply.status == 200 and reply.headers["Cache-Control"] == "no-store"
            text = await reply.text()
    state = json.loads(text)
    assert state["profiles"] == ["main", "sales"] and state["default_profile"] == "main"
    assert state["mode"] == "token" and state["records_on"] is True
    assert state["calls"] == [] and state["records"] == []
    assert state["worker"] == {"pid": os.getpid(), "workers": 1}
    for secret in (TOKEN, TWILIO_TOKEN, SECRET, SECRET.removeprefix("whsec_")):
        assert secret not in text


def _security_headers(reply: aiohttp.ClientResponse, base: str) -> None:
    policy = reply.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";") if d.strip())
    assert directives["default-src"] == "'self'" and directives["script-src"] == "'self'"
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy and "*" not in policy
    assert base.replace("http://", "ws://") in directives["connect-src"]
    assert directives["frame-ancestors"] == "'none'"
    assert reply.headers["X-Frame-Options"] == "DENY"
    assert reply.headers["Referrer-Policy"] == "no-referrer"
    assert reply.headers["Cache-Control"] == "no-store"
    assert reply.headers["X-Content-Type-Options"] == "nosniff"


async def test_the_pages_and_their_files_are_served_with_the_security_headers(gateway: Console) -> None:
    async with aiohttp.ClientSession() as http:
        cookie = await gateway.login(http)
        pages = {}
        for name, headers in (("login", {}), ("console", jar(cookie))):
            async with http.get(gateway.base + "/console", headers=headers) as reply:
                assert reply.status == 200 and reply.content_type == "text/html"
                _security_headers(reply, gateway.base)
                pages[name] = await reply.text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", pages["console"] + pages["login"])
        assert not re.search(r"\son[a-z]+=", pages["console"] + pages["login"])  # no inline handlers
        # every file the pages and the script load is there (without a session: the login form uses them too)
        wanted = set(re.findall(r"/console/static/([\w.-]+)", "".join(pages.values())))
        async with http.get(gateway.base + "/console/static/console.js") as reply:
            wanted |= set(re.findall(r"/console/static/([\w.-]+)", await reply.text()))
        assert {"console.js", "console.css", "capture-worklet.js", "playback-worklet.js"} <= wanted
        types = {".js": "text/javascript", ".css": "text/css"}
        for name in sorted(wanted):
            async with http.get(gateway.base + f"/console/static/{name}") as reply:
                assert reply.status == 200, name
                assert reply.content_type == types[Path(name).suffix], name
                _security_headers(reply, gateway.base)
        # nothing else: not the pages, not the package's modules, nothing above the folder
        for path in ("/console/static/index.html", "/console/static/routes.py", "/console/static/..%2Froutes.py",
                     "/console/static/..%2F..%2Fconfig.yaml", "/console/static/%2E%2E%2Fauth.py",
                     "/console/static/nothing.js"):
            async with http.get(gateway.base + path) as reply:
                assert reply.status == 404, path
    assert "index.html" not in FILES and "login.html" not in FILES


async def test_a_live_call_is_listed_without_numbers_and_ended_from_the_console(gateway: Console) -> None:
    ended_before = metrics.CALLS.value("twilio", END_REASON)
    call = asyncio.create_task(place_call(
        gateway.base + "/twilio/voice", [Say(HOURS, "question"), WaitForBot(), Silence(30_000), Hangup()],
        auth_token=TWILIO_TOKEN, to="+15555550100", from_="+14155550199"))
    try:
        await asyncio.wait_for(gateway.moment("bot.transcript").wait(), WAIT_S)  # the bot answered a turn
        async with aiohttp.ClientSession() as http:
            cookie = await gateway.login(http)
            async with http.get(gateway.base + "/console/api/calls", headers=jar(cookie)) as reply:
                assert reply.status == 200
                text = await reply.text()
            (listed,) = json.loads(text)["calls"]
            (call_id,) = gateway.events
            live = gateway.app[CONTEXT].calls[call_id].call
            assert set(listed) == CALL_FIELDS
            assert listed["call_id"] == call_id and listed["carrier"] == "twilio"
            assert listed["direction"] == "inbound" and listed["profile"] == "main"
            assert listed["state"] == "ready" and listed["turns"] == live.stats.caller_turns >= 1
            assert 0 < listed["duration_s"] < WAIT_S
            assert abs(listed["started"] + listed["duration_s"] - time.time()) < 2
            assert "4155550199" not in text and "5555550100" not in text

            async with http.post(gateway.base + "/console/api/calls/no-such-call/end", headers=jar(cookie)) as reply:
                assert reply.status == 404
            assert not call.done()
            async with http.post(gateway.base + f"/console/api/calls/{call_id}/end", headers=jar(cookie)) as reply:
                assert reply.status == 202
            report = await asyncio.wait_for(call, WAIT_S)
            # the gateway hung up: the carrier's socket closed normally, long before the caller was done
            assert report.closed_by == "gateway" and report.close_code == 1000
            await asyncio.wait_for(gateway.app[CONTEXT].wait_idle(), WAIT_S)
            assert ("call.ended", {"reason": END_REASON, "transfer_to": None}) in gateway.events[call_id]
            assert metrics.CALLS.value("twilio", END_REASON) == ended_before + 1

            async with http.get(gateway.base + "/console/api/state", headers=jar(cookie)) as reply:
                text = await reply.text()
            state = json.loads(text)
    finally:
        call.cancel()
        await asyncio.gather(call, return_exceptions=True)
    assert state["calls"] == []
    (record,) = state["records"]
    assert record["call_id"] == call_id and record["carrier"] == "twilio" and record["profile"] == "main"
    assert record["end_reason"] == END_REASON and record["outcome"] == "completed"
    assert record["direction"] == "inbound" and record["duration_ms"] > 0
    assert record["turns"] >= 1 and any(entry["role"] == "bot" for entry in record["transcript"])
    assert "from" not in record and "to" not in record
    assert "4155550199" not in text and "5555550100" not in text


async def test_recent_records_are_newest_first_and_bounded(gateway: Console) -> None:
    from gateway.bridge import RECENT_RECORDS

    records = gateway.app[CONTEXT].recent_records
    for n in range(RECENT_RECORDS + 3):
        records.append({"id": f"rec_{n}", "call_id": f"CA{n}", "transcript": [], "from": "+*******0199"})
    async with aiohttp.ClientSession() as http:
        cookie = await gateway.login(http)
        async with http.get(gateway.base + "/console/api/state", headers=jar(cookie)) as reply:
            shown = json.loads(await reply.text())["records"]
    assert [r["id"] for r in shown] == [f"rec_{n}" for n in reversed(range(3, RECENT_RECORDS + 3))]
    assert all("from" not in r for r in shown)


async def _line_starting(proc: asyncio.subprocess.Process, prefix: str, seen: list[str]) -> str:
    assert proc.stdout is not None
    async for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip("\n")
        seen.append(line)
        if line.startswith(prefix):
            return line[len(prefix):].strip()
    raise AssertionError(f"the demo ended without printing {prefix!r}: {seen}")


async def test_the_demo_with_the_console_prints_its_address_and_serves_it() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "demo", "--browser", cwd=ROOT, env=clean_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    seen: list[str] = []
    try:
        url = await asyncio.wait_for(_line_starting(proc, "Console:", seen), 60)
        token = await asyncio.wait_for(_line_starting(proc, "Console token:", seen), WAIT_S)
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/console", url), url
        assert token and token not in url
        drain = asyncio.create_task(proc.stdout.read() if proc.stdout else asyncio.sleep(0))
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as reply:
                assert reply.status == 200 and 'id="login-form"' in await reply.text()
            async with http.post(url + "/login", data={"token": token}, allow_redirects=False) as reply:
                assert reply.status == 303
                cookie = reply.cookies[COOKIE].value
            async with http.get(url + "/api/state", headers=jar(cookie)) as reply:
                assert reply.status == 200
                assert "demo" in (await reply.json())["profiles"]
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), WAIT_S) == 0
        await drain
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

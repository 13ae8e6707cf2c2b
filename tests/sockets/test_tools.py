"""HTTP tools against a local service: the output is the reply, or an error the model can use."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from gateway.app import create_app
from gateway.call import RunTool
from gateway.config import GatewayConfig, Tool, parse_config
from gateway.tools import MAX_OUTPUT_BYTES, run_http_tool
from tests.sockets.loopback import LogCapture, serve


@pytest.fixture
async def service() -> AsyncIterator[tuple[str, list[dict], asyncio.Event]]:
    seen: list[dict] = []
    release = asyncio.Event()

    async def orders(request: web.Request) -> web.Response:
        seen.append({"json": await request.json(), "auth": request.headers.get("Authorization")})
        return web.json_response({"order": seen[-1]["json"].get("order"), "status": "shipped"})

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="stack trace with secrets")

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="too late")

    async def huge(request: web.Request) -> web.Response:
        return web.Response(text="x" * (MAX_OUTPUT_BYTES * 3))

    app = web.Application()
    app.router.add_post("/orders", orders)
    app.router.add_post("/broken", broken)
    app.router.add_post("/slow", slow)
    app.router.add_post("/huge", huge)
    runner, base = await serve(app)
    try:
        yield base, seen, release
    finally:
        release.set()
        await runner.cleanup()


def _tool(url: str, timeout: float = 2.0, env: dict[str, str] | None = None) -> Tool:
    return _config(url, timeout, env).profiles["p"].tools[0]


def _config(url: str, timeout: float = 2.0, env: dict[str, str] | None = None) -> GatewayConfig:
    return parse_config(f"""
profiles:
  p:
    model: m
    tools:
      - name: lookup_order
        description: Find an order.
        http:
          url: "{url}"
          headers: {{Authorization: "Bearer ${{TOKEN}}", X-Api-Key: "${{TOKEN}}"}}
          timeout_s: {timeout}
""", env={"TOKEN": "tok-123456789", **(env or {})})


async def test_the_reply_body_is_the_output_and_headers_come_from_the_environment(service) -> None:
    base, seen, _ = service
    async with aiohttp.ClientSession() as http:
        output = await run_http_tool(http, _tool(base + "/orders"), RunTool("c1", "lookup_order", '{"order":"42"}'))
    assert json.loads(output) == {"order": "42", "status": "shipped"}
    assert seen == [{"json": {"order": "42"}, "auth": "Bearer tok-123456789"}]


@pytest.mark.parametrize("path, arguments, expected", [
    ("/broken", "{}", "failed (HTTP 500)"),
    ("/orders", "not json", "were not a JSON object"),
    ("/orders", "[1, 2]", "were not a JSON object"),
])
async def test_failures_become_an_error_the_model_can_apologise_for(service, path, arguments, expected) -> None:
    base, _, _ = service
    async with aiohttp.ClientSession() as http:
        output = await run_http_tool(http, _tool(base + path), RunTool("c1", "lookup_order", arguments))
    assert expected in json.loads(output)["error"]
    assert "secrets" not in output


async def test_a_slow_tool_times_out_with_an_error_output(service) -> None:
    base, _, _ = service
    async with aiohttp.ClientSession() as http:
        output = await run_http_tool(http, _tool(base + "/slow", timeout=0.2), RunTool("c1", "lookup_order", "{}"))
    assert json.loads(output) == {"error": "the lookup_order service did not answer within 0.2 s"}


async def test_an_unreachable_service_and_a_huge_reply(service) -> None:
    base, _, _ = service
    async with aiohttp.ClientSession() as http:
        down = await run_http_tool(http, _tool("http://127.0.0.1:9/x"), RunTool("c1", "lookup_order", "{}"))
        huge = await run_http_tool(http, _tool(base + "/huge"), RunTool("c2", "lookup_order", "{}"))
    assert json.loads(down) == {"error": "the lookup_order service could not be reached"}
    assert json.loads(huge) == {"error": f"the lookup_order service answered with more than {MAX_OUTPUT_BYTES} "
                                         "bytes; the answer was not used"}


@pytest.fixture
async def two_part_service() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """Answers ``/reply/{size}`` with a JSON body of about ``size`` bytes, chunked, in two writes: the
    second once the client has the response's headers (``headers_received`` is set then)."""
    headers_received = asyncio.Event()

    async def reply(request: web.Request) -> web.StreamResponse:
        body = json.dumps({"notes": "n" * (int(request.match_info["size"]) - 13)}).encode()
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(body[:600])  # flushed to the socket
        await headers_received.wait()
        await response.write(body[600:])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/reply/{size}", reply)
    runner, base = await serve(app)
    try:
        yield base, headers_received
    finally:
        headers_received.set()
        await runner.cleanup()


async def _session_noting_headers(received: asyncio.Event) -> aiohttp.ClientSession:
    """A client session that sets ``received`` as soon as a response's headers are in."""
    async def on_request_end(*_: object) -> None:
        received.set()

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    return aiohttp.ClientSession(trace_configs=[trace])


async def test_a_reply_written_in_two_parts_reaches_the_model_whole(two_part_service) -> None:
    base, headers_received = two_part_service
    async with await _session_noting_headers(headers_received) as http:
        output = await run_http_tool(http, _tool(base + "/reply/1800"), RunTool("c1", "lookup_order", "{}"))
    assert len(output) == 1800 and json.loads(output)["notes"].startswith("nnn")


async def test_a_chunked_reply_over_the_limit_is_an_error_not_a_cut(two_part_service) -> None:
    base, headers_received = two_part_service
    async with await _session_noting_headers(headers_received) as http:
        output = await run_http_tool(http, _tool(base + f"/reply/{MAX_OUTPUT_BYTES + 1}"),
                                     RunTool("c1", "lookup_order", "{}"))
    assert "more than" in json.loads(output)["error"]


@pytest.fixture
async def elsewhere() -> AsyncIterator[tuple[str, list[dict]]]:
    """Another service, on another port: a redirect there must never reach it."""
    seen: list[dict] = []

    async def steal(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"stolen": True})

    app = web.Application()
    app.router.add_route("*", "/steal", steal)
    runner, base = await serve(app)
    try:
        yield base, seen
    finally:
        await runner.cleanup()


def _redirect(status: int, location: str) -> web.Response:
    return web.Response(status=status, headers={"Location": location})


@pytest.fixture
async def redirect_service(elsewhere) -> AsyncIterator[tuple[str, list[dict], list[dict]]]:
    """An order service that redirects: (its base URL, the orders it saw, what the other host saw)."""
    other, stolen = elsewhere
    seen: list[dict] = []

    async def orders(request: web.Request) -> web.Response:
        seen.append({"json": await request.json(), "auth": request.headers.get("Authorization")})
        return web.json_response({"order": seen[-1]["json"].get("order"), "status": "shipped"})

    async def moved(request: web.Request) -> web.Response:
        kind, status = request.match_info["kind"], int(request.match_info["status"])
        port = request.url.port
        return _redirect(status, {"here": "/orders", "away": f"{other}/steal",
                                  "https": f"https://127.0.0.1:{port}/orders",
                                  "loop": str(request.url)}[kind])

    app = web.Application()
    app.router.add_post("/orders", orders)
    app.router.add_post("/moved/{status}/{kind}", moved)
    runner, base = await serve(app)
    try:
        yield base, seen, stolen
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("status", [307, 308])
async def test_a_same_origin_redirect_keeping_the_post_is_followed(redirect_service, status) -> None:
    base, seen, stolen = redirect_service
    async with aiohttp.ClientSession() as http:
        output = await run_http_tool(http, _tool(f"{base}/moved/{status}/here"),
                                     RunTool("c1", "lookup_order", '{"order":"42"}'))
    assert json.loads(output) == {"order": "42", "status": "shipped"}
    assert seen == [{"json": {"order": "42"}, "auth": "Bearer tok-123456789"}] and stolen == []


@pytest.mark.parametrize("status, kind, expected", [
    (307, "away", "redirected to another address"),  # another port
    (308, "away", "redirected to another address"),
    (302, "away", "redirected the request elsewhere"),
    (307, "https", "redirected to another address"),  # another scheme
    (301, "here", "redirected the request elsewhere"),  # would become a GET without the arguments
    (303, "here", "redirected the request elsewhere"),
    (307, "loop", "redirected too many times"),
])
async def test_other_redirects_are_errors_and_never_carry_the_headers(redirect_service, status, kind,
                                                                      expected) -> None:
    base, seen, stolen = redirect_service
    async with aiohttp.ClientSession() as http:
        output = await run_http_tool(http, _tool(f"{base}/moved/{status}/{kind}"), RunTool("c1", "lookup_order", "{}"))
    assert stolen == [] and seen == []  # nothing reached the other host, the tool's headers least of all
    assert expected in json.loads(output)["error"]


async def test_a_secret_in_the_tool_url_is_scrubbed_from_the_error_log(service, log_capture: LogCapture) -> None:
    base, _, _ = service
    secret = "fn-key-Zx81/Qp+Lm=="
    config = _config(base + "/broken?code=${KEY}", env={"KEY": secret})
    create_app(config, voicelive_endpoint="ws://127.0.0.1:9/unused")  # registers the config's secrets
    with log_capture("info") as buf:
        async with aiohttp.ClientSession() as http:
            output = await run_http_tool(http, config.profiles["p"].tools[0], RunTool("c1", "lookup_order", "{}"))
    (line,) = [json.loads(x) for x in buf.getvalue().splitlines() if "tool failed" in x]
    assert line["url"] == base + "/broken?code=***" and line["outcome"] == "http 500"
    assert secret not in buf.getvalue() and secret not in output

"""HTTP tools against a local service: the output is the reply, or an error the model can use."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from gateway.call import RunTool
from gateway.config import parse_config
from gateway.tools import MAX_OUTPUT_BYTES, run_http_tool
from tests.loopback import serve


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


def _tool(url: str, timeout: float = 2.0):
    config = parse_config(f"""
profiles:
  p:
    model: m
    tools:
      - name: lookup_order
        description: Find an order.
        http: {{url: "{url}", headers: {{Authorization: "Bearer ${{TOKEN}}"}}, timeout_s: {timeout}}}
""", env={"TOKEN": "tok-123456789"})
    return config.profiles["p"].tools[0]


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
    assert len(huge) == MAX_OUTPUT_BYTES

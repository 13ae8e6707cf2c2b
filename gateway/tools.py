"""Running the tools a profile declares, when the model calls them.

Whatever happens, a tool returns an output text for the model: the reply of the tool's service, or
a short JSON error the model can apologise for. A tool never leaves a call stuck.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import aiohttp

from gateway.call import RunTool
from gateway.config import Tool
from gateway.log import get_logger

log = get_logger("gateway.tools")

MAX_OUTPUT_BYTES = 16 * 1024

ToolRunner = Callable[[Tool, RunTool], Awaitable[str]]


def _error(message: str) -> str:
    return json.dumps({"error": message})


async def run_http_tool(http: aiohttp.ClientSession, tool: Tool, run: RunTool) -> str:
    """POST the arguments as JSON to the tool's URL; the reply body is the output."""
    try:
        arguments = json.loads(run.arguments or "{}")
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        return _error(f"the arguments for {tool.name} were not a JSON object; nothing was looked up")
    spec = tool.http
    if spec is None:
        return _error(f"{tool.name} is not a tool the gateway runs over HTTP")
    started = time.monotonic()
    outcome = "ok"
    try:
        async with asyncio.timeout(spec.timeout_s):
            async with http.post(spec.url, json=arguments, headers=spec.headers) as reply:
                body = await reply.content.read(MAX_OUTPUT_BYTES)
                text = body.decode("utf-8", errors="replace")
                if reply.status >= 400:
                    outcome = f"http {reply.status}"
                    return _error(f"the {tool.name} service failed (HTTP {reply.status}); try again later")
                return text or _error(f"the {tool.name} service gave an empty answer")
    except TimeoutError:
        outcome = "timeout"
        return _error(f"the {tool.name} service did not answer within {spec.timeout_s:g} s")
    except aiohttp.ClientError as exc:
        outcome = f"unreachable ({type(exc).__name__})"
        return _error(f"the {tool.name} service could not be reached")
    finally:
        log.info("tool ran", tool=tool.name, call_id=run.call_id, outcome=outcome,
                 duration_ms=round((time.monotonic() - started) * 1000, 1))


def http_tool_runner(http: aiohttp.ClientSession) -> ToolRunner:
    async def run(tool: Tool, call: RunTool) -> str:
        return await run_http_tool(http, tool, call)

    return run

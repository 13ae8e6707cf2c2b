"""Running the tools a profile declares, when the model calls them.

Whatever happens, a tool returns an output text for the model: the reply of the tool's service, or
a short JSON error the model can apologise for. A tool never leaves a call stuck.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

from gateway.call import RunTool
from gateway.config import HttpTool, Tool
from gateway.log import get_logger
from gateway.tracing import tool_headers

log = get_logger("gateway.tools")

MAX_OUTPUT_BYTES = 16 * 1024
MAX_REDIRECTS = 3
# Redirects that keep the POST and its body. They are followed to the same origin (scheme, host and
# port) only, so the tool's headers (often a bearer token) never go anywhere else. Any other
# redirect (301, 302 and 303 would turn the POST into a GET without the arguments) is an error.
FOLLOWED_REDIRECTS = frozenset({307, 308})

ToolRunner = Callable[[Tool, RunTool], Awaitable[str]]


def _error(message: str) -> str:
    return json.dumps({"error": message})


class ToolFailed(Exception):
    """A tool run that gives the model an error: ``outcome`` is logged, ``message`` told to the model."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome
        self.message = message


async def _read_body(reply: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole reply body, however it arrives; None when it is longer than ``limit`` bytes."""
    if reply.content_length is not None and reply.content_length > limit:
        return None
    body = bytearray()
    async for chunk in reply.content.iter_any():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of an absolute URL, the port made explicit."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:  # not a port number: an origin of its own, equal to no other
        port = -1
    return scheme, (parts.hostname or "").lower(), port


def _redirect_target(tool: Tool, url: str, reply: aiohttp.ClientResponse) -> str:
    """Where a followed redirect leads, when it stays on ``url``'s origin."""
    location = reply.headers.get("Location")
    if not location:
        raise ToolFailed(f"http {reply.status} without Location",
                         f"the {tool.name} service answered with a redirect to nowhere; nothing was looked up")
    target = urljoin(url, location)
    scheme, host, port = origin = _origin(target)
    if origin != _origin(url):
        raise ToolFailed(f"http {reply.status} redirect to another origin ({scheme}://{host}:{port}), not followed",
                         f"the {tool.name} service redirected to another address, which the gateway does not "
                         "follow; nothing was looked up")
    return target


async def _output(tool: Tool, reply: aiohttp.ClientResponse) -> str:
    """The tool's output from its service's final reply."""
    if 300 <= reply.status < 400:
        raise ToolFailed(f"http {reply.status} redirect, not followed",
                         f"the {tool.name} service redirected the request elsewhere; nothing was looked up")
    if reply.status >= 400:
        raise ToolFailed(f"http {reply.status}",
                         f"the {tool.name} service failed (HTTP {reply.status}); try again later")
    body = await _read_body(reply, MAX_OUTPUT_BYTES)
    if body is None:
        raise ToolFailed("reply too large", f"the {tool.name} service answered with more than "
                                            f"{MAX_OUTPUT_BYTES} bytes; the answer was not used")
    if not body:
        raise ToolFailed("empty reply", f"the {tool.name} service gave an empty answer")
    return body.decode("utf-8", errors="replace")


async def _call_service(http: aiohttp.ClientSession, tool: Tool, spec: HttpTool, arguments: dict[str, Any]) -> str:
    """POST the arguments, following same-origin 307/308 redirects (at most MAX_REDIRECTS)."""
    url = spec.url
    headers: dict[str, str] = spec.headers
    traced = tool_headers()  # the call's trace goes on in the tool's service (W3C traceparent)
    if traced:
        headers = {**headers, **traced}
    for _ in range(MAX_REDIRECTS + 1):
        async with http.post(url, json=arguments, headers=headers, allow_redirects=False) as reply:
            if reply.status not in FOLLOWED_REDIRECTS:
                return await _output(tool, reply)
            url = _redirect_target(tool, url, reply)
    raise ToolFailed("too many redirects", f"the {tool.name} service redirected too many times; nothing was looked up")


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
    try:
        async with asyncio.timeout(spec.timeout_s):
            output = await _call_service(http, tool, spec, arguments)
    except TimeoutError:
        failure = ToolFailed("timeout", f"the {tool.name} service did not answer within {spec.timeout_s:g} s")
    except aiohttp.ClientError as exc:
        failure = ToolFailed(f"unreachable ({type(exc).__name__})", f"the {tool.name} service could not be reached")
    except ToolFailed as exc:
        failure = exc
    else:
        log.info("tool ran", tool=tool.name, call_id=run.call_id, outcome="ok", duration_ms=_ms_since(started))
        return output
    # the URL may hold a secret (?code=${KEY}): the log scrubber replaces it, as every registered secret
    log.warning("tool failed", tool=tool.name, call_id=run.call_id, url=spec.url, outcome=failure.outcome,
                duration_ms=_ms_since(started))
    return _error(failure.message)


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


def http_tool_runner(http: aiohttp.ClientSession) -> ToolRunner:
    async def run(tool: Tool, call: RunTool) -> str:
        return await run_http_tool(http, tool, call)

    return run

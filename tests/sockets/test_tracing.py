"""Call traces over real sockets on 127.0.0.1: a whole call exported to an in-memory exporter, the
trace context an http tool receives, and nothing of OpenTelemetry loaded when tracing is off."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from gateway.app import create_app
from gateway.audio import ASSETS, load_ulaw_8k
from gateway.bridge import CONTEXT
from gateway.call import RunTool
from gateway.carriers.twilio.phone import place_call
from gateway.config import parse_config
from gateway.simulator import SimulatorSettings, ToolCall, start_simulator
from gateway.softphone import Hangup, Say, WaitForBot
from gateway.tools import run_http_tool
from gateway.tracing import Tracing, use_tool_headers
from tests.sockets.loopback import serve

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "tracing-test-twilio-token-1"
CALLER, CALLED = "+15555550199", "+15555550100"
HOURS = load_ulaw_8k(ASSETS / "caller_hours.wav")
INTERRUPT = load_ulaw_8k(ASSETS / "caller_interrupt.wav")


def _config(endpoint: str, tool_url: str) -> Any:
    return parse_config(f"""
voicelive: {{endpoint: "{endpoint}", reconnect_budget_s: 15}}
twilio: {{auth_token: "${{TOKEN}}"}}
profiles:
  main:
    model: gpt-realtime
    instructions: Be brief.
    turn_detection: {{type: server_vad, silence_duration_ms: 400}}
    tools:
      - name: hours
        description: Opening hours for a day.
        parameters: {{type: object, properties: {{day: {{type: string}}}}}}
        http: {{url: "{tool_url}", timeout_s: 2}}
""", env={"TOKEN": TOKEN})


@pytest.fixture
async def hours_service() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """The tool's service: (its URL, the headers of every request it got)."""
    received: list[dict[str, str]] = []

    async def hours(request: web.Request) -> web.Response:
        received.append(dict(request.headers))
        await request.json()
        return web.json_response({"open": "9 to 6"})

    app = web.Application()
    app.router.add_post("/hours", hours)
    runner, base = await serve(app)
    try:
        yield f"{base}/hours", received
    finally:
        await runner.cleanup()


def _traceparent(span: ReadableSpan) -> str:
    ctx = span.context
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


async def test_a_call_is_one_trace_with_its_connect_turns_barge_in_tool_and_reconnect(hours_service) -> None:
    tool_url, received = hours_service
    sim = await start_simulator(SimulatorSettings(audio_speed=8.0, tool_calls={1: ToolCall("hours", {"day": "sat"})}))
    exporter = InMemorySpanExporter()
    answered = asyncio.Event()  # the bot's answer to the interruption is sent: the session is dropped then
    done: list[str] = []

    def observer_for(call_id: str):
        def observe(event: str, _t: float, fields: dict[str, Any]) -> None:
            if event == "response.done":
                done.append(fields["response_id"])
                if len(done) == 3:  # the tool call, the answer the interruption cut, the next answer
                    answered.set()
        return observe

    async def drop_session() -> None:
        await answered.wait()
        await sim.state.sessions[0].close(1011, "simulated failure")

    app = create_app(_config(sim.endpoint, tool_url), observer_factory=observer_for,
                     tracing=Tracing.exporting_to(exporter))
    runner, base = await serve(app)
    dropper = asyncio.create_task(drop_session())
    try:
        report = await place_call(base + "/twilio/voice", [
            Say(HOURS, "question"),  # answered with a call of the tool, then with words
            WaitForBot(heard_ms=1200),
            Say(INTERRUPT, "interruption"),  # a barge-in
            WaitForBot(heard_ms=1000),  # the answer, sent whole before it plays: the session drops, is reopened
            Say(HOURS, "again"),
            WaitForBot(heard_ms=500),  # answered by the new session
            Hangup()], auth_token=TOKEN, from_=CALLER, to=CALLED)
        await dropper
        await asyncio.wait_for(app[CONTEXT].wait_idle(), 10)
    finally:
        dropper.cancel()
        await runner.cleanup()  # the application's end flushes and shuts down its tracer
        await sim.close()
    assert report.clears >= 1 and report.violations == 0 and len(sim.state.sessions) == 2

    spans = exporter.get_finished_spans()
    by_name: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    (root,) = by_name["call"]
    assert {span.context.trace_id for span in spans} == {root.context.trace_id}  # one trace
    assert root.parent is None
    assert all(span.parent is not None and span.parent.span_id == root.context.span_id
               for span in spans if span is not root)
    assert all(root.start_time <= span.start_time and span.end_time <= root.end_time  # type: ignore[operator]
               for span in spans)
    assert root.attributes is not None
    assert {k: root.attributes[k] for k in ("gateway.carrier", "gateway.call.direction", "gateway.profile",
                                            "gateway.call.end_reason", "gateway.call_id")} == {
        "gateway.carrier": "twilio", "gateway.call.direction": "inbound", "gateway.profile": "main",
        "gateway.call.end_reason": "caller_hung_up", "gateway.call_id": report.call_sid}
    assert root.status.status_code is StatusCode.UNSET
    assert (root.end_time - root.start_time) / 1e6 >= report.duration_ms - 100  # type: ignore[operator]

    (connect,) = by_name["voicelive.connect"]
    assert connect.status.status_code is StatusCode.OK
    assert connect.attributes is not None and connect.attributes["gateway.voicelive.ready_ms"] >= 0

    turns = by_name["turn"]
    assert len(done) >= 4 and len(turns) == len(done)  # each response a turn (the last from the new session)
    assert {t.attributes["gateway.response_id"] for t in turns if t.attributes} == set(done)
    answers = [t for t in turns if t.attributes and t.attributes["gateway.turn.after"] == "caller"
               and "gateway.turn.latency_ms" in t.attributes]
    assert answers and all(0 < t.attributes["gateway.turn.latency_ms"] < 5000 for t in answers)  # type: ignore[index]
    assert {t.attributes["gateway.response.status"] for t in turns if t.attributes} <= {"completed", "cancelled"}

    (barge_in, *_) = by_name["barge_in"]
    assert barge_in.attributes is not None and barge_in.attributes["gateway.barge_in.cleared"] is True
    assert barge_in.attributes["gateway.barge_in.truncated_at_ms"] > 0

    tools = by_name["tool"]
    assert len(tools) == len(received) >= 1
    assert {_traceparent(span) for span in tools} == {r["traceparent"] for r in received}
    assert all(span.attributes and span.attributes["gateway.tool.outcome"] == "ok" for span in tools)

    (reconnect,) = by_name["reconnect"]
    assert reconnect.attributes is not None and reconnect.attributes["gateway.voicelive.close_code"] == 1011
    assert reconnect.status.status_code is StatusCode.OK
    assert "transfer" not in by_name

    values = [str(v) for span in spans for v in (span.attributes or {}).values()]
    values += [str(v) for span in spans for e in span.events for v in (e.attributes or {}).values()]
    assert not [v for v in values if "5555550" in v]  # never a phone number


async def test_a_tool_request_carries_the_trace_context_only_from_a_traced_run(hours_service) -> None:
    tool_url, received = hours_service
    tool = _config("ws://127.0.0.1:9/unused", tool_url).profiles["main"].tools[0]
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    async def traced(http: aiohttp.ClientSession) -> str:
        use_tool_headers({"traceparent": parent, "tracestate": "vendor=1"})  # (this task's own context)
        return await run_http_tool(http, tool, RunTool("c2", "hours", "{}"))

    async with aiohttp.ClientSession() as http:
        plain = await run_http_tool(http, tool, RunTool("c1", "hours", "{}"))
        in_task = await asyncio.create_task(traced(http))
        after = await run_http_tool(http, tool, RunTool("c3", "hours", "{}"))
    assert json.loads(plain) == json.loads(in_task) == json.loads(after) == {"open": "9 to 6"}
    first, second, third = received
    assert "traceparent" not in first and "tracestate" not in first
    assert second["traceparent"] == parent and second["tracestate"] == "vendor=1"
    assert "traceparent" not in third  # the traced task's context stayed its own


CALL_SCRIPT = """
import asyncio, json, sys
from gateway.app import create_app
from gateway.audio import ASSETS, load_ulaw_8k
from gateway.carriers.twilio.phone import place_call
from gateway.config import parse_config
from gateway.simulator import SimulatorSettings, start_simulator
from gateway.softphone import Hangup, Say, WaitForBot
from tests.sockets.loopback import serve

async def main():
    sim = await start_simulator(SimulatorSettings(audio_speed=8.0))
    config = parse_config('voicelive: {endpoint: "%s"}\\ntwilio: {auth_token: "${TOKEN}"}\\n'
                          'profiles: {main: {model: gpt-realtime}}\\n' % sim.endpoint, env={"TOKEN": "tok-123456"})
    runner, base = await serve(create_app(config))
    try:
        steps = [Say(load_ulaw_8k(ASSETS / "caller_hours.wav"), "q"), WaitForBot(heard_ms=200), Hangup()]
        report = await place_call(base + "/twilio/voice", steps, auth_token="tok-123456")
    finally:
        await runner.cleanup()
        await sim.close()
    loaded = sorted(name for name in sys.modules if name.split(".")[0] == "opentelemetry")
    print("RESULT " + json.dumps({"played": report.played_bytes, "opentelemetry": loaded}))

asyncio.run(main())
"""


async def _run_a_call(**otel: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(PYTHONPATH=str(ROOT), **otel)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", CALL_SCRIPT, cwd=ROOT, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-2000:]
    (line,) = [x for x in out.decode().splitlines() if x.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT "))


async def test_off_a_whole_call_loads_nothing_of_opentelemetry() -> None:
    # (beside it, the same call with the environment asking for traces: it does load it, so the check can fail)
    off, on = await asyncio.gather(_run_a_call(), _run_a_call(OTEL_TRACES_EXPORTER="console"))
    assert off["played"] > 0
    assert off["opentelemetry"] == []
    assert on["played"] > 0 and "opentelemetry.sdk.trace" in on["opentelemetry"]

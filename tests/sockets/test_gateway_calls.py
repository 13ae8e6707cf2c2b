"""Whole calls over real sockets on 127.0.0.1: softphone → gateway → Voice Live simulator."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import re
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.app import create_app
from gateway.audio import ASSETS, load_ulaw_8k
from gateway.bridge import CONTEXT
from gateway.carriers.twilio.auth import twilio_signature
from gateway.carriers.twilio.phone import place_call
from gateway.config import parse_config
from gateway.simulator import RunningSimulator, SimulatorSettings, ToolCall, start_simulator
from gateway.softphone import Hangup, Say, Silence, WaitForBot
from tests.sockets.loopback import LogCapture, serve, twilio_signed

CONFIG = """
voicelive:
  endpoint: ${EP}
  api_key: ${KEY:-}
  reconnect_budget_s: ${RECONNECT:-15}
twilio:
  auth_token: ${TWILIO_TOKEN}
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
  numbers:
    "+15555550123": sales
"""

BPM = 8  # µ-law bytes per ms
TWILIO_TOKEN = "test-twilio-auth-token-1234"


async def dial(url: str, steps: list, **kwargs: Any):
    """A call signed like Twilio signs its requests."""
    return await place_call(url, steps, auth_token=TWILIO_TOKEN, **kwargs)
HOURS = load_ulaw_8k(ASSETS / "caller_hours.wav")
INTERRUPT = load_ulaw_8k(ASSETS / "caller_interrupt.wav")


@dataclass
class Rig:
    sim: RunningSimulator
    app: web.Application
    base: str  # http://127.0.0.1:PORT
    seen: dict[tuple[str, str], asyncio.Event]

    def moment(self, call_id: str, event: str) -> asyncio.Event:
        """An event set when the gateway's call ``call_id`` (``*``: any call) reports ``event`` (e.g. session.ready)."""
        return self.seen.setdefault((call_id, event), asyncio.Event())

    @property
    def ws_url(self) -> str:
        return self.base.replace("http://", "ws://") + "/twilio/media"

    async def all_calls_finished(self) -> None:
        """Wait until the gateway has no call left, then check that nothing of them survived."""
        await asyncio.wait_for(self.app[CONTEXT].wait_idle(), 10)
        assert self.app[CONTEXT].calls == {}
        leftovers = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(("phone-", "voicelive-"))]
        assert leftovers == []


async def _start_rig(sim_settings: SimulatorSettings | None = None, env: dict[str, str] | None = None,
                     ) -> tuple[Rig, web.AppRunner]:
    sim = await start_simulator(sim_settings or SimulatorSettings(audio_speed=4.0))
    config = parse_config(CONFIG, env={"EP": sim.endpoint, "TWILIO_TOKEN": TWILIO_TOKEN, **(env or {})})
    seen: dict[tuple[str, str], asyncio.Event] = {}

    def observer_for(call_id: str):
        def observe(event: str, _t: float, _fields: dict) -> None:
            seen.setdefault((call_id, event), asyncio.Event()).set()
            seen.setdefault(("*", event), asyncio.Event()).set()  # any call
        return observe

    app = create_app(config, observer_factory=observer_for)
    runner, base = await serve(app)
    return Rig(sim, app, base, seen), runner


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r, runner = await _start_rig()
    try:
        yield r
    finally:
        await runner.cleanup()
        await r.sim.close()


async def test_webhook_answers_twiml_with_the_routed_profile(rig: Rig) -> None:
    form = {"CallSid": "CA1", "To": "+1 (555) 555-0123"}
    url = rig.base + "/twilio/voice"
    async with aiohttp.ClientSession() as http:
        signature = twilio_signature(TWILIO_TOKEN, url, form)
        resp = await http.post(url, data=form, headers={"X-Twilio-Signature": signature})
        text = await resp.text()
    assert resp.status == 200 and resp.content_type == "text/xml"
    assert f'url="{rig.ws_url}"' in text
    assert '<Parameter name="profile" value="sales"/>' in text


async def test_whole_call_with_barge_in_truncates_at_what_the_phone_played(rig: Rig) -> None:
    report = await dial(rig.base + "/twilio/voice", [
        Say(HOURS, "question"),
        WaitForBot(heard_ms=1200),
        Say(INTERRUPT, "interruption"),
        Hangup(),
    ])
    session = await asyncio.wait_for(rig.sim.state.wait_closed(0), 10)
    assert report.violations == 0, report.violation_samples
    assert report.clears == 1
    (truncation,) = session.truncations
    assert truncation["ok"]
    first_item = next(iter(session.items_audio_bytes))
    assert truncation["item_id"] == first_item
    ((_, clear),) = report.events_of("clear")
    played_ms = clear["played_bytes_total"] / BPM
    # the truncation point is what the phone played, within a few tens of milliseconds
    assert abs(truncation["audio_end_ms"] - played_ms) <= 40, (truncation, played_ms)
    assert truncation["audio_end_ms"] < session.items_audio_bytes[first_item] / BPM
    # the rest of that answer never played: the phone played only what it had before the clear
    # plus nothing of the cancelled response afterwards
    assert report.discarded_bytes > 0
    assert report.played_bytes <= clear["played_bytes_total"] + sum(
        size for item, size in session.items_audio_bytes.items() if item != first_item)
    await rig.all_calls_finished()


async def test_audio_passes_through_byte_for_byte_both_ways(rig: Rig) -> None:
    report = await dial(rig.base + "/twilio/voice", [Say(HOURS, "question"), WaitForBot(), Hangup()])
    session = await asyncio.wait_for(rig.sim.state.wait_closed(0), 10)
    # caller → Voice Live: every frame the phone sent, the same base64 text, in order
    assert session.appended == report.sent_payloads
    # Voice Live → caller: the deltas, cut only at base64 boundaries, in order
    deltas = [e["delta"] for e in session.sent if e["type"] == "response.audio.delta"]
    assert deltas and "".join(report.received_payloads) == "".join(deltas)
    assert report.played_bytes == sum(len(base64.b64decode(d)) for d in deltas)
    assert report.clears == 0 and session.truncations == []


async def test_voicelive_closing_mid_call_closes_the_phone_socket() -> None:
    rig, runner = await _start_rig(env={"RECONNECT": "0"})  # a lost session is not reopened
    try:
        async def drop_session() -> None:
            await rig.moment("*", "session.ready").wait()  # the call's session (opened when it was announced)
            await rig.sim.state.sessions[0].close(1011, "simulated failure")

        dropper = asyncio.create_task(drop_session())
        report = await dial(rig.base + "/twilio/voice", [Silence(10_000), Hangup()])
        await dropper
        assert report.closed_by == "gateway"
        assert report.duration_ms < 9_000
        assert len(rig.sim.state.sessions) == 1
        await rig.all_calls_finished()
    finally:
        await runner.cleanup()
        await rig.sim.close()


async def test_caller_hanging_up_closes_the_voicelive_session(rig: Rig) -> None:
    report = await dial(rig.base + "/twilio/voice", [Silence(300), Hangup()])
    session = await asyncio.wait_for(rig.sim.state.wait_closed(0), 10)
    assert report.closed_by == "caller"
    assert session.closed.is_set()
    await rig.all_calls_finished()


@pytest.mark.parametrize("ending", ["caller-hangs-up", "voicelive-refuses"])
async def test_an_ended_call_is_freed_at_once_not_by_the_garbage_collector(ending: str) -> None:
    """An ended call's state (its bridge, the call core, its Voice Live session) is freed when the call
    ends, by reference counting: nothing of it waits in a reference cycle (a cancelled task's error, a
    failed connect's) for the garbage collector's next full pass, which would hold its memory until
    then and pause every other call (tens of ms with hundreds of calls)."""
    refused = ending == "voicelive-refuses"
    rig, runner = await _start_rig(SimulatorSettings(api_key="the-right-key-000") if refused else None,
                                   env={"KEY": "a-wrong-key-0000"} if refused else None)
    ctx = rig.app[CONTEXT]
    freed: dict[str, asyncio.Event] = {}
    add_call = ctx.add_call

    def watch(what: str, obj: object) -> None:
        freed[what] = asyncio.Event()
        weakref.finalize(obj, freed[what].set)

    def added(bridge: Any) -> None:
        add_call(bridge)
        watch("bridge", bridge)
        watch("call", bridge.call)

    ctx.add_call = added  # type: ignore[method-assign]
    steps = ([Silence(5_000), Hangup()] if refused
             else [Say(HOURS[:8000], "question"), WaitForBot(heard_ms=200), Hangup()])
    gc.collect()
    gc.disable()
    call = asyncio.create_task(dial(rig.base + "/twilio/voice", steps))
    try:
        if not refused:
            await asyncio.wait_for(rig.moment("*", "session.ready").wait(), 10)
            (bridge,) = ctx.calls.values()
            watch("Voice Live session", bridge.voicelive)
            del bridge
        report = await call
        assert report.closed_by == ("gateway" if refused else "caller")
        await rig.all_calls_finished()
        assert len(freed) == (2 if refused else 3)
        for what, event in freed.items():
            try:
                await asyncio.wait_for(event.wait(), 10)
            except TimeoutError:
                pytest.fail(f"the ended call's {what} is still held (by a reference cycle, if gc.collect() frees it)")
    finally:
        gc.enable()
        call.cancel()  # (done by now, unless the test failed before the call ended)
        await asyncio.gather(call, return_exceptions=True)
        await runner.cleanup()
        await rig.sim.close()


def signed(url: str) -> dict[str, str]:
    """The header Twilio puts on the media socket's upgrade request."""
    return twilio_signed(TWILIO_TOKEN, url)


class RawTwilio:
    """A hand-driven media socket, for input a well-behaved softphone never sends."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, rig: Rig, sid: str = "MZraw") -> None:
        self.ws = ws
        self.rig = rig
        self.sid = sid

    async def send(self, msg: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(msg))

    async def start(self, call_sid: str = "CAraw") -> None:
        await self.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self.send({"event": "start", "sequenceNumber": "1", "streamSid": self.sid, "start": {
            "streamSid": self.sid, "callSid": call_sid, "accountSid": "AC1", "tracks": ["inbound"],
            "customParameters": {"profile": "main", "token": self.rig.app[CONTEXT].tokens.issue(
                {"call": call_sid, "profile": "main"}, 60)},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": "8000", "channels": "1"}}})

    async def media(self, payload: str) -> None:
        await self.send({"event": "media", "streamSid": self.sid,
                         "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": payload}})


def _frame(i: int) -> str:
    return base64.b64encode(bytes([0xFF - (i % 3)]) * 160).decode()


async def test_bad_input_is_logged_and_the_call_goes_on(rig: Rig, log_capture: LogCapture) -> None:
    with log_capture("info") as buf:
        good = [_frame(i) for i in range(1, 31)]
        async with aiohttp.ClientSession() as http, http.ws_connect(rig.ws_url, headers=signed(rig.ws_url)) as ws:
            raw = RawTwilio(ws, rig)
            await raw.media(_frame(0))  # before start: dropped, there is no call yet
            await raw.start()
            await asyncio.wait_for(rig.moment("CAraw", "session.ready").wait(), 10)
            other_call = asyncio.create_task(
                dial(rig.base + "/twilio/voice", [Say(HOURS, "question"), WaitForBot(), Hangup()]))
            for i, frame in enumerate(good):
                await raw.media(frame)
                if i == 5:
                    await ws.send_str("{this is not json")
                    await ws.send_bytes(b"\x00\x01binary")
                    await raw.media("!!not base64!!")
                    await raw.send({"event": "media", "media": {"payload": 42}})
                    await raw.send({"event": "surprise", "streamSid": raw.sid})
                    await ws.send_str("[]")
            report = await other_call  # a whole call ran beside the bad one
            await raw.send({"event": "stop", "streamSid": raw.sid, "stop": {"callSid": "CAraw"}})
            closing = await ws.receive()
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1000
    raw_session = await asyncio.wait_for(rig.sim.state.wait_closed(0), 10)
    await rig.all_calls_finished()
    assert raw_session.appended == good  # every good frame, in order, nothing else
    assert report.violations == 0 and report.played_bytes > 0  # the other call was untouched
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    problems = [line.get("problem") for line in lines if line.get("event") == "ignored a bad message"]
    assert {"malformed", "binary-frame"} <= set(problems)
    early = [line for line in lines if line.get("event") == "ignored a message before start"]
    assert [line.get("problem") for line in early] == ["media-before-start"]
    assert problems.count("malformed") == 1  # one warning per kind of problem; repeats at debug
    (summary,) = [line for line in lines if line.get("event") == "call ended" and line.get("call_id") == "CAraw"]
    assert summary["bad_messages"] == {"malformed": 4, "binary-frame": 1, "unknown-event": 1}
    raw_lines = [line for line in lines if line.get("call_id") == "CAraw"]
    assert raw_lines and all(line.get("stream_id") == "MZraw" for line in raw_lines)


async def test_caller_frames_and_marks_are_handled_as_they_are_parsed(rig: Rig) -> None:
    """While the call's phone task waits for the next message, a caller frame goes to Voice Live from
    where aiohttp parses it (gateway.phonesocket), and so does a message that leaves nothing to send;
    what leaves more (the end of the stream) is handed to the task, after everything before it."""
    frames = [_frame(i) for i in range(1, 41)]
    async with aiohttp.ClientSession() as http, http.ws_connect(rig.ws_url, headers=signed(rig.ws_url)) as ws:
        raw = RawTwilio(ws, rig)
        await raw.start()
        await asyncio.wait_for(rig.moment("CAraw", "session.ready").wait(), 10)
        phone = rig.app[CONTEXT].calls["CAraw"].phone
        taker = phone.taker
        assert taker is not None
        left: list[object] = []  # what the call left to its phone task, per message offered

        def watched(data: Any) -> object:
            result = taker(data)
            left.append(result if result is None or result is data else "work")
            return result

        phone.offer_to(watched)
        for i, frame in enumerate(frames):
            await raw.media(frame)
            if i % 10 == 0:
                await raw.send({"event": "mark", "streamSid": raw.sid, "mark": {"name": "not-ours"}})
        await raw.send({"event": "stop", "streamSid": raw.sid, "stop": {"callSid": "CAraw"}})
        closing = await ws.receive()
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    session = await asyncio.wait_for(rig.sim.state.wait_closed(0), 10)
    await rig.all_calls_finished()
    assert session.appended == frames  # every frame, in order
    assert left == [None] * (len(frames) + 4) + ["work"]  # the frames and marks handled; the stop handed over


async def test_no_voicelive_session_before_start(rig: Rig) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(rig.ws_url, headers=signed(rig.ws_url)) as ws:
        raw = RawTwilio(ws, rig)
        await raw.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await raw.media(_frame(0))
        await raw.send({"event": "stop", "streamSid": raw.sid})
        msg = await ws.receive()
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert rig.sim.state.sessions == []


async def test_unsupported_start_is_refused_before_any_session(rig: Rig) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(rig.ws_url, headers=signed(rig.ws_url)) as ws:
        await ws.send_str(json.dumps({"event": "start", "start": {
            "streamSid": "MZ1", "callSid": "CA1",
            "mediaFormat": {"encoding": "audio/x-l16", "sampleRate": 16000, "channels": 1}}}))
        msg = await ws.receive()
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1003
    assert rig.sim.state.sessions == []


async def test_refused_voicelive_session_ends_the_call_and_logs_no_secret(log_capture: LogCapture) -> None:
    with log_capture("debug") as buf:
        secret = "sk-live-0123456789abcdef"
        r, runner = await _start_rig(SimulatorSettings(api_key="the-right-key-000"), env={"KEY": secret})
        try:
            report = await dial(r.base + "/twilio/voice", [Silence(5_000), Hangup()])
        finally:
            await runner.cleanup()
            await r.sim.close()
    assert report.closed_by == "gateway" and report.duration_ms < 4_000
    text = buf.getvalue()
    assert "HTTP 401" in text
    assert secret not in text


async def test_secrets_never_reach_the_logs_on_a_full_call(log_capture: LogCapture) -> None:
    with log_capture("debug") as buf:
        secret = "sk-live-fedcba9876543210"
        r, runner = await _start_rig(SimulatorSettings(api_key=secret, audio_speed=8.0), env={"KEY": secret})
        try:
            report = await dial(r.base + "/twilio/voice", [Say(HOURS, "q"), WaitForBot(), Hangup()])
        finally:
            await runner.cleanup()
            await r.sim.close()
    assert report.played_bytes > 0
    text = buf.getvalue()
    assert '"call ended"' in text
    assert secret not in text


async def test_an_http_tool_round_trip_over_sockets() -> None:
    seen: list[dict] = []

    async def hours(request: web.Request) -> web.Response:
        seen.append(await request.json())
        return web.json_response({"open": "9 to 6"})

    service = web.Application()
    service.router.add_post("/hours", hours)
    service_runner, service_base = await serve(service)
    url = f"{service_base}/hours"
    sim = await start_simulator(SimulatorSettings(audio_speed=8.0, tool_calls={1: ToolCall("hours", {"day": "sat"})}))
    config = parse_config(f"""
voicelive: {{endpoint: "{sim.endpoint}"}}
twilio: {{auth_token: "${{TWILIO_TOKEN}}"}}
profiles:
  main:
    model: gpt-realtime
    tools:
      - name: hours
        description: Opening hours for a day.
        parameters: {{type: object, properties: {{day: {{type: string}}}}}}
        http: {{url: "{url}", timeout_s: 2}}
""", env={"TWILIO_TOKEN": TWILIO_TOKEN})
    runner, base = await serve(create_app(config))
    try:
        report = await dial(f"{base}/twilio/voice", [Say(HOURS, "q"), WaitForBot(), Hangup()])
        session = await asyncio.wait_for(sim.state.wait_closed(0), 10)
    finally:
        await runner.cleanup()
        await sim.close()
        await service_runner.cleanup()
    assert seen == [{"day": "sat"}]  # the model's arguments reached the tool's service
    (output,) = session.function_call_outputs
    assert json.loads(output["output"]) == {"open": "9 to 6"}
    assert report.played_bytes > 0 and report.violations == 0  # the bot answered after the tool


def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Prometheus text exposition, strictly parsed: {(name, labels): value}."""
    line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (-?[0-9.]+(?:e[+-]?[0-9]+)?|NaN|\+Inf|-Inf)$')
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    out: dict[tuple[str, frozenset], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        match = line_re.match(line)
        assert match, f"not a Prometheus sample: {line!r}"
        name, labels, value = match.groups()
        pairs = label_re.findall(labels or "")
        assert ",".join(f'{k}="{v}"' for k, v in pairs) == (labels or ""), f"bad labels: {line!r}"
        out[(name, frozenset(pairs))] = float(value)
    return out


async def test_metrics_count_a_call_with_barge_in_and_carry_no_call_ids(rig: Rig) -> None:
    async def scrape() -> dict[tuple[str, frozenset], float]:
        async with aiohttp.ClientSession() as http, http.get(rig.base + "/metrics") as resp:
            assert resp.status == 200 and resp.content_type == "text/plain"
            return _samples(await resp.text())

    def delta(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    before = await scrape()
    report = await dial(rig.base + "/twilio/voice", [
        Say(HOURS, "question"), WaitForBot(heard_ms=1200), Say(INTERRUPT, "interruption"), Hangup()])
    await rig.all_calls_finished()
    after = await scrape()
    assert report.clears == 1
    assert delta("gateway_calls_total", carrier="twilio", outcome="caller_hung_up") == 1
    assert after[("gateway_active_calls", frozenset({("carrier", "twilio")}))] == 0
    assert delta("gateway_barge_ins_total", carrier="twilio") == 1
    assert delta("gateway_truncations_total", carrier="twilio") == 1
    assert delta("gateway_barge_in_reaction_seconds_count", carrier="twilio") == 1
    assert delta("gateway_voicelive_connect_seconds_count", carrier="twilio") == 1
    assert delta("gateway_first_audio_seconds_count", carrier="twilio") >= 1
    assert delta("gateway_frames_total", carrier="twilio", direction="in") == len(report.sent_payloads)
    assert delta("gateway_frames_total", carrier="twilio", direction="out") > 0
    # bounded labels: nothing identifies a call or a caller
    for name, labels in after:
        for label, value in labels:
            assert not value.startswith(("CA", "MZ")) and not value.startswith("+1"), (name, label, value)


async def test_a_second_media_stream_for_a_call_in_progress_is_refused(rig: Rig) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(rig.ws_url, headers=signed(rig.ws_url)) as first:
            one = RawTwilio(first, rig, sid="MZone")
            await one.start("CAdup")
            await asyncio.wait_for(rig.moment("CAdup", "session.ready").wait(), 10)
            async with http.ws_connect(rig.ws_url, headers=signed(rig.ws_url)) as second:
                await RawTwilio(second, rig, sid="MZtwo").start("CAdup")
                refused = await asyncio.wait_for(second.receive(), 10)
            assert refused.type == aiohttp.WSMsgType.CLOSE and refused.data == 1008
            assert len(rig.sim.state.sessions) == 1  # no second Voice Live session
            frames = [_frame(i) for i in range(10)]
            for frame in frames:  # the first stream goes on as before
                await one.media(frame)
            await one.send({"event": "stop", "streamSid": "MZone", "stop": {"callSid": "CAdup"}})
            closing = await asyncio.wait_for(first.receive(), 10)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    session = await asyncio.wait_for(rig.sim.state.wait_closed(0), 10)
    assert session.appended == frames and len(rig.sim.state.sessions) == 1
    await rig.all_calls_finished()

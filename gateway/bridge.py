"""The I/O shell: runs one call between a phone media socket and a Voice Live socket.

All decisions are made by the pure :class:`gateway.call.Call`, wrapped with its wire formats in a
:class:`gateway.wire.WireCall`; this module only reads sockets, feeds the call with the current
time, and writes what the call queued. One task reads the phone, one reads Voice Live; when
either side ends, the other is cancelled and both sockets are closed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from gateway.call import Call, CallState, Observer, RunTool
from gateway.carriers import twilio
from gateway.config import GatewayConfig
from gateway.log import get_logger
from gateway.recording import RecordingWriter
from gateway.tools import ToolRunner
from gateway.voicelive.client import VoiceLiveConnectError, VoiceLiveConnector
from gateway.wire import PHONE, VOICELIVE, WireCall

log = get_logger("gateway.bridge")

START_TIMEOUT_S = 10.0
MAX_PHONE_MESSAGE = 1 << 20


def _noop_observer(_e: str, _t: float, _f: dict[str, Any]) -> None:
    return None


def _now_ms() -> float:
    return time.monotonic() * 1000.0


@dataclass
class GatewayContext:
    """What every call needs from the running gateway."""

    config: GatewayConfig
    connector: VoiceLiveConnector
    observer_factory: Callable[[str], Observer] | None = None
    recording: RecordingWriter | None = None
    tool_runner: ToolRunner | None = None
    calls: dict[str, CallBridge] = field(default_factory=dict)
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._idle.set()

    def observer_for(self, call_id: str) -> Observer:
        return self.observer_factory(call_id) if self.observer_factory else _noop_observer

    def add_call(self, bridge: CallBridge) -> None:
        self.calls[bridge.call.call_id] = bridge
        self._idle.clear()

    def remove_call(self, bridge: CallBridge) -> None:
        if self.calls.get(bridge.call.call_id) is bridge:
            del self.calls[bridge.call.call_id]
        if not self.calls:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no call is in progress (every call's tasks and sockets are finished)."""
        await self._idle.wait()


class CallBridge:
    """One Twilio media stream bridged to one Voice Live session.

    The call's clock counts milliseconds from the moment the media socket opened, the same clock
    its recording uses, so that a replay computes exactly what the live call computed.
    """

    def __init__(self, ctx: GatewayContext, phone: web.WebSocketResponse, start: twilio.Start,
                 profile_name: str, opened_at: float, prelude: list[tuple[float, str | bytes]]) -> None:
        self.ctx = ctx
        self.phone = phone
        self._opened_at = opened_at
        self.log = log.bind(call_id=start.call_sid, stream_id=start.stream_sid)
        self.observer = ctx.observer_for(start.call_sid)
        profile = ctx.config.profiles[profile_name]
        self.call = Call(
            call_id=start.call_sid,
            stream_id=start.stream_sid,
            profile_name=profile_name,
            profile=profile,
            started_at=prelude[-1][0],
            observer=self.observer,
            log=self.log,
        )
        recorder = None
        if ctx.recording is not None:
            recorder = ctx.recording.open_call(
                carrier="twilio", call_id=start.call_sid, stream_id=start.stream_sid,
                profile_name=profile_name, profile=profile.model_dump(mode="json", exclude_none=True),
                audio=self.call.audio)
            for t, message in prelude:
                recorder.record(t, PHONE, "in", message)
        self.recorder = recorder
        self.wire = WireCall(self.call, twilio.TwilioLeg(start), recorder)
        self.voicelive: ClientConnection | None = None
        self._tool_tasks: set[asyncio.Task[None]] = set()

    def _now(self) -> float:
        return _now_ms() - self._opened_at

    async def _flush(self) -> None:
        """Send everything the call queued, in order, to each leg."""
        wire = self.wire
        if self.voicelive is not None:
            messages = wire.take_voicelive()
            if messages:
                send = self.voicelive.send
                try:
                    for message in messages:
                        await send(message)
                except ConnectionClosed as exc:
                    wire.voicelive_closed(exc.rcvd.code if exc.rcvd else None, self._now())
        messages = wire.take_phone()
        if messages:
            send_str = self.phone.send_str
            try:
                for message in messages:
                    await send_str(message)
            except ConnectionResetError:
                wire.phone_closed("phone_socket_closed", self._now())
        for run in wire.take_tools():
            task = asyncio.create_task(self._run_tool(run), name=f"tool-{self.call.call_id}-{run.name}")
            self._tool_tasks.add(task)
            task.add_done_callback(self._tool_tasks.discard)

    async def _run_tool(self, run: RunTool) -> None:
        tool = next(t for t in self.call.profile.tools if t.name == run.name)
        runner = self.ctx.tool_runner
        output = await runner(tool, run) if runner is not None else '{"error": "tools are not available"}'
        self.wire.from_tools(run.call_id, output, self._now())
        await self._flush()

    # --- the two legs -------------------------------------------------------------------------

    async def _phone_loop(self) -> None:
        wire, call = self.wire, self.call
        async for msg in self.phone:
            if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
                wire.from_phone(msg.data, self._now())
                await self._flush()
                if call.ended:
                    return
            elif msg.type is WSMsgType.ERROR:
                self.log.warning("phone socket error", error=str(self.phone.exception()))
                break
        wire.phone_closed("phone_socket_closed", self._now())

    async def _voicelive_loop(self) -> None:
        wire, call, ctx = self.wire, self.call, self.ctx
        timeout = ctx.config.voicelive.connect_timeout_s
        try:
            self.voicelive = await ctx.connector.connect(call.profile)
        except VoiceLiveConnectError as exc:
            self.log.error("could not open the Voice Live session", reason=str(exc), status=exc.status)
            wire.voicelive_failed("voicelive_unavailable", self._now(), status=exc.status)
            await self._flush()
            return
        ws = self.voicelive
        wire.voicelive_opened(self._now())
        await self._flush()
        loop = asyncio.get_running_loop()
        ready_by = loop.time() + timeout
        perf = time.perf_counter
        try:
            while True:
                if call.state == CallState.CONNECTING:
                    remaining = ready_by - loop.time()
                    if remaining <= 0:
                        raise TimeoutError
                    raw = await asyncio.wait_for(ws.recv(), remaining)
                else:
                    raw = await ws.recv()
                received = perf()
                barge_ins = len(call.barge_ins)
                wire.from_voicelive(raw, self._now())
                await self._flush()
                if len(call.barge_ins) != barge_ins and call.barge_ins[-1].cleared:
                    self.observer("clear_sent", self._now(), {"reaction_ms": round((perf() - received) * 1000, 3)})
                if call.ended:
                    return
        except TimeoutError:
            self.log.error("Voice Live did not confirm the session configuration in time", timeout_s=timeout)
            wire.voicelive_failed("voicelive_not_ready", self._now())
        except ConnectionClosed as exc:
            wire.voicelive_closed(exc.rcvd.code if exc.rcvd else None, self._now())
        await self._flush()

    async def run(self) -> None:
        call = self.call
        ctx = self.ctx
        if call.call_id in ctx.calls:
            self.log.warning("a second media stream for a call in progress", profile=call.profile_name)
        ctx.add_call(self)
        self.log.info("call started", profile=call.profile_name)
        tasks = [
            asyncio.create_task(self._phone_loop(), name=f"phone-{call.call_id}"),
            asyncio.create_task(self._voicelive_loop(), name=f"voicelive-{call.call_id}"),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            tasks += self._tool_tasks
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, Exception):
                    self.log.error("call failed", error=repr(result))
            if not call.ended:
                call.phone_ended("gateway_error", self._now())
            await self._close_legs()
            if self.recorder is not None:
                self.recorder.close()
            ctx.remove_call(self)
            summary = call.summary(self._now())
            if self.wire.bad_input:
                summary["bad_messages"] = dict(self.wire.bad_input)
            self.log.info("call ended", **summary)

    async def _close_legs(self) -> None:
        if self.voicelive is not None:
            try:
                await self.voicelive.close()
            except Exception as exc:  # the call is over either way
                self.log.debug("closing the Voice Live socket failed", error=repr(exc))
            self.wire.gateway_closed(VOICELIVE, self.voicelive.close_code, self._now())
        if not self.phone.closed:
            code = 1000 if call_ended_normally(self.call) else 1011
            await self.phone.close(code=code)
            self.wire.gateway_closed(PHONE, code, self._now())


def call_ended_normally(call: Call) -> bool:
    return call.end_reason in ("caller_hung_up", "phone_socket_closed")


async def _await_start(ws: web.WebSocketResponse, opened_at: float,
                       prelude: list[tuple[float, str | bytes]]) -> twilio.Start | None:
    """Read the socket until a valid ``start``; nothing is opened on Voice Live before it.

    Every message read, the start included, is kept in ``prelude`` with its arrival time (ms since
    the socket opened).
    """
    early_media = 0
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    prelude.append((_now_ms() - opened_at, msg.data))
                    try:
                        event = twilio.parse_message(msg.data)
                    except twilio.TwilioProtocolError as exc:
                        if exc.event == "start":
                            log.error("media stream refused: unusable start message", reason=str(exc))
                            await ws.close(code=1003, message=b"unsupported start")
                            return None
                        log.warning("ignored a bad message before start", detail=str(exc))
                        continue
                    if type(event) is twilio.Start:
                        return event
                    if type(event) is twilio.Media:
                        early_media += 1
                        if early_media == 1:
                            log.warning("media before start; dropped (no call to send it to)")
                    elif type(event) is twilio.Stop:
                        log.info("stream stopped before it started")
                        return None
                elif msg.type is WSMsgType.BINARY:
                    prelude.append((_now_ms() - opened_at, msg.data))
                    log.warning("ignored a binary frame before start")
    except TimeoutError:
        log.warning("no start message in time; closing the media socket", timeout_s=START_TIMEOUT_S)
    return None


async def twilio_media(request: web.Request) -> web.StreamResponse:
    """``GET /twilio/media``: the Twilio Media Streams WebSocket."""
    ctx: GatewayContext = request.app[CONTEXT]
    ws = web.WebSocketResponse(max_msg_size=MAX_PHONE_MESSAGE, autoping=True)
    await ws.prepare(request)
    opened_at = _now_ms()
    prelude: list[tuple[float, str | bytes]] = []
    try:
        start = await _await_start(ws, opened_at, prelude)
        if start is None:
            return ws
        params = start.params
        name = params.get("profile")
        if name not in ctx.config.profiles:
            if name:
                log.warning("unknown profile in stream parameters; routing by number instead",
                            call_id=start.call_sid, profile=name)
            name, _ = ctx.config.route(params.get("to"))
        await CallBridge(ctx, ws, start, name, opened_at, prelude).run()
    finally:
        if not ws.closed:
            await ws.close()
    return ws


CONTEXT: web.AppKey[GatewayContext] = web.AppKey("gateway_context", GatewayContext)

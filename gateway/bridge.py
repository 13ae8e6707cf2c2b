"""The I/O shell: runs one call between a phone media socket and a Voice Live socket.

All decisions are made by the pure :class:`gateway.call.Call`, wrapped with its wire formats in a
:class:`gateway.wire.WireCall`; this module only reads sockets, feeds the call with the current
time, and writes what the call queued. One task reads the phone, one reads Voice Live, and on a
leg without playback acknowledgements (ACS) one paces the bot's audio in real time; when either
side ends, the others are cancelled and both sockets are closed.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from gateway import metrics
from gateway.auth import AcsJwtValidator, CallTokens
from gateway.call import Call, CallState, Observer, RunTool
from gateway.config import GatewayConfig
from gateway.log import get_logger
from gateway.recording import CallRecorder, RecordingWriter
from gateway.tools import ToolRunner
from gateway.voicelive.client import VoiceLiveConnectError, VoiceLiveConnector
from gateway.wire import PHONE, VOICELIVE, PhoneLeg, WireCall

log = get_logger("gateway.bridge")

MAX_PHONE_MESSAGE = 1 << 20
PHONE_WRITE_LIMIT = 1 << 16  # bytes waiting in the phone socket before writes go through aiohttp
# Ends that came from the caller's side: nothing to hang up, the socket closes normally.
CALLER_ENDS = ("caller_hung_up", "phone_socket_closed")


def _noop_observer(_e: str, _t: float, _f: dict[str, Any]) -> None:
    return None


def now_ms() -> float:
    return time.monotonic() * 1000.0


@dataclass
class GatewayContext:
    """What every call needs from the running gateway."""

    config: GatewayConfig
    connector: VoiceLiveConnector
    tokens: CallTokens
    observer_factory: Callable[[str], Observer] | None = None
    recording: RecordingWriter | None = None
    tool_runner: ToolRunner | None = None
    acs_client: Any = None  # azure.communication.callautomation.aio.CallAutomationClient
    acs_validator: AcsJwtValidator | None = None
    calls: dict[str, CallBridge] = field(default_factory=dict)
    draining: bool = False  # SIGTERM: finish the calls in progress, take no new ones
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._idle.set()

    def refusal(self) -> str | None:
        """Why a new call cannot be taken now (None: it can)."""
        if self.draining:
            return "draining"
        if len(self.calls) >= self.config.gateway.max_calls:
            return "at max_calls"
        return None

    @property
    def insecure(self) -> bool:
        return self.config.gateway.insecure_dev_mode

    def observer_for(self, call_id: str) -> Observer:
        return self.observer_factory(call_id) if self.observer_factory else _noop_observer

    def add_call(self, bridge: CallBridge) -> None:
        self.calls[bridge.call.call_id] = bridge
        self._idle.clear()
        metrics.ACTIVE_CALLS.inc(bridge.carrier)

    def remove_call(self, bridge: CallBridge) -> None:
        if self.calls.get(bridge.call.call_id) is bridge:
            del self.calls[bridge.call.call_id]
        metrics.ACTIVE_CALLS.inc(bridge.carrier, amount=-1)
        if not self.calls:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no call is in progress (every call's tasks and sockets are finished)."""
        await self._idle.wait()

    def open_recorder(self, carrier: str, call: Call) -> CallRecorder | None:
        if self.recording is None:
            return None
        return self.recording.open_call(
            carrier=carrier, call_id=call.call_id, stream_id=call.stream_id, profile_name=call.profile_name,
            profile=call.profile.model_dump(mode="json", exclude_none=True), audio=call.audio)


class CallBridge:
    """One phone media stream bridged to one Voice Live session.

    The call's clock counts milliseconds from the moment the media socket opened, the same clock
    its recording uses, so that a replay computes exactly what the live call computed.
    """

    carrier = "phone"

    def __init__(self, ctx: GatewayContext, phone: web.WebSocketResponse, call: Call, leg: PhoneLeg,
                 opened_at: float, recorder: CallRecorder | None, transport: Any = None) -> None:
        self.ctx = ctx
        self.phone = phone
        self.phone_transport = transport  # the phone socket's transport, for writing frames in one go
        self.call = call
        self.log = call.log
        self.observer = call.observer
        self._opened_at = opened_at
        self.recorder = recorder
        self.wire = WireCall(call, leg, recorder)
        self.voicelive: ClientConnection | None = None
        self._tool_tasks: set[asyncio.Task[None]] = set()
        self._pacer_wake = asyncio.Event()

    def _now(self) -> float:
        return now_ms() - self._opened_at

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
        if messages and not self.phone.closed and not self._write_phone(messages):
            send_str = self.phone.send_str  # (audio for a closed socket is dropped)
            try:
                for message in messages:
                    await send_str(message)
            except ConnectionResetError:
                self._phone_lost()
        if self.call.paced and self.call.next_tick() is not None:
            self._pacer_wake.set()
        for run in wire.take_tools():
            task = asyncio.create_task(self._run_tool(run), name=f"tool-{self.call.call_id}-{run.name}")
            self._tool_tasks.add(task)
            task.add_done_callback(self._tool_tasks.discard)

    def _write_phone(self, messages: list[str]) -> bool:
        """Write text messages to the phone as WebSocket frames in one system call (a piece of bot
        audio and its mark go together). False when aiohttp's own path must send them: no
        transport, or a backlog (aiohttp then waits for the socket to drain)."""
        transport = self.phone_transport
        if transport is None or transport.is_closing() or transport.get_write_buffer_size() > PHONE_WRITE_LIMIT:
            return False
        out = bytearray()
        for message in messages:
            data = message.encode()
            size = len(data)
            if size < 126:
                out += bytes((0x81, size))
            elif size < 65536:
                out += struct.pack("!BBH", 0x81, 126, size)
            else:
                out += struct.pack("!BBQ", 0x81, 127, size)
            out += data
        transport.write(out)
        return True

    def _phone_lost(self) -> None:
        self.wire.phone_closed("phone_socket_closed", self._now())

    async def _run_tool(self, run: RunTool) -> None:
        tool = next(t for t in self.call.profile.tools if t.name == run.name)
        runner = self.ctx.tool_runner
        output = await runner(tool, run) if runner is not None else '{"error": "tools are not available"}'
        self.wire.from_tools(run.call_id, output, self._now())
        await self._flush()

    # --- the legs ----------------------------------------------------------------------------

    async def _read_phone(self, ws: web.WebSocketResponse) -> None:
        """Feed the call with what one phone socket sends, until it closes or the call ends."""
        wire, call = self.wire, self.call
        text = WSMsgType.TEXT
        async for msg in ws:
            if msg.type is text or msg.type is WSMsgType.BINARY:
                wire.from_phone(msg.data, self._now())
                # The hot path (a caller frame): one message for Voice Live, written at once.
                out = call.to_voicelive
                if (len(out) == 1 and not call.to_phone and not call.to_tools and self.voicelive is not None
                        and wire.recorder is None and self.voicelive.send_nowait(out[0])):
                    out.clear()
                    if self.voicelive.paused:
                        await self.voicelive.drain()
                    continue
                await self._flush()
                if call.ended:
                    return
            elif msg.type is WSMsgType.ERROR:
                self.log.warning("phone socket error", error=str(ws.exception()))
                break

    async def _phone_side(self) -> None:
        await self._read_phone(self.phone)
        if not self.call.ended:
            self._phone_lost()

    async def _voicelive_side(self) -> None:
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
                    reaction = perf() - received
                    metrics.BARGE_IN_REACTION.observe(reaction, self.carrier)
                    self.observer("clear_sent", self._now(), {"reaction_ms": round(reaction * 1000, 3)})
                if call.ended:
                    return
        except TimeoutError:
            self.log.error("Voice Live did not confirm the session configuration in time", timeout_s=timeout)
            wire.voicelive_failed("voicelive_not_ready", self._now())
        except ConnectionClosed as exc:
            wire.voicelive_closed(exc.rcvd.code if exc.rcvd else None, self._now())
        await self._flush()

    async def _pacer(self) -> None:
        """Release the bot's audio to a phone leg without acknowledgements, in real time."""
        call = self.call
        while not call.ended:
            due = call.next_tick()
            if due is None:
                self._pacer_wake.clear()
                await self._pacer_wake.wait()
                continue
            delay = (due - self._now()) / 1000.0
            if delay > 0:
                await asyncio.sleep(delay)  # the playback clock itself
            call.tick(self._now())
            await self._flush()

    async def run(self) -> None:
        call, ctx = self.call, self.ctx
        ctx.add_call(self)
        self.log.info("call started", carrier=self.carrier, profile=call.profile_name)
        tasks = [
            asyncio.create_task(self._phone_side(), name=f"phone-{call.call_id}"),
            asyncio.create_task(self._voicelive_side(), name=f"voicelive-{call.call_id}"),
        ]
        if call.paced:
            tasks.append(asyncio.create_task(self._pacer(), name=f"pacer-{call.call_id}"))
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
            metrics.CALLS.inc(self.carrier, call.end_reason or "unknown")
            summary = call.summary(self._now())
            if self.wire.bad_input:
                summary["bad_messages"] = dict(self.wire.bad_input)
            self.log.info("call ended", carrier=self.carrier, **summary)

    async def _end_phone_call(self) -> None:
        """Carrier-specific end of the call when the gateway ends it (not the caller)."""
        return None

    async def _close_legs(self) -> None:
        if self.voicelive is not None:
            try:
                await self.voicelive.close()
            except Exception as exc:  # the call is over either way
                self.log.debug("closing the Voice Live socket failed", error=repr(exc))
            self.wire.gateway_closed(VOICELIVE, self.voicelive.close_code, self._now())
        if self.call.end_reason not in CALLER_ENDS:
            await self._end_phone_call()
        if not self.phone.closed:
            code = 1000 if self.call.end_reason in CALLER_ENDS else 1011
            await self.phone.close(code=code)
            self.wire.gateway_closed(PHONE, code, self._now())


def rejected(carrier: str, route: str, reason: str, status: int = 403, **fields: Any) -> web.Response:
    """Refuse a carrier request before anything is opened: log why (never the token), count it."""
    metrics.AUTH_REJECTIONS.inc(carrier, route, reason)
    log.warning("carrier request refused", carrier=carrier, route=route, reason=reason, status=status, **fields)
    return web.Response(status=status, text=f"{reason}\n")


CONTEXT: web.AppKey[GatewayContext] = web.AppKey("gateway_context", GatewayContext)

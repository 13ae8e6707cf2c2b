"""The I/O shell: runs one call between a phone media socket and a Voice Live socket.

All decisions are made by the pure :class:`gateway.call.Call`; this module only reads sockets,
feeds the call with the current time, and writes what the call queued. One task reads the phone,
one reads Voice Live; when either side ends, the other is cancelled and both sockets are closed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from gateway.call import Call, ClearPlayback, Observer, PlayAudio, SendMark
from gateway.carriers import twilio
from gateway.config import GatewayConfig
from gateway.log import get_logger
from gateway.voicelive.client import VoiceLiveConnectError, VoiceLiveConnector

log = get_logger("gateway.bridge")

START_TIMEOUT_S = 10.0
MAX_PHONE_MESSAGE = 1 << 20


def _noop_observer(_e: str, _t: float, _f: dict[str, Any]) -> None:
    return None


@dataclass
class GatewayContext:
    """What every call needs from the running gateway."""

    config: GatewayConfig
    connector: VoiceLiveConnector
    observer_factory: Callable[[str], Observer] | None = None
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


def _now_ms() -> float:
    return time.monotonic() * 1000.0


class CallBridge:
    """One Twilio media stream bridged to one Voice Live session."""

    def __init__(self, ctx: GatewayContext, phone: web.WebSocketResponse, start: twilio.Start,
                 profile_name: str) -> None:
        self.ctx = ctx
        self.phone = phone
        self.encoder = twilio.TwilioEncoder(start.stream_sid)
        self.log = log.bind(call_id=start.call_sid, stream_id=start.stream_sid)
        self.observer = ctx.observer_for(start.call_sid)
        self.call = Call(
            call_id=start.call_sid,
            stream_id=start.stream_sid,
            profile_name=profile_name,
            profile=ctx.config.profiles[profile_name],
            started_at=_now_ms(),
            observer=self.observer,
            log=self.log,
        )
        self.voicelive: ClientConnection | None = None
        self._bad_input: dict[str, int] = {}

    # --- output ----------------------------------------------------------------------------

    async def _flush(self) -> None:
        """Send everything the call queued, in order, to each leg."""
        call = self.call
        if call.to_voicelive and self.voicelive is not None:
            messages, call.to_voicelive = call.to_voicelive, []
            send = self.voicelive.send
            try:
                for message in messages:
                    await send(message)
            except ConnectionClosed as exc:
                call.voicelive_closed(exc.rcvd.code if exc.rcvd else None, _now_ms())
        if call.to_phone:
            actions, call.to_phone = call.to_phone, []
            send_str, enc = self.phone.send_str, self.encoder
            try:
                for action in actions:
                    kind = type(action)
                    if kind is PlayAudio:
                        await send_str(enc.media(action.payload))  # type: ignore[union-attr]
                    elif kind is SendMark:
                        await send_str(enc.mark(action.name))  # type: ignore[union-attr]
                    elif kind is ClearPlayback:
                        await send_str(enc.clear())
                    # Hangup: closing the media socket (when the call ends) hands the call back to
                    # Twilio, which continues with the TwiML after <Connect>.
            except ConnectionResetError:
                call.phone_ended("phone_socket_closed", _now_ms())

    def _reject(self, kind: str, detail: str, leg: str = "phone") -> None:
        """Bad input: one clear line per kind of problem, then counted at debug."""
        count = self._bad_input.get(kind, 0) + 1
        self._bad_input[kind] = count
        level = self.log.warning if count == 1 else self.log.debug
        level("ignored a bad message", leg=leg, problem=kind, detail=detail, count=count)

    # --- the two legs -------------------------------------------------------------------------

    async def _phone_loop(self) -> None:
        call = self.call
        parse = twilio.parse_message
        Media, MarkAck = twilio.Media, twilio.MarkAck
        async for msg in self.phone:
            if msg.type is WSMsgType.TEXT:
                try:
                    event = parse(msg.data)
                except twilio.TwilioProtocolError as exc:
                    self._reject("malformed", str(exc))
                    continue
                kind = type(event)
                if kind is Media:
                    if event.track == "inbound":  # type: ignore[union-attr]
                        call.caller_audio(event.payload, _now_ms())  # type: ignore[union-attr]
                elif kind is MarkAck:
                    call.playback_mark(event.name, _now_ms())  # type: ignore[union-attr]
                elif kind is twilio.Stop:
                    call.phone_ended("caller_hung_up", _now_ms())
                elif kind is twilio.Dtmf:
                    call.dtmf(event.digit, _now_ms())  # type: ignore[union-attr]
                elif kind is twilio.Start:
                    self._reject("duplicate-start", "a second start message on the same stream")
                elif kind is twilio.OtherEvent:
                    self.log.debug("ignored an unknown Twilio event", twilio_event=event.event)  # type: ignore[union-attr]
                await self._flush()
                if call.ended:
                    return
            elif msg.type is WSMsgType.BINARY:
                self._reject("binary-frame", f"{len(msg.data)} bytes; Twilio sends text frames only")
            elif msg.type is WSMsgType.ERROR:
                self.log.warning("phone socket error", error=str(self.phone.exception()))
                break
        call.phone_ended("phone_socket_closed", _now_ms())

    async def _voicelive_loop(self) -> None:
        call = self.call
        ctx = self.ctx
        timeout = ctx.config.voicelive.connect_timeout_s
        try:
            self.voicelive = await ctx.connector.connect(call.profile)
        except VoiceLiveConnectError as exc:
            self.log.error("could not open the Voice Live session", reason=str(exc), status=exc.status)
            call.voicelive_failed("voicelive_unavailable", _now_ms())
            await self._flush()
            return
        ws = self.voicelive
        call.voicelive_connected(_now_ms())
        await self._flush()
        loop = asyncio.get_running_loop()
        ready_by = loop.time() + timeout
        perf = time.perf_counter
        try:
            while True:
                if call.state == "connecting":
                    remaining = ready_by - loop.time()
                    if remaining <= 0:
                        raise TimeoutError
                    raw = await asyncio.wait_for(ws.recv(), remaining)
                else:
                    raw = await ws.recv()
                received = perf()
                try:
                    event = json.loads(raw)
                except ValueError:
                    event = None
                if type(event) is not dict:
                    self._reject("voicelive-not-json", "a Voice Live message that is not a JSON object",
                                 leg="voicelive")
                    continue
                barge_ins = len(call.barge_ins)
                call.voicelive_event(event, _now_ms())
                await self._flush()
                if len(call.barge_ins) != barge_ins and call.barge_ins[-1].cleared:
                    self.observer("clear_sent", _now_ms(),
                                  {"reaction_ms": round((perf() - received) * 1000, 3)})
                if call.ended:
                    return
        except TimeoutError:
            self.log.error("Voice Live did not confirm the session configuration in time", timeout_s=timeout)
            call.voicelive_failed("voicelive_not_ready", _now_ms())
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            call.voicelive_closed(code, _now_ms())
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
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, Exception):
                    self.log.error("call failed", error=repr(result))
            if not call.ended:
                call.phone_ended("gateway_error", _now_ms())
            await self._close_legs()
            ctx.remove_call(self)
            summary = call.summary(_now_ms())
            if self._bad_input:
                summary["bad_messages"] = dict(self._bad_input)
            self.log.info("call ended", **summary)

    async def _close_legs(self) -> None:
        if self.voicelive is not None:
            try:
                await self.voicelive.close()
            except Exception as exc:  # the call is over either way
                self.log.debug("closing the Voice Live socket failed", error=repr(exc))
        if not self.phone.closed:
            code = 1000 if self.call.end_reason in ("caller_hung_up", "phone_socket_closed") else 1011
            await self.phone.close(code=code)


async def _await_start(ws: web.WebSocketResponse, bind: Any) -> twilio.Start | None:
    """Read the socket until a valid ``start``; nothing is opened on Voice Live before it."""
    early_media = 0
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    try:
                        event = twilio.parse_message(msg.data)
                    except twilio.TwilioProtocolError as exc:
                        if exc.event == "start":
                            bind.error("media stream refused: unusable start message", reason=str(exc))
                            await ws.close(code=1003, message=b"unsupported start")
                            return None
                        bind.warning("ignored a bad message before start", detail=str(exc))
                        continue
                    if type(event) is twilio.Start:
                        return event
                    if type(event) is twilio.Media:
                        early_media += 1
                        if early_media == 1:
                            bind.warning("media before start; dropped (no call to send it to)")
                    elif type(event) is twilio.Stop:
                        bind.info("stream stopped before it started")
                        return None
                elif msg.type is WSMsgType.BINARY:
                    bind.warning("ignored a binary frame before start")
    except TimeoutError:
        bind.warning("no start message in time; closing the media socket", timeout_s=START_TIMEOUT_S)
    return None


async def twilio_media(request: web.Request) -> web.StreamResponse:
    """``GET /twilio/media``: the Twilio Media Streams WebSocket."""
    ctx: GatewayContext = request.app[CONTEXT]
    ws = web.WebSocketResponse(max_msg_size=MAX_PHONE_MESSAGE, autoping=True)
    await ws.prepare(request)
    try:
        start = await _await_start(ws, log)
        if start is None:
            return ws
        params = start.params
        name = params.get("profile")
        if name not in ctx.config.profiles:
            if name:
                log.warning("unknown profile in stream parameters; routing by number instead",
                            call_id=start.call_sid, profile=name)
            name, _ = ctx.config.route(params.get("to"))
        await CallBridge(ctx, ws, start, name).run()
    finally:
        if not ws.closed:
            await ws.close()
    return ws


CONTEXT: web.AppKey[GatewayContext] = web.AppKey("gateway_context", GatewayContext)

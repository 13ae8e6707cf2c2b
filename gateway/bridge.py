"""The I/O shell: runs one call between a phone media socket and a Voice Live socket.

All decisions are made by the pure :class:`gateway.call.Call`, wrapped with its wire formats in a
:class:`gateway.wire.WireCall`; this module only reads sockets, feeds the call with the current
time, and writes what the call queued. One task reads the phone, one reads Voice Live, and on a
leg without playback acknowledgements one paces the bot's audio in real time; when either
side ends, the others are cancelled and both sockets are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from gateway import metrics
from gateway.audio import AudioFormat
from gateway.auth import CallTokens
from gateway.call import APPEND_HEAD, CALL_OPTIONS, Call, CallState, Observer, RunTool, SessionExpires
from gateway.config import GatewayConfig, Profile
from gateway.core.outbound import UNKNOWN, OutboundPlan, answering_machine_result
from gateway.failures import FailedCalls
from gateway.frames import write_server_frames
from gateway.log import get_logger
from gateway.loopshare import LoopShare, urgent
from gateway.outbound import Outbound
from gateway.phonesocket import PhoneSocket
from gateway.prewarm import WarmSession, WarmSessions
from gateway.recording import CallRecorder, RecordingWriter
from gateway.records import CallEvents, RecordOptions, build_record
from gateway.tools import ToolRunner
from gateway.tracing import CallTrace, Tracing, clock_zero_ns, use_tool_headers
from gateway.voicelive.client import VoiceLiveConnectError, VoiceLiveConnection
from gateway.voicelive.pool import NoBudget, ResourcePool
from gateway.webhooks import RecordDelivery
from gateway.wire import PHONE, VOICELIVE, PhoneLeg, PhoneMessage, WireCall
from gateway.workers import worker_count

log = get_logger("gateway.bridge")

MAX_PHONE_MESSAGE = 1 << 20
_HANDED_OVER = object()  # a phone message the call took as it was parsed, with work left for the reading task
RECONNECT_BACKOFF_S = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
RENEWAL_QUIET_WAIT_S = 30.0  # a renewal's fresh session waits this long at most for a quiet moment
PHONE_WRITE_LIMIT = 1 << 16  # bytes waiting in the phone socket before writes go through aiohttp
RECENT_RECORDS = 20  # post-call records the console shows (the newest; each worker its own)

# Ends that came from the caller's side: nothing to hang up, the socket closes normally.
CALLER_ENDS = ("caller_hung_up", "phone_socket_closed")
# Ends where the gateway failed the caller (they hear an apology where the carrier allows it).
FAILURE_ENDS = ("voicelive_unavailable", "voicelive_busy", "voicelive_lost", "voicelive_not_ready", "voicelive_closed",
                "voicelive_stalled", "voicelive_session_rejected", "audio_format_rejected", "gateway_error",
                "drain_timeout")


def _noop_observer(_e: str, _t: float, _f: dict[str, Any]) -> None:
    return None


_EVENT_ID = re.compile(r',"event_id":"gw_[0-9]+"\}$')  # the last field of what a call sends (Call._send)


def _unnumbered(text: str | bytes) -> str | bytes:
    """A message the call sends, without its event id."""
    return _EVENT_ID.sub("}", text) if isinstance(text, str) else text


def now_ms() -> float:
    return time.monotonic() * 1000.0


class CallObserver:
    """A call's observer: what it reports is counted in the metrics, then passed on (to a test, the
    demo). It also notes the moment a barge-in flushed the phone, for the reaction-time metric, and
    with post-call records on, keeps what the call's record needs (``events``), and with tracing on,
    makes the call's trace of it (``trace``)."""

    __slots__ = ("barge_in_flushed", "carrier", "downstream", "events", "trace")

    def __init__(self, carrier: str, downstream: Observer, events: CallEvents | None = None) -> None:
        self.carrier = carrier
        self.downstream = downstream
        self.barge_in_flushed = False
        self.events = events
        self.trace: CallTrace | None = None

    def __call__(self, event: str, t: float, fields: dict[str, Any]) -> None:
        if event == "bot.first_audio" and fields.get("after_speech_stopped_ms") is not None:
            metrics.FIRST_AUDIO.observe(fields["after_speech_stopped_ms"] / 1000.0, self.carrier)
        elif event == "barge_in":
            metrics.BARGE_INS.inc(self.carrier)
            if fields.get("truncated_at_ms"):
                metrics.TRUNCATIONS.inc(self.carrier)
            self.barge_in_flushed = self.barge_in_flushed or bool(fields.get("cleared"))
        elif event == "voicelive.error":
            metrics.VOICELIVE_ERRORS.inc(metrics.error_code_label(str(fields.get("code") or "")))
        if self.events is not None:
            self.events(event, t, fields)
        if self.trace is not None:
            self.trace(event, t, fields)
        self.downstream(event, t, fields)


@dataclass
class GatewayContext:
    """What every call needs from the running gateway."""

    config: GatewayConfig
    pool: ResourcePool  # the Voice Live resources and their connection budgets
    tokens: CallTokens
    observer_factory: Callable[[str], Observer] | None = None
    recording: RecordingWriter | None = None
    tool_runner: ToolRunner | None = None
    records: RecordDelivery | None = None  # post-call records are delivered (None: no webhook configured)
    tracing: Tracing | None = None  # each call is a trace (None: tracing is off)
    calls: dict[str, CallBridge] = field(default_factory=dict)
    failed_calls: FailedCalls = field(default_factory=FailedCalls)  # calls the gateway gave up on
    # the last calls' post-call records, as delivered (masked), for the console; the newest last
    recent_records: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT_RECORDS))
    draining: bool = False  # SIGTERM: finish the calls in progress, take no new ones
    share: LoopShare = field(default_factory=LoopShare)  # Voice Live's share of each pass of the loop
    _idle: asyncio.Event = field(default_factory=asyncio.Event)
    _retired_profiles: dict[str, Profile] = field(default_factory=dict)  # removed by a reload (see profile)
    outbound: Outbound = field(init=False)  # the calls this worker placed
    warm: WarmSessions = field(init=False)  # sessions opened when a call was announced, before its media
    prewarms: bool = field(init=False)  # calls announced get their session at once

    def __post_init__(self) -> None:
        self._idle.set()
        self.outbound = Outbound(self.config.gateway.outbound)
        self.warm = WarmSessions(lambda profile, carrier: self.pool.connect(profile, "warm", carrier=carrier))
        prewarm = self.config.voicelive.prewarm
        self.prewarms = prewarm is True or (prewarm == "auto" and worker_count() == 1)
        self.outbound.ended_without_media = self._unanswered

    def reconfigure(self, config: GatewayConfig) -> None:
        """A reloaded configuration: calls that start from now on use it. A profile it no longer has
        stays known to the calls already announced with it (a webhook answered, the media not yet
        open), which start with it as they were told (:meth:`profile`)."""
        for name, profile in self.config.profiles.items():
            if name not in config.profiles:
                self._retired_profiles[name] = profile
        for name in config.profiles:
            self._retired_profiles.pop(name, None)
        self.config = config

    def profile(self, name: str) -> Profile:
        """The profile a call starting now gets by its name: the configuration's, or, for a call
        announced before a reload removed its profile, the one it was announced with."""
        profile = self.config.profiles.get(name)
        return profile if profile is not None else self._retired_profiles[name]

    def busy_message(self, profile_name: str) -> str | None:
        """What a call announced now should hear instead of the bot, when no Voice Live resource of its
        profile has a connection left in its budget and the profile does not wait for one (None: the
        call goes ahead). Counted as a refused call by the carrier that asks."""
        profile = self.profile(profile_name)
        if profile.busy.wait_s > 0 or self.pool.has_budget(profile):
            return None
        metrics.VOICELIVE_BUSY.inc("call")
        return profile.busy.message or self.config.gateway.apology

    def refuse_busy(self, carrier: str, call_id: str, profile_name: str) -> str | None:
        """:meth:`busy_message` for a call a carrier announces: a refusal is logged and counted."""
        message = self.busy_message(profile_name)
        if message is not None:
            log.warning("call refused: no Voice Live connection left in the budget", carrier=carrier,
                        call_id=call_id, profile=profile_name)
            metrics.CALLS.inc(carrier, "refused (no budget)")
        return message

    def prewarm(self, carrier: str, call_id: str, profile_name: str, audio: AudioFormat, *,
                outbound: OutboundPlan | None = None, binding: str | None = None) -> None:
        """A carrier announced a call (or this worker placed one): open its Voice Live session now,
        for its media socket to take (see :mod:`gateway.prewarm`)."""
        vl = self.config.voicelive
        if not self.prewarms or self.draining or call_id in self.calls:  # (a repeated announcement)
            return
        timeout = vl.prewarm_outbound_timeout_s if outbound is not None else vl.prewarm_timeout_s
        self.warm.start(carrier, call_id, profile_name, self.profile(profile_name), audio,
                        timeout_s=timeout, outbound=outbound, binding=binding)

    def _unanswered(self, carrier: str, call_id: str) -> None:
        """A placed call ended before its media (busy, no answer, failed): its pre-warmed session, if
        it still waits, is closed now rather than at its timeout."""
        warm = self.warm.claim(carrier, call_id)
        if warm is not None:
            self.warm.discard(warm, "wasted")

    def refusal(self) -> str | None:
        """Why a new call cannot be taken now (None: it can). A call this worker placed holds its
        place in ``max_calls`` from the moment it is placed: until its media starts (it is then one
        of ``calls``) or it ends without media (see :meth:`Outbound.places_held`)."""
        return self._refusal(None, None)

    def media_refusal(self, carrier: str, call_id: str | None) -> str | None:
        """Why the media stream of a call of ``carrier`` cannot be taken now (``call_id``: None while
        the stream has not yet said which call it is). A call this worker placed takes the place it
        holds: its stream is never refused for its own place."""
        return self._refusal(carrier, call_id)

    def _refusal(self, carrier: str | None, call_id: str | None) -> str | None:
        if self.draining:
            return "draining"
        outbound = self.outbound
        outbound._prune(time.time())
        if len(self.calls) + outbound.places_held(self.calls, carrier, call_id) >= self.config.gateway.max_calls:
            return "at max_calls"
        return None

    @property
    def insecure(self) -> bool:
        return self.config.gateway.insecure_dev_mode

    def observer_for(self, call_id: str, carrier: str) -> CallObserver:
        """What a new call reports to: the metrics of its carrier, then the application's observer."""
        return CallObserver(carrier, self.observer_factory(call_id) if self.observer_factory else _noop_observer,
                            CallEvents() if self.records is not None else None)

    def add_call(self, bridge: CallBridge) -> None:
        self.calls[bridge.call.call_id] = bridge
        self._idle.clear()
        metrics.ACTIVE_CALLS.inc(bridge.carrier)

    def remove_call(self, bridge: CallBridge) -> None:
        if self.calls.get(bridge.call.call_id) is bridge:
            del self.calls[bridge.call.call_id]
        metrics.ACTIVE_CALLS.inc(bridge.carrier, amount=-1)
        if bridge.call.direction == "outbound":
            self.outbound.ended(bridge.call)
        if not self.calls:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no call is in progress (every call's tasks and sockets are finished)."""
        await self._idle.wait()

    def call_options(self, call_id: str | None = None) -> dict[str, Any]:
        """What every call takes from the configuration (beyond its profile); with its id, a call this
        worker placed also learns how it opens (see :mod:`gateway.outbound`)."""
        vl = self.config.voicelive
        options: dict[str, Any] = {"reconnect_budget_ms": vl.reconnect_budget_s * 1000.0,
                                   "renew_before_ms": vl.renew_before_expiry_s * 1000.0,
                                   "renew_spread_ms": vl.renew_spread_s * 1000.0}
        if call_id is not None:
            options.update(self.outbound.call_options(call_id))
        return options

    async def answering_machine(self, call_id: str, result: str, *, carrier: str) -> bool:
        """A carrier's answering-machine result for a call this worker placed: the live call acts on it
        (or, before its media started, learns it when it starts). False: not a call of this worker.
        A result that is not one of the gateway's (a carrier's word its package did not map) counts as
        "unknown": it never reaches the call, its state or its record as it came."""
        if answering_machine_result(result) is None:
            log.warning("an answering-machine result the gateway does not know: taken as unknown", carrier=carrier,
                        result=result[:40])
            result = UNKNOWN
        known = self.outbound.placed(call_id, carrier)
        plan = known.plan if known is not None else None
        placed = self.outbound.answered(call_id, result, carrier=carrier)
        if placed is None:
            return False
        bridge = self.calls.get(call_id)
        if bridge is not None:
            await bridge.answering_machine(result)
        elif placed.plan is not plan:
            # the call will start knowing the result: the session opened when it was placed was set up
            # for a call without it, so it is replaced by one for the call as it will start
            warm = self.warm.claim(carrier, call_id)
            if warm is not None:
                self.warm.discard(warm, "mismatch")
                self.prewarm(carrier, call_id, warm.profile_name, warm.audio, outbound=placed.plan)
        return True

    def note_busy(self, call_id: str, profile: Profile) -> None:
        """A call that found no Voice Live connection: its carrier says the profile's busy message."""
        self.failed_calls.note(call_id, profile.busy.message or self.config.gateway.apology)

    def note_failure(self, call_id: str) -> None:
        """Remember, for a while, that a call ended because the gateway could not serve it: the
        carrier's follow-up request gets the apology (a busy message noted before is kept)."""
        if call_id not in self.failed_calls:
            self.failed_calls.note(call_id, self.config.gateway.apology)

    async def failure_message(self, call_id: str) -> str | None:
        """What the caller of a call the gateway failed hears from the carrier's follow-up request (None:
        the gateway did not fail it), whichever worker or replica failed it (see :mod:`gateway.failures`)."""
        return await self.failed_calls.message(call_id)

    def call_ended(self, carrier: str, call: Call, events: CallEvents | None, clock_zero_s: float) -> None:
        """Count what an ended call cost, and hand its record to the delivery (in the background)."""
        direction = metrics.direction_label(call.direction)
        if call.ended_at is not None:
            metrics.CALL_SECONDS.inc(carrier, direction, amount=max(0.0, call.ended_at - call.started_at) / 1000.0)
        for kind, tokens in call.usage.by_kind().items():
            if tokens:
                metrics.TOKENS.inc(kind, amount=tokens)
        webhook = self.config.record_webhook(call.profile)
        if self.records is None or events is None or webhook is None:
            return
        setting = call.profile.record
        record_id = f"rec_{uuid.uuid4().hex}"
        try:
            record = build_record(call, events.events, record_id=record_id, carrier=carrier,
                                  clock_zero_s=clock_zero_s, failed=call.end_reason in FAILURE_ENDS,
                                  options=RecordOptions(setting.mask_numbers, setting.mask_digits, setting.min_digits))
        except Exception as exc:  # a record must never break the end of a call
            log.error("the call record could not be built", call_id=call.call_id, error=repr(exc))
            return
        self.recent_records.append(record | {"caller_turns": call.stats.caller_turns})  # (for the console)
        self.records.submit(record_id, webhook, json.dumps(record, separators=(",", ":")).encode())

    def open_recorder(self, carrier: str, call: Call) -> CallRecorder | None:
        if self.recording is None:
            return None
        return self.recording.open_call(
            carrier=carrier, call_id=call.call_id, stream_id=call.stream_id, profile_name=call.profile_name,
            profile=call.profile.model_dump(mode="json", exclude_none=True), audio=call.audio,
            options={name: getattr(call, name) for name in CALL_OPTIONS}
            | ({"outbound": call.outbound.recorded()} if call.outbound is not None else {}))


class CallBridge:
    """One phone media stream bridged to one Voice Live session.

    The call's clock counts milliseconds from the moment the media socket opened, the same clock
    its recording uses, so that a replay computes exactly what the live call computed.
    """

    carrier = "phone"
    binding: str | None = None  # what a pre-warmed session bound to more than the call id must name (see prewarm)

    def __init__(self, ctx: GatewayContext, phone: web.WebSocketResponse, call: Call, leg: PhoneLeg,
                 opened_at: float, recorder: CallRecorder | None, transport: Any = None) -> None:
        self.ctx = ctx
        self.phone = phone
        self.phone_transport = transport  # the phone socket's transport, for writing frames in one go
        self.call = call
        self.log = call.log
        observer = call.observer
        self.observer = observer if isinstance(observer, CallObserver) else CallObserver(self.carrier, observer)
        self._opened_at = opened_at
        self.recorder = recorder
        self.wire = WireCall(call, leg, recorder)
        self.voicelive: VoiceLiveConnection | None = None
        self._renewing: asyncio.Task[None] | None = None  # opening the session that replaces this one
        self._renewed: VoiceLiveConnection | None = None  # opened by a renewal, for the pump to take
        # a renewal waiting to switch sessions: set at a quiet moment (made by the renewal: few calls renew)
        self._quiet: asyncio.Event | None = None
        self._tool_tasks: set[asyncio.Task[None]] = set()
        self._clock_wake: asyncio.Future[None] | None = None  # what the clock waits on (an Event costs 0.9 KiB)
        self._clock_due: float | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def _now(self) -> float:
        return now_ms() - self._opened_at

    async def _flush(self, taken: list[str] | None = None) -> None:
        """Send everything the call queued, in order, to each leg (``taken``: Voice Live messages
        already taken from the wire, which go first)."""
        wire = self.wire
        ws = self.voicelive
        for action in wire.take_shell():
            if isinstance(action, SessionExpires):
                wire.session_expiry(action.at - time.time(), self._now())
            elif ws is not None and ws.state is State.OPEN and self._renewing is None:  # RenewSession
                # a quiet moment before the session expires: the fresh session is opened first
                self._renewing = asyncio.create_task(self._renew(ws), name=f"renew-{self.call.call_id}")
        if ws is not None:
            messages = (taken or []) + wire.take_voicelive()
            if messages:
                # Written at once, never waiting for Voice Live to read: a session that stops reading
                # is caught by the backlog bound below instead of stalling the call's other leg.
                try:
                    if not ws.send_all_nowait(messages):
                        for text in messages:
                            await ws.send(text)  # not open any more: raises ConnectionClosed
                except ConnectionClosed as exc:
                    if not self.call.ended:
                        wire.voicelive_closed(exc.rcvd.code if exc.rcvd else None, self._now())
        to_phone = wire.take_phone()
        if to_phone and not self.phone.closed and not self._write_phone(to_phone):
            send_str, send_bytes = self.phone.send_str, self.phone.send_bytes  # (audio for a closed socket is dropped)
            try:
                for message in to_phone:
                    if type(message) is bytes:
                        await send_bytes(message)
                    else:
                        await send_str(message)  # type: ignore[arg-type]
            except ConnectionResetError:
                self._phone_lost()
        self._settle()

    def _settle(self) -> None:
        """After the call's messages have gone: its clock, the Voice Live backlog, a renewal waiting
        for a quiet moment, and the tools it asked for."""
        wire = self.wire
        self._wake_clock()
        self._check_backlog()
        if self._renewed is not None and self._quiet is not None and self.call.quiet(self._now()):
            self._quiet.set()
        for run in wire.take_tools():
            task = asyncio.create_task(self._run_tool(run), name=f"tool-{self.call.call_id}-{run.name}")
            self._tool_tasks.add(task)
            task.add_done_callback(self._tool_tasks.discard)

    def _write_phone(self, messages: list[PhoneMessage]) -> bool:
        """Write messages to the phone as WebSocket frames in one system call (a piece of bot
        audio and its mark go together). False when aiohttp's own path must send them: no
        transport, or a backlog (aiohttp then waits for the socket to drain)."""
        return write_server_frames(self.phone_transport, messages, PHONE_WRITE_LIMIT)

    def _check_backlog(self) -> None:
        """A Voice Live socket that stops reading must not grow memory without bound."""
        ws = self.voicelive
        if ws is None or self.call.ended:
            return
        backlog = ws.transport.get_write_buffer_size()
        if backlog > self.ctx.config.voicelive.max_send_backlog_kib * 1024:
            self.log.error("Voice Live is not reading what the gateway sends; ending the call",
                           backlog_kib=backlog // 1024)
            metrics.FRAMES_DROPPED.inc("voicelive_stalled")
            self.wire.voicelive_failed("voicelive_stalled", self._now())
            ws.transport.abort()

    def _phone_lost(self) -> None:
        self.wire.phone_closed("phone_socket_closed", self._now())

    async def _run_tool(self, run: RunTool) -> None:
        if run.builtin == "send_dtmf":
            output = await self._send_dtmf(json.loads(run.arguments)["digits"])
        else:
            tool = next(t for t in self.call.profile.tools if t.name == run.name)
            runner = self.ctx.tool_runner
            trace = self.observer.trace
            if trace is not None:  # (this task's own context: the tool's request continues the call's trace)
                use_tool_headers(trace.tool_headers(run.call_id))
            output = await runner(tool, run) if runner is not None else '{"error": "tools are not available"}'
        self.wire.from_tools(run.call_id, output, self._now())
        await self._flush()

    async def answering_machine(self, result: str) -> None:
        """Who answered this placed call (the carrier's detection): the call greets, leaves its
        voicemail message, or hangs up."""
        self.wire.answering_machine(result, self._now())
        await self._flush()
        self._set_clock()  # its deadlines changed (or it ended: the clock ends the bridge)

    async def _send_dtmf(self, digits: str) -> str:
        """Press keys towards the caller (carriers that can do it override this)."""
        return json.dumps({"error": "this line cannot send keypad tones"})

    # --- the legs ----------------------------------------------------------------------------

    async def _read_phone(self, ws: web.WebSocketResponse) -> None:
        """Feed the call with what one phone socket sends, until it closes or the call ends.

        A :class:`PhoneSocket` offers each message to the call as aiohttp parses it, while this task
        waits for the next one and none is queued: a caller frame then goes to Voice Live at once,
        ahead of the other calls' work woken in the same pass of the event loop."""
        wire, call = self.wire, self.call
        text, binary = WSMsgType.TEXT, WSMsgType.BINARY
        fast = not call.listens  # a call that listens to the caller may set a timer on any frame
        outbox = wire.leg_outbox
        busy = True  # this task has a message in hand (nothing is taken past it meanwhile)
        left: list[str] = []  # Voice Live messages of a message handed to this task, taken from the wire

        def handle(data: str | bytes) -> list[str] | None:
            """Feed one message to the call and send what it leaves, if that needs no waiting (None).
            Otherwise the Voice Live messages it left, taken from the wire at once (so that they go
            before anything the call queues later, whatever happens to the session meanwhile): this
            task sends them, and the rest (``_flush``)."""
            wire.from_phone(data, self._now())
            vl = self.voicelive
            if vl is None or vl.state is not State.OPEN or call.to_phone or call.to_tools or outbox \
                    or call.to_shell or call.ended:
                return wire.take_voicelive() if vl is not None else []
            queued = len(call.to_voicelive)
            if queued == 1 and fast:
                # The hot path (a caller frame): one message for Voice Live, taken from the wire (so a
                # recording sees it) and written at once
                vl.send_nowait(wire.take_voicelive()[0])
                if vl.paused:
                    self._check_backlog()
                return None
            if queued:
                vl.send_all_nowait(wire.take_voicelive())
            self._settle()  # (a mark, say; or a frame of a call that listens: its clock may have changed)
            return None

        def take(data: str | bytes) -> object:
            nonlocal busy, left
            if busy:
                return data  # queued for this task, behind the message it has in hand
            work = handle(data)
            if work is None:
                return None
            busy = True  # this task sends the rest, before anything after it
            left = work
            return _HANDED_OVER

        offered = ws if isinstance(ws, PhoneSocket) and ws.offer_to(take) else None
        try:
            while True:
                busy = False
                msg = await ws.receive()
                busy = True
                kind = msg.type
                if msg.data is _HANDED_OVER:
                    handed, left = left, []
                    await self._flush(handed)
                elif kind is text or kind is binary:
                    work = handle(msg.data)
                    if work is not None:
                        await self._flush(work)
                elif kind is WSMsgType.ERROR:  # e.g. a frame over the size limit: aiohttp closes (1009)
                    self.log.warning("phone socket error; the socket is closed", error=str(ws.exception())[:200])
                    break
                elif kind is WSMsgType.CLOSE or kind is WSMsgType.CLOSING or kind is WSMsgType.CLOSED:
                    break
                if call.ended:
                    return
        finally:
            if offered is not None:
                offered.offer_to(None)

    async def _phone_side(self) -> None:
        await self._read_phone(self.phone)
        if not self.call.ended:
            self._phone_lost()

    async def _voicelive_side(self) -> None:
        """Open the Voice Live session, pump it, and reopen it when it drops mid-call (within the
        reconnect budget) or when the call asks for a fresh one before the session expires."""
        wire, call, ctx = self.wire, self.call, self.ctx
        episode: float | None = None  # the reconnect episode under way (its deadline), and its tries
        attempt = 0
        warm = ctx.warm.claim(self.carrier, call.call_id)
        if warm is not None:
            ws = await self._take_warm(warm)
            del warm  # (what it replayed, up to MAX_WARM_BYTES, is not kept for the rest of the call)
            if ws is not None and not await self._pump(ws):
                return
        while not call.ended:
            if call.state == CallState.RECONNECTING:
                if call.sessions.reconnect_deadline != episode:
                    episode, attempt = call.sessions.reconnect_deadline, 0
                if attempt:  # every retry of an episode backs off, even after sessions that opened
                    await asyncio.sleep(self._backoff(attempt))
                attempt += 1
            renewed, self._renewed = self._renewed, None
            if renewed is not None:  # a renewal opened the fresh session before closing the old one
                self.voicelive = renewed
                metrics.VOICELIVE_RENEWALS.inc("renewed")
                wire.voicelive_opened(self._now())
                await self._flush()
                if not await self._pump(renewed):
                    return
                continue
            reconnecting = call.state == CallState.RECONNECTING
            deadline = call.sessions.reconnect_deadline
            # a new call may wait for budget as its profile says; a reconnect within its own budget
            wait_s = (max(0.0, (deadline - self._now()) / 1000) if reconnecting and deadline is not None
                      else call.profile.busy.wait_s)
            try:
                self.voicelive = await ctx.pool.connect(call.profile, "reconnect" if reconnecting else "call",
                                                        wait_s=wait_s, carrier=self.carrier,
                                                        waiting=None if reconnecting else self._hold)
            except NoBudget as exc:
                self.log.error("no Voice Live connection left in the budget", reconnecting=reconnecting,
                               retry_after_s=round(exc.retry_after_s or 0.0, 1))
                metrics.VOICELIVE_FAILURES.inc(self.carrier, "no_budget")
                if not reconnecting:
                    ctx.note_busy(call.call_id, call.profile)
                wire.voicelive_failed("voicelive_lost" if reconnecting else "voicelive_busy", self._now())
                await self._flush()
                return
            except VoiceLiveConnectError as exc:
                metrics.VOICELIVE_FAILURES.inc(self.carrier, metrics.status_label(exc.status))
                deadline = call.sessions.reconnect_deadline
                if call.state == CallState.RECONNECTING and deadline is not None and self._now() < deadline:
                    log_retry = self.log.warning if attempt == 1 else self.log.debug  # one warning per episode
                    log_retry("Voice Live reconnect failed; retrying", reason=str(exc), status=exc.status,
                              attempt=attempt)
                    continue
                self.log.error("could not open the Voice Live session", reason=str(exc), status=exc.status)
                reason = "voicelive_lost" if call.state == CallState.RECONNECTING else "voicelive_unavailable"
                wire.voicelive_failed(reason, self._now(), status=exc.status)
                await self._flush()
                return
            if call.state == CallState.RECONNECTING:
                metrics.VOICELIVE_RECONNECTS.inc(self.carrier)
            wire.voicelive_opened(self._now())
            await self._flush()
            if not await self._pump(self.voicelive):
                return

    async def _hold(self) -> None:
        """A new call waits for a Voice Live connection (its profile's busy.wait_s): hold audio meanwhile."""
        self.log.info("waiting for a Voice Live connection to free up", wait_s=self.call.profile.busy.wait_s)
        self.wire.hold(int(self.call.profile.busy.wait_s * 1000), self._now())
        await self._flush()

    async def _renew(self, old: VoiceLiveConnection) -> None:
        """Open the session that replaces ``old`` (within the budget, leaving its reserve for new calls),
        then close ``old``: the pump goes on with the fresh one. No budget to spare: the call keeps
        ``old`` and tries again later."""
        try:
            try:
                fresh = await self.ctx.pool.connect(self.call.profile, "renewal", carrier=self.carrier)
            except VoiceLiveConnectError as exc:
                metrics.VOICELIVE_RENEWALS.inc("deferred")
                self.log.info("session renewal deferred", reason=str(exc))
                if not self.call.ended:
                    self.wire.renewal_deferred(self._now())
                    await self._flush()
                return
            if self.call.ended or self.call.state == CallState.CLOSING or old.state is not State.OPEN:
                # the call, or the old session, ended meanwhile; or the call is closing on what the old
                # session says (a goodbye, which closing it would cut short)
                await fresh.close()
                return
            self._renewed = fresh
            quiet = self._quiet = asyncio.Event()
            # the switch waits for a quiet moment (the fresh session may have taken seconds to open),
            # and happens anyway after RENEWAL_QUIET_WAIT_S: the old session nears its end
            loop = asyncio.get_running_loop()
            give_up = loop.time() + RENEWAL_QUIET_WAIT_S
            while not self.call.quiet(self._now()) and loop.time() < give_up:
                quiet.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(quiet.wait(), give_up - loop.time())
                if self.call.ended or self.call.state == CallState.CLOSING:
                    if self._renewed is fresh:
                        self._renewed = None
                        await fresh.close()
                    return
                if self._renewed is not fresh:  # the old session dropped meanwhile: the fresh one took over
                    return
            await old.close()
        finally:
            self._renewing = None

    async def _take_warm(self, warm: WarmSession) -> VoiceLiveConnection | None:
        """Take over the session opened when this call was announced (see :mod:`gateway.prewarm`): the
        call is fed the exchange the warm session had, at its start. None: the session is not usable,
        and the call opens its own."""
        wire, call, ctx = self.wire, self.call, self.ctx
        if not warm.matches(call) or (warm.binding is not None and warm.binding != self.binding):
            ctx.warm.discard(warm, "mismatch")
            return None
        try:
            ws = await warm.take(ctx.config.voicelive.connect_timeout_s)
        except asyncio.CancelledError:  # the call ended while its session was still opening
            ctx.warm.discard(warm, "wasted")
            raise
        if ws is None:
            ctx.warm.discard(warm, "failed")
            return None
        self.voicelive = ws
        now = self._now()
        wire.voicelive_opened(now)
        # What the call sends: the warm session sent it already; except the caller's audio that came
        # meanwhile (held until the session is ready), and what the caller's keys pressed meanwhile
        # made the call send, which go after what is replayed.
        pending: list[str] = []
        audio: list[str] = []
        extra: list[str] = []

        def take() -> None:
            for text in wire.take_voicelive():
                (audio if text.startswith(APPEND_HEAD) else pending).append(text)

        take()
        for sent, message in warm.exchange:
            if sent:
                # (a key pressed before the session opened took an event id: the numbering may differ)
                message = _unnumbered(message)
                while pending and _unnumbered(pending[0]) != message:  # (not sent by the warm session: after)
                    extra.append(pending.pop(0))
                if not pending or _unnumbered(pending.pop(0)) != message:
                    # the call is not the one the session was configured for (it cannot be, when it
                    # matches; this keeps a wrong session from serving a call): treated as a lost session
                    self.log.error("the pre-warmed session does not fit the call; it is closed")
                    metrics.WARM_SESSIONS.inc("mismatch")
                    await ws.close()
                    wire.voicelive_closed(None, now)
                    await self._flush()
                    return None  # (a call that can reconnect opens a new session; else it has ended)
            else:
                wire.from_voicelive(message, now)
                take()
        metrics.WARM_SESSIONS.inc("used")
        self.log.info("pre-warmed Voice Live session taken", opened_ms_before=round(
            (time.monotonic() - warm.created) * 1000 - now), replayed=len(warm.exchange))
        await self._flush(extra + pending + audio)
        return ws

    def _backoff(self, attempt: int) -> float:
        """Seconds to wait before retry ``attempt`` (1: the first retry) of a reconnect episode, never
        past the episode's deadline."""
        delay = RECONNECT_BACKOFF_S[min(attempt - 1, len(RECONNECT_BACKOFF_S) - 1)]
        deadline = self.call.sessions.reconnect_deadline
        return delay if deadline is None else max(0.0, min(delay, (deadline - self._now()) / 1000))

    async def _pump(self, ws: VoiceLiveConnection) -> bool:
        """Read one Voice Live session until it ends. True: open another (a drop with budget left,
        or a renewal); False: the call is over."""
        wire, call = self.wire, self.call
        timeout = self.ctx.config.voicelive.connect_timeout_s
        loop = asyncio.get_running_loop()
        ready_by = loop.time() + timeout
        perf = time.perf_counter
        observer = self.observer
        share = self.ctx.share
        try:
            while True:
                if call.state == CallState.CONNECTING or call.state == CallState.RECONNECTING:
                    remaining = ready_by - loop.time()
                    if remaining <= 0:
                        raise TimeoutError
                    async with asyncio.timeout(remaining):  # (not wait_for: its task and a failure make a cycle)
                        raw = await ws.recv()
                else:
                    raw = await ws.recv()
                if ws.urgent_waiting:  # a barge-in has arrived: this message and those before it go now
                    if urgent(raw):
                        ws.urgent_waiting -= 1
                elif share.over(raw):  # caller audio first (see gateway.loopshare)
                    await share.wait(raw, ws)
                received = perf()
                observer.barge_in_flushed = False
                wire.from_voicelive(raw, self._now())
                await self._flush()
                if observer.barge_in_flushed:  # this event made the call flush the phone: how fast
                    reaction = perf() - received
                    metrics.BARGE_IN_REACTION.observe(reaction, self.carrier)
                    observer.downstream("clear_sent", self._now(), {"reaction_ms": round(reaction * 1000, 3)})
                if call.ended:
                    return False
        except TimeoutError:
            self.log.error("Voice Live did not confirm the session configuration in time", timeout_s=timeout)
            wire.voicelive_failed("voicelive_not_ready", self._now())
        except ConnectionClosed as exc:
            if not call.ended:
                wire.voicelive_closed(exc.rcvd.code if exc.rcvd else None, self._now())
        await self._flush()
        return call.state == CallState.RECONNECTING

    def _wake_clock(self) -> None:
        due = self.call.next_deadline()
        if due is not None and (self._clock_due is None or due < self._clock_due):
            self._set_clock()

    def _set_clock(self) -> None:
        wake = self._clock_wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def _clock(self) -> None:
        """The call's timer: pacing on legs without acknowledgements, limits, session renewal."""
        call = self.call
        loop = asyncio.get_running_loop()
        while not call.ended:
            due = call.next_deadline()
            self._clock_due = due
            wake = self._clock_wake = loop.create_future()
            if due is None:
                await wake
                continue
            delay = (due - self._now()) / 1000.0
            if delay > 0:
                try:  # the timer itself; an earlier deadline wakes it sooner (a timeout, not a task per wait)
                    async with asyncio.timeout(delay):
                        await wake
                    continue
                except TimeoutError:
                    pass
            self.wire.tick(self._now())
            await self._flush()

    async def run(self) -> None:
        call, ctx = self.call, self.ctx
        ctx.add_call(self)
        self.log.info("call started", carrier=self.carrier, profile=call.profile_name)
        if ctx.tracing is not None:
            self.observer.trace = ctx.tracing.call(call.call_id, self.carrier, call.profile_name, call.direction,
                                                   call.started_at, clock_zero_ns(self._now()))
        voicelive = asyncio.create_task(self._voicelive_side(), name=f"voicelive-{call.call_id}")
        tasks = [asyncio.create_task(self._phone_side(), name=f"phone-{call.call_id}"), voicelive,
                 asyncio.create_task(self._clock(), name=f"clock-{call.call_id}")]
        self._tasks = tasks
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if done == {voicelive} and call.state == CallState.CLOSING:
                # Voice Live is gone, but an apology or a goodbye still plays: the call's clock and the
                # phone finish it (the clock ends the call once it has been heard)
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        finally:
            tasks += self._tool_tasks
            if self._renewing is not None:
                tasks.append(self._renewing)
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            # A cancelled task keeps its CancelledError, whose traceback holds the frames of this
            # bridge's coroutines: let go of the tasks, or the call's whole state waits in a cycle for
            # the garbage collector's next full pass.
            self._tasks = []
            self._renewing = None
            for result in results:
                if isinstance(result, Exception):
                    self.log.error("call failed", error=repr(result))
            if not call.ended:
                call.phone_ended("gateway_error", self._now())
            await self._close_legs()
            if self.recorder is not None:
                self.recorder.close()
            ctx.remove_call(self)
            if call.end_reason in FAILURE_ENDS:
                ctx.note_failure(call.call_id)
            if call.end_reason == "voicelive_session_rejected":  # opened, then refused as configured
                metrics.VOICELIVE_FAILURES.inc(self.carrier, "session_rejected")
            metrics.CALLS.inc(self.carrier, call.end_reason or "unknown")
            stats = call.stats
            metrics.FRAMES.inc(self.carrier, "in", amount=stats.frames_in)
            metrics.FRAMES.inc(self.carrier, "out", amount=stats.deltas_out)
            if stats.frames_lost_hold:
                metrics.FRAMES_DROPPED.inc("held_too_long", amount=stats.frames_lost_hold)
            if stats.deltas_dropped:
                metrics.FRAMES_DROPPED.inc("after_barge_in", amount=stats.deltas_dropped)
            now = self._now()
            ctx.call_ended(self.carrier, call, self.observer.events, time.time() - now / 1000.0)
            summary = call.summary(now)
            if self.wire.bad_input:
                summary["bad_messages"] = dict(self.wire.bad_input)
            self.log.info("call ended", carrier=self.carrier, **summary)
            if self.observer.trace is not None:
                self.observer.trace.finish(now, failed=call.end_reason in FAILURE_ENDS)

    def cut(self, reason: str) -> None:
        """End the call now, from the gateway's side (a drain out of time): the legs are closed and
        the carrier hangs up, and the call counts as ended by the gateway, not by the caller."""
        if not self.call.ended:
            self.log.warning("the gateway cuts the call", reason=reason)
            self.wire.gateway_ended(reason, self._now())
        self._stop()

    def hung_up(self, reason: str) -> None:
        """The carrier says the call is over (the caller hung up): end it now, nothing to hang up."""
        if not self.call.ended:
            self.wire.phone_closed(reason, self._now())
        self._stop()

    def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def _end_phone_call(self) -> None:
        """Carrier-specific end of the call when the gateway ends it (not the caller)."""
        return None

    async def _close_legs(self) -> None:
        if self._renewed is not None and self._renewed is not self.voicelive:
            await self._renewed.close()
        if self.voicelive is not None:
            try:
                await self.voicelive.close()
            except Exception as exc:  # the call is over either way
                self.log.debug("closing the Voice Live socket failed", error=repr(exc))
            self.wire.gateway_closed(VOICELIVE, self.voicelive.close_code, self._now())
        if self.call.end_reason not in CALLER_ENDS:
            await self._end_phone_call()
        if self.call.end_reason in FAILURE_ENDS:  # noted before the carrier can ask what next
            self.ctx.note_failure(self.call.call_id)
            await self.ctx.failed_calls.settle()
        if not self.phone.closed:
            code = 1011 if self.call.end_reason in FAILURE_ENDS else 1000
            await self.phone.close(code=code)
            self.wire.gateway_closed(PHONE, code, self._now())


def rejected(carrier: str, route: str, reason: str, status: int = 403, **fields: Any) -> web.Response:
    """Refuse a carrier request before anything is opened: log why (never the token), count it."""
    metrics.AUTH_REJECTIONS.inc(carrier, route, reason)
    log.warning("carrier request refused", carrier=carrier, route=route, reason=reason, status=status, **fields)
    return web.Response(status=status, text=f"{reason}\n")


CONTEXT: web.AppKey[GatewayContext] = web.AppKey("gateway_context", GatewayContext)

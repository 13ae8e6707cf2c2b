"""A call at the wire level: messages in, messages out, still without any I/O.

:class:`WireCall` puts the carrier codec and the Voice Live JSON around the pure
:class:`~gateway.call.Call`. The socket shell (:mod:`gateway.bridge`) and the replay of recorded
calls (:mod:`gateway.replay`) both drive this same object, so a replay runs exactly the code a
live call runs. When a recorder is attached, every message on either leg, in either direction, is
handed to it with the call's clock.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from gateway.call import Call, PhoneAction, RunTool, ShellAction
from gateway.carriers.common import load_json

PhoneMessage = str | bytes  # a text or a binary WebSocket frame


class PhoneLeg(Protocol):
    """A carrier's codec for one call: wire messages in, the call's phone actions out.

    ``binary``: the carrier sends binary frames (raw audio) on its media socket, and ``feed`` takes
    them as ``bytes``; on a leg without it a binary frame is bad input. ``encode`` gives the message
    for an action, None when there is nothing to send, or a list when one action takes several
    frames (e.g. audio cut into the fixed-size frames a carrier requires).

    A leg may keep a list ``outbox`` of messages it sends by itself: answers the carrier's protocol
    asks of the gateway (a pong to a ping, the end of a close handshake), or audio it held back while
    the carrier asked it to pause and releases when the carrier has room again. What ``feed`` puts
    there goes to the phone ahead of the call's next actions; the leg keeps the same list object for
    the whole call. A leg with ``speaks_after_end`` set is still fed once the call is over (a closing
    handshake it must answer); its ``feed`` must then leave the call alone."""

    carrier: str
    binary: bool

    def feed(self, call: Call, data: Any, now: float, /) -> tuple[str, str] | None:
        """One inbound message (``str``; ``bytes`` too on a binary leg): (problem, detail) when unusable."""

    def encode(self, action: PhoneAction) -> PhoneMessage | list[PhoneMessage] | None: ...


class Recorder(Protocol):
    def record(self, t: float, leg: str, direction: str, message: str | bytes | None = None,
               **fields: Any) -> None: ...


PHONE, VOICELIVE, TOOLS, TIMER = "phone", "voicelive", "tools", "timer"
IN, OUT = "in", "out"


class WireCall:
    """One call: feed it wire messages with the current time (ms); take what must be sent."""

    def __init__(self, call: Call, leg: PhoneLeg, recorder: Recorder | None = None) -> None:
        self.call = call
        self.leg = leg
        self.recorder = recorder
        self.bad_input: dict[str, int] = {}
        self._now = call.started_at
        self._binary = getattr(leg, "binary", False) is True
        outbox = getattr(leg, "outbox", None)
        self.leg_outbox: list[PhoneMessage] = outbox if type(outbox) is list else []
        self._after_end = getattr(leg, "speaks_after_end", False) is True

    # --- input ---------------------------------------------------------------------------

    def from_phone(self, data: str | bytes, now: float) -> None:
        self._now = now
        if self.recorder is not None:
            self.recorder.record(now, PHONE, IN, data)
        if isinstance(data, bytes) and not self._binary:
            self.reject("binary-frame", f"{len(data)} bytes; text frames only", PHONE)
            return
        if self.call.ended and not self._after_end:
            return
        try:
            problem = self.leg.feed(self.call, data, now)
        except Exception as exc:  # the codecs and the core are hardened; a miss must not end the call
            problem = ("unhandled-message", type(exc).__name__)
        if problem is not None:
            self.reject(*problem, PHONE)

    def from_voicelive(self, data: str | bytes, now: float) -> None:
        self._now = now
        if self.recorder is not None:
            self.recorder.record(now, VOICELIVE, IN, data)
        event, _ = load_json(data)
        if type(event) is not dict:
            self.reject("not-json", "a message that is not a JSON object", VOICELIVE)
            return
        try:
            self.call.voicelive_event(event, now)
        except Exception as exc:  # a hostile event must not end the call: the core is hardened, this is a net
            self.reject("unhandled-event", f"{event.get('type')!r}: {type(exc).__name__}", VOICELIVE)

    def from_tools(self, call_id: str, output: str, now: float) -> None:
        """A tool's output (recorded like a message, so that replays need no tool)."""
        self._now = now
        if self.recorder is not None:
            message = json.dumps({"call_id": call_id, "output": output}, separators=(",", ":"))
            self.recorder.record(now, TOOLS, IN, message)
        self.call.tool_result(call_id, output, now)

    def tick(self, now: float) -> None:
        """A deadline of the call came (pacing, limits, renewal)."""
        self._lifecycle(now, TIMER, "tick")
        self.call.tick(now)

    def answering_machine(self, result: str, now: float) -> None:
        """The carrier's answering-machine result for a call the gateway placed."""
        self._lifecycle(now, PHONE, "answered_by", result=result)
        self.call.answering_machine(result, now)

    def session_expiry(self, seconds_left: float, now: float) -> None:
        """Voice Live's session expires in ``seconds_left`` (read from its wall-clock expires_at)."""
        self._lifecycle(now, VOICELIVE, "expires_in", seconds=round(seconds_left, 3))
        self.call.schedule_renewal(seconds_left, now)

    def hold(self, ms: int, now: float) -> None:
        """The call waits for a Voice Live connection: the caller hears hold audio."""
        self._lifecycle(now, VOICELIVE, "hold", ms=ms)
        self.call.hold(ms, now)

    def renewal_deferred(self, now: float) -> None:
        """The fresh session a renewal asked for could not be opened now (no budget to spare)."""
        self._lifecycle(now, VOICELIVE, "renewal_deferred")
        self.call.renewal_deferred(now)

    def voicelive_opened(self, now: float) -> None:
        self._lifecycle(now, VOICELIVE, "open")
        self.call.voicelive_connected(now)

    def voicelive_failed(self, reason: str, now: float, **detail: Any) -> None:
        self._lifecycle(now, VOICELIVE, "failed", reason=reason, **detail)
        self.call.voicelive_failed(reason, now)

    def voicelive_closed(self, code: int | None, now: float) -> None:
        """Voice Live closed the session (or the connection broke)."""
        self._lifecycle(now, VOICELIVE, "closed", code=code)
        self.call.voicelive_closed(code, now)

    def gateway_ended(self, reason: str, now: float) -> None:
        """The gateway cuts the call (recorded, like every lifecycle event)."""
        self._lifecycle(now, PHONE, "cut", reason=reason)
        self.call.gateway_ended(reason, now)

    def phone_away(self, now: float) -> None:
        """The phone's media socket dropped; the carrier may reconnect it."""
        self._lifecycle(now, PHONE, "away")
        self.call.phone_away(now)

    def phone_back(self, now: float) -> None:
        """A new media socket took over."""
        self._lifecycle(now, PHONE, "back")
        self.call.phone_back(now)

    def phone_closed(self, reason: str, now: float) -> None:
        self._lifecycle(now, PHONE, "closed", reason=reason)
        self.call.phone_ended(reason, now)

    def gateway_closed(self, leg: str, code: int | None, now: float) -> None:
        """The gateway closed a leg's socket (recorded; the call is over by then)."""
        self._lifecycle(now, leg, "close", code=code)

    def _lifecycle(self, now: float, leg: str, what: str, **fields: Any) -> None:
        self._now = now
        if self.recorder is not None:
            self.recorder.record(now, leg, what, None, **fields)

    def reject(self, kind: str, detail: str, leg: str) -> None:
        """Bad input: one clear line per kind of problem, then counted at debug."""
        count = self.bad_input.get(kind, 0) + 1
        self.bad_input[kind] = count
        log = self.call.log.warning if count == 1 else self.call.log.debug
        log("ignored a bad message", leg=leg, problem=kind, detail=detail, count=count)

    # --- output --------------------------------------------------------------------------

    def take_voicelive(self) -> list[str]:
        call = self.call
        if not call.to_voicelive:
            return []
        messages, call.to_voicelive = call.to_voicelive, []
        if self.recorder is not None:
            for message in messages:
                self.recorder.record(self._now, VOICELIVE, OUT, message)
        return messages

    def take_shell(self) -> list[ShellAction]:
        """What the call asks of the shell itself (renew the session; when it expires). Not wire
        messages: what they lead to (a closed socket, an expiry) is recorded as it happens."""
        call = self.call
        if not call.to_shell:
            return []
        actions, call.to_shell = call.to_shell, []
        return actions

    def take_tools(self) -> list[RunTool]:
        call = self.call
        if not call.to_tools:
            return []
        runs, call.to_tools = call.to_tools, []
        if self.recorder is not None:
            for run in runs:
                message = json.dumps({"call_id": run.call_id, "name": run.name, "arguments": run.arguments},
                                     separators=(",", ":"))
                self.recorder.record(self._now, TOOLS, OUT, message)
        return runs

    def take_phone(self) -> list[PhoneMessage]:
        call = self.call
        outbox = self.leg_outbox
        if not call.to_phone and not outbox:
            return []
        actions, call.to_phone = call.to_phone, []
        encode = self.leg.encode
        messages: list[PhoneMessage] = []
        if outbox:  # what the leg sends by itself goes first: it was made before these actions
            messages += outbox
            outbox.clear()
        for action in actions:
            message = encode(action)
            if message is None:
                continue
            if type(message) is list:
                messages += message
            else:
                messages.append(message)  # type: ignore[arg-type]
        if self.recorder is not None:
            for message in messages:
                self.recorder.record(self._now, PHONE, OUT, message)
        return messages

"""The per-call state machine: pure logic, no sockets, no clocks, no tasks.

A :class:`Call` is fed what arrives on either leg, each input with the current time in
milliseconds, and queues what must be sent in two outboxes: ``to_phone`` (neutral phone
actions that a carrier codec encodes) and ``to_voicelive`` (JSON text ready to send). The I/O
shell drains both after every input. Feeding recorded inputs with recorded times reproduces a
call exactly.

Barge-in, the heart of call quality, lives here: when Voice Live reports that the caller started
speaking while the bot is talking, the phone's playback is flushed, the response is cancelled,
and the assistant item is truncated to what the caller actually heard, measured by the phone's
playback acknowledgements (marks the phone echoes), never by bytes sent.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.audio import G711_ULAW, AudioFormat, b64_len, hold_tone, is_base64, split_b64
from gateway.config import Greeting, Profile, ServerVad, Tool, TurnDetectionOff
from gateway.core.actions import (
    CLEAR,
    RENEW_SESSION,
    ClearPlayback,
    Hangup,
    PhoneAction,
    PlayAudio,
    RunTool,
    SendMark,
    SessionExpires,
    ShellAction,
)
from gateway.core.farewell import GOODBYE_TIMEOUT_MS, TRANSFER_WORDS, Farewell
from gateway.core.inbound import CallerAudio
from gateway.core.keys import KeyEntry
from gateway.core.memory import Conversation
from gateway.core.outbound import GREET, VOICEMAIL, Opening, OutboundPlan, VariableError, fill_variables
from gateway.core.playout import PacedPlayout, Playout
from gateway.core.sessions import MIN_SESSION_MS, Sessions
from gateway.core.silence import SilenceWatch
from gateway.core.state import TRANSITIONS, CallState
from gateway.core.tools import ToolCalls, dtmf_digits, json_object, tool_failed, transfer_target
from gateway.core.turns import CallerTurns
from gateway.core.usage import Usage

# The call's interface, as the shell, the codecs and the tests use it (the parts live in gateway.core)
__all__ = ["CALL_OPTIONS", "CLEAR", "MIN_SESSION_MS", "RECORDED_PIECE_MS", "TRANSFER_WORDS", "Call", "CallState",
           "ClearPlayback", "Hangup", "Observer", "PhoneAction", "PlayAudio", "Playout", "RunTool", "SendMark",
           "SessionExpires", "ShellAction", "assistant_message", "spoken_text"]
from gateway.voicelive.session import build_session

Observer = Callable[[str, float, dict[str, Any]], None]

VOICEMAIL_TIMEOUT_MS = 120_000.0  # a voicemail message not heard to its end by then: hang up anyway

APPEND_HEAD = '{"type":"input_audio_buffer.append","audio":"'
_APPEND_TAIL = '"}'


# The options a shell gives a call beyond its profile (recorded with the call, so a replay uses them)
CALL_OPTIONS = ("reconnect_budget_ms", "renew_before_ms", "renew_spread_ms", "can_transfer", "can_send_dtmf",
                "piece_ms")
RECORDED_PIECE_MS = 60  # the piece size of recordings that do not say theirs (made before it was recorded)




def _obj(value: Any) -> dict[str, Any]:
    """A field that should be a JSON object, or an empty one (Voice Live events are not trusted)."""
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    """A field that should be a string (an id), or None."""
    return value if isinstance(value, str) else None


PREROLL_MARGIN_MS = 500  # beyond the prefix padding: turn detection's delay and the events' way back
RESPONSES_KEPT = 16  # responses (and items) a call remembers, the newest


def _no_observer(_event: str, _t: float, _fields: dict[str, Any]) -> None:
    return None


def _is_cancel_not_active(code: str, message: str) -> bool:
    return code == "response_cancel_not_active" or "no active response" in message.lower()


def _is_output_clear_refused(code: str, message: str) -> bool:
    """output_audio_buffer.clear is documented for avatar sessions only: a phone session may refuse it."""
    text = message.lower()
    return "output_audio_buffer" in text or "avatar" in text or "output_audio_buffer" in code


def spoken_text(event: dict[str, Any]) -> str | None:
    """The words a ``response.create`` has spoken verbatim (see :func:`assistant_message`), else None."""
    response = event.get("response") if event.get("type") == "response.create" else None
    message = response.get("pre_generated_assistant_message") if isinstance(response, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list) and len(content) == 1 and isinstance(content[0], dict):
        text = content[0].get("text")
        return text if isinstance(text, str) else None
    return None


def assistant_message(text: str) -> dict[str, Any]:
    """A ``response.create`` that has Voice Live speak ``text`` exactly as written (its TTS voices the
    words, no model wording them) and keep it in the conversation as the bot's turn."""
    return {"type": "response.create", "response": {"pre_generated_assistant_message": {
        "type": "message", "role": "assistant", "content": [{"type": "text", "text": text}]}}}


@dataclass(slots=True)
class CallStats:
    frames_in: int = 0
    bytes_in: int = 0
    frames_held: int = 0
    frames_lost_hold: int = 0
    deltas_out: int = 0
    bytes_out: int = 0
    deltas_dropped: int = 0
    marks_acked: int = 0
    responses: int = 0
    barge_ins: int = 0
    truncations: int = 0
    voicelive_errors: int = 0
    dtmf: int = 0
    tool_calls: int = 0
    reconnects: int = 0
    frames_resent: int = 0
    caller_turns: int = 0  # caller utterances Voice Live committed


@dataclass(slots=True)
class BargeIn:
    """What one barge-in did (kept for the timeline, tests and the call summary)."""

    at: float
    cleared: bool
    cancelled_response: str | None
    item_id: str | None
    heard_ms: int | None  # truncation point sent, None when no truncate was sent
    received_ms: int | None


@dataclass
class Call:
    """One phone call bridged to one Voice Live session."""

    call_id: str
    stream_id: str
    profile_name: str
    profile: Profile
    started_at: float  # ms, on the same clock as every ``now`` given to the call
    audio: AudioFormat = G711_ULAW
    observer: Observer = _no_observer
    log: Any = None
    hold_ms: int = 15_000  # caller audio held while the Voice Live session is not ready
    # caller speech not yet committed, sent again to a new session if one drops: the newest this much
    resend_ms: int = 5_000
    # bot audio goes to the phone in pieces of at most this, each followed by a mark: the phone's echo of
    # a mark anchors the playback clock, which runs in real time in between (a larger piece means fewer
    # messages for the phone and the gateway; a stall of the phone's playback is bounded by one piece)
    piece_ms: int = 400
    paced: bool = False  # no playback acknowledgements on this leg: pace the bot's audio in real time
    # the phone drops the acknowledgements of the audio a flush discards (it never echoes them): one that
    # comes after a flush was sent before it, and tells more exactly what the caller heard
    late_acks: bool = False
    reconnect_budget_ms: float = 0.0  # a dropped session is reopened for at most this long (0: never)
    renew_before_ms: float = 120_000.0  # renew the session this long before it expires
    renew_spread_ms: float = 0.0  # and up to this much earlier, by call (renewals of calls begun together spread)
    fallback_audio: str | None = None  # an apology in the leg's format, played when all fails (no text to speech)
    can_transfer: bool = False  # the phone leg can hand the caller over to another number
    can_send_dtmf: bool = False  # the phone leg can press keys towards the caller
    direction: str = "inbound"  # "outbound": the gateway placed the call
    caller: str | None = None  # the caller's number, as the carrier gave it (None: not given)
    called: str | None = None  # the number called, as the carrier gave it (None: not given)
    answered_at: float | None = None  # when the call was answered (ms, this clock; None: when its media began)
    outbound: OutboundPlan | None = None  # a call the gateway placed: how it opens, its variables

    state: CallState = field(default=CallState.CONNECTING, init=False)
    end_reason: str | None = field(default=None, init=False)
    to_phone: list[PhoneAction] = field(default_factory=list, init=False)
    to_voicelive: list[str] = field(default_factory=list, init=False)
    to_tools: list[RunTool] = field(default_factory=list, init=False)
    to_shell: list[ShellAction] = field(default_factory=list, init=False)
    stats: CallStats = field(default_factory=CallStats, init=False)
    barge_ins: list[BargeIn] = field(default_factory=list, init=False)
    ready_at: float | None = field(default=None, init=False)  # when the session became ready
    session_id: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.log is None:
            from gateway.log import get_logger

            self.log = get_logger("gateway.call", call_id=self.call_id, stream_id=self.stream_id)
        self._opening: Opening | None = None
        if self.outbound is not None:
            self._place(self.outbound)
        self.playout: Playout | PacedPlayout = (PacedPlayout(self.audio) if self.paced
                                                else Playout(self.audio, self.late_acks))
        unit = self.audio.piece_unit  # whole samples and whole base64 quanta
        piece_bytes = max(unit, self.piece_ms * self.audio.bytes_per_ms // unit * unit)
        self._piece_chars = piece_bytes // 3 * 4
        bpm = self.audio.bytes_per_ms
        # while the caller is silent, only what Voice Live may still count into a turn it has not
        # reported yet: its prefix padding and the time its turn detection takes to hear speech
        padding = getattr(self.profile.turn_detection, "prefix_padding_ms", None) or 300
        self._inbound = CallerAudio(self.hold_ms * bpm, preroll=(padding + PREROLL_MARGIN_MS) * bpm,
                                    resend_limit=self.resend_ms * bpm)
        self._event_seq = 0
        self._sent_kinds: dict[str, str] = {}
        self.active_response: str | None = None
        self._active_items: list[str] = []  # the message items of the active response
        self._dropped_responses: dict[str, None] = {}  # (ordered: the oldest are forgotten first)
        self._deferred_truncates: dict[str, dict[str, Any]] = {}  # response id -> truncate event
        self._tools = ToolCalls(self.profile.tools)
        self._item_bytes: dict[str, int] = {}
        self._item_response: dict[str, str | None] = {}
        self._first_audio_seen: dict[str, None] = {}
        self._speech_stopped_at: float | None = None
        self._obuf_clear_off = not self.profile.barge_in.output_audio_buffer_clear
        turn = self.profile.turn_detection
        server_vad = not isinstance(turn, TurnDetectionOff)
        # Voice Live cancels a response itself when its turn detection hears the caller
        # (interrupt_response, true by default), and with auto_truncate cuts the item itself too
        self._server_interrupts = server_vad and getattr(turn, "interrupt_response", None) is not False
        self._server_truncates = server_vad and getattr(turn, "auto_truncate", None) is True
        self._turns: CallerTurns | None = None
        if isinstance(turn, TurnDetectionOff):
            # no turn detection at Voice Live: the gateway listens for the end of the caller's turn
            self._turns = CallerTurns(turn, self.audio)
            self.caller_audio = self._caller_audio_listened  # type: ignore[method-assign]
        self._warned: set[str] = set()
        # conversation memory, restored into a new session after a drop or a renewal
        self.conversation = Conversation()
        self.usage = Usage()  # tokens summed from every response.done (the call's record, the metrics)
        self._connected = False  # a Voice Live socket is open (control events can be sent)
        self._held_control: list[str] = []
        self.sessions = Sessions(self.reconnect_budget_ms, self.renew_before_ms)  # renewal, reconnect episodes
        self._caller_speaking = False
        limits = self.profile.limits
        self._hard_deadline = self.started_at + limits.max_duration_s * 1000 if limits.max_duration_s else None
        self._idle_ms = limits.idle_timeout_s * 1000 if limits.idle_timeout_s else None
        self._last_activity = self.started_at
        self._farewell: Farewell | None = None  # the call is saying goodbye
        self._closing_reason: str | None = None
        self.transfer_to: str | None = None  # where the call goes when it ends (None: it hangs up)
        self._respond_pending = False  # a response is wanted as soon as the current one is done
        # caller keys
        self._keys = KeyEntry(self.profile.dtmf)
        self._silence = SilenceWatch(self.profile.silence, self.started_at)
        self._holding = False  # the caller hears the hold tone (waiting for a Voice Live connection)
        self._phone_away_since: float | None = None  # the phone's media socket is gone (it may come back)
        self.ended_at: float | None = None

    def _place(self, plan: OutboundPlan) -> None:
        """A call the gateway placed: its instructions get their variables, and the bot speaks only
        when the opening says so: Voice Live's turn detection neither answers a turn nor cuts a
        response by itself (the gateway does both, so that a machine's noise cannot cut the voicemail
        message and nobody is answered before the opening)."""
        self.direction = "outbound"
        self._opening = Opening(plan)
        profile = self.profile
        update: dict[str, Any] = {}
        try:
            update["instructions"] = fill_variables(profile.instructions, dict(plan.variables))
        except VariableError as exc:  # checked when the call was placed: the profile changed since
            self.log.warning("instruction variables do not fit the profile; its instructions are used as written",
                             problem=str(exc))
        turn = profile.turn_detection
        if turn is None:
            update["turn_detection"] = ServerVad(create_response=False, interrupt_response=False)
        elif not isinstance(turn, TurnDetectionOff):
            update["turn_detection"] = turn.model_copy(update={"create_response": False, "interrupt_response": False})
        self.profile = profile.model_copy(update=update)

    # --- helpers ---------------------------------------------------------------------------

    def _to(self, state: CallState) -> None:
        if state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"call {self.call_id}: no transition from {self.state.value} to {state.value}")
        self.state = state

    @property
    def listens(self) -> bool:
        """The gateway detects the caller's turns itself (no turn detection at Voice Live)."""
        return self._turns is not None

    @property
    def ended(self) -> bool:
        return self.state == CallState.ENDED

    def _send(self, event: dict[str, Any], kind: str | None = None) -> None:
        """Queue a control event for Voice Live, tagged with an event id so errors can be traced.
        While no session is open, it waits for the next one."""
        self._event_seq += 1
        event_id = f"gw_{self._event_seq}"
        event["event_id"] = event_id
        self._sent_kinds[event_id] = kind or event["type"]
        if len(self._sent_kinds) > 64:
            self._sent_kinds.pop(next(iter(self._sent_kinds)))
        text = json.dumps(event, separators=(",", ":"))
        if self._connected:
            self.to_voicelive.append(text)
        elif len(self._held_control) < 32:
            self._held_control.append(text)

    def _warn_once(self, key: str, message: str, **fields: Any) -> None:
        if key in self._warned:
            self.log.debug(message, **fields)
        else:
            self._warned.add(key)
            self.log.warning(message, **fields)

    def _end(self, reason: str, now: float, *, hang_up: bool) -> None:
        if self.ended:
            return
        self._to(CallState.ENDED)
        self.end_reason = reason
        self.ended_at = now
        self.__dict__.pop("caller_audio", None)  # (the listening one is bound to the call: a cycle)
        if hang_up:
            self.to_phone.append(Hangup(reason, self.transfer_to))
        self.observer("call.ended", now, {"reason": reason, "transfer_to": self.transfer_to})

    def _close_after_playout(self, reason: str, now: float) -> None:
        """End the call once the bot audio still playing has been heard (a goodbye, an apology)."""
        if self.ended:
            return
        if self.state is not CallState.CLOSING:
            self._to(CallState.CLOSING)
        self._closing_reason = reason
        self._finish_closing(now)

    def _finish_closing(self, now: float) -> None:
        if self.state != CallState.CLOSING:
            return
        until = self._closing_until()
        if (until is None or now >= until) and not self.playout.playing(now):
            self._end(self._closing_reason or "closing", now, hang_up=True)

    def _closing_until(self) -> float | None:
        """On a paced leg, when the last word will have been heard: the playback clock's end plus one
        piece, since a phone plays whole frames and the last piece may be a partial one."""
        until = self.playout.playing_until()
        return None if until is None else until + self.piece_ms

    def summary(self, now: float) -> dict[str, Any]:
        s = self.stats
        bpm = self.audio.bytes_per_ms
        return {
            "profile": self.profile_name,
            "end_reason": self.end_reason,
            "duration_ms": int((self.ended_at if self.ended_at is not None else now) - self.started_at),
            "caller_turns": s.caller_turns,
            "responses": s.responses,
            "caller_bytes": s.bytes_in,
            "bot_bytes": s.bytes_out,
            "caller_audio_ms": s.bytes_in // bpm,
            "bot_audio_ms": s.bytes_out // bpm,
            "barge_ins": s.barge_ins,
            "truncations": s.truncations,
            "late_deltas_dropped": s.deltas_dropped,
            "caller_frames_lost": s.frames_lost_hold,
            "voicelive_errors": s.voicelive_errors,
            "dtmf": s.dtmf,
            "tool_calls": s.tool_calls,
            "voicelive_reconnects": s.reconnects,
            "caller_frames_resent": s.frames_resent,
        }

    # --- phone leg --------------------------------------------------------------------------

    def caller_audio(self, payload: str, now: float) -> None:
        """A frame of caller audio (base64, already checked by the codec). Forwarded untouched."""
        state = self.state
        if state == CallState.READY:
            size = b64_len(payload)
            self.stats.frames_in += 1
            self.stats.bytes_in += size
            self.to_voicelive.append(APPEND_HEAD + payload + _APPEND_TAIL)
            # what the session has not yet turned into a conversation item: sent again if it drops
            self._inbound.sent(payload, size)
        elif state == CallState.CONNECTING or state == CallState.RECONNECTING:
            dropped = self._inbound.hold(payload, b64_len(payload))
            self.stats.frames_held += 1
            if dropped:
                self.stats.frames_lost_hold += dropped
                self._warn_once(
                    "hold-overflow",
                    "caller audio held too long while Voice Live is not ready; dropping the oldest",
                    hold_ms=self.hold_ms,
                )

    def _caller_audio_listened(self, payload: str, now: float) -> None:
        """Turn detection in the gateway: the frame is forwarded (or held) exactly as in the other
        modes, then listened to; the end of the caller's speech ends their turn."""
        Call.caller_audio(self, payload, now)
        turns = self._turns
        if self.state != CallState.READY or turns is None:
            return  # held audio is listened to when it is forwarded
        for event in turns.listen(payload, now):
            if event.kind == "start":
                self._caller_started(now, event.ms, by_server_vad=False)
            else:
                self._caller_stopped(now, event.ms)
                self._end_caller_turn()
        if turns.idle(self._inbound.speech_since_commit):
            # only silence since the last turn: Voice Live need not keep it (nor bill it)
            self._send({"type": "input_audio_buffer.clear"}, kind="idle_clear")
            turns.emptied()
            self._inbound.forget_uncommitted()

    def _silent_line_due(self) -> float | None:
        if self._turns is None or self.state != CallState.READY:
            return None
        return self._turns.silent_line_due()

    def _end_caller_turn(self) -> None:
        """The gateway heard the caller fall silent: commit what they said and ask for the answer."""
        if self._farewell is not None or self.state != CallState.READY or self._turns is None:
            return
        self._send({"type": "input_audio_buffer.commit"})
        self._turns.emptied()
        if self._opening is None:
            self._request_response()
        elif self._opening.decided == GREET:
            self._request_response()

    def playback_mark(self, name: str, now: float) -> None:
        playout = self.playout
        if not isinstance(playout, Playout):
            return
        if playout.ack(name, now):
            self.stats.marks_acked += 1
            if self.state == CallState.CLOSING:
                self._finish_closing(now)
            elif not playout.pending:
                self._silence.quiet_from(now)  # silence counts from the bot's last word
                self._maybe_renew(now)
        elif playout.flushed:
            heard = playout.late_ack(name)
            for item_id, offset in (heard or {}).items():  # played before the flush took effect
                if item_id is not None:
                    self.conversation.heard_more(item_id, offset)

    def tick(self, now: float) -> None:
        """Time passes: release paced bot audio now due, and act on deadlines (limits, renewal)."""
        if self.ended:
            return
        self.sessions.tick(now)
        self.playout.release(now, self.to_phone)
        if self.state == CallState.CLOSING:
            self._finish_closing(now)
            return
        if self._farewell is not None:
            if now >= self._farewell.deadline:
                self._end(self._farewell.reason, now, hang_up=True)  # the goodbye never came: end anyway
            return
        opening = self._opening
        if opening is not None and opening.decided is None and self.state == CallState.READY:
            self._open(opening.decide(now), now)
        if self._keys.due(now):
            self._send_digits(self._keys.take(), now)
        silent = self._silent_line_due()
        if silent is not None and now >= silent:
            self._turns.vad.reset()  # type: ignore[union-attr]
            self._caller_stopped(now, None)
            self._end_caller_turn()
        if self._hard_deadline is not None and now >= self._hard_deadline:
            self._say_goodbye("max_duration", now)
        elif self._idle_ms is not None and now >= self._last_activity + self._idle_ms:
            self._say_goodbye("idle_timeout", now)
        else:
            due = self._silence_due(now)
            if due is not None and now >= due:
                self._reprompt(now)
            self._maybe_renew(now)

    def next_tick(self) -> float | None:
        """When :meth:`tick` has something to do next (None: nothing is waiting)."""
        return self.playout.next_release()

    def next_deadline(self) -> float | None:
        """The next time :meth:`tick` must run (pacing, limits, renewal); None: nothing is due."""
        if self.ended:
            return None
        candidates = [self.playout.next_release()]
        if self.state == CallState.CLOSING:
            candidates.append(self._closing_until())
        elif self._farewell is not None:
            candidates.append(self._farewell.deadline)
        else:
            candidates.append(self._hard_deadline)
            candidates.append(self._keys.deadline)
            candidates.append(self._silence_due(None))
            candidates.append(self._silent_line_due())
            if self._opening is not None:
                candidates.append(self._opening.due())
            if self._idle_ms is not None:
                candidates.append(self._last_activity + self._idle_ms)
            if self.state == CallState.READY:
                candidates.append(self.sessions.next_renewal())
        due = [c for c in candidates if c is not None]
        return min(due) if due else None

    def _activity(self, now: float) -> None:
        self._last_activity = now

    def dtmf(self, digit: str, now: float) -> None:
        """The caller pressed a key: a key with an action of its own acts; other keys are collected
        into an entry the model hears as a line of the conversation."""
        self._activity(now)
        self._caller_heard_from(now)
        self.stats.dtmf += 1
        self.log.info("caller pressed a key")
        self.log.debug("dtmf digit", digit=digit)
        self.observer("caller.dtmf", now, {"digit": digit})
        if self._farewell is not None or self.state == CallState.CLOSING:
            return
        settings = self.profile.dtmf
        action = settings.actions.get(digit)
        if action is not None and action.transfer_to and not self.can_transfer:
            self._warn_once("key-transfer", "a key's transfer action cannot run: this line cannot transfer calls; "
                                            "the key goes to the model instead")
            action = None
        if action is not None and not self._keys.digits:
            self.log.info("caller key action", action="transfer" if action.transfer_to else "hang_up")
            self._say_goodbye("caller_key_transfer" if action.transfer_to else "caller_key_hang_up", now,
                              transfer_to=action.transfer_to)
            return
        if not settings.to_model:
            return
        entry = self._keys.press(digit, now)
        if entry is not None:
            self._send_digits(entry, now)

    def _send_digits(self, digits: str, now: float) -> None:
        """The caller's entry is complete: the model hears it, and (by default) answers it."""
        if not digits:
            return
        item = self._keys.item(digits)
        self._send({"type": "conversation.item.create", "item": item}, kind="dtmf")
        self.conversation.remember(item["id"], "user", now)
        self.conversation.set_text(item["id"], item["content"][0]["text"])
        self.observer("caller.keys", now, {"count": len(digits)})
        if self.profile.dtmf.respond:
            self._barge_in(now)  # keys pressed over the bot interrupt it, like speech
            self._request_response()

    def _request_response(self) -> None:
        """Ask for a response now, or as soon as the session is ready and the running response (or
        a tool) is done."""
        if self.state == CallState.READY and self.active_response is None and not self._tools.busy:
            self._respond_pending = False
            self._send({"type": "response.create"})
        else:
            self._respond_pending = True

    def _say(self, words: Greeting, kind: str) -> None:
        """A greeting or re-prompt: text is spoken verbatim; instructions let the model word it."""
        if words.text is not None:
            self._send(assistant_message(words.text), kind=kind)
        else:
            self._send({"type": "response.create", "response": {"instructions": words.instructions}}, kind=kind)

    # --- silence ---------------------------------------------------------------------------------

    def _caller_heard_from(self, now: float) -> None:
        self._silence.heard_caller(now)

    def _silence_due(self, now: float | None) -> float | None:
        """When the caller's silence calls for a re-prompt (None: not counting now: the caller or
        the bot is busy, the phone is away, or the call is ending)."""
        if (self.state != CallState.READY or self._farewell is not None or self._phone_away_since is not None
                or self.active_response is not None or self._caller_speaking or self._tools.running
                or self._respond_pending or self._keys.digits
                or (self._opening is not None and self._opening.decided is None)):
            return None
        return self._silence.due(self.playout)

    def _reprompt(self, now: float) -> None:
        silence = self._silence
        if not silence.reprompt(now):
            self._say_goodbye("caller_silent", now)
            return
        self.log.info("the caller is silent; the bot asks again", reprompt=silence.reprompts)
        self.observer("call.reprompt", now, {"count": silence.reprompts})
        self._say(self.profile.silence.reprompt, "reprompt")

    def phone_ended(self, reason: str, now: float) -> None:
        """The phone leg ended. A call whose media socket was already gone ended when it went."""
        away = self._phone_away_since
        self._end(reason, away if away is not None else now, hang_up=False)

    def phone_away(self, now: float) -> None:
        """The phone's media socket dropped; the carrier may reconnect it. Meanwhile nobody hears the
        bot: no re-prompt is due to an empty line."""
        if self._phone_away_since is None:
            self._phone_away_since = now

    def phone_back(self, now: float) -> None:
        """A new media socket took over: silence counts afresh from now."""
        self._phone_away_since = None
        self._silence.quiet_from(now)

    def gateway_ended(self, reason: str, now: float) -> None:
        """The gateway cuts the call (a drain that ran out of time): it hangs up at once."""
        self._end(reason, now, hang_up=True)

    # --- Voice Live leg -----------------------------------------------------------------

    def voicelive_connected(self, now: float) -> None:
        """A Voice Live socket is open: configure the session from the profile, and after a drop or a
        renewal, give it the conversation so far."""
        self._connected = True
        self.sessions.opened()
        self.observer("voicelive.connected", now, {"connect_ms": round(now - self.started_at, 1),
                                                   "restored_turns": len(self.conversation)})
        update = {"type": "session.update", "session": build_session(self.profile, self.audio, call_id=self.call_id)}
        self._send(update)
        if self.state == CallState.RECONNECTING:
            for item in self.conversation.restore_items():
                self._send({"type": "conversation.item.create", "item": item}, kind="restore")

    def hold(self, ms: int, now: float) -> None:
        """No Voice Live connection is free yet and the profile waits for one: the caller hears a soft
        hold tone (``ms`` of it at most) until the session is ready, or the wait ends."""
        if self.state is not CallState.CONNECTING or self._holding:
            return
        self._holding = True
        self.observer("hold", now, {"ms": ms})
        self._queue_audio(base64.b64encode(hold_tone(self.audio, ms)).decode(), None, None, now)

    def voicelive_failed(self, reason: str, now: float) -> None:
        """The session could not be opened, or could not be reopened in time: the call cannot go on.
        On a paced leg with an apology clip, the caller hears it before the call hangs up."""
        if self.ended:
            return
        self._connected = False
        self.log.error("ending the call: Voice Live is not available", reason=reason)
        if self.fallback_audio and self.state != CallState.CLOSING:
            self.playout.flush(now)
            self._queue_audio(self.fallback_audio, None, None, now)
            self._close_after_playout(reason, now)
        else:
            self._end(reason, now, hang_up=True)

    def voicelive_closed(self, code: int | None, now: float) -> None:
        """The Voice Live socket closed. Mid-call, with a reconnect budget, the call goes on while the
        shell opens a new session (caller audio is held meanwhile); otherwise the call ends."""
        self._connected = False
        if self.ended or self.state == CallState.CLOSING:
            return
        sessions = self.sessions
        renewing = sessions.renewing
        if renewing or (self.reconnect_budget_ms > 0 and self.ready_at is not None):
            if not sessions.lost(now, reconnecting=self.state == CallState.RECONNECTING):
                self.log.error("Voice Live keeps losing the session; the reconnect budget is spent, ending the call",
                               close_code=code, sessions_lost=sessions.drops, budget_ms=self.reconnect_budget_ms)
                self.voicelive_failed("voicelive_lost", now)
                return
            if self.state != CallState.RECONNECTING:
                self._to(CallState.RECONNECTING)
                self.stats.reconnects += 1
                self._abandon_response(now)
                # the caller was saying something the old session had not committed (lost, or
                # closed for renewal just as the caller spoke): the new session hears all of it
                resend = self._inbound.session_lost()
                if resend:
                    self.stats.frames_resent += resend
                    self.log.info("caller speech not committed by the lost session is sent again", frames=resend)
                if self._turns is not None:  # what is sent again is listened to again
                    self._turns.reset()
                    self._caller_speaking = False
            if renewing:
                self.log.info("renewing the Voice Live session", close_code=code)
            elif sessions.drops == 1:
                self.log.warning("Voice Live session lost; reconnecting", close_code=code,
                                 budget_ms=self.reconnect_budget_ms)
            else:  # one warning per episode: a session that keeps dropping must not flood the log
                self.log.debug("Voice Live session lost again; reconnecting", close_code=code,
                               sessions_lost=sessions.drops)
            self.observer("voicelive.lost", now, {"code": code, "renewing": renewing})
            return
        self.log.warning("Voice Live closed the session", close_code=code)
        self._end("voicelive_closed", now, hang_up=True)

    def _abandon_response(self, now: float) -> None:
        """The session is gone: its response will never finish. What already reached the phone plays."""
        if self.active_response is not None:
            self._dropped_responses[self.active_response] = None
            self.active_response = None
        self._deferred_truncates.clear()
        farewell = self._farewell
        if farewell is not None and farewell.response is not None:
            self._close_after_playout(farewell.reason, now)

    def schedule_renewal(self, seconds_left: float, now: float) -> None:
        """Voice Live said the session expires in ``seconds_left``: renew it before then, between turns.
        A session is never renewed within a minute of being opened (a wrong clock must not make
        the gateway renew sessions in a loop)."""
        spread = zlib.crc32(self.call_id.encode()) % (int(self.renew_spread_ms) + 1)
        if self.sessions.schedule_renewal(seconds_left, now, spread):
            self._warn_once("short-session", "Voice Live session expires sooner than the renewal margin",
                            seconds_left=round(seconds_left, 1))

    def renewal_deferred(self, now: float) -> None:
        """The shell could not open the fresh session (no budget beyond the reserve): keep this one and
        try again later (a session that reaches Voice Live's limit is reopened as a reconnect)."""
        if self.ended or not self.sessions.renewing:
            return
        self.sessions.defer(now)
        self.log.info("session renewal deferred: no Voice Live connection to spare now")

    def quiet(self, now: float) -> bool:
        """A quiet moment: nothing under way that a change of Voice Live session would cut (no response,
        no caller speech, no tool running, nothing playing)."""
        return (self.state == CallState.READY and self.active_response is None and not self._caller_speaking
                and not self._tools.running and not self.playout.playing(now))

    def _maybe_renew(self, now: float) -> None:
        """At a quiet moment past the renewal time, ask the shell for a fresh session."""
        if not self.sessions.renewal_due(now) or not self.quiet(now):
            return
        self.sessions.renew()
        self.to_shell.append(RENEW_SESSION)

    def voicelive_event(self, event: dict[str, Any], now: float) -> None:
        handler = _HANDLERS.get(event.get("type"))  # type: ignore[arg-type]
        if handler is not None and not self.ended:
            getattr(self, handler)(event, now)

    def _on_session_created(self, event: dict[str, Any], now: float) -> None:
        session = _obj(event.get("session"))
        self.session_id = session.get("id")
        self.observer("session.created", now, {"session_id": self.session_id})
        self._learn_expiry(session.get("expires_at"))
        self.log.info("Voice Live session created", session_id=self.session_id)

    def _learn_expiry(self, expires: Any) -> None:
        """Voice Live said when the session expires (unix time): the shell tells the call how far off
        that is on its clock (:meth:`schedule_renewal`)."""
        if self.sessions.learn_expiry(expires):
            self.to_shell.append(SessionExpires(float(expires)))

    def _on_session_updated(self, event: dict[str, Any], now: float) -> None:
        session = _obj(event.get("session"))
        audio = self.audio
        want = audio.name
        got_in, got_out = session.get("input_audio_format"), session.get("output_audio_format")
        rate = session.get("input_audio_sampling_rate")
        if got_in != want or got_out != audio.output_name or (
                want == "pcm16" and rate is not None and rate != audio.sample_rate):
            self.log.error(
                "Voice Live did not accept the audio format; ending the call instead of playing noise",
                asked=audio.key, input_audio_format=got_in, output_audio_format=got_out,
                input_audio_sampling_rate=rate,
            )
            self._end("audio_format_rejected", now, hang_up=True)
            return
        self._learn_expiry(session.get("expires_at"))
        if self.state not in (CallState.CONNECTING, CallState.RECONNECTING):
            return
        first = self.ready_at is None
        self._to(CallState.READY)
        self.sessions.ready(now)
        if not first:
            held = self._inbound.held
            self.log.info("Voice Live session restored", held_frames=held, restored_turns=len(self.conversation))
            self.observer("session.restored", now, {"held_frames": held})
            for frame in self._inbound.take_held():
                self.caller_audio(frame, now)
            self._send_held_control()
            return
        self.ready_at = now
        if self._holding:  # the hold tone stops when the bot can speak
            self._holding = False
            self.to_phone.append(CLEAR)
            self.playout.flush(now)
        held = self._inbound.held
        self.observer("session.ready", now, {"format": audio.key, "held_frames": held,
                                              "ready_ms": round(now - self.started_at, 1)})
        self.log.info("call ready", profile=self.profile_name, audio_format=audio.key, held_frames=held,
                      ready_ms=round(now - self.started_at, 1))
        for frame in self._inbound.take_held():
            self.caller_audio(frame, now)
        if self._opening is not None:  # a call the gateway placed opens when the callee is heard
            self._send_held_control(respond=False)
            self._open(self._opening.ready(now), now)
            return
        greeting = self.profile.greeting
        if greeting is not None:
            self._say(greeting, "greeting")
        # keys pressed meanwhile go now; they are answered at once, or after the greeting
        self._send_held_control(respond=greeting is None)

    def _send_held_control(self, respond: bool = True) -> None:
        """The session is ready: what waited for it goes now, and a response asked for meanwhile is
        requested (``respond``), else once the response under way is done."""
        held_control, self._held_control = self._held_control, []
        self.to_voicelive.extend(held_control)
        if respond and self._respond_pending:
            self._request_response()

    def _on_error(self, event: dict[str, Any], now: float) -> None:
        err = event.get("error")
        if not isinstance(err, dict):
            err = {}
        code = str(err.get("code") or "")
        message = str(err.get("message") or "")
        kind = self._sent_kinds.pop(str(err.get("event_id") or ""), None)
        if kind == "response.cancel" or (kind is None and _is_cancel_not_active(code, message)):
            self.log.debug("response.cancel found no active response (expected after barge-in)")
            return
        if kind == "output_audio_buffer.clear" or (kind is None and _is_output_clear_refused(code, message)):
            if not self._obuf_clear_off:
                self._obuf_clear_off = True
                self.log.debug("output_audio_buffer.clear is not supported here; not sent again",
                               code=code, message=message)
            return
        self.stats.voicelive_errors += 1
        if kind == "session.update" or (kind is None and self.state in (CallState.CONNECTING,
                                                                        CallState.RECONNECTING)):
            # the session was refused as configured: nothing will ever answer the caller
            self.log.error("Voice Live refused the session configuration", code=code, message=message,
                           param=err.get("param"))
            self.observer("voicelive.error", now, {"code": code, "message": message, "caused_by": "session.update"})
            self.voicelive_failed("voicelive_session_rejected", now)
            return
        if kind == "conversation.item.truncate":
            self.log.warning("Voice Live rejected a truncation", code=code, message=message)
        else:
            self.log.warning("Voice Live error", code=code, message=message, error_type=err.get("type"),
                             caused_by=kind)
        self.observer("voicelive.error", now, {"code": code, "message": message, "caused_by": kind})

    def _on_committed(self, event: dict[str, Any], now: float) -> None:
        self.stats.caller_turns += 1
        self._inbound.committed()
        opening = self._opening
        if opening is not None and self._farewell is None:  # Voice Live answers no turn by itself here
            if opening.decided == GREET:
                if self._turns is None:  # (the gateway's own turn detection asked already)
                    self._request_response()
            elif opening.decided is None:
                self._open(opening.callee_spoke(now), now)

    def _on_speech_stopped(self, event: dict[str, Any], now: float) -> None:
        self._caller_stopped(now, event.get("audio_end_ms"))

    def _caller_stopped(self, now: float, audio_end_ms: Any) -> None:
        self._speech_stopped_at = now
        self._caller_speaking = False
        self._activity(now)
        self.observer("caller.speech_stopped", now, {"audio_end_ms": audio_end_ms})

    def _on_response_created(self, event: dict[str, Any], now: float) -> None:
        response = _obj(event.get("response"))
        rid = _text(response.get("id"))
        if isinstance(rid, str):
            self.active_response = rid
            self._active_items = []
            if self._farewell is not None and self._farewell.response is None:
                self._farewell.response = rid
        self.stats.responses += 1
        self._forget_old_responses()
        self.observer("response.created", now, {"response_id": rid})

    def _forget_old_responses(self) -> None:
        """What the call keeps per response and per item is for the few still playing or being cut:
        a long call does not keep every one it had."""
        for kept in (self._item_bytes, self._item_response, self._first_audio_seen, self._dropped_responses):
            while len(kept) > RESPONSES_KEPT:
                del kept[next(iter(kept))]

    def _on_response_done(self, event: dict[str, Any], now: float) -> None:
        response = _obj(event.get("response"))
        self.usage.add(response.get("usage"))
        rid = _text(response.get("id"))
        if rid == self.active_response:
            self.active_response = None
        if rid is not None:
            self._dropped_responses.pop(rid, None)
        deferred = self._deferred_truncates.pop(rid, None) if rid is not None else None
        if deferred is not None:
            self._send(deferred)
        farewell = self._farewell
        if farewell is not None:
            if rid == farewell.response:
                self._close_after_playout(farewell.reason, now)
            elif rid is not None and rid == farewell.after:
                farewell.after = None
                if rid in self._first_audio_seen:  # it spoke after calling the tool: that was its goodbye
                    self._close_after_playout(farewell.reason, now)
                else:
                    self._ask_farewell(farewell)
            return
        self._continue_after_tools()
        if self._respond_pending:
            self._request_response()
        self._maybe_renew(now)
        details = _obj(response.get("status_details"))
        self.observer("response.done", now, {
            "response_id": rid, "status": response.get("status"),
            "reason": details.get("reason") if isinstance(details, dict) else None,
        })

    def _on_audio_delta(self, event: dict[str, Any], now: float) -> None:
        rid = _text(event.get("response_id"))
        if rid in self._dropped_responses or self.state == CallState.CLOSING:
            self.stats.deltas_dropped += 1  # (closing: the last words were said; nothing more is played)
            dropped, item_id = event.get("delta"), event.get("item_id")
            if type(dropped) is str and len(dropped) >= 4 and type(item_id) is str:
                self.conversation.more_audio(item_id, b64_len(dropped))  # (its transcript covers it)
            return
        delta = event.get("delta")
        if not delta or not is_base64(delta):
            self._warn_once("bad-delta", "Voice Live sent an audio delta that is not base64; dropped")
            return
        item_id = _text(event.get("item_id"))
        if rid is not None and rid not in self._first_audio_seen:
            self._first_audio_seen[rid] = None
            fields: dict[str, Any] = {"response_id": rid, "item_id": item_id}
            if self._speech_stopped_at is not None:
                fields["after_speech_stopped_ms"] = round(now - self._speech_stopped_at, 1)
            self.observer("bot.first_audio", now, fields)
        if item_id and item_id not in self._item_response:
            self._item_response[item_id] = rid
        self._last_activity = now
        self._queue_audio(delta, item_id, rid, now)
        self.stats.deltas_out += 1
        self.stats.bytes_out += b64_len(delta)

    def _queue_audio(self, audio: str, item_id: str | None, rid: str | None, now: float) -> None:
        """Bot audio for the phone, in pieces the playout can account for."""
        offset = self._item_bytes.get(item_id, 0) if item_id else 0
        to_phone = self.to_phone
        queue = self.playout.queue
        for piece in split_b64(audio, self._piece_chars):
            size = b64_len(piece)
            offset += size
            queue(piece, item_id, offset, size, now, to_phone)
        if item_id:
            self._item_bytes[item_id] = offset

    def _on_truncated(self, event: dict[str, Any], now: float) -> None:
        self.log.debug("Voice Live truncated an item", item_id=event.get("item_id"),
                       audio_end_ms=event.get("audio_end_ms"))

    # --- conversation memory ---------------------------------------------------------------------

    def _on_item_created(self, event: dict[str, Any], now: float) -> None:
        item = event.get("item")
        if isinstance(item, dict) and item.get("type") == "message" and item.get("role") in ("user", "assistant"):
            self.conversation.remember(item.get("id"), item["role"], now)  # (restored turns are known already)
        elif isinstance(item, dict) and item.get("type") == "function_call":
            self._tools.note_item(item)

    def _on_output_item(self, event: dict[str, Any], now: float) -> None:
        item = event.get("item")
        if not isinstance(item, dict):
            return
        if item.get("type") == "message":
            item_id = item.get("id")
            self.conversation.remember(item_id, "assistant", now)
            active = self.active_response
            if active is not None and event.get("response_id") == active and isinstance(item_id, str) \
                    and item_id not in self._active_items and len(self._active_items) < 8:
                self._active_items.append(item_id)
        elif item.get("type") == "function_call":
            self._tools.note_item(item)

    def _on_caller_transcript(self, event: dict[str, Any], now: float) -> None:
        self.conversation.set_text(event.get("item_id"), event.get("transcript"))
        self.observer("caller.transcript", now, {"item_id": event.get("item_id"),
                                                 "text": event.get("transcript")})

    def _on_bot_transcript(self, event: dict[str, Any], now: float) -> None:
        self.conversation.set_text(event.get("item_id"), event.get("transcript"))
        self.observer("bot.transcript", now, {"item_id": event.get("item_id"),
                                              "text": event.get("transcript")})

    # --- a call the gateway placed -------------------------------------------------------------

    def answering_machine(self, result: str, now: float) -> None:
        """The carrier's answering-machine detection reported who answered (see
        :data:`gateway.core.outbound.ANSWERED_BY`)."""
        opening = self._opening
        if opening is None or self.ended:
            return
        self.log.info("answering-machine result", answered_by=result)
        self.observer("call.answered_by", now, {"answered_by": result})
        decision = opening.answered(result, now)
        if self.state == CallState.READY:
            self._open(decision, now)

    @property
    def answered_by(self) -> str | None:
        return self._opening.answered_by if self._opening is not None else None

    def _open(self, decision: str | None, now: float) -> None:
        """Act on the opening's decision: greet the person, speak the voicemail message, or hang up."""
        if decision is None or self.ended:
            return
        self.observer("call.opening", now, {"decision": decision})
        if decision == GREET:
            self.log.info("greeting the callee")
            greeting = self.profile.greeting
            if greeting is not None:
                self._say(greeting, "greeting")
            else:
                self._request_response()
        elif decision == VOICEMAIL:
            message = self._opening.plan.voicemail_message if self._opening is not None else None
            self.log.info("an answering machine answered: leaving the voicemail message")
            self._farewell = Farewell("voicemail_left", now + VOICEMAIL_TIMEOUT_MS)
            self._send(assistant_message(message or ""), kind="voicemail")
        else:
            self.log.info("an answering machine answered: hanging up")
            self._end("answering_machine", now, hang_up=True)

    # --- ending the call by itself ------------------------------------------------------------

    def _say_goodbye(self, reason: str, now: float, transfer_to: str | None = None) -> None:
        """The gateway ends the call (a limit, a key action): the bot says goodbye (or that it is
        transferring the caller), its audio plays out, then the call hangs up or is transferred."""
        self.log.info("ending the call", reason=reason, transfer=transfer_to is not None)
        self.observer("call.limit", now, {"reason": reason})
        self.transfer_to = transfer_to
        if self.state != CallState.READY:
            self._end(reason, now, hang_up=True)
            return
        self._farewell = Farewell(reason, now + GOODBYE_TIMEOUT_MS)
        self._keys.take()  # an entry being typed is dropped: the call is ending
        if self.active_response is not None:  # whatever the bot was saying gives way to the goodbye
            self._dropped_responses[self.active_response] = None
            self._send({"type": "response.cancel"})
            self.active_response = None
        self._send(assistant_message(TRANSFER_WORDS if transfer_to else self.profile.limits.goodbye), kind="goodbye")

    def _end_by_tool(self, reason: str, transfer_to: str | None, call_id: str, rid: Any, now: float) -> None:
        """The model ended the call with a tool. What it said in the same response is its goodbye;
        if it said nothing, it is asked for a short one. Then the call hangs up or is transferred."""
        self.log.info("the bot ends the call", reason=reason, transfer=transfer_to is not None)
        self.transfer_to = transfer_to
        farewell = self._farewell = Farewell(reason, now + GOODBYE_TIMEOUT_MS, tool_call=call_id,
                                             instructions=Farewell.model_words(transfer_to is not None))
        self._keys.take()  # an entry being typed is dropped: the call is ending
        spoke = rid in self._first_audio_seen
        if rid is not None and rid == self.active_response:
            if spoke:
                farewell.response = rid  # its end, once heard, ends the call
            else:
                farewell.after = rid
        elif spoke:
            self._close_after_playout(reason, now)
        else:
            self._ask_farewell(farewell)

    def _ask_farewell(self, farewell: Farewell) -> None:
        if farewell.tool_call is not None:
            self._send({"type": "conversation.item.create", "item": {
                "type": "function_call_output", "call_id": farewell.tool_call,
                "output": json.dumps({"status": "the call ends after your next words"})}})
            farewell.tool_call = None
        farewell.response = None  # the next response is the farewell
        if self.profile.agent is not None:  # an agent takes no per-response instructions: fixed words
            words = TRANSFER_WORDS if self.transfer_to else self.profile.limits.goodbye
            self._send(assistant_message(words), kind="goodbye")
        else:
            self._send({"type": "response.create", "response": {"instructions": farewell.instructions}},
                       kind="goodbye")

    # --- tools ----------------------------------------------------------------------------------

    def _on_function_call(self, event: dict[str, Any], now: float) -> None:
        call_id = event.get("call_id")
        if not isinstance(call_id, str):
            return
        if _text(event.get("response_id")) in self._dropped_responses:
            self.log.info("a tool call of an interrupted response is not run", call_id=call_id)
            return
        if not self._tools.first_call(call_id):
            return
        name = self._tools.name_of(event)
        self.stats.tool_calls += 1
        arguments = event.get("arguments")
        arguments = arguments if isinstance(arguments, str) else ""
        self.observer("tool.called", now, {"name": name, "call_id": call_id})
        tool = self._tools.tools.get(name) if isinstance(name, str) else None
        if tool is None:
            self.log.warning("the model called a tool this profile does not have", tool=name)
            self._tools.failed(call_id, f"there is no tool named {name}")
            self.observer("tool.refused", now, {"name": name, "call_id": call_id, "error": "unknown tool"})
            self._continue_after_tools()
            return
        if tool.builtin is not None:
            self._builtin_tool(tool, call_id, arguments, _text(event.get("response_id")), now)
            return
        self.log.info("running a tool", tool=tool.name, call_id=call_id)
        self._tools.running[call_id] = tool.name
        self.to_tools.append(RunTool(call_id, tool.name, arguments))

    def _builtin_tool(self, tool: Tool, call_id: str, arguments: str, rid: Any, now: float) -> None:
        args = json_object(arguments)
        error: str | None = None
        if tool.builtin == "hang_up":
            self._end_by_tool("bot_hung_up", None, call_id, rid, now)
            return
        if tool.builtin == "transfer_call":
            number, error = transfer_target(tool, args)
            if number is not None and not self.can_transfer:
                error = "transfers are not available on this line; offer the caller another way to get help"
            if number is not None and error is None:
                self._end_by_tool("transferred", number, call_id, rid, now)
                return
        elif tool.builtin == "send_dtmf":
            digits, error = dtmf_digits(args)
            if digits is not None and not self.can_send_dtmf:
                error = "this line cannot send keypad tones"
            elif digits is not None:
                self.log.info("running a tool", tool=tool.name, call_id=call_id)
                self._tools.running[call_id] = tool.name
                self.to_tools.append(RunTool(call_id, tool.name, json.dumps({"digits": digits}), "send_dtmf"))
                return
        self.log.warning("a built-in tool could not run", tool=tool.name, reason=error)
        self._tools.failed(call_id, str(error))
        self.observer("tool.refused", now, {"name": tool.name, "call_id": call_id, "error": str(error)})
        self._continue_after_tools()

    def tool_result(self, call_id: str, output: str, now: float) -> None:
        """A tool finished (its output, or an error text the model can apologise for)."""
        if self.ended:
            return
        name = self._tools.finished(call_id, output)
        if name is None:
            return
        self.observer("tool.done", now, {"name": name, "call_id": call_id, "ok": not tool_failed(output)})
        self._continue_after_tools()

    def _continue_after_tools(self) -> None:
        """Once every tool of the turn has answered and no response is running, hand the outputs
        to the model and let it go on."""
        tools = self._tools
        if not tools.outputs or tools.running or self.active_response is not None:
            return
        for call_id, output in tools.outputs:
            self._send({"type": "conversation.item.create",
                        "item": {"type": "function_call_output", "call_id": call_id, "output": output}})
        tools.outputs.clear()
        self._send({"type": "response.create"})

    # --- barge-in ---------------------------------------------------------------------------

    def _on_speech_started(self, event: dict[str, Any], now: float) -> None:
        self._caller_started(now, event.get("audio_start_ms"), by_server_vad=True)

    def _caller_started(self, now: float, audio_start_ms: Any, *, by_server_vad: bool) -> None:
        """The caller started speaking (heard by Voice Live's turn detection, or by the gateway's)."""
        self.observer("caller.speech_started", now, {"audio_start_ms": audio_start_ms})
        self._caller_speaking = True
        self._inbound.speech_started()
        self._activity(now)
        self._caller_heard_from(now)
        if self._opening is not None and self._opening.decided is None:
            self._open(self._opening.callee_started(now), now)
            return
        if self._farewell is not None:
            return  # the call is ending: the goodbye is not interrupted
        self._barge_in(now, by_server_vad=by_server_vad)

    def _barge_in(self, now: float, by_server_vad: bool = False) -> None:
        """The caller interrupts the bot: stop its audio at the phone and at Voice Live, and cut the
        model's memory of its answer to what the caller heard.

        Only what helps is sent: ``response.cancel`` while a response of ours is still being
        generated, unless Voice Live's own turn detection has cancelled it already
        (``interrupt_response``); ``output_audio_buffer.clear`` while Voice Live may still hold audio
        of it; a truncation unless Voice Live truncates the item itself (``auto_truncate``)."""
        if self.state != CallState.READY:
            return  # the session is being restored: nothing to interrupt
        switches = self.profile.barge_in
        playing = self.playout.playing(now)
        active = self.active_response
        if active in self._dropped_responses:
            active = None  # already interrupted; its response.done has not arrived yet
        if not switches.enabled or (not playing and active is None):
            return  # the bot is silent: nothing to interrupt
        if playing:
            # 1. flush the phone's playback first: this is what the caller notices
            self.to_phone.append(CLEAR)
            item_id, heard = self.playout.flush(now)
        else:
            item_id, heard = self.playout.position(now)
        # 2. stop the response and drop whatever of it still arrives
        cancelled = by_server_vad and self._server_interrupts  # Voice Live cancelled it when it heard speech
        if active is not None:
            self._dropped_responses[active] = None
            if switches.response_cancel and not cancelled:
                self._send({"type": "response.cancel"})
                cancelled = True
            if not self._obuf_clear_off:
                self._send({"type": "output_audio_buffer.clear"})
        # 3. cut the model's memory of the item to what the caller heard
        heard_ms: int | None = None
        received_ms: int | None = None
        if item_id is not None and (playing or self._item_response.get(item_id) == active):
            received = self._item_bytes.get(item_id, 0)
            received_ms = received // self.audio.bytes_per_ms
            ms = min(heard, received) // self.audio.bytes_per_ms
            self.conversation.heard(item_id, heard, received)
            if ms > 0 and by_server_vad and self._server_truncates:
                self.log.debug("Voice Live truncates the item itself (auto_truncate)", heard_ms=ms)
            elif ms > 0:
                heard_ms = ms
                self.stats.truncations += 1
                truncate = {"type": "conversation.item.truncate", "item_id": item_id,
                            "content_index": 0, "audio_end_ms": ms}
                owner = self._item_response.get(item_id)
                if owner is not None and owner == active and not cancelled:
                    # the item is still being generated and nobody cancels it: cut it once it is done
                    self._deferred_truncates[owner] = truncate
                else:
                    self._send(truncate)
        # the caller heard none of the items queued behind it, nor those of the cut response with no audio yet
        unheard = self.playout.unheard if playing else []
        if active is not None:
            unheard = unheard + [i for i in self._active_items if i != item_id and not self._item_bytes.get(i)]
        for other in unheard:
            self.conversation.heard(other, 0, self._item_bytes.get(other, 0))
        self.stats.barge_ins += 1
        record = BargeIn(now, playing, active, item_id, heard_ms, received_ms)
        self.barge_ins.append(record)
        self.log.info("barge-in", cleared=playing, cancelled_response=active, item_id=item_id,
                      heard_ms=heard_ms, received_ms=received_ms)
        self.observer("barge_in", now, {"cleared": playing, "response_id": active, "item_id": item_id,
                                        "truncated_at_ms": heard_ms, "received_ms": received_ms})


# Voice Live events the call handles, by type, and the method that handles each: one table for every
# call (not a table of bound methods per call)
_HANDLERS: dict[str, str] = {
    "conversation.item.created": "_on_item_created",
    "response.output_item.added": "_on_output_item",
    "session.created": "_on_session_created",
    "session.updated": "_on_session_updated",
    "error": "_on_error",
    "input_audio_buffer.speech_started": "_on_speech_started",
    "input_audio_buffer.speech_stopped": "_on_speech_stopped",
    "input_audio_buffer.committed": "_on_committed",
    "response.created": "_on_response_created",
    "response.audio.delta": "_on_audio_delta",
    "response.done": "_on_response_done",
    "conversation.item.truncated": "_on_truncated",
    "conversation.item.input_audio_transcription.completed": "_on_caller_transcript",
    "response.audio_transcript.done": "_on_bot_transcript",
    "response.function_call_arguments.done": "_on_function_call",
    "response.output_item.done": "_on_output_item",
}

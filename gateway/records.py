"""The post-call record: one JSON document per ended call (who, when, how it ended, the transcript
as the caller heard it, tools, keys, Voice Live sessions and token usage).

:class:`CallEvents` keeps what a call reports to its observer that the record needs;
:func:`build_record` turns the ended :class:`~gateway.call.Call` and those events into the record.
Both are pure: no clock, no file, no socket (the shell gives the record its id and the wall-clock
time of the call's clock zero). Delivery is :mod:`gateway.webhooks`.

Masking: numbers keep their last digits only unless the profile opts out; runs of digits said aloud
are masked in the transcript unless the profile opts out; registered secrets never appear.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.call import Call
from gateway.core.keys import KEY_ITEM_PREFIX
from gateway.core.masking import MIN_DIGITS, mask_digit_runs, mask_number
from gateway.core.memory import heard_words
from gateway.log import scrub_text

__all__ = ["RECORD_EVENTS", "RECORD_VERSION", "CallEvents", "RecordOptions", "build_record"]

RECORD_VERSION = 1
KEYS = frozenset("0123456789*#ABCD")
MAX_EVENTS = 5000  # what a call keeps for its record (a call with more keeps its first ones)

# the observer events a record is built from
RECORD_EVENTS = frozenset({
    "barge_in", "caller.dtmf", "caller.keys", "tool.called", "tool.done", "tool.refused", "voicelive.connected",
    "session.created", "session.ready", "session.restored", "voicelive.lost", "voicelive.error", "call.limit",
    "call.ended",
})


class CallEvents:
    """An observer keeping the events of one call its record needs (others pass through unkept)."""

    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events: list[tuple[str, float, dict[str, Any]]] = []

    def __call__(self, event: str, t: float, fields: dict[str, Any]) -> None:
        if event in RECORD_EVENTS and len(self.events) < MAX_EVENTS:
            self.events.append((event, t, dict(fields)))


@dataclass(frozen=True, slots=True)
class RecordOptions:
    """How a profile's records are masked."""

    mask_numbers: bool = True  # phone numbers keep only their last 4 digits
    mask_digits: bool = True  # runs of digits in the transcript (and keys pressed) are masked
    min_digits: int = MIN_DIGITS  # the shortest run of digits masked


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(t: float | None) -> int | None:
    return None if t is None else round(t)


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {k: _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v) for v in value]
    return value


def outcome_of(call: Call, failed: bool) -> str:
    """A record's outcome, one of a few words: how the call went, beside its exact end reason."""
    if call.transfer_to is not None:
        return "transferred"
    if failed:
        return "failed"
    if call.answered_by is not None and call.answered_by.startswith("machine"):
        return "answering_machine"
    if call.ready_at is None:
        return "not_connected"
    return "completed"


def _transcript(call: Call, mask: RecordOptions) -> list[dict[str, Any]]:
    turns = []
    for turn in call.conversation.history:
        if turn.text is None:
            continue
        entry: dict[str, Any] = {"role": "caller" if turn.role == "user" else "bot", "at_ms": _ms(turn.at)}
        text = turn.text
        if turn.item_id.startswith(KEY_ITEM_PREFIX):  # an entry on the keypad, as the model heard it
            entry["keys"] = True
            if mask.mask_digits:  # keys are a PIN as often as not: their count only
                text = f"[The caller pressed {sum(ch in KEYS for ch in text)} keys on the phone keypad]"
        elif turn.role == "assistant" and turn.heard < 1.0:
            # the share of its words the caller heard: the share of its audio the phone played (the
            # final position, also when the phone told it after the barge-in) of all the audio the
            # transcript covers (also what came after the barge-in and was never played)
            text = heard_words(text, turn.heard)
            entry["interrupted"] = True
            entry["heard_ms"] = (turn.heard_bytes or 0) // call.audio.bytes_per_ms
        if mask.mask_digits and "keys" not in entry:  # (secrets first: a secret's digits masked hide it no more)
            text = mask_digit_runs(scrub_text(text), mask.min_digits)
        entry["text"] = text
        turns.append(entry)
    return turns


def _tools(events: list[tuple[str, float, dict[str, Any]]], call: Call) -> list[dict[str, Any]]:
    tools: dict[str, dict[str, Any]] = {}
    for event, t, f in events:
        call_id = f.get("call_id")
        if not isinstance(call_id, str):
            continue
        if event == "tool.called":
            tools[call_id] = {"name": f.get("name"), "call_id": call_id, "started_ms": _ms(t), "ended_ms": None,
                              "duration_ms": None, "outcome": "unfinished"}
        elif event in ("tool.done", "tool.refused") and call_id in tools:
            tool = tools[call_id]
            tool["ended_ms"] = _ms(t)
            tool["duration_ms"] = _ms(t - tool["started_ms"])
            if event == "tool.refused":
                tool["outcome"], tool["error"] = "refused", f.get("error")
            else:
                tool["outcome"] = "ok" if f.get("ok", True) else "error"
    ender = {"bot_hung_up": "hang_up", "transferred": "transfer_call"}.get(call.end_reason or "")
    enders = {t.name for t in call.profile.tools if ender is not None and t.builtin == ender}
    for tool in tools.values():
        if tool["outcome"] == "unfinished" and tool["name"] in enders:
            # the built-in tool that ended the call finishes with it (another one still running does not)
            name = "transferred" if call.end_reason == "transferred" else "ended_call"
            tool["outcome"], tool["ended_ms"] = name, _ms(call.ended_at)
            if call.ended_at is not None:
                tool["duration_ms"] = _ms(call.ended_at - tool["started_ms"])
    return list(tools.values())


def _sessions(events: list[tuple[str, float, dict[str, Any]]]) -> list[dict[str, Any]]:
    sessions: list[dict[str, Any]] = []
    for event, t, f in events:
        if event == "voicelive.connected":
            sessions.append({"id": None, "connected_ms": _ms(t), "ready_ms": None, "ended_ms": None,
                             "close_code": None, "renewed": False})
        elif not sessions:
            continue
        elif event == "session.created" and sessions[-1]["id"] is None:
            sessions[-1]["id"] = f.get("session_id")
        elif event in ("session.ready", "session.restored") and sessions[-1]["ready_ms"] is None:
            sessions[-1]["ready_ms"] = _ms(t)
        elif event == "voicelive.lost":
            sessions[-1].update(ended_ms=_ms(t), close_code=f.get("code"), renewed=bool(f.get("renewing")))
    return sessions


def build_record(call: Call, events: list[tuple[str, float, dict[str, Any]]], *, record_id: str,
                 carrier: str, clock_zero_s: float, failed: bool = False,
                 options: RecordOptions = RecordOptions()) -> dict[str, Any]:
    """The record of an ended call. ``events`` are what its :class:`CallEvents` kept, ``clock_zero_s``
    the wall-clock time (unix seconds) of the call's clock zero, ``failed`` whether the call ended
    because the gateway could not serve it."""

    def wall(t: float | None) -> str | None:
        return None if t is None else _iso(clock_zero_s + t / 1000.0)

    def number(value: str | None) -> str | None:
        return mask_number(value) if options.mask_numbers else value

    answered = call.answered_at if call.answered_at is not None else call.started_at
    ended = call.ended_at
    presses = [(t, f.get("digit")) for e, t, f in events if e == "caller.dtmf"]
    keys: dict[str, Any] = {"pressed": len(presses),
                            "entries": [{"at_ms": _ms(t), "keys": f.get("count")} for e, t, f in events
                                        if e == "caller.keys"]}
    if not options.mask_digits:
        keys["digits"] = "".join(str(d) for _t, d in presses if isinstance(d, str))
    transfers = [{"to": number(call.transfer_to), "at_ms": _ms(ended)}] if call.transfer_to is not None else []
    sessions = _sessions(events)
    record = {
        "type": "call.record",
        "version": RECORD_VERSION,
        "id": record_id,
        "call_id": call.call_id,
        "stream_id": call.stream_id,
        "carrier": carrier,
        "direction": call.direction,
        "profile": call.profile_name,
        "from": number(call.caller),
        "to": number(call.called),
        "numbers_masked": options.mask_numbers,
        "started_at": wall(call.started_at),
        "answered_at": wall(answered),
        "ended_at": wall(ended),
        "clock_ms": {"started": _ms(call.started_at), "answered": _ms(answered), "ready": _ms(call.ready_at),
                     "ended": _ms(ended)},
        "duration_ms": _ms(ended - call.started_at) if ended is not None else None,
        "outcome": outcome_of(call, failed),
        "end_reason": call.end_reason,
        "answering_machine": call.answered_by,
        "transcript": _transcript(call, options),
        "transcript_digits_masked": options.mask_digits,
        "barge_ins": [{"at_ms": _ms(b.at), "cleared": b.cleared, "response_id": b.cancelled_response,
                       "item_id": b.item_id, "heard_ms": b.heard_ms, "received_ms": b.received_ms}
                      for b in call.barge_ins],
        "tools": _tools(events, call),
        "transfers": transfers,
        "keys": keys,
        "voicelive": {"sessions": sessions, "reconnects": call.stats.reconnects,
                      "errors": sum(1 for e, _t, _f in events if e == "voicelive.error")},
        "usage": call.usage.as_dict(),
        "audio_ms": {"caller": call.stats.bytes_in // call.audio.bytes_per_ms,
                     "bot": call.stats.bytes_out // call.audio.bytes_per_ms},
    }
    scrubbed: dict[str, Any] = _scrubbed(record)
    return scrubbed

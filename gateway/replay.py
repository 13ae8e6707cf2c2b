"""Replay recorded calls as tests.

A fixture is a call recording (see :mod:`gateway.recording`). :func:`replay` feeds its inbound
messages, phone and Voice Live, into a fresh call with the recorded timestamps, and compares what
the gateway sends now with what it sent then, message by message, on each leg. It also checks
invariants every call must keep, whatever the exact messages:

- every caller frame is forwarded to Voice Live once, in order;
- no phone audio of a response goes out after the barge-in flush that interrupted it;
- a truncation never goes past the audio received for its item;
- the Voice Live socket is closed when the call ends.

It runs in milliseconds: nothing waits for real time.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.audio import AudioFormat, b64_len
from gateway.call import RECORDED_PIECE_MS, Call, CallState
from gateway.carriers.base import Carrier, ReplayError, ReplayStart
from gateway.carriers.registry import carrier_named, carrier_names
from gateway.config import Profile
from gateway.core.outbound import OutboundPlan
from gateway.recording import FORMAT
from gateway.wire import PHONE, TIMER, TOOLS, VOICELIVE, WireCall

LEGS = (PHONE, VOICELIVE, TOOLS, TIMER)


class FixtureError(ValueError):
    """A file that is not a usable call recording; the text says why."""


SCRUBBED_TOOL_URL = "http://scrubbed.invalid/"  # a tool URL the recorder scrubbed (see Fixture.profile)

@dataclass
class Fixture:
    path: Path
    header: dict[str, Any]
    records: list[dict[str, Any]]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def profile(self) -> dict[str, Any]:
        """The recorded profile, as a replay can load it: a tool URL the recorder scrubbed whole (it
        came from the environment, so it counts as a secret) becomes a placeholder. A replay never
        calls a tool (the recording holds the outputs); the URL only has to be a URL."""
        profile = self.header.get("profile")
        if not isinstance(profile, dict):
            return {}
        tools = profile.get("tools")
        if not isinstance(tools, list):
            return profile
        kept = []
        for tool in tools:
            http = tool.get("http") if isinstance(tool, dict) else None
            url = http.get("url") if isinstance(http, dict) else None
            if isinstance(url, str) and "***" in url and not url.startswith(("http://", "https://")):
                tool = {**tool, "http": {**http, "url": SCRUBBED_TOOL_URL}}  # type: ignore[dict-item]
            kept.append(tool)
        return {**profile, "tools": kept}


def load_fixture(path: str | Path) -> Fixture:
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise FixtureError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not lines:
        raise FixtureError(f"{path}: empty file")
    entries: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError as exc:  # a JSONDecodeError, or e.g. an integer of too many digits
            detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)[:80]
            raise FixtureError(f"{path}:{number}: not JSON ({detail})") from None
        if not isinstance(entry, dict):
            raise FixtureError(f"{path}:{number}: expected a JSON object")
        entries.append(entry)
    header, records = entries[0], entries[1:]
    if header.get("format") != FORMAT:
        raise FixtureError(f"{path}:1: not a call recording of format {FORMAT} (format {header.get('format')!r})")
    if header.get("carrier") not in carrier_names():
        raise FixtureError(f"{path}:1: carrier {header.get('carrier')!r} cannot be replayed "
                           f"(the carriers are {', '.join(carrier_names())})")
    for number, rec in enumerate(records, 2):
        if not isinstance(rec.get("t"), (int, float)) or rec.get("leg") not in LEGS:
            raise FixtureError(f"{path}:{number}: a record needs a time t and a leg (phone or voicelive)")
        if rec.get("dir") not in ("in", "out") and not isinstance(rec.get("event"), str):
            raise FixtureError(f"{path}:{number}: a record needs dir (in/out) or an event")
    return Fixture(path, header, records)


def _data(rec: dict[str, Any]) -> str | bytes:
    """A recorded message as it was on the wire: text, or the bytes of a binary frame."""
    if "binary" in rec:
        return base64.b64decode(rec["binary"])
    return rec.get("msg", "")


def _message_fields(message: str | bytes) -> dict[str, str]:
    """How a record holds a message: ``msg`` for text, ``binary`` (base64) for a binary frame."""
    if isinstance(message, bytes):
        return {"binary": base64.b64encode(message).decode()}
    return {"msg": message}


@dataclass
class Sent:
    """A message the gateway sent: when, on which leg, and which input caused it."""

    t: float
    text: str | bytes  # bytes: a binary frame
    cause: int  # index of the record whose input produced it


@dataclass
class Replay:
    fixture: Fixture
    expected: dict[str, list[Sent]]
    actual: dict[str, list[Sent]]
    call: Call | None
    problems: list[str] = field(default_factory=list)  # invariant violations and setup problems
    mismatch: str | None = None  # readable description of the first difference

    @property
    def ok(self) -> bool:
        return not self.problems and self.mismatch is None


class _QuietLog:
    """Replays are silent: the recorded call already logged its story."""

    def bind(self, **_: Any) -> _QuietLog:
        return self

    def _nothing(self, *_: Any, **__: Any) -> None:
        return None

    debug = info = warning = error = _nothing


def _carrier(fixture: Fixture) -> Carrier:
    return carrier_named(str(fixture.header.get("carrier")))


def _find_start(fixture: Fixture) -> ReplayStart:
    """Where the recorded call's phone leg started, as its carrier reads the recording."""
    try:
        return _carrier(fixture).replay_start(fixture.header, fixture.records)
    except ReplayError as exc:
        raise FixtureError(f"{fixture.path}: {exc}") from None


def run(fixture: Fixture) -> Replay:
    """Feed the fixture's inputs through a fresh call; collect what it sends."""
    header = fixture.header
    expected: dict[str, list[Sent]] = {leg: [] for leg in LEGS}
    actual: dict[str, list[Sent]] = {leg: [] for leg in LEGS}
    start = _find_start(fixture)
    start_index = start.index
    try:
        profile = Profile.model_validate(fixture.profile)
    except ValueError as exc:
        raise FixtureError(f"{fixture.path}:1: the recorded profile is not valid now: {exc}") from None
    audio = start.audio
    options = header.get("call_options")
    if not isinstance(options, dict):
        options = {}
    leg_options = dict(start.options)
    if "piece_ms" not in leg_options:  # the leg's own size, else the recorded one
        piece_ms = options.get("piece_ms")
        leg_options["piece_ms"] = piece_ms if type(piece_ms) is int and piece_ms > 0 else RECORDED_PIECE_MS
    call = Call(call_id=start.call_id, stream_id=start.stream_id,
                profile_name=str(header.get("profile_name") or "recorded"), profile=profile,
                started_at=start.started_at, audio=audio, log=_QuietLog(), **leg_options,
                reconnect_budget_ms=float(options.get("reconnect_budget_ms", 0.0)),
                renew_before_ms=float(options.get("renew_before_ms", 120_000.0)),
                can_transfer=options.get("can_transfer") is True,
                can_send_dtmf=options.get("can_send_dtmf") is True,
                outbound=OutboundPlan.from_recorded(options.get("outbound")))
    wire = WireCall(call, start.leg)
    end_index = closing_index = len(fixture.records)
    for index, rec in enumerate(fixture.records):
        leg, t = rec["leg"], rec["t"]
        direction = rec.get("dir")
        if direction == "out":
            expected[leg].append(Sent(t, _data(rec), index))
            continue
        if index <= start_index:
            continue
        if direction == "in":
            if leg == PHONE:
                wire.from_phone(_data(rec), t)
            elif leg == VOICELIVE:
                wire.from_voicelive(_data(rec), t)
            else:
                output = _json(str(rec.get("msg", "")))
                wire.from_tools(str(output.get("call_id")), str(output.get("output", "")), t)
        else:
            event = rec["event"]
            if leg == VOICELIVE and event == "open":
                wire.voicelive_opened(t)
            elif leg == VOICELIVE and event == "closed":
                wire.voicelive_closed(rec.get("code"), t)
            elif leg == VOICELIVE and event == "failed":
                wire.voicelive_failed(str(rec.get("reason") or "voicelive_failed"), t)
            elif leg == VOICELIVE and event == "hold":
                wire.hold(int(rec.get("ms") or 0), t)
            elif leg == VOICELIVE and event == "renewal_deferred":
                wire.renewal_deferred(t)
            elif leg == VOICELIVE and event == "expires_in":
                wire.session_expiry(float(rec.get("seconds") or 0.0), t)
            elif leg == TIMER and event == "tick":
                wire.tick(t)
            elif leg == PHONE and event == "closed":
                wire.phone_closed(str(rec.get("reason") or "phone_socket_closed"), t)
            elif leg == PHONE and event == "answered_by":
                wire.answering_machine(str(rec.get("result") or "unknown"), t)
            elif leg == PHONE and event == "cut":
                wire.gateway_ended(str(rec.get("reason") or "gateway_cut"), t)
            elif leg == PHONE and event == "away":
                wire.phone_away(t)
            elif leg == PHONE and event == "back":
                wire.phone_back(t)
        for text in wire.take_voicelive():
            actual[VOICELIVE].append(Sent(t, text, index))
        for message in wire.take_phone():
            actual[PHONE].append(Sent(t, message, index))
        for run_tool in wire.take_tools():
            text = json.dumps({"call_id": run_tool.call_id, "name": run_tool.name, "arguments": run_tool.arguments},
                              separators=(",", ":"))
            actual[TOOLS].append(Sent(t, text, index))
        if call.state in (CallState.CLOSING, CallState.ENDED) and closing_index == len(fixture.records):
            closing_index = index
        if call.ended and end_index == len(fixture.records):
            end_index = index
    result = Replay(fixture, expected, actual, call)
    result.problems = check_invariants(fixture, actual, audio, ready=call.ready_at is not None, end_index=end_index,
                                       closing_index=closing_index)
    result.mismatch = first_difference(fixture, expected, actual)
    return result


# --- comparison --------------------------------------------------------------------------------

_AUDIO_TEXT = re.compile(r'"(payload|audio|delta)":"([A-Za-z0-9+/]{24,}={0,2})"')


def abbreviate(text: str | bytes, limit: int = 240) -> str:
    """A message for humans: audio payloads shown as their size."""
    if isinstance(text, bytes):
        return f"<binary frame of {len(text)} bytes>"
    short = _AUDIO_TEXT.sub(lambda m: f'"{m.group(1)}":"<{b64_len(m.group(2))} bytes of audio>"', text)
    return short if len(short) <= limit else short[: limit - 3] + "..."


def _context(items: list[Sent], at: int, before: int = 3) -> list[str]:
    lines = []
    for i in range(max(0, at - before), min(len(items), at + 2)):
        marker = ">" if i == at else " "
        lines.append(f"      {marker} #{i} t={items[i].t:.1f} ms  {abbreviate(items[i].text)}")
    return lines


def _inputs_before(fixture: Fixture, cause: int, count: int = 4) -> list[str]:
    lines = []
    for index in range(max(0, cause - 12), cause + 1):
        rec = fixture.records[index]
        if rec.get("dir") == "out":
            continue
        if "msg" in rec or "binary" in rec:
            what = abbreviate(_data(rec))
        else:
            what = json.dumps({k: v for k, v in rec.items() if k != "t"})
        lines.append(f"        t={rec['t']:.1f} ms  {rec['leg']} {rec.get('dir', '')}  {what}")
    return lines[-count:]


def first_difference(fixture: Fixture, expected: dict[str, list[Sent]], actual: dict[str, list[Sent]],
                     tolerance: Any = None, show_inputs: bool = True) -> str | None:
    """The first message that differs, on whichever leg it comes first in time, with context.

    ``tolerance(expected, actual)`` may accept two different texts as equal."""
    found: list[tuple[float, str, int]] = []
    for leg in expected:
        exp, act = expected[leg], actual[leg]
        for i in range(max(len(exp), len(act))):
            e = exp[i] if i < len(exp) else None
            a = act[i] if i < len(act) else None
            if e is not None and a is not None and (e.text == a.text or (tolerance and tolerance(e.text, a.text))):
                continue
            found.append(((e or a).t, leg, i))  # type: ignore[union-attr]
            break
    if not found:
        return None
    _, leg, i = min(found)
    exp, act = expected[leg], actual[leg]
    lines = [f"  {leg} leg, message #{i} differs:"]
    lines.append("    expected: " + (abbreviate(exp[i].text, 400) if i < len(exp) else "(nothing more)"))
    lines.append("    actual:   " + (abbreviate(act[i].text, 400) if i < len(act) else "(nothing more)"))
    for name, items in (("expected", exp), ("actual", act)):
        if items:
            lines.append(f"    {name} on the {leg} leg:")
            lines += _context(items, min(i, len(items) - 1))
    here = act[i] if i < len(act) else exp[i]
    if show_inputs:
        lines.append("    inputs just before (both legs):")
        lines += _inputs_before(fixture, here.cause)
    t = here.t
    others = [name for name in actual if name != leg]
    other = others[-1] if others else leg
    near = [s for s in actual[other] if s.t <= t][-3:]
    if near and other != leg:
        lines.append(f"    sent on the {other} leg just before:")
        lines += [f"        t={s.t:.1f} ms  {abbreviate(s.text)}" for s in near]
    return "\n".join(lines)


# --- invariants ----------------------------------------------------------------------------------


def _json(text: str | bytes) -> dict[str, Any]:
    if isinstance(text, bytes):
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def check_invariants(fixture: Fixture, actual: dict[str, list[Sent]], audio: AudioFormat, *,
                     ready: bool, end_index: int, closing_index: int | None = None) -> list[str]:
    """Invariant violations of a replayed call (``ready``: its Voice Live session became ready;
    ``end_index``: the record that ended it; ``closing_index``: the record from which the gateway
    was ending it, a goodbye or an apology playing out: caller audio is no longer forwarded)."""
    problems: list[str] = []
    records = fixture.records
    carrier = _carrier(fixture)
    start_index = _find_start(fixture).index
    sent_vl = [(s, _json(s.text)) for s in actual[VOICELIVE]]

    # 1. every caller frame forwarded once, in order (frames after the call ended, or began to close,
    # are not owed); when a session was lost mid-utterance, the start of the next one may repeat what
    # the lost one had
    opens = [i for i, r in enumerate(records) if r["leg"] == VOICELIVE and r.get("event") == "open"]
    sessions: list[list[str | None]] = [[] for _ in opens] or [[]]  # None: an append without audio
    for s, m in sent_vl:
        if m.get("type") == "input_audio_buffer.append":
            sessions[max(0, sum(1 for o in opens if o <= s.cause) - 1)].append(m.get("audio"))
    frames: list[str] = []
    for index in range(start_index + 1, min(end_index, closing_index if closing_index is not None else end_index)):
        rec = records[index]
        if rec["leg"] == PHONE and rec.get("dir") == "in" and ("msg" in rec or "binary" in rec):
            payload = carrier.caller_audio(_data(rec))
            if payload is not None:
                frames.append(payload)
    appended = _without_resends(sessions, frames)
    if ready and appended != frames:
        problems.append(_frames_problem(frames, appended))
    elif not ready and appended:
        problems.append("caller audio was forwarded before the Voice Live session was ready")

    # 2. no phone audio of a response after the barge-in flush that interrupted it
    interrupted: set[str] = set()
    playing: set[str] = set()  # responses whose audio was sent to the phone
    active: set[str] = set()
    phone_by_cause: dict[int, list[str | bytes]] = {}
    for s in actual[PHONE]:
        phone_by_cause.setdefault(s.cause, []).append(s.text)
    for index in range(start_index + 1, len(records)):
        rec = records[index]
        if rec["leg"] == VOICELIVE and rec.get("dir") == "in" and isinstance(rec.get("msg"), str):
            m = _json(rec["msg"])
            kind = m.get("type")
            if kind == "response.created":
                active.add(str((m.get("response") or {}).get("id")))
            elif kind == "response.done":
                active.discard(str((m.get("response") or {}).get("id")))
            elif kind == "response.audio.delta":
                rid = str(m.get("response_id"))
                media = [t for t in phone_by_cause.get(index, []) if carrier.outbound_kind(t) == "audio"]
                if rid in interrupted and media:
                    problems.append(f"phone audio of response {rid} sent after its barge-in flush "
                                    f"(record {index + 2}, t={rec['t']:.1f} ms)")
                elif media:
                    playing.add(rid)
        if any(carrier.outbound_kind(t) == "flush" for t in phone_by_cause.get(index, [])):
            interrupted |= active | playing
            playing = set()

    # 3. a truncation never goes past the audio received for its item
    received: dict[str, int] = {}
    vl_out_by_cause: dict[int, list[dict[str, Any]]] = {}
    for s, m in sent_vl:
        vl_out_by_cause.setdefault(s.cause, []).append(m)
    for index in range(start_index + 1, len(records)):
        rec = records[index]
        if rec["leg"] == VOICELIVE and rec.get("dir") == "in" and isinstance(rec.get("msg"), str):
            m = _json(rec["msg"])
            if m.get("type") == "response.audio.delta" and isinstance(m.get("delta"), str):
                item = str(m.get("item_id"))
                received[item] = received.get(item, 0) + b64_len(m["delta"])
        for m in vl_out_by_cause.get(index, []):
            if m.get("type") == "conversation.item.truncate":
                item = str(m.get("item_id"))
                have = received.get(item, 0) // audio.bytes_per_ms
                if not isinstance(m.get("audio_end_ms"), int) or m["audio_end_ms"] > have:
                    problems.append(f"truncation of {item} at {m.get('audio_end_ms')} ms is past the "
                                    f"{have} ms of audio received for it")
                elif m["audio_end_ms"] <= 0:
                    problems.append(f"truncation of {item} at {m['audio_end_ms']} ms: nothing was heard")

    # 4. the Voice Live socket is closed when the call ends
    opened = any(r["leg"] == VOICELIVE and r.get("event") == "open" for r in records)
    closed = any(r["leg"] == VOICELIVE and r.get("event") in ("close", "closed") for r in records)
    if opened and not closed:
        problems.append("the Voice Live socket was not closed when the call ended")
    after_end = [s for s in actual[VOICELIVE] if s.cause >= end_index and end_index < len(records)]
    if after_end:
        problems.append(f"{len(after_end)} message(s) sent to Voice Live after the call ended")
    return problems


def _without_resends(sessions: list[list[str | None]], frames: list[str]) -> list[str | None]:
    """The frames forwarded, each once: a session may start by repeating the tail of the one before it
    (caller speech the lost session had not committed). Silence frames repeat byte for byte, so the
    length of that repeated tail is the one that keeps the forwarded audio in step with what the caller
    sent; without such a length nothing is taken as repeated and the comparison shows the fault."""
    out: list[str | None] = []
    for sent in sessions:
        overlap = 0
        for size in range(1, min(len(sent), len(out)) + 1):
            if out[-size:] != sent[:size]:
                continue
            candidate = out + sent[size:]
            if candidate == frames[:len(candidate)]:
                overlap = size
                break
        out += sent[overlap:]
    return out


def _frames_problem(frames: list[str], appended: list[str | None]) -> str:
    for i, (want, got) in enumerate(zip(frames, appended, strict=False)):
        if want != got:
            dup = " (a duplicate of an earlier frame)" if got in frames[:i] else ""
            return f"caller frame #{i} was not forwarded in order{dup}"
    if len(appended) < len(frames):
        return f"{len(frames) - len(appended)} caller frame(s) never reached Voice Live (of {len(frames)})"
    return f"{len(appended) - len(frames)} more frame(s) reached Voice Live than the caller sent"


# --- updating a fixture ----------------------------------------------------------------------------


def rewrite_expected(replay: Replay) -> str:
    """The fixture's text with its outbound messages replaced by what the gateway sends now."""
    fixture = replay.fixture
    produced: dict[int, list[dict[str, Any]]] = {}
    for leg in (VOICELIVE, PHONE, TOOLS):  # the order in which the shell takes them
        for s in replay.actual[leg]:
            produced.setdefault(s.cause, []).append({"t": s.t, "leg": leg, "dir": "out", **_message_fields(s.text)})
    lines = [json.dumps(fixture.header, ensure_ascii=False)]
    for index, rec in enumerate(fixture.records):
        if rec.get("dir") == "out":
            continue
        lines.append(json.dumps(rec, separators=(",", ":"), ensure_ascii=False))
        for out in produced.get(index, []):
            lines.append(json.dumps(out, separators=(",", ":"), ensure_ascii=False))
    return "\n".join(lines) + "\n"


# --- command line ----------------------------------------------------------------------------------


def replay_files(paths: list[str], *, update: bool = False, out: Any = None) -> int:
    """``gateway replay``: PASS/FAIL per fixture; 0 when all pass."""
    import sys

    out = out or sys.stdout
    failed = 0
    for path in paths:
        try:
            fixture = load_fixture(path)
            result = run(fixture)
        except FixtureError as exc:
            print(f"ERROR {path}: {exc}", file=out)
            failed += 1
            continue
        if update and result.mismatch is not None:
            Path(path).write_text(rewrite_expected(result), encoding="utf-8")
            result = run(load_fixture(path))
            print(f"UPDATED {path}", file=out)
        sent = sum(len(v) for v in result.actual.values())
        failed += not print_result(path, result, f"({len(fixture.records)} records, {sent} messages sent)", out)
    return print_totals(len(paths), failed, out)


def print_result(path: str, result: Any, detail: str, out: Any) -> bool:
    """PASS, or FAIL with the first difference and the broken invariants. True when it passed."""
    if result.ok:
        print(f"PASS {path} {detail}", file=out)
        return True
    print(f"FAIL {path}", file=out)
    if result.mismatch:
        print(result.mismatch, file=out)
    for problem in result.problems:
        print(f"  invariant broken: {problem}", file=out)
    return False


def print_totals(count: int, failed: int, out: Any) -> int:
    if count > 1:
        print(f"{count - failed} passed, {failed} failed", file=out)
    return 1 if failed else 0

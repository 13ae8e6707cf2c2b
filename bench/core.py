"""What the call's core spends on a barge-in and on the marks a phone returns after it, in process.

A recorded call with a barge-in (``tests/fixtures/calls/barge_in_mid_answer.jsonl`` by default) is
replayed into ``--calls`` fresh calls up to the Voice Live ``speech_started`` that interrupts the bot;
then every call gets that event, one after the other, and then every mark it had pending comes back,
as a phone returns them after a ``clear``. Each event goes through the wire as in the running gateway
(the carrier's codec, the call, what it queues for each leg, framed for the socket), with JSON log
lines at info into a file and the metrics observer; no sockets. Many calls, each interrupted once,
keep each call's state as cold as in a burst, where 67 calls barge in at once among 200.

    .venv/bin/python bench/core.py --calls 1000 --runs 5
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gateway import log  # noqa: E402
from gateway.bridge import CallObserver, _noop_observer  # noqa: E402
from gateway.call import RECORDED_PIECE_MS, Call  # noqa: E402
from gateway.carriers.registry import carrier_named  # noqa: E402
from gateway.config import Profile  # noqa: E402
from gateway.frames import client_text_frame, server_text_frames  # noqa: E402
from gateway.replay import Fixture, load_fixture  # noqa: E402
from gateway.wire import PHONE, VOICELIVE, WireCall  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "calls" / "barge_in_mid_answer.jsonl"
SPEECH_STARTED = '"input_audio_buffer.speech_started"'


@dataclass
class Costs:
    calls: int
    barge_in_us: float  # per barge-in: the event in, and what it queues framed for the sockets
    marks: int
    mark_us: float  # per returned mark
    cleared: int  # calls whose barge-in flushed the phone (each must)


def _barge_in_index(fixture: Fixture) -> int:
    """The record of the ``speech_started`` that interrupts the bot (the last one of the call)."""
    found = [i for i, rec in enumerate(fixture.records)
             if rec.get("leg") == VOICELIVE and rec.get("dir") == "in" and SPEECH_STARTED in str(rec.get("msg", ""))]
    if len(found) < 2:
        raise SystemExit(f"{fixture.path}: no barge-in (a speech_started after the first)")
    return found[-1]


def _prepared_call(fixture: Fixture, number: int, until: int) -> tuple[WireCall, list[str]]:
    """A call fed the recording's inbound records before ``until``, and the marks it has pending."""
    carrier = carrier_named(str(fixture.header.get("carrier")))
    start = carrier.replay_start(fixture.header, fixture.records)
    options = dict(start.options)
    options.setdefault("piece_ms", RECORDED_PIECE_MS)
    call = Call(call_id=f"bench-{number:06d}", stream_id=start.stream_id, profile_name="bench",
                profile=Profile.model_validate(fixture.profile), started_at=start.started_at, audio=start.audio,
                observer=CallObserver(carrier.name, _noop_observer), **options)
    wire = WireCall(call, start.leg)
    sent: list[str] = []
    acked: set[str] = set()
    for index, rec in enumerate(fixture.records[:until]):
        if index <= start.index:
            continue
        leg, t, direction, msg = rec["leg"], rec["t"], rec.get("dir"), rec.get("msg", "")
        if direction == "out":
            if leg == PHONE and '"mark"' in msg:
                sent.append(json.loads(msg)["mark"]["name"])
            continue
        if direction == "in" and leg == PHONE:
            wire.from_phone(msg, t)
            if '"mark"' in msg:
                acked.add(json.loads(msg)["mark"]["name"])
        elif direction == "in" and leg == VOICELIVE:
            wire.from_voicelive(msg, t)
        elif leg == VOICELIVE and rec.get("event") == "open":
            wire.voicelive_opened(t)
        wire.take_voicelive()
        wire.take_phone()
        wire.take_tools()
    return wire, [name for name in sent if name not in acked]


def measure(fixture_path: Path = FIXTURE, calls: int = 1000) -> Costs:
    fixture = load_fixture(fixture_path)
    at = _barge_in_index(fixture)
    prepared = [_prepared_call(fixture, n, at) for n in range(calls)]
    event, t = fixture.records[at]["msg"], fixture.records[at]["t"]
    mark = json.loads(next(rec["msg"] for rec in fixture.records
                           if rec.get("leg") == PHONE and rec.get("dir") == "in" and '"mark"' in rec["msg"]))
    gc.collect()
    gc.freeze()  # the calls made above are not what a barge-in's collections would scan
    cleared = 0
    started = time.perf_counter()
    for wire, _ in prepared:
        wire.from_voicelive(event, t)
        to_voicelive, to_phone = wire.take_voicelive(), wire.take_phone()
        b"".join([client_text_frame(m) for m in to_voicelive])
        server_text_frames(to_phone)
        cleared += bool(to_phone)
    barge_in_s = time.perf_counter() - started
    echoes = []
    for wire, pending in prepared:
        for name in pending:
            mark["mark"]["name"] = name
            echoes.append((wire, json.dumps(mark, separators=(",", ":"))))
    started = time.perf_counter()
    for wire, text in echoes:
        wire.from_phone(text, t + 5)
        wire.take_voicelive()
        wire.take_phone()
        wire.take_tools()
        wire.call.next_deadline()  # what the running gateway asks after each message (its clock)
    mark_s = time.perf_counter() - started
    gc.unfreeze()
    return Costs(calls, barge_in_s / calls * 1e6, len(echoes), mark_s / max(1, len(echoes)) * 1e6, cleared)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5, help="each in a fresh set of calls")
    parser.add_argument("--fixture", type=Path, default=FIXTURE)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "gateway.log", "w") as stream:
        log.register_secret("bench-secret-0123456789abcdef")  # the running gateway has secrets to scrub
        log.configure(level="info", json_output=True, stream=stream)
        results = [measure(args.fixture, args.calls) for _ in range(args.runs)]
    for r in results:
        print(f"{r.calls} barge-ins: {r.barge_in_us:.1f} µs each; {r.marks} returned marks: {r.mark_us:.1f} µs each")
    print(f"median: barge-in {statistics.median(r.barge_in_us for r in results):.1f} µs, "
          f"returned mark {statistics.median(r.mark_us for r in results):.1f} µs")
    return 0 if all(r.cleared == r.calls for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())

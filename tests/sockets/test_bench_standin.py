"""The benchmark's Voice Live stand-in (``gateway simulator --bench``) over real sockets on 127.0.0.1,
checked with a plain websockets client: each session is a conversation in the order Voice Live with
server VAD sends it, barge-ins end a reply still being generated, truncations are recorded, and the
``burst`` scenario starts every session's replies at the same instant."""

from __future__ import annotations

import base64
import json
import random
import time
from asyncio import selector_events
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from websockets.asyncio.client import ClientConnection, connect

from gateway.simulator.bench import (
    BOT_MAGIC,
    MARKER,
    PCM16_BLOCK,
    BenchSettings,
    caller_frame,
    create_bench_app,
    split_bot_seq,
)
from tests.sockets.loopback import serve

RESPONSE = ["response.created", "response.output_item.added", "conversation.item.created"]
RESPONSE_END = ["response.audio.done", "response.output_item.done", "response.done"]
USER_TURN_END = ["input_audio_buffer.speech_stopped", "input_audio_buffer.committed", "conversation.item.created"]


@asynccontextmanager
async def stand_in(settings: BenchSettings) -> AsyncIterator[str]:
    runner, base = await serve(create_bench_app(settings))
    try:
        yield base
    finally:
        await runner.cleanup()


@asynccontextmanager
async def session(base: str, fmt: str = "g711_ulaw") -> AsyncIterator[ClientConnection]:
    async with connect(base.replace("http", "ws") + "/voice-live/realtime") as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        await ws.send(json.dumps({"type": "session.update", "session": {
            "input_audio_format": fmt, "output_audio_format": fmt}}))
        assert json.loads(await ws.recv())["type"] == "session.updated"
        yield ws


async def append(ws: ClientConnection, call: int, seq: int, size: int = 160) -> None:
    # compact, as the gateway writes it (what the lean stand-in reads)
    await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(
        caller_frame(call, seq, time.monotonic(), size)).decode()}, separators=(",", ":")))


async def events_until(ws: ClientConnection, last: str, count: int = 1) -> list[dict[str, Any]]:
    """Events received until the ``count``-th ``last``."""
    events: list[dict[str, Any]] = []
    while count:
        events.append(json.loads(await ws.recv()))
        count -= events[-1]["type"] == last
    return events


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def blocks(delta: str, size: int) -> list[tuple[int, int, int]]:
    """(call, response, block) of each bot block of a delta."""
    audio = base64.b64decode(delta)
    assert len(audio) % size == 0
    out = []
    for at in range(0, len(audio), size):
        magic, call, seq, _ = MARKER.unpack_from(audio, at)
        assert magic == BOT_MAGIC
        out.append((call, *split_bot_seq(seq)))
    return out


async def stats(base: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(base + "/bench/stats") as response:
        return await response.json()


async def test_a_steady_session_is_caller_turns_committed_and_replies_in_the_documented_order() -> None:
    settings = BenchSettings(reply_every_s=0.4, speech_ms=60, response_delay_ms=20, reply_ms=240, delta_ms=120,
                             speed=8, barge_in_every=0)
    async with stand_in(settings) as base, session(base) as ws:
        await append(ws, 7, 0)  # the call's number, from its frames' marker
        events = await events_until(ws, "response.done", 2)
    first_turn = events[:events.index(next(e for e in events if e["type"] == "response.done")) + 1]
    assert kinds(first_turn) == ["input_audio_buffer.speech_started", *USER_TURN_END, *RESPONSE,
                                 "response.audio.delta", "response.audio.delta", *RESPONSE_END]
    started, stopped, committed, user_item = first_turn[:4]
    assert started["item_id"] == stopped["item_id"] == committed["item_id"] == user_item["item"]["id"] == "item_u1"
    assert started["audio_start_ms"] == 20 and stopped["audio_end_ms"] == 20  # one 20 ms frame appended
    assert committed["previous_item_id"] is None and user_item["item"]["role"] == "user"
    created, added, bot_item = first_turn[4:7]
    assert added["item"]["id"] == bot_item["item"]["id"] == "item_a1" and bot_item["previous_item_id"] == "item_u1"
    deltas = [e for e in first_turn if e["type"] == "response.audio.delta"]
    assert all(d["response_id"] == created["response"]["id"] and d["item_id"] == "item_a1" for d in deltas)
    assert [b for d in deltas for b in blocks(d["delta"], 480)] == [(7, 1, 0), (7, 1, 1), (7, 1, 2), (7, 1, 3)]
    assert first_turn[-1]["response"]["status"] == "completed"
    second = events[len(first_turn):]
    assert kinds(second)[:4] == ["input_audio_buffer.speech_started", *USER_TURN_END]
    assert second[2]["item_id"] == "item_u2" and second[2]["previous_item_id"] == "item_a1"  # the conversation's order


async def test_a_barge_in_cancels_a_reply_still_generated_and_its_turn_is_committed_then_truncated() -> None:
    # a 480 ms reply sent 2x faster than real time takes 240 ms to send: the barge-in at 20 ms cuts it
    settings = BenchSettings(reply_every_s=0.6, speech_ms=40, response_delay_ms=20, reply_ms=480, delta_ms=120,
                             speed=2, barge_in_every=1, barge_in_after_ms=20)
    async with stand_in(settings) as base, session(base) as ws:
        await append(ws, 3, 0)
        events = await events_until(ws, "response.done")
        after = await events_until(ws, "input_audio_buffer.committed")
        await ws.send(json.dumps({"type": "conversation.item.truncate", "item_id": "item_a1", "content_index": 0,
                                  "audio_end_ms": 37}))
        truncated = [e for e in await events_until(ws, "conversation.item.truncated")][-1]
        figures = await stats(base)
    reply = kinds(events)[kinds(events).index("response.created"):]
    barge = reply.index("input_audio_buffer.speech_started")
    assert reply[:barge] == [*RESPONSE, "response.audio.delta"]  # cut after its first delta
    assert reply[barge + 1:] == RESPONSE_END
    done = events[-1]["response"]
    assert done["status"] == "cancelled" and done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert events[-2]["item"]["status"] == "incomplete"
    barge_item = events[events.index(next(e for e in events if e["type"] == "response.created")) + barge]["item_id"]
    assert barge_item == "item_u2"
    assert kinds(after)[-2:] == USER_TURN_END[:2]  # the barge-in turn is committed like any turn
    assert after[-1]["item_id"] == "item_u2" and after[-1]["previous_item_id"] == "item_a1"
    assert truncated["item_id"] == "item_a1" and truncated["audio_end_ms"] == 37
    assert [(b["call"], b["response"]) for b in figures["barge_ins"]][:1] == [(3, 1)]
    assert [(t["call"], t["response"], t["audio_end_ms"]) for t in figures["truncations"]] == [(3, 1, 37)]
    assert figures["replies_cancelled"] >= 1 and figures["commits"] >= 2



async def test_spread_barge_ins_come_at_each_replys_own_moment() -> None:
    """With a spread, each barged reply is barged into at its own moment: here (seed 0, session 0) 55 ms
    after the first reply's first audio (before its second delta, due at 60 ms) and 269 ms after the
    second's (after its last, due at 180 ms); without it both at 150 ms, after their third delta (due at
    120 ms; on a loaded machine the stand-in's timer may be late for it, and the reply cut after two)."""
    async def two_replies(spread_ms: int) -> list[tuple[int, str]]:
        settings = BenchSettings(reply_every_s=0.6, speech_ms=40, response_delay_ms=20, reply_ms=480,
                                 delta_ms=120, speed=2, barge_in_every=1, barge_in_after_ms=150,
                                 barge_in_spread_ms=spread_ms)
        async with stand_in(settings) as base, session(base) as ws:
            await append(ws, 5, 0)
            events = await events_until(ws, "response.done", count=2)
        replies = []
        for n in (1, 2):
            reply = [e for e in events if e.get("response_id") == f"resp_{n}"
                     or e.get("response", {}).get("id") == f"resp_{n}"]
            replies.append((kinds(reply).count("response.audio.delta"), reply[-1]["response"]["status"]))
        return replies

    at_once = await two_replies(0)
    assert all(deltas in (2, 3) and status == "cancelled" for deltas, status in at_once), at_once
    assert await two_replies(260) == [(1, "cancelled"), (4, "completed")]


async def test_events_the_service_sends_back_to_back_go_in_one_write(monkeypatch) -> None:
    """A reply's opening events go with its first audio, a turn's end events together and a reply's
    end events together: one write each, as a burst of them reaches the client (and one system call
    for the stand-in, which writes for every session of a burst on the harness's core)."""
    writes: list[bytes] = []
    transport_class: Any = selector_events._SelectorSocketTransport  # the test loop's socket writes
    write = transport_class.write

    def recording(self: Any, data: Any) -> None:
        writes.append(bytes(data))
        write(self, data)

    monkeypatch.setattr(transport_class, "write", recording)
    settings = BenchSettings(reply_every_s=0.4, speech_ms=40, response_delay_ms=20, reply_ms=240, delta_ms=120,
                             speed=8, barge_in_every=0)
    async with stand_in(settings) as base, session(base) as ws:
        await append(ws, 7, 0)
        events = await events_until(ws, "response.done")
    assert kinds(events)[-8:] == [*RESPONSE, "response.audio.delta", "response.audio.delta", *RESPONSE_END]

    def one_write(*types: str) -> bool:
        return any(all(f'"type":"{t}"'.encode() in data for t in types) for data in writes)

    assert one_write(*RESPONSE, "response.audio.delta")
    assert one_write(*USER_TURN_END)
    assert one_write(*RESPONSE_END)
    assert not one_write("response.audio.done", "response.audio.delta")  # (not all of a reply in one)


PERIOD = 0.3


async def first_audio_times(scenario: str) -> tuple[list[float], list[float]]:
    """When the stand-in sent the first audio of three replies of one session and two of a second,
    opened after the first's first turn began (from the markers: the stand-in's own clock)."""
    settings = BenchSettings(scenario=scenario, reply_every_s=PERIOD, speech_ms=40, response_delay_ms=20,
                             reply_ms=120, delta_ms=120, speed=8, barge_in_every=0)
    sent: tuple[list[float], list[float]] = ([], [])
    async with stand_in(settings) as base, session(base) as one:
        await append(one, 1, 0)
        await events_until(one, "input_audio_buffer.speech_started")
        async with session(base) as two:
            await append(two, 2, 0)
            for ws, times, replies in ((one, sent[0], 3), (two, sent[1], 2)):
                for _ in range(replies):
                    events = await events_until(ws, "response.done")
                    delta = next(e for e in events if e["type"] == "response.audio.delta")
                    times.append(MARKER.unpack_from(base64.b64decode(delta["delta"]))[3])
    return sent


def phase(t: float) -> float:
    """Where in the period ``t`` falls, from -PERIOD/2 to PERIOD/2."""
    return t - round(t / PERIOD) * PERIOD


async def test_burst_starts_every_sessions_reply_at_the_same_instant() -> None:
    one, two = await first_audio_times("burst")
    # Each reply's first audio on a multiple of the period of the machine's monotonic clock, or
    # after it by the stand-in's lateness on a loaded machine (a timer never fires early).
    assert all(-0.002 < phase(t) < 0.1 for t in one + two)
    slots = [round(t / PERIOD) for t in one], [round(t / PERIOD) for t in two]
    assert slots[0] == [slots[0][0], slots[0][0] + 1, slots[0][0] + 2] and slots[1][0] + 1 == slots[1][1]
    assert set(slots[1]) <= set(slots[0])  # the second session joins the first's slots...
    # ...and its replies start with the first's, in the same pass of the stand-in's event loop,
    # however late that pass is
    for slot, t in zip(slots[1], two, strict=True):
        assert abs(t - one[slots[0].index(slot)]) < 0.02  # (the process may be preempted in between)


async def test_steady_gives_each_session_its_own_phase() -> None:
    one, two = await first_audio_times("steady")
    # each session's replies on its own seeded offset in the period (seed 0: 253 and 40 ms), or after it
    # by the stand-in's lateness; not on the burst's common slots
    for index, times in enumerate((one, two)):
        offset = random.Random(index).uniform(0.0, PERIOD)  # (seed 0 * 1_000_003 + the session's index)
        assert all(-0.002 < phase(t - offset) < 0.1 for t in times), (index, offset, times)
    assert abs(phase(one[0] - two[0])) > 0.04  # not in step with each other


async def test_talk_starts_one_turn_and_never_commits_it() -> None:
    async with stand_in(BenchSettings(scenario="talk")) as base, session(base) as ws:
        first = json.loads(await ws.recv())
        for seq in range(10):
            await append(ws, 5, seq)
        # answered after every frame before it was read: the stand-in had them all
        await ws.send(json.dumps({"type": "conversation.item.truncate", "item_id": "x", "content_index": 0,
                                  "audio_end_ms": 1}))
        rest = await events_until(ws, "conversation.item.truncated")
        figures = await stats(base)
    assert first["type"] == "input_audio_buffer.speech_started" and kinds(rest) == ["conversation.item.truncated"]
    assert figures["caller_frames"] == 10 and figures["commits"] == 0 and figures["replies"] == 0


async def test_a_pcm16_session_gets_24_khz_blocks_with_markers() -> None:
    settings = BenchSettings(reply_every_s=0.3, speech_ms=40, response_delay_ms=20, reply_ms=120, delta_ms=120,
                             speed=8, barge_in_every=0)
    async with stand_in(settings) as base, session(base, "pcm16") as ws:
        await append(ws, 9, 0, size=960)
        events = await events_until(ws, "response.done")
    (delta,) = [e for e in events if e["type"] == "response.audio.delta"]
    assert blocks(delta["delta"], PCM16_BLOCK) == [(9, 1, 0), (9, 1, 1)]
    assert events[0]["audio_start_ms"] == 20  # 960 bytes of pcm16 at 24 kHz


async def test_the_stats_by_period_refuse_a_query_they_cannot_read() -> None:
    async with stand_in(BenchSettings()) as base, aiohttp.ClientSession() as http:
        for query in ("period_s=four", "period_s=4&quiet=1,x", "period_s=-4", "period_s=nan"):
            async with http.get(f"{base}/bench/stats?{query}") as response:
                assert response.status == 400, query
                assert "period_s" in (await response.json())["error"]
        async with http.get(f"{base}/bench/stats?period_s=4&quiet=1,2") as response:
            figures = await response.json()
    assert figures["caller_delay_by_period"] == [] and figures["caller_delay_in_quiet_periods"]["p99"] is None

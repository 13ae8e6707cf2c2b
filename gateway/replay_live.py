"""Replay a recorded call over real sockets.

The phone leg of the recording is played against a gateway on a loopback port, in real time or
faster, and a replay server stands in for Voice Live: it answers with the recorded Voice Live
events, each one sent once the gateway has sent as many messages as it had when the event was
recorded, and as long after the last of them as it was then. What both fake ends receive is
compared with what the gateway sent in the recording. Truncation points depend on real timing
here, so they are compared within a tolerance.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from gateway.app import create_app
from gateway.audio import FORMATS, G711_ULAW, b64_len
from gateway.call import RunTool
from gateway.config import parse_config
from gateway.replay import (
    Fixture,
    FixtureError,
    Sent,
    _carrier,
    _data,
    _find_start,
    first_difference,
    load_fixture,
    print_result,
    print_totals,
)
from gateway.wire import PHONE, TOOLS, VOICELIVE


@dataclass
class _Scripted:
    after: int  # send once the gateway has sent this many messages to Voice Live
    delay_ms: float  # ... and this long after the last of them (or after the socket opened)
    message: str | bytes | None  # None: close the socket
    code: int = 1000


def _phone_scripts(fixture: Fixture) -> tuple[list[tuple[float, str | bytes]], list[_Scripted]]:
    """The phone leg in two parts: what the caller sends on its own clock (audio, keys, start,
    stop), and the playback acknowledgements (marks), which answer the gateway's messages and are
    therefore sent relative to them, like the Voice Live events."""
    timed: list[tuple[float, str | bytes]] = []
    marks: list[_Scripted] = []
    carrier = _carrier(fixture)
    sent = 0
    anchor = 0.0
    for rec in fixture.records:
        if rec["leg"] != PHONE:
            continue
        if rec.get("dir") == "out":
            sent += 1
            anchor = rec["t"]
        elif rec.get("dir") == "in":
            data = _data(rec)
            if carrier.playback_ack(data):
                marks.append(_Scripted(sent, rec["t"] - anchor, data))
            else:
                timed.append((rec["t"], data))
    return timed, marks


def _started_epoch(fixture: Fixture) -> float | None:
    started = fixture.header.get("started_at")
    try:
        return dt.datetime.fromisoformat(str(started).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


_EXPIRES = re.compile(r'"expires_at":\s*(\d+(?:\.\d+)?)')


def _shift_expiry(message: str, t_ms: float, started: float | None) -> str:
    """A recorded session event's expires_at, moved to the same distance from now as it was then."""
    if started is None or '"expires_at"' not in message:
        return message

    def shift(match: re.Match[str]) -> str:
        left = float(match.group(1)) - (started + t_ms / 1000.0)
        return f'"expires_at":{int(time.time() + left)}'

    return _EXPIRES.sub(shift, message)


def _voicelive_script(fixture: Fixture) -> list[list[_Scripted]]:
    """What Voice Live said, one script per session the gateway opened (a call that reconnected
    has several); counts of gateway messages restart with each session."""
    scripts: list[list[_Scripted]] = []
    script: list[_Scripted] = []
    started = _started_epoch(fixture)
    sent = 0
    anchor = 0.0
    for rec in fixture.records:
        if rec["leg"] != VOICELIVE:
            continue
        if rec.get("event") == "open":
            script = []
            scripts.append(script)
            sent, anchor = 0, rec["t"]
        elif rec.get("dir") == "out":
            sent += 1
            anchor = rec["t"]
        elif rec.get("dir") == "in":
            script.append(_Scripted(sent, rec["t"] - anchor, _shift_expiry(str(_data(rec)), rec["t"], started)))
        elif rec.get("event") == "closed" and rec.get("code") != 1000:  # (1000: the gateway's own renewal)
            script.append(_Scripted(sent, rec["t"] - anchor, None, int(rec.get("code") or 1011)))
    return scripts


@dataclass
class _ReplayServer:
    scripts: list[list[_Scripted]]
    speed: float
    received: list[tuple[float, str]] = field(default_factory=list)
    sessions: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        script = self.scripts[self.sessions] if self.sessions < len(self.scripts) else []
        self.sessions += 1
        self.closed.clear()
        loop = asyncio.get_running_loop()
        arrivals = [loop.time()]  # arrivals[k]: when the k-th message came (0: the socket opened)
        progress = asyncio.Condition()

        async def play() -> None:
            for item in script:
                async with progress:
                    await progress.wait_for(lambda: len(arrivals) > item.after)  # noqa: B023
                due = arrivals[item.after] + item.delay_ms / 1000 / self.speed
                await asyncio.sleep(max(0.0, due - loop.time()))  # the recorded server's own timing
                if item.message is None:
                    await ws.close(code=item.code)
                    return
                await ws.send_str(str(item.message))  # Voice Live speaks JSON text

        player = asyncio.create_task(play())
        try:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    self.received.append((loop.time(), msg.data))
                    async with progress:
                        arrivals.append(loop.time())
                        progress.notify_all()
        finally:
            player.cancel()
            await asyncio.gather(player, return_exceptions=True)
            self.closed.set()
        return ws


def _config_for(fixture: Fixture, endpoint: str) -> Any:
    name = str(fixture.header.get("profile_name") or "recorded")
    options = fixture.header.get("call_options") or {}
    text = yaml.safe_dump({
        "voicelive": {"endpoint": endpoint,
                      "reconnect_budget_s": float(options.get("reconnect_budget_ms", 0.0)) / 1000.0,
                      "renew_before_expiry_s": float(options.get("renew_before_ms", 120_000.0)) / 1000.0},
        # a loopback harness: the recorded streams carry no valid call tokens or signatures
        "gateway": {"public_url": "http://127.0.0.1", "insecure_dev_mode": True},
        "profiles": {name: fixture.profile},
        "routes": {"default": name},
        **_carrier(fixture).replay_settings(fixture.header),
    }, sort_keys=False)
    return parse_config(text, source=f"{fixture.name} (recorded profile)", env={})


def _truncate_close(tolerance_ms: float):
    def close(expected: str | bytes, actual: str | bytes) -> bool:
        if isinstance(expected, bytes) or isinstance(actual, bytes):
            return False
        try:
            e, a = json.loads(expected), json.loads(actual)
        except ValueError:
            return False
        if e.get("type") != "conversation.item.truncate" or a.get("type") != "conversation.item.truncate":
            return False
        e_ms, a_ms = e.pop("audio_end_ms", None), a.pop("audio_end_ms", None)
        return e == a and isinstance(e_ms, int) and isinstance(a_ms, int) and abs(e_ms - a_ms) <= tolerance_ms
    return close


AUDIO, CONTROL = "voicelive (caller audio)", "voicelive (other messages)"
REPLIES = "phone (answers to the phone's own messages)"


def _first_arrivals(sent: list[Sent]) -> list[Sent]:
    seen: set[str | bytes] = set()
    out = []
    for item in sent:
        if item.text not in seen:
            seen.add(item.text)
            out.append(item)
    return out


def _stream(leg: str, text: str | bytes) -> str:
    if leg != VOICELIVE or isinstance(text, bytes):
        return leg
    return AUDIO if text.startswith('{"type":"input_audio_buffer.append"') else CONTROL


@dataclass
class LiveReplay:
    fixture: Fixture
    mismatch: str | None
    problems: list[str]

    @property
    def ok(self) -> bool:
        return self.mismatch is None and not self.problems


async def replay_live(fixture: Fixture, *, speed: float = 1.0, tolerance_ms: float = 60.0,
                      close_timeout_s: float = 10.0) -> LiveReplay:
    if speed <= 0:
        raise ValueError("speed must be > 0")
    start_index = _find_start(fixture).index
    path, headers = _carrier(fixture).replay_socket(fixture.header)
    server = _ReplayServer(_voicelive_script(fixture), speed)
    recorded_outputs = {}
    for rec in fixture.records:
        if rec["leg"] == TOOLS and rec.get("dir") == "in":
            result = json.loads(rec["msg"])
            recorded_outputs[result["call_id"]] = result["output"]
    tool_requests: list[tuple[float, str]] = []

    async def recorded_tool(_tool: Any, run: RunTool) -> str:
        """Tools answer with what they answered in the recording; no tool service is called."""
        tool_requests.append((asyncio.get_running_loop().time(), json.dumps(
            {"call_id": run.call_id, "name": run.name, "arguments": run.arguments}, separators=(",", ":"))))
        return recorded_outputs.get(run.call_id, json.dumps({"error": "no output in the recording"}))

    vl_app = web.Application()
    vl_app.router.add_get("/voice-live/realtime", server.handle)
    vl_runner = web.AppRunner(vl_app, access_log=None)
    await vl_runner.setup()
    gw_runner: web.AppRunner | None = None
    phone_received: list[tuple[float, str]] = []
    try:
        vl_site = web.TCPSite(vl_runner, "127.0.0.1", 0)
        await vl_site.start()
        vl_port = vl_site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        config = _config_for(fixture, f"http://127.0.0.1:{vl_port}")
        gw_runner = web.AppRunner(create_app(config, tool_runner=recorded_tool), access_log=None)
        await gw_runner.setup()
        gw_site = web.TCPSite(gw_runner, "127.0.0.1", 0)
        await gw_site.start()
        gw_port = gw_site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        phone_script, mark_script = _phone_scripts(fixture)
        gateway_hangs_up = any(rec["leg"] == PHONE and rec.get("event") == "close" for rec in fixture.records)
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession() as http, http.ws_connect(
                f"ws://127.0.0.1:{gw_port}{path}", headers=headers) as ws:
            opened = loop.time()
            arrivals = [opened]
            progress = asyncio.Condition()

            async def receive() -> None:
                async for msg in ws:
                    if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                        phone_received.append((loop.time(), msg.data))
                        async with progress:
                            arrivals.append(loop.time())
                            progress.notify_all()

            async def acknowledge() -> None:
                for item in mark_script:
                    async with progress:
                        await progress.wait_for(lambda: len(arrivals) > item.after)  # noqa: B023
                    due = arrivals[item.after] + item.delay_ms / 1000 / speed
                    await asyncio.sleep(max(0.0, due - loop.time()))  # the recorded phone's own timing
                    if ws.closed:
                        continue
                    if isinstance(item.message, bytes):
                        await ws.send_bytes(item.message)
                    else:
                        await ws.send_str(str(item.message))

            receiver = asyncio.create_task(receive())
            acker = asyncio.create_task(acknowledge())
            try:
                for t, data in phone_script:
                    await asyncio.sleep(max(0.0, opened + t / 1000 / speed - loop.time()))
                    if ws.closed:
                        break
                    if isinstance(data, bytes):
                        await ws.send_bytes(data)
                    else:
                        await ws.send_str(data)
                if gateway_hangs_up:
                    await asyncio.wait_for(asyncio.shield(receiver), close_timeout_s)
            finally:
                acker.cancel()
                await ws.close()
                await asyncio.gather(receiver, acker, return_exceptions=True)
        if server.sessions:
            await asyncio.wait_for(server.closed.wait(), close_timeout_s)
    finally:
        if gw_runner is not None:
            await gw_runner.cleanup()
        await vl_runner.cleanup()

    # Over sockets, caller audio (driven by the phone's clock) and everything else sent to Voice
    # Live (driven by Voice Live's events) are two independent streams whose interleaving depends
    # on timing; each is compared on its own. So are the phone's answers to its own messages (a pong).
    carrier = _carrier(fixture)

    def stream(leg: str, message: str | bytes) -> str:
        if leg == PHONE and carrier.phone_reply(message):
            return REPLIES
        return _stream(leg, message)

    expected: dict[str, list[Sent]] = {PHONE: [], REPLIES: [], AUDIO: [], CONTROL: [], TOOLS: []}
    for index, rec in enumerate(fixture.records):
        if rec.get("dir") == "out":
            message = _data(rec)
            expected[stream(rec["leg"], message)].append(Sent(rec["t"], message, index))
    actual: dict[str, list[Sent]] = {PHONE: [], REPLIES: [], AUDIO: [], CONTROL: [], TOOLS: []}
    for leg, received in ((VOICELIVE, server.received), (PHONE, phone_received), (TOOLS, tool_requests)):
        for t, text in received:
            actual[stream(leg, text)].append(Sent((t - opened) * 1000 * speed, text, start_index))
    # A session that drops mid-utterance gets the caller's uncommitted audio again: which frames the
    # lost session still took depends on real timing, so caller audio is compared frame by frame,
    # each counted once.
    expected[AUDIO], actual[AUDIO] = _first_arrivals(expected[AUDIO]), _first_arrivals(actual[AUDIO])
    # The bot's audio a barge-in flushes races the flush: the gateway's playback clock (or the phone's
    # acknowledgements) may release one piece more or fewer before the flush than the recording shows,
    # by a few milliseconds of real time. The pieces just before each flush are left out of the
    # comparison on both sides (where the cut fell is checked by the truncation, within the tolerance).
    expected[PHONE], actual[PHONE] = _common_before_flushes(
        _before_flushes(expected[PHONE], carrier, tolerance_ms),
        _before_flushes(actual[PHONE], carrier, tolerance_ms), carrier)
    mismatch = first_difference(fixture, expected, actual, tolerance=_truncate_close(tolerance_ms),
                                show_inputs=False)
    return LiveReplay(fixture, mismatch, _live_problems(fixture, server, actual))


def _before_flushes(sent: list[Sent], carrier: Any, window_ms: float) -> list[Sent]:
    """``sent`` without the bot audio sent less than ``window_ms`` before a flush of the phone's playback."""
    flushes = [item.t for item in sent if carrier.outbound_kind(item.text) == "flush"]
    if not flushes:
        return sent
    kept, following = [], iter(flushes)
    flush = next(following, None)
    for item in sent:
        while flush is not None and flush < item.t:
            flush = next(following, None)
        if flush is not None and flush - item.t < window_ms and carrier.outbound_kind(item.text) == "audio":
            continue
        kept.append(item)
    return kept


def _common_before_flushes(expected: list[Sent], actual: list[Sent], carrier: Any) -> tuple[list[Sent], list[Sent]]:
    """Between two flushes, the bot audio both sides sent: the first pieces, as many as the side that
    sent fewer did. A loaded machine can shift a flush against the playback clock by more than the
    window (a piece more, or fewer, goes out before it); what was sent is still compared piece by
    piece up to there, and everything after the flush in full."""
    def segments(sent: list[Sent]) -> list[list[int]]:
        out: list[list[int]] = [[]]
        for i, item in enumerate(sent):
            kind = carrier.outbound_kind(item.text)
            if kind == "flush":
                out.append([])
            elif kind == "audio":
                out[-1].append(i)
        return out

    seg_e, seg_a = segments(expected), segments(actual)
    if len(seg_e) != len(seg_a) or len(seg_e) == 1:  # a flush more or fewer: a real difference, shown as it is
        return expected, actual
    drop_e: set[int] = set()
    drop_a: set[int] = set()
    for e, a in zip(seg_e[:-1], seg_a[:-1], strict=True):  # (after the last flush: compared in full)
        n = min(len(e), len(a))
        drop_e.update(e[n:])
        drop_a.update(a[n:])
    return ([x for i, x in enumerate(expected) if i not in drop_e],
            [x for i, x in enumerate(actual) if i not in drop_a])


def _live_problems(fixture: Fixture, server: _ReplayServer, actual: dict[str, list[Sent]]) -> list[str]:
    problems = []
    if server.sessions and not server.closed.is_set():
        problems.append("the Voice Live socket was not closed when the call ended")
    received: dict[str, int] = {}
    for rec in fixture.records:
        if rec["leg"] == VOICELIVE and rec.get("dir") == "in" and "response.audio.delta" in rec.get("msg", ""):
            m = json.loads(rec["msg"])
            received[str(m.get("item_id"))] = received.get(str(m.get("item_id")), 0) + b64_len(m.get("delta", ""))
    bpm = FORMATS.get(str(fixture.header.get("audio_format", "g711_ulaw")), G711_ULAW).bytes_per_ms
    for sent in actual[CONTROL]:
        if isinstance(sent.text, str) and '"conversation.item.truncate"' in sent.text:
            m = json.loads(sent.text)
            have = received.get(str(m.get("item_id")), 0) // bpm
            if m.get("audio_end_ms", 0) > have:
                problems.append(f"truncation at {m.get('audio_end_ms')} ms is past the {have} ms received")
    return problems


async def replay_files_live(paths: list[str], *, speed: float = 1.0, out: Any = None) -> int:
    """``gateway replay --sockets``: PASS/FAIL per fixture; 0 when all pass."""
    out = out or sys.stdout
    failed = 0
    for path in paths:
        try:
            result = await replay_live(load_fixture(path), speed=speed)
        except (FixtureError, TimeoutError, OSError) as exc:
            print(f"ERROR {path}: {exc or type(exc).__name__}", file=out)
            failed += 1
            continue
        failed += not print_result(path, result, f"(over sockets, {speed:g}x real time)", out)
    return print_totals(len(paths), failed, out)

"""The gateway's own writes on a Voice Live session (gateway.voicelive.client.VoiceLiveConnection),
over real sockets: several messages in one write arrive as the same messages, in order; nothing is
written once the connection is not open."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import WSMsgType, web

from gateway.config import parse_config
from gateway.voicelive.client import VoiceLiveConnection, VoiceLiveConnector
from tests.core.test_voicelive_client import CONFIG
from tests.sockets.loopback import voicelive_route


@pytest.fixture
async def voicelive():
    """A Voice Live stand-in that keeps every text message it reads, and the number of them."""
    received: list[str] = []
    arrived = asyncio.Condition()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                async with arrived:
                    received.append(msg.data)
                    arrived.notify_all()
        return ws

    async with voicelive_route(handler) as base:
        yield base, received, arrived


async def test_messages_written_together_arrive_as_themselves_in_order(voicelive) -> None:
    endpoint, received, arrived = voicelive
    config = parse_config(CONFIG, env={"EP": endpoint})
    ws = await VoiceLiveConnector(config.voicelive).connect(config.profiles["p"])
    try:
        await _written_together(ws, received, arrived)
    finally:
        await ws.close()


async def _written_together(ws: VoiceLiveConnection, received: list[str], arrived: asyncio.Condition) -> None:
    messages = [json.dumps({"type": "response.cancel", "event_id": "gw_1"}),
                json.dumps({"type": "conversation.item.truncate", "item_id": "item_1", "content_index": 0,
                            "audio_end_ms": 1234, "event_id": "gw_2"}),
                "x" * 70_000]  # one long enough for the 64-bit length form
    writes: list[bytes] = []
    write = ws.transport.write
    ws.transport.write = lambda data: (writes.append(data), write(data))[1]  # type: ignore[method-assign]
    try:
        assert ws.send_all_nowait(messages)
    finally:
        del ws.transport.write
    assert len(writes) == 1  # one system call for all three
    async with arrived:
        await arrived.wait_for(lambda: len(received) >= len(messages))
    assert received == messages


async def test_nothing_is_written_once_the_session_is_not_open(voicelive) -> None:
    endpoint, received, _ = voicelive
    config = parse_config(CONFIG, env={"EP": endpoint})
    ws = await VoiceLiveConnector(config.voicelive).connect(config.profiles["p"])
    await ws.close()
    assert not ws.send_all_nowait(['{"type":"response.cancel"}'])
    assert not ws.send_nowait('{"type":"response.cancel"}')
    assert received == []


async def test_the_session_counts_the_barge_ins_it_has_received_before_the_call_takes_them() -> None:
    """A ``speech_started`` counts as it arrives (``urgent_waiting``), before the call has read the
    messages ahead of it: they stop waiting for room in the loop's share (gateway.loopshare); the call
    takes it off the count when it reads it."""
    sent = [json.dumps({"type": "response.audio.delta", "delta": "AAAA"}),
            json.dumps({"type": "input_audio_buffer.speech_started", "audio_start_ms": 10, "item_id": "i"}),
            json.dumps({"type": "response.audio.delta", "delta": "BBBB"}),
            json.dumps({"type": "conversation.item.created", "item": {"speech": "input_audio_buffer.speech_started"}})]

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for text in sent:
            await ws.send_str(text)
        async for _ in ws:
            pass
        return ws

    async with voicelive_route(handler) as base:
        config = parse_config(CONFIG, env={"EP": base})
        ws = await VoiceLiveConnector(config.voicelive).connect(config.profiles["p"])
        try:
            assert [await ws.recv() for _ in range(4)] == sent
            assert ws.urgent_waiting == 1  # only the event's type counts, not the words further on
        finally:
            await ws.close()

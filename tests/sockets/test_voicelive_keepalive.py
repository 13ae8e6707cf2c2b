"""One keepalive for every Voice Live session of a worker (gateway.voicelive.client.Keepalive), over
real sockets: sessions that answer pings stay, one that does not is cut at the next round, and the
pool registers what it opens (and forgets what closed)."""

from __future__ import annotations

import pytest
from aiohttp import web
from websockets.exceptions import ConnectionClosed

from gateway.config import parse_config
from gateway.voicelive.client import Keepalive, VoiceLiveConnector
from gateway.voicelive.pool import ResourcePool, build_budget
from tests.core.test_voicelive_client import CONFIG
from tests.sockets.loopback import voicelive_route


@pytest.fixture
async def voicelive():
    """A Voice Live stand-in that answers pings (``/voice-live/realtime``) or, with ``?deaf``, reads
    them and never answers."""
    async def handler(request: web.Request) -> web.WebSocketResponse:
        deaf = "deaf" in request.query
        ws = web.WebSocketResponse(autoping=not deaf)
        await ws.prepare(request)
        async for _ in ws:  # (a deaf one gets the pings as messages, and drops them)
            pass
        return ws

    async with voicelive_route(handler) as base:
        yield base


async def test_sessions_that_answer_stay_and_closed_ones_are_forgotten(voicelive) -> None:
    endpoint = voicelive
    config = parse_config(CONFIG, env={"EP": endpoint})
    connector = VoiceLiveConnector(config.voicelive)
    keepalive = Keepalive()
    sessions = [await connector.connect(config.profiles["p"]) for _ in range(3)]
    for ws in sessions:
        keepalive.add(ws)
    assert len(keepalive) == 3
    for _ in range(3):
        assert await keepalive.ping_all() == 0
        for ws in sessions:  # pongs come in order: once this one is back, the keepalive's is too
            await (await ws.ping())
    await sessions[0].close()
    assert len(keepalive) == 2  # a closed session is forgotten at once (nothing of it is kept)
    assert await keepalive.ping_all() == 0
    for ws in sessions[1:]:
        await ws.close()
    assert len(keepalive) == 0


async def test_a_session_that_does_not_answer_is_cut_at_the_next_round(voicelive) -> None:
    endpoint = voicelive
    config = parse_config(CONFIG, env={"EP": endpoint + "?deaf"})
    ws = await VoiceLiveConnector(config.voicelive).connect(config.profiles["p"])
    keepalive = Keepalive()
    keepalive.add(ws)
    assert await keepalive.ping_all() == 0  # pinged
    assert await keepalive.ping_all() == 1  # no pong since: cut
    with pytest.raises(ConnectionClosed):
        await ws.recv()  # the call's pump sees its session lost
    assert len(keepalive) == 0


async def test_the_pool_registers_what_it_opens(voicelive) -> None:
    endpoint = voicelive
    config = parse_config(CONFIG, env={"EP": endpoint})
    pool = ResourcePool.build(config.voicelive, endpoints={"default": endpoint},
                              budget=build_budget(config.voicelive, 1, None))
    try:
        ws = await pool.connect(config.profiles["p"])
        assert len(pool.keepalive) == 1 and ws.pinged_by is pool.keepalive
        await ws.close()
        assert len(pool.keepalive) == 0
    finally:
        await pool.close()

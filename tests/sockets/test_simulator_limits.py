"""The simulator refuses sessions beyond its new connections per minute with HTTP 429, over real sockets."""

from __future__ import annotations

import argparse

import aiohttp
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from gateway.simulator.server import SimulatorSettings, register_cli, settings_from_args, start_simulator

QUERY = "?api-version=2026-07-15&model=gpt-realtime"


async def test_upgrades_beyond_the_limit_get_429_with_retry_after_and_are_counted() -> None:
    async with await start_simulator(SimulatorSettings(max_connections_per_minute=2, record=False)) as sim:
        async with connect(sim.ws_url + QUERY) as first, connect(sim.ws_url + QUERY) as second:
            assert (await first.recv()) and (await second.recv())  # session.created on both
            with pytest.raises(InvalidStatus) as info:
                async with connect(sim.ws_url + QUERY):
                    pass
            response = info.value.response
            assert response.status_code == 429
            assert 1 <= int(response.headers["Retry-After"]) <= 60
            assert b"Rate limit" in response.body
        # closing sessions frees nothing: the limit counts new connections, not open ones
        with pytest.raises(InvalidStatus) as info:
            async with connect(sim.ws_url + QUERY):
                pass
        assert info.value.response.status_code == 429
        async with aiohttp.ClientSession() as http, http.get(sim.endpoint + "/stats") as resp:
            stats = await resp.json()
    assert stats["connections"] == {"limit_per_minute": 2, "accepted": 2, "refused": 2,
                                    "most_in_any_minute": 2, "in_last_minute": 2}


async def test_without_a_limit_upgrades_are_only_counted() -> None:
    async with await start_simulator(SimulatorSettings(record=False)) as sim:
        for _ in range(3):
            async with connect(sim.ws_url + QUERY) as ws:
                assert await ws.recv()
        async with aiohttp.ClientSession() as http, http.get(sim.endpoint + "/stats") as resp:
            stats = await resp.json()
    assert stats["connections"]["accepted"] == 3 and stats["connections"]["refused"] == 0
    assert stats["connections"]["limit_per_minute"] is None


def test_the_command_line_option_sets_the_limit() -> None:
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers())
    assert settings_from_args(parser.parse_args(["simulator"])).max_connections_per_minute is None
    args = parser.parse_args(["simulator", "--max-connections-per-minute", "30"])
    assert settings_from_args(args).max_connections_per_minute == 30
    with pytest.raises(ValueError, match="max_connections_per_minute"):
        settings_from_args(parser.parse_args(["simulator", "--max-connections-per-minute", "0"]))

"""The shared connection budget against a real Redis: a ``redis-server`` the tests start on a free
loopback port (no persistence) and stop at the end. Several RedisBudget instances stand for several
workers or replicas; a Redis that is stopped, refuses connections or never answers makes them fall
back to their static shares."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.voicelive.budget import RedisBudget
from tests.sockets.loopback import LogCapture, refusing_port
from tests.sockets.redis_server import RedisServer, running_redis

STALL_BOUND_S = 2.0  # safety bound for a take against a Redis that never answers (timeouts of 0.1 s)
WARNING = "Redis unreachable: each worker uses its static share of the Voice Live connection budget"
BACK = "Redis reachable again: back on the shared budget"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the module; each test uses keys of its own."""
    with running_redis() as server:
        yield server


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex[:8]}:"


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def budgets(url: str, count: int, limits: dict[str, int], fallback: dict[str, int],
                  **options: Any) -> AsyncIterator[list[RedisBudget]]:
    made = [RedisBudget(url, limits, fallback, **options) for _ in range(count)]
    try:
        yield made
    finally:
        for budget in made:
            await budget.close()


@contextlib.asynccontextmanager
async def raw(url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


def events(buf: Any) -> list[str]:
    return [json.loads(line)["event"] for line in buf.getvalue().splitlines()]


async def test_two_replicas_share_the_limit_exactly(redis_server: RedisServer, prefix: str) -> None:
    # clocks a million seconds apart: the shared window runs on Redis' clock, not theirs; a hundred takes
    # at once on a loaded machine may outlast the default 1 s a take waits before falling back to the
    # worker's own share (tested apart), which this test is not about
    patient = {"connect_timeout_s": 10.0, "timeout_s": 10.0}
    first = {"clock": FakeClock(1000.0), **patient}
    second = {"clock": FakeClock(1_001_000.0), **patient}
    async with budgets(redis_server.url, 1, {"r": 30, "s": 30}, {"r": 15, "s": 15},
                       key_prefix=prefix, **first) as (a,), \
            budgets(redis_server.url, 1, {"r": 30, "s": 30}, {"r": 15, "s": 15},
                    key_prefix=prefix, **second) as (b,):
        grants = await asyncio.gather(*((a if n % 2 else b).take("r") for n in range(100)))
        assert sum(g.granted for g in grants) == 30
        assert all(g.shared for g in grants)
        assert sorted(g.remaining for g in grants if g.granted) == list(range(30))
        refused = [g for g in grants if not g.granted]
        assert all(0 < g.retry_after_s <= 60.0 and not g.backed_off for g in refused)
        assert a.remaining("r") == b.remaining("r") == 0
        assert (await a.take("s")).granted  # another resource has its own window
        async with raw(redis_server.url) as client:
            key = f"{prefix}{{r}}:connects"
            assert await client.zcard(key) == 30
            assert 0 < await client.pttl(key) <= 61_000  # an idle window expires


async def test_keep_leaves_slots_for_new_calls(redis_server: RedisServer, prefix: str) -> None:
    async with budgets(redis_server.url, 2, {"r": 5}, {"r": 2}, key_prefix=prefix) as (a, b):
        renewals = [await a.take("r", keep=2) for _ in range(4)]
        assert [g.granted for g in renewals] == [True, True, True, False]
        assert renewals[-1].remaining == 2
        assert 59.0 < renewals[-1].retry_after_s <= 60.0  # until the first grant leaves the window
        calls = [await b.take("r") for _ in range(3)]
        assert [g.granted for g in calls] == [True, True, False]
        never = await b.take("r", keep=5)
        assert not never.granted and never.retry_after_s == math.inf


async def test_grants_leave_the_window_by_redis_time(redis_server: RedisServer, prefix: str) -> None:
    async with budgets(redis_server.url, 1, {"r": 3}, {"r": 3}, key_prefix=prefix) as (a,), \
            raw(redis_server.url) as client:
        assert all([(await a.take("r")).granted for _ in range(3)])
        assert not (await a.take("r")).granted
        key = f"{prefix}{{r}}:connects"
        # age the grants by 30 s (scores are microseconds): the next slot frees in about 30 s
        for member in await client.zrange(key, 0, -1):
            await client.zincrby(key, -30_000_000, member)
        refused = await a.take("r")
        assert not refused.granted and 29.0 < refused.retry_after_s <= 30.0
        # and by 30 s more: all three have left, the window is full again
        for member in await client.zrange(key, 0, -1):
            await client.zincrby(key, -30_000_000, member)
        assert [(await a.take("r")).remaining for _ in range(3)] == [2, 1, 0]
        assert await client.zcard(key) == 3  # the old entries were trimmed


async def test_a_backoff_is_seen_by_every_replica(redis_server: RedisServer, prefix: str) -> None:
    async with budgets(redis_server.url, 2, {"r": 30, "s": 30}, {"r": 15, "s": 15}, key_prefix=prefix) as (a, b):
        await a.backoff("r", 30.0)
        held = await b.take("r")
        assert (held.granted, held.backed_off, held.shared, held.remaining) == (False, True, True, 0)
        assert 29.0 < held.retry_after_s <= 30.0
        assert b.remaining("r") == 0
        assert (await b.take("s")).granted  # only that resource
        await b.backoff("r", 1.0)  # a shorter back-off does not cut the longer one
        async with raw(redis_server.url) as client:
            assert 29_000 < await client.pttl(f"{prefix}{{r}}:backoff") <= 30_000
            assert await client.zcard(f"{prefix}{{r}}:connects") == 0  # refused takes cost nothing


async def test_an_unreachable_redis_falls_back_to_the_static_share(log_capture: LogCapture) -> None:
    sock, port = refusing_port()
    url = f"redis://:hunter2-secret@127.0.0.1:{port}/0"
    try:
        with log_capture("info") as buf:
            async with budgets(url, 1, {"r": 30}, {"r": 2}, clock=FakeClock()) as (a,):
                grants = [await a.take("r") for _ in range(4)]
                await a.backoff("r", 5.0)  # recorded locally; Redis is not tried again before retry_s
                held = await a.take("r")
        assert [g.granted for g in grants] == [True, True, False, False]
        assert not any(g.shared for g in grants) and not a.shared
        assert grants[2].retry_after_s == pytest.approx(60.0)
        assert a.remaining("r") == 0
        assert held.backed_off and held.retry_after_s == pytest.approx(5.0)
        assert events(buf).count(WARNING) == 1
        line = json.loads(buf.getvalue().splitlines()[0])
        assert line["error"] == "ConnectionError" and line["level"] == "warning"
        assert "hunter2-secret" not in buf.getvalue()
        assert f"127.0.0.1:{port}" in line["redis"]
    finally:
        sock.close()


async def test_a_redis_that_never_answers_does_not_stall_takes(log_capture: LogCapture) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # connections complete in the kernel; nothing ever reads or answers
    url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
    try:
        with log_capture("info") as buf:
            async with budgets(url, 1, {"r": 30}, {"r": 3}, connect_timeout_s=0.1, timeout_s=0.1) as (a,):
                started = time.monotonic()
                first = await a.take("r")
                assert time.monotonic() - started < STALL_BOUND_S
                rest = [await a.take("r") for _ in range(3)]  # within retry_s: Redis is not tried again
        assert first.granted and not first.shared
        assert [g.granted for g in rest] == [True, True, False]
        assert events(buf).count(WARNING) == 1
        assert json.loads(buf.getvalue().splitlines()[0])["error"] in {"TimeoutError", "ConnectionError"}
    finally:
        silent.close()


async def test_redis_stopped_then_back(log_capture: LogCapture) -> None:
    clock = FakeClock()
    with running_redis() as server, log_capture("info") as buf:
        async with budgets(server.url, 2, {"r": 30}, {"r": 2}, clock=clock, retry_s=5.0) as (a, b):
            assert (await a.take("r")).shared
            assert (await b.take("r")).shared
            server.stop()
            down = [await a.take("r") for _ in range(3)]
            # the shared grant a made a moment ago counts against its share of 2
            assert [(g.granted, g.shared) for g in down] == [(True, False), (False, False), (False, False)]
            assert not a.shared and b.shared  # b has not noticed yet: it has not taken since
            server.start()  # on the same port, empty
            clock.now += 4.0
            assert not (await a.take("r")).shared  # not tried again before retry_s
            clock.now += 1.0
            back = await a.take("r")
            assert back.granted and back.shared and a.shared
            assert back.remaining == 29  # a fresh Redis: its window is empty
            assert (await a.take("r")).shared
    lines = events(buf)
    assert lines.count(WARNING) == 1
    assert lines.count(BACK) == 1
    assert lines.index(WARNING) < lines.index(BACK)


async def test_a_redis_that_answers_with_errors_falls_back(log_capture: LogCapture) -> None:
    # a server where the scripts cannot run (as if it were not Redis, or refused them): every reply an error
    with running_redis("--rename-command", "EVALSHA", "", "--rename-command", "EVAL", "") as server, \
            log_capture("info") as buf:
        async with budgets(server.url, 1, {"r": 30}, {"r": 1}) as (a,):
            grants = [await a.take("r") for _ in range(2)]
    assert [(g.granted, g.shared) for g in grants] == [(True, False), (False, False)]
    assert events(buf).count(WARNING) == 1
    assert json.loads(buf.getvalue().splitlines()[0])["error"] == "ResponseError"


def test_a_missing_redis_server_is_a_failure_not_a_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", os.devnull)
    with pytest.raises(pytest.fail.Exception, match="apt-get install redis-server"):
        RedisServer()


async def test_an_empty_budget_seen_once_is_not_believed_for_ever(redis_server: RedisServer, prefix: str) -> None:
    clock = FakeClock()
    async with budgets(redis_server.url, 2, {"r": 2}, {"r": 1}, key_prefix=prefix, clock=clock) as (a, b):
        assert (await a.take("r")).granted and (await b.take("r")).granted
        assert b.remaining("r") == 0  # b's grant saw none left ...
        clock.now += 1.0
        assert b.remaining("r") == 1  # ... and asks Redis again a moment later
        refused = await a.take("r")
        assert not refused.granted and a.remaining("r") == 0
        clock.now += refused.retry_after_s  # a connect may have left the window: ask Redis again
        assert a.remaining("r") == 1

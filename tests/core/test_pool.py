"""The Voice Live resource pool: which resource a connect goes to, within which budget, and what a
429, an empty budget and a renewal's reserve do. Connectors are stand-ins (no sockets); the budget
is the real per-worker one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway import metrics
from gateway.config import parse_config
from gateway.voicelive.budget import LocalBudget
from gateway.voicelive.client import VoiceLiveConnectError
from gateway.voicelive.pool import NoBudget, Resource, ResourcePool, build_budget, shares

CONFIG = """
voicelive:
  strategy: {strategy}
  renewal_reserve: 2
  resources:
    - {{name: east, endpoint: "https://east.example.com", connections_per_minute: {east}}}
    - {{name: west, endpoint: "https://west.example.com", connections_per_minute: {west}}}
profiles:
  main: {{model: gpt-realtime}}
  west_only: {{model: gpt-realtime, resources: [west]}}
routes: {{default: main}}
"""


class Connection:
    def __init__(self, resource: str) -> None:
        self.resource = resource
        self.on_closed: Any = None

    def close(self) -> None:
        if self.on_closed is not None:
            self.on_closed()


class Connector:
    """Opens stand-in connections, or refuses them with ``status`` (and a Retry-After)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.endpoint = f"https://{name}.example.com"
        self.status: int | None = None
        self.retry_after: float | None = None
        self.opened = 0

    async def connect(self, _profile: Any) -> Connection:
        if self.status is not None:
            raise VoiceLiveConnectError(f"refused ({self.status})", self.status, self.retry_after)
        self.opened += 1
        return Connection(self.name)

    async def close(self) -> None:
        return None


def make_pool(east: int = 3, west: int = 3, strategy: str = "ordered", window_s: float = 60.0,
              ) -> tuple[ResourcePool, dict[str, Connector], Any]:
    config = parse_config(CONFIG.format(strategy=strategy, east=east, west=west))
    vl = config.voicelive
    connectors = {r.name: Connector(r.name) for r in vl.resource_list()}
    budget = LocalBudget({r.name: r.connections_per_minute for r in vl.resource_list()}, window_s=window_s)
    resources = [Resource(r.name, r.region, r.connections_per_minute, r.connections_per_minute,
                          connectors[r.name]) for r in vl.resource_list()]  # type: ignore[arg-type]
    return ResourcePool(vl, resources, budget), connectors, config


async def test_ordered_uses_the_first_resource_until_its_budget_is_spent() -> None:
    pool, _, config = make_pool(east=2, west=2)
    got = [(await pool.connect(config.profiles["main"])).resource for _ in range(4)]  # type: ignore[attr-defined]
    assert got == ["east", "east", "west", "west"]
    with pytest.raises(NoBudget) as refused:
        await pool.connect(config.profiles["main"])
    assert 0 < refused.value.retry_after_s <= 60
    assert pool.by_name["east"].active == 2 and pool.budget.remaining("east") == 0


async def test_spread_takes_the_least_loaded_resource() -> None:
    pool, _, config = make_pool(east=4, west=4, strategy="spread")
    got = [(await pool.connect(config.profiles["main"])) for _ in range(4)]
    assert [c.resource for c in got] == ["east", "west", "east", "west"]  # type: ignore[attr-defined]
    got[0].close()  # type: ignore[attr-defined]
    assert pool.by_name["east"].active == 1
    assert (await pool.connect(config.profiles["main"])).resource == "east"  # type: ignore[attr-defined]


async def test_a_profile_uses_only_its_resources() -> None:
    pool, connectors, config = make_pool(east=5, west=1)
    assert (await pool.connect(config.profiles["west_only"])).resource == "west"  # type: ignore[attr-defined]
    with pytest.raises(NoBudget):
        await pool.connect(config.profiles["west_only"])
    assert connectors["east"].opened == 0
    assert pool.has_budget(config.profiles["main"]) and not pool.has_budget(config.profiles["west_only"])


async def test_a_429_backs_the_resource_off_and_the_next_one_is_used() -> None:
    pool, connectors, config = make_pool()
    connectors["east"].status, connectors["east"].retry_after = 429, 30.0
    before = metrics.VOICELIVE_REFUSALS.value("east", "backoff")
    assert (await pool.connect(config.profiles["main"])).resource == "west"  # type: ignore[attr-defined]
    connectors["east"].status = None  # it would answer now, but the back-off holds
    assert (await pool.connect(config.profiles["main"])).resource == "west"  # type: ignore[attr-defined]
    assert connectors["east"].opened == 0
    assert metrics.VOICELIVE_REFUSALS.value("east", "backoff") == before + 1
    assert pool.budget.remaining("east") == 0  # (on back-off: nothing to take)


async def test_a_429_on_the_last_resource_is_no_budget_and_the_call_may_wait_it_out() -> None:
    # a resource throttling new sessions has no budget: the call gets the busy path (or waits for the
    # back-off within its wait), not a failed connect
    pool, connectors, config = make_pool()
    profile = config.profiles["west_only"]
    connectors["west"].status, connectors["west"].retry_after = 429, 30.0
    with pytest.raises(NoBudget) as refused:
        await pool.connect(profile)
    assert 29 < refused.value.retry_after_s <= 30
    pool, connectors, config = make_pool()
    connectors["west"].status, connectors["west"].retry_after = 429, 0.05
    waits: list[str] = []

    async def waiting() -> None:
        waits.append("hold")
        connectors["west"].status = None  # the service takes sessions again once the back-off ends

    assert (await pool.connect(profile, wait_s=2.0, waiting=waiting)).resource == "west"  # type: ignore[attr-defined]
    assert waits == ["hold"] and connectors["west"].opened == 1


async def test_a_refusal_other_than_429_is_the_callers_to_retry() -> None:
    pool, connectors, config = make_pool()
    connectors["east"].status = connectors["west"].status = 503
    with pytest.raises(VoiceLiveConnectError) as failed:
        await pool.connect(config.profiles["main"])
    assert failed.value.status == 503 and not isinstance(failed.value, NoBudget)


async def test_a_connect_waits_for_budget_and_says_so_once() -> None:
    pool, _, config = make_pool(east=1, west=1, window_s=0.2)  # a window short enough to wait out
    profile = config.profiles["main"]
    await pool.connect(profile)
    await pool.connect(profile)
    waits: list[float] = []
    loop = asyncio.get_running_loop()

    async def waiting() -> None:
        waits.append(loop.time())

    started = loop.time()
    connection = await pool.connect(profile, wait_s=5.0, waiting=waiting)
    assert connection.resource == "east" and len(waits) == 1  # type: ignore[attr-defined]
    assert loop.time() - started >= 0.1  # it waited for the first connect to leave the window


async def test_a_renewal_leaves_the_reserve_for_new_calls() -> None:
    pool, _, config = make_pool(east=6, west=6)  # reserve 2 (min of renewal_reserve and a third of 6)
    profile = config.profiles["west_only"]
    for _ in range(4):
        await pool.connect(profile, "renewal")
    before = metrics.VOICELIVE_REFUSALS.value("west", "reserve")
    with pytest.raises(NoBudget):
        await pool.connect(profile, "renewal")  # 2 left: the reserve
    assert metrics.VOICELIVE_REFUSALS.value("west", "reserve") == before + 1
    await pool.connect(profile, "call")  # new calls take what renewals leave
    await pool.connect(profile, "reconnect")


def test_each_worker_takes_its_share_of_each_budget() -> None:
    config = parse_config(CONFIG.format(strategy="ordered", east=30, west=7))
    resources = config.voicelive.resource_list()
    assert shares(resources, workers=2, replicas=1) == {"east": 15, "west": 3}
    assert shares(resources, workers=4, replicas=3) == {"east": 2, "west": 1}  # never 0
    budget = build_budget(config.voicelive, 2, None)
    assert isinstance(budget, LocalBudget) and budget.remaining("east") == 15


async def test_shares_rounded_up_to_one_connect_say_they_overspend_the_budget() -> None:
    from structlog.testing import capture_logs

    config = parse_config(CONFIG.format(strategy="ordered", east=30, west=7))
    with capture_logs() as logs:
        build_budget(config.voicelive, 2, None)  # 15 and 3 each: within both budgets
    assert not [line for line in logs if line["log_level"] == "warning"]
    with capture_logs() as logs:
        build_budget(config.voicelive, 8, None)  # west: 8 workers at 1 a minute each, for a budget of 7
    (line,) = [line for line in logs if line["log_level"] == "warning"]
    assert line["resource"] == "west" and line["connections_per_minute"] == 7 and line["processes"] == 8
    with capture_logs() as logs:
        shared = build_budget(config.voicelive, 8, "redis://127.0.0.1:1")  # shared through Redis: no static shares
    await shared.close()
    assert not [line for line in logs if line["log_level"] == "warning"]


def test_one_endpoint_is_one_resource_with_its_budget() -> None:
    config = parse_config("""
voicelive: {endpoint: "https://one.example.com", connections_per_minute: 12}
profiles: {main: {model: gpt-realtime}}
routes: {default: main}
""")
    (only,) = config.voicelive.resource_list()
    assert (only.name, only.endpoint, only.connections_per_minute) == ("default", "https://one.example.com", 12)

"""Connection budgets without sockets: the sliding window (never more than the limit in any window,
the reserve, the retry time, refilling), the per-process budget on a fake clock, back-offs, and the
Redis budget's checks of its arguments (over a real Redis: tests/sockets/test_budget_redis.py)."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.voicelive.budget import Grant, LocalBudget, RedisBudget, Window

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EPS = 1e-6


def in_window(grants: list[float], now: float, window_s: float) -> int:
    """How many of ``grants`` still occupy the window at ``now`` (a grant at t does until t + window_s)."""
    return sum(1 for t in grants if now - window_s < t <= now)


# ---- the window --------------------------------------------------------------------------------


def test_a_burst_then_a_refill_never_doubles_the_limit() -> None:
    # the case a token bucket gets wrong: 30 at once, then 30 more as it refills within the minute
    window = Window(30, 60.0)
    assert [window.take(0.0) for _ in range(30)] == [0.0] * 30
    assert window.take(0.0) == pytest.approx(60.0)
    for now in (1.0, 30.0, 59.9):
        assert window.take(now) == pytest.approx(60.0 - now)
    assert window.remaining(59.9) == 0
    assert window.take(60.0) == 0.0  # the burst has left the window
    assert window.remaining(60.0) == 29


def test_refills_as_entries_age() -> None:
    window = Window(3, 10.0)
    for now in (0.0, 2.0, 4.0):
        assert window.take(now) == 0.0
    assert window.remaining(5.0) == 0
    assert window.next_free(5.0) == pytest.approx(5.0)
    assert window.remaining(10.0) == 1
    assert window.next_free(10.0) == 0.0
    assert window.remaining(12.0) == 2
    assert window.remaining(14.0) == 3
    assert window.take(14.0) == 0.0
    assert window.remaining(14.0) == 2


def test_keep_leaves_the_reserve_to_takes_without_one() -> None:
    window = Window(5, 60.0)
    assert [window.take(float(t), keep=2) for t in range(3)] == [0.0, 0.0, 0.0]
    # two left: a renewal keeping two is refused until the first grant (t=0) has left
    assert window.take(10.0, keep=2) == pytest.approx(50.0)
    assert window.take(11.0) == 0.0
    # one left: keeping two, it needs two grants gone (t=0 and t=1)
    assert window.take(12.0, keep=2) == pytest.approx(49.0)
    assert window.take(12.0) == 0.0
    assert window.take(13.0) == pytest.approx(47.0)  # full: the oldest (t=0) leaves at 60
    assert window.remaining(13.0) == 0


def test_a_reserve_that_leaves_nothing_never_grants() -> None:
    window = Window(2, 60.0)
    assert window.take(0.0, keep=2) == math.inf
    assert window.take(0.0, keep=5) == math.inf
    assert window.remaining(0.0) == 2
    empty = Window(0, 60.0)
    assert empty.take(0.0) == math.inf
    assert empty.remaining(0.0) == 0
    assert empty.next_free(0.0) == math.inf


def test_a_clock_going_back_counts_as_the_last_time() -> None:
    window = Window(1, 10.0)
    assert window.take(100.0) == 0.0
    # an earlier time is read as 100: the grant there has not left at 105 either
    assert window.take(95.0) == pytest.approx(10.0)
    assert window.take(109.0) == pytest.approx(1.0)
    assert window.take(110.0) == 0.0


def test_memory_is_bounded_by_the_limit() -> None:
    window = Window(4, 60.0)
    for n in range(1000):
        window.take(n * 0.001)
        window.record(n * 0.001)
    assert len(window._times) == 4


def test_recorded_grants_count_against_the_window() -> None:
    window = Window(3, 60.0)
    for now in (0.0, 1.0, 2.0, 3.0):  # granted elsewhere, one beyond this window's limit
        window.record(now)
    assert window.remaining(4.0) == 0
    # only the latest three matter: the slot frees when t=1 leaves
    assert window.take(4.0) == pytest.approx(57.0)
    assert window.take(61.0) == 0.0


@pytest.mark.parametrize("limit, window_s", [(-1, 60.0), (1.5, 60.0), (True, 60.0), (3, 0.0), (3, math.nan),
                                             (3, math.inf)])
def test_bad_window_arguments_are_refused(limit: object, window_s: float) -> None:
    with pytest.raises(ValueError, match=r"limit|window_s"):
        Window(limit, window_s)  # type: ignore[arg-type]


def test_a_negative_reserve_is_refused() -> None:
    with pytest.raises(ValueError, match="keep"):
        Window(3).take(0.0, keep=-1)


steps = st.lists(
    st.tuples(
        st.one_of(st.integers(0, 25).map(float), st.floats(0.0, 25.0, allow_nan=False)),  # gap to the last take
        st.integers(0, 3),  # keep
    ),
    min_size=1,
    max_size=120,
)


@PROPERTY
@given(limit=st.integers(1, 8), window_s=st.sampled_from([1.0, 10.0, 60.0]), steps=steps)
def test_no_window_ever_holds_more_than_the_limit(limit: int, window_s: float,
                                                   steps: list[tuple[float, int]]) -> None:
    window = Window(limit, window_s)
    grants: list[float] = []
    now = 0.0
    for gap, keep in steps:
        now += gap
        before = in_window(grants, now, window_s)
        wait = window.take(now, keep)
        if wait == 0.0:
            # granted only when it fits, reserve included
            assert before + keep < limit
            grants.append(now)
        else:
            # refused only when it had to be
            assert before + keep >= limit
            assert wait > 0
            if keep >= limit:
                assert wait == math.inf
            else:
                # the wait is exactly until enough grants have left
                assert in_window(grants, now + wait + EPS, window_s) + keep < limit
                assert in_window(grants, now + wait - EPS, window_s) + keep >= limit
        assert window.remaining(now) == max(limit - in_window(grants, now, window_s), 0)
        assert len(window._times) <= limit
    for start in grants:
        assert sum(1 for t in grants if start <= t < start + window_s) <= limit


# ---- the budget of one process -----------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_local_budget_keeps_one_window_per_resource() -> None:
    clock = FakeClock()
    budget = LocalBudget({"east": 2, "west": 1}, clock)
    assert await budget.take("east") == Grant(True, 1, 0.0, shared=False)
    assert await budget.take("east") == Grant(True, 0, 0.0, shared=False)
    refused = await budget.take("east")
    assert (refused.granted, refused.remaining, refused.shared, refused.backed_off) == (False, 0, False, False)
    assert refused.retry_after_s == pytest.approx(60.0)
    assert budget.remaining("west") == 1
    assert (await budget.take("west")).granted
    clock.now += 30
    assert (await budget.take("east")).retry_after_s == pytest.approx(30.0)
    clock.now += 30
    assert budget.remaining("east") == 2
    assert (await budget.take("east")).granted
    await budget.close()


async def test_local_budget_honours_keep() -> None:
    budget = LocalBudget({"r": 3}, FakeClock())
    assert (await budget.take("r", keep=1)).granted
    assert (await budget.take("r", keep=1)).granted
    renewal = await budget.take("r", keep=1)
    assert not renewal.granted and renewal.remaining == 1
    assert (await budget.take("r")).granted


async def test_a_backoff_refuses_every_take_until_it_ends() -> None:
    clock = FakeClock()
    budget = LocalBudget({"r": 30, "other": 30}, clock)
    await budget.backoff("r", 10.0)
    held = await budget.take("r")
    assert held == Grant(False, 0, pytest.approx(10.0), shared=False, backed_off=True)  # type: ignore[arg-type]
    assert budget.remaining("r") == 0
    assert (await budget.take("other")).granted  # only that resource
    clock.now += 4
    assert (await budget.take("r")).retry_after_s == pytest.approx(6.0)
    await budget.backoff("r", 1.0)  # a shorter back-off does not cut the longer one
    assert (await budget.take("r")).retry_after_s == pytest.approx(6.0)
    clock.now += 6
    assert (await budget.take("r")).granted
    assert budget.remaining("r") == 29  # the refused takes cost nothing


async def test_unknown_resources_and_bad_arguments_are_clear_errors() -> None:
    budget = LocalBudget({"east": 2}, FakeClock())
    with pytest.raises(ValueError, match=r"unknown Voice Live resource 'north'.*east"):
        await budget.take("north")
    with pytest.raises(ValueError, match="unknown Voice Live resource"):
        await budget.backoff("north", 1.0)
    with pytest.raises(ValueError, match="unknown Voice Live resource"):
        budget.remaining("north")
    for seconds in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="back-off"):
            await budget.backoff("east", seconds)
    with pytest.raises(ValueError, match="keep"):
        await budget.take("east", keep=-1)
    with pytest.raises(ValueError, match="limit of resource 'bad'"):
        LocalBudget({"bad": -3})
    assert budget.remaining("east") == 2  # nothing was taken by the failed calls


# ---- the shared budget's arguments (no connection is made before the first take) -------------------


def test_redis_budget_needs_the_same_resources_in_limits_and_fallback() -> None:
    with pytest.raises(ValueError, match="same resources"):
        RedisBudget("redis://127.0.0.1:1", {"east": 30, "west": 30}, {"east": 15})


def test_a_bad_redis_url_is_refused_without_its_password() -> None:
    with pytest.raises(ValueError, match="Redis URL") as info:
        RedisBudget("http://user:hunter2-secret@redis.example:6379/0", {"r": 30}, {"r": 15})
    assert "hunter2-secret" not in str(info.value)
    assert "user:***@redis.example:6379" in str(info.value)


def test_a_redis_password_in_the_query_string_is_masked_and_registered() -> None:
    # redis-py takes the password from the query string too: the address logged must not carry it,
    # and the scrubber must know it (and the password of the user part, decoded as redis-py uses it)
    from gateway.log import scrub_text

    budget = RedisBudget("redis://redis.example:6379/0?password=query-secret-1&db=0", {"r": 30}, {"r": 15})
    assert "query-secret-1" not in budget._address and "redis.example:6379" in budget._address
    assert "query-secret-1" not in scrub_text("url: redis://h/?password=query-secret-1")
    budget = RedisBudget("redis://user:p%40ss-secret-2@redis.example:6379/0", {"r": 30}, {"r": 15})
    assert "p@ss-secret-2" not in scrub_text("AUTH failed for p@ss-secret-2")


@pytest.mark.parametrize("option", ["connect_timeout_s", "timeout_s", "retry_s"])
def test_redis_budget_timeouts_must_be_positive(option: str) -> None:
    with pytest.raises(ValueError, match=option):
        RedisBudget("redis://127.0.0.1:1", {"r": 30}, {"r": 15}, **{option: 0.0})  # type: ignore[arg-type]

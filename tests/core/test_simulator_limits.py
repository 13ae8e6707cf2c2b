"""The simulator's connection limit (its stand-in for Voice Live's new connections per minute): pure,
time passed in."""

from __future__ import annotations

import random

import pytest

from gateway.simulator.limits import ConnectionLimit
from gateway.simulator.settings import SimulatorSettings


def test_connections_beyond_the_limit_are_refused_until_the_oldest_leaves_the_window() -> None:
    limit = ConnectionLimit(3, window_s=60.0)
    assert [limit.attempt(t) for t in (0.0, 1.0, 2.0)] == [0.0, 0.0, 0.0]
    assert limit.attempt(10.0) == pytest.approx(50.0)  # the first frees its slot at 60 s
    assert limit.attempt(59.999) == pytest.approx(0.001)
    assert limit.attempt(60.0) == 0.0  # (0, 60]: the connection of 0 s has left
    assert limit.attempt(60.5) == pytest.approx(0.5)
    counts = limit.counts
    assert (counts.accepted, counts.refused, counts.most_in_window) == (4, 3, 3)
    assert limit.in_window(60.5) == 3 and limit.in_window(200.0) == 0


def test_without_a_limit_every_connection_is_accepted_and_the_busiest_window_is_counted() -> None:
    limit = ConnectionLimit(None, window_s=10.0)
    for t in (0.0, 1.0, 2.0, 11.5, 12.0):
        assert limit.attempt(t) == 0.0
    assert (limit.counts.accepted, limit.counts.refused, limit.counts.most_in_window) == (5, 0, 3)


def test_no_window_ever_holds_more_than_the_limit() -> None:
    rng = random.Random(7)
    limit = ConnectionLimit(5, window_s=10.0)
    accepted: list[float] = []
    t = 0.0
    for _ in range(2000):
        t += rng.expovariate(2.0)
        if limit.attempt(t) == 0.0:
            accepted.append(t)
    assert limit.counts.accepted == len(accepted) and limit.counts.refused == 2000 - len(accepted)
    worst = max(sum(1 for a in accepted if end - 10.0 < a <= end) for end in accepted)
    assert worst == limit.counts.most_in_window == 5


def test_a_clock_stepping_back_never_lets_more_through() -> None:
    limit = ConnectionLimit(2, window_s=60.0)
    assert limit.attempt(100.0) == 0.0 and limit.attempt(101.0) == 0.0
    assert limit.attempt(50.0) > 0  # taken as 101 s: still full


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "30"])
def test_a_limit_must_be_a_whole_number_from_one(bad: object) -> None:
    with pytest.raises(ValueError, match="whole number"):
        ConnectionLimit(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_connections_per_minute"):
        SimulatorSettings(max_connections_per_minute=bad)  # type: ignore[arg-type]

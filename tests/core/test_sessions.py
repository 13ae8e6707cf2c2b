"""A call's Voice Live sessions: renewal before expiry, and reconnect episodes with a budget."""

from __future__ import annotations

from gateway.core.sessions import MIN_SESSION_MS, STABLE_SESSION_MS, Sessions


def test_sessions_that_drop_at_once_share_one_episode_budget() -> None:
    sessions = Sessions(reconnect_budget_ms=3_000, renew_before_ms=120_000)
    assert sessions.lost(1_000, reconnecting=False)
    assert sessions.reconnect_deadline == 4_000 and sessions.drops == 1
    sessions.ready(1_500)
    assert sessions.lost(1_600, reconnecting=False)  # it did not last: the same episode goes on
    assert sessions.reconnect_deadline == 4_000 and sessions.drops == 2
    assert not sessions.lost(4_000, reconnecting=True)  # the budget is spent


def test_a_session_that_lasted_starts_a_new_episode() -> None:
    sessions = Sessions(reconnect_budget_ms=3_000, renew_before_ms=120_000)
    sessions.lost(1_000, reconnecting=False)
    sessions.ready(2_000)
    later = 2_000 + STABLE_SESSION_MS
    assert sessions.lost(later, reconnecting=False)
    assert sessions.reconnect_deadline == later + 3_000 and sessions.drops == 1


def test_a_renewal_may_reopen_without_a_reconnect_budget() -> None:
    sessions = Sessions(reconnect_budget_ms=0, renew_before_ms=120_000)
    sessions.schedule_renewal(1_800, 0)
    assert sessions.renewal_due(sessions.renew_at or 0)
    sessions.renew()
    assert sessions.renewing and sessions.next_renewal() is None
    assert sessions.lost(1_000, reconnecting=False)
    assert sessions.reconnect_deadline is not None and sessions.reconnect_deadline > 1_000
    sessions.opened()
    assert not sessions.renewing


def test_renewal_waits_at_least_a_minute_and_then_for_a_quiet_moment() -> None:
    sessions = Sessions(reconnect_budget_ms=0, renew_before_ms=120_000)
    assert sessions.schedule_renewal(30, 100)  # shorter than the margin
    assert sessions.renew_at == 100 + MIN_SESSION_MS
    assert sessions.next_renewal() == sessions.renew_at
    sessions.tick(100 + MIN_SESSION_MS)  # due while the call is busy
    assert sessions.next_renewal() is None and sessions.renewal_due(100 + MIN_SESSION_MS + 5)


def test_expiry_is_news_once() -> None:
    sessions = Sessions(reconnect_budget_ms=0, renew_before_ms=120_000)
    assert sessions.learn_expiry(1_900_000_000)
    assert not sessions.learn_expiry(1_900_000_000)
    assert not sessions.learn_expiry(True) and not sessions.learn_expiry("soon")
    sessions.opened()
    assert sessions.learn_expiry(1_900_000_000)


def test_renewals_are_spread_earlier_by_up_to_the_spread() -> None:
    sessions = Sessions(reconnect_budget_ms=0, renew_before_ms=120_000)
    sessions.schedule_renewal(3_600, 0, spread_ms=250_000)
    assert sessions.renew_at == 3_600_000 - 120_000 - 250_000
    sessions.schedule_renewal(90, 0, spread_ms=250_000)  # never within a minute of now
    assert sessions.renew_at == MIN_SESSION_MS


def test_a_deferred_renewal_keeps_the_session_and_is_tried_again_later() -> None:
    sessions = Sessions(reconnect_budget_ms=0, renew_before_ms=120_000)
    sessions.schedule_renewal(3_600, 0)
    due = sessions.renew_at or 0
    sessions.renew()
    sessions.defer(due + 5)
    assert not sessions.renewing and not sessions.renewal_due(due + 6)
    assert sessions.next_renewal() == sessions.renew_at and sessions.renew_at is not None
    assert sessions.renew_at > due + 5 and sessions.renewal_due(sessions.renew_at)

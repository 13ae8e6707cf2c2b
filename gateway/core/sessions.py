"""The Voice Live sessions of one call, one after another: when to ask for a fresh session before
the current one expires, and how long to keep reopening sessions that drop (a reconnect episode,
with a budget). Pure: time is passed in, in milliseconds on the call's clock."""

from __future__ import annotations

from typing import Any

__all__ = ["MIN_SESSION_MS", "STABLE_SESSION_MS", "Sessions"]

MIN_SESSION_MS = 60_000.0  # a Voice Live session is kept at least this long before a renewal
STABLE_SESSION_MS = 5_000.0  # a restored session that drops sooner does not end the reconnect episode
RENEWAL_RETRY_MS = 20_000.0  # a renewal that found no budget is tried again this much later
RENEWAL_BUDGET_MS = 10_000.0  # a renewal may take this long to open its session, even without a reconnect budget


class Sessions:
    def __init__(self, reconnect_budget_ms: float, renew_before_ms: float) -> None:
        self.reconnect_budget_ms = reconnect_budget_ms  # 0: a dropped session is not reopened
        self.renew_before_ms = renew_before_ms
        self.reconnect_deadline: float | None = None  # end of the current reconnect episode's budget
        self.drops = 0  # sessions lost in the current reconnect episode
        self._ready_at: float | None = None  # when the latest session became ready
        self.expires_at: float | None = None  # the latest session's expiry, as Voice Live gave it (unix time)
        self.renew_at: float | None = None
        self._overdue = False  # the renewal time passed while the call was busy
        self.renewing = False  # a fresh session was asked for: the current one is closed for it

    def opened(self) -> None:
        """A new socket: whatever renewal was asked for is under way; its expiry comes with its events."""
        self.renewing = False
        self.expires_at = None

    def ready(self, now: float) -> None:
        self._ready_at = now  # the reconnect episode ends once this session has lasted

    def lost(self, now: float, reconnecting: bool) -> bool:
        """A session was lost (or closed for renewal). It starts a reconnect episode with the whole
        budget, unless the session before it did not last: then the episode goes on, with what is
        left of its budget (a Voice Live that accepts sessions and drops them at once must not be
        reconnected for ever). False: this episode's budget is spent."""
        ready = self._ready_at
        stable = ready is not None and now - ready >= STABLE_SESSION_MS
        if self.reconnect_deadline is None or (stable and not reconnecting):
            budget = max(self.reconnect_budget_ms, RENEWAL_BUDGET_MS if self.renewing else 0.0)
            self.reconnect_deadline = now + budget
            self.drops = 0
        self.drops += 1
        return now < self.reconnect_deadline

    def learn_expiry(self, expires: Any) -> bool:
        """Voice Live said when the session expires; True when that is news."""
        if isinstance(expires, int | float) and not isinstance(expires, bool) and expires != self.expires_at:
            self.expires_at = expires
            return True
        return False

    def schedule_renewal(self, seconds_left: float, now: float, spread_ms: float = 0.0) -> bool:
        """Renew before the session expires, ``spread_ms`` earlier still (calls that began together
        do not all renew at once), never within :data:`MIN_SESSION_MS` of now (a wrong clock must
        not renew sessions in a loop). True: the session is shorter than the margin."""
        self.renew_at = now + max(MIN_SESSION_MS, seconds_left * 1000 - self.renew_before_ms - spread_ms)
        return seconds_left * 1000 < self.renew_before_ms

    def defer(self, now: float) -> None:
        """The renewal could not get a connection (the budget keeps its reserve for new calls): the
        current session goes on, and the renewal is tried again later."""
        self.renewing = False
        self._overdue = False
        self.renew_at = now + RENEWAL_RETRY_MS

    def tick(self, now: float) -> None:
        if self.renew_at is not None and now >= self.renew_at:
            self._overdue = True  # from now on, any quiet moment renews

    def renewal_due(self, now: float) -> bool:
        return self.renew_at is not None and now >= self.renew_at and not self.renewing

    def renew(self) -> None:
        """A fresh session is asked for."""
        self.renew_at = None
        self._overdue = False
        self.renewing = True

    def next_renewal(self) -> float | None:
        """When the call must wake up for the renewal (None: it waits for a quiet moment, or none is due)."""
        return None if self.renewing or self._overdue else self.renew_at

"""The simulator's own connection limit: new sessions per rolling minute, as Voice Live enforces it.

Voice Live answers a WebSocket upgrade beyond a resource's new connections per minute with HTTP 429
and a ``Retry-After``. :class:`ConnectionLimit` decides each upgrade the same way, with time passed
in (no clock, no I/O), and counts what it decided: the upgrades accepted and refused, and the most
accepted in any window of ``window_s`` seconds (what a client that keeps to the limit never pushes
above it). It knows nothing of the gateway's own budget: it is the independent side a test or a
benchmark checks that budget against.

A connection accepted at ``t`` counts in the window until ``t + window_s`` (excluded), so no window
``(s - window_s, s]`` ever holds more than ``limit`` accepted connections.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

WINDOW_S = 60.0


@dataclass
class ConnectionCounts:
    """What a :class:`ConnectionLimit` decided so far."""

    limit: int | None
    accepted: int = 0
    refused: int = 0
    most_in_window: int = 0  # the most connections accepted in any window of window_s seconds


class ConnectionLimit:
    """New connections per rolling window; ``limit`` None: every connection is accepted (and counted)."""

    def __init__(self, limit: int | None, window_s: float = WINDOW_S) -> None:
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"the connection limit must be a whole number >= 1 (got {limit!r})")
        if not (window_s > 0 and math.isfinite(window_s)):
            raise ValueError(f"window_s must be a positive number of seconds (got {window_s!r})")
        self.window_s = window_s
        self.counts = ConnectionCounts(limit)
        self._accepted: deque[float] = deque()  # times of the connections accepted in the window
        self._last = -math.inf

    def _trim(self, now: float) -> float:
        now = max(now, self._last)  # a clock that steps back counts as standing still
        self._last = now
        horizon = now - self.window_s
        times = self._accepted
        while times and times[0] <= horizon:
            times.popleft()
        return now

    def attempt(self, now: float) -> float:
        """0.0 when a connection asked for at ``now`` is accepted (and counted); otherwise the seconds
        until one would be (> 0), the connection being counted as refused."""
        now = self._trim(now)
        counts, times = self.counts, self._accepted
        if counts.limit is not None and len(times) >= counts.limit:
            counts.refused += 1
            return max(times[0] + self.window_s - now, 1e-3)
        times.append(now)
        counts.accepted += 1
        counts.most_in_window = max(counts.most_in_window, len(times))
        return 0.0

    def in_window(self, now: float) -> int:
        """Connections accepted in the window ending at ``now``."""
        self._trim(now)
        return len(self._accepted)

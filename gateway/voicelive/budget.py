"""Connection budgets: how many new Voice Live connections each resource may still open.

Voice Live allows a fixed number of new connections per minute per resource (30 on S0). The budget
is a **sliding window**, not a token bucket: a bucket of capacity N refilled at N/60 per second lets
N connects through at once and N more as it refills, so 2N in some 60-second window. Here the times
of the connects granted in the last ``window_s`` seconds are kept, and a new one is granted only while
fewer than the limit are there, so that no window of ``window_s`` seconds ever holds more than the
limit. A connect granted at ``t`` occupies the window until ``t + window_s``.

Three layers:

- :class:`Window`, the pure core: time is passed in, no clock, no I/O; memory bounded by the limit.
- :class:`LocalBudget`: one window per resource in this process. Its limits are this worker's share
  of each resource's budget (the caller divides the per-minute limit among workers and replicas).
- :class:`RedisBudget`: one window per resource in Redis, shared by every worker and replica, each
  take one atomic Lua script timed by Redis' own clock (replicas with skewed clocks agree). When Redis
  is unreachable or fails, takes fall back to a :class:`LocalBudget` of this worker's static share;
  one warning says so, Redis is tried again after ``retry_s`` seconds, and one info line says when
  the shared budget is back.

Both budgets give a :class:`Grant` per take and honour a back-off (a 429 from the service): no take
on that resource is granted until it ends. ``keep`` is a reserve a take must leave: a session renewal
takes with ``keep > 0`` so that it never spends the last connects new calls need; a new call or a
reconnect takes with ``keep=0``.

Keys in Redis (``key_prefix`` defaults to ``gateway:voicelive:``; the resource name is a hash tag, so
that both keys of a resource live in one slot of a Redis Cluster)::

    gateway:voicelive:{<resource>}:connects   sorted set: one member per granted connect, scored by
                                              Redis' time of the grant in microseconds; trimmed to
                                              the window by every take, expires when idle
    gateway:voicelive:{<resource>}:backoff    present while the resource is on back-off (PX expiry)
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from gateway.log import get_logger, register_secret

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = get_logger("gateway.voicelive.budget")

WINDOW_S = 60.0
KEY_PREFIX = "gateway:voicelive:"
_RECHECK_S = 1.0  # an empty shared budget seen by a grant is asked again after this long
_MIN_WAIT_S = 1e-6  # a refusal always says to wait a little, even when rounding says 0


@dataclass(frozen=True, slots=True)
class Grant:
    """The answer to one take.

    ``granted``: the connect may go ahead (and has been counted). ``remaining``: connects left in the
    window after this take (0 while on back-off). ``retry_after_s``: 0.0 when granted; otherwise the
    seconds until a take like this one could be granted (``math.inf`` when the reserve leaves no slot
    at all). ``shared``: the budget in use is the one shared through Redis (False: this worker's own
    share, a :class:`LocalBudget` or Redis being unreachable).
    ``backed_off``: refused because the resource is on back-off after a 429.
    """

    granted: bool
    remaining: int
    retry_after_s: float
    shared: bool
    backed_off: bool = False


class Window:
    """The times of the connects granted in the last ``window_s`` seconds, at most ``limit`` of them.

    Time is passed in (seconds on any monotonic clock). A time earlier than the last one recorded
    counts as that last one, so the window stays ordered (and only errs on the safe side)."""

    def __init__(self, limit: int, window_s: float = WINDOW_S) -> None:
        _check_limit("limit", limit)
        if not (window_s > 0 and math.isfinite(window_s)):
            raise ValueError(f"window_s must be a positive number of seconds (got {window_s!r})")
        self.limit = limit
        self.window_s = window_s
        self._times: deque[float] = deque(maxlen=limit)

    def _trim(self, now: float) -> float:
        times = self._times
        if times and now < times[-1]:
            now = times[-1]
        horizon = now - self.window_s
        while times and times[0] <= horizon:
            times.popleft()
        return now

    def take(self, now: float, keep: int = 0) -> float:
        """0.0 if a connect is granted (and recorded) at ``now`` leaving at least ``keep`` slots free;
        otherwise the seconds until one would be (> 0; ``math.inf`` if ``keep`` leaves none ever)."""
        _check_keep(keep)
        now = self._trim(now)
        times = self._times
        if len(times) + keep < self.limit:
            times.append(now)
            return 0.0
        # the take fits once the entry at this index has left the window
        index = len(times) - (self.limit - keep)
        if index >= len(times):
            return math.inf
        return max(times[index] + self.window_s - now, _MIN_WAIT_S)

    def record(self, now: float) -> None:
        """Count a connect granted elsewhere (by the shared budget), even beyond the limit: only the
        latest ``limit`` are kept, which are the ones that decide when slots free up."""
        if self.limit:
            self._times.append(self._trim(now))

    def remaining(self, now: float) -> int:
        """Connects that may still be granted at ``now`` (with ``keep=0``)."""
        self._trim(now)
        return max(self.limit - len(self._times), 0)

    def next_free(self, now: float) -> float:
        """0.0 if a slot is free at ``now``; otherwise the seconds until one is (``math.inf`` when the
        limit is 0)."""
        now = self._trim(now)
        if len(self._times) < self.limit:
            return 0.0
        if not self._times:
            return math.inf
        return max(self._times[0] + self.window_s - now, _MIN_WAIT_S)


class Budget(Protocol):
    """A connection budget per Voice Live resource, as the gateway uses it."""

    async def take(self, resource: str, keep: int = 0) -> Grant:
        """Take one connect from ``resource``'s budget, leaving ``keep`` connects for others."""
        ...

    async def backoff(self, resource: str, seconds: float) -> None:
        """The service refused a connect (429): grant nothing on ``resource`` for ``seconds``."""
        ...

    def remaining(self, resource: str) -> int:
        """The last known number of connects left on ``resource`` (no I/O: for a gauge)."""
        ...

    async def close(self) -> None: ...


class LocalBudget:
    """Budgets kept in this process: one :class:`Window` per resource.

    ``limits`` maps each resource name to this worker's share of its per-minute limit."""

    def __init__(
        self,
        limits: Mapping[str, int],
        clock: Callable[[], float] = time.monotonic,
        *,
        window_s: float = WINDOW_S,
    ) -> None:
        for name, limit in limits.items():
            _check_limit(f"limit of resource {name!r}", limit)
        self._windows = {name: Window(limit, window_s) for name, limit in limits.items()}
        self._holds: dict[str, float] = {}  # resource -> end of its back-off on the clock
        self._clock = clock

    def _window(self, resource: str) -> Window:
        window = self._windows.get(resource)
        if window is None:
            raise ValueError(_unknown(resource, self._windows))
        return window

    def _hold_left(self, resource: str, now: float) -> float:
        until = self._holds.get(resource)
        if until is None:
            return 0.0
        if now >= until:
            del self._holds[resource]
            return 0.0
        return until - now

    def _hold(self, resource: str, seconds: float, now: float) -> None:
        self._window(resource)
        _check_seconds(seconds)
        if seconds > 0:
            self._holds[resource] = max(self._holds.get(resource, now), now + seconds)

    def take_now(self, resource: str, keep: int = 0) -> Grant:
        """:meth:`take` without awaiting (it does no I/O)."""
        window = self._window(resource)
        _check_keep(keep)
        now = self._clock()
        hold = self._hold_left(resource, now)
        if hold > 0:
            return Grant(False, 0, hold, shared=False, backed_off=True)
        wait = window.take(now, keep)
        return Grant(wait == 0.0, window.remaining(now), wait, shared=False)

    async def take(self, resource: str, keep: int = 0) -> Grant:
        return self.take_now(resource, keep)

    async def backoff(self, resource: str, seconds: float) -> None:
        self._hold(resource, seconds, self._clock())

    def remaining(self, resource: str) -> int:
        window = self._window(resource)
        now = self._clock()
        return 0 if self._hold_left(resource, now) > 0 else window.remaining(now)

    async def close(self) -> None:
        return None


# KEYS[1]: the resource's sorted set of connects; KEYS[2]: its back-off key.
# ARGV: limit, window (microseconds), keep, a member unique to this take, idle expiry (milliseconds).
# Returns {granted (0/1), remaining, milliseconds until the take could be granted (-1: never),
# refused by a back-off (0/1)}.
_TAKE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local keep = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local hold = redis.call('PTTL', KEYS[2])
if hold > 0 then
  return {0, 0, hold, 1}
end
if count + keep < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]))
  return {1, limit - count - 1, 0, 0}
end
local left = math.max(limit - count, 0)
local index = count - (limit - keep)
if index >= count then
  return {0, left, -1, 0}
end
local entry = redis.call('ZRANGE', KEYS[1], index, index, 'WITHSCORES')
local wait = math.ceil((tonumber(entry[2]) + window - now) / 1000)
return {0, left, math.max(wait, 1), 0}
"""

# KEYS[1]: the resource's back-off key; ARGV[1]: milliseconds. A back-off is only ever lengthened.
_BACKOFF_LUA = """
local ms = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ms then
  redis.call('SET', KEYS[1], '1', 'PX', ms)
end
return 1
"""



def _masked(url: str) -> str:
    """``url`` without its password, in the user part or the query (for log lines and errors)."""
    try:
        parts = urlsplit(url)
        if parts.password is not None:
            netloc = parts.netloc.rpartition("@")[2]
            parts = parts._replace(netloc=f"{parts.username or ''}:***@{netloc}")
        if parts.query:
            query = [(k, "***" if k.lower() == "password" else v) for k, v in parse_qsl(parts.query, True)]
            parts = parts._replace(query=urlencode(query, safe="*"))
        return urlunsplit(parts)
    except ValueError:
        return "<unparsable Redis URL>"


class RedisBudget:
    """Budgets shared by every worker and replica through Redis, each take one atomic script.

    ``limits``: each resource's whole per-minute limit. ``fallback``: this worker's static share of
    it, used while Redis is unreachable. A dead Redis never stalls a take for longer than
    ``connect_timeout_s + timeout_s``; after a failure, Redis is tried again ``retry_s`` seconds later.
    """

    def __init__(
        self,
        url: str,
        limits: Mapping[str, int],
        fallback: Mapping[str, int],
        *,
        key_prefix: str = KEY_PREFIX,
        window_s: float = WINDOW_S,
        connect_timeout_s: float = 0.5,
        timeout_s: float = 0.5,
        retry_s: float = 5.0,
        max_connections: int = 16,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if set(limits) != set(fallback):
            raise ValueError(
                f"the shared limits and the fallback shares must name the same resources "
                f"(limits: {sorted(limits)}, fallback: {sorted(fallback)})"
            )
        for name, limit in limits.items():
            _check_limit(f"limit of resource {name!r}", limit)
        for name, value in (("connect_timeout_s", connect_timeout_s), ("timeout_s", timeout_s),
                            ("retry_s", retry_s)):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number of seconds (got {value!r})")
        self._local = LocalBudget(fallback, clock, window_s=window_s)
        self._limits = dict(limits)
        self._window_us = round(window_s * 1_000_000)
        self._idle_ms = math.ceil(window_s * 1000) + 1000
        self._keys = {
            name: (f"{key_prefix}{{{name}}}:connects", f"{key_prefix}{{{name}}}:backoff") for name in limits
        }
        self._remaining = dict(limits)
        self._until: dict[str, float] = {name: math.inf for name in limits}  # (see remaining())
        self._clock = clock
        self._deadline_s = connect_timeout_s + timeout_s
        self._retry_s = retry_s
        self._down = False
        self._retry_at = 0.0
        self._members = (f"{os.getpid()}:{os.urandom(6).hex()}:{n}" for n in itertools.count())
        self._address = _masked(url)
        for password in _passwords(url):
            register_secret(password)
        # redis-py is imported only when a budget is shared (it loads more than the gateway uses, e.g.
        # OpenTelemetry's metrics SDK when that is installed)
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError

        # what a dead, unreachable or misbehaving Redis raises (redis-py wraps most in RedisError)
        self._failures: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
        try:
            pool = BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=connect_timeout_s,
                socket_connect_timeout=connect_timeout_s,
                socket_timeout=timeout_s,
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError as exc:
            raise ValueError(f"Redis URL {self._address}: {exc}") from None
        self._redis: Redis = Redis.from_pool(pool)
        self._take_script = self._redis.register_script(_TAKE_LUA)
        self._backoff_script = self._redis.register_script(_BACKOFF_LUA)

    @property
    def shared(self) -> bool:
        """Whether takes currently go to Redis (False: this worker's static share, Redis being down)."""
        return not self._down

    def _use_redis(self, now: float) -> bool:
        if not self._down:
            return True
        if now < self._retry_at:
            return False
        self._retry_at = now + self._retry_s  # one probe at a time: the others stay local meanwhile
        return True

    def _failed(self, exc: BaseException) -> None:
        self._retry_at = self._clock() + self._retry_s
        if not self._down:
            self._down = True
            log.warning(
                "Redis unreachable: each worker uses its static share of the Voice Live connection budget",
                error=type(exc).__name__, redis=self._address, retry_s=self._retry_s,
            )

    def _worked(self) -> None:
        if self._down:
            self._down = False
            log.info("Redis reachable again: back on the shared budget", redis=self._address)

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        async with asyncio.timeout(self._deadline_s):
            return await script(keys=keys, args=args)

    async def take(self, resource: str, keep: int = 0) -> Grant:
        keys = self._keys.get(resource)
        if keys is None:
            raise ValueError(_unknown(resource, self._keys))
        _check_keep(keep)
        now = self._clock()
        hold = self._local._hold_left(resource, now)  # this worker's own back-offs, even while Redis is down
        if hold > 0:
            self._saw(resource, 0, now + hold)
            return Grant(False, 0, hold, shared=self.shared, backed_off=True)
        if self._use_redis(now):
            args = [self._limits[resource], self._window_us, keep, next(self._members), self._idle_ms]
            try:
                granted, remaining, wait_ms, held = await self._run(self._take_script, list(keys), args)
            except self._failures as exc:
                self._failed(exc)
            else:
                self._worked()
                if granted:
                    self._saw(resource, int(remaining), now + _RECHECK_S)
                    self._local._window(resource).record(self._clock())
                    return Grant(True, int(remaining), 0.0, shared=True)
                retry = math.inf if int(wait_ms) < 0 else int(wait_ms) / 1000
                self._saw(resource, int(remaining), now + (retry if math.isfinite(retry) else _RECHECK_S))
                return Grant(False, int(remaining), retry, shared=True, backed_off=bool(held))
        grant = self._local.take_now(resource, keep)
        self._remaining[resource] = grant.remaining
        return grant

    async def backoff(self, resource: str, seconds: float) -> None:
        keys = self._keys.get(resource)
        if keys is None:
            raise ValueError(_unknown(resource, self._keys))
        now = self._clock()
        self._local._hold(resource, seconds, now)
        if seconds <= 0 or not self._use_redis(now):
            return
        try:
            await self._run(self._backoff_script, [keys[1]], [math.ceil(seconds * 1000)])
        except self._failures as exc:
            self._failed(exc)
        else:
            self._worked()

    def _saw(self, resource: str, remaining: int, until: float) -> None:
        """What a take learnt: ``remaining`` connects, true at least until ``until`` (this clock)."""
        self._remaining[resource] = remaining
        self._until[resource] = until

    def remaining(self, resource: str) -> int:
        """The last known remaining budget. Other workers take from it and time frees it, so an empty
        budget seen by this worker is reported empty only until a connect may have left the window
        (then 1: the next take asks Redis)."""
        if resource not in self._keys:
            raise ValueError(_unknown(resource, self._keys))
        if self._down:
            return self._local.remaining(resource)
        known = self._remaining[resource]
        return 1 if known == 0 and self._clock() >= self._until[resource] else known

    async def close(self) -> None:
        await self._redis.aclose()


def _passwords(url: str) -> list[str]:
    """The passwords ``url`` gives Redis, as redis-py reads them (percent-decoded; user part or query)."""
    try:
        parts = urlsplit(url)
        found = [unquote(parts.password)] if parts.password else []
        return found + [v for k, v in parse_qsl(parts.query) if k.lower() == "password" and v]
    except ValueError:
        return []


def _check_limit(what: str, limit: object) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise ValueError(f"{what} must be a whole number of connects per window, 0 or more (got {limit!r})")


def _check_keep(keep: object) -> None:
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 0:
        raise ValueError(f"keep must be a whole number of connects, 0 or more (got {keep!r})")


def _check_seconds(seconds: float) -> None:
    if not (seconds >= 0 and math.isfinite(seconds)):
        raise ValueError(f"a back-off must be a finite number of seconds, 0 or more (got {seconds!r})")


def _unknown(resource: str, known: Mapping[str, object]) -> str:
    return f"unknown Voice Live resource {resource!r} (the budget knows: {', '.join(sorted(known)) or 'none'})"

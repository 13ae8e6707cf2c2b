"""The Voice Live resources of a gateway, and the connection budget each is opened within.

Every new Voice Live connection (a call's session, a pre-warmed one, a reconnect, a renewal) is
opened here: a resource the profile may use is chosen (in the configured order, or the least loaded
first), one connect is taken from its budget (:mod:`gateway.voicelive.budget`), and only then is the
socket opened. A resource out of budget, or on back-off after Voice Live answered 429, is passed
over; when none is left the connect waits for budget up to its deadline, and otherwise fails with
:class:`NoBudget`, so that the caller hears the profile's busy message instead of a failed connect.

Purposes: a renewal takes only while the resource keeps ``renewal_reserve`` connects for new calls
and reconnects (it is retried later; the session it replaces still runs); the others take down to 0.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from gateway import metrics
from gateway.config import Profile, VoiceLiveResource, VoiceLiveSettings
from gateway.log import get_logger
from gateway.voicelive.budget import Budget, LocalBudget, RedisBudget
from gateway.voicelive.client import (
    AsyncTokenCredential,
    Keepalive,
    VoiceLiveConnectError,
    VoiceLiveConnection,
    VoiceLiveConnector,
)

log = get_logger("gateway.voicelive")

__all__ = ["NoBudget", "Purpose", "Resource", "ResourcePool", "build_budget"]

Purpose = Literal["call", "warm", "reconnect", "renewal"]
PURPOSES: tuple[str, ...] = ("call", "warm", "reconnect", "renewal")
DEFAULT_BACKOFF_S = 10.0  # a 429 without a usable Retry-After puts the resource on back-off this long
MAX_BACKOFF_S = 120.0


class NoBudget(VoiceLiveConnectError):
    """No resource the profile may use has a connection left in its budget (or all are on back-off)."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"no Voice Live connection left in the budget (one frees in {retry_after_s:.1f} s)")
        self.retry_after_s = retry_after_s


@dataclass(eq=False)
class Resource:
    """One Voice Live resource: its connector, its per-minute limit and this worker's share of it."""

    name: str
    region: str | None
    limit: int  # the resource's connections per minute (every worker and replica together)
    share: int  # this worker's share of it (used without Redis)
    connector: VoiceLiveConnector
    active: int = 0  # sessions of this worker open on it

    def _closed(self) -> None:
        self.active -= 1
        metrics.VOICELIVE_ACTIVE.set(self.active, self.name)


def shares(resources: Sequence[VoiceLiveResource], workers: int, replicas: int) -> dict[str, int]:
    """Each resource's budget divided by the processes that share it without Redis (at least 1 each)."""
    return {r.name: max(1, r.connections_per_minute // (workers * replicas)) for r in resources}


def build_budget(settings: VoiceLiveSettings, workers: int, redis_url: str | None) -> Budget:
    """The budget of every resource: in Redis when a URL is given (shared by every worker and replica,
    each worker falling back to its static share if Redis fails), else this worker's static share."""
    resources = settings.resource_list()
    static = shares(resources, workers, settings.replicas)
    if redis_url:
        return RedisBudget(redis_url, {r.name: r.connections_per_minute for r in resources}, static)
    processes = workers * settings.replicas
    for r in resources:
        if r.connections_per_minute < processes:  # each still opens one a minute: more than the resource allows
            log.warning("a Voice Live resource's budget is smaller than the processes sharing it: together they "
                        "may open more connections per minute than it allows (set GATEWAY_REDIS_URL to share it)",
                        resource=r.name, connections_per_minute=r.connections_per_minute, processes=processes)
    return LocalBudget(static)


class ResourcePool:
    """This worker's way to open Voice Live sessions: the resources, their budgets, their back-offs."""

    def __init__(self, settings: VoiceLiveSettings, resources: list[Resource], budget: Budget) -> None:
        self.settings = settings
        self.resources = resources
        self.by_name = {r.name: r for r in resources}
        self.budget = budget
        self.keepalive = Keepalive()  # pings the sessions opened here (the application runs it)
        for r in resources:
            metrics.VOICELIVE_ACTIVE.set(0, r.name)
            metrics.VOICELIVE_BUDGET.set(budget.remaining(r.name), r.name)

    @classmethod
    def build(cls, settings: VoiceLiveSettings, *, endpoints: dict[str, str], budget: Budget,
              workers: int = 1, credential: AsyncTokenCredential | None = None) -> ResourcePool:
        """``endpoints``: each resource's URL (the built-in simulator's for a resource that names it)."""
        listed = settings.resource_list()
        share = shares(listed, workers, settings.replicas)
        resources = [Resource(r.name, r.region, r.connections_per_minute, share[r.name],
                              VoiceLiveConnector(settings, endpoint=endpoints[r.name], api_key=r.api_key,
                                                 credential=credential))
                     for r in listed]
        return cls(settings, resources, budget)

    @property
    def connector(self) -> VoiceLiveConnector:
        """The first resource's connector (what the start-up log describes)."""
        return self.resources[0].connector

    def candidates(self, profile: Profile) -> list[Resource]:
        """The resources a profile's call may use, best first."""
        names = profile.resources
        allowed = [r for r in self.resources if names is None or r.name in names]
        if self.settings.strategy == "spread":
            allowed.sort(key=lambda r: r.active / r.limit)  # (stable: ties keep the configured order)
        return allowed

    def _keep(self, resource: Resource, purpose: Purpose, shared: bool) -> int:
        if purpose != "renewal":
            return 0
        limit = resource.limit if shared else resource.share
        return min(self.settings.renewal_reserve, limit // 3)

    def has_budget(self, profile: Profile) -> bool:
        """Whether a new call of this profile would find a connection now (from the last known budgets: no I/O)."""
        return any(self.budget.remaining(r.name) > 0 for r in self.candidates(profile))

    async def connect(self, profile: Profile, purpose: Purpose = "call", *, wait_s: float = 0.0,
                      carrier: str = "phone", waiting: Callable[[], Awaitable[None]] | None = None,
                      ) -> VoiceLiveConnection:
        """Open a session for ``profile`` within the budget, waiting at most ``wait_s`` for budget to free
        up (``waiting`` is awaited once when the wait begins). Raises :class:`NoBudget` when none did, or
        the last :class:`VoiceLiveConnectError`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        shared = isinstance(self.budget, RedisBudget) and self.budget.shared
        while True:
            retry = math.inf
            failure: VoiceLiveConnectError | None = None
            for resource in self.candidates(profile):
                grant = await self.budget.take(resource.name, keep=self._keep(resource, purpose, shared))
                shared = grant.shared
                metrics.VOICELIVE_BUDGET.set(grant.remaining, resource.name)
                if not grant.granted:
                    metrics.VOICELIVE_REFUSALS.inc(resource.name, "backoff" if grant.backed_off else (
                        "reserve" if purpose == "renewal" else "budget"))
                    retry = min(retry, grant.retry_after_s)
                    continue
                started = time.perf_counter()
                try:
                    connection = await resource.connector.connect(profile)
                except VoiceLiveConnectError as exc:
                    metrics.VOICELIVE_CONNECTS.inc(resource.name, purpose, metrics.status_label(exc.status))
                    if exc.status == 429:  # out of budget at the service: passed over like an empty budget
                        metrics.VOICELIVE_FAILURES.inc(carrier, "429")  # (the caller sees no budget, not this)
                        seconds = min(MAX_BACKOFF_S, exc.retry_after_s or DEFAULT_BACKOFF_S)
                        await self.budget.backoff(resource.name, seconds)
                        log.warning("Voice Live resource is throttling new sessions: backing off",
                                    resource=resource.name, seconds=seconds)
                        retry = min(retry, seconds)
                    else:
                        failure = exc
                    continue  # the next resource, if any
                metrics.VOICELIVE_CONNECT.observe(time.perf_counter() - started, carrier)
                metrics.VOICELIVE_CONNECTS.inc(resource.name, purpose, "ok")
                resource.active += 1
                metrics.VOICELIVE_ACTIVE.set(resource.active, resource.name)
                connection.on_closed = resource._closed
                self.keepalive.add(connection)
                return connection
            if failure is not None:  # a resource had budget, and could not be opened: the caller's retry policy applies
                try:
                    raise failure
                finally:
                    del failure  # (kept in this frame, its traceback would hold it, and the call, in a cycle)
            left = deadline - loop.time()
            if retry > left:
                metrics.VOICELIVE_BUSY.inc(purpose)
                raise NoBudget(retry if math.isfinite(retry) else 60.0)
            if waiting is not None:
                await waiting()
                waiting = None
            await asyncio.sleep(retry)  # the moment a connect leaves the window (or a back-off ends)

    def refresh_gauges(self) -> None:
        """Each resource's remaining budget as this worker knows it now (for a scrape)."""
        for resource in self.resources:
            metrics.VOICELIVE_BUDGET.set(self.budget.remaining(resource.name), resource.name)

    async def close(self) -> None:
        for resource in self.resources:
            await resource.connector.close()
        await self.budget.close()

"""Pre-warmed sessions without sockets: what a session keeps once its call is over with it, and what
is counted (over real sockets: tests/sockets/test_prewarm.py)."""

from __future__ import annotations

import asyncio
import gc
import sys
import weakref
from typing import Any

import pytest

from gateway import metrics, prewarm
from gateway.audio import G711_ULAW
from gateway.config import Profile, parse_config
from gateway.prewarm import WarmSessions
from gateway.voicelive.client import VoiceLiveConnectError
from gateway.voicelive.pool import NoBudget

PROFILE: Profile = parse_config("""
voicelive: {endpoint: "wss://voicelive.invalid"}
profiles: {main: {model: gpt-realtime, greeting: {text: Hello.}}}
""").profiles["main"]


class Silent:
    """A Voice Live connection that takes what is sent and never answers."""

    urgent_waiting = 0  # (barge-ins received and not read: VoiceLiveConnection counts them as they arrive)

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed = False
        self._never: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def send_nowait(self, text: str) -> bool:
        self.sent.append(text)
        return True

    async def recv(self) -> str:
        return await self._never

    async def close(self) -> None:
        self.closed = True


async def test_a_discarded_session_is_not_kept_until_its_timeout() -> None:
    connections: list[Silent] = []

    async def connect(_profile: Profile, _carrier: str) -> Any:
        connections.append(Silent())
        return connections[-1]

    sessions = WarmSessions(connect)
    assert sessions.start("twilio", "CA1", "main", PROFILE, G711_ULAW, timeout_s=3600.0)
    warm = sessions.claim("twilio", "CA1")
    assert warm is not None and warm._opening is not None
    await warm._opening
    kept = weakref.ref(warm)
    sessions.discard(warm, "wasted")  # e.g. a placed call that was not answered
    del warm
    await asyncio.gather(*sessions._closing)
    gc.collect()
    assert connections[0].closed
    assert kept() is None  # not held (with what it received) for the hour its timer had left


async def test_a_session_that_found_no_budget_is_not_counted_as_a_failed_connect() -> None:
    """The call's own connect counts it when it too finds none (once per call); a call whose profile
    waits for budget may still get one. A connect Voice Live refused is a failed connect either way."""
    refusals: list[VoiceLiveConnectError] = [NoBudget(12.0), VoiceLiveConnectError("refused (HTTP 503)", 503)]

    async def connect(_profile: Profile, _carrier: str) -> Any:
        raise refusals.pop(0)

    sessions = WarmSessions(connect)
    before = (metrics.VOICELIVE_FAILURES.value("acs", "no_budget"), metrics.VOICELIVE_FAILURES.value("acs", "503"))
    for call_id in ("cc-1", "cc-2"):
        assert sessions.start("acs", call_id, "main", PROFILE, G711_ULAW, timeout_s=3600.0)
        warm = sessions.claim("acs", call_id)
        assert warm is not None and await warm.take(1.0) is None and warm.failed
        sessions.discard(warm, "failed")
    await asyncio.gather(*sessions._closing)
    after = (metrics.VOICELIVE_FAILURES.value("acs", "no_budget"), metrics.VOICELIVE_FAILURES.value("acs", "503"))
    assert (after[0] - before[0], after[1] - before[1]) == (0, 1)


class Scripted(Silent):
    """A Voice Live connection that answers with what it is given, then nothing more."""

    def __init__(self, answers: list[str]) -> None:
        super().__init__()
        self.answers = answers

    async def recv(self) -> str:
        return self.answers.pop(0) if self.answers else await super().recv()


async def test_a_message_the_call_would_refuse_does_not_spoil_the_session() -> None:
    """What the live call rejects and goes on from (JSON nested too deeply, an event its core cannot
    take) the shadow rejects the same way: the session is still handed over (its reading stopped)."""
    connection = Scripted(["[" * 100_000 + "]" * 100_000, '{"type": "session.created", "session": 7}'])

    async def connect(_profile: Profile, _carrier: str) -> Any:
        return connection

    sessions = WarmSessions(connect)
    assert sessions.start("twilio", "CA2", "main", PROFILE, G711_ULAW, timeout_s=3600.0)
    warm = sessions.claim("twilio", "CA2")
    assert warm is not None and warm._opening is not None
    await warm._opening
    reading = warm._reading
    assert reading is not None
    for _ in range(100):  # (each recv returns at once: the shadow reads both, or fails, within a few turns)
        if not connection.answers or reading.done():
            break
        await asyncio.sleep(0)
    assert await warm.take(1.0) is connection and warm.failed is None
    assert [sent for sent, _ in warm.exchange].count(False) == 2


class Chatty(Silent):
    """A Voice Live connection that never stops sending tiny messages."""

    async def recv(self) -> str:
        return "{}"


async def test_what_a_session_keeps_is_bounded_in_memory_not_in_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    """A message kept costs its object, its tuple and its slot besides its text: a stream of tiny
    messages must stop at about the same memory as a few big ones."""
    monkeypatch.setattr(prewarm, "MAX_WARM_BYTES", 64 * 1024)
    connection = Chatty()

    async def connect(_profile: Profile, _carrier: str) -> Any:
        return connection

    sessions = WarmSessions(connect)
    assert sessions.start("twilio", "CA3", "main", PROFILE, G711_ULAW, timeout_s=3600.0)
    warm = sessions.claim("twilio", "CA3")
    assert warm is not None and warm._opening is not None
    await warm._opening
    assert warm._reading is not None
    await warm._reading  # it stops reading at its bound
    kept = sum(sys.getsizeof(message) + sys.getsizeof((sent, message)) + 8 for sent, message in warm.exchange)
    assert kept <= 2 * 64 * 1024, kept
    await warm.close()

"""Pre-warmed sessions without sockets: what a session keeps once its call is over with it, and what
is counted (over real sockets: tests/sockets/test_prewarm.py)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

from gateway.audio import G711_ULAW
from gateway.config import Profile, parse_config
from gateway.prewarm import WarmSessions

PROFILE: Profile = parse_config("""
voicelive: {endpoint: "wss://voicelive.invalid"}
profiles: {main: {model: gpt-realtime, greeting: {text: Hello.}}}
""").profiles["main"]


class Silent:
    """A Voice Live connection that takes what is sent and never answers."""

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

"""The shell's side of a session renewal (make before break), with stand-ins for the pool and the
sockets: which session the call goes on with once the fresh one has opened."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from websockets.protocol import State

from gateway.bridge import CallBridge
from gateway.call import CallState


class Socket:
    def __init__(self) -> None:
        self.state = State.OPEN

    async def close(self) -> None:
        self.state = State.CLOSED


def bridge_renewing(state: CallState, fresh: Socket) -> Any:
    async def connect(_profile: Any, purpose: str, **_kw: Any) -> Socket:
        assert purpose == "renewal"
        return fresh

    bridge: Any = CallBridge.__new__(CallBridge)  # (only what a renewal uses)
    call = SimpleNamespace(ended=False, state=state, profile=None, is_quiet=True)
    call.quiet = lambda _now: call.is_quiet
    bridge.call = call
    bridge.ctx = SimpleNamespace(pool=SimpleNamespace(connect=connect))
    bridge._renewed = bridge._renewing = None
    bridge._quiet = asyncio.Event()
    bridge._now = lambda: 0.0
    return bridge


async def test_a_renewal_hands_over_to_the_fresh_session_and_closes_the_old_one() -> None:
    old, fresh = Socket(), Socket()
    bridge = bridge_renewing(CallState.READY, fresh)
    await bridge._renew(old)
    assert bridge._renewed is fresh and old.state is State.CLOSED and fresh.state is State.OPEN


async def test_a_renewal_that_opens_while_the_call_is_closing_keeps_the_old_session() -> None:
    # the goodbye (or apology) playing comes from the old session: closing it would cut it short
    old, fresh = Socket(), Socket()
    bridge = bridge_renewing(CallState.CLOSING, fresh)
    await bridge._renew(old)
    assert bridge._renewed is None and old.state is State.OPEN and fresh.state is State.CLOSED


async def test_a_renewal_switches_sessions_only_at_a_quiet_moment() -> None:
    old, fresh = Socket(), Socket()
    bridge = bridge_renewing(CallState.READY, fresh)
    bridge.call.is_quiet = False  # the bot is answering when the fresh session opens
    renewal = asyncio.create_task(bridge._renew(old))
    await asyncio.sleep(0)  # (the renewal runs up to its wait)
    await asyncio.sleep(0)
    assert bridge._renewed is fresh and old.state is State.OPEN and not renewal.done()
    bridge.call.is_quiet = True  # the answer has been heard: what the shell's flush then signals
    bridge._quiet.set()
    await asyncio.wait_for(renewal, 1)
    assert old.state is State.CLOSED and bridge._renewed is fresh

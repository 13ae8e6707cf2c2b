"""The states of a call and the transitions between them."""

from __future__ import annotations

from enum import Enum

__all__ = ["TRANSITIONS", "CallState"]


class CallState(Enum):
    """Where a call is. Every change goes through :meth:`Call._to`, which allows only the
    transitions of ``TRANSITIONS``."""

    CONNECTING = "connecting"  # waiting for the Voice Live session to be configured
    READY = "ready"
    RECONNECTING = "reconnecting"  # the session dropped or is being renewed: caller audio is held
    CLOSING = "closing"  # ending: a goodbye or an apology still plays, then the call hangs up
    ENDED = "ended"


TRANSITIONS: dict[CallState, frozenset[CallState]] = {
    CallState.CONNECTING: frozenset({CallState.READY, CallState.CLOSING, CallState.ENDED}),
    CallState.READY: frozenset({CallState.RECONNECTING, CallState.CLOSING, CallState.ENDED}),
    CallState.RECONNECTING: frozenset({CallState.READY, CallState.CLOSING, CallState.ENDED}),
    CallState.CLOSING: frozenset({CallState.ENDED}),
    CallState.ENDED: frozenset(),
}

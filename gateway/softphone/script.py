"""The caller's side of a test call, as a script of steps the softphone plays in order."""

from __future__ import annotations

from dataclasses import dataclass

DTMF_DIGITS = frozenset("0123456789*#ABCD")


@dataclass
class Say:
    """The caller speaks: ``audio`` is 8 kHz µ-law, sent in 20 ms frames.

    A phone whose carrier streams another format converts it once, before the call starts.
    """

    audio: bytes
    label: str = "speech"

    def __post_init__(self) -> None:
        if not isinstance(self.audio, (bytes, bytearray)):
            raise TypeError("Say.audio must be µ-law bytes")


@dataclass
class Silence:
    """The caller stays silent for ``ms`` milliseconds (rounded up to whole 20 ms frames)."""

    ms: int

    def __post_init__(self) -> None:
        if self.ms < 0:
            raise ValueError("Silence.ms must be >= 0")


@dataclass
class Dtmf:
    """The caller presses a key (0-9, *, #, A-D)."""

    digit: str

    def __post_init__(self) -> None:
        if self.digit not in DTMF_DIGITS:
            raise ValueError(f"Dtmf.digit must be one of 0-9 * # A-D, not {self.digit!r}")


@dataclass
class WaitForBot:
    """The caller listens (sending silence) until the bot has answered.

    ``heard_ms=None``: until the bot has spoken and its playback has then been idle for
    ``settle_ms``. An int: until at least ``heard_ms`` of bot audio has played since this step
    began. After ``timeout_s`` the call goes on and a ``wait_timeout`` event is recorded.
    ``optional``: the bot may not speak at all (a greeting that may not come); if it has not
    started within ``start_timeout_s``, the call goes on with a ``no_bot_audio`` event.
    """

    heard_ms: int | None = None
    settle_ms: int = 800
    timeout_s: float = 30.0
    optional: bool = False
    start_timeout_s: float = 3.0


@dataclass
class Hangup:
    """The caller hangs up: the phone sends what its carrier sends on hanging up (if anything) and
    closes the media socket."""


@dataclass
class Reconnect:
    """The media socket drops and a new one opens for the same call.

    Only on carriers whose media streams do this (the other phones refuse the step with
    ``TypeError``). The socket is closed normally and a new one is opened to the same URL with
    the same headers; it starts the way the first one did and the caller's audio continues on it;
    bot audio buffered but not yet played is lost.
    """


Step = Say | Silence | Dtmf | WaitForBot | Hangup | Reconnect

"""What a call asks for: actions for the phone leg (encoded by the carrier's codec), tools for the
shell to run, and requests to the shell itself. Plain frozen values; the core queues them and the
shell carries them out."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CLEAR", "RENEW_SESSION", "ClearPlayback", "Hangup", "PhoneAction", "PlayAudio", "RenewSession",
           "RunTool", "SendMark", "SessionExpires", "ShellAction"]



@dataclass(slots=True, frozen=True)
class PlayAudio:
    payload: str  # base64 audio in the leg's format, exactly as Voice Live produced it


@dataclass(slots=True, frozen=True)
class SendMark:
    name: str


@dataclass(slots=True, frozen=True)
class ClearPlayback:
    pass


@dataclass(slots=True, frozen=True)
class Hangup:
    reason: str
    transfer_to: str | None = None  # hand the caller over to this number instead of hanging up


PhoneAction = PlayAudio | SendMark | ClearPlayback | Hangup
CLEAR = ClearPlayback()


@dataclass(slots=True, frozen=True)
class RunTool:
    """The model called a tool: the shell runs it and hands the output back with ``tool_result``."""

    call_id: str
    name: str
    arguments: str  # JSON text, as the model wrote it
    builtin: str | None = None  # a built-in tool the phone leg carries out (send_dtmf)

@dataclass(slots=True, frozen=True)
class RenewSession:
    """A quiet moment before the session expires: the shell closes it and opens a fresh one."""


@dataclass(slots=True, frozen=True)
class SessionExpires:
    """Voice Live's session expires at ``at`` (unix time): the shell, which has a wall clock, tells
    the call how far off that is (``Call.schedule_renewal``)."""

    at: float


ShellAction = RenewSession | SessionExpires
RENEW_SESSION = RenewSession()

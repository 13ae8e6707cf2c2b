"""Caller audio on its way to Voice Live. While no session is ready, frames are held (at most
``limit`` bytes; the oldest go first). Once sent, a frame stays in the uncommitted tail until Voice
Live commits the caller's turn, so that a turn the caller was speaking when a session dropped
reaches the next session whole. Payloads stay base64 text; only their decoded sizes are counted."""

from __future__ import annotations

from collections import deque

from gateway.audio import b64_len

__all__ = ["CallerAudio"]


class CallerAudio:
    def __init__(self, limit: int) -> None:
        self.limit = limit  # bytes of decoded audio, for the held frames and for the uncommitted tail
        self._held: deque[str] = deque()
        self._held_bytes = 0
        self._uncommitted: deque[str] = deque()
        self._uncommitted_bytes = 0
        self.speech_since_commit = False  # the caller spoke since Voice Live's last commit

    def sent(self, payload: str, size: int) -> None:
        """A frame of ``size`` bytes went to Voice Live."""
        self._uncommitted.append(payload)
        self._uncommitted_bytes += size
        if self._uncommitted_bytes > self.limit:
            self._uncommitted_bytes -= b64_len(self._uncommitted.popleft())

    def hold(self, payload: str, size: int) -> int:
        """Keep a frame until a session is ready; returns how many of the oldest were dropped for it."""
        self._held.append(payload)
        self._held_bytes += size
        dropped = 0
        while self._held_bytes > self.limit:
            self._held_bytes -= b64_len(self._held.popleft())
            dropped += 1
        return dropped

    @property
    def held(self) -> int:
        return len(self._held)

    def take_held(self) -> list[str]:
        """The held frames, oldest first, to be sent now."""
        frames = list(self._held)
        self._held.clear()
        self._held_bytes = 0
        return frames

    def speech_started(self) -> None:
        self.speech_since_commit = True

    def committed(self) -> None:
        """Voice Live made the caller's audio so far a conversation item."""
        self.forget_uncommitted()
        self.speech_since_commit = False

    def forget_uncommitted(self) -> None:
        """Voice Live no longer has the uncommitted audio (cleared, or its session is gone)."""
        self._uncommitted.clear()
        self._uncommitted_bytes = 0

    def session_lost(self) -> int:
        """The session is gone. If the caller spoke since its last commit, what it had not committed
        is held again, ahead of anything held since, for the next session; returns how many frames."""
        resend = 0
        if self.speech_since_commit:
            resend = len(self._uncommitted)
            self._held.extendleft(reversed(self._uncommitted))
            self._held_bytes += self._uncommitted_bytes
        self.forget_uncommitted()
        return resend

"""Caller audio on its way to Voice Live. While no session is ready, frames are held (at most
``limit`` bytes; the oldest go first). Once sent, a frame stays in the uncommitted tail until Voice
Live commits the caller's turn, so that a turn the caller was speaking when a session dropped
reaches the next session whole.

Both are kept as raw audio in one growing buffer each, with the frames' sizes run-length coded,
not as one base64 string per frame: a caller frame costs its audio bytes and nothing else. While
the caller is silent (no speech since the last commit) the tail keeps only a short pre-roll, the
audio Voice Live may count into a turn it has not yet reported; once the caller speaks it keeps up
to ``resend_limit`` bytes, the newest (each bound is trimmed to when it is passed by an eighth)."""

from __future__ import annotations

from binascii import a2b_base64, b2a_base64

__all__ = ["CallerAudio", "FrameRing"]


class FrameRing:
    """Audio frames, oldest first, as one buffer of raw bytes and the frames' sizes in runs."""

    __slots__ = ("_data", "_runs", "frames", "size")

    def __init__(self) -> None:
        self._data = bytearray()
        self._runs: list[list[int]] = []  # [frame size, frames of that size], oldest first (a few)
        self.size = 0  # bytes
        self.frames = 0

    def push(self, audio: bytes) -> None:
        self._data += audio
        n = len(audio)
        try:
            last = self._runs[-1]
        except IndexError:
            last = None
        if last is not None and last[0] == n:
            last[1] += 1
        else:
            self._runs.append([n, 1])
        self.size += n
        self.frames += 1

    def trim(self, limit: int) -> int:
        """Drop the oldest frames until at most ``limit`` bytes are left; returns how many."""
        if self.size <= limit:
            return 0
        runs, cut, dropped = self._runs, 0, 0
        while self.size - cut > limit:
            run = runs[0]
            cut += run[0]
            dropped += 1
            run[1] -= 1
            if not run[1]:
                del runs[0]
        del self._data[:cut]
        self.size -= cut
        self.frames -= dropped
        return dropped

    def clear(self) -> None:
        self._data = bytearray()  # gives the memory back (``bytearray.clear`` may keep it)
        self._runs.clear()
        self.size = self.frames = 0

    def take(self) -> list[str]:
        """Every frame, oldest first, as base64 text; the ring is left empty."""
        view, out, at = memoryview(self._data), [], 0
        for n, count in self._runs:
            for _ in range(count):
                out.append(b2a_base64(view[at:at + n], newline=False).decode("ascii"))
                at += n
        view.release()
        self.clear()
        return out

    def extend_front(self, older: FrameRing) -> None:
        """Put ``older``'s frames ahead of this ring's (``older`` is left empty)."""
        older._data += self._data
        older._runs.extend(self._runs)
        self._data, self._runs = older._data, older._runs
        self.size += older.size
        self.frames += older.frames
        older._data, older._runs = bytearray(), []
        older.size = older.frames = 0


class CallerAudio:
    def __init__(self, limit: int, preroll: int | None = None, resend_limit: int | None = None) -> None:
        self.limit = limit  # bytes of audio held while no session is ready
        self.resend_limit = limit if resend_limit is None else resend_limit  # the uncommitted tail, speaking
        self.preroll = self.resend_limit if preroll is None else min(preroll, self.resend_limit)  # ... silent
        self._held = FrameRing()
        self._uncommitted = FrameRing()
        self._cap = self._trim_at = 0  # what the uncommitted tail keeps now, and when it is trimmed to it
        self._keep(self.preroll)
        self.speech_since_commit = False  # the caller spoke since Voice Live's last commit

    def sent(self, payload: str, size: int) -> None:
        """A frame (base64) of ``size`` bytes went to Voice Live."""
        tail = self._uncommitted
        tail.push(a2b_base64(payload))
        if tail.size > self._trim_at:  # trimmed an eighth past the cap at a time: not on every frame
            tail.trim(self._cap)

    def hold(self, payload: str, size: int) -> int:
        """Keep a frame until a session is ready; returns how many of the oldest were dropped for it."""
        held = self._held
        held.push(a2b_base64(payload))
        return held.trim(self.limit)

    @property
    def held(self) -> int:
        return self._held.frames

    @property
    def uncommitted_bytes(self) -> int:
        return self._uncommitted.size

    def take_held(self) -> list[str]:
        """The held frames (base64), oldest first, to be sent now."""
        return self._held.take()

    def _keep(self, cap: int) -> None:
        self._cap, self._trim_at = cap, cap + cap // 8

    def speech_started(self) -> None:
        self.speech_since_commit = True
        self._keep(self.resend_limit)

    def committed(self) -> None:
        """Voice Live made the caller's audio so far a conversation item."""
        self.forget_uncommitted()
        self.speech_since_commit = False
        self._keep(self.preroll)

    def forget_uncommitted(self) -> None:
        """Voice Live no longer has the uncommitted audio (cleared, or its session is gone)."""
        self._uncommitted.clear()

    def session_lost(self) -> int:
        """The session is gone. If the caller spoke since its last commit, what it had not committed
        is held again, ahead of anything held since, for the next session; returns how many frames."""
        resend = 0
        if self.speech_since_commit:
            resend = self._uncommitted.frames
            self._held.extend_front(self._uncommitted)
            self._held.trim(max(self.limit, self.resend_limit))
        self.forget_uncommitted()
        return resend

"""Caller audio on its way to Voice Live. While no session is ready, frames are held (at most
``limit`` bytes; the oldest go first). Once sent, a frame stays in the uncommitted tail until Voice
Live commits the caller's turn, so that a turn the caller was speaking when a session dropped
reaches the next session whole.

Both are kept as raw audio in one circular buffer each, with the frames' sizes run-length coded,
not as one base64 string per frame: a caller frame costs its audio bytes and nothing else. While
the caller is silent (no speech since the last commit) the tail keeps only a short pre-roll, the
audio Voice Live may count into a turn it has not yet reported; once the caller speaks it keeps up
to ``resend_limit`` bytes, the newest. A ring never holds more than its bound."""

from __future__ import annotations

from binascii import a2b_base64, b2a_base64

__all__ = ["CallerAudio", "FrameRing"]


class FrameRing:
    """Audio frames, oldest first, in one circular buffer of raw bytes with the frames' sizes in runs.

    The buffer never holds more than the ring's bound: a frame that does not fit pushes the oldest
    frames out (one at a time, as frames come), and the buffer grows in steps up to the bound only
    when more audio is kept, so that a ring costs the audio it keeps and little more (a growing
    ``bytearray`` keeps up to an eighth more, and trimming it from the front keeps its old size)."""

    __slots__ = ("_buf", "_runs", "_start", "frames", "size")

    def __init__(self) -> None:
        self._buf = bytearray()  # the data is size bytes from _start, wrapping at the end
        self._start = 0
        self._runs: list[list[int]] = []  # [frame size, frames of that size], oldest first (a few)
        self.size = 0  # bytes
        self.frames = 0

    def push(self, audio: bytes, limit: int) -> int:
        """Add a frame, keeping at most ``limit`` bytes (the oldest frames go first; a frame larger
        than ``limit`` is not kept at all); returns how many frames were dropped."""
        n = len(audio)
        size = self.size
        dropped = 0
        if size + n > limit:
            if n > limit:
                dropped = self.frames + 1
                self.clear()
                return dropped
            dropped = self.trim(limit - n)
            size = self.size
        buf = self._buf
        capacity = len(buf)
        if size + n > capacity:  # grow: a fifth more at a time (at least 100 ms of µ-law), up to the bound
            self._resize(min(limit, max(size + n, capacity + max(capacity // 5, 800))))
            buf = self._buf
            capacity = len(buf)
        at = self._start + size
        if at >= capacity:
            at -= capacity
        end = at + n
        if end <= capacity:
            buf[at:end] = audio
        else:  # the frame wraps around the end of the buffer
            first = capacity - at
            buf[at:] = audio[:first]
            buf[:n - first] = audio[first:]
        last = self._runs[-1] if self._runs else None
        if last is not None and last[0] == n:
            last[1] += 1
        else:
            self._runs.append([n, 1])
        self.size = size + n
        self.frames += 1
        return dropped

    def _resize(self, capacity: int) -> None:
        """The data, oldest first, in a buffer of exactly ``capacity`` bytes."""
        data = self._linear()
        buf = bytearray(capacity)
        buf[:len(data)] = data
        self._buf, self._start = buf, 0

    def _linear(self) -> bytes:
        start, size, buf = self._start, self.size, self._buf
        end = start + size
        if end <= len(buf):
            return bytes(buf[start:end])
        return bytes(buf[start:]) + bytes(buf[:end - len(buf)])

    def trim(self, limit: int) -> int:
        """Drop the oldest frames until at most ``limit`` bytes are left; returns how many."""
        size = self.size
        if size <= limit:
            return 0
        runs, cut, dropped = self._runs, 0, 0
        while size - cut > limit:
            run = runs[0]
            cut += run[0]
            dropped += 1
            run[1] -= 1
            if not run[1]:
                del runs[0]
        size -= cut
        self.size = size
        self.frames -= dropped
        if size:
            start = self._start + cut
            capacity = len(self._buf)
            self._start = start - capacity if start >= capacity else start
        else:
            self._start = 0
        return dropped

    def clear(self, capacity: int = 0) -> None:
        """Empty the ring, with a buffer of ``capacity`` bytes (none: the memory is given back), for
        audio sure to come (instead of growing anew in steps, a new buffer each)."""
        if len(self._buf) != capacity:
            self._buf = bytearray(capacity)
        self._start = 0
        self._runs.clear()
        self.size = self.frames = 0

    def take(self) -> list[str]:
        """Every frame, oldest first, as base64 text; the ring is left empty."""
        data, out, at = memoryview(self._linear()), [], 0
        for n, count in self._runs:
            for _ in range(count):
                out.append(b2a_base64(data[at:at + n], newline=False).decode("ascii"))
                at += n
        data.release()
        self.clear()
        return out

    def extend_front(self, older: FrameRing) -> None:
        """Put ``older``'s frames ahead of this ring's (``older`` is left empty)."""
        data = older._linear() + self._linear()
        runs = older._runs + self._runs
        size, frames = older.size + self.size, older.frames + self.frames
        older.clear()
        self._buf, self._start, self._runs = bytearray(data), 0, runs
        self.size, self.frames = size, frames


class CallerAudio:
    def __init__(self, limit: int, preroll: int | None = None, resend_limit: int | None = None) -> None:
        self.limit = limit  # bytes of audio held while no session is ready
        self.resend_limit = limit if resend_limit is None else resend_limit  # the uncommitted tail, speaking
        self.preroll = self.resend_limit if preroll is None else min(preroll, self.resend_limit)  # ... silent
        self._held = FrameRing()
        self._uncommitted = FrameRing()
        self._cap = self.preroll  # what the uncommitted tail keeps now
        self.speech_since_commit = False  # the caller spoke since Voice Live's last commit

    def sent(self, payload: str, size: int) -> None:
        """A frame (base64) of ``size`` bytes went to Voice Live."""
        self._uncommitted.push(a2b_base64(payload), self._cap)

    def hold(self, payload: str, size: int) -> int:
        """Keep a frame until a session is ready; returns how many of the oldest were dropped for it."""
        return self._held.push(a2b_base64(payload), self.limit)

    @property
    def held(self) -> int:
        return self._held.frames

    @property
    def uncommitted_bytes(self) -> int:
        return self._uncommitted.size

    def take_held(self) -> list[str]:
        """The held frames (base64), oldest first, to be sent now."""
        return self._held.take()

    def speech_started(self) -> None:
        self.speech_since_commit = True
        self._cap = self.resend_limit

    def committed(self) -> None:
        """Voice Live made the caller's audio so far a conversation item."""
        self._uncommitted.clear(self.preroll)  # (the caller's audio fills the pre-roll again within a second)
        self.speech_since_commit = False
        self._cap = self.preroll

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

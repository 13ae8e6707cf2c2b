"""The phone's playback queue (pure: no I/O, no clock)."""

from __future__ import annotations

from collections import deque


class Playout:
    """A carrier's outbound playback queue: audio plays in real time; marks sit between audio.

    Positions are byte counts on the played stream: a mark queued at position ``p`` is due
    once ``played >= p`` and the frame that reached it has finished playing.
    """

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.played = 0
        self.discarded = 0
        self._marks: deque[tuple[int, str]] = deque()

    @property
    def buffered(self) -> int:
        return len(self.buffer)

    @property
    def pending_marks(self) -> list[str]:
        return [name for _, name in self._marks]

    def append(self, audio: bytes) -> None:
        self.buffer += audio

    def add_mark(self, name: str) -> bool:
        """Queue a mark after the buffered audio; True if it is due at once (nothing queued)."""
        if not self.buffer and not self._marks:
            return True
        self._marks.append((self.played + len(self.buffer), name))
        return False

    def due_marks(self) -> list[str]:
        """Marks whose audio has all been played (call when the previous frame has finished)."""
        due: list[str] = []
        while self._marks and self._marks[0][0] <= self.played:
            due.append(self._marks.popleft()[1])
        return due

    def play(self, nbytes: int) -> bytes:
        """Take up to ``nbytes`` from the front of the queue."""
        chunk = bytes(self.buffer[:nbytes])
        del self.buffer[:nbytes]
        self.played += len(chunk)
        return chunk

    def clear(self) -> tuple[int, list[str]]:
        """Drop all unplayed audio; returns the bytes dropped and every pending mark, in order."""
        dropped = len(self.buffer)
        self.buffer.clear()
        self.discarded += dropped
        flushed = [name for _, name in self._marks]
        self._marks.clear()
        return dropped, flushed

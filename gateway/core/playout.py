"""Where the phone's playback stands: what the caller has heard of the bot's audio, the basis of
every truncation. Two kinds of phone leg: one that acknowledges playback (marks the phone echoes:
:class:`Playout`) and one that does not (:class:`PacedPlayout`, which paces the audio itself).
Pure: time is passed in."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from gateway.audio import AudioFormat
from gateway.core.actions import PhoneAction, PlayAudio, SendMark

__all__ = ["PacedPlayout", "Playout"]


@dataclass(slots=True)
class _Piece:
    seq: int
    item_id: str | None
    end: int  # byte offset in the item's audio where this piece ends
    size: int
    sent_at: float  # MarkPlayout: when it was sent; PacedPlayout: when it starts playing
    payload: str = ""


# how long past the end of a piece whose echo has not come back playback is taken to go on (the echo
# may be on its way back from the phone: over a carrier's network, tens of ms; more says it stalled)
ECHO_IN_FLIGHT_MS = 100
_NONE: list[_Piece] = []  # never added to: flushed pieces of legs without late acknowledgements


class Playout:
    """Where the phone's playback stands, from playback acknowledgements (marks).

    Every piece of bot audio is sent to the phone at once, followed by a mark. The phone echoes a
    mark once the audio queued before it has played; between two echoes, playback advances in
    real time, past the end of the piece the next mark closes only while that echo may still be on
    its way (``ECHO_IN_FLIGHT_MS``).

    At a flush, what was heard is taken from the last echo and the time since. Some phones echo
    every pending mark when they flush (the echoes then say nothing); others (``late_acks``) drop
    the marks they flush, so that an echo that comes after the flush, of a mark pending at it, was
    sent before the phone flushed: that audio was played, a more exact position (:meth:`late_ack`).
    """

    def __init__(self, fmt: AudioFormat, late_acks: bool = False) -> None:
        self.bytes_per_ms = fmt.bytes_per_ms
        # A list, not a deque: a few pieces at a time, and an empty deque costs 0.75 KiB a call
        self.pending: list[_Piece] = []
        self._next_seq = 1
        self.heard_item: str | None = None  # item and offset of the last acknowledged audio
        self.heard_offset = 0
        self._acked_at = float("-inf")
        self.late_acks = late_acks
        # pieces pending at the last flush (late_acks only; other legs share one that stays empty)
        self.flushed: list[_Piece] = [] if late_acks else _NONE
        self.unheard: list[str] = []  # items the last flush dropped before any of their audio played

    def add(self, item_id: str | None, end: int, size: int, now: float) -> str:
        seq = self._next_seq
        self._next_seq = seq + 1
        self.pending.append(_Piece(seq, item_id, end, size, now))
        return str(seq)

    def queue(self, payload: str, item_id: str | None, end: int, size: int, now: float,
              out: list[PhoneAction]) -> None:
        out.append(PlayAudio(payload))
        out.append(SendMark(self.add(item_id, end, size, now)))

    def release(self, now: float, out: list[PhoneAction]) -> None:
        return None  # everything was sent when it arrived

    def next_release(self) -> float | None:
        return None

    def playing(self, now: float) -> bool:
        return bool(self.pending)

    def playing_until(self) -> float | None:
        return None  # known from the phone's acknowledgements, not from a clock

    def ack(self, name: str, now: float) -> bool:
        """A mark came back. Returns False for names that are not pending (stale or unknown)."""
        if not self.pending or len(name) > 18 or not (name.isascii() and name.isdigit()):
            return False  # not one of ours (ours are ASCII sequence numbers): "²" or 4,300 digits included
        seq = int(name)
        pending = self.pending
        first = pending[0].seq
        if not first <= seq <= pending[-1].seq:
            return False
        count = seq - first + 1
        piece = pending[count - 1]
        due = self._ends(count)
        del pending[:count]
        self.heard_item, self.heard_offset = piece.item_id, piece.end
        # The echo comes back after the piece ended, by the way back from the phone and by however long
        # the gateway took to read it (in a burst, tens of ms): within ECHO_IN_FLIGHT_MS of when the
        # piece was due to end, playback is taken to have kept time (the clock goes on from that end, not
        # from the echo's arrival, which would hold it back by that delay at every echo). An echo later
        # than that says the phone's playback fell behind: the clock goes on from the echo.
        self._acked_at = due if due <= now <= due + ECHO_IN_FLIGHT_MS else now
        return True

    def _ends(self, count: int) -> float:
        """When the first ``count`` pending pieces end on the playback clock."""
        for index, piece, begins in self._schedule():
            if index == count - 1:
                return begins + piece.size / self.bytes_per_ms
        raise ValueError(f"{count} pieces are not pending")

    def _schedule(self) -> Iterator[tuple[int, _Piece, float]]:
        """Each pending piece (its index) and when it begins to play on the clock: from the last echo,
        or from when it was sent if later (a piece sent after the one before it had played: a gap)."""
        per_ms = self.bytes_per_ms
        ends = self._acked_at
        for index, piece in enumerate(self.pending):
            begins = max(ends, piece.sent_at)
            yield index, piece, begins
            ends = begins + piece.size / per_ms

    def position(self, now: float) -> tuple[str | None, int]:
        """(item id, bytes of that item heard so far) at ``now``."""
        return self._where(now)[1:]

    def _where(self, now: float) -> tuple[int, str | None, int]:
        """(index of the pending piece playing, its item, bytes of that item heard) at ``now``.

        Playback runs in real time from the last echo (or from when the first pending piece was sent,
        if later). Past the end of that piece, whose echo has not come back, it goes on into the next
        pieces for up to ``ECHO_IN_FLIGHT_MS``: an echo takes the way back from the phone, so one that is
        that late is most likely on its way. An echo later than that says the phone stalled (or lost
        it): what was heard is then taken to end with that piece."""
        if not self.pending:
            return 0, self.heard_item, self.heard_offset
        per_ms = self.bytes_per_ms
        last = 0, self.pending[0]
        for index, piece, begins in self._schedule():
            if index and now <= begins:
                break  # (the one before it played to its end)
            played = int((now - begins) * per_ms) if now > begins else 0
            if played <= piece.size:
                return index, piece.item_id, piece.end - piece.size + played
            if index == 0 and played - piece.size > ECHO_IN_FLIGHT_MS * per_ms:
                break  # its echo is too late to be on its way: the phone stalled
            last = index, piece
        index, piece = last
        return index, piece.item_id, piece.end

    def flush(self, now: float) -> tuple[str | None, int]:
        """The phone's buffer was cleared: pending marks become stale, and what was heard is final
        (unless a late acknowledgement says more, see :meth:`late_ack`)."""
        index, self.heard_item, self.heard_offset = self._where(now)
        self.unheard = _unheard(self.pending[index:], self.heard_item)
        if self.late_acks:
            self.flushed, self.pending = self.pending, []
        else:
            self.pending.clear()
        self._acked_at = now
        return self.heard_item, self.heard_offset

    def late_ack(self, name: str) -> dict[str | None, int] | None:
        """A mark pending at the last flush came back after it, on a phone that acknowledges only
        audio it played: how far each item was heard (bytes), up to that mark. None: not such a mark."""
        flushed = self.flushed
        if not flushed or len(name) > 18 or not (name.isascii() and name.isdigit()):
            return None
        seq = int(name)
        if not flushed[0].seq <= seq <= flushed[-1].seq:
            return None
        count = seq - flushed[0].seq + 1
        heard = {piece.item_id: piece.end for piece in flushed[:count]}
        del flushed[:count]
        return heard


class PacedPlayout:
    """Playback on a phone leg without acknowledgements: the gateway keeps the bot's audio
    and releases it in real time, a little ahead of the playback clock, so that a flush drops
    almost everything not yet heard and the playback position is known from the clock alone.
    """

    def __init__(self, fmt: AudioFormat, lead_ms: float = 60.0) -> None:
        self.bytes_per_ms = fmt.bytes_per_ms
        self.lead_ms = lead_ms
        self.waiting: deque[_Piece] = deque()  # not yet sent to the phone
        self.released: deque[_Piece] = deque()  # sent; sent_at is when each starts playing
        self._clock_end = float("-inf")  # when everything released will have played
        self.heard_item: str | None = None
        self.heard_offset = 0
        self.unheard: list[str] = []  # items the last flush dropped before any of their audio played

    def queue(self, payload: str, item_id: str | None, end: int, size: int, now: float,
              out: list[PhoneAction]) -> None:
        self.waiting.append(_Piece(0, item_id, end, size, 0.0, payload))
        self.release(now, out)

    def release(self, now: float, out: list[PhoneAction]) -> None:
        waiting = self.waiting
        while waiting:
            starts = self._clock_end if self._clock_end > now else now
            if starts - now > self.lead_ms:
                return
            piece = waiting.popleft()
            piece.sent_at = starts
            self._clock_end = starts + piece.size / self.bytes_per_ms
            self.released.append(piece)
            out.append(PlayAudio(piece.payload))

    def next_release(self) -> float | None:
        """When the next piece is due to be sent (None: nothing waits)."""
        return self._clock_end - self.lead_ms if self.waiting else None

    def playing(self, now: float) -> bool:
        return bool(self.waiting) or self._clock_end > now

    def playing_until(self) -> float | None:
        """When everything queued will have played (None: nothing is playing)."""
        if not self.waiting and not self.released:
            return None
        waiting_ms = sum(p.size for p in self.waiting) / self.bytes_per_ms
        return max(self._clock_end, 0.0) + waiting_ms

    def position(self, now: float) -> tuple[str | None, int]:
        released = self.released
        while released and released[0].sent_at + released[0].size / self.bytes_per_ms <= now:
            piece = released.popleft()
            self.heard_item, self.heard_offset = piece.item_id, piece.end
        if released and released[0].sent_at < now:
            head = released[0]
            played = min(int((now - head.sent_at) * self.bytes_per_ms), head.size)
            return head.item_id, head.end - head.size + played
        return self.heard_item, self.heard_offset

    def flush(self, now: float) -> tuple[str | None, int]:
        """Drop what the phone has not played: the caller heard up to the clock, no more."""
        self.heard_item, self.heard_offset = self.position(now)
        self.unheard = _unheard([*self.released, *self.waiting], self.heard_item)
        self.waiting.clear()
        self.released.clear()
        self._clock_end = now
        return self.heard_item, self.heard_offset


def _unheard(pieces: Iterable[_Piece], heard_item: str | None) -> list[str]:
    """The items of ``pieces`` (not played yet, in order) other than the one heard up to now."""
    return list(dict.fromkeys(p.item_id for p in pieces if p.item_id is not None and p.item_id != heard_item))

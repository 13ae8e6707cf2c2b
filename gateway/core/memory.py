"""The conversation as the caller lived it, kept to give a new Voice Live session the conversation
so far (after a drop or a renewal: no session resume exists, so the turns are given back as
items). Each turn keeps its text (the caller's transcript, the bot's transcript) and, for the bot,
how much of it the caller heard before talking over it. Every turn of the call (up to
``MAX_HISTORY``) is also kept in order for the call's record."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_HISTORY", "MAX_TURNS", "Conversation", "Turn", "heard_words"]

MAX_TURNS = 60  # the last turns kept (older ones are forgotten)
MAX_HISTORY = 2000  # the turns of a call kept for its record (a longer call's record keeps its first ones)


def heard_words(text: str, fraction: float, at_least: int = 0) -> str:
    """The share of a bot turn's words the caller heard before talking over it."""
    words = text.split()
    return " ".join(words[: max(at_least, int(len(words) * max(0.0, min(1.0, fraction))))])


MAX_EARLY_CUTS = 16  # cuts of bot turns not known yet, kept until they are


@dataclass(slots=True)
class Turn:
    """One turn of the conversation. A bot turn the caller talked over keeps how many bytes of its
    audio they heard and how many Voice Live sent for it in all (also after the barge-in, which the
    phone never played): its transcript covers all of that audio, so the share of its words the
    caller heard is the one of its audio."""

    item_id: str
    role: str  # "user" | "assistant"
    text: str | None = None
    at: float | None = None  # when the turn's item was created (the call's clock, ms)
    heard_bytes: int | None = None  # audio of an assistant turn the caller heard (None: all of it)
    audio_bytes: int = 0  # the turn's audio Voice Live sent, once it was cut (played or not)

    @property
    def heard(self) -> float:
        """The fraction of an assistant turn the caller heard (1.0: all of it)."""
        if self.heard_bytes is None:
            return 1.0
        if self.audio_bytes <= 0:
            return 0.0
        return min(1.0, self.heard_bytes / self.audio_bytes)


class Conversation:
    """The turns of a call, by Voice Live item id, oldest first."""

    def __init__(self, max_turns: int = MAX_TURNS) -> None:
        self.turns: list[Turn] = []  # the newest max_turns (a list: an empty deque costs 0.75 KiB a call)
        self._max_turns = max_turns
        self._by_item: dict[str, Turn] = {}
        self._restored = 0
        self.history: list[Turn] = []  # every turn, oldest first (up to MAX_HISTORY), for the record
        self._early_cuts: dict[str, tuple[int, int]] = {}  # cuts of turns not known yet

    def __len__(self) -> int:
        return len(self.turns)

    def __iter__(self) -> Iterator[Turn]:
        return iter(self.turns)

    def remember(self, item_id: Any, role: str, at: float | None = None) -> None:
        """A user or assistant item was created (items the gateway restored are known already)."""
        if isinstance(item_id, str) and item_id not in self._by_item:
            turn = Turn(item_id, role, at=at)
            cut = self._early_cuts.pop(item_id, None) if self._early_cuts else None
            if cut is not None:
                turn.heard_bytes, turn.audio_bytes = cut
            if len(self.history) < MAX_HISTORY:
                self.history.append(turn)
            self._by_item[item_id] = turn
            turns = self.turns
            if len(turns) >= self._max_turns:
                self._by_item.pop(turns.pop(0).item_id, None)
            turns.append(turn)

    def set_text(self, item_id: Any, text: Any) -> None:
        """A turn's words (a transcript), once known."""
        turn = self._by_item.get(item_id) if isinstance(item_id, str) else None
        if turn is not None and isinstance(text, str):
            turn.text = text

    def heard(self, item_id: str, heard_bytes: int, audio_bytes: int) -> None:
        """The caller talked over the bot's turn ``item_id``: they heard ``heard_bytes`` of the
        ``audio_bytes`` of its audio the gateway had (more may still come, see :meth:`more_audio`).
        A turn not known yet (its item is announced later) is cut once it is."""
        turn = self._by_item.get(item_id)
        if turn is not None:
            turn.heard_bytes, turn.audio_bytes = min(heard_bytes, audio_bytes), audio_bytes
        elif len(self._early_cuts) < MAX_EARLY_CUTS:
            self._early_cuts[item_id] = (min(heard_bytes, audio_bytes), audio_bytes)

    def heard_more(self, item_id: str, heard_bytes: int) -> None:
        """The phone said, after the cut, that the caller heard ``heard_bytes`` of the turn's audio
        (a more exact position than the one estimated at the barge-in: it only moves forward)."""
        turn = self._by_item.get(item_id)
        if turn is not None and turn.heard_bytes is not None and heard_bytes > turn.heard_bytes:
            turn.heard_bytes = min(heard_bytes, turn.audio_bytes)

    def more_audio(self, item_id: str, nbytes: int) -> None:
        """Audio of a cut turn that came after the cut (dropped: the caller never hears it, but the
        turn's transcript covers it)."""
        turn = self._by_item.get(item_id)
        if turn is not None and turn.heard_bytes is not None:
            turn.audio_bytes += nbytes

    def restore_items(self) -> list[dict[str, Any]]:
        """The conversation so far as ``conversation.item.create`` items for a new session. A bot
        turn the caller interrupted keeps the share of its words they heard, marked as cut."""
        items = []
        for turn in self.turns:
            text = turn.text
            if not text:
                continue
            if turn.role == "assistant" and turn.heard < 1.0:
                text = heard_words(text, turn.heard, at_least=1) + " [interrupted by the caller]"
            self._restored += 1
            item_id = f"gw_item_{self._restored}"
            self._by_item[item_id] = turn
            part = {"type": "input_text", "text": text} if turn.role == "user" else {"type": "text", "text": text}
            items.append({"id": item_id, "type": "message", "role": turn.role, "content": [part]})
        return items

"""The conversation as the caller lived it, kept to give a new Voice Live session the conversation
so far (after a drop or a renewal: no session resume exists, so the turns are given back as
items). Each turn keeps its text (the caller's transcript, the bot's transcript) and, for the bot,
how much of it the caller heard before talking over it. Every turn of the call (up to
``MAX_HISTORY``) is also kept in order for the call's record."""

from __future__ import annotations

from collections import deque
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


@dataclass(slots=True)
class Turn:
    """One turn of the conversation."""

    item_id: str
    role: str  # "user" | "assistant"
    text: str | None = None
    heard: float = 1.0  # fraction of an assistant turn the caller heard (barge-in)
    at: float | None = None  # when the turn's item was created (the call's clock, ms)


class Conversation:
    """The turns of a call, by Voice Live item id, oldest first."""

    def __init__(self, max_turns: int = MAX_TURNS) -> None:
        self.turns: deque[Turn] = deque(maxlen=max_turns)
        self._by_item: dict[str, Turn] = {}
        self._restored = 0
        self.history: list[Turn] = []  # every turn, oldest first (up to MAX_HISTORY), for the record

    def __len__(self) -> int:
        return len(self.turns)

    def __iter__(self) -> Iterator[Turn]:
        return iter(self.turns)

    def remember(self, item_id: Any, role: str, at: float | None = None) -> None:
        """A user or assistant item was created (items the gateway restored are known already)."""
        if isinstance(item_id, str) and item_id not in self._by_item:
            turn = Turn(item_id, role, at=at)
            if len(self.history) < MAX_HISTORY:
                self.history.append(turn)
            self._by_item[item_id] = turn
            if len(self.turns) == self.turns.maxlen:
                self._by_item.pop(self.turns[0].item_id, None)
            self.turns.append(turn)

    def set_text(self, item_id: Any, text: Any) -> None:
        """A turn's words (a transcript), once known."""
        turn = self._by_item.get(item_id) if isinstance(item_id, str) else None
        if turn is not None and isinstance(text, str):
            turn.text = text

    def heard(self, item_id: str, fraction: float) -> None:
        """The caller heard only ``fraction`` of the bot's turn ``item_id`` (they talked over it)."""
        turn = self._by_item.get(item_id)
        if turn is not None:
            turn.heard = fraction

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

"""Caller keys (DTMF): collected into one entry until the finish key, the longest entry, or a
pause; the model then hears the entry as one line of the conversation."""

from __future__ import annotations

from typing import Any

from gateway.config import Dtmf

__all__ = ["KEY_ITEM_PREFIX", "MAX_DTMF_DIGITS", "KeyEntry"]

MAX_DTMF_DIGITS = 32  # keys collected into one entry at most
KEY_ITEM_PREFIX = "gw_dtmf_"  # the id of the conversation item an entry becomes (the record knows it by it)


class KeyEntry:
    """The entry being typed."""

    def __init__(self, settings: Dtmf) -> None:
        self.settings = settings
        self.digits = ""
        self.deadline: float | None = None  # when a pause completes the entry
        self._items = 0

    def press(self, digit: str, now: float) -> str | None:
        """A key joins the entry. Returns the completed entry (finish key, or the longest entry),
        else None and the entry waits for more keys until :attr:`deadline`."""
        self.digits += digit
        if digit in self.settings.finish_on or len(self.digits) >= MAX_DTMF_DIGITS:
            return self.take()
        self.deadline = now + self.settings.digit_timeout_s * 1000
        return None

    def due(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def take(self) -> str:
        """The entry so far (possibly empty); a new one starts."""
        digits, self.digits, self.deadline = self.digits, "", None
        return digits

    def item(self, digits: str) -> dict[str, Any]:
        """The user item the model hears for an entry."""
        self._items += 1
        text = f"[The caller pressed these keys on the phone keypad: {' '.join(digits)}]"
        return {"id": f"{KEY_ITEM_PREFIX}{self._items}", "type": "message", "role": "user",
                "content": [{"type": "input_text", "text": text}]}

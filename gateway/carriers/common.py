"""What every carrier codec needs: JSON parsing that never raises on hostile input, keypad keys."""

from __future__ import annotations

import json
from typing import Any


def load_json(text: str | bytes) -> tuple[Any, str | None]:
    """(value, None), or (None, why it is not usable JSON): never raises on hostile input
    (bad UTF-8, huge numbers, deep nesting)."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc.msg} at position {exc.pos})"
    except RecursionError:
        return None, "not usable JSON (nested too deeply)"
    except (ValueError, TypeError) as exc:  # e.g. an integer of thousands of digits, bytes that are not UTF-8
        return None, f"not usable JSON ({str(exc)[:80]})"


def short(text: object, limit: int = 40) -> str:
    """A name from the wire, cut for a log line."""
    value = str(text)
    return value if len(value) <= limit else value[:limit] + "..."


# Keypad keys by the names Call Automation uses for them (it also sends plain keys)
TONE_NAMES = {"zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
              "seven": "7", "eight": "8", "nine": "9", "asterisk": "*", "star": "*", "pound": "#",
              "hash": "#", "a": "A", "b": "B", "c": "C", "d": "D"}
KEY_TONES = {key: name for name, key in TONE_NAMES.items() if name not in ("star", "hash")}


def keypad_key(value: object) -> str | None:
    """One keypad key (0-9, *, #, A-D) from what a carrier sent, or None if it is not one."""
    if not isinstance(value, str):
        return None
    if len(value) == 1:
        key = value.upper()
        return key if key in "0123456789*#ABCD" else None
    return TONE_NAMES.get(value.lower())

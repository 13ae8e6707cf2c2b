"""Carrier codecs: one module per carrier (Twilio, Azure Communication Services)."""

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

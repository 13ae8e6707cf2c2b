"""Phone numbers as the gateway compares them: E.164, written by people with punctuation."""

from __future__ import annotations

import re

E164 = re.compile(r"\+[0-9]{8,15}")
_NUMBER_PUNCTUATION = re.compile(r"[\s\-.()]")


def normalize_number(number: str) -> str:
    """Drop spaces, dashes, dots and parentheses: ``"+1 (415) 555-0100"`` -> ``"+14155550100"``."""
    return _NUMBER_PUNCTUATION.sub("", number)

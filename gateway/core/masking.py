"""Masking personal data in a call's record: phone numbers, and runs of digits said aloud (card
numbers, phone numbers, account numbers) in the transcript."""

from __future__ import annotations

import re

__all__ = ["DIGITS_MASK", "MIN_DIGITS", "mask_digit_runs", "mask_number"]

DIGITS_MASK = "[number]"  # what replaces a run of digits, whatever its length
MIN_DIGITS = 8  # the shortest run masked by default
KEEP_DIGITS = 4  # the digits of a phone number left visible

# digits with spaces, dashes (any), dots, commas or brackets between them, as a transcription writes
# numbers said aloud ("4111 1111 1111 1111", "4 1 1 1-1 1 1 1", "4, 1, 1, 1", "(415) 555-0100")
_RUN = re.compile(r"\+?\(?\d(?:[\s\-\u2010-\u2015\u2212.,()]*\d)*\)?")
_DIGIT = re.compile(r"\d")
_NUMBER_LIKE = re.compile(r"\+?[\d\s\-.()]*")


def mask_digit_runs(text: str, min_digits: int = MIN_DIGITS) -> str:
    """``text`` with every run of at least ``min_digits`` digits replaced by :data:`DIGITS_MASK`."""

    def replace(match: re.Match[str]) -> str:
        run = match.group(0)
        if len(_DIGIT.findall(run)) < min_digits:
            return run
        # a bracket of the text around the number (not one of its own) stays
        opened, closed = run.count("("), run.count(")")
        head = "(" if run.startswith("(") and opened > closed else ""
        tail = ")" if run.endswith(")") and closed > opened else ""
        return head + DIGITS_MASK + tail

    return _RUN.sub(replace, text)


def mask_number(number: str | None, keep: int = KEEP_DIGITS) -> str | None:
    """A phone number with all but its last ``keep`` digits hidden (``+1415***0100`` becomes
    ``+*******0100``). Anything that is not a number (a SIP address, a name) is hidden whole."""
    if number is None:
        return None
    number = number.removeprefix("tel:")
    digits = _DIGIT.findall(number)
    if not digits or not _NUMBER_LIKE.fullmatch(number):
        return "***"
    shown = digits[-keep:] if keep > 0 and len(digits) > keep else []
    return ("+" if number.startswith("+") else "") + "*" * (len(digits) - len(shown)) + "".join(shown)

"""Masking personal data in a call's record: phone numbers, and runs of digits said aloud (card
numbers, phone numbers, account numbers) in the transcript.

A transcription writes a number said aloud as digits ("4111 1111"), as words ("four one one one",
"oh two zero seven", "double five") or as a mix of both ("4 1 one one"). :func:`mask_digit_runs`
counts the digits of such a run and masks it whole once it has ``min_digits`` of them. How words
count (English only; numbers said in other languages are not recognised as digits):

* ``zero``, ``oh``, ``o`` and ``one`` to ``nine``: one digit each;
* ``double X`` and ``triple X`` (X a digit or one of those words): two and three digits;
* ``ten`` to ``nineteen``: two digits; ``twenty`` to ``ninety``: two digits, also with the unit
  word they combine with (``forty two``, ``forty-two``: two digits in all);
* ``hundred``, ``thousand`` and the like are not counted: they end a run, as any other word does.

Between the digits and words of a run: spaces, commas, dots, dashes and brackets, never a word
("one and two" is two runs). An ordinary sentence says far fewer digits in a row than a card or
phone number ("one of the two options": one and one), so with the default of 8 it is left alone.
"""

from __future__ import annotations

import re

__all__ = ["DIGITS_MASK", "MIN_DIGITS", "digit_count", "mask_digit_runs", "mask_number"]

DIGITS_MASK = "[number]"  # what replaces a run of digits, whatever its length
MIN_DIGITS = 8  # the shortest run masked by default
KEEP_DIGITS = 4  # the digits of a phone number left visible

_UNITS = "one|two|three|four|five|six|seven|eight|nine"
_DIGIT_WORDS = f"zero|oh|o|{_UNITS}"
_TEENS = "ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen"
_TENS = "twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety"
# a whole word ("someone", "o'clock" and "o\u2019clock" are not digits)
_BEFORE, _AFTER = "(?<![\\w'\u2019])", "(?![\\w'\u2019])"


def _token(named: bool) -> str:
    """One digit, or one number word (with what it combines with), as a regular expression."""
    def group(name: str) -> str:
        return f"?P<{name}>" if named else "?:"
    return (f"({group('digit')}\\d)"
            f"|{_BEFORE}({group('many')}double|triple)[\\s\\-]+(?:\\d|(?:{_DIGIT_WORDS}){_AFTER})"
            f"|{_BEFORE}({group('tens')}{_TENS})(?:[\\s\\-]+(?:{_UNITS}))?{_AFTER}"
            f"|{_BEFORE}({group('teen')}{_TEENS}){_AFTER}"
            f"|{_BEFORE}({group('unit')}{_DIGIT_WORDS}){_AFTER}")


# what may stand between the digits of a run, as a transcription writes numbers said aloud
# ("4111 1111 1111 1111", "4 1 1 1-1 1 1 1", "4, 1, 1, 1", "(415) 555-0100", "four one, one one")
_SEPARATOR = r"[\s\-\u2010-\u2015\u2212.,()]*"
_RUN = re.compile(rf"\+?\(?(?:{_token(False)})(?:{_SEPARATOR}(?:{_token(False)}))*\)?", re.IGNORECASE)
_TOKEN = re.compile(_token(True), re.IGNORECASE)
_DIGIT = re.compile(r"\d")
_NUMBER_LIKE = re.compile(r"\+?[\d\s\-.()]*")


def digit_count(run: str) -> int:
    """How many digits ``run`` says, written as digits or as English words (see the module)."""
    count = 0
    for token in _TOKEN.finditer(run):
        kind = token.lastgroup
        if kind == "digit" or kind == "unit":
            count += 1
        elif kind == "many":
            count += 2 if token.group("many").lower() == "double" else 3
        else:  # a teen, or tens with or without their unit
            count += 2
    return count


def mask_digit_runs(text: str, min_digits: int = MIN_DIGITS) -> str:
    """``text`` with every run of at least ``min_digits`` digits, written as digits or said as
    words, replaced by :data:`DIGITS_MASK`; the text around it stays as it was."""

    def replace(match: re.Match[str]) -> str:
        run = match.group(0)
        if digit_count(run) < min_digits:
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

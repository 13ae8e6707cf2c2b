"""Token usage of a call, summed from the ``usage`` of every ``response.done`` (Voice Live bills a
call by these: input and output tokens, each split into text, audio and cached tokens)."""

from __future__ import annotations

from typing import Any

__all__ = ["USAGE_KINDS", "Usage"]

# (kind, path in the usage object): the kinds of tokens a record and the metrics count
USAGE_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("input_text", ("input_token_details", "text_tokens")),
    ("input_audio", ("input_token_details", "audio_tokens")),
    ("input_image", ("input_token_details", "image_tokens")),
    ("input_cached", ("input_token_details", "cached_tokens")),
    ("input_cached_text", ("input_token_details", "cached_tokens_details", "text_tokens")),
    ("input_cached_audio", ("input_token_details", "cached_tokens_details", "audio_tokens")),
    ("output_text", ("output_token_details", "text_tokens")),
    ("output_audio", ("output_token_details", "audio_tokens")),
    ("output_reasoning", ("output_token_details", "reasoning_tokens")),
)
_TOTALS = ("input_tokens", "output_tokens", "total_tokens")


MAX_COUNT = 2 ** 40  # more tokens than any response has: not a count (a float metric could not take it)


def _count(value: Any) -> int:
    """A token count as Voice Live gave it; anything else (a string, a negative, a bool, a number
    beyond :data:`MAX_COUNT`) counts 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_COUNT else 0


def _at(usage: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = usage
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


class Usage:
    """The tokens of every response of a call, added up."""

    __slots__ = ("counts", "responses")

    def __init__(self) -> None:
        self.responses = 0  # responses that reported their usage
        self.counts: dict[str, int] = dict.fromkeys((*_TOTALS, *(kind for kind, _ in USAGE_KINDS)), 0)

    def add(self, usage: Any) -> None:
        """One ``response.done``'s ``usage`` (not an object: nothing is counted)."""
        if not isinstance(usage, dict):
            return
        self.responses += 1
        counts = self.counts
        for key in _TOTALS:
            counts[key] += _count(usage.get(key))
        for kind, path in USAGE_KINDS:
            counts[kind] += _count(_at(usage, path))

    def as_dict(self) -> dict[str, Any]:
        """The sums as a record gives them: totals, then the details by kind."""
        c = self.counts
        return {
            "responses": self.responses,
            "input_tokens": c["input_tokens"],
            "output_tokens": c["output_tokens"],
            "total_tokens": c["total_tokens"],
            "input_token_details": {
                "text_tokens": c["input_text"], "audio_tokens": c["input_audio"], "image_tokens": c["input_image"],
                "cached_tokens": c["input_cached"],
                "cached_tokens_details": {"text_tokens": c["input_cached_text"],
                                          "audio_tokens": c["input_cached_audio"]},
            },
            "output_token_details": {"text_tokens": c["output_text"], "audio_tokens": c["output_audio"],
                                     "reasoning_tokens": c["output_reasoning"]},
        }

    def by_kind(self) -> dict[str, int]:
        """The counts by kind (the metrics' ``kind`` label), without the totals."""
        return {kind: self.counts[kind] for kind, _ in USAGE_KINDS}

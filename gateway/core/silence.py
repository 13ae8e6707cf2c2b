"""The caller's silence: once the bot has finished speaking (as the phone played it) and the
caller says nothing for ``silence.reprompt_after_s``, the bot asks again; after
``max_reprompts`` unanswered re-prompts the call ends with a goodbye."""

from __future__ import annotations

from gateway.config import SilenceHandling
from gateway.core.playout import PacedPlayout, Playout

__all__ = ["SilenceWatch"]


class SilenceWatch:
    """Counts the caller's silence from the later of: the caller's last sign of life, the end of
    the bot's audio on the phone."""

    def __init__(self, settings: SilenceHandling, started_at: float) -> None:
        self.settings = settings
        self.after_ms = settings.reprompt_after_s * 1000 if settings.reprompt_after_s else None
        self.quiet_since = started_at
        self.reprompts = 0  # unanswered re-prompts in a row

    def heard_caller(self, now: float) -> None:
        """The caller spoke or pressed a key: a fresh count, no re-prompt owed."""
        self.quiet_since = now
        self.reprompts = 0

    def quiet_from(self, now: float) -> None:
        """Silence counts from no earlier than ``now`` (the bot's last word was heard, a new socket)."""
        self.quiet_since = max(self.quiet_since, now)

    def due(self, playout: Playout | PacedPlayout) -> float | None:
        """When the silence calls for a re-prompt, from what the phone still plays (None: not now).
        The call decides whether it is counting at all (the caller or the bot busy, the call ending)."""
        if self.after_ms is None:
            return None
        start = self.quiet_since
        until = playout.playing_until()
        if until is None and playout.playing(start):
            return None  # acknowledged playback: counted from the last acknowledgement
        if until is not None and until > start:
            start = until  # counted from the end of what the bot said
        return start + self.after_ms

    def reprompt(self, now: float) -> bool:
        """The silence lasted: True when the bot should ask again, False when it has asked enough."""
        self.reprompts += 1
        self.quiet_since = now
        return self.reprompts <= self.settings.max_reprompts

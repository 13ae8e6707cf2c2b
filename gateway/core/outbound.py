"""How a call the gateway placed opens: a person hears the greeting only once they have spoken (or
after a short pause), an answering machine hears the voicemail message after its beep, or nothing.

The answering-machine result comes from the carrier (asynchronous detection) while the call is
already streaming; until it says "human" (or its wait runs out) the bot stays silent. Pure: every
input carries the time; :meth:`Opening.decide` says what to do, once.

Instruction variables (``{name}`` placeholders in a profile's instructions) are filled per call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["ANSWERED_BY", "GREET", "HANG_UP", "MACHINE", "UNKNOWN", "VOICEMAIL", "Opening", "OutboundPlan",
           "VariableError", "answering_machine_result", "fill_variables", "placeholders"]

# What an asynchronous answering-machine detection reports, in the gateway's own words: every carrier
# maps its values onto these, and anything else becomes "unknown" (never a carrier's raw word)
ANSWERED_BY = ("human", "machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax",
               "unknown")
UNKNOWN = "unknown"
MACHINE = frozenset({"machine_end_beep", "machine_end_silence", "machine_end_other"})  # its greeting ended
GREET, VOICEMAIL, HANG_UP = "greet", "voicemail", "hang_up"

MAX_VARIABLES = 32
MAX_VARIABLE_CHARS = 500
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]{0,63})\}")


@dataclass(frozen=True, slots=True)
class OutboundPlan:
    """What the gateway knows of a call it placed, given to the call when its media starts."""

    greeting_after_ms: float = 1500.0  # a silent callee gets the greeting after this pause
    detect_machine: bool = True  # the carrier reports an answering-machine result
    machine_wait_ms: float = 6000.0  # no result by then: treated as a person
    voicemail_message: str | None = None  # said verbatim to a machine; None: hang up at once
    answered_by: str | None = None  # the result, when it came before the media did
    variables: tuple[tuple[str, str], ...] = ()  # instruction variables

    def recorded(self) -> dict[str, object]:
        """The plan as a call's recording keeps it: without the variables (the recorded profile has
        its instructions filled already)."""
        return {"greeting_after_ms": self.greeting_after_ms, "detect_machine": self.detect_machine,
                "machine_wait_ms": self.machine_wait_ms, "voicemail_message": self.voicemail_message,
                "answered_by": self.answered_by}

    @classmethod
    def from_recorded(cls, fields: object) -> OutboundPlan | None:
        """The plan of a recorded call (None: it was not placed, or the recording is not usable)."""
        if not isinstance(fields, dict):
            return None
        try:
            return cls(greeting_after_ms=float(fields["greeting_after_ms"]),
                       detect_machine=fields["detect_machine"] is True,
                       machine_wait_ms=float(fields["machine_wait_ms"]),
                       voicemail_message=fields.get("voicemail_message") if isinstance(
                           fields.get("voicemail_message"), str) else None,
                       answered_by=fields.get("answered_by") if isinstance(fields.get("answered_by"), str) else None)
        except (KeyError, TypeError, ValueError):
            return None


class Opening:
    """The opening of one outbound call: greet, leave the voicemail message, or hang up."""

    __slots__ = ("answered_by", "decided", "heard", "plan", "ready_at", "speaking")

    def __init__(self, plan: OutboundPlan) -> None:
        self.plan = plan
        self.ready_at: float | None = None  # the session is ready (the bot could speak)
        self.heard = False  # the callee has said something (a turn of theirs ended)
        self.speaking = False  # the callee is speaking now: a person is not talked over
        self.answered_by = plan.answered_by
        self.decided: str | None = None

    def ready(self, now: float) -> str | None:
        if self.ready_at is None:
            self.ready_at = now
        return self.decide(now)

    def callee_started(self, now: float) -> str | None:
        self.speaking = True
        return self.decide(now)

    def callee_spoke(self, now: float) -> str | None:
        """The callee's turn ended (their "hello?" was heard)."""
        self.heard = True
        self.speaking = False
        return self.decide(now)

    def answered(self, result: str, now: float) -> str | None:
        """The answering-machine result (unknown words count as "unknown")."""
        self.answered_by = result if result in ANSWERED_BY else "unknown"
        return self.decide(now)

    def _waiting_for_machine(self, now: float) -> bool:
        plan = self.plan
        if not plan.detect_machine or self.ready_at is None:
            return False
        return self.answered_by in (None, "machine_start") and now < self.ready_at + plan.machine_wait_ms

    def decide(self, now: float) -> str | None:
        """What the call does now (once): None while it waits."""
        if self.decided is not None or self.ready_at is None:
            return None
        result = self.answered_by
        if result in MACHINE or (result == "machine_start" and not self._waiting_for_machine(now)):
            return self._take(VOICEMAIL if self.plan.voicemail_message else HANG_UP)
        if result == "fax":
            return self._take(HANG_UP)
        if self._waiting_for_machine(now):
            return None
        if self.heard or (not self.speaking and now >= self.ready_at + self.plan.greeting_after_ms):
            return self._take(GREET)
        return None

    def due(self) -> float | None:
        """When :meth:`decide` must be asked again even if nothing happens (None: it need not)."""
        if self.decided is not None or self.ready_at is None:
            return None
        plan = self.plan
        if plan.detect_machine and self.answered_by in (None, "machine_start"):
            wait_until = self.ready_at + plan.machine_wait_ms
            return wait_until if self.heard else max(wait_until, self.ready_at + plan.greeting_after_ms)
        return None if self.heard or self.speaking else self.ready_at + plan.greeting_after_ms

    def _take(self, decision: str) -> str:
        self.decided = decision
        return decision


def answering_machine_result(value: object) -> str | None:
    """``value`` when it is one of the gateway's results (:data:`ANSWERED_BY`), else None."""
    return value if isinstance(value, str) and value in ANSWERED_BY else None


class VariableError(ValueError):
    """Instruction variables that do not fit the instructions; the text says what is wrong."""


def placeholders(text: str | None) -> list[str]:
    """The ``{name}`` placeholders of a text, in order, each once."""
    return list(dict.fromkeys(_PLACEHOLDER.findall(text or "")))


def fill_variables(text: str | None, variables: Mapping[str, object]) -> str | None:
    """``text`` with its ``{name}`` placeholders filled from ``variables``. Every placeholder needs a
    value and every value a placeholder; values are strings of at most ``MAX_VARIABLE_CHARS``."""
    names = placeholders(text)
    if len(variables) > MAX_VARIABLES:
        raise VariableError(f"at most {MAX_VARIABLES} variables (got {len(variables)})")
    for key, value in variables.items():
        if not isinstance(value, str):
            raise VariableError(f"variables.{key}: expected a string")
        if len(value) > MAX_VARIABLE_CHARS:
            raise VariableError(f"variables.{key}: at most {MAX_VARIABLE_CHARS} characters (got {len(value)})")
    unknown = [key for key in variables if key not in names]
    if unknown:
        known = ", ".join(names) if names else "none"
        raise VariableError(f"unknown variable {unknown[0]!r}: the profile's instructions have {known}")
    missing = [name for name in names if name not in variables]
    if missing:
        raise VariableError(f"missing variable {missing[0]!r}: the profile's instructions need "
                            f"{', '.join(names)}")
    if text is None or not names:
        return text
    return _PLACEHOLDER.sub(lambda m: str(variables[m.group(1)]), text)

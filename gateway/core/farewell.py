"""How a call ends with words: the gateway's own goodbye (a limit, a key, the caller's silence) is
spoken verbatim; the model's (it called ``hang_up`` or ``transfer_call``) is what it said in the
same response, or a short farewell it is asked for. Either way the call ends once the farewell has
been heard, or after ``GOODBYE_TIMEOUT_MS`` if it never comes."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GOODBYE_TIMEOUT_MS", "TRANSFER_WORDS", "Farewell"]

GOODBYE_TIMEOUT_MS = 20_000.0  # a goodbye that has not finished by then: hang up anyway
TRANSFER_WORDS = "Please hold on, I am transferring your call now."


@dataclass(slots=True)
class Farewell:
    """A call that is saying goodbye."""

    reason: str  # why the call ends (its end reason)
    deadline: float  # when the call ends even if the farewell never finished
    response: str | None = None  # the response whose end, once heard, ends the call
    after: str | None = None  # a response to let finish before asking the model for a farewell
    tool_call: str | None = None  # the tool call that ended the call (its output is owed to the model)
    instructions: str = ""  # what the model is asked to say, when it words the farewell itself

    @staticmethod
    def model_words(transfer: bool) -> str:
        return ("Tell the caller, in one short sentence, that you are transferring them now."
                if transfer else "Say a short goodbye to the caller.")

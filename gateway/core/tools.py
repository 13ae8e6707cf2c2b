"""The model's function calls: which tool a call names, which are running, the outputs not yet
handed back, and the checks of the built-in tools' arguments (transfer destinations, keys)."""

from __future__ import annotations

import json
from typing import Any

from gateway.config import DTMF_KEYS, E164, Tool, normalize_number
from gateway.core.keys import MAX_DTMF_DIGITS

__all__ = ["ToolCalls", "dtmf_digits", "json_object", "tool_failed", "transfer_target"]

MAX_NAMES = 32  # function names remembered from their items (a call's recent function calls)


def json_object(text: str) -> dict[str, Any] | None:
    """The arguments the model wrote, as a JSON object (None: not one)."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def tool_failed(output: str) -> bool:
    """A tool's output is the error the gateway gives the model (``{"error": ...}``) when it failed."""
    if not output.startswith("{"):
        return False
    value = json_object(output)
    return value is not None and set(value) == {"error"}


def transfer_target(tool: Tool, args: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """The number a transfer_call tool call asks for, or why it cannot be used."""
    transfer = tool.transfer
    if transfer is None or args is None:
        return None, "the arguments were not a JSON object"
    name, number = args.get("destination"), args.get("number")
    if isinstance(name, str) and name in transfer.targets:
        return transfer.targets[name], None
    if isinstance(number, str) and transfer.allowed_prefixes:
        cleaned = normalize_number(number)
        if any(cleaned.startswith(p) for p in transfer.allowed_prefixes) and E164.fullmatch(cleaned):
            return cleaned, None
        return None, "that number is not one the caller may be transferred to"
    choices = ", ".join(transfer.targets) or "none"
    return None, f"unknown destination; the destinations are: {choices}"


def dtmf_digits(args: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """The keys a send_dtmf tool call asks to press, or why they cannot be pressed."""
    digits = args.get("digits") if args is not None else None
    if not isinstance(digits, str) or not digits or len(digits) > MAX_DTMF_DIGITS or not all(
            ch in DTMF_KEYS for ch in digits):
        return None, f"digits must be 1 to {MAX_DTMF_DIGITS} keys among 0-9, *, #, A-D"
    return digits, None


class ToolCalls:
    """The function calls of one call."""

    def __init__(self, tools: list[Tool]) -> None:
        self.tools = {tool.name: tool for tool in tools}
        self.running: dict[str, str] = {}  # call id -> tool name
        self.outputs: list[tuple[str, str]] = []  # (call id, output) not yet handed to the model
        self._seen: set[str] = set()
        self._names: dict[str, str] = {}  # function call item id / call id -> function name

    def note_item(self, item: dict[str, Any]) -> None:
        """A function call item names its function: ``response.function_call_arguments.done`` need
        not (the 2026-07-15 event table has no ``name``)."""
        name = item.get("name")
        if isinstance(name, str) and name:
            for key in (item.get("id"), item.get("call_id")):
                if isinstance(key, str):
                    self._names[key] = name
            while len(self._names) > MAX_NAMES:
                self._names.pop(next(iter(self._names)))

    def first_call(self, call_id: str) -> bool:
        """True the first time a call id is seen (a ``.done`` event repeated is not a new call)."""
        if call_id in self._seen:
            return False
        self._seen.add(call_id)
        return True

    def name_of(self, event: dict[str, Any]) -> Any:
        """The function a ``.done`` event calls: its ``name``, else the name its item gave."""
        name = event.get("name")
        if isinstance(name, str) and name:
            return name
        item_id, call_id = event.get("item_id"), event.get("call_id")
        return self._names.get(item_id if isinstance(item_id, str) else "") or self._names.get(
            call_id if isinstance(call_id, str) else "")

    def failed(self, call_id: str, error: str) -> None:
        """A call that cannot run: the model is told why."""
        self.outputs.append((call_id, json.dumps({"error": error})))

    def finished(self, call_id: str, output: str) -> str | None:
        """A running tool answered: its name (None: not one of ours, or answered already)."""
        name = self.running.pop(call_id, None)
        if name is not None:
            self.outputs.append((call_id, output))
        return name

    @property
    def busy(self) -> bool:
        """Tools are running, or outputs wait to be handed back."""
        return bool(self.running or self.outputs)

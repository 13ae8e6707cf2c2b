"""What a change of config.yaml does: ``gateway check-config --diff OLD NEW``.

Two validated configurations are compared setting by setting, so that a reviewer sees what a new
file changes before it ships: profiles, tools, routes and Voice Live resources added, removed or
changed, and every setting whose value differs, field by field. The validated models are compared
(not the files), so environment references are compared by the values they read, and a setting
that is written out with its default value is no change.

Secrets are never shown: a secret setting (any ``SecretStr``), and any value that holds a secret
the log scrubber hides (``GatewayConfig.secrets()``: tool headers read from the environment, keys
inside URLs...), is reported as ``set``, ``unset`` or ``changed`` only. Query strings of URLs are
not shown either (they may carry a credential).

Settings a running gateway reads only when it starts (:data:`RESTART_ONLY`, and the keys carriers
list in their ``restart_keys``) end their lines with ``(needs a restart)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, SecretStr

from gateway.carriers.settings import carrier_settings
from gateway.config.schema import GatewayConfig, OpenAIVoice

# Key paths of the settings a running gateway reads only when it starts, from its own sections: the
# Voice Live section (the resources, their connectors and connection budgets are built once), the
# recording writer, the delivery of post-call records and its spool, the key that signs call tokens
# and the limits of the outbound-call API. A change at one of these paths, or below it
# (``voicelive.resources[east].api_key``), takes effect after a restart only; so does a change of a
# key a carrier's section lists in its ``restart_keys`` (see restart_paths). A configuration reload
# keeps the running values of the same paths. The listen address and the number of workers are
# command-line options, not settings of the file.
# What the gateway builds from its own sections when it starts: a reload keeps their running values
# (gateway.reload) and says they need a restart.
RESTART_ONLY: tuple[str, ...] = (
    "voicelive",  # the resources, their connectors and connection budgets, the built-in simulator
    "recording",  # the recording writer
    "records",  # the post-call record delivery and its spool
    "gateway.signing_key",  # call tokens already handed to carriers were signed with it
    "gateway.outbound",  # the limits of the outbound-call API
)

Kind = Literal["added", "removed", "changed"]

# the sections a reviewer looks at first; the others follow in the order of the schema
_FIRST = ("profiles", "routes")
_SHORT_TEXT = 60  # longer texts (or texts of several lines) are shown as an excerpt around the change
_EXCERPT = 40
_CONTEXT = 15
_INLINE = 120  # a whole value shown on one line is cut after this many characters
_MIN_SECRET = 6  # as the log scrubber: shorter values are only recognized whole


@dataclass(frozen=True)
class Change:
    """One difference between two configurations.

    ``path`` is the key path of the setting (``profiles.main.voice.name``), or of the collection
    when ``member`` names what was added, removed or changed in it (a profile, a tool, a routed
    number). ``old`` and ``new`` are display texts, never a secret's value; both are None for a
    secret (shown as set, unset or changed). ``note`` qualifies a change of a long text (its
    lengths). ``restart``: the setting takes effect after a restart only (see RESTART_ONLY).
    """

    path: str
    kind: Kind
    old: str | None = None
    new: str | None = None
    restart: bool = False
    member: str | None = None
    note: str | None = None


def restart_paths() -> tuple[str, ...]:
    """Every key path a running gateway reads only when it starts: RESTART_ONLY, and the keys each
    carrier's section lists in its ``restart_keys`` (its clients are built from them)."""
    carriers = tuple(f"{model.section}.{key}" for model in carrier_settings()
                     for key in model.restart_keys)
    return RESTART_ONLY + carriers


def needs_restart(path: str, paths: tuple[str, ...] | None = None) -> bool:
    """Whether a change at ``path`` (a key path as in Change.path) needs a restart to take effect."""
    return any(path == key or path.startswith((key + ".", key + "["))
               for key in (restart_paths() if paths is None else paths))


class _Differ:
    def __init__(self, old: GatewayConfig, new: GatewayConfig) -> None:
        values = {value for value in (*old.secrets(), *new.secrets()) if value}
        self.whole = values
        self.parts = sorted((value for value in values if len(value) >= _MIN_SECRET), key=len, reverse=True)
        self.changes: list[Change] = []
        self.restart = restart_paths()

    # ---- secrets -----------------------------------------------------------------------------

    def secret(self, value: Any) -> bool:
        """A value shown as set/unset/changed only."""
        if isinstance(value, SecretStr):
            return True
        if isinstance(value, str):
            return value in self.whole or any(part in value for part in self.parts)
        return False

    def scrub(self, text: str) -> str:
        for part in self.parts:
            text = text.replace(part, "***")
        return text

    # ---- display -----------------------------------------------------------------------------

    def text(self, value: str) -> str:
        return json.dumps(self.scrub(_url_text(value)), ensure_ascii=False)

    def show(self, value: Any) -> str:
        """A value on one line: texts quoted, mappings and models as {key: value}, secrets as set."""
        shown = self._show(value)
        return shown if len(shown) <= _INLINE else shown[: _INLINE - 3] + "..."

    def _show(self, value: Any) -> str:
        if value is None:
            return "not set"
        if isinstance(value, SecretStr):
            return "set"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return _number(value)
        if isinstance(value, int):
            return str(value)
        if isinstance(value, str):
            return "***" if value in self.whole else self.text(value)
        if isinstance(value, BaseModel):
            names = sorted(type(value).model_fields, key=lambda name: name != "type")  # the type first
            items = [(name, getattr(value, name)) for name in names
                     if name not in _hidden(value) and (name in value.model_fields_set or name == "type")]
            return "{" + ", ".join(f"{name}: {self._show(item)}" for name, item in items) + "}"
        if isinstance(value, Mapping):
            return "{" + ", ".join(f"{key}: {self._show(item)}" for key, item in value.items()) + "}"
        if isinstance(value, list | tuple):
            return "[" + ", ".join(self._show(item) for item in value) + "]"
        return self.scrub(str(value))

    # ---- the walk ----------------------------------------------------------------------------

    def add(self, path: str, kind: Kind, old: str | None = None, new: str | None = None, *,
            member: str | None = None, note: str | None = None) -> None:
        restart = needs_restart(path if member is None else f"{path}.{member}", self.restart)
        self.changes.append(Change(path, kind, old, new, restart, member, note))

    def compare(self, path: str, old: Any, new: Any) -> None:
        old, new = _canonical(old), _canonical(new)
        if old == new:
            return
        if self.secret(old) or self.secret(new):
            self.add(path, _kind(old, new))
        elif isinstance(old, BaseModel) and isinstance(new, BaseModel):
            self.models(path, old, new)
        elif isinstance(old, Mapping) and isinstance(new, Mapping):
            self.mappings(path, old, new)
        elif _named_list(old) and _named_list(new) and (old or new):
            self.named(path, old or [], new or [])
        elif isinstance(old, list) and isinstance(new, list):
            self.lists(path, old, new)
        elif isinstance(old, str) and isinstance(new, str) and (_long(old) or _long(new)):
            self.texts(path, old, new)
        else:
            self.add(path, _kind(old, new), self.value(old), self.value(new))

    def value(self, value: Any) -> str | None:
        """A whole value as a change shows it (None: not set)."""
        if value is None:
            return None
        if isinstance(value, str) and _long(value):
            return f"{self.text(_cut(value))} ({len(value)} characters)"
        return self.show(value)

    def models(self, path: str, old: BaseModel, new: BaseModel) -> None:
        names = [*type(new).model_fields, *(n for n in type(old).model_fields if n not in type(new).model_fields)]
        hidden = _hidden(old) | _hidden(new)
        for name in names:
            if name not in hidden:
                self.compare(f"{path}.{name}" if path else name, getattr(old, name, None), getattr(new, name, None))

    def mappings(self, path: str, old: Mapping[Any, Any], new: Mapping[Any, Any]) -> None:
        for key in new:
            if key not in old:
                value = new[key]
                shown = None if self.secret(value) or not _scalar(value) else self.value(value)
                self.add(path, "added", None, shown, member=str(key))
        for key in old:
            if key not in new:
                value = old[key]
                shown = None if self.secret(value) or not _scalar(value) else self.value(value)
                self.add(path, "removed", shown, None, member=str(key))
        for key in old:
            if key not in new or _canonical(old[key]) == _canonical(new[key]):
                continue
            before, after = old[key], new[key]
            if _scalar(before) and _scalar(after) and not (isinstance(before, str) and _long(before)) and not (
                    isinstance(after, str) and _long(after)):
                if self.secret(before) or self.secret(after):
                    self.add(path, "changed", member=str(key))
                else:
                    self.add(path, "changed", self.value(before), self.value(after), member=str(key))
            else:
                self.compare(f"{path}.{key}", before, after)

    def named(self, path: str, old: list[Any], new: list[Any]) -> None:
        """A list of named items (tools, Voice Live resources): compared by name."""
        before = {item.name: item for item in old}
        after = {item.name: item for item in new}
        for name in after:
            if name not in before:
                self.add(path, "added", member=name)
        for name in before:
            if name not in after:
                self.add(path, "removed", member=name)
        common_old = [name for name in before if name in after]
        common_new = [name for name in after if name in before]
        if common_old != common_new:
            self.add(path, "changed", "order " + ", ".join(common_old), ", ".join(common_new))
        for name in common_new:
            self.compare(f"{path}[{name}]", before[name], after[name])

    def lists(self, path: str, old: list[Any], new: list[Any]) -> None:
        if not all(_scalar(item) and not isinstance(item, SecretStr) for item in (*old, *new)):
            self.add(path, "changed", self.show(old), self.show(new))
            return
        added = [item for item in new if item not in old]
        removed = [item for item in old if item not in new]
        if not added and not removed:  # the same items, in another order (or counted otherwise)
            self.add(path, "changed", self.show(old), self.show(new))
            return
        for item in added:
            self.add(path, "added", member=self.show(item))
        for item in removed:
            self.add(path, "removed", member=self.show(item))

    def texts(self, path: str, old: str, new: str) -> None:
        """Long texts (instructions, greetings): their lengths and the part that changed."""
        start = 0
        while start < min(len(old), len(new)) and old[start] == new[start]:
            start += 1
        end = 0
        while end < min(len(old), len(new)) - start and old[-1 - end] == new[-1 - end]:
            end += 1
        begin = max(0, start - _CONTEXT)

        def excerpt(text: str) -> str:
            middle = text[begin : len(text) - end]
            cut = len(middle) > _EXCERPT
            middle = middle[:_EXCERPT]
            return self.text(("..." if begin else "") + middle + ("..." if cut or end else ""))

        self.add(path, "changed", excerpt(old), excerpt(new), note=f"{len(old)} -> {len(new)} characters")


def _hidden(model: BaseModel) -> frozenset[str]:
    """Fields of a settings model that are not settings of the file (such as the file's name)."""
    hidden: object = getattr(type(model), "_hidden", None)
    return hidden if isinstance(hidden, frozenset) else frozenset()


def _number(value: float) -> str:
    if math.isfinite(value) and value.is_integer():
        return str(int(value))
    return repr(value)


def _url_text(value: str) -> str:
    """A URL without its query string and password (they may carry a credential)."""
    if "://" not in value:
        return value
    try:
        parts = urlsplit(value)
    except ValueError:
        return value
    if not parts.scheme or not parts.netloc:
        return value
    netloc = parts.netloc
    if parts.password is not None:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, netloc, parts.path, "..." if parts.query else "", ""))


def _canonical(value: Any) -> Any:
    """What makes two spellings of one setting equal: an OpenAI voice written as a mapping is its name."""
    if isinstance(value, OpenAIVoice):
        return value.name
    return value


def _kind(old: Any, new: Any) -> Kind:
    if old is None:
        return "added"
    if new is None:
        return "removed"
    return "changed"


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool | SecretStr)


def _long(text: str) -> bool:
    return len(text) > _SHORT_TEXT or "\n" in text


def _cut(text: str) -> str:
    first = text.split("\n", 1)[0]
    return first[:_EXCERPT] + "..." if len(first) > _EXCERPT or first != text else first


def _named_list(value: Any) -> bool:
    return value is None or (isinstance(value, list) and all(
        isinstance(item, BaseModel) and isinstance(getattr(item, "name", None), str) for item in value))


def config_diff(old: GatewayConfig, new: GatewayConfig) -> list[Change]:
    """Every difference between two validated configurations, in a stable order: profiles and
    routes first, then the other sections in the order of the schema; within a collection, what
    was added, then what was removed, then what changed."""
    differ = _Differ(old, new)
    fields = list(GatewayConfig.model_fields)
    for name in [*_FIRST, *(name for name in fields if name not in _FIRST)]:
        if name not in GatewayConfig._hidden:
            differ.compare(name, getattr(old, name), getattr(new, name))
    return differ.changes


def _member_text(change: Change) -> str:
    member = change.member or ""
    if change.kind == "added":
        return f"added {member}" + (f" -> {change.new}" if change.new is not None else "")
    if change.kind == "removed":
        return f"removed {member}" + (f" (was {change.old})" if change.old is not None else "")
    if change.old is None and change.new is None:
        return f"{member}: changed"
    return f"{member}: {change.old or 'not set'} -> {change.new or 'not set'}"


def _change_text(change: Change) -> str:
    if change.old is None and change.new is None:  # a secret: never its value
        return {"added": "set", "removed": "unset", "changed": "changed"}[change.kind]
    if change.note is not None:
        return f"changed ({change.note}): {change.old} -> {change.new}"
    return f"{change.old or 'not set'} -> {change.new or 'not set'}"


def format_diff(changes: Iterable[Change]) -> str:
    """The changes as ``gateway check-config --diff`` prints them: one line per setting, and one
    line per collection for what was added to, removed from or changed in it; "no change" when
    there is none."""
    lines: list[tuple[str, list[str], bool]] = []  # (path, parts, restart)
    groups: dict[str, int] = {}
    for change in changes:
        if change.member is not None:
            at = groups.get(change.path)
            if at is None:
                groups[change.path] = at = len(lines)
                lines.append((change.path, [], False))
            path, parts, restart = lines[at]
            lines[at] = (path, [*parts, _member_text(change)], restart or change.restart)
        else:
            lines.append((change.path, [_change_text(change)], change.restart))
    if not lines:
        return "no change"
    return "\n".join(f"{path}: {'; '.join(parts)}" + (" (needs a restart)" if restart else "")
                     for path, parts, restart in lines)

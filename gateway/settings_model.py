"""The base of every settings model: what config.yaml's sections share, wherever they are defined.

:class:`SettingsModel` is frozen, rejects unknown keys, treats empty values as unset and reports
cross-field rules together with the field errors. The validators raise errors whose message is
shown to ops as is (:func:`fail`); :mod:`gateway.config.loader` adds the file, the line and the key
path. :mod:`gateway.config.schema` builds the gateway's sections on it, and every carrier builds its
own section (``gateway/carriers/<name>/settings.py``) on it too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

_URL = re.compile(r"(?:https|http|wss|ws)://[^\s/?#]+\S*")




def fail(message: str, sub: str | None = None, show_got: bool = True) -> PydanticCustomError:
    """An error whose message is shown as is. ``sub`` names a key below the failing one."""
    ctx: dict[str, Any] = {"m": message, "show_got": show_got}
    if sub is not None:
        ctx["sub"] = sub
    return PydanticCustomError("gateway", "{m}", ctx)


def fmt_num(x: float) -> str:
    return f"{x:g}"


def numeric(value: Any) -> Any:
    if isinstance(value, bool):
        raise fail("expected a number")
    return value


def whole(value: Any) -> Any:
    if isinstance(value, bool):
        raise fail("expected a whole number")
    return value


def between(lo: float, hi: float) -> Callable[[float], float]:
    def check(value: float) -> float:
        if not lo <= value <= hi:
            raise fail(f"expected a number between {fmt_num(lo)} and {fmt_num(hi)}")
        return value

    return check


def positive(value: float) -> float:
    if not value > 0 or math.isinf(value):
        raise fail("expected a number greater than 0")
    return value


def not_negative_float(value: float) -> float:
    if not value >= 0 or math.isinf(value):
        raise fail("expected a number of 0 or more")
    return value


def not_negative(value: int) -> int:
    if value < 0:
        raise fail("expected a whole number, 0 or more")
    return value


def socket_or_web_url(value: str) -> str:
    if not _URL.fullmatch(value):
        raise fail("expected a URL starting with https://, http://, wss:// or ws://")
    return value.rstrip("/")


Text = Annotated[str, Field(min_length=1)]


def field_of(data: Any, key: str) -> Any:
    """A field of raw input that may be a mapping or an already-built model."""
    if isinstance(data, Mapping):
        return data.get(key)
    return getattr(data, key, None)


def is_set(value: Any) -> bool:
    return value is not None and value != ""


Rule = tuple[tuple[str | int, ...], str, bool]  # (location below the model, message, show the value)


class SettingsModel(BaseModel):
    """Frozen, unknown keys rejected, empty values treated as unset, cross-field rules that are
    reported together with the field errors (not instead of them)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    _keep_null: ClassVar[frozenset[str]] = frozenset()
    _hidden: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        drop = [
            key
            for key, value in data.items()
            if key in cls.model_fields
            and not cls.model_fields[key].is_required()
            and (value == "" or (value is None and key not in cls._keep_null))
        ]
        if drop:
            data = {k: v for k, v in data.items() if k not in drop}
        return data

    @classmethod
    def _rules(cls, data: dict[str, Any]) -> list[Rule]:
        return []

    @model_validator(mode="wrap")
    @classmethod
    def _validate_all(cls, data: Any, handler: Any) -> Any:
        if not isinstance(data, dict):
            return handler(data)
        broken = cls._rules(data)
        data = cls._prepare(data)
        try:
            model = handler(data)
        except ValidationError as exc:
            raise combine(cls.__name__, exc.errors(), broken, data) from None
        if broken:
            raise combine(cls.__name__, [], broken, data)
        return model


def combine(title: str, errors: list[Any], rules: list[Rule], data: dict[str, Any]) -> ValidationError:
    details: list[InitErrorDetails] = []
    for err in errors:
        ctx = dict(err.get("ctx") or {})
        ctx.setdefault("m", err["msg"])
        details.append(
            {"type": PydanticCustomError(err["type"], "{m}", ctx), "loc": err["loc"], "input": err["input"]}
        )
    for loc, message, show_got in rules:
        details.append({"type": fail(message, show_got=show_got), "loc": loc, "input": data})
    return ValidationError.from_exception_data(title, details)


_HTTP_URL = re.compile(r"https?://[^\s/?#]+\S*")


def http_url(value: str) -> str:
    if not _HTTP_URL.fullmatch(value):
        raise fail("expected a URL starting with https:// or http://")
    return value



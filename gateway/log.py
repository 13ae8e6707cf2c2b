"""Structured logging: JSON lines in production, readable console output in a terminal.

Every secret the gateway loads is registered here and scrubbed from every log line, whatever
code path tried to log it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import structlog

_secrets: set[str] = set()
_MIN_SECRET_LEN = 6
# each secret as a rendered line may hold it: as itself, escaped for JSON, by repr, by repr and then for JSON
# (an exception's text in a JSON line); longest first
_rendered_forms: list[str] = []


def register_secret(value: str | None) -> None:
    """Never let ``value`` appear in a log line."""
    global _rendered_forms
    if value and len(value) >= _MIN_SECRET_LEN and value not in _secrets:
        _secrets.add(value)
        forms = {value, json.dumps(value)[1:-1], repr(value)[1:-1], json.dumps(repr(value)[1:-1])[1:-1]}
        # a new list, not the old one changed in place: a line scrubbed meanwhile (another thread) sees either
        _rendered_forms = sorted(forms.union(_rendered_forms), key=len, reverse=True)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        for secret in _secrets:
            if secret in value:
                value = value.replace(secret, "***")
        return value
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub(v) for v in value)
    if isinstance(value, BaseException):
        return _scrub(repr(value))
    return value


def scrub_text(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    return _scrub(text) if _secrets else text


def scrub_line(_logger: Any, _name: str, line: Any) -> Any:
    """The rendered line with every registered secret replaced by ``***``: one look per secret, whatever
    the line holds (values, keys, nested structures, an exception's text)."""
    for form in _rendered_forms:
        if form in line:
            line = line.replace(form, "***")
    return line


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure(level: str | None = None, json_output: bool | None = None, stream: Any = None) -> None:
    """Configure structlog: one line per event on standard error. ``GATEWAY_LOG_LEVEL`` and
    ``GATEWAY_LOG_FORMAT`` (json|console) apply when the arguments are not given; an unknown level
    is a ValueError (a typo must not silently log at another level)."""
    level_name = (level or os.environ.get("GATEWAY_LOG_LEVEL") or "info").lower()
    if level_name not in _LEVELS:
        source = "--log-level" if level else "GATEWAY_LOG_LEVEL"
        raise ValueError(f"{source} must be one of {', '.join(_LEVELS)} (got {level_name!r})")
    stream = stream or sys.stderr
    if json_output is None:
        fmt = os.environ.get("GATEWAY_LOG_FORMAT", "").lower()
        json_output = fmt == "json" or (fmt != "console" and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_output
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
            scrub_line,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level_name]),
        # one write per line (record and newline together): workers sharing a stream never glue lines
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str, **bound: Any) -> Any:
    """A logger whose lines carry ``component=name`` and the given fields.

    It stays lazy: each line uses the configuration current when it is written, so module-level
    loggers follow a later :func:`configure`."""
    return structlog.get_logger(component=name, **bound)

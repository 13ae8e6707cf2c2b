"""Twilio request signatures: every webhook and the media WebSocket upgrade carry
``X-Twilio-Signature``, HMAC-SHA1 keyed with the account Auth Token over the URL Twilio requested
followed by the form parameters."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from gateway.auth import DEFAULT_PORTS

__all__ = ["TWILIO_SIGNATURE_HEADER", "check_twilio_signature", "twilio_signature"]

TWILIO_SIGNATURE_HEADER = "X-Twilio-Signature"


def _param_values(params: Mapping[str, Any], name: str) -> list[str]:
    getall = getattr(params, "getall", None)  # aiohttp / multidict: every value of a repeated name
    values = getall(name) if getall is not None else params[name]
    if isinstance(values, str):
        return [values]
    values = list(values)
    if not all(isinstance(value, str) for value in values):
        raise TypeError(f"parameter {name!r} has a value that is not text")
    return values


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str | Sequence[str]] | None = None) -> str:
    """The ``X-Twilio-Signature`` Twilio sends for a request to ``url`` with form ``params``.

    The signed text is the URL followed by each parameter name and value, names sorted; a name
    given several values contributes each distinct value, sorted. HMAC-SHA1 keyed with the Auth
    Token, base64. A ``params`` value may be a string or a sequence of strings; a multidict
    (aiohttp's ``await request.post()``) is read with all its repeated values.
    """
    text = [url]
    if params:
        for name in sorted(set(params)):
            for value in sorted(set(_param_values(params, name))):
                text.append(name)
                text.append(value)
    digest = hmac.new(auth_token.encode("utf-8"), "".join(text).encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _url_variants(url: str) -> list[str]:
    """``url`` as given, plus the same URL with its scheme's default port added or removed."""
    parts = urlsplit(url)
    default = DEFAULT_PORTS.get(parts.scheme.lower())
    start = url.find("://") + 3
    if default is None or start < 3 or not parts.netloc or url[start : start + len(parts.netloc)] != parts.netloc:
        return [url]
    port = parts.port  # ValueError on a port that is not a number
    head, tail = url[:start], url[start + len(parts.netloc) :]
    if port is None:
        return [url, f"{head}{parts.netloc}:{default}{tail}"]
    if port == default:
        return [url, f"{head}{parts.netloc.rpartition(':')[0]}{tail}"]
    return [url]


def check_twilio_signature(
    auth_token: str,
    url: str,
    params: Mapping[str, str | Sequence[str]] | None,
    signature: str | None,
) -> bool:
    """Whether ``signature`` (the ``X-Twilio-Signature`` header) is Twilio's for this request.

    ``url`` is the full URL Twilio requested, query string included (build it with
    :func:`public_url_for`); ``params`` the form fields of a POST, ``None`` for a GET such as
    the media WebSocket upgrade. Like Twilio's own validator, the URL is also tried with the
    scheme's default port added or removed (https/wss 443, http/ws 80). Comparison is constant
    time; a missing or empty signature or token never matches.
    """
    if not signature or not auth_token:
        return False
    try:
        given = signature.encode("utf-8")
        matched = False
        for candidate in _url_variants(url):
            expected = twilio_signature(auth_token, candidate, params).encode("ascii")
            matched |= hmac.compare_digest(expected, given)
        return matched
    except (TypeError, ValueError, UnicodeError):
        return False

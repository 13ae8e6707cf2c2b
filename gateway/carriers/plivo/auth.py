"""Plivo request signatures (V3): every request Plivo makes to the gateway's URLs carries
``X-Plivo-Signature-V3`` and ``X-Plivo-Signature-V3-Nonce``.

The signature is HMAC-SHA256, keyed with the account's Auth Token, over a text built from the
request, then base64:

* the URL without its query string (``scheme://host[:port]/path``);
* its query parameters, names sorted, as ``name=value`` joined by ``&`` (a name given several
  values contributes each, values sorted), after a ``?``;
* for a POST, its form parameters, names sorted, each name directly followed by its value (no
  separator at all); after the ``?`` when the URL has no query, after a ``.`` when it has one;
* a ``.`` and the nonce.

The header may carry several signatures separated by commas (one per key while a token is being
rotated): the request holds when any of them matches.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from gateway.auth import DEFAULT_PORTS

__all__ = ["NONCE_HEADER", "SIGNATURE_HEADER", "check_plivo_signature", "plivo_signature"]

SIGNATURE_HEADER = "X-Plivo-Signature-V3"
NONCE_HEADER = "X-Plivo-Signature-V3-Nonce"

Params = Mapping[str, str | Sequence[str]]


def _values(params: Mapping[str, Any], name: str) -> list[str]:
    getall = getattr(params, "getall", None)  # aiohttp / multidict: every value of a repeated name
    values = getall(name) if getall is not None else params[name]
    if isinstance(values, str):
        return [values]
    values = list(values)
    if not all(isinstance(value, str) for value in values):
        raise TypeError(f"parameter {name!r} has a value that is not text")
    return values


def _signed_text(method: str, url: str, params: Params | None) -> str:
    parts = urlsplit(url)
    text = f"{parts.scheme}://{parts.netloc}{parts.path}"
    query = parse_qs(parts.query, keep_blank_values=True)
    form = dict(params or {}) if method == "POST" else {}
    if method != "POST" and params:  # a GET's parameters are its query string
        for name in params:
            query.setdefault(name, []).extend(_values(params, name))
    query_text = "&".join(f"{name}={value}" for name in sorted(query) for value in sorted(query[name]))
    if method == "POST" and form:
        text += "?" + query_text + ("." if query_text else "")
        text += "".join(name + value for name in sorted(form) for value in sorted(_values(params or {}, name)))
    elif query_text:
        text += "?" + query_text
    return text


def plivo_signature(auth_token: str, method: str, url: str, nonce: str, params: Params | None = None) -> str:
    """The ``X-Plivo-Signature-V3`` Plivo sends for a ``method`` (GET or POST) request to ``url``
    with form ``params`` and ``nonce`` (the ``X-Plivo-Signature-V3-Nonce`` header)."""
    text = _signed_text(method.upper(), url, params) + "." + nonce
    digest = hmac.new(auth_token.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def _url_variants(url: str) -> list[str]:
    """``url`` as given, plus the same URL with its scheme's default port added or removed."""
    parts = urlsplit(url)
    default = DEFAULT_PORTS.get(parts.scheme.lower())
    if default is None or not parts.hostname:
        return [url]
    port = parts.port  # ValueError on a port that is not a number
    host = parts.netloc.rpartition(":")[0] if port is not None else parts.netloc
    other = parts._replace(netloc=host if port == default else f"{parts.netloc}:{default}")
    return [url] if port not in (None, default) else [url, other.geturl()]


def check_plivo_signature(auth_token: str, method: str, url: str, params: Params | None,
                          signature: str | None, nonce: str | None) -> bool:
    """Whether ``signature`` (the ``X-Plivo-Signature-V3`` header, one or several signatures
    separated by commas) is Plivo's for this request.

    ``url`` is the full URL Plivo requested, query string included; ``params`` the form fields of a
    POST. The URL is also tried with the scheme's default port added or removed. Comparisons are
    constant time; a missing or empty signature, nonce or token never matches.
    """
    if not signature or not nonce or not auth_token:
        return False
    try:
        given = [part.strip().encode("utf-8") for part in signature.split(",") if part.strip()]
        matched = False
        for candidate in _url_variants(url):
            expected = plivo_signature(auth_token, method, candidate, nonce, params).encode("ascii")
            for one in given:
                matched |= hmac.compare_digest(expected, one)
        return matched
    except (TypeError, ValueError, UnicodeError):
        return False

"""Credentials on the media socket's upgrade.

Asterisk dials the gateway with the ``username`` and ``password`` of its ``websocket_client.conf``
connection, sent as HTTP basic credentials (``Authorization: Basic ...``) on the WebSocket upgrade
(or as the URI's user info, which Asterisk turns into the same header). A bearer token
(``Authorization: Bearer ...``) is accepted instead when one is configured, e.g. added by a proxy in
front of the gateway. Every comparison is constant time; with nothing configured, nothing matches.
"""

from __future__ import annotations

import base64
import binascii
import hmac

__all__ = ["basic_header", "check_authorization"]


def basic_header(username: str, password: str) -> str:
    """The ``Authorization`` value Asterisk sends for these credentials."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def check_authorization(header: str | None, *, username: str | None, password: str | None,
                        token: str | None) -> str | None:
    """None when ``header`` (the upgrade's ``Authorization``) carries the configured credentials;
    else why not (safe to log: never a secret). Basic credentials count only when both a username
    and a password are configured; a bearer token only when one is."""
    basic_set = bool(username) and bool(password)
    if not basic_set and not token:
        return "no Asterisk credentials configured"
    if not header:
        return "no Authorization header"
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    scheme = scheme.lower()
    if scheme == "basic":
        if not basic_set:
            return "basic credentials are not configured"
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return "unreadable basic credentials"
        user, sep, secret = decoded.partition(":")
        # both compared whatever the first gives: no early exit on the username
        ok = _same(user, username or "") & _same(secret, password or "") & bool(sep)
        return None if ok else "bad basic credentials"
    if scheme == "bearer":
        if not token:
            return "bearer tokens are not configured"
        return None if value and _same(value, token) else "bad bearer token"
    return "unsupported Authorization scheme"

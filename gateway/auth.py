"""Call authentication every carrier shares: signed call tokens, public URLs, secret checks.

* :class:`CallTokens` issues and checks short-lived signed call tokens, carried from a carrier's
  answer to its media socket, each naming the carrier it was issued for. Every replica holding the
  same key can check them, with no shared state.
* :func:`public_url_for` rebuilds the URL a carrier used from the configured public address (the
  address the gateway sees behind a TLS-terminating proxy is not the one the carrier used).
* :func:`secret_matches` compares a shared secret in constant time.

Each carrier's own checks (request signatures, JWTs) live in its package. Nothing here logs a
token or a secret; error reasons are short and safe to log.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import json
import re
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

__all__ = ["CARRIER_CLAIM", "DEFAULT_PORTS", "CallTokens", "TokenError", "public_base", "public_url_for",
           "secret_matches"]

DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}
_TO_WEBSOCKET = {"https": "wss", "http": "ws"}
_TO_HTTP = {"wss": "https", "ws": "http"}


def public_url_for(public_base: str, path: str, query: str = "", websocket: bool = False) -> str:
    """The URL a carrier used for ``path``, built from the configured public base URL.

    ``public_base`` is what carriers reach (``https://gw.example.com``, possibly with a path
    prefix); a trailing slash is ignored. ``query`` is the raw query string, without ``?``
    (appended only when not empty). ``websocket=True`` turns https into wss and http into ws;
    ``websocket=False`` turns a wss/ws base back into https/http.

    >>> public_url_for("https://gw.example.com/", "/carrier/media", websocket=True)
    'wss://gw.example.com/carrier/media'
    """
    base = public_base.strip().rstrip("/")
    scheme, sep, rest = base.partition("://")
    scheme = scheme.lower()
    if not sep or not rest or scheme not in DEFAULT_PORTS:
        raise ValueError(f"public URL must start with https://, http://, wss:// or ws://, got {public_base!r}")
    scheme = _TO_WEBSOCKET.get(scheme, scheme) if websocket else _TO_HTTP.get(scheme, scheme)
    if path and not path.startswith("/"):
        path = "/" + path
    url = f"{scheme}://{rest}{path}"
    query = query.removeprefix("?")
    return f"{url}?{query}" if query else url


def public_base(request: web.Request, configured: str | None) -> str:
    """The public address carriers reach: the configured one, else this request's scheme and host
    (``X-Forwarded-Proto`` honoured)."""
    if configured:
        return configured
    proto = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0].strip()
    return f"{proto}://{request.host}"


# ---------------------------------------------------------------------------------------------
# Signed call tokens
# ---------------------------------------------------------------------------------------------

_B64URL_TEXT = re.compile(r"[A-Za-z0-9_-]+")
_MAX_CALL_TOKEN = 4096
CARRIER_CLAIM = "carrier"  # the carrier a call token was issued for


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenError(Exception):
    """A call token was refused. ``reason`` is short and never contains the token."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CallTokens:
    """Issue and verify short-lived call tokens: ``base64url(JSON claims + "exp") "." base64url(HMAC-SHA256)``.

    The token is URL-safe (letters, digits, ``-``, ``_`` and one ``.``). Its claims are readable
    by whoever holds it, so put ids in it, not secrets. ``clock`` is wall-clock time (seconds
    since the epoch), shared by all replicas.

    A token issued for a ``carrier`` names it (claim ``carrier``), and :meth:`verify` given a
    carrier refuses a token that names another one. A token that names none (issued before
    tokens carried it) is left to the claims each route requires. :meth:`spend` makes a token
    good for one use in this process.
    """

    def __init__(self, key: bytes, clock: Callable[[], float] = time.time) -> None:
        if not isinstance(key, bytes | bytearray):
            raise TypeError("call token key must be bytes")
        if not key:
            raise ValueError("call token key must not be empty")
        self._key = bytes(key)
        self._clock = clock
        self._spent: set[str] = set()  # signatures of the tokens used, until they expire
        self._spent_expiry: list[tuple[float, str]] = []  # a heap of (exp, signature)

    def _sign(self, payload: str) -> str:
        return _b64url(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def issue(self, claims: dict[str, str], ttl_s: float, *, carrier: str | None = None) -> str:
        """A token carrying ``claims`` (text values), valid for ``ttl_s`` seconds from now,
        naming ``carrier`` when given."""
        if not ttl_s > 0:
            raise ValueError("ttl_s must be positive")
        if "exp" in claims:
            raise ValueError('"exp" is reserved for the expiry time')
        for name, value in claims.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError("call token claims must map text to text")
        body = {**claims, "exp": round(self._clock() + ttl_s, 3)}
        if carrier is not None:
            body[CARRIER_CLAIM] = carrier
        payload = _b64url(json.dumps(body, separators=(",", ":"), sort_keys=True).encode("utf-8"))
        return f"{payload}.{self._sign(payload)}"

    def verify(self, token: str, *, carrier: str | None = None) -> dict[str, str]:
        """The claims of a valid token (without ``exp``).

        Raises :class:`TokenError` with reason ``"malformed"``, ``"bad signature"``, ``"expired"``
        or, when ``carrier`` is given and the token names another, ``"for another carrier"``.
        """
        body = self._open(token)
        del body["exp"]
        if carrier is not None and body.get(CARRIER_CLAIM, carrier) != carrier:
            raise TokenError("for another carrier")
        return body

    def spend(self, token: str) -> None:
        """Use up a valid token: until it expires, spending it again raises :class:`TokenError`
        ``"already used"``. Remembered by this process only (other replicas do not know)."""
        exp = self._open(token)["exp"]
        now = self._clock()
        while self._spent_expiry and self._spent_expiry[0][0] <= now:
            self._spent.discard(heapq.heappop(self._spent_expiry)[1])
        signature = token.rpartition(".")[2]
        if signature in self._spent:
            raise TokenError("already used")
        self._spent.add(signature)
        heapq.heappush(self._spent_expiry, (exp, signature))

    def _open(self, token: str) -> dict[str, Any]:
        """The body of a valid token, ``exp`` included; :class:`TokenError` if it is not valid."""
        if not isinstance(token, str) or len(token) > _MAX_CALL_TOKEN or token.count(".") != 1:
            raise TokenError("malformed")
        payload, signature = token.split(".")
        if not _B64URL_TEXT.fullmatch(payload) or not _B64URL_TEXT.fullmatch(signature):
            raise TokenError("malformed")
        if not hmac.compare_digest(self._sign(payload), signature):
            raise TokenError("bad signature")
        try:
            body = json.loads(_b64url_decode(payload))
        except (ValueError, binascii.Error):
            raise TokenError("malformed") from None
        if not isinstance(body, dict):
            raise TokenError("malformed")
        exp = body.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise TokenError("malformed")
        if not all(isinstance(value, str) for name, value in body.items() if name != "exp"):
            raise TokenError("malformed")
        if self._clock() >= exp:
            raise TokenError("expired")
        return body


def secret_matches(expected: str | None, given: str | None) -> bool:
    """Whether ``given`` equals ``expected``, compared in constant time.

    ``expected=None`` means no secret is required: always ``True``. Otherwise a missing
    ``given`` never matches.
    """
    if expected is None:
        return True
    if given is None:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))

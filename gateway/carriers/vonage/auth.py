"""Vonage authentication: signed webhooks in, the application JWT out.

Vonage signs every Voice API webhook (answer, event, fallback) with the account's signature secret:
``Authorization: Bearer <JWT>``, HS256, with ``iat`` (when it was signed) and, on a request with a
body, ``payload_hash`` (the SHA-256 of the body, hex). :func:`check_signed_webhook` checks all of it
and fails closed. The gateway's own calls to the Voice API (hang-up, transfer, keys) carry an
application JWT, RS256, signed with the Vonage application's private key
(:func:`application_jwt`).

Nothing here logs a token; error reasons are short and safe to log.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
import warnings
from typing import Any

import jwt
from jwt.warnings import InsecureKeyLengthWarning

__all__ = ["MAX_WEBHOOK_AGE_S", "application_jwt", "check_signed_webhook", "webhook_token"]

MAX_WEBHOOK_AGE_S = 300.0  # a signed webhook older than this is refused (a replay)
LEEWAY_S = 60.0  # clock skew allowed between Vonage and the gateway
_MAX_JWT = 8 * 1024
_CLAIM_ERRORS: list[tuple[type[jwt.InvalidTokenError], str]] = [
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.ImmatureSignatureError, "not yet valid"),
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.InvalidAlgorithmError, "unsupported algorithm"),
    (jwt.DecodeError, "malformed token"),
]


def _bearer(authorization_header: str | None) -> str | None:
    if not authorization_header:
        return None
    scheme, _, token = authorization_header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def check_signed_webhook(secret: str, authorization_header: str | None, body: bytes | None,
                         now: float | None = None, max_age_s: float = MAX_WEBHOOK_AGE_S) -> str | None:
    """Why a webhook is not Vonage's (None: it is). ``body``: the raw request body (None or empty
    for a GET). The token must be HS256 with ``secret``, signed at most ``max_age_s`` ago (``iat``),
    not expired if it says when it expires, and, when there is a body, carry its ``payload_hash``."""
    if not secret:
        return "no signature secret"
    token = _bearer(authorization_header)
    if token is None:
        return "missing bearer token"
    if len(token) > _MAX_JWT:
        return "malformed token"
    clock = time.time() if now is None else now
    try:
        with warnings.catch_warnings():  # the secret is the account's, whatever its length
            warnings.simplefilter("ignore", InsecureKeyLengthWarning)
            claims: dict[str, Any] = jwt.decode(
                # as bytes: a header that is not UTF-8 (lone surrogates from aiohttp) is malformed, not an exception
                token.encode("utf-8", "surrogateescape"), secret, algorithms=["HS256"], leeway=LEEWAY_S,
                options={"require": ["iat"], "verify_signature": True, "verify_exp": True, "verify_iat": True,
                         "verify_nbf": True, "verify_aud": False, "verify_iss": False})
    except jwt.MissingRequiredClaimError as exc:
        return f"missing claim {exc.claim}"
    except jwt.InvalidTokenError as exc:
        return next((reason for kind, reason in _CLAIM_ERRORS if isinstance(exc, kind)), "invalid token")
    iat = claims.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, int | float):
        return "malformed token"
    if clock - iat > max_age_s + LEEWAY_S:
        return "signed too long ago"
    if iat - clock > LEEWAY_S:
        return "signed in the future"
    if body:
        given = claims.get("payload_hash")
        if not isinstance(given, str) or not given:
            return "missing payload_hash"
        expected = hashlib.sha256(body).hexdigest()
        if not hmac.compare_digest(expected.encode("ascii"), given.strip().lower().encode("utf-8", "replace")):
            return "payload_hash does not match the body"
    return None


def webhook_token(secret: str, body: bytes | None = None, *, now: float | None = None,
                  application_id: str = "", api_key: str = "") -> str:
    """A signed-webhook JWT as Vonage makes it (the softphone's and the tests' side)."""
    iat = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"iat": iat, "jti": str(uuid.uuid4()), "iss": "Vonage"}
    if application_id:
        claims["application_id"] = application_id
    if api_key:
        claims["api_key"] = api_key
    if body:
        claims["payload_hash"] = hashlib.sha256(body).hexdigest()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(claims, secret, algorithm="HS256")


def application_jwt(application_id: str, private_key: str, *, now: float | None = None, ttl_s: int = 300) -> str:
    """The JWT the Voice API takes (``Authorization: Bearer``): RS256 with the application's key (PEM;
    written on one line with ``\\n`` escapes, as environments often hold it, works too). Raises
    ValueError when the key cannot sign."""
    if "\n" not in private_key and "\\n" in private_key:  # a PEM put in one line of the environment
        private_key = private_key.replace("\\n", "\n")
    iat = int(time.time() if now is None else now)
    claims = {"application_id": application_id, "iat": iat, "exp": iat + ttl_s, "jti": str(uuid.uuid4())}
    try:
        return jwt.encode(claims, private_key, algorithm="RS256")
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        raise ValueError(f"the Vonage private key cannot sign ({type(exc).__name__})") from None

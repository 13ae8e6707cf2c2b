"""Carrier authentication: the checks that prove a request or a media socket comes from the carrier.

* Twilio signs every webhook and the media WebSocket upgrade with ``X-Twilio-Signature``:
  HMAC-SHA1, keyed with the account Auth Token, over the URL Twilio requested followed by the
  form parameters. :func:`check_twilio_signature` checks it; :func:`public_url_for` rebuilds the
  URL Twilio signed from the configured public address (the address the gateway sees behind a
  TLS-terminating proxy is not the one Twilio used).
* :class:`CallTokens` issues and checks short-lived signed call tokens, carried in a TwiML
  ``<Parameter>`` or an ACS transport URL. Every replica holding the same key can check them,
  with no shared state.
* Azure Communication Services puts an RS256 JWT in ``Authorization: Bearer`` on the media
  WebSocket upgrade and on every Call Automation callback. :class:`AcsJwtValidator` checks it
  against the published signing keys (fetched without blocking, cached, refreshed).
* Event Grid helpers: the subscription validation handshake and a constant-time secret check.

Nothing here logs a token or a secret; error reasons are short and safe to log.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jwt

from gateway.log import get_logger

log = get_logger("gateway.auth")

__all__ = [
    "ACS_ISSUER",
    "ACS_JWKS_URL",
    "EVENTGRID_VALIDATION_EVENT",
    "TWILIO_SIGNATURE_HEADER",
    "AcsJwtValidator",
    "AuthError",
    "CallTokens",
    "TokenError",
    "check_twilio_signature",
    "eventgrid_validation_code",
    "public_url_for",
    "secret_matches",
    "twilio_signature",
]

TWILIO_SIGNATURE_HEADER = "X-Twilio-Signature"
ACS_ISSUER = "https://acscallautomation.communication.azure.com"
ACS_JWKS_URL = "https://acscallautomation.communication.azure.com/calling/keys"
EVENTGRID_VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"

# ---------------------------------------------------------------------------------------------
# Twilio request signatures
# ---------------------------------------------------------------------------------------------

_DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}
_TO_WEBSOCKET = {"https": "wss", "http": "ws"}
_TO_HTTP = {"wss": "https", "ws": "http"}


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
    default = _DEFAULT_PORTS.get(parts.scheme.lower())
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


def public_url_for(public_base: str, path: str, query: str = "", websocket: bool = False) -> str:
    """The URL a carrier used for ``path``, built from the configured public base URL.

    ``public_base`` is what carriers reach (``https://gw.example.com``, possibly with a path
    prefix); a trailing slash is ignored. ``query`` is the raw query string, without ``?``
    (appended only when not empty). ``websocket=True`` turns https into wss and http into ws;
    ``websocket=False`` turns a wss/ws base back into https/http.

    >>> public_url_for("https://gw.example.com/", "/twilio/media", websocket=True)
    'wss://gw.example.com/twilio/media'
    """
    base = public_base.strip().rstrip("/")
    scheme, sep, rest = base.partition("://")
    scheme = scheme.lower()
    if not sep or not rest or scheme not in _DEFAULT_PORTS:
        raise ValueError(f"public URL must start with https://, http://, wss:// or ws://, got {public_base!r}")
    scheme = _TO_WEBSOCKET.get(scheme, scheme) if websocket else _TO_HTTP.get(scheme, scheme)
    if path and not path.startswith("/"):
        path = "/" + path
    url = f"{scheme}://{rest}{path}"
    query = query.removeprefix("?")
    return f"{url}?{query}" if query else url


# ---------------------------------------------------------------------------------------------
# Signed call tokens
# ---------------------------------------------------------------------------------------------

_B64URL_TEXT = re.compile(r"[A-Za-z0-9_-]+")
_MAX_CALL_TOKEN = 4096


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
    """

    def __init__(self, key: bytes, clock: Callable[[], float] = time.time) -> None:
        if not isinstance(key, bytes | bytearray):
            raise TypeError("call token key must be bytes")
        if not key:
            raise ValueError("call token key must not be empty")
        self._key = bytes(key)
        self._clock = clock

    def _sign(self, payload: str) -> str:
        return _b64url(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def issue(self, claims: dict[str, str], ttl_s: float) -> str:
        """A token carrying ``claims`` (text values), valid for ``ttl_s`` seconds from now."""
        if not ttl_s > 0:
            raise ValueError("ttl_s must be positive")
        if "exp" in claims:
            raise ValueError('"exp" is reserved for the expiry time')
        for name, value in claims.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError("call token claims must map text to text")
        body = {**claims, "exp": round(self._clock() + ttl_s, 3)}
        payload = _b64url(json.dumps(body, separators=(",", ":"), sort_keys=True).encode("utf-8"))
        return f"{payload}.{self._sign(payload)}"

    def verify(self, token: str) -> dict[str, str]:
        """The claims of a valid token (without ``exp``).

        Raises :class:`TokenError` with reason ``"malformed"``, ``"bad signature"`` or ``"expired"``.
        """
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
        exp = body.pop("exp", None)
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise TokenError("malformed")
        if not all(isinstance(value, str) for value in body.values()):
            raise TokenError("malformed")
        if self._clock() >= exp:
            raise TokenError("expired")
        return body


# ---------------------------------------------------------------------------------------------
# ACS JWTs
# ---------------------------------------------------------------------------------------------

_MAX_JWT = 16 * 1024


class AuthError(Exception):
    """A bearer token was refused. ``reason`` is short, safe to log, and never contains the token."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _JwksError(Exception):
    pass


def _parse_jwks(document: Any) -> dict[str, Any]:
    """The RS256 signing keys of a JWKS document, by key id. Unusable entries are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise _JwksError("not a JWKS document")
    keys: dict[str, Any] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA":
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid or entry.get("use", "sig") != "sig":
            continue
        if entry.get("alg", "RS256") != "RS256":
            continue
        try:
            keys[kid] = jwt.PyJWK(entry, algorithm="RS256").key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError):
            log.debug("skipping an unusable signing key", kid=kid)
    if not keys:
        raise _JwksError("no usable RS256 signing key")
    return keys


class AcsJwtValidator:
    """Check the ``Authorization: Bearer`` JWT that ACS sends on media sockets and callbacks.

    The token must be RS256, signed by a key of the JWKS at ``jwks_url`` (matched by ``kid``),
    from ``issuer``, for ``audience`` (the ACS resource id), and within its validity period
    (``leeway_s`` of clock skew allowed). Other algorithms, ``HS256`` and ``none`` included, are
    refused before any key is looked at.

    Signing keys are fetched with aiohttp on first use, cached, refreshed every ``refresh_s``
    seconds (``clock`` is a monotonic clock) and re-fetched when a token names an unknown key
    id, at most once per ``min_refetch_s``. Concurrent validations share one fetch. If a fetch
    fails, the cached keys stay in use; with no keys at all, tokens are refused with
    ``"signing keys unavailable"`` until a fetch succeeds (retried at most every few seconds).
    """

    def __init__(
        self,
        jwks_url: str,
        *,
        audience: str,
        issuer: str = ACS_ISSUER,
        refresh_s: float = 6 * 3600,
        min_refetch_s: float = 60,
        leeway_s: float = 60,
        session_factory: Callable[[], aiohttp.ClientSession] = aiohttp.ClientSession,
        clock: Callable[[], float] = time.monotonic,
        fetch_timeout_s: float = 10,
    ) -> None:
        if not audience:
            raise ValueError("audience must not be empty (use the ACS resource id)")
        if not issuer:
            raise ValueError("issuer must not be empty")
        self.jwks_url = jwks_url
        self.audience = audience
        self.issuer = issuer
        self._refresh_s = refresh_s
        self._min_refetch_s = min_refetch_s
        self._no_keys_retry_s = min(min_refetch_s, 5.0)
        self._leeway_s = leeway_s
        self._session_factory = session_factory
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=fetch_timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()
        self._keys: dict[str, Any] | None = None
        self._fetched_at = 0.0  # clock() of the last successful fetch
        self._attempted_at: float | None = None  # clock() of the last finished fetch attempt
        self._warned_stale = False
        self.fetches = 0  # JWKS fetch attempts, successful or not

    # -- public -----------------------------------------------------------------------------

    async def validate(self, authorization_header: str | None) -> dict[str, Any]:
        """The claims of the bearer token in ``authorization_header``; :class:`AuthError` if refused."""
        token = self._bearer_token(authorization_header)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise AuthError("malformed token") from None
        if header.get("alg") != "RS256":
            raise AuthError("unsupported algorithm")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("no key id")
        key = await self._signing_key(kid)
        try:
            return jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self._leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("not yet valid") from None
        except jwt.InvalidAudienceError:
            raise AuthError("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise AuthError("wrong issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"missing claim {exc.claim}") from None
        except jwt.InvalidSignatureError:
            raise AuthError("bad signature") from None
        except jwt.DecodeError:
            raise AuthError("malformed token") from None
        except jwt.InvalidTokenError:
            raise AuthError("invalid token") from None

    async def close(self) -> None:
        """Close the HTTP session used to fetch keys (a later fetch opens a new one)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # -- internals --------------------------------------------------------------------------

    @staticmethod
    def _bearer_token(authorization_header: str | None) -> str:
        if not authorization_header:
            raise AuthError("missing authorization")
        scheme, _, token = authorization_header.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise AuthError("not a bearer token")
        token = token.strip()
        if not token:
            raise AuthError("missing token")
        if len(token) > _MAX_JWT:
            raise AuthError("malformed token")
        return token

    def _refresh_due(self, now: float) -> bool:
        if self._attempted_at is None:
            return True
        since_attempt = now - self._attempted_at
        if self._keys is None:
            return since_attempt >= self._no_keys_retry_s
        return now - self._fetched_at >= self._refresh_s and since_attempt >= self._min_refetch_s

    async def _signing_key(self, kid: str) -> Any:
        keys = self._keys
        # Known key and nothing to fetch, or a refresh already under way: use the cached key
        # rather than queue behind the fetch.
        if keys is not None and kid in keys and (self._lock.locked() or not self._refresh_due(self._clock())):
            return keys[kid]
        async with self._lock:
            # Another validation may have fetched while this one waited: decide again.
            now = self._clock()
            if self._refresh_due(now):
                await self._refresh(now, "initial" if self._keys is None else "scheduled")
            if (
                self._keys is not None
                and kid not in self._keys
                and self._attempted_at is not None
                and now - self._attempted_at >= self._min_refetch_s
            ):
                await self._refresh(now, "unknown key id")
            if self._keys is None:
                raise AuthError("signing keys unavailable")
            key = self._keys.get(kid)
            if key is None:
                raise AuthError("unknown key id")
            return key

    async def _refresh(self, now: float, why: str) -> None:
        """Fetch the key set; on failure keep the cached one. Call with the lock held."""
        self.fetches += 1
        try:
            keys = _parse_jwks(await self._fetch_document())
        except (aiohttp.ClientError, TimeoutError, ValueError, _JwksError) as exc:
            self._attempted_at = now
            error = str(exc) or type(exc).__name__
            if self._keys is None:
                log.warning("ACS signing keys unavailable", jwks_url=self.jwks_url, reason=why, error=error)
            elif not self._warned_stale:
                self._warned_stale = True
                log.warning(
                    "ACS signing key refresh failed, keeping the cached keys",
                    jwks_url=self.jwks_url, reason=why, error=error, cached=len(self._keys),
                )
            return
        self._attempted_at = now
        self._fetched_at = now
        self._keys = keys
        self._warned_stale = False
        log.info("ACS signing keys loaded", jwks_url=self.jwks_url, reason=why, keys=len(keys))

    async def _fetch_document(self) -> Any:
        if self._session is None or self._session.closed:
            self._session = self._session_factory()
        async with self._session.get(self.jwks_url, timeout=self._timeout) as response:
            if response.status != 200:
                raise _JwksError(f"HTTP {response.status}")
            return await response.json(content_type=None)


# ---------------------------------------------------------------------------------------------
# Event Grid
# ---------------------------------------------------------------------------------------------


def eventgrid_validation_code(body: Any) -> str | None:
    """The ``validationCode`` to echo back when ``body`` (a parsed Event Grid delivery, a JSON
    array of events) is a subscription validation event; ``None`` otherwise.

    The reply is ``{"validationResponse": <code>}`` with status 200.
    """
    events = [body] if isinstance(body, dict) else body
    if not isinstance(events, list):
        return None
    for event in events:
        if not isinstance(event, dict) or event.get("eventType") != EVENTGRID_VALIDATION_EVENT:
            continue
        data = event.get("data")
        code = data.get("validationCode") if isinstance(data, dict) else None
        if isinstance(code, str) and code:
            return code
    return None


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

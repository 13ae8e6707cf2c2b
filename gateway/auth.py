"""Carrier authentication: the checks that prove a request or a media socket comes from the carrier.

* Twilio signs every webhook and the media WebSocket upgrade with ``X-Twilio-Signature``:
  HMAC-SHA1, keyed with the account Auth Token, over the URL Twilio requested followed by the
  form parameters. :func:`check_twilio_signature` checks it; :func:`public_url_for` rebuilds the
  URL Twilio signed from the configured public address (the address the gateway sees behind a
  TLS-terminating proxy is not the one Twilio used).
* :class:`CallTokens` issues and checks short-lived signed call tokens, carried in a TwiML
  ``<Parameter>`` or an ACS transport URL, each naming the carrier it was issued for. Every
  replica holding the same key can check them, with no shared state.
* Azure Communication Services puts an RS256 JWT in ``Authorization: Bearer`` on the media
  WebSocket upgrade and on every Call Automation callback. :class:`AcsJwtValidator` checks it
  against the published signing keys (fetched one request at a time, shared, cached, refreshed).
* Event Grid helpers: the subscription validation handshake and a constant-time secret check.

Nothing here logs a token or a secret; error reasons are short and safe to log.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import heapq
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
    "SigningKeysUnavailable",
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


# ---------------------------------------------------------------------------------------------
# ACS JWTs
# ---------------------------------------------------------------------------------------------

_MAX_JWT = 16 * 1024


class AuthError(Exception):
    """A bearer token was refused. ``reason`` is short, safe to log, and never contains the token."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SigningKeysUnavailable(AuthError):
    """The token could not be checked: the signing keys could not be fetched (a 503, not a 401)."""


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


_REQUIRED_CLAIMS = ["exp", "iss", "aud"]
# every claim check PyJWT makes, asked for explicitly: the checks before the keys are known turn
# off the signature only
_CLAIM_CHECKS = {f"verify_{name}": True for name in ("exp", "nbf", "iat", "aud", "iss", "sub", "jti")}
_CLAIM_ERRORS: list[tuple[type[jwt.InvalidTokenError], str]] = [
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.ImmatureSignatureError, "not yet valid"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.DecodeError, "malformed token"),
]


def _refusal(exc: jwt.InvalidTokenError) -> AuthError:
    """The :class:`AuthError` for a PyJWT refusal (its reason names the check, not the token)."""
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return AuthError(f"missing claim {exc.claim}")
    reason = next((reason for kind, reason in _CLAIM_ERRORS if isinstance(exc, kind)), "invalid token")
    return AuthError(reason)


class AcsJwtValidator:
    """Check the ``Authorization: Bearer`` JWT that ACS sends on media sockets and callbacks.

    The token must be RS256, signed by a key of the JWKS at ``jwks_url`` (matched by ``kid``),
    from ``issuer``, for ``audience`` (the ACS resource id), and within its validity period
    (``leeway_s`` of clock skew allowed). Everything that can be checked without the keys is
    checked first: a token with another algorithm (``HS256`` and ``none`` included), issuer or
    audience, or out of its validity period, is refused without any key being fetched.

    Signing keys are fetched with aiohttp on first use, cached, refreshed every ``refresh_s``
    seconds (``clock`` is a monotonic clock) and re-fetched when a token names an unknown key
    id, at most once per ``min_refetch_s``. One fetch at a time: every validation that needs
    the keys waits for the fetch under way (at most ``fetch_timeout_s``), never for a fetch of
    its own after it. If a fetch fails, the cached keys stay in use; with no keys at all,
    tokens are refused at once with :class:`SigningKeysUnavailable` for ``failure_backoff_s``,
    then the next validation tries again.
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
        failure_backoff_s: float = 30,
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
        self._failure_backoff_s = failure_backoff_s
        self._leeway_s = leeway_s
        self._session_factory = session_factory
        self._clock = clock
        self._fetch_timeout_s = fetch_timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._fetch: asyncio.Task[None] | None = None  # the fetch under way, shared by its waiters
        self._keys: dict[str, Any] | None = None
        self._fetched_at = 0.0  # clock() when the last successful fetch ended
        self._attempted_at: float | None = None  # clock() when the last fetch attempt ended
        self._warned_stale = False
        self.fetches = 0  # JWKS fetch attempts, successful or not

    # -- public -----------------------------------------------------------------------------

    async def validate(self, authorization_header: str | None) -> dict[str, Any]:
        """The claims of the bearer token in ``authorization_header``; :class:`AuthError` if refused
        (:class:`SigningKeysUnavailable` when it could not be checked)."""
        token = self._bearer_token(authorization_header)
        kid = self._key_id(token)
        self._decode(token, None)  # what can be refused without the keys is refused here
        return self._decode(token, await self._signing_key(kid))

    async def close(self) -> None:
        """Stop a fetch under way and close the HTTP session used to fetch keys (a later fetch
        opens a new one)."""
        fetch, self._fetch = self._fetch, None
        if fetch is not None:
            fetch.cancel()
            await asyncio.gather(fetch, return_exceptions=True)
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

    @staticmethod
    def _key_id(token: str) -> str:
        """The ``kid`` of an RS256 token's header."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise AuthError("malformed token") from None
        if header.get("alg") != "RS256":
            raise AuthError("unsupported algorithm")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("no key id")
        return kid

    def _decode(self, token: str, key: Any) -> dict[str, Any]:
        """The token's claims, checked; the signature too unless ``key`` is None."""
        options: dict[str, Any] = {**_CLAIM_CHECKS, "require": _REQUIRED_CLAIMS, "verify_signature": key is not None}
        try:
            return jwt.decode(token, key, algorithms=["RS256"], audience=self.audience, issuer=self.issuer,
                              leeway=self._leeway_s, options=options)  # type: ignore[arg-type]
        except jwt.InvalidTokenError as exc:
            raise _refusal(exc) from None

    def _refresh_due(self, now: float, kid: str) -> str | None:
        """Why the keys should be fetched before checking a token signed with ``kid`` (None: not now)."""
        if self._attempted_at is None:
            return "initial"
        since_attempt = now - self._attempted_at
        if self._keys is None:
            return "initial" if since_attempt >= self._failure_backoff_s else None
        if since_attempt < self._min_refetch_s:
            return None
        if kid not in self._keys:
            return "unknown key id"
        return "scheduled" if now - self._fetched_at >= self._refresh_s else None

    async def _signing_key(self, kid: str) -> Any:
        fetch = self._fetch
        if fetch is None:
            why = self._refresh_due(self._clock(), kid)
            if why is not None:
                fetch = self._fetch = asyncio.create_task(self._refresh(why), name="acs-jwks-fetch")
                await asyncio.wait([fetch])  # the fetch goes on for the others if this request goes
        elif self._keys is None or kid not in self._keys:
            await asyncio.wait([fetch])  # join the fetch under way; a known key does not queue behind it
        if self._keys is None:
            raise SigningKeysUnavailable("signing keys unavailable")
        key = self._keys.get(kid)
        if key is None:
            raise AuthError("unknown key id")
        return key

    async def _refresh(self, why: str) -> None:
        """Fetch the key set (the one fetch under way); on failure keep the cached one."""
        self.fetches += 1
        result = await self._fetch_keys()
        self._attempted_at = self._clock()
        self._fetch = None
        if isinstance(result, str):
            self._failed(why, result)
            return
        self._fetched_at = self._attempted_at
        self._keys = result
        self._warned_stale = False
        log.info("ACS signing keys loaded", jwks_url=self.jwks_url, reason=why, keys=len(result))

    async def _fetch_keys(self) -> dict[str, Any] | str:
        """The published signing keys, or why they could not be had (within the fetch timeout)."""
        try:
            async with asyncio.timeout(self._fetch_timeout_s):
                return _parse_jwks(await self._fetch_document())
        except Exception as exc:  # whatever went wrong, there are no keys: logged, retried later
            return str(exc) or type(exc).__name__

    def _failed(self, why: str, error: str) -> None:
        if self._keys is None:
            log.warning("ACS signing keys unavailable", jwks_url=self.jwks_url, reason=why, error=error,
                        retry_in_s=self._failure_backoff_s)
        elif not self._warned_stale:
            self._warned_stale = True
            log.warning("ACS signing key refresh failed, keeping the cached keys",
                        jwks_url=self.jwks_url, reason=why, error=error, cached=len(self._keys))

    async def _fetch_document(self) -> Any:
        if self._session is None or self._session.closed:
            self._session = self._session_factory()
        async with self._session.get(self.jwks_url) as response:
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

"""ACS authentication: Azure Communication Services puts an RS256 JWT in ``Authorization: Bearer``
on the media WebSocket upgrade and on every Call Automation callback; :class:`AcsJwtValidator`
checks it against the published signing keys (fetched once for every waiter, cached, refreshed;
a failed fetch is remembered for a short back-off). Event Grid's subscription handshake is here too.

Nothing here logs a token; error reasons are short and safe to log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt

from gateway.log import get_logger

log = get_logger("gateway.acs.auth")

__all__ = ["ACS_ISSUER", "ACS_JWKS_URL", "EVENTGRID_VALIDATION_EVENT", "AcsJwtValidator", "AuthError",
           "SigningKeysUnavailable", "eventgrid_validation_code"]

ACS_ISSUER = "https://acscallautomation.communication.azure.com"
ACS_JWKS_URL = "https://acscallautomation.communication.azure.com/calling/keys"
EVENTGRID_VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"


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

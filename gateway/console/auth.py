"""Who may use the console. With ``gateway.console_token`` set, an operator logs in once with the
token (a form) and gets a signed session cookie (HttpOnly, SameSite=Strict, scoped to ``/console``);
every console request and the console's media socket check it. The cookie holds an expiry and an
HMAC of it keyed by the token, never the token: changing the token logs everyone out, and every
worker and replica with the same token accepts it. Without a token the console is off (404),
unless ``insecure_dev_mode`` is on: then it is open, as the carriers' unauthenticated requests are.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Literal

from aiohttp import web

from gateway.config import GatewayConfig
from gateway.log import get_logger

__all__ = ["COOKIE", "SESSION_S", "LoginThrottle", "console_mode", "issue_cookie", "refusal", "valid_cookie"]

log = get_logger("gateway.console")

COOKIE = "gateway_console"
SESSION_S = 12 * 3600  # a login lasts this long
PATH = "/console"

Mode = Literal["token", "open", "off"]


def console_mode(config: GatewayConfig) -> Mode:
    """"token": operators log in with the token; "open": insecure development mode, no login;
    "off": the console does not exist."""
    token = config.gateway.console_token
    if token is not None and token.get_secret_value():
        return "token"
    return "open" if config.gateway.insecure_dev_mode else "off"


def _key(config: GatewayConfig) -> bytes:
    token = config.gateway.console_token
    assert token is not None
    return hashlib.sha256(b"gateway-console|" + token.get_secret_value().encode()).digest()


def _sign(config: GatewayConfig, expires: int) -> str:
    return hmac.new(_key(config), f"session|{expires}".encode(), hashlib.sha256).hexdigest()


def issue_cookie(config: GatewayConfig, now: float | None = None) -> str:
    """A session cookie's value for an operator who gave the right token."""
    expires = int((time.time() if now is None else now) + SESSION_S)
    return f"{expires}.{_sign(config, expires)}"


def valid_cookie(config: GatewayConfig, value: str | None, now: float | None = None) -> bool:
    """Whether ``value`` is a session cookie this console issued and that has not expired."""
    if console_mode(config) != "token" or not value:
        return False
    expires_text, _, signature = value.partition(".")
    if not expires_text.isdigit() or len(expires_text) > 12:
        return False
    expires = int(expires_text)
    if expires < (time.time() if now is None else now) or expires > time.time() + SESSION_S + 60:
        return False
    return hmac.compare_digest(signature.encode("ascii", "replace"), _sign(config, expires).encode())


def token_matches(config: GatewayConfig, given: str) -> bool:
    token = config.gateway.console_token
    if token is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.get_secret_value().encode())


def same_origin(request: web.Request) -> bool:
    """A request that says where it comes from must come from the gateway's own pages (a
    request without ``Origin`` is not a cross-site one a web page would make). The console's pages
    send no referrer, so their form posts and their own ``fetch`` posts carry ``Origin: null``: such
    a request passes only when the web page's user agent says it came from the same origin
    (``Sec-Fetch-Site``, a header no page can set). One it says came from another site never passes."""
    site = request.headers.get("Sec-Fetch-Site")
    if site in ("cross-site", "same-site"):
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    if origin == "null":
        return site == "same-origin"
    host = request.headers.get("Host", "")
    return origin.split("://", 1)[-1].rstrip("/") == host


def refusal(request: web.Request, config: GatewayConfig) -> web.Response | None:
    """None when this request may use the console; else the answer: 404 while the console is off,
    403 from another site's page, 401 without a valid session cookie."""
    mode = console_mode(config)
    if mode == "off":
        return web.json_response({"error": "the console is off: set GATEWAY_CONSOLE_TOKEN (gateway.console_token) "
                                           "to turn it on"}, status=404)
    if not same_origin(request):
        log.warning("console request refused: from another site", path=request.path,
                    origin=request.headers.get("Origin", "")[:100])
        return web.json_response({"error": "console requests must come from the console's own page"}, status=403)
    if mode == "open" or valid_cookie(config, request.cookies.get(COOKIE)):
        return None
    return web.json_response({"error": "log in to the console first (POST /console/login with the token)"},
                             status=401)


def set_session(response: web.StreamResponse, config: GatewayConfig, secure: bool) -> None:
    response.set_cookie(COOKIE, issue_cookie(config), max_age=SESSION_S, path=PATH, httponly=True,
                        samesite="Strict", secure=secure)


def end_session(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path=PATH)


class LoginThrottle:
    """Wrong tokens, counted per address: after ``limit`` of them within ``window_s`` an address
    gets no more tries until the oldest of them is ``window_s`` old (the token is long and random;
    this keeps a guesser from trying it at the speed of the network). A right token clears the count."""

    MAX_ADDRESSES = 10_000  # addresses remembered at most (the oldest are forgotten first)

    def __init__(self, limit: int = 10, window_s: float = 60.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self._failures: dict[str, list[float]] = {}

    def _recent(self, address: str, now: float) -> list[float]:
        times = [t for t in self._failures.get(address, ()) if now - t < self.window_s]
        if times:
            self._failures[address] = times
        else:
            self._failures.pop(address, None)
        return times

    def retry_after(self, address: str, now: float) -> float | None:
        """Seconds until ``address`` may try again (None: it may now)."""
        times = self._recent(address, now)
        if len(times) < self.limit:
            return None
        return max(0.0, times[0] + self.window_s - now)

    def failed(self, address: str, now: float) -> None:
        if address not in self._failures and len(self._failures) >= self.MAX_ADDRESSES:
            self._failures.pop(next(iter(self._failures)))
        self._failures.setdefault(address, []).append(now)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)


LOGIN_THROTTLE: web.AppKey[LoginThrottle] = web.AppKey("console_login_throttle", LoginThrottle)

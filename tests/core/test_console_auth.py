"""Who may use the console: its modes, the session cookie (issued, checked, expired, tampered with,
from another token), and the answer to a request (404 off, 403 from another site, 401 without a
session). No sockets: requests are aiohttp's mocked ones."""

from __future__ import annotations

import time

import pytest
from aiohttp.test_utils import make_mocked_request

from gateway.config import GatewayConfig, parse_config
from gateway.console.auth import (
    COOKIE,
    SESSION_S,
    LoginThrottle,
    console_mode,
    issue_cookie,
    refusal,
    token_matches,
    valid_cookie,
)

TOKEN = "console-test-token-0123456789"


def config(token: str | None = TOKEN, insecure: bool = False) -> GatewayConfig:
    lines = ["profiles: {main: {model: gpt-realtime}}", "gateway:", f"  insecure_dev_mode: {str(insecure).lower()}"]
    if token is not None:
        lines.append("  console_token: ${T:-}")
    return parse_config("\n".join(lines) + "\n", env={"T": token or ""})


def request(cookie: str | None = None, origin: str | None = None, host: str = "gw.example:8080",
            site: str | None = None):
    headers = {"Host": host}
    if site is not None:
        headers["Sec-Fetch-Site"] = site
    if cookie is not None:
        headers["Cookie"] = f"{COOKIE}={cookie}"
    if origin is not None:
        headers["Origin"] = origin
    return make_mocked_request("GET", "/console/api/state", headers=headers)


def test_the_console_is_off_without_a_token_open_in_insecure_mode_and_locked_with_one() -> None:
    assert console_mode(config(None)) == "off"
    assert console_mode(config("")) == "off"  # (an empty ${GATEWAY_CONSOLE_TOKEN:-} is no token)
    assert console_mode(config(None, insecure=True)) == "open"
    assert console_mode(config(TOKEN)) == "token"
    assert console_mode(config(TOKEN, insecure=True)) == "token"  # a token always asks for a login


def test_an_issued_cookie_is_valid_until_it_expires() -> None:
    cfg = config()
    now = time.time()
    cookie = issue_cookie(cfg, now=now)
    assert valid_cookie(cfg, cookie)
    assert valid_cookie(cfg, cookie, now=now + SESSION_S - 1)
    assert not valid_cookie(cfg, cookie, now=now + SESSION_S + 1)


def test_the_cookie_holds_no_token_and_a_tampered_one_is_refused() -> None:
    cfg = config()
    cookie = issue_cookie(cfg)
    assert TOKEN not in cookie
    expires, _, signature = cookie.partition(".")
    later = str(int(expires) + 3600)
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    for forged in (f"{later}.{signature}", f"{expires}.{flipped}", f"{expires}.", expires, "", "x.y",
                   f"{'9' * 13}.{signature}", f"-1.{signature}", f"{expires}.{signature}extra"):
        assert not valid_cookie(cfg, forged), forged
    assert not valid_cookie(cfg, None)


def test_a_cookie_far_in_the_future_is_refused_even_when_signed() -> None:
    # (an expiry beyond what this gateway ever issues: not one of its cookies, whatever the signature says)
    cfg = config()
    cookie = issue_cookie(cfg, now=time.time() + 10 * SESSION_S)
    assert not valid_cookie(cfg, cookie)


def test_changing_the_token_logs_everyone_out() -> None:
    cookie = issue_cookie(config(TOKEN))
    assert valid_cookie(config(TOKEN), cookie)  # (another worker or replica with the same token)
    assert not valid_cookie(config(TOKEN + "-rotated"), cookie)


def test_no_cookie_is_valid_while_the_console_is_open_or_off() -> None:
    cookie = issue_cookie(config())
    assert not valid_cookie(config(None, insecure=True), cookie)
    assert not valid_cookie(config(None), cookie)


def test_the_token_must_match_exactly() -> None:
    cfg = config()
    assert token_matches(cfg, TOKEN)
    for wrong in ("", TOKEN[:-1], TOKEN + " ", TOKEN.upper(), "\udcff"):
        assert not token_matches(cfg, wrong)
    assert not token_matches(config(None, insecure=True), "")


def test_requests_are_refused_404_while_the_console_is_off() -> None:
    answer = refusal(request(), config(None))
    assert answer is not None and answer.status == 404
    assert answer.text is not None and "GATEWAY_CONSOLE_TOKEN" in answer.text


def test_requests_need_a_valid_session_cookie_with_a_token() -> None:
    cfg = config()
    missing = refusal(request(), cfg)
    assert missing is not None and missing.status == 401
    forged = refusal(request(cookie="1.abc"), cfg)
    assert forged is not None and forged.status == 401
    assert refusal(request(cookie=issue_cookie(cfg)), cfg) is None


@pytest.mark.parametrize("origin", ["http://evil.example", "http://gw.example:8081", "http://gw.example",
                                    "null", "http://gw.example:8080.evil.example"])
def test_a_request_from_another_site_is_refused_403_even_with_a_cookie(origin: str) -> None:
    cfg = config()
    answer = refusal(request(cookie=issue_cookie(cfg), origin=origin), cfg)
    assert answer is not None and answer.status == 403


def test_a_request_from_the_console_page_itself_passes() -> None:
    cfg = config()
    cookie = issue_cookie(cfg)
    assert refusal(request(cookie=cookie, origin="http://gw.example:8080"), cfg) is None
    assert refusal(request(cookie=cookie, origin="https://gw.example:8080"), cfg) is None  # (behind TLS)


def test_the_open_console_needs_no_cookie_but_still_refuses_other_sites() -> None:
    cfg = config(None, insecure=True)
    assert refusal(request(), cfg) is None
    answer = refusal(request(origin="http://evil.example"), cfg)
    assert answer is not None and answer.status == 403


def test_a_post_from_the_console_page_that_says_origin_null_passes_when_the_user_agent_says_same_origin() -> None:
    # the console's pages send no referrer: their form posts carry Origin: null (and Sec-Fetch-Site)
    cfg = config()
    cookie = issue_cookie(cfg)
    assert refusal(request(cookie=cookie, origin="null", site="same-origin"), cfg) is None
    for site in (None, "cross-site", "same-site", "none"):
        answer = refusal(request(cookie=cookie, origin="null", site=site), cfg)
        assert answer is not None and answer.status == 403, site


def test_a_request_the_user_agent_says_came_from_another_site_is_refused_whatever_its_origin() -> None:
    cfg = config()
    cookie = issue_cookie(cfg)
    for site in ("cross-site", "same-site"):
        for origin in (None, "http://gw.example:8080"):
            answer = refusal(request(cookie=cookie, origin=origin, site=site), cfg)
            assert answer is not None and answer.status == 403, (site, origin)
    assert refusal(request(cookie=cookie, site="none"), cfg) is None  # (typed into the address bar)


def test_the_login_throttle_stops_an_address_after_its_wrong_tokens_until_the_oldest_is_a_window_old() -> None:
    throttle = LoginThrottle(limit=3, window_s=60.0)
    for t in (0.0, 10.0, 20.0):
        assert throttle.retry_after("10.0.0.1", t) is None
        throttle.failed("10.0.0.1", t)
    assert throttle.retry_after("10.0.0.1", 25.0) == 35.0  # the first of the three is 60 s old at 60
    assert throttle.retry_after("10.0.0.2", 25.0) is None  # (another address is not held back)
    assert throttle.retry_after("10.0.0.1", 60.0) is None  # one of the three has aged out
    throttle.failed("10.0.0.1", 61.0)
    assert throttle.retry_after("10.0.0.1", 61.5) == 8.5
    throttle.succeeded("10.0.0.1")
    assert throttle.retry_after("10.0.0.1", 61.5) is None


def test_the_login_throttle_remembers_a_bounded_number_of_addresses() -> None:
    throttle = LoginThrottle(limit=1, window_s=60.0)
    throttle.MAX_ADDRESSES = 3
    for n in range(5):
        throttle.failed(f"10.0.0.{n}", 0.0)
    assert [throttle.retry_after(f"10.0.0.{n}", 1.0) is not None for n in range(5)] == [False, False, True, True, True]

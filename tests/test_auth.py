"""Carrier authentication: Twilio signatures, call tokens, ACS JWTs, Event Grid helpers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from multidict import MultiDict
from structlog.testing import capture_logs
from twilio.request_validator import RequestValidator

from gateway.auth import CallTokens, TokenError, public_url_for, secret_matches
from gateway.carriers.acs.auth import ACS_ISSUER, AcsJwtValidator, AuthError, eventgrid_validation_code
from gateway.carriers.twilio.auth import check_twilio_signature, twilio_signature

# ---------------------------------------------------------------------------------------------
# Twilio signatures
# ---------------------------------------------------------------------------------------------

TOKEN = "12345"
VECTOR_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
VECTOR_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}
VECTOR_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="

AUTH_TOKEN = "d1f0c3a5b7e94f2a8c6d0e1f2a3b4c5d"
VOICE_URL = "https://gw.example.com/twilio/voice"
MEDIA_URL = "wss://gw.example.com/twilio/media"
FORM = {"CallSid": "CA0123456789abcdef0123456789abcdef", "From": "+14255550123", "To": "+18005550100",
        "CallStatus": "ringing", "Direction": "inbound"}


def test_twilio_published_vector() -> None:
    assert twilio_signature(TOKEN, VECTOR_URL, VECTOR_PARAMS) == VECTOR_SIGNATURE
    assert check_twilio_signature(TOKEN, VECTOR_URL, VECTOR_PARAMS, VECTOR_SIGNATURE)


def test_twilio_library_signatures_accepted() -> None:
    validator = RequestValidator(AUTH_TOKEN)
    form_sig = validator.compute_signature(VOICE_URL, FORM)
    assert check_twilio_signature(AUTH_TOKEN, VOICE_URL, FORM, form_sig)
    media_sig = validator.compute_signature(MEDIA_URL, {})
    assert check_twilio_signature(AUTH_TOKEN, MEDIA_URL, None, media_sig)
    assert check_twilio_signature(AUTH_TOKEN, MEDIA_URL, {}, media_sig)


def test_twilio_library_accepts_ours() -> None:
    validator = RequestValidator(AUTH_TOKEN)
    assert validator.validate(VOICE_URL, FORM, twilio_signature(AUTH_TOKEN, VOICE_URL, FORM))
    assert validator.validate(MEDIA_URL, {}, twilio_signature(AUTH_TOKEN, MEDIA_URL))
    url = "https://gw.example.com/twilio/voice?route=sales&x=a%20b"
    assert validator.validate(url, FORM, twilio_signature(AUTH_TOKEN, url, FORM))


def test_twilio_repeated_names_match_library() -> None:
    multi = MultiDict([("b", "x"), ("a", "2"), ("a", "1"), ("a", "2")])
    theirs = RequestValidator(AUTH_TOKEN).compute_signature(VOICE_URL, multi)
    assert twilio_signature(AUTH_TOKEN, VOICE_URL, multi) == theirs
    assert twilio_signature(AUTH_TOKEN, VOICE_URL, {"a": ["2", "1"], "b": "x"}) == theirs
    assert check_twilio_signature(AUTH_TOKEN, VOICE_URL, multi, theirs)
    # Order of names must not matter, the values must.
    assert twilio_signature(AUTH_TOKEN, VOICE_URL, {"b": "x", "a": ["1", "2"]}) == theirs
    assert twilio_signature(AUTH_TOKEN, VOICE_URL, {"a": ["1", "3"], "b": "x"}) != theirs


@pytest.mark.parametrize(
    ("token", "url", "params"),
    [
        ("wrong-token", VOICE_URL, FORM),
        (AUTH_TOKEN, VOICE_URL + "?x=1", FORM),
        (AUTH_TOKEN, "https://evil.example.com/twilio/voice", FORM),
        (AUTH_TOKEN, "http://gw.example.com/twilio/voice", FORM),
        (AUTH_TOKEN, VOICE_URL, {**FORM, "To": "+18005550199"}),
        (AUTH_TOKEN, VOICE_URL, {**FORM, "Extra": "1"}),
        (AUTH_TOKEN, VOICE_URL, {k: v for k, v in FORM.items() if k != "From"}),
        (AUTH_TOKEN, VOICE_URL, None),
    ],
)
def test_twilio_tampering_rejected(token: str, url: str, params: dict[str, str] | None) -> None:
    signature = RequestValidator(AUTH_TOKEN).compute_signature(VOICE_URL, FORM)
    assert check_twilio_signature(AUTH_TOKEN, VOICE_URL, FORM, signature)
    assert not check_twilio_signature(token, url, params, signature)


@pytest.mark.parametrize("signature", [None, "", "not-base64!", "é" * 28, VECTOR_SIGNATURE[:-2]])
def test_twilio_bad_signature_values(signature: str | None) -> None:
    assert not check_twilio_signature(TOKEN, VECTOR_URL, VECTOR_PARAMS, signature)


def test_twilio_empty_token_never_matches() -> None:
    assert not check_twilio_signature("", VOICE_URL, FORM, twilio_signature("", VOICE_URL, FORM))


def test_twilio_non_text_param_rejected_not_raised() -> None:
    signature = twilio_signature(AUTH_TOKEN, VOICE_URL, FORM)
    assert not check_twilio_signature(AUTH_TOKEN, VOICE_URL, {**FORM, "f": object()}, signature)  # type: ignore[dict-item]
    assert not check_twilio_signature(AUTH_TOKEN, "https://gw.example.com:port/x", None, signature)


@pytest.mark.parametrize(
    ("signed", "checked"),
    [
        ("https://gw.example.com:443/twilio/voice", "https://gw.example.com/twilio/voice"),
        ("https://gw.example.com/twilio/voice", "https://gw.example.com:443/twilio/voice"),
        ("http://gw.example.com:80/twilio/voice?a=1", "http://gw.example.com/twilio/voice?a=1"),
        ("wss://gw.example.com:443/twilio/media", "wss://gw.example.com/twilio/media"),
        ("wss://gw.example.com/twilio/media", "wss://gw.example.com:443/twilio/media"),
        ("ws://127.0.0.1:80/twilio/media", "ws://127.0.0.1/twilio/media"),
        ("https://gw.example.com:8443/twilio/voice", "https://gw.example.com:8443/twilio/voice"),
    ],
)
def test_twilio_default_port_variants(signed: str, checked: str) -> None:
    signature = twilio_signature(AUTH_TOKEN, signed, FORM)
    assert check_twilio_signature(AUTH_TOKEN, checked, FORM, signature)


@pytest.mark.parametrize(
    ("signed", "checked"),
    [
        ("https://gw.example.com/twilio/voice", "https://gw.example.com:8443/twilio/voice"),
        ("https://gw.example.com:8443/twilio/voice", "https://gw.example.com/twilio/voice"),
        ("https://gw.example.com:80/twilio/voice", "https://gw.example.com/twilio/voice"),
        ("wss://gw.example.com:80/twilio/media", "wss://gw.example.com/twilio/media"),
    ],
)
def test_twilio_other_ports_not_interchangeable(signed: str, checked: str) -> None:
    signature = twilio_signature(AUTH_TOKEN, signed, FORM)
    assert not check_twilio_signature(AUTH_TOKEN, checked, FORM, signature)


@pytest.mark.parametrize(
    ("base", "path", "query", "websocket", "expected"),
    [
        ("https://gw.example.com", "/twilio/voice", "", False, "https://gw.example.com/twilio/voice"),
        ("https://gw.example.com/", "/twilio/voice", "", False, "https://gw.example.com/twilio/voice"),
        ("https://gw.example.com", "/twilio/media", "", True, "wss://gw.example.com/twilio/media"),
        ("http://127.0.0.1:8080", "/twilio/media", "", True, "ws://127.0.0.1:8080/twilio/media"),
        ("https://gw.example.com/prefix/", "/twilio/voice", "a=1&b=2", False,
         "https://gw.example.com/prefix/twilio/voice?a=1&b=2"),
        ("HTTPS://gw.example.com", "twilio/voice", "?a=1", False, "https://gw.example.com/twilio/voice?a=1"),
        ("wss://gw.example.com", "/twilio/voice", "", False, "https://gw.example.com/twilio/voice"),
        ("wss://gw.example.com", "/twilio/media", "", True, "wss://gw.example.com/twilio/media"),
    ],
)
def test_public_url_for(base: str, path: str, query: str, websocket: bool, expected: str) -> None:
    assert public_url_for(base, path, query, websocket=websocket) == expected


@pytest.mark.parametrize("base", ["gw.example.com", "ftp://gw.example.com", "https://", ""])
def test_public_url_for_rejects_bad_base(base: str) -> None:
    with pytest.raises(ValueError):
        public_url_for(base, "/twilio/voice")


def test_public_url_then_library_signature() -> None:
    """A proxy rewrote scheme/host; the check still succeeds against the configured public URL."""
    url = public_url_for("https://gw.example.com/", "/twilio/media", websocket=True)
    signature = RequestValidator(AUTH_TOKEN).compute_signature("wss://gw.example.com/twilio/media", {})
    assert check_twilio_signature(AUTH_TOKEN, url, None, signature)
    assert not check_twilio_signature(AUTH_TOKEN, "http://10.0.0.5:8080/twilio/media", None, signature)


# ---------------------------------------------------------------------------------------------
# Call tokens
# ---------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


KEY = b"0123456789abcdef0123456789abcdef"
CLAIMS = {"call": "CA0123456789abcdef", "to": "+18005550100", "profile": "sales/ünïcode"}


def test_call_token_round_trip() -> None:
    tokens = CallTokens(KEY, clock=FakeClock(1_700_000_000.0))
    token = tokens.issue(CLAIMS, ttl_s=60)
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", token)
    assert quote(token, safe="") == token
    assert tokens.verify(token) == CLAIMS
    # Another replica with the same key accepts it.
    assert CallTokens(KEY, clock=FakeClock(1_700_000_030.0)).verify(token) == CLAIMS


def test_call_token_default_clock_is_wall_time() -> None:
    tokens = CallTokens(KEY)
    token = tokens.issue({"call": "x"}, ttl_s=60)
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert abs(payload["exp"] - (time.time() + 60)) < 5


def test_call_token_expiry() -> None:
    clock = FakeClock(1000.0)
    tokens = CallTokens(KEY, clock=clock)
    token = tokens.issue(CLAIMS, ttl_s=30)
    clock.t = 1029.9
    assert tokens.verify(token) == CLAIMS
    clock.t = 1030.0
    with pytest.raises(TokenError) as caught:
        tokens.verify(token)
    assert caught.value.reason == "expired"


def _resign(payload: dict[str, Any], key: bytes) -> str:
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    sig = base64.urlsafe_b64encode(hmac.new(key, body.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
    return f"{body}.{sig}"


def test_call_token_tampering() -> None:
    clock = FakeClock(1000.0)
    tokens = CallTokens(KEY, clock=clock)
    token = tokens.issue(CLAIMS, ttl_s=30)
    payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=="))
    body["to"] = "+19995550000"
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    longer_life = dict(body, to=CLAIMS["to"], exp=body["exp"] + 3600)
    for bad in (f"{forged}.{signature}", f"{payload}.{flipped}", _resign(longer_life, b"other key")):
        with pytest.raises(TokenError) as caught:
            tokens.verify(bad)
        assert caught.value.reason == "bad signature"
    # Sanity: the same forgery signed with the right key is accepted, so it is the key that matters.
    assert tokens.verify(_resign(longer_life, KEY)) == CLAIMS


def test_call_token_wrong_key() -> None:
    token = CallTokens(KEY).issue(CLAIMS, ttl_s=30)
    with pytest.raises(TokenError) as caught:
        CallTokens(b"another key entirely").verify(token)
    assert caught.value.reason == "bad signature"
    assert token not in str(caught.value)


@pytest.mark.parametrize(
    "garbage",
    ["", ".", "abc", "a.b.c", "!!.??", "abc.", ".abc", "a" * 5000 + ".b", "ab cd.ef", "YQ.YQ=="],
)
def test_call_token_garbage(garbage: str) -> None:
    with pytest.raises(TokenError) as caught:
        CallTokens(KEY).verify(garbage)
    assert caught.value.reason == "malformed"


@pytest.mark.parametrize(
    "payload",
    [[1, 2], {"exp": "soon"}, {"exp": True}, {"call": "x"}, {"call": 5, "exp": 2e9}],
)
def test_call_token_signed_but_malformed(payload: Any) -> None:
    with pytest.raises(TokenError) as caught:
        CallTokens(KEY, clock=FakeClock(1000.0)).verify(_resign(payload, KEY))
    assert caught.value.reason == "malformed"


def test_call_token_names_its_carrier_and_is_spent_once() -> None:
    clock = FakeClock(1000.0)
    tokens = CallTokens(KEY, clock=clock)
    twilio_token = tokens.issue({"call": "CA1"}, ttl_s=30, carrier="twilio")
    assert tokens.verify(twilio_token, carrier="twilio") == {"call": "CA1", "carrier": "twilio"}
    with pytest.raises(TokenError) as caught:
        tokens.verify(twilio_token, carrier="acs")
    assert caught.value.reason == "for another carrier"
    tokens.spend(twilio_token)
    with pytest.raises(TokenError) as caught:
        tokens.spend(twilio_token)
    assert caught.value.reason == "already used"
    tokens.spend(tokens.issue({"call": "CA2"}, ttl_s=30, carrier="twilio"))  # another token: its own use
    clock.t += 30
    with pytest.raises(TokenError) as caught:
        tokens.spend(twilio_token)
    assert caught.value.reason == "expired"
    assert tokens.spend(tokens.issue({"call": "CA3"}, ttl_s=30)) is None
    assert len(tokens._spent) == 1  # the expired ones are forgotten


def test_call_token_issue_arguments() -> None:
    tokens = CallTokens(KEY)
    with pytest.raises(ValueError):
        tokens.issue({"exp": "1"}, ttl_s=30)
    with pytest.raises(ValueError):
        tokens.issue(CLAIMS, ttl_s=0)
    with pytest.raises(TypeError):
        tokens.issue({"n": 1}, ttl_s=30)  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        CallTokens(b"")
    with pytest.raises(TypeError):
        CallTokens("text key")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# ACS JWTs
# ---------------------------------------------------------------------------------------------

AUDIENCE = "11111111-2222-3333-4444-555555555555"


@pytest.fixture(scope="module")
def rsa_keys() -> dict[str, rsa.RSAPrivateKey]:
    return {name: rsa.generate_private_key(public_exponent=65537, key_size=2048) for name in ("k1", "k2", "evil")}


def jwk_for(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    entry = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**entry, "kid": kid, "use": "sig", "alg": "RS256"}


def mint(key: rsa.RSAPrivateKey, kid: str, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ACS_ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 300, **claims}
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade_jwt(header: dict[str, Any], claims: dict[str, Any], sign: Any) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64url(sign(signing_input.encode()))}"


def standard_claims() -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ACS_ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 300}


class JwksServer:
    """A local JWKS endpoint that counts fetches and can be made to fail or to hold a response."""

    def __init__(self, keys: list[dict[str, Any]]) -> None:
        self.keys = keys
        self.fetches = 0
        self.status = 200
        self.entered = asyncio.Event()
        self.gate: asyncio.Event | None = None
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, _request: web.Request) -> web.Response:
        self.fetches += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.status != 200:
            return web.Response(status=self.status, text="unavailable")
        return web.json_response({"keys": self.keys})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/calling/keys", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/calling/keys"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def jwks(rsa_keys: dict[str, rsa.RSAPrivateKey]) -> AsyncIterator[JwksServer]:
    server = JwksServer([jwk_for(rsa_keys["k1"], "k1")])
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(5000.0)


@pytest.fixture
async def validator(jwks: JwksServer, clock: FakeClock) -> AsyncIterator[AcsJwtValidator]:
    v = AcsJwtValidator(jwks.url, audience=AUDIENCE, clock=clock)
    try:
        yield v
    finally:
        await v.close()


async def refused(v: AcsJwtValidator, header: str | None) -> str:
    with pytest.raises(AuthError) as caught:
        await v.validate(header)
    return caught.value.reason


async def test_acs_valid_token(validator: AcsJwtValidator, jwks: JwksServer, rsa_keys) -> None:
    token = mint(rsa_keys["k1"], "k1", sub="acs")
    claims = await validator.validate(f"Bearer {token}")
    assert claims["aud"] == AUDIENCE and claims["iss"] == ACS_ISSUER and claims["sub"] == "acs"
    assert await validator.validate(f"bearer  {token} ") == claims
    assert validator.fetches == 1 and jwks.fetches == 1


async def test_acs_time_checks(validator: AcsJwtValidator, rsa_keys) -> None:
    now = int(time.time())
    key = rsa_keys["k1"]
    assert await refused(validator, "Bearer " + mint(key, "k1", iat=now - 7200, nbf=now - 7200, exp=now - 3600)) \
        == "expired"
    assert await refused(validator, "Bearer " + mint(key, "k1", nbf=now + 3600, exp=now + 7200)) == "not yet valid"
    # Within the clock-skew leeway (60 s): accepted.
    assert await validator.validate("Bearer " + mint(key, "k1", iat=now - 600, nbf=now - 600, exp=now - 10))
    assert await validator.validate("Bearer " + mint(key, "k1", iat=now + 10, nbf=now + 10))


async def test_acs_claim_checks(validator: AcsJwtValidator, rsa_keys) -> None:
    key = rsa_keys["k1"]
    assert await refused(validator, "Bearer " + mint(key, "k1", aud="another-resource")) == "wrong audience"
    assert await refused(validator, "Bearer " + mint(key, "k1", iss="https://issuer.example.com")) == "wrong issuer"
    assert await refused(validator, "Bearer " + mint(key, "k1", exp=None)) == "missing claim exp"
    assert await refused(validator, "Bearer " + mint(key, "k1", aud=None)) == "missing claim aud"


async def test_acs_bad_signature(validator: AcsJwtValidator, rsa_keys) -> None:
    token = mint(rsa_keys["evil"], "k1")
    assert await refused(validator, f"Bearer {token}") == "bad signature"


async def test_acs_algorithm_confusion_refused(validator: AcsJwtValidator, jwks: JwksServer, rsa_keys) -> None:
    public_pem = rsa_keys["k1"].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    hs256 = handmade_jwt({"alg": "HS256", "typ": "JWT", "kid": "k1"}, standard_claims(),
                         lambda data: hmac.new(public_pem, data, hashlib.sha256).digest())
    none = handmade_jwt({"alg": "none", "typ": "JWT", "kid": "k1"}, standard_claims(), lambda _data: b"")
    rs512 = jwt.encode(standard_claims(), rsa_keys["k1"], algorithm="RS512", headers={"kid": "k1"})
    for token in (hs256, none, none.rstrip("."), rs512):
        assert await refused(validator, f"Bearer {token}") in ("unsupported algorithm", "malformed token")
    assert await refused(validator, f"Bearer {hs256}") == "unsupported algorithm"
    assert await refused(validator, f"Bearer {none}") == "unsupported algorithm"
    assert jwks.fetches == 0  # refused before any key was looked up


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing authorization"),
        ("", "missing authorization"),
        ("Basic dXNlcjpwYXNz", "not a bearer token"),
        ("Basic x", "not a bearer token"),
        ("Bearer", "missing token"),
        ("Bearer    ", "missing token"),
        ("Bearer not.a.jwt", "malformed token"),
        ("Bearer garbage", "malformed token"),
        ("Bearer " + "a" * 20000, "malformed token"),
    ],
)
async def test_acs_header_shape(validator: AcsJwtValidator, jwks: JwksServer, header: str | None, reason: str) -> None:
    assert await refused(validator, header) == reason
    assert jwks.fetches == 0


async def test_acs_no_kid(validator: AcsJwtValidator, rsa_keys) -> None:
    token = jwt.encode(standard_claims(), rsa_keys["k1"], algorithm="RS256")
    assert await refused(validator, f"Bearer {token}") == "no key id"


async def test_acs_error_never_contains_token(validator: AcsJwtValidator, rsa_keys) -> None:
    token = mint(rsa_keys["evil"], "k1")
    with pytest.raises(AuthError) as caught:
        await validator.validate(f"Bearer {token}")
    assert token not in str(caught.value) and token.split(".")[2] not in repr(caught.value)
    assert caught.value.__cause__ is None


async def test_acs_unknown_kid_refetch_is_rate_limited(
    validator: AcsJwtValidator, jwks: JwksServer, clock: FakeClock, rsa_keys
) -> None:
    assert await validator.validate("Bearer " + mint(rsa_keys["k1"], "k1"))
    assert jwks.fetches == 1
    clock.t += 61
    assert await refused(validator, "Bearer " + mint(rsa_keys["k2"], "unknown-1")) == "unknown key id"
    assert jwks.fetches == 2 and validator.fetches == 2
    assert await refused(validator, "Bearer " + mint(rsa_keys["k2"], "unknown-2")) == "unknown key id"
    assert jwks.fetches == 2
    clock.t += 59
    assert await refused(validator, "Bearer " + mint(rsa_keys["k2"], "unknown-3")) == "unknown key id"
    assert jwks.fetches == 2
    clock.t += 1
    assert await refused(validator, "Bearer " + mint(rsa_keys["k2"], "unknown-4")) == "unknown key id"
    assert jwks.fetches == 3


async def test_acs_first_token_with_unknown_kid_fetches_once(validator: AcsJwtValidator, jwks: JwksServer,
                                                             rsa_keys) -> None:
    assert await refused(validator, "Bearer " + mint(rsa_keys["k2"], "k2")) == "unknown key id"
    assert jwks.fetches == 1


async def test_acs_key_rotation(validator: AcsJwtValidator, jwks: JwksServer, clock: FakeClock, rsa_keys) -> None:
    old = "Bearer " + mint(rsa_keys["k1"], "k1")
    new = "Bearer " + mint(rsa_keys["k2"], "k2")
    assert await validator.validate(old)
    jwks.keys = [jwk_for(rsa_keys["k2"], "k2")]
    clock.t += 120
    assert (await validator.validate(new))["aud"] == AUDIENCE
    assert jwks.fetches == 2
    # The old key was withdrawn from the set: refused, with no extra fetch inside the rate limit.
    assert await refused(validator, old) == "unknown key id"
    assert jwks.fetches == 2


async def test_acs_scheduled_refresh(jwks: JwksServer, clock: FakeClock, rsa_keys) -> None:
    v = AcsJwtValidator(jwks.url, audience=AUDIENCE, clock=clock, refresh_s=3600)
    try:
        token = "Bearer " + mint(rsa_keys["k1"], "k1")
        assert await v.validate(token)
        clock.t += 3599
        assert await v.validate(token)
        assert jwks.fetches == 1
        clock.t += 1
        assert await v.validate(token)
        assert jwks.fetches == 2
    finally:
        await v.close()


async def test_acs_cached_key_used_during_scheduled_refresh(
    validator: AcsJwtValidator, jwks: JwksServer, clock: FakeClock, rsa_keys
) -> None:
    token = "Bearer " + mint(rsa_keys["k1"], "k1")
    assert await validator.validate(token)
    clock.t += 6 * 3600
    jwks.entered = asyncio.Event()
    jwks.gate = asyncio.Event()
    refreshing = asyncio.create_task(validator.validate(token))
    try:
        await asyncio.wait_for(jwks.entered.wait(), 10)
        # The refresh is held by the server; a validation with a known key does not queue behind it.
        assert (await asyncio.wait_for(validator.validate(token), 10))["aud"] == AUDIENCE
        assert not refreshing.done()
        jwks.gate.set()
        assert await asyncio.wait_for(refreshing, 10)
    finally:
        jwks.gate.set()
        refreshing.cancel()
        await asyncio.gather(refreshing, return_exceptions=True)
    assert jwks.fetches == 2


async def test_acs_concurrent_validations_share_one_fetch(
    validator: AcsJwtValidator, jwks: JwksServer, rsa_keys
) -> None:
    jwks.gate = asyncio.Event()
    tokens = ["Bearer " + mint(rsa_keys["k1"], "k1", sub=f"call-{i}") for i in range(50)]
    tasks = [asyncio.create_task(validator.validate(t)) for t in tokens]
    try:
        await asyncio.wait_for(jwks.entered.wait(), 10)
        assert not any(task.done() for task in tasks)
        jwks.gate.set()
        results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    finally:
        jwks.gate.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert [r["sub"] for r in results] == [f"call-{i}" for i in range(50)]
    assert jwks.fetches == 1 and validator.fetches == 1


async def test_acs_jwks_down_keeps_cached_keys(
    validator: AcsJwtValidator, jwks: JwksServer, clock: FakeClock, rsa_keys
) -> None:
    token = "Bearer " + mint(rsa_keys["k1"], "k1")
    assert await validator.validate(token)
    await jwks.stop()
    with capture_logs() as logs:
        clock.t += 6 * 3600
        assert await validator.validate(token)
        assert validator.fetches == 2
        assert await validator.validate(token)  # inside the retry limit: no new attempt
        assert validator.fetches == 2
        clock.t += 60
        assert await validator.validate(token)
        assert validator.fetches == 3
    warnings = [line for line in logs if line["log_level"] == "warning"]
    assert len(warnings) == 1
    assert "keeping the cached keys" in warnings[0]["event"]
    assert jwks.fetches == 1


async def test_acs_no_keys_at_all(jwks: JwksServer, clock: FakeClock, rsa_keys) -> None:
    jwks.status = 503
    v = AcsJwtValidator(jwks.url, audience=AUDIENCE, clock=clock)
    token = "Bearer " + mint(rsa_keys["k1"], "k1")
    try:
        assert await refused(v, token) == "signing keys unavailable"
        assert jwks.fetches == 1
        assert await refused(v, token) == "signing keys unavailable"  # retried only after a pause
        assert jwks.fetches == 1
        jwks.status = 200
        clock.t += 29
        assert await refused(v, token) == "signing keys unavailable"  # the failure is remembered for 30 s
        assert jwks.fetches == 1
        clock.t += 1
        assert await v.validate(token)
        assert jwks.fetches == 2
    finally:
        await v.close()


async def test_acs_tokens_that_cannot_be_valid_are_refused_before_any_fetch(
    validator: AcsJwtValidator, jwks: JwksServer, rsa_keys
) -> None:
    now = int(time.time())
    key = rsa_keys["k1"]
    cases = {
        "wrong audience": mint(key, "k1", aud="another-resource"),
        "wrong issuer": mint(key, "attacker-kid", iss="https://issuer.example.com"),
        "expired": mint(key, "k1", iat=now - 7200, nbf=now - 7200, exp=now - 3600),
        "not yet valid": mint(key, "k1", nbf=now + 3600, exp=now + 7200),
        "missing claim aud": mint(key, "k1", aud=None),
    }
    for reason, token in cases.items():
        assert await refused(validator, f"Bearer {token}") == reason
    assert jwks.fetches == 0 and validator.fetches == 0  # no keys were needed to refuse them


async def test_acs_a_slow_failed_fetch_is_shared_by_every_waiter(jwks: JwksServer, clock: FakeClock,
                                                                  rsa_keys) -> None:
    """The key endpoint answers after 10 s (on the validator's clock), with an error: the 20
    validations that waited for that fetch all get its outcome; none fetches again after it."""
    jwks.status = 503
    jwks.gate = asyncio.Event()
    v = AcsJwtValidator(jwks.url, audience=AUDIENCE, clock=clock)
    tasks = [asyncio.create_task(refused(v, "Bearer " + mint(rsa_keys["k1"], "k1", sub=f"call-{i}")))
             for i in range(20)]
    try:
        await asyncio.wait_for(jwks.entered.wait(), 10)
        clock.t += 10  # the fetch took its whole timeout
        jwks.gate.set()
        reasons = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    finally:
        jwks.gate.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await v.close()
    assert reasons == ["signing keys unavailable"] * 20
    assert jwks.fetches == 1 and v.fetches == 1


async def test_acs_jwks_with_unusable_entries(jwks: JwksServer, validator: AcsJwtValidator, rsa_keys) -> None:
    good = jwk_for(rsa_keys["k1"], "k1")
    jwks.keys = [
        {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"},
        {**jwk_for(rsa_keys["k2"], "enc"), "use": "enc"},
        {**jwk_for(rsa_keys["k2"], "ps"), "alg": "PS256"},
        {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
        "not an object",
        good,
    ]
    assert await validator.validate("Bearer " + mint(rsa_keys["k1"], "k1"))
    assert await refused(validator, "Bearer " + mint(rsa_keys["k2"], "enc")) == "unknown key id"
    assert await refused(validator, "Bearer " + mint(rsa_keys["k2"], "ps")) == "unknown key id"


async def test_acs_jwks_without_usable_keys(jwks: JwksServer, validator: AcsJwtValidator, rsa_keys) -> None:
    jwks.keys = [{"kty": "oct", "kid": "k1", "k": "c2VjcmV0"}]
    assert await refused(validator, "Bearer " + mint(rsa_keys["k1"], "k1")) == "signing keys unavailable"


async def test_acs_close_and_reopen(validator: AcsJwtValidator, clock: FakeClock, jwks: JwksServer, rsa_keys) -> None:
    assert await validator.validate("Bearer " + mint(rsa_keys["k1"], "k1"))
    await validator.close()
    await validator.close()
    clock.t += 61
    assert await refused(validator, "Bearer " + mint(rsa_keys["k2"], "k9")) == "unknown key id"
    assert jwks.fetches == 2


def test_acs_validator_arguments() -> None:
    with pytest.raises(ValueError):
        AcsJwtValidator("https://example.invalid/keys", audience="")


# ---------------------------------------------------------------------------------------------
# Event Grid
# ---------------------------------------------------------------------------------------------

VALIDATION = [{
    "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
    "topic": "/subscriptions/x/resourceGroups/y/providers/Microsoft.Communication/communicationServices/z",
    "subject": "",
    "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
             "validationUrl": "https://rp-eastus2.eventgrid.azure.net/eventsubscriptions/x/validate?id=1"},
    "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
    "eventTime": "2025-01-01T10:00:00Z",
    "metadataVersion": "1",
    "dataVersion": "2",
}]
INCOMING = [{
    "id": "2d6", "eventType": "Microsoft.Communication.IncomingCall",
    "data": {"incomingCallContext": "ctx", "correlationId": "b6e1", "validationCode": "not-this"},
}]


def test_eventgrid_validation_code() -> None:
    assert eventgrid_validation_code(VALIDATION) == "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"
    assert eventgrid_validation_code(VALIDATION[0]) == "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"
    assert eventgrid_validation_code(INCOMING + VALIDATION) == "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"


@pytest.mark.parametrize(
    "body",
    [
        INCOMING,
        [],
        None,
        "Microsoft.EventGrid.SubscriptionValidationEvent",
        [1, "x", None],
        [{"eventType": "Microsoft.EventGrid.SubscriptionValidationEvent"}],
        [{"eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "data": "code"}],
        [{"eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "data": {"validationCode": 7}}],
        [{"eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "data": {"validationCode": ""}}],
    ],
)
def test_eventgrid_not_a_validation(body: Any) -> None:
    assert eventgrid_validation_code(body) is None


@pytest.mark.parametrize(
    ("expected", "given", "result"),
    [
        (None, None, True),
        (None, "anything", True),
        ("s3cret-value", "s3cret-value", True),
        ("s3cret-value", "s3cret-valuE", False),
        ("s3cret-value", "s3cret-valu", False),
        ("s3cret-value", None, False),
        ("s3cret-value", "", False),
        ("ünï", "ünï", True),
    ],
)
def test_secret_matches(expected: str | None, given: str | None, result: bool) -> None:
    assert secret_matches(expected, given) is result

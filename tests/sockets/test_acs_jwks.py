"""ACS JWTs checked against a JWKS endpoint served on 127.0.0.1: key fetches, caching, rotation, refresh
and failure (the rest of carrier authentication: tests/core/test_auth.py)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from structlog.testing import capture_logs

from gateway.carriers.acs.auth import ACS_ISSUER, AcsJwtValidator, AuthError
from tests.sockets.loopback import serve


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


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
        self.runner, base = await serve(app)
        self.url = base + "/calling/keys"

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

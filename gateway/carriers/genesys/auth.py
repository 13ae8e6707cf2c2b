"""Genesys AudioHook authentication: the WebSocket upgrade Genesys Cloud opens carries the integration's
API key in ``X-API-KEY`` and an HTTP message signature (RFC 9421) in ``Signature-Input`` and
``Signature``: HMAC-SHA256 keyed with the bytes of the integration's client secret (given base64), over
a signature base built from the covered components (``@request-target``, ``@authority`` and the
``audiohook-organization-id``, ``audiohook-session-id``, ``audiohook-correlation-id`` and
``x-api-key`` header fields) and the signature parameters (``keyid``: the API key; ``nonce``;
``alg="hmac-sha256"``; ``created`` and ``expires`` in seconds since the epoch).

:func:`verify_request` checks all of it and raises :class:`AuthError` with a short reason that never
contains a secret. Every comparison of a secret is constant time. A signature must cover the six
components Genesys signs, must not be expired (past its ``expires``, or older than the configured
maximum age after its ``created``), must not be created in the future, and its nonce is taken once
(:class:`NonceCache`, per gateway process, kept as long as the signature would hold).
:func:`sign_request` is the client side, for the softphone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["REQUIRED_COMPONENTS", "AuthError", "NonceCache", "SignatureInput", "decode_client_secret",
           "parse_signature", "parse_signature_input", "sign_request", "signature_base", "verify_request"]

# What Genesys signs on every AudioHook connection, in its order.
REQUIRED_COMPONENTS = ("@request-target", "@authority", "audiohook-organization-id", "audiohook-session-id",
                       "audiohook-correlation-id", "x-api-key")
_DERIVED = ("@method", "@authority", "@path", "@query", "@request-target", "@scheme", "@target-uri")
CLOCK_SKEW_S = 5.0  # how far the caller's clock may run ahead of or behind the gateway's
_MAX_HEADER = 4096


def _raw(text: str) -> bytes:
    """The bytes of a header's text as they came (aiohttp keeps bytes that are not UTF-8 as lone surrogates)."""
    return text.encode("utf-8", "surrogateescape")


class AuthError(Exception):
    """The request was refused; ``reason`` is short, safe to log and never contains a secret."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode_client_secret(secret: str) -> bytes:
    """The HMAC key: the client secret is base64 as Genesys Cloud shows it (ValueError if it is not)."""
    try:
        key = base64.b64decode(secret.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the client secret is not base64 (paste it exactly as Genesys Cloud shows it)") from None
    if not key:
        raise ValueError("the client secret is empty")
    return key


# --- structured fields (RFC 8941), the parts RFC 9421 uses ---------------------------------------

_KEY = re.compile(r"[a-z*][a-z0-9_.*-]*")
_STRING = re.compile(r'"((?:[^"\\\x00-\x1f\x7f]|\\["\\])*)"')
_INTEGER = re.compile(r"-?[0-9]{1,15}")
_TOKEN = re.compile(r"[A-Za-z*][A-Za-z0-9!#$%&'*+.^_`|~:/-]*")
_BYTES = re.compile(r":([A-Za-z0-9+/=]*):")


class _Parser:
    def __init__(self, text: str) -> None:
        if len(text) > _MAX_HEADER:
            raise AuthError("signature header too long")
        self.text = text.strip(" \t")
        self.pos = 0

    def fail(self, what: str) -> AuthError:
        return AuthError(f"malformed {what}")

    def match(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        m = pattern.match(self.text, self.pos)
        if m is not None:
            self.pos = m.end()
        return m

    def peek(self, char: str) -> bool:
        return self.text.startswith(char, self.pos)

    def skip_spaces(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def bare_item(self, what: str) -> Any:
        if (m := self.match(_STRING)) is not None:
            return re.sub(r"\\(.)", r"\1", m.group(1))
        if (m := self.match(_BYTES)) is not None:
            try:
                return base64.b64decode(m.group(1), validate=True)
            except (binascii.Error, ValueError):
                raise self.fail(what) from None
        if (m := self.match(_INTEGER)) is not None:
            return int(m.group(0))
        if self.peek("?1") or self.peek("?0"):
            self.pos += 2
            return self.text[self.pos - 1] == "1"
        if (m := self.match(_TOKEN)) is not None:
            return _Token(m.group(0))
        raise self.fail(what)

    def params(self, what: str) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        while self.peek(";"):
            self.pos += 1
            self.skip_spaces()
            key = self.match(_KEY)
            if key is None:
                raise self.fail(what)
            value: Any = True
            if self.peek("="):
                self.pos += 1
                value = self.bare_item(what)
            out.append((key.group(0), value))
        return out

    def dictionary(self, what: str) -> list[tuple[str, Any, list[tuple[str, Any]]]]:
        """Members as (key, value, parameters); an inner list's value is a list of (item, params)."""
        members: list[tuple[str, Any, list[tuple[str, Any]]]] = []
        while self.pos < len(self.text):
            key = self.match(_KEY)
            if key is None or not self.peek("="):
                raise self.fail(what)
            self.pos += 1
            value: Any
            if self.peek("("):
                self.pos += 1
                items: list[tuple[Any, list[tuple[str, Any]]]] = []
                while True:
                    self.skip_spaces()
                    if self.peek(")"):
                        self.pos += 1
                        break
                    item = self.bare_item(what)
                    items.append((item, self.params(what)))
                    if not (self.peek(" ") or self.peek(")")):
                        raise self.fail(what)
                value = items
            else:
                value = self.bare_item(what)
            members.append((key.group(0), value, self.params(what)))
            self.skip_spaces()
            if self.pos >= len(self.text):
                break
            if not self.peek(","):
                raise self.fail(what)
            self.pos += 1
            self.skip_spaces()
        return members


class _Token(str):
    """A structured-field token (distinct from a string when serialized)."""


def _serialize_bare(value: Any) -> str:
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, _Token):
        return str(value)
    if isinstance(value, bytes):
        return ":" + base64.b64encode(value).decode() + ":"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _serialize_params(params: Sequence[tuple[str, Any]]) -> str:
    return "".join(f";{key}" if value is True else f";{key}={_serialize_bare(value)}" for key, value in params)


@dataclass(frozen=True)
class SignatureInput:
    """One signature's ``Signature-Input`` member: its label, covered components and parameters."""

    label: str
    components: tuple[str, ...]
    params: tuple[tuple[str, Any], ...]
    param: dict[str, Any] = field(default_factory=dict, compare=False)

    def serialized(self) -> str:
        """The ``@signature-params`` value: the inner list as RFC 8941 serializes it."""
        inner = " ".join(_serialize_bare(name) for name in self.components)
        return f"({inner}){_serialize_params(self.params)}"


def parse_signature_input(text: str) -> list[SignatureInput]:
    signatures = []
    for label, value, params in _Parser(text).dictionary("Signature-Input"):
        if not isinstance(value, list):
            raise AuthError("malformed Signature-Input (not an inner list)")
        names = []
        for item, item_params in value:
            if not isinstance(item, str) or isinstance(item, _Token) or item_params:
                raise AuthError("unsupported covered component")
            if item != item.lower() or item in names:
                raise AuthError("malformed Signature-Input (component name)")
            names.append(item)
        known = {"alg": str, "created": int, "expires": int, "keyid": str, "nonce": str, "tag": str}
        for key, param in params:
            kind = known.get(key)
            if kind is None or not isinstance(param, kind) or isinstance(param, (bool, _Token)):
                raise AuthError(f"malformed Signature-Input (parameter {key[:20]})")
        if len({key for key, _ in params}) != len(params):
            raise AuthError("malformed Signature-Input (repeated parameter)")
        signatures.append(SignatureInput(label, tuple(names), tuple(params), dict(params)))
    if not signatures:
        raise AuthError("empty Signature-Input")
    return signatures


def parse_signature(text: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for label, value, _ in _Parser(text).dictionary("Signature"):
        if not isinstance(value, bytes):
            raise AuthError("malformed Signature (not a byte sequence)")
        out[label] = value
    return out


# --- the signature base --------------------------------------------------------------------------


def _header_value(headers: Mapping[str, str], name: str) -> str | None:
    getall = getattr(headers, "getall", None)
    if getall is not None:
        values = getall(name, [])
    else:
        values = [v for k, v in headers.items() if k.lower() == name]
    if not values:
        return None
    return ", ".join(" ".join(str(v).strip().split("\r\n")).strip() for v in values)


def signature_base(signature: SignatureInput, values: Mapping[str, str]) -> str:
    """The text RFC 9421 signs: one ``"name": value`` line per covered component, then the parameters."""
    lines = [f'"{name}": {values[name]}' for name in signature.components]
    lines.append(f'"@signature-params": {signature.serialized()}')
    return "\n".join(lines)


def _component_values(signature: SignatureInput, *, method: str, target: str, authority: str, scheme: str,
                      headers: Mapping[str, str]) -> dict[str, str]:
    path, _, query = target.partition("?")
    derived = {"@method": method.upper(), "@authority": authority, "@request-target": target, "@path": path,
               "@query": "?" + query, "@scheme": scheme, "@target-uri": f"{scheme}://{authority}{target}"}
    values: dict[str, str] = {}
    for name in signature.components:
        if name.startswith("@"):
            if name not in _DERIVED:
                raise AuthError("unsupported derived component")
            values[name] = derived[name]
        else:
            value = _header_value(headers, name)
            if value is None:
                raise AuthError(f"signed header {name[:40]} missing")
            values[name] = value
    return values


class NonceCache:
    """Nonces already used, each kept until its signature would have expired (bounded in size)."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._until: dict[str, float] = {}

    def take(self, nonce: str, until: float, now: float) -> bool:
        """False when ``nonce`` was taken before (a replay); else remember it until ``until``."""
        if len(self._until) >= self.limit:
            for old in [k for k, t in self._until.items() if t <= now]:
                del self._until[old]
            while len(self._until) >= self.limit:  # still full: forget the oldest
                del self._until[next(iter(self._until))]
        if nonce in self._until and self._until[nonce] > now:
            return False
        self._until[nonce] = until
        return True


def verify_request(*, method: str, target: str, authorities: Sequence[str], scheme: str,
                   headers: Mapping[str, str], api_key: str, client_secret: bytes, now: float,
                   max_age_s: float = 300.0, nonces: NonceCache | None = None) -> SignatureInput:
    """Check an AudioHook connection request: its ``X-API-KEY`` and its signature. Returns the signature
    that held; raises :class:`AuthError` when anything does not.

    ``target`` is the request target as sent (path and query); ``authorities`` the host names the
    connection may have been signed for (the public address; the ``Host`` header), lowercase, with no
    default port; ``now`` the current unix time.
    """
    given_key = _header_value(headers, "x-api-key")
    if not given_key:
        raise AuthError("missing X-API-KEY")
    if not api_key or not hmac.compare_digest(_raw(given_key), api_key.encode()):
        raise AuthError("bad X-API-KEY")
    raw_input, raw_signature = _header_value(headers, "signature-input"), _header_value(headers, "signature")
    if not raw_input or not raw_signature:
        raise AuthError("request not signed (no Signature-Input or Signature)")
    inputs = parse_signature_input(raw_input)
    signatures = parse_signature(raw_signature)
    signature = inputs[0]
    given = signatures.get(signature.label)
    if given is None:
        raise AuthError("no signature for the label of Signature-Input")
    missing = [name for name in REQUIRED_COMPONENTS if name not in signature.components]
    if missing:
        raise AuthError(f"signature does not cover {missing[0]}")
    param = signature.param
    if param.get("alg", "hmac-sha256") != "hmac-sha256":
        raise AuthError("unsupported signature algorithm")
    keyid = param.get("keyid")
    if not isinstance(keyid, str) or not hmac.compare_digest(_raw(keyid), api_key.encode()):
        raise AuthError("signature keyid is not the API key")
    created, expires = param.get("created"), param.get("expires")
    if created is None and expires is None:
        raise AuthError("signature has no created or expires time")
    if created is not None and created > now + CLOCK_SKEW_S:
        raise AuthError("signature created in the future")
    # valid until it expires, and never longer than the maximum age after its creation
    until = min([t for t in (expires, None if created is None else created + max_age_s) if t is not None])
    if until < now - CLOCK_SKEW_S:
        raise AuthError("signature expired")
    matched = False
    for authority in authorities or [""]:
        values = _component_values(signature, method=method, target=target, authority=authority, scheme=scheme,
                                   headers=headers)
        expected = hmac.new(client_secret, _raw(signature_base(signature, values)), hashlib.sha256).digest()
        matched |= hmac.compare_digest(expected, given)
    if not matched:
        raise AuthError("bad signature")
    nonce = param.get("nonce")
    if nonces is not None and isinstance(nonce, str) and not nonces.take(nonce, until, now):
        raise AuthError("signature nonce used before")
    return signature


def sign_request(*, target: str, authority: str, headers: Mapping[str, str], api_key: str, client_secret: str,
                 created: int, expires: int, nonce: str, label: str = "sig1") -> dict[str, str]:
    """``Signature-Input`` and ``Signature`` as Genesys Cloud sends them for a connection request with
    ``headers`` (which must hold the AudioHook headers and ``X-API-KEY``)."""
    params: list[tuple[str, Any]] = [("keyid", api_key), ("nonce", nonce), ("alg", "hmac-sha256"),
                                     ("created", created), ("expires", expires)]
    signature = SignatureInput(label, REQUIRED_COMPONENTS, tuple(params), dict(params))
    values = _component_values(signature, method="GET", target=target, authority=authority, scheme="wss",
                               headers=headers)
    digest = hmac.new(decode_client_secret(client_secret), signature_base(signature, values).encode(),
                      hashlib.sha256).digest()
    return {"Signature-Input": f"{label}={signature.serialized()}",
            "Signature": f"{label}=:{base64.b64encode(digest).decode()}:"}

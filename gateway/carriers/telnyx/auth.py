"""Telnyx webhook signatures: every webhook (the TeXML voice webhook and its ``<Redirect>`` among
them) carries ``telnyx-signature-ed25519``, the base64 Ed25519 signature of
``"{telnyx-timestamp}|{raw body}"`` made with the account's private key, and ``telnyx-timestamp``
(Unix seconds). The gateway checks it with the account's public key (base64, 32 bytes, from the
Mission Control Portal) and refuses a timestamp further than a tolerance from its own clock (a
replayed request). The media WebSocket's upgrade is not signed by Telnyx: the stream is bound to its
call by the gateway's own signed token instead (see :mod:`gateway.carriers.telnyx.routes`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "TOLERANCE_S",
    "BadKey",
    "check_telnyx_signature",
    "public_key_from_base64",
    "telnyx_signature",
]

SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"
TOLERANCE_S = 300  # how far a webhook's timestamp may be from the gateway's clock


class BadKey(ValueError):
    """A key that is not a base64 Ed25519 key; the text says why (never the key)."""


def public_key_from_base64(text: str) -> Ed25519PublicKey:
    """The account's public key from its base64 text (32 raw bytes). ValueError when it is not one."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise BadKey("not base64") from None
    if len(raw) != 32:
        raise BadKey(f"{len(raw)} bytes; an Ed25519 public key is 32")
    return Ed25519PublicKey.from_public_bytes(raw)


def telnyx_signature(private_key: Ed25519PrivateKey, timestamp: str, body: bytes) -> str:
    """The ``telnyx-signature-ed25519`` Telnyx puts on a webhook with ``body`` sent at ``timestamp``."""
    return base64.b64encode(private_key.sign(timestamp.encode("ascii") + b"|" + body)).decode("ascii")


def check_telnyx_signature(
    public_key: Ed25519PublicKey,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    tolerance_s: float = TOLERANCE_S,
) -> str | None:
    """None when ``headers`` carry Telnyx's valid signature of ``body``, made within ``tolerance_s``
    of ``now`` (Unix seconds); else why not (safe to log: never the signature). Fails closed on
    anything missing or malformed."""
    signature = headers.get(SIGNATURE_HEADER) or ""
    timestamp = (headers.get(TIMESTAMP_HEADER) or "").strip()
    if not signature:
        return f"missing {SIGNATURE_HEADER}"
    if not timestamp:
        return f"missing {TIMESTAMP_HEADER}"
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return f"{TIMESTAMP_HEADER} is not Unix seconds"
    if abs(now - int(timestamp)) > tolerance_s:
        return f"{TIMESTAMP_HEADER} is more than {tolerance_s:g} s from the gateway's clock"
    try:
        raw = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        return f"{SIGNATURE_HEADER} is not base64"
    if len(raw) != 64:
        return f"{SIGNATURE_HEADER} is not an Ed25519 signature"
    try:
        public_key.verify(raw, timestamp.encode("ascii") + b"|" + body)
    except InvalidSignature:
        return f"bad {SIGNATURE_HEADER}"
    return None

"""The ``telnyx`` section of config.yaml."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BeforeValidator, SecretStr

from gateway.carriers.settings import CarrierSettings
from gateway.settings_model import Text, fail, http_url, numeric, positive


def _public_key(value: Any) -> Any:
    # Checked here without the cryptography package, so that the config imports nothing heavy.
    if not isinstance(value, str):
        return value
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise fail("expected the account's Ed25519 public key, base64 (Mission Control Portal: Keys & "
                   "Credentials, Public Key)", show_got=False) from None
    if len(raw) != 32:
        raise fail(f"expected a base64 Ed25519 public key of 32 bytes, got {len(raw)} bytes", show_got=False)
    return value.strip()


class TelnyxSettings(CarrierSettings):
    section: ClassVar[str] = "telnyx"
    secret_keys: ClassVar[tuple[str, ...]] = ("api_key",)
    credential_key: ClassVar[str] = "public_key"
    credential_label: ClassVar[str] = "Telnyx public key"

    # The account's Ed25519 public key (base64): checks the signature of every Telnyx webhook.
    public_key: Annotated[Text | None, BeforeValidator(_public_key)] = None
    # An API key (V2): transfers through the TeXML REST API. Unset: no transfers on Telnyx calls.
    api_key: SecretStr | None = None
    # The REST API the gateway calls to transfer a call (a local stand-in in tests).
    api_base_url: Annotated[str, AfterValidator(http_url)] = "https://api.telnyx.com"
    # Outbound calls (POST /v1/calls): the TeXML Application they are placed for and the account it
    # belongs to (the REST API's AccountSid). With api_key, both are needed to place calls.
    application_id: Text | None = None
    account_sid: Text | None = None
    # How far a webhook's telnyx-timestamp may be from the gateway's clock (replays are refused).
    signature_tolerance_s: Annotated[float, BeforeValidator(numeric), AfterValidator(positive)] = 300.0

    def notes(self) -> list[str]:
        notes = []
        if self.public_key is not None and self.api_key is None:
            notes.append("note: telnyx.public_key is set but telnyx.api_key is not (TELNYX_API_KEY): Telnyx calls "
                         "cannot be transferred")
        placing = (self.application_id, self.account_sid)
        if any(placing) and not all((*placing, self.api_key)):
            notes.append("note: telnyx.application_id, telnyx.account_sid and telnyx.api_key (TELNYX_APPLICATION_ID, "
                         "TELNYX_ACCOUNT_SID, TELNYX_API_KEY) are all needed to place calls on Telnyx")
        return notes


SETTINGS = TelnyxSettings

"""The ``genesys`` section of config.yaml."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, ClassVar

from pydantic import AfterValidator, BeforeValidator, SecretStr

from gateway.carriers.settings import CarrierSettings
from gateway.settings_model import fail, numeric, positive


def _base64_secret(value: SecretStr | None) -> SecretStr | None:
    """The client secret keys the signature with its bytes: it must be base64, as Genesys shows it."""
    if value is not None and value.get_secret_value():
        try:
            key = base64.b64decode(value.get_secret_value().strip(), validate=True)
        except (binascii.Error, ValueError):
            raise fail("expected the client secret exactly as Genesys Cloud shows it (base64)",
                       show_got=False) from None
        if not key:
            raise fail("expected a non-empty client secret", show_got=False)
    return value


class GenesysSettings(CarrierSettings):
    section: ClassVar[str] = "genesys"
    secret_keys: ClassVar[tuple[str, ...]] = ("api_key", "client_secret")
    credential_key: ClassVar[str] = "api_key"
    credential_label: ClassVar[str] = "Genesys AudioConnector API key"

    # The Audio Connector integration's credentials, exactly as Genesys Cloud shows them: the API key
    # Genesys sends in X-API-KEY (and as the signature's keyid), and the client secret (base64) whose
    # bytes key the HMAC-SHA256 request signature. Both must be set, or AudioHook sessions are refused.
    api_key: SecretStr | None = None
    client_secret: Annotated[SecretStr | None, AfterValidator(_base64_secret)] = None
    # How long a request signature is taken after its ``created`` time (and never past its ``expires``).
    max_signature_age_s: Annotated[float, BeforeValidator(numeric), AfterValidator(positive)] = 300.0

    def notes(self) -> list[str]:
        notes = []
        if self.api_key is not None and self.client_secret is None:
            notes.append("note: genesys.api_key is set but genesys.client_secret is not: every AudioHook "
                         "session is refused until GENESYS_CLIENT_SECRET is set (signatures are required)")
        return notes


SETTINGS = GenesysSettings

"""The ``plivo`` section of config.yaml."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import AfterValidator, SecretStr

from gateway.carriers.settings import CarrierSettings
from gateway.settings_model import Text, http_url


class PlivoSettings(CarrierSettings):
    section: ClassVar[str] = "plivo"
    secret_keys: ClassVar[tuple[str, ...]] = ("auth_token",)
    credential_key: ClassVar[str] = "auth_token"
    credential_label: ClassVar[str] = "Plivo auth token"

    auth_id: Text | None = None  # the account (or subaccount) Auth ID: the REST API's account and user
    auth_token: SecretStr | None = None  # checks X-Plivo-Signature-V3; the REST API's password
    # The REST API the gateway calls to transfer or place a call (a local stand-in in tests).
    api_base_url: Annotated[str, AfterValidator(http_url)] = "https://api.plivo.com"

    @property
    def can_transfer(self) -> bool:
        return self.auth_id is not None and self.auth_token is not None

    def notes(self) -> list[str]:
        if self.auth_token is not None and self.auth_id is None:
            return ["note: plivo.auth_token is set but plivo.auth_id is not: Plivo calls are answered, but the "
                    "bot cannot transfer them and the gateway cannot place calls on Plivo (set PLIVO_AUTH_ID)"]
        return []


SETTINGS = PlivoSettings

"""The ``twilio`` section of config.yaml."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import AfterValidator, SecretStr

from gateway.carriers.settings import CarrierSettings
from gateway.settings_model import fail, http_url


def _account_sid(value: str) -> str:
    if not (value.startswith("AC") and len(value) == 34 and value[2:].isalnum()):
        raise fail("expected a Twilio account SID: AC followed by 32 letters and digits")
    return value


class TwilioSettings(CarrierSettings):
    section: ClassVar[str] = "twilio"
    secret_keys: ClassVar[tuple[str, ...]] = ("auth_token",)
    credential_key: ClassVar[str] = "auth_token"
    credential_label: ClassVar[str] = "Twilio auth token"

    auth_token: SecretStr | None = None  # checks request signatures; transfers through the REST API
    # the account outbound calls are placed from (with auth_token, through the REST API)
    account_sid: Annotated[str, AfterValidator(_account_sid)] | None = None
    # The REST API the gateway calls to transfer a call (a local stand-in in tests).
    api_base_url: Annotated[str, AfterValidator(http_url)] = "https://api.twilio.com"


SETTINGS = TwilioSettings

"""The ``vonage`` section of config.yaml."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, SecretStr

from gateway.carriers.settings import CarrierSettings
from gateway.settings_model import Text, between, http_url, whole


class VonageSettings(CarrierSettings):
    section: ClassVar[str] = "vonage"
    secret_keys: ClassVar[tuple[str, ...]] = ("signature_secret", "private_key")
    credential_key: ClassVar[str] = "signature_secret"
    credential_label: ClassVar[str] = "Vonage signature secret"

    # The account's signature secret: Vonage signs every webhook with it (HS256 JWT in Authorization).
    signature_secret: SecretStr | None = None
    # The Vonage application and its private key (PEM): the Voice API calls of hang-up, transfer, keys and
    # placing calls.
    application_id: Text | None = None
    private_key: SecretStr | None = None
    # The Voice API the gateway calls (a local stand-in in tests).
    api_base_url: Annotated[str, AfterValidator(http_url)] = "https://api.nexmo.com"
    # Placed calls: the answering-machine detection asked for ("advanced": with beep detection, charged
    # by Vonage; "standard": free, no beep) and how long advanced detection listens for the beep.
    machine_detection: Literal["advanced", "standard"] = "advanced"
    beep_timeout_s: Annotated[int, BeforeValidator(whole), AfterValidator(between(45, 120))] = 45

    @property
    def can_call_api(self) -> bool:
        """The gateway can sign Voice API requests (transfer, hang-up, keys)."""
        return self.application_id is not None and self.private_key is not None

    @property
    def sends_keys(self) -> bool:
        return self.can_call_api  # through the Voice API, with the application's credentials

    def notes(self) -> list[str]:
        notes: list[str] = []
        if self.private_key is not None and not _is_private_key(self.private_key.get_secret_value()):
            notes.append("note: vonage.private_key is not a private key in PEM: Voice API requests (hang-up, "
                         "transfer, keys) will fail")
        if (self.application_id is None) != (self.private_key is None):
            notes.append("note: vonage.application_id and vonage.private_key go together (VONAGE_APPLICATION_ID, "
                         "VONAGE_PRIVATE_KEY); with only one of them the Voice API is not used (and no calls are "
                         "placed)")
        if self.signature_secret is not None and not self.can_call_api:
            notes.append("note: Vonage calls cannot be transferred and keys cannot be pressed towards the caller "
                         "and no calls are placed through Vonage (set VONAGE_APPLICATION_ID and VONAGE_PRIVATE_KEY); "
                         "the gateway hangs up by closing the media socket")
        return notes


def _is_private_key(text: str) -> bool:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    if "\n" not in text:
        text = text.replace("\\n", "\n")  # one line with \n escapes, as the Voice API client reads it too
    try:
        load_pem_private_key(text.encode(), password=None)
    except Exception:  # not PEM, encrypted, or of an algorithm this cryptography cannot load
        return False
    return True


SETTINGS = VonageSettings

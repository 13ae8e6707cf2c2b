"""The ``asterisk`` section of config.yaml."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, SecretStr

from gateway.carriers.settings import CarrierSettings
from gateway.settings_model import Text, fail


def _flag(value: Any) -> Any:
    if not isinstance(value, bool):
        raise fail("expected true or false")
    return value


class AsteriskSettings(CarrierSettings):
    section: ClassVar[str] = "asterisk"
    secret_keys: ClassVar[tuple[str, ...]] = ("password", "token")
    credential_key: ClassVar[str] = "password"
    credential_label: ClassVar[str] = "Asterisk media socket credentials"
    transfers: ClassVar[bool] = False  # chan_websocket offers hang-up only

    # HTTP basic credentials Asterisk sends on the upgrade (websocket_client.conf username/password)
    username: Text | None = None
    password: SecretStr | None = None
    # A bearer token instead (Authorization: Bearer ...), e.g. added by a proxy in front of the gateway
    token: SecretStr | None = None
    # MARK_MEDIA / MEDIA_MARK_PROCESSED (Asterisk 20.18, 22.8, 23.2 and later): the bot's audio is
    # truncated at what Asterisk played. false for older releases: the gateway paces the audio
    # itself and truncates at its playback clock.
    playback_marks: Annotated[bool, BeforeValidator(_flag)] = True

    @property
    def has_credential(self) -> bool:
        return (self.username is not None and self.password is not None) or self.token is not None

    def notes(self) -> list[str]:
        notes: list[str] = []
        if self.has_credential:
            notes.append("note: Asterisk calls cannot be transferred: chan_websocket offers hang-up only "
                         "(transfers need ARI, which the gateway does not drive)")
        if self.password is not None and self.username is None:
            notes.append("note: asterisk.password is set without asterisk.username: basic credentials are "
                         "not checked (set both, as in websocket_client.conf)")
        if self.username is not None and self.password is None:
            notes.append("note: asterisk.username is set without asterisk.password: basic credentials are "
                         "not checked (set ASTERISK_WS_PASSWORD)")
        return notes


SETTINGS = AsteriskSettings

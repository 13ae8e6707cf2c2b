"""The ``asterisk`` section of config.yaml."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BeforeValidator, SecretStr

from gateway.carriers.settings import CarrierSettings
from gateway.settings_model import Text, between, fail, http_url, numeric, positive, whole


def _flag(value: Any) -> Any:
    if not isinstance(value, bool):
        raise fail("expected true or false")
    return value


def _endpoint(value: Any) -> Any:
    if isinstance(value, str) and "{number}" not in value and "{digits}" not in value:
        raise fail("expected an ARI endpoint with {number} (the E.164 number) or {digits} (without its +), "
                   "e.g. PJSIP/{number}@trunk")
    if isinstance(value, str) and "{" in value.replace("{number}", "").replace("{digits}", ""):
        raise fail("only {number} and {digits} may stand in the endpoint")
    return value


class AsteriskSettings(CarrierSettings):
    section: ClassVar[str] = "asterisk"
    secret_keys: ClassVar[tuple[str, ...]] = ("password", "token", "ari_password")
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
    # Outbound calls (POST /v1/calls) through ARI: the Asterisk HTTP server (without /ari) and an
    # ARI user of ari.conf (its password from the environment only, ASTERISK_ARI_PASSWORD)
    ari_url: Annotated[str | None, AfterValidator(lambda v: v if v is None else http_url(v))] = None
    ari_username: Text | None = None
    ari_password: SecretStr | None = None
    # what the originated channel dials: {number} is the callee's E.164 number, {digits} the same
    # without its +
    outbound_endpoint: Annotated[Text | None, BeforeValidator(_endpoint)] = None
    # where the answered channel goes in the dialplan: the context that runs AMD() when asked, then
    # dials the gateway's media socket (README: "Outbound calls through ARI")
    outbound_context: Text = "gateway-outbound"
    outbound_extension: Text = "s"
    outbound_priority: Annotated[int, BeforeValidator(whole), AfterValidator(between(1, 10_000))] = 1
    ring_timeout_s: Annotated[int, BeforeValidator(whole), AfterValidator(between(1, 600))] = 30
    ari_timeout_s: Annotated[float, BeforeValidator(numeric), AfterValidator(positive)] = 10.0
    # how often the gateway asks ARI about a placed call's channel until its media starts (ringing,
    # answered, or gone: then the call failed)
    ari_poll_s: Annotated[float, BeforeValidator(numeric), AfterValidator(positive)] = 2.0

    @property
    def has_credential(self) -> bool:
        return (self.username is not None and self.password is not None) or self.token is not None

    def notes(self) -> list[str]:
        notes: list[str] = []
        if self.has_credential:
            notes.append("note: Asterisk calls cannot be transferred: chan_websocket offers hang-up only "
                         "(transfers need an ARI application, which the gateway does not run)")
        if self.password is not None and self.username is None:
            notes.append("note: asterisk.password is set without asterisk.username: basic credentials are "
                         "not checked (set both, as in websocket_client.conf)")
        if self.username is not None and self.password is None:
            notes.append("note: asterisk.username is set without asterisk.password: basic credentials are "
                         "not checked (set ASTERISK_WS_PASSWORD)")
        placing = {"asterisk.ari_url": self.ari_url, "asterisk.ari_username": self.ari_username,
                   "asterisk.ari_password (ASTERISK_ARI_PASSWORD)": self.ari_password,
                   "asterisk.outbound_endpoint": self.outbound_endpoint}
        if any(v is not None for v in placing.values()) and any(v is None for v in placing.values()):
            missing = [k for k, v in placing.items() if v is None]
            notes.append(f"note: Asterisk places no calls without {', '.join(missing)}")
        return notes


SETTINGS = AsteriskSettings

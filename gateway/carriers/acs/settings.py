"""The ``acs`` section of config.yaml."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BeforeValidator, SecretStr

from gateway.carriers.settings import CarrierSettings
from gateway.settings_model import Rule, Text, fail, http_url, is_set, numeric, positive


def _acs_rate(value: Any) -> Any:
    if isinstance(value, bool) or value not in (16000, 24000):
        raise fail("expected 16000 or 24000 (the PCM16 rates ACS media streaming offers)")
    return value


class AcsSettings(CarrierSettings):
    section: ClassVar[str] = "acs"
    secret_keys: ClassVar[tuple[str, ...]] = ("connection_string", "eventgrid_secret")
    credential_key: ClassVar[str] = "connection_string"
    credential_label: ClassVar[str] = "ACS connection string"
    # the Call Automation client, the token validator and the fallback clip are built at start-up
    restart_keys: ClassVar[tuple[str, ...]] = ("connection_string", "resource_id", "jwks_url", "issuer",
                                               "fallback_clip", "sample_rate")

    connection_string: SecretStr | None = None
    resource_id: Text | None = None  # the ACS resource's immutable id: the audience of its tokens
    jwks_url: Annotated[str, AfterValidator(http_url)] = "https://acscallautomation.communication.azure.com/calling/keys"
    issuer: Text = "https://acscallautomation.communication.azure.com"
    eventgrid_secret: SecretStr | None = None  # required in the Event Grid subscription URL (?secret=...)
    reconnect_grace_s: Annotated[float, BeforeValidator(numeric), AfterValidator(positive)] = 10.0
    # What an ACS caller hears when Voice Live fails for good (a WAV file; empty: the shipped clip).
    fallback_clip: Text | None = None
    # PCM16 sample rate of ACS media streams: 24000 or 16000 (a third less bandwidth; Voice Live
    # then takes input_audio_sampling_rate 16000 and answers in pcm16_16000hz, still no resampling).
    sample_rate: Annotated[int, BeforeValidator(_acs_rate)] = 24000

    @property
    def incoming_open(self) -> bool:
        """ACS calls are answered, but /acs/incoming checks no Event Grid secret: anyone may post to it."""
        return self.connection_string is not None and self.eventgrid_secret is None

    def secret_values(self) -> list[str]:
        values = super().secret_values()
        if self.connection_string is not None:  # the access key inside the connection string too
            for part in self.connection_string.get_secret_value().split(";"):
                key, _, value = part.partition("=")
                if key.strip().lower() == "accesskey" and value.strip():
                    values.append(value.strip())
        return values

    @property
    def sends_keys(self) -> bool:
        return True  # Call Automation sends tones

    def notes(self) -> list[str]:
        if not self.incoming_open:
            return []
        return ["note: INSECURE: acs.connection_string is set but acs.eventgrid_secret is not: /acs/incoming "
                "takes Event Grid events from anyone who knows its URL (set ACS_EVENTGRID_SECRET and add "
                "?secret=... to the Event Grid subscription)"]

    @classmethod
    def root_rules(cls, root: Mapping[str, Any]) -> list[Rule]:
        acs, gateway = root.get("acs"), root.get("gateway")
        if (isinstance(acs, Mapping) and is_set(acs.get("connection_string")) and not is_set(acs.get("resource_id"))
                and not (isinstance(gateway, Mapping) and gateway.get("insecure_dev_mode") is True)):
            return [(("acs", "resource_id"), "required with acs.connection_string: the ACS resource's "
                     "immutable id, which its tokens must name as audience", False)]
        return []


SETTINGS = AcsSettings

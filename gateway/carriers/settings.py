"""A carrier's section of config.yaml, and how the gateway's config takes in every carrier's section.

Each carrier defines its section in ``gateway/carriers/<name>/settings.py`` as a subclass of
:class:`CarrierSettings` (exported there as ``SETTINGS``). The section says which of its keys are
secrets, which key means the gateway takes the carrier's real calls, and what ``check-config``
should warn about; :mod:`gateway.config` then handles every carrier alike (secret checks, the log
scrubber, the simulator's refusal, the description) without naming one.

These modules import nothing of the gateway but :mod:`gateway.settings_model`, so the config can
be built from them while the carriers' routes import the config.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module
from typing import Any, ClassVar, Self

from pydantic import create_model

from gateway.carriers.registry import CARRIERS
from gateway.settings_model import Rule, SettingsModel


class CarrierSettings(SettingsModel):
    """A carrier's section of config.yaml."""

    section: ClassVar[str]  # its key in config.yaml: the carrier's name
    secret_keys: ClassVar[tuple[str, ...]] = ()  # keys that may only name an environment variable
    # set: real calls reach the gateway and it can control them (None: the section has no credential)
    credential_key: ClassVar[str | None]
    # how check-config names that key ("Twilio auth token"); None: the section has no credential of its own
    credential_label: ClassVar[str | None]
    transfers: ClassVar[bool] = True  # with its credential set, the gateway can transfer this carrier's calls
    # keys a running gateway reads only when it starts (its clients are built from them): a change of
    # one is reported as needing a restart by a reload, and the running value stays until then
    restart_keys: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def of(cls, config: Any) -> Self:
        """This carrier's section of a :class:`~gateway.config.GatewayConfig`."""
        section = getattr(config, cls.section)
        if not isinstance(section, cls):
            raise TypeError(f"{cls.section}: expected {cls.__name__}, got {type(section).__name__}")
        return section

    @property
    def has_credential(self) -> bool:
        return self.credential_key is not None and getattr(self, self.credential_key) is not None

    @property
    def sends_keys(self) -> bool:
        """Its calls can press keys towards the caller (the send_dtmf tool), as configured."""
        return False

    def secret_values(self) -> list[str]:
        """Plain values of its secrets that are set, for the log scrubber."""
        values = [getattr(self, key) for key in self.secret_keys]
        return [value.get_secret_value() for value in values if value is not None and value.get_secret_value()]

    def notes(self) -> list[str]:
        """check-config's warnings about this section: valid settings that are unsafe or do nothing."""
        return []

    @classmethod
    def root_rules(cls, root: Mapping[str, Any]) -> list[Rule]:
        """Rules that read this section beside the rest of the raw config (paths from the root)."""
        return []


def carrier_settings() -> list[type[CarrierSettings]]:
    """Every carrier's settings model, in the registry's order."""
    models: list[type[CarrierSettings]] = []
    for name in CARRIERS:
        model = getattr(import_module(f"gateway.carriers.{name}.settings"), "SETTINGS", None)
        if not (isinstance(model, type) and issubclass(model, CarrierSettings) and model.section == name):
            raise TypeError(f"gateway.carriers.{name}.settings must set SETTINGS to its CarrierSettings "
                            f"with section {name!r}")
        models.append(model)
    return models


def with_carrier_sections(base: type[SettingsModel]) -> type[SettingsModel]:
    """``base`` with one optional section per carrier after its own fields."""
    fields: dict[str, Any] = {model.section: (model, model()) for model in carrier_settings()}
    return create_model(f"{base.__name__}WithCarriers", __base__=base, **fields)


def carrier_sections(config: Any) -> list[CarrierSettings]:
    """The carriers' sections of a config, in the registry's order."""
    return [model.of(config) for model in carrier_settings()]


def carrier_root_rules(root: Mapping[str, Any]) -> list[Rule]:
    return [rule for model in carrier_settings() for rule in model.root_rules(root)]


def carrier_secret_paths() -> list[tuple[str, str]]:
    """(section, key) of every carrier secret."""
    return [(model.section, key) for model in carrier_settings() for key in model.secret_keys]

"""The carriers the gateway is built from: the one place that lists them.

Adding a carrier means adding its package under ``gateway/carriers/`` and one line here. A
carrier's package provides ``carrier.py`` (``CARRIER``: its :class:`~gateway.carriers.base.Carrier`),
``settings.py`` (``SETTINGS``: its section of config.yaml) and ``phone.py`` (the softphone's side).
Packages are imported when first asked for, so the config can read the settings modules while the
carriers' routes import the config.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.carriers.base import Carrier

CARRIERS: tuple[str, ...] = (
    "twilio",
    "acs",
    "plivo",
    "vonage",
    "telnyx",
    "asterisk",
    "genesys",
    "browser",
)


def _module(name: str, part: str) -> ModuleType:
    return import_module(f"gateway.carriers.{name}.{part}")


def carrier_classes() -> list[type[Carrier]]:
    from gateway.carriers.base import Carrier

    classes: list[type[Carrier]] = []
    for name in CARRIERS:
        cls = getattr(_module(name, "carrier"), "CARRIER", None)
        if not (isinstance(cls, type) and issubclass(cls, Carrier) and cls.name == name):
            raise TypeError(f"gateway.carriers.{name}.carrier must set CARRIER to its Carrier named {name!r}")
        classes.append(cls)
    return classes


def default_carriers() -> list[Carrier]:
    """One instance of every carrier, as a gateway runs them."""
    return [carrier() for carrier in carrier_classes()]


def carrier_named(name: str) -> Carrier:
    """The carrier called ``name`` (as recordings and metrics name it). KeyError if there is none."""
    if name not in CARRIERS:
        raise KeyError(name)
    return carrier_classes()[CARRIERS.index(name)]()


def carrier_names() -> list[str]:
    return list(CARRIERS)


def phones() -> list[ModuleType]:
    """Every carrier's softphone module (what ``gateway call`` dials with)."""
    return [_module(name, "phone") for name in CARRIERS]

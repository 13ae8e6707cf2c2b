"""The carriers the gateway is built from: the one place that lists them.

Adding a carrier means adding its package under ``gateway/carriers/`` and one line here.
"""

from __future__ import annotations

from types import ModuleType

from gateway.carriers.acs.carrier import AcsCarrier
from gateway.carriers.base import Carrier
from gateway.carriers.twilio.carrier import TwilioCarrier

CARRIERS: tuple[type[Carrier], ...] = (TwilioCarrier, AcsCarrier)


def default_carriers() -> list[Carrier]:
    """One instance of every carrier, as a gateway runs them."""
    return [carrier() for carrier in CARRIERS]


def carrier_named(name: str) -> Carrier:
    """The carrier called ``name`` (as recordings and metrics name it). KeyError if there is none."""
    for carrier in CARRIERS:
        if carrier.name == name:
            return carrier()
    raise KeyError(name)


def carrier_names() -> list[str]:
    return [carrier.name for carrier in CARRIERS]


def phones() -> list[ModuleType]:
    """Every carrier's softphone module (what ``gateway call`` dials with)."""
    from gateway.carriers.acs import phone as acs_phone
    from gateway.carriers.twilio import phone as twilio_phone

    return [twilio_phone, acs_phone]

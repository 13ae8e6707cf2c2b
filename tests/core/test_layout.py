"""The carrier boundary: everything that knows a carrier is in its package."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.carriers.base import Carrier
from gateway.carriers.registry import CARRIERS, carrier_classes, phones
from gateway.carriers.settings import CarrierSettings, carrier_settings
from gateway.softphone.cli import Phone

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"


def _outside_carriers() -> list[Path]:
    return [path for path in sorted(GATEWAY.rglob("*.py")) if "carriers" not in path.relative_to(GATEWAY).parts]


def test_the_walk_sees_the_shell_and_the_core() -> None:
    names = {path.relative_to(GATEWAY).as_posix() for path in _outside_carriers()}
    assert {"call.py", "bridge.py", "app.py", "config/schema.py", "demo.py"} <= names
    assert not any(name.startswith("carriers/") for name in names)


@pytest.mark.parametrize("name", CARRIERS)
def test_no_module_outside_the_carriers_names_one(name: str) -> None:
    word = re.compile(rf"\b{re.escape(name)}\b", re.IGNORECASE)
    found = [f"{path.relative_to(GATEWAY)}:{number}: {line.strip()}"
             for path in _outside_carriers()
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if word.search(line)]
    assert found == []


@pytest.mark.parametrize("name", CARRIERS)
def test_a_carrier_is_one_package_with_its_parts(name: str) -> None:
    package = GATEWAY / "carriers" / name
    assert {"codec.py", "auth.py", "routes.py", "control.py", "phone.py", "settings.py", "carrier.py"} <= {
        path.name for path in package.glob("*.py")}


def test_the_registry_builds_every_carrier_its_settings_and_its_phone() -> None:
    classes = carrier_classes()
    assert [cls.name for cls in classes] == list(CARRIERS)
    assert all(issubclass(cls, Carrier) for cls in classes)
    assert [model.section for model in carrier_settings()] == list(CARRIERS)
    assert all(issubclass(model, CarrierSettings) for model in carrier_settings())
    assert all(isinstance(module, Phone) for module in phones())

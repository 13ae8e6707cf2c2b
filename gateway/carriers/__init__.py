"""Carriers: one package per carrier, each behind the interface of :mod:`gateway.carriers.base`.

``registry.CARRIERS`` lists them; nothing outside this package names a carrier. The helpers every
carrier's codec uses (hostile-JSON-safe parsing, keypad keys) are in :mod:`gateway.carriers.common`.
"""

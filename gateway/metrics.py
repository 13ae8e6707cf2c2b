"""Prometheus metrics: a few counters and gauges, rendered in the text exposition format.

Labels are bounded by design (carrier, reason, outcome...): never a call id or a phone number.
"""

from __future__ import annotations

from collections.abc import Sequence


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Metric:
    kind = "untyped"

    def __init__(self, registry: Registry, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.labels = tuple(labels)
        self.values: dict[tuple[str, ...], float] = {}
        registry.register(self)

    def _key(self, label_values: Sequence[str]) -> tuple[str, ...]:
        if len(label_values) != len(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}")
        return tuple(str(v) for v in label_values)

    def value(self, *label_values: str) -> float:
        return self.values.get(self._key(label_values), 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        if not self.values and not self.labels:
            lines.append(f"{self.name} 0")
        for key, value in sorted(self.values.items()):
            labels = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(self.labels, key, strict=True))
            number = int(value) if float(value).is_integer() else value
            lines.append(f"{self.name}{{{labels}}} {number}" if labels else f"{self.name} {number}")
        return lines


class Counter(_Metric):
    kind = "counter"

    def inc(self, *label_values: str, amount: float = 1.0) -> None:
        key = self._key(label_values)
        self.values[key] = self.values.get(key, 0.0) + amount


class Gauge(_Metric):
    kind = "gauge"

    def set(self, value: float, *label_values: str) -> None:
        self.values[self._key(label_values)] = value

    def inc(self, *label_values: str, amount: float = 1.0) -> None:
        key = self._key(label_values)
        self.values[key] = self.values.get(key, 0.0) + amount


class Registry:
    def __init__(self) -> None:
        self.metrics: list[_Metric] = []

    def register(self, metric: _Metric) -> None:
        self.metrics.append(metric)

    def render(self) -> str:
        lines: list[str] = []
        for metric in self.metrics:
            lines += metric.render()
        return "\n".join(lines) + "\n"


REGISTRY = Registry()

ACTIVE_CALLS = Gauge(REGISTRY, "gateway_active_calls", "Calls in progress.", ("carrier",))
CALLS = Counter(REGISTRY, "gateway_calls_total", "Calls by carrier and how they ended.", ("carrier", "outcome"))
AUTH_REJECTIONS = Counter(REGISTRY, "gateway_auth_rejections_total",
                          "Carrier requests refused before any Voice Live session was opened.",
                          ("carrier", "route", "reason"))

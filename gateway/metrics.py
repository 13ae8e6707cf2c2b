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


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, registry: Registry, name: str, help_text: str, buckets: Sequence[float],
                 labels: Sequence[str] = ()) -> None:
        super().__init__(registry, name, help_text, labels)
        self.buckets = tuple(sorted(buckets))
        self.counts: dict[tuple[str, ...], list[int]] = {}
        self.sums: dict[tuple[str, ...], float] = {}

    def observe(self, value: float, *label_values: str) -> None:
        key = self._key(label_values)
        counts = self.counts.get(key)
        if counts is None:
            counts = self.counts[key] = [0] * (len(self.buckets) + 1)
            self.sums[key] = 0.0
        self.sums[key] += value
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                counts[i] += 1
                break
        else:
            counts[-1] += 1

    def quantile(self, q: float, *label_values: str) -> float | None:
        """The upper bound of the bucket holding the q-quantile (None: no observation)."""
        counts = self.counts.get(self._key(label_values))
        if not counts or not sum(counts):
            return None
        rank, seen = q * sum(counts), 0
        for i, count in enumerate(counts):
            seen += count
            if seen >= rank:
                return self.buckets[i] if i < len(self.buckets) else float("inf")
        return float("inf")

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for key, counts in sorted(self.counts.items()):
            base = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(self.labels, key, strict=True))
            sep = "," if base else ""
            running = 0
            for bound, count in zip((*self.buckets, float("inf")), counts, strict=True):
                running += count
                le = "+Inf" if bound == float("inf") else repr(bound)
                lines.append(f'{self.name}_bucket{{{base}{sep}le="{le}"}} {running}')
            suffix = f"{{{base}}}" if base else ""
            lines.append(f"{self.name}_sum{suffix} {self.sums[key]}")
            lines.append(f"{self.name}_count{suffix} {running}")
        return lines


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

_FAST = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
BARGE_IN_REACTION = Histogram(REGISTRY, "gateway_barge_in_reaction_seconds",
                              "From Voice Live's speech_started reaching the gateway to the phone flush sent.",
                              _FAST, ("carrier",))
LOOP_LAG = Histogram(REGISTRY, "gateway_event_loop_lag_seconds",
                     "How late the event loop ran a timer due every 100 ms.", _FAST)

_CONNECT = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LATENCY = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
VOICELIVE_CONNECT = Histogram(REGISTRY, "gateway_voicelive_connect_seconds",
                              "Time to open a Voice Live session (WebSocket handshake).", _CONNECT, ("carrier",))
VOICELIVE_FAILURES = Counter(REGISTRY, "gateway_voicelive_connect_failures_total",
                             "Voice Live sessions that could not be opened, by HTTP status (session_rejected: the "
                             "session.update was refused).", ("carrier", "status"))
VOICELIVE_RECONNECTS = Counter(REGISTRY, "gateway_voicelive_reconnects_total",
                               "Voice Live sessions reopened mid-call (after a drop, or to renew them).", ("carrier",))
VOICELIVE_ERRORS = Counter(REGISTRY, "gateway_voicelive_errors_total", "Voice Live error events, by code.",
                           ("code",))
FIRST_AUDIO = Histogram(REGISTRY, "gateway_first_audio_seconds",
                        "From the caller's end of speech (Voice Live speech_stopped) to the bot's first audio.",
                        _LATENCY, ("carrier",))
BARGE_INS = Counter(REGISTRY, "gateway_barge_ins_total", "Times the caller talked over the bot.", ("carrier",))
TRUNCATIONS = Counter(REGISTRY, "gateway_truncations_total",
                      "Assistant items cut to what the caller heard.", ("carrier",))
FRAMES = Counter(REGISTRY, "gateway_frames_total", "Audio forwarded: caller frames in, bot audio deltas out.",
                 ("carrier", "direction"))
FRAMES_DROPPED = Counter(REGISTRY, "gateway_frames_dropped_total",
                         "Audio not forwarded, by reason.", ("reason",))

_KNOWN_CODES: set[str] = set()
MAX_CODE_LABELS = 30


def error_code_label(code: str) -> str:
    """Voice Live error codes as a label, bounded: beyond the first few distinct ones, "other"."""
    code = code or "none"
    if code in _KNOWN_CODES:
        return code
    if len(_KNOWN_CODES) < MAX_CODE_LABELS and len(code) <= 64:
        _KNOWN_CODES.add(code)
        return code
    return "other"

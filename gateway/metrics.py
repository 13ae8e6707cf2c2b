"""Prometheus metrics, through prometheus-client, for one process or for all the workers of a gateway.

``gateway serve --workers N`` gives its workers ``PROMETHEUS_MULTIPROC_DIR``, a fresh directory of its
own: every worker writes its samples to files there and every scrape merges all of them, so whichever
worker the kernel hands a scrape to, ``/metrics`` reports the whole gateway. Without that variable
(one process), the samples live in the process.

Labels are bounded by design (carrier, reason, outcome...): never a call id or a phone number. As a
last guard, a metric keeps at most ``MAX_SERIES`` label sets per process; further ones, and label
values longer than ``MAX_LABEL_LEN``, are counted under ``other``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import prometheus_client
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
MAX_SERIES = 100
MAX_LABEL_LEN = 100
OTHER = "other"

# How prometheus-client adds up a gauge across workers (its Gauge's multiprocess_mode values).
MultiprocessMode = Literal["all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum",
                           "mostrecent", "livemostrecent"]

# Series the documentation does not list, and that prometheus-client cannot merge across workers.
prometheus_client.disable_created_metrics()


def multiprocess_dir() -> str | None:
    """Where every worker writes its samples; None: this process keeps its own."""
    return os.environ.get(MULTIPROC_DIR_ENV) or None


class _Metric:
    """One metric: a prometheus-client metric behind the small interface the gateway's code uses."""

    sample_suffix = ""

    def __init__(self, registry: Registry, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.labels = tuple(labels)
        self._series: set[tuple[str, ...]] = set()
        # the child of each set of label values as given (a barge-in counts three times: prometheus-client's
        # own look-up checks and converts the values each time, several µs)
        self._children: dict[tuple[Any, ...], Any] = {}
        self._metric = self._build(registry.collectors)
        registry.register(self)

    def _build(self, collectors: CollectorRegistry) -> Any:
        raise NotImplementedError

    def _key(self, label_values: Sequence[str]) -> tuple[str, ...]:
        if len(label_values) != len(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}")
        return tuple(str(v) for v in label_values)

    def _bounded(self, label_values: Sequence[str]) -> tuple[str, ...]:
        key = self._key(label_values)
        if key in self._series:
            return key
        if len(self._series) < MAX_SERIES and all(len(v) <= MAX_LABEL_LEN for v in key):
            self._series.add(key)
            return key
        return (OTHER,) * len(key)

    def _child(self, label_values: tuple[str, ...]) -> Any:
        child = self._children.get(label_values)
        if child is None:
            key = self._bounded(label_values)
            child = self._metric.labels(*key) if key else self._metric
            if len(self._children) < 2 * MAX_SERIES:  # values past the bound all count as OTHER: not all kept
                self._children[label_values] = child
        return child

    def value(self, *label_values: str) -> float:
        """This process's value of one sample (a histogram: its count), 0 if nothing counted it."""
        wanted = dict(zip(self.labels, self._key(label_values), strict=True))
        name = self.name.removesuffix(self.sample_suffix) + self.sample_suffix
        return next((float(s.value) for s in self._samples() if s.name == name and s.labels == wanted), 0.0)

    def _samples(self) -> Iterable[Any]:
        for family in self._metric.collect():
            yield from family.samples


class Counter(_Metric):
    sample_suffix = "_total"

    def _build(self, collectors: CollectorRegistry) -> Any:
        return prometheus_client.Counter(self.name, self.help, self.labels, registry=collectors)

    def inc(self, *label_values: str, amount: float = 1.0) -> None:
        self._child(label_values).inc(amount)


class Gauge(_Metric):
    """A gauge; with several workers, ``multiprocess_mode`` says how theirs add up (livesum: the sum
    over the workers alive, so a worker that died stops counting)."""

    def __init__(self, registry: Registry, name: str, help_text: str, labels: Sequence[str] = (),
                 multiprocess_mode: MultiprocessMode = "livesum") -> None:
        self.multiprocess_mode = multiprocess_mode
        super().__init__(registry, name, help_text, labels)

    def _build(self, collectors: CollectorRegistry) -> Any:
        return prometheus_client.Gauge(self.name, self.help, self.labels, registry=collectors,
                                       multiprocess_mode=self.multiprocess_mode)

    def set(self, value: float, *label_values: str) -> None:
        self._child(label_values).set(value)

    def inc(self, *label_values: str, amount: float = 1.0) -> None:
        self._child(label_values).inc(amount)

    def declare(self, *label_values: str) -> None:
        """Show this sample, at 0, before anything counts it (an autoscaler reads 0, not nothing)."""
        self._child(label_values)


class Histogram(_Metric):
    sample_suffix = "_count"

    def __init__(self, registry: Registry, name: str, help_text: str, buckets: Sequence[float],
                 labels: Sequence[str] = ()) -> None:
        self.buckets = tuple(sorted(buckets))
        super().__init__(registry, name, help_text, labels)

    def _build(self, collectors: CollectorRegistry) -> Any:
        return prometheus_client.Histogram(self.name, self.help, self.labels, registry=collectors,
                                           buckets=self.buckets)

    def observe(self, value: float, *label_values: str) -> None:
        self._child(label_values).observe(value)


class Registry:
    """The gateway's metrics, and their exposition: this process's, or every worker's."""

    def __init__(self) -> None:
        self.metrics: list[_Metric] = []
        self.collectors = CollectorRegistry(auto_describe=True)

    def register(self, metric: _Metric) -> None:
        self.metrics.append(metric)

    def _source(self) -> CollectorRegistry:
        directory = multiprocess_dir()
        if directory is None:
            return self.collectors
        merged = CollectorRegistry()  # a fresh one per scrape, as prometheus-client's multiprocess mode wants
        MultiProcessCollector(merged, path=directory)
        return merged

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The body and content type of a scrape (the format the Accept header asks for). It reads
        files with several workers: call it off the event loop."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self._source()), content_type

    def render(self) -> str:
        """The Prometheus text format."""
        return prometheus_client.generate_latest(self._source()).decode()


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
VOICELIVE_DEFERRED = Counter(REGISTRY, "gateway_voicelive_messages_deferred_total",
                             "Voice Live messages handled a pass of the event loop later, so that callers' "
                             "audio went first (bursts of replies).")

_CONNECT = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LATENCY = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
VOICELIVE_CONNECT = Histogram(REGISTRY, "gateway_voicelive_connect_seconds",
                              "Time to open a Voice Live session (WebSocket handshake).", _CONNECT, ("carrier",))
VOICELIVE_FAILURES = Counter(REGISTRY, "gateway_voicelive_connect_failures_total",
                             "Voice Live sessions that could not be opened, by HTTP status (session_rejected: the "
                             "session.update was refused).", ("carrier", "status"))
VOICELIVE_RECONNECTS = Counter(REGISTRY, "gateway_voicelive_reconnects_total",
                               "Voice Live sessions reopened mid-call (after a drop, or to renew them).", ("carrier",))
WARM_SESSIONS = Counter(REGISTRY, "gateway_voicelive_warm_sessions_total",
                        "Voice Live sessions opened when a call was announced, before its media: opened, used by "
                        "their call, wasted (the media never came), failed, mismatch (the call was not the one "
                        "announced), skipped (too many waiting).", ("result",))
VOICELIVE_CONNECTS = Counter(REGISTRY, "gateway_voicelive_resource_connects_total",
                             "New Voice Live connections per resource, by purpose (call, warm, reconnect, renewal) "
                             "and result (ok, or the HTTP status that refused it).", ("resource", "purpose", "result"))
VOICELIVE_REFUSALS = Counter(REGISTRY, "gateway_voicelive_budget_refusals_total",
                             "Connects a resource's budget refused: budget (none left this minute), reserve (a "
                             "renewal may not take the last ones), backoff (the service answered 429).",
                             ("resource", "reason"))
VOICELIVE_BUSY = Counter(REGISTRY, "gateway_voicelive_out_of_budget_total",
                         "Connects that found no resource with budget within their wait, by purpose.", ("purpose",))
VOICELIVE_BUDGET = Gauge(REGISTRY, "gateway_voicelive_budget_remaining",
                         "Connects left in a resource's budget for the current minute, as this worker last saw it "
                         "(with GATEWAY_REDIS_URL the resource's whole budget; without, this worker's share).",
                         ("resource",), multiprocess_mode="liveall")
VOICELIVE_ACTIVE = Gauge(REGISTRY, "gateway_voicelive_sessions", "Voice Live sessions open, per resource.",
                         ("resource",))
VOICELIVE_RENEWALS = Counter(REGISTRY, "gateway_voicelive_renewals_total",
                             "Session renewals before Voice Live's session limit: renewed, or deferred (no budget "
                             "beyond the reserve: tried again later).", ("result",))
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
HTTP_STATUSES = (400, 401, 403, 404, 408, 429, 500, 502, 503, 504)


def status_label(status: int | None) -> str:
    """A bounded label for the HTTP status a connect failed with."""
    return str(status) if status in HTTP_STATUSES else ("other" if status else "unreachable")


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

# Post-call records and what calls cost
RECORDS = Counter(REGISTRY, "gateway_records_total",
                  "Post-call records: delivered (the webhook answered 2xx), failed (kept in the spool after the "
                  "last attempt), retried (an attempt that failed and will be tried again).", ("outcome",))
RECORDS_SPOOLED = Gauge(REGISTRY, "gateway_records_spooled",
                        "Post-call records waiting in the spool directory (not yet delivered).",
                        multiprocess_mode="livemostrecent")
TOKENS = Counter(REGISTRY, "gateway_voicelive_tokens_total",
                 "Voice Live tokens of ended calls, summed from every response.done, by kind (input_text, "
                 "input_audio, input_cached, ..., output_text, output_audio).", ("kind",))
CALL_SECONDS = Counter(REGISTRY, "gateway_call_seconds_total", "Duration of ended calls, in seconds.",
                       ("carrier", "direction"))
CONFIG_RELOADS = Counter(REGISTRY, "gateway_config_reloads_total",
                         "Configuration reloads (SIGHUP, or the file changed), by result: ok, invalid, unchanged.",
                         ("result",))
# 1 for the hash of the configuration file a worker runs with (0 for the one it ran with before); with
# several workers, 1 where any worker runs with it: two hashes at 1 mean the workers do not agree yet
CONFIG_INFO = Gauge(REGISTRY, "gateway_config_info", "The configuration file loaded, by its hash (sha256, 16 hex).",
                    ("hash",), multiprocess_mode="livemax")
DIRECTIONS = ("inbound", "outbound")


def direction_label(direction: str) -> str:
    """A call's direction as a label: inbound or outbound (anything else: other)."""
    return direction if direction in DIRECTIONS else OTHER

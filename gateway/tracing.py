"""Traces of calls, exported by the OpenTelemetry SDK (the ``otel`` extra).

Tracing is on when the SDK is installed and the standard environment asks for it:
``OTEL_TRACES_EXPORTER`` (``otlp`` by default, or ``console``; ``none`` turns tracing off) with, for
``otlp``, an endpoint in ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``;
``OTEL_SDK_DISABLED=true`` turns it off. The SDK reads the rest of ``OTEL_*`` itself (headers,
timeouts, sampler, batch sizes, ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``).

Each call is one trace: a root span ``call`` from the call's start to its end, with child spans
``voicelive.connect``, ``turn`` (one per response of the bot, with its latency to first audio),
``barge_in``, ``tool`` (whose context goes to http tools as W3C ``traceparent``), ``reconnect`` and
``transfer``. Spans are made from what a call reports to its observer (a few events per turn,
never one per audio frame), on the call's own clock. Nothing in a trace is a phone number, a
transcript, a key the caller pressed or a secret.

Off, nothing of OpenTelemetry is imported: this module only reads the environment.
"""

from __future__ import annotations

import contextvars
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gateway import __version__
from gateway.log import get_logger

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span

__all__ = ["DEFAULT_SERVICE_NAME", "CallTrace", "Tracing", "requested_exporters", "tool_headers"]

log = get_logger("gateway.tracing")

DEFAULT_SERVICE_NAME = "voicelive-phone-gateway"
EXPORTERS = ("otlp", "console")  # the exporters the gateway sets up (OTEL_TRACES_EXPORTER)
INSTALL_HINT = "pip install 'voicelive-phone-gateway[otel]'"

# What an http tool's request carries to continue the trace (``traceparent``, ``tracestate``): set
# in the task that runs one tool, read by the http tool runner. Unset: the request is unchanged.
_TOOL_HEADERS: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "gateway_tool_trace_headers", default=None)


def tool_headers() -> dict[str, str] | None:
    """The trace headers for the http tool request being made now (None: not traced)."""
    return _TOOL_HEADERS.get()


def use_tool_headers(headers: dict[str, str] | None) -> None:
    """The tool run in this task continues the trace with ``headers`` (a task's own context: set it
    in the task that runs the tool)."""
    _TOOL_HEADERS.set(headers)


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def requested_exporters(environ: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """Which span exporters the environment asks for (empty: tracing off), and notes for the operator
    on what it asks for that the gateway does not do. Reads no more than the environment."""
    if _flag(environ.get("OTEL_SDK_DISABLED")):
        return [], []
    names = [n.strip().lower() for n in (environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(",") if n.strip()]
    if not names or "none" in names:
        return [], []
    exporters: list[str] = []
    notes: list[str] = []
    for name in dict.fromkeys(names):
        if name not in EXPORTERS:
            notes.append(f"OTEL_TRACES_EXPORTER={name} is not an exporter the gateway sets up (otlp, console): ignored")
        elif name == "otlp":
            endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            if not endpoint:
                continue  # no collector named: the standard environment does not ask for traces
            protocol = (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                        or "http/protobuf").strip().lower()
            if protocol != "http/protobuf":
                notes.append(f"OTLP protocol {protocol} is not supported (the gateway exports http/protobuf): "
                             "no OTLP export")
                continue
            exporters.append(name)
        else:
            exporters.append(name)
    return exporters, notes


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # its endpoint, headers, timeout and compression from OTEL_EXPORTER_OTLP_*


def _resource() -> Any:
    """The service's resource: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES as the SDK reads them,
    the service named voicelive-phone-gateway unless they name it."""
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource

    detected = Resource.create({SERVICE_VERSION: __version__})
    if str(detected.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        return Resource.create({SERVICE_NAME: DEFAULT_SERVICE_NAME, SERVICE_VERSION: __version__})
    return detected


class Tracing:
    """The gateway's tracer: one per running application, shut down (its spans flushed) with it."""

    def __init__(self, provider: TracerProvider) -> None:
        """Trace calls into ``provider``, an SDK TracerProvider with its span processors (see
        :meth:`exporting_to` for the one the gateway builds)."""
        from opentelemetry import propagate, trace

        self.provider = provider
        self.tracer = provider.get_tracer("gateway", __version__)
        self._trace = trace
        self._ok = trace.Status(trace.StatusCode.OK)
        self._inject = propagate.inject  # the configured propagators (OTEL_PROPAGATORS; W3C by default)

    @classmethod
    def exporting_to(cls, *exporters: SpanExporter) -> Tracing:
        """A tracer whose spans go, in batches, to ``exporters``: an SDK TracerProvider with the
        service's resource and one BatchSpanProcessor per exporter."""
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=_resource())
        for exporter in exporters:
            provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Tracing | None:
        """The tracer the standard ``OTEL_*`` environment asks for, or None (tracing off: then
        nothing of OpenTelemetry is imported)."""
        environ = os.environ if environ is None else environ
        names, notes = requested_exporters(environ)
        for note in notes:
            log.warning(note)
        if not names:
            return None
        try:
            exporters = [_exporter(name) for name in names]
        except ImportError as exc:
            log.warning("OTEL_* asks for traces but OpenTelemetry is not installed: tracing is off",
                        missing=exc.name, install=INSTALL_HINT)
            return None
        tracing = cls.exporting_to(*exporters)
        log.info("call traces on", exporters=names,
                 service=tracing.provider.resource.attributes.get("service.name"))
        return tracing

    def call(self, call_id: str, carrier: str, profile: str, direction: str, started_at: float,
             clock_zero_ns: int) -> CallTrace:
        """The trace of a call that started at ``started_at`` (ms on its clock, whose zero is the
        epoch time ``clock_zero_ns``)."""
        return CallTrace(self, call_id, carrier, profile, direction, started_at, clock_zero_ns)

    def flush(self, timeout_ms: int = 10_000) -> bool:
        return bool(self.provider.force_flush(timeout_ms))

    def shutdown(self) -> None:
        """Export what is left and stop (blocking: run it off the event loop)."""
        self.provider.shutdown()


class CallTrace:
    """One call's trace, made from what the call reports to its observer (``__call__``, with the
    times of its clock). The shell ends it once the call has ended and its legs are closed."""

    __slots__ = ("_connect", "_ended", "_reconnect", "_root", "_root_ctx", "_speech_stopped", "_tools",
                 "_tracing", "_transfer", "_turns", "_zero_ns")

    def __init__(self, tracing: Tracing, call_id: str, carrier: str, profile: str, direction: str,
                 started_at: float, clock_zero_ns: int) -> None:
        self._tracing = tracing
        self._zero_ns = clock_zero_ns
        self._root = tracing.tracer.start_span("call", start_time=self._ns(started_at), attributes={
            "gateway.call_id": call_id, "gateway.carrier": carrier, "gateway.profile": profile,
            "gateway.call.direction": direction})
        self._root_ctx = tracing._trace.set_span_in_context(self._root)
        # the call opens its Voice Live session as it starts
        self._connect: Span | None = self._child("voicelive.connect", started_at)
        self._reconnect: Span | None = None
        self._turns: dict[str | None, tuple[Span, float]] = {}  # by response id: (span, its start)
        self._tools: dict[str, tuple[Span, float]] = {}  # by tool call id
        self._speech_stopped: float | None = None  # the caller's turn ended, not yet answered
        self._transfer: Span | None = None
        self._ended = False

    def _ns(self, t: float) -> int:
        return self._zero_ns + int(t * 1_000_000)

    def _child(self, name: str, t: float, attributes: dict[str, Any] | None = None) -> Span:
        return self._tracing.tracer.start_span(name, context=self._root_ctx, start_time=self._ns(t),
                                               attributes=attributes)

    def _fail(self, span: Span, description: str) -> None:
        trace = self._tracing._trace
        span.set_status(trace.Status(trace.StatusCode.ERROR, description))

    def _ok(self, span: Span) -> None:
        span.set_status(self._tracing._ok)

    def __call__(self, event: str, t: float, fields: dict[str, Any]) -> None:
        if self._ended:
            return
        handler = _HANDLERS.get(event)
        if handler is not None:
            try:
                handler(self, t, fields)
            except Exception as exc:  # a trace must never break a call
                log.warning("a call's trace could not take an event", trace_event=event, error=repr(exc))

    # --- Voice Live sessions ------------------------------------------------------------------

    def _connected(self, t: float, fields: dict[str, Any]) -> None:
        if self._connect is not None:
            self._connect.set_attribute("gateway.voicelive.connect_ms", float(fields.get("connect_ms") or 0.0))
            self._connect.add_event("connected", timestamp=self._ns(t))
        elif self._reconnect is not None:
            self._reconnect.add_event("connected", timestamp=self._ns(t))

    def _ready(self, t: float, fields: dict[str, Any]) -> None:
        span, self._connect = self._connect, None
        if span is not None:
            ready_ms = fields.get("ready_ms")
            if isinstance(ready_ms, int | float):
                span.set_attribute("gateway.voicelive.ready_ms", float(ready_ms))
            self._ok(span)
            span.end(end_time=self._ns(t))

    def _hold(self, t: float, fields: dict[str, Any]) -> None:
        if self._connect is not None:
            self._connect.add_event("waiting for a connection", {"gateway.hold_ms": int(fields.get("ms") or 0)},
                                    timestamp=self._ns(t))

    def _lost(self, t: float, fields: dict[str, Any]) -> None:
        code = fields.get("code")
        attributes: dict[str, Any] = {"gateway.voicelive.renewal": bool(fields.get("renewing"))}
        if isinstance(code, int):
            attributes["gateway.voicelive.close_code"] = code
        if self._reconnect is None:
            self._reconnect = self._child("reconnect", t, attributes)
        else:  # lost again before the session was restored: the same episode
            self._reconnect.add_event("lost again", attributes, timestamp=self._ns(t))

    def _restored(self, t: float, fields: dict[str, Any]) -> None:
        span, self._reconnect = self._reconnect, None
        if span is not None:
            span.set_attribute("gateway.held_frames", int(fields.get("held_frames") or 0))
            self._ok(span)
            span.end(end_time=self._ns(t))

    def _error(self, t: float, fields: dict[str, Any]) -> None:
        attributes = {"gateway.voicelive.error_code": str(fields.get("code") or "")}
        caused_by = fields.get("caused_by")
        if isinstance(caused_by, str):
            attributes["gateway.voicelive.caused_by"] = caused_by
        self._root.add_event("voicelive.error", attributes, timestamp=self._ns(t))

    # --- turns --------------------------------------------------------------------------------

    def _speech_stop(self, t: float, fields: dict[str, Any]) -> None:
        self._speech_stopped = t

    def _response_created(self, t: float, fields: dict[str, Any]) -> None:
        rid = fields.get("response_id")
        start, self._speech_stopped = self._speech_stopped, None
        attributes: dict[str, Any] = {"gateway.turn.after": "caller" if start is not None else "gateway"}
        if isinstance(rid, str):
            attributes["gateway.response_id"] = rid
        start = t if start is None else start
        previous = self._turns.pop(rid, None)
        if previous is not None:  # (the same id twice: the first is over)
            previous[0].end(end_time=self._ns(t))
        self._turns[rid] = (self._child("turn", start, attributes), start)

    def _first_audio(self, t: float, fields: dict[str, Any]) -> None:
        turn = self._turns.get(fields.get("response_id"))
        if turn is not None:
            span, start = turn
            span.set_attribute("gateway.turn.latency_ms", round(t - start, 1))

    def _response_done(self, t: float, fields: dict[str, Any]) -> None:
        turn = self._turns.pop(fields.get("response_id"), None)
        if turn is None:
            return
        span = turn[0]
        status = fields.get("status")
        span.set_attribute("gateway.response.status", str(status or "unknown"))
        reason = fields.get("reason")
        if isinstance(reason, str):
            span.set_attribute("gateway.response.reason", reason)
        if status == "failed":
            self._fail(span, "the response failed")
        span.end(end_time=self._ns(t))

    def _barge_in(self, t: float, fields: dict[str, Any]) -> None:
        attributes: dict[str, Any] = {"gateway.barge_in.cleared": bool(fields.get("cleared"))}
        for field, key in (("truncated_at_ms", "gateway.barge_in.truncated_at_ms"),
                           ("received_ms", "gateway.barge_in.received_ms")):
            value = fields.get(field)
            if isinstance(value, int):
                attributes[key] = value
        rid = fields.get("response_id")
        if isinstance(rid, str):
            attributes["gateway.response_id"] = rid
        span = self._child("barge_in", t, attributes)
        span.end(end_time=self._ns(t))

    # --- tools --------------------------------------------------------------------------------

    def _tool_called(self, t: float, fields: dict[str, Any]) -> None:
        call_id = fields.get("call_id")
        if not isinstance(call_id, str) or call_id in self._tools:
            return
        name = fields.get("name")
        self._tools[call_id] = (self._child("tool", t, {"gateway.tool.name": str(name),
                                                         "gateway.tool.call_id": call_id}), t)

    def _tool_finished(self, t: float, fields: dict[str, Any], ok: bool, error: str | None) -> None:
        call_id = fields.get("call_id")
        tool = self._tools.pop(call_id, None) if isinstance(call_id, str) else None
        if tool is None:
            return
        span, start = tool
        span.set_attribute("gateway.tool.outcome", "ok" if ok else "error")
        span.set_attribute("gateway.tool.duration_ms", round(t - start, 1))
        if ok:
            self._ok(span)
        else:
            self._fail(span, error or "the tool failed")
        span.end(end_time=self._ns(t))

    def _tool_done(self, t: float, fields: dict[str, Any]) -> None:
        self._tool_finished(t, fields, bool(fields.get("ok")), None)

    def _tool_refused(self, t: float, fields: dict[str, Any]) -> None:
        self._tool_finished(t, fields, False, str(fields.get("error") or "refused"))

    def tool_headers(self, call_id: str) -> dict[str, str] | None:
        """The headers that carry the context of tool call ``call_id``'s span to its service
        (W3C ``traceparent``, ``tracestate``, as the configured propagators write them)."""
        tool = self._tools.get(call_id)
        if tool is None:
            return None
        headers: dict[str, str] = {}
        self._tracing._inject(headers, context=self._tracing._trace.set_span_in_context(tool[0]))
        return headers or None

    # --- the end ------------------------------------------------------------------------------

    def _limit(self, t: float, fields: dict[str, Any]) -> None:
        self._root.add_event("call.limit", {"gateway.reason": str(fields.get("reason"))}, timestamp=self._ns(t))

    def _answered_by(self, t: float, fields: dict[str, Any]) -> None:
        self._root.set_attribute("gateway.call.answered_by", str(fields.get("answered_by")))

    def _call_ended(self, t: float, fields: dict[str, Any]) -> None:
        self._root.set_attribute("gateway.call.end_reason", str(fields.get("reason")))
        if fields.get("transfer_to"):  # (never its number: only that the call is handed over)
            self._transfer = self._child("transfer", t, {"gateway.reason": str(fields.get("reason"))})

    def finish(self, t: float, *, failed: bool) -> None:
        """The call has ended and its legs are closed (a transfer asked of the carrier is done):
        end what is still open, then the call's span."""
        if self._ended:
            return
        self._ended = True
        try:
            self._finish(self._ns(t), failed)
        except Exception as exc:  # a trace must never break the end of a call
            log.warning("a call's trace could not be ended", error=repr(exc))

    def _finish(self, end: int, failed: bool) -> None:
        for span, _ in self._turns.values():
            span.set_attribute("gateway.response.status", "unfinished")
            span.end(end_time=end)
        for span, _ in self._tools.values():
            self._fail(span, "the call ended first")
            span.end(end_time=end)
        for session in (self._connect, self._reconnect):
            if session is not None:
                self._fail(session, "no session")
                session.end(end_time=end)
        if self._transfer is not None:
            if failed:
                self._fail(self._transfer, "the call ended in a failure")
            self._transfer.end(end_time=end)
        self._turns.clear()
        self._tools.clear()
        if failed:
            self._fail(self._root, "the gateway could not serve the call")
        self._root.end(end_time=end)


_HANDLERS = {
    "voicelive.connected": CallTrace._connected,
    "session.ready": CallTrace._ready,
    "hold": CallTrace._hold,
    "voicelive.lost": CallTrace._lost,
    "session.restored": CallTrace._restored,
    "voicelive.error": CallTrace._error,
    "caller.speech_stopped": CallTrace._speech_stop,
    "response.created": CallTrace._response_created,
    "bot.first_audio": CallTrace._first_audio,
    "response.done": CallTrace._response_done,
    "barge_in": CallTrace._barge_in,
    "tool.called": CallTrace._tool_called,
    "tool.done": CallTrace._tool_done,
    "tool.refused": CallTrace._tool_refused,
    "call.limit": CallTrace._limit,
    "call.answered_by": CallTrace._answered_by,
    "call.ended": CallTrace._call_ended,
}


def clock_zero_ns(now_ms: float) -> int:
    """The epoch time (ns) of a call clock's zero, ``now_ms`` being that clock's reading now."""
    return time.time_ns() - int(now_ms * 1_000_000)

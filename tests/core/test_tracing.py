"""Call traces without sockets: what the environment asks for, and a call's events made spans."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from gateway.bridge import CallObserver
from gateway.call import Call
from gateway.config import parse_config
from gateway.tracing import DEFAULT_SERVICE_NAME, CallTrace, Tracing, requested_exporters

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
ZERO_NS = 1_700_000_000_000_000_000  # the epoch time of the call clock's zero
MS = 1_000_000  # ns


@pytest.mark.parametrize("environ, exporters", [
    ({}, []),  # nothing asked: off
    ({"OTEL_TRACES_EXPORTER": "otlp"}, []),  # OTLP, but no collector named
    (ENDPOINT, ["otlp"]),  # otlp is the standard default exporter
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, ["otlp"]),
    ({**ENDPOINT, "OTEL_TRACES_EXPORTER": "none"}, []),
    ({**ENDPOINT, "OTEL_SDK_DISABLED": "TRUE"}, []),
    ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
    ({**ENDPOINT, "OTEL_TRACES_EXPORTER": "otlp, console"}, ["otlp", "console"]),
    ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "false"}, ["console"]),
])
def test_the_standard_environment_turns_tracing_on(environ: dict[str, str], exporters: list[str]) -> None:
    assert requested_exporters(environ) == (exporters, [])


def test_what_the_gateway_does_not_export_is_said_not_ignored_silently() -> None:
    exporters, notes = requested_exporters({**ENDPOINT, "OTEL_TRACES_EXPORTER": "zipkin,otlp",
                                            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert exporters == []
    assert [note.split(" ")[0] for note in notes] == ["OTEL_TRACES_EXPORTER=zipkin", "OTLP"]
    assert "grpc is not supported" in notes[1]


def test_off_the_environment_builds_no_tracer() -> None:
    assert Tracing.from_environment({}) is None
    assert Tracing.from_environment({**ENDPOINT, "OTEL_SDK_DISABLED": "true"}) is None


def test_on_the_environment_builds_the_sdk_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(name, raising=False)
    tracing = Tracing.from_environment({"OTEL_TRACES_EXPORTER": "console"})
    assert tracing is not None
    try:
        processors = tracing.provider._active_span_processor._span_processors
        assert [type(p).__name__ for p in processors] == ["BatchSpanProcessor"]
        assert tracing.provider.resource.attributes["service.name"] == DEFAULT_SERVICE_NAME
    finally:
        tracing.shutdown()


@pytest.mark.parametrize("environ, name", [
    ({}, DEFAULT_SERVICE_NAME),
    ({"OTEL_SERVICE_NAME": "phones-eu"}, "phones-eu"),
    ({"OTEL_RESOURCE_ATTRIBUTES": "service.name=phones-us,deployment.environment=prod"}, "phones-us"),
])
def test_the_service_is_named_by_the_environment(monkeypatch: pytest.MonkeyPatch, environ: dict[str, str],
                                                 name: str) -> None:
    for key in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(key, raising=False)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    tracing = Tracing.exporting_to(InMemorySpanExporter())
    try:
        assert tracing.provider.resource.attributes["service.name"] == name
    finally:
        tracing.shutdown()


@pytest.fixture
def traced() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    tracing = Tracing.exporting_to(exporter)
    try:
        yield tracing, exporter
    finally:
        tracing.shutdown()


def _trace(tracing: Tracing, direction: str = "inbound") -> CallTrace:
    return tracing.call("CA42", "phone", "main", direction, 0.0, ZERO_NS)


def _spans(tracing: Tracing, exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    assert tracing.flush()
    spans: dict[str, list[ReadableSpan]] = {}
    for span in exporter.get_finished_spans():
        spans.setdefault(span.name, []).append(span)
    return spans


def _times(span: ReadableSpan) -> tuple[float, float]:
    """A span's start and end on the call's clock (ms)."""
    assert span.start_time is not None and span.end_time is not None
    return (span.start_time - ZERO_NS) / MS, (span.end_time - ZERO_NS) / MS


def test_a_call_is_one_trace_of_its_moments(traced) -> None:
    tracing, exporter = traced
    trace = _trace(tracing)
    for t, event, fields in [
        (120.0, "voicelive.connected", {"connect_ms": 120.0, "restored_turns": 0}),
        (180.0, "session.ready", {"format": "g711_ulaw", "held_frames": 3, "ready_ms": 180.0}),
        (900.0, "caller.speech_started", {"audio_start_ms": 100}),
        (1000.0, "caller.speech_stopped", {"audio_end_ms": 800}),
        (1300.0, "response.created", {"response_id": "resp_1"}),
        (1450.0, "bot.first_audio", {"response_id": "resp_1", "item_id": "item_1"}),
        (1500.5, "caller.transcript", {"item_id": "item_0", "text": "my card is 4111 1111 1111 1111"}),
        (2000.0, "response.done", {"response_id": "resp_1", "status": "completed", "reason": None}),
        (2100.0, "response.created", {"response_id": "resp_2"}),  # (a response the caller did not ask: no turn end)
        (2200.0, "bot.first_audio", {"response_id": "resp_2", "item_id": "item_2"}),
        (2500.0, "barge_in", {"cleared": True, "response_id": "resp_2", "item_id": "item_2",
                              "truncated_at_ms": 800, "received_ms": 1200}),
        (2520.0, "response.done", {"response_id": "resp_2", "status": "cancelled", "reason": "turn_detected"}),
        (2600.0, "caller.dtmf", {"digit": "7"}),
        (3000.0, "tool.called", {"name": "lookup_order", "call_id": "call_1"}),
    ]:
        trace(event, t, fields)
    headers = trace.tool_headers("call_1")
    for t, event, fields in [
        (3400.0, "tool.done", {"name": "lookup_order", "call_id": "call_1", "ok": True}),
        (4000.0, "voicelive.lost", {"code": 1011, "renewing": False}),
        (4100.0, "voicelive.connected", {"connect_ms": 4100.0, "restored_turns": 2}),
        (4200.0, "session.restored", {"held_frames": 5}),
        (5000.0, "call.ended", {"reason": "transferred", "transfer_to": "+15551234567"}),
    ]:
        trace(event, t, fields)
    trace.finish(5300.0, failed=False)
    trace("tool.called", 5400.0, {"name": "late", "call_id": "call_9"})  # after its end: nothing
    spans = _spans(tracing, exporter)

    assert sorted(spans) == ["barge_in", "call", "reconnect", "tool", "transfer", "turn", "voicelive.connect"]
    (root,) = spans["call"]
    everything = [span for group in spans.values() for span in group]
    assert {span.context.trace_id for span in everything} == {root.context.trace_id}
    assert root.parent is None
    assert all(span.parent is not None and span.parent.span_id == root.context.span_id
               for span in everything if span is not root)
    assert _times(root) == (0.0, 5300.0)
    assert dict(root.attributes or {}) == {
        "gateway.call_id": "CA42", "gateway.carrier": "phone", "gateway.profile": "main",
        "gateway.call.direction": "inbound", "gateway.call.end_reason": "transferred"}
    assert root.status.status_code is StatusCode.UNSET

    (connect,) = spans["voicelive.connect"]
    assert _times(connect) == (0.0, 180.0)
    assert connect.attributes == {"gateway.voicelive.connect_ms": 120.0, "gateway.voicelive.ready_ms": 180.0}
    assert connect.status.status_code is StatusCode.OK

    first, second = sorted(spans["turn"], key=lambda s: s.start_time or 0)
    assert _times(first) == (1000.0, 2000.0)  # from the end of the caller's speech to the response's end
    assert first.attributes == {"gateway.turn.after": "caller", "gateway.response_id": "resp_1",
                                "gateway.turn.latency_ms": 450.0, "gateway.response.status": "completed"}
    assert _times(second) == (2100.0, 2520.0)
    assert second.attributes == {"gateway.turn.after": "gateway", "gateway.response_id": "resp_2",
                                 "gateway.turn.latency_ms": 100.0, "gateway.response.status": "cancelled",
                                 "gateway.response.reason": "turn_detected"}

    (barge_in,) = spans["barge_in"]
    assert _times(barge_in) == (2500.0, 2500.0)
    assert barge_in.attributes == {"gateway.barge_in.cleared": True, "gateway.barge_in.truncated_at_ms": 800,
                                   "gateway.barge_in.received_ms": 1200, "gateway.response_id": "resp_2"}

    (tool,) = spans["tool"]
    assert _times(tool) == (3000.0, 3400.0)
    assert tool.attributes == {"gateway.tool.name": "lookup_order", "gateway.tool.call_id": "call_1",
                               "gateway.tool.outcome": "ok", "gateway.tool.duration_ms": 400.0}
    assert tool.status.status_code is StatusCode.OK
    ctx = tool.context
    assert headers == {"traceparent": f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"}
    assert ctx.trace_flags.sampled
    assert trace.tool_headers("call_1") is None  # (it has ended)

    (reconnect,) = spans["reconnect"]
    assert _times(reconnect) == (4000.0, 4200.0)
    assert reconnect.attributes == {"gateway.voicelive.renewal": False, "gateway.voicelive.close_code": 1011,
                                    "gateway.held_frames": 5}
    assert [e.name for e in reconnect.events] == ["connected"]

    (transfer,) = spans["transfer"]  # from the call's end to the carrier's hand-over done
    assert _times(transfer) == (5000.0, 5300.0)
    assert transfer.attributes == {"gateway.reason": "transferred"}

    # no phone number, no transcript, no key the caller pressed: anywhere
    values = [str(v) for span in everything for v in (span.attributes or {}).values()]
    values += [str(v) for span in everything for e in span.events for v in (e.attributes or {}).values()]
    assert not [v for v in values if "555" in v or "4111" in v or v == "7"]


def test_what_a_failed_call_leaves_open_ends_with_it_as_an_error(traced) -> None:
    tracing, exporter = traced
    trace = _trace(tracing, direction="outbound")
    trace("hold", 10.0, {"ms": 5000})
    trace("tool.called", 20.0, {"name": "lookup_order", "call_id": "call_1"})  # (cannot happen: still connecting)
    trace("voicelive.error", 40.0, {"code": "invalid_model", "message": "no such model", "caused_by": "session.update"})
    trace("call.ended", 50.0, {"reason": "voicelive_session_rejected", "transfer_to": None})
    trace.finish(60.0, failed=True)
    spans = _spans(tracing, exporter)
    assert sorted(spans) == ["call", "tool", "voicelive.connect"]
    (root,) = spans["call"]
    assert root.status.status_code is StatusCode.ERROR
    assert root.attributes is not None and root.attributes["gateway.call.direction"] == "outbound"
    assert [(e.name, dict(e.attributes or {})) for e in root.events] == [
        ("voicelive.error", {"gateway.voicelive.error_code": "invalid_model",
                             "gateway.voicelive.caused_by": "session.update"})]
    (connect,) = spans["voicelive.connect"]
    assert connect.status.status_code is StatusCode.ERROR and _times(connect) == (0.0, 60.0)
    assert [e.name for e in connect.events] == ["waiting for a connection"]
    (tool,) = spans["tool"]
    assert tool.status.status_code is StatusCode.ERROR and tool.status.description == "the call ended first"


def test_a_refused_tool_and_a_turn_cut_by_the_end(traced) -> None:
    tracing, exporter = traced
    trace = _trace(tracing)
    trace("session.ready", 100.0, {"ready_ms": 100.0})
    trace("caller.speech_stopped", 500.0, {"audio_end_ms": 400})
    trace("caller.speech_stopped", 700.0, {"audio_end_ms": 600})  # the caller went on: the later end counts
    trace("response.created", 900.0, {"response_id": "resp_1"})
    trace("tool.called", 1000.0, {"name": "transfer_call", "call_id": "call_1"})
    trace("tool.refused", 1001.0, {"name": "transfer_call", "call_id": "call_1",
                                   "error": "transfers are not available on this line"})
    trace("voicelive.lost", 1500.0, {"code": 1006, "renewing": True})
    trace("voicelive.lost", 1600.0, {"code": None, "renewing": False})
    trace("call.ended", 2000.0, {"reason": "caller_hung_up", "transfer_to": None})
    trace.finish(2000.0, failed=False)
    spans = _spans(tracing, exporter)
    assert "transfer" not in spans
    (turn,) = spans["turn"]
    assert _times(turn) == (700.0, 2000.0) and turn.attributes is not None
    assert turn.attributes["gateway.response.status"] == "unfinished"
    assert "gateway.turn.latency_ms" not in turn.attributes  # the bot never spoke
    (tool,) = spans["tool"]
    assert tool.attributes is not None and tool.attributes["gateway.tool.outcome"] == "error"
    assert tool.status.description == "transfers are not available on this line"
    (reconnect,) = spans["reconnect"]  # one episode, lost twice, never restored
    assert reconnect.attributes == {"gateway.voicelive.renewal": True, "gateway.voicelive.close_code": 1006}
    assert [e.name for e in reconnect.events] == ["lost again"]
    assert reconnect.status.status_code is StatusCode.ERROR


def test_the_trace_hears_a_few_events_per_turn_never_one_per_frame(traced) -> None:
    """A call's trace hangs off its observer: thousands of audio frames both ways, a handful of events."""
    tracing, exporter = traced
    profile = parse_config("profiles: {main: {model: gpt-realtime}}\n", env={}).profiles["main"]
    heard: list[str] = []
    observer = CallObserver("phone", lambda event, _t, _f: heard.append(event))
    call = Call(call_id="CA7", stream_id="MZ7", profile_name="main", profile=profile, started_at=0.0,
                observer=observer)
    observer.trace = tracing.call("CA7", "phone", "main", "inbound", 0.0, ZERO_NS)
    call.voicelive_connected(1.0)
    call.voicelive_event({"type": "session.updated", "session": {
        "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}}, 2.0)
    frame = base64.b64encode(b"\x55" * 160).decode()
    t = 2.0
    for _ in range(1000):  # 20 s of caller audio
        t += 20.0
        call.caller_audio(frame, t)
    call.voicelive_event({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 19_000}, t)
    call.voicelive_event({"type": "response.created", "response": {"id": "resp_1"}}, t + 300)
    for i in range(500):  # 10 s of bot audio
        call.voicelive_event({"type": "response.audio.delta", "response_id": "resp_1", "item_id": "item_1",
                              "output_index": 0, "content_index": 0, "delta": frame}, t + 400 + i)
    call.voicelive_event({"type": "response.done", "response": {"id": "resp_1", "status": "completed"}}, t + 900)
    call.phone_ended("caller_hung_up", t + 1000)
    observer.trace.finish(t + 1000, failed=False)
    assert call.stats.frames_in == 1000 and call.stats.deltas_out == 500
    assert len(heard) < 10, heard
    (turn,) = _spans(tracing, exporter)["turn"]
    assert turn.attributes is not None and turn.attributes["gateway.turn.latency_ms"] == 400.0  # from the end of speech


def test_an_event_the_trace_cannot_take_never_breaks_the_call(traced) -> None:
    tracing, exporter = traced
    trace = _trace(tracing)
    trace("voicelive.connected", 10.0, {"connect_ms": "not a number"})  # (logged, not raised)
    trace("session.ready", 20.0, {"ready_ms": 20.0})
    trace.finish(30.0, failed=False)
    (connect,) = _spans(tracing, exporter)["voicelive.connect"]
    assert _times(connect) == (0.0, 20.0)

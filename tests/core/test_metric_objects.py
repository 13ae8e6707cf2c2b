"""The metric objects: their interface, their exposition, bounded labels (no process, no socket:
GET /metrics of a served gateway is in tests/sockets/test_metrics.py)."""

from __future__ import annotations

import pytest

from gateway import metrics


def test_the_metric_objects_keep_their_interface_and_read_this_process() -> None:
    registry = metrics.Registry()
    calls = metrics.Counter(registry, "t_calls_total", "Calls.", ("carrier", "outcome"))
    active = metrics.Gauge(registry, "t_active_calls", "In progress.", ("carrier",))
    lag = metrics.Histogram(registry, "t_lag_seconds", "Lag.", (0.1, 1.0))
    calls.inc("twilio", "caller_hung_up")
    calls.inc("twilio", "caller_hung_up", amount=2)
    active.inc("acs")
    active.inc("acs", amount=-1)
    active.declare("twilio")
    lag.observe(0.5)
    assert calls.value("twilio", "caller_hung_up") == 3 and calls.value("acs", "caller_hung_up") == 0
    assert active.value("acs") == 0 and lag.value() == 1
    with pytest.raises(ValueError, match="takes labels"):
        calls.inc("twilio")
    text = registry.render()
    assert '# HELP t_calls_total Calls.' in text and '# TYPE t_calls_total counter' in text
    assert 't_calls_total{carrier="twilio",outcome="caller_hung_up"} 3.0' in text
    assert 't_active_calls{carrier="twilio"} 0.0' in text and 't_lag_seconds_bucket{le="1.0"} 1.0' in text
    assert "_created" not in text
    assert [m.name for m in registry.metrics] == ["t_calls_total", "t_active_calls", "t_lag_seconds"]


def test_labels_stay_bounded() -> None:
    registry = metrics.Registry()
    refusals = metrics.Counter(registry, "t_refusals_total", "Refusals.", ("reason",))
    for i in range(metrics.MAX_SERIES + 50):
        refusals.inc(f"reason {i}")
    refusals.inc("x" * (metrics.MAX_LABEL_LEN + 1))
    lines = [line for line in registry.render().splitlines() if line.startswith("t_refusals_total{")]
    assert len(lines) == metrics.MAX_SERIES + 1
    assert refusals.value(metrics.OTHER) == 51 and refusals.value("reason 0") == 1

"""The in-process measure of a barge-in's cost (bench/core.py) interrupts every call it prepares."""

from __future__ import annotations

import json

from bench.core import FIXTURE, _barge_in_index, _prepared_call, measure
from gateway.replay import load_fixture


def test_each_prepared_call_is_playing_with_marks_pending_when_the_barge_in_comes() -> None:
    fixture = load_fixture(FIXTURE)
    at = _barge_in_index(fixture)
    assert '"input_audio_buffer.speech_started"' in fixture.records[at]["msg"]
    wire, pending = _prepared_call(fixture, 0, at)
    assert wire.call.playout.playing(fixture.records[at]["t"]) and pending
    assert all(name.isdigit() for name in pending)


def test_every_call_is_interrupted_once_and_returns_its_marks() -> None:
    costs = measure(calls=3)
    assert costs.calls == costs.cleared == 3
    assert costs.marks > 0 and costs.marks % 3 == 0
    assert costs.barge_in_us > 0 and costs.mark_us > 0
    assert json.loads(json.dumps(costs.__dict__)) == costs.__dict__  # plain figures

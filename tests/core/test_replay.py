"""Recorded calls replayed as tests: every fixture in tests/fixtures/calls/ is a test case (replayed
over real sockets: tests/sockets/test_replay_live.py)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from gateway.call import Call, Playout
from gateway.replay import SCRUBBED_TOOL_URL, FixtureError, load_fixture, replay_files, run

CALLS = Path(__file__).resolve().parent.parent / "fixtures" / "calls"
FIXTURES = sorted(CALLS.glob("*.jsonl"))


def test_the_corpus_is_there() -> None:
    names = {p.stem for p in FIXTURES}
    assert {"question_and_answer", "bot_greets_first", "barge_in_mid_answer", "speech_after_answer",
            "two_barge_ins_one_response", "dtmf_digits", "hangup_while_bot_speaks", "voicelive_error_event",
            "voicelive_closes_mid_call", "function_call_round_trip", "bot_hangs_up",
            "silence_reprompt_then_goodbye"} <= names
    assert len(names) >= 12


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_fixture_replays_exactly(path: Path) -> None:
    result = run(load_fixture(path))
    assert result.ok, f"{result.mismatch}\n{result.problems}"
    assert sum(len(sent) for sent in result.expected.values()) > 0


def test_fixtures_exercise_what_their_names_say() -> None:
    def replayed(name: str) -> Call:
        call = run(load_fixture(CALLS / f"{name}.jsonl")).call
        assert call is not None
        return call

    barge = replayed("barge_in_mid_answer")
    assert barge.stats.barge_ins == 1 and barge.barge_ins[0].cleared and barge.barge_ins[0].heard_ms
    after = replayed("speech_after_answer")
    assert after.stats.barge_ins == 0 and after.stats.truncations == 0 and after.stats.responses == 2
    two = replayed("two_barge_ins_one_response")
    speech_starts = sum('"input_audio_buffer.speech_started"' in r.get("msg", "")
                        for r in load_fixture(CALLS / "two_barge_ins_one_response.jsonl").records)
    assert speech_starts >= 3 and two.stats.barge_ins == 1 and two.stats.deltas_dropped > 0
    assert replayed("dtmf_digits").stats.dtmf == 3
    assert replayed("voicelive_error_event").stats.voicelive_errors == 1
    assert replayed("voicelive_closes_mid_call").end_reason == "voicelive_closed"
    assert replayed("hangup_while_bot_speaks").end_reason == "caller_hung_up"
    reconnected = replayed("voicelive_reconnects_mid_call")
    assert reconnected.stats.reconnects == 1 and reconnected.end_reason == "caller_hung_up"
    assert reconnected.stats.responses == 2 and reconnected.stats.frames_lost_hold == 0
    tooled = replayed("function_call_round_trip")
    assert tooled.stats.tool_calls == 1 and tooled.stats.responses == 2
    closer = replayed("bot_hangs_up")
    assert closer.end_reason == "bot_hung_up" and closer.stats.tool_calls == 1 and closer.stats.responses == 2
    quiet = replayed("silence_reprompt_then_goodbye")
    assert quiet.end_reason == "caller_silent" and quiet.stats.responses == 2 and quiet.stats.caller_turns == 0
    greet = load_fixture(CALLS / "bot_greets_first.jsonl")
    assert any('"response.create"' in r.get("msg", "") for r in greet.records if r.get("dir") == "out")


def _bytes_sent(self: Playout, now: float) -> tuple[int, str | None, int]:
    """A broken playback position: everything sent counts as heard."""
    if not self.pending:
        return 0, self.heard_item, self.heard_offset
    last = self.pending[-1]
    return len(self.pending) - 1, last.item_id, last.end


def test_a_broken_barge_in_fails_the_relevant_fixtures_with_a_readable_diff(monkeypatch) -> None:
    monkeypatch.setattr(Playout, "_where", _bytes_sent)
    failing = {p.stem for p in FIXTURES if not run(load_fixture(p)).ok}
    assert {"barge_in_mid_answer", "two_barge_ins_one_response"} <= failing
    assert "question_and_answer" not in failing and "speech_after_answer" not in failing
    out = io.StringIO()
    assert replay_files([str(CALLS / "barge_in_mid_answer.jsonl")], out=out) == 1
    text = out.getvalue()
    assert text.startswith("FAIL ")
    assert "voicelive leg, message #" in text
    expected = next(line for line in text.splitlines() if line.strip().startswith("expected:"))
    actual = next(line for line in text.splitlines() if line.strip().startswith("actual:"))
    assert "conversation.item.truncate" in expected and "conversation.item.truncate" in actual
    assert "inputs just before" in text and "bytes of audio>" in text  # context, audio abbreviated


def test_duplicated_caller_frames_break_an_invariant(monkeypatch) -> None:
    original = Call.caller_audio

    def twice(self: Call, payload: str, now: float) -> None:
        original(self, payload, now)
        if self.stats.frames_in == 100:
            original(self, payload, now)

    monkeypatch.setattr(Call, "caller_audio", twice)
    result = run(load_fixture(CALLS / "question_and_answer.jsonl"))
    assert any("not forwarded in order (a duplicate" in p for p in result.problems), result.problems


def test_audio_after_a_barge_in_flush_breaks_an_invariant(monkeypatch) -> None:
    original = Call._on_audio_delta

    def plays_everything(self: Call, event: dict[str, Any], now: float) -> None:
        dropped, self._dropped_responses = self._dropped_responses, {}
        try:
            original(self, event, now)
        finally:
            self._dropped_responses = dropped

    monkeypatch.setattr(Call, "_on_audio_delta", plays_everything)
    result = run(load_fixture(CALLS / "two_barge_ins_one_response.jsonl"))
    assert any("sent after its barge-in flush" in p for p in result.problems), result.problems


def test_truncating_past_the_received_audio_breaks_an_invariant(monkeypatch) -> None:
    original = Call._send

    def overshoot(self: Call, event: dict[str, Any], kind: str | None = None) -> None:
        if event.get("type") == "conversation.item.truncate":
            event = {**event, "audio_end_ms": event["audio_end_ms"] + 60_000}
        original(self, event, kind)

    monkeypatch.setattr(Call, "_send", overshoot)
    result = run(load_fixture(CALLS / "barge_in_mid_answer.jsonl"))
    assert any("is past the" in p for p in result.problems), result.problems


def test_a_voicelive_socket_left_open_breaks_an_invariant(tmp_path: Path) -> None:
    source = CALLS / "question_and_answer.jsonl"
    lines = [line for line in source.read_text().splitlines()
             if not ('"leg":"voicelive"' in line and '"event":"close"' in line)]
    broken = tmp_path / "left_open.jsonl"
    broken.write_text("\n".join(lines) + "\n")
    result = run(load_fixture(broken))
    assert "the Voice Live socket was not closed when the call ended" in result.problems


def test_update_rewrites_the_expected_output_after_an_intended_change(tmp_path: Path, monkeypatch) -> None:
    fixture = tmp_path / "barge.jsonl"
    shutil.copy(CALLS / "barge_in_mid_answer.jsonl", fixture)
    inputs_before = [line for line in fixture.read_text().splitlines() if '"dir":"out"' not in line]
    original = Call.__post_init__

    def finer_marks(self: Call) -> None:  # an intended change: a mark every 30 ms of bot audio
        self.piece_ms = 30
        original(self)

    monkeypatch.setattr(Call, "__post_init__", finer_marks)
    assert not run(load_fixture(fixture)).ok
    out = io.StringIO()
    assert replay_files([str(fixture)], update=True, out=out) == 0
    assert "UPDATED" in out.getvalue() and "PASS" in out.getvalue()
    assert run(load_fixture(fixture)).ok
    inputs_after = [line for line in fixture.read_text().splitlines() if '"dir":"out"' not in line]
    assert [json.loads(x) for x in inputs_after] == [json.loads(x) for x in inputs_before]
    monkeypatch.undo()
    assert not run(load_fixture(fixture)).ok  # the old behaviour no longer matches


@pytest.mark.parametrize("content, message", [
    ("", "empty file"),
    ("not json\n", "not JSON"),
    ('{"format": "something-else"}\n', "not a call recording"),
    ('{"format": "voicelive-gateway-call/1", "carrier": "twilio"}\n{"t": 1}\n', "needs a time t and a leg"),
    ('{"format": "voicelive-gateway-call/1", "carrier": "twilio", "profile": {"model": "m"}}\n', "no Twilio start"),
])
def test_bad_fixture_files_get_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(FixtureError, match=message):
        run(load_fixture(path))
    out = io.StringIO()
    assert replay_files([str(path)], out=out) == 1
    assert out.getvalue().startswith(f"ERROR {path}")


def test_a_repeated_tail_counts_once_but_other_repeats_and_gaps_show() -> None:
    from gateway.replay import _without_resends

    frames = ["q", "q", "a", "b", "q", "q", "c"]
    # the second session repeats "b q" (silence frames look alike: the split follows the caller's order)
    assert _without_resends([["q", "q", "a", "b", "q"], ["b", "q", "q", "c"]], frames) == frames
    # a frame missing from both sessions, or sent twice out of place, is not hidden
    assert _without_resends([["q", "q", "a"], ["q", "q", "c"]], frames) != frames
    assert _without_resends([["q", "q", "a", "b"], ["a", "q", "q", "c"]], frames) != frames


def test_a_tool_url_the_recorder_scrubbed_whole_replays_as_a_placeholder(tmp_path) -> None:
    """A tool URL written as ${TOOL_URL} is a secret to the recorder: the recording says ``***``,
    which is no URL; the replay, which never calls the tool, still loads the profile."""
    source = (CALLS / "function_call_round_trip.jsonl").read_text().splitlines()
    header = json.loads(source[0])
    assert header["profile"]["tools"][0]["http"]["url"] == "***"
    fixture = load_fixture(CALLS / "function_call_round_trip.jsonl")
    assert fixture.profile["tools"][0]["http"]["url"] == SCRUBBED_TOOL_URL
    assert fixture.profile["tools"][0]["name"] == "opening_hours"
    header["profile"]["tools"][0]["http"]["url"] = "https://tools.example/hours?code=***"  # scrubbed in part
    (tmp_path / "partly.jsonl").write_text("\n".join([json.dumps(header), *source[1:]]))
    kept = load_fixture(tmp_path / "partly.jsonl").profile
    assert kept["tools"][0]["http"]["url"] == "https://tools.example/hours?code=***"
    assert not run(fixture).problems


def test_a_live_replay_leaves_out_only_the_bot_audio_just_before_each_flush() -> None:
    """Over sockets, which piece of a flushed answer went out last races the flush by milliseconds: those
    pieces are not compared; every other piece, and every flush, still is."""
    from gateway.replay import Sent
    from gateway.replay_live import _before_flushes

    class Carrier:
        def outbound_kind(self, message: str | bytes) -> str | None:
            return {"a": "audio", "f": "flush"}.get(str(message)[0])

    sent = [Sent(t, text, 0) for t, text in [(0, "a1"), (100, "a2"), (150, "a3"), (190, "a4"), (200, "f1"),
                                              (205, "a5"), (400, "m1"), (900, "a6"), (990, "f2")]]
    kept = [s.text for s in _before_flushes(sent, Carrier(), 80.0)]
    assert kept == ["a1", "a2", "f1", "a5", "m1", "a6", "f2"]
    assert [s.text for s in _before_flushes(sent[:3], Carrier(), 80.0)] == ["a1", "a2", "a3"]  # no flush


def test_a_live_replay_compares_the_bot_audio_both_sides_sent_before_a_flush() -> None:
    """A loaded machine can move a flush past the window: a piece more goes out before it on one side.
    The pieces both sides sent are compared (a different one still shows), the extra one is not, and
    everything after the flush is compared in full."""
    from gateway.replay import Sent
    from gateway.replay_live import _common_before_flushes

    class Carrier:
        def outbound_kind(self, message: str | bytes) -> str | None:
            return {"a": "audio", "f": "flush"}.get(str(message)[0])

    def sent(*texts: str) -> list[Sent]:
        return [Sent(10.0 * i, text, 0) for i, text in enumerate(texts)]

    def texts(items: list[Sent]) -> list[str]:
        return [s.text for s in items]

    expected, actual = _common_before_flushes(sent("a1", "a2", "f1", "a5", "a6"),
                                              sent("a1", "a2", "a3", "f1", "a5", "a6"), Carrier())
    assert texts(expected) == texts(actual) == ["a1", "a2", "f1", "a5", "a6"]
    expected, actual = _common_before_flushes(sent("a1", "a2", "f1"), sent("a1", "aX", "a3", "f1"), Carrier())
    assert texts(expected) == ["a1", "a2", "f1"] and texts(actual) == ["a1", "aX", "f1"]  # still differs
    expected, actual = _common_before_flushes(sent("a1", "f1", "a5"), sent("a1", "f1", "a5", "a6"), Carrier())
    assert texts(actual) == ["a1", "f1", "a5", "a6"]  # after the last flush: in full (the extra one shows)
    expected, actual = _common_before_flushes(sent("a1", "a2", "f1"), sent("a1", "a2"), Carrier())
    assert texts(expected) == ["a1", "a2", "f1"] and texts(actual) == ["a1", "a2"]  # a missing flush shows

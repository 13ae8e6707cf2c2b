"""The latency run's accounting and its caller's turns, without sockets (bench/latency.py)."""

from __future__ import annotations

import pytest

from bench.latency import FIELDS, TONE_FRAME, Talker, summarize, turn_figures
from gateway.audio import rms_dbfs, ulaw_to_array


def figures(**kw: float) -> dict[str, float]:
    args = {"end": 10.0, "arrived": 10.6815, "play_end": 0.0, "completed_sent": 10.48,
            "completed_arrived": 10.481, "answered": 10.681, **kw}
    return dict(zip(FIELDS, turn_figures(**args), strict=True))


def test_a_turn_splits_into_the_stand_ins_share_and_the_gateways_two_trips() -> None:
    f = figures()
    assert f["end_to_end"] == pytest.approx(681.5)
    assert f["vad_wait"] == pytest.approx(480.0) and f["held"] == pytest.approx(200.0)
    assert f["stand_in"] == pytest.approx(680.0)
    assert f["gateway_in"] == pytest.approx(1.0) and f["gateway_out"] == pytest.approx(0.5)
    assert f["gateway"] == pytest.approx(1.5) and f["alignment"] == 0.0


def test_audio_still_playing_at_the_phone_is_alignment_not_the_gateways_share() -> None:
    f = figures(play_end=10.7)  # the phone plays earlier audio until 10.7
    assert f["end_to_end"] == pytest.approx(700.0)
    assert f["alignment"] == pytest.approx(18.5)
    assert f["gateway"] == pytest.approx(1.5)


def test_the_caller_speaks_a_tone_louder_than_any_vad_threshold() -> None:
    assert len(TONE_FRAME) == 160 and rms_dbfs(ulaw_to_array(TONE_FRAME)) > -20


def drive(talker: Talker, t: float, seq: int, frames: int, play_end: float = 0.0) -> tuple[list[bool], float, int]:
    out = []
    for _ in range(frames):
        out.append(talker.tick(seq, t, play_end))
        seq += 1
        t += 0.02
    return out, t, seq


def test_a_caller_speaks_waits_for_the_reply_to_play_then_speaks_again() -> None:
    talker = Talker(7, (0.0, 100.0), start=0.0, speech_ms=200, gap_ms=100)
    talker.until = 0.99  # the first turn at 1 s (the 50th frame)
    loud, t, seq = drive(talker, 0.0, 0, 50)
    assert not any(loud)
    loud, t, seq = drive(talker, t, seq, 10)
    assert all(loud) and talker.last_speech == (seq - 1, pytest.approx(t - 0.02))
    end = t  # the last loud frame's send time + 20 ms
    loud, t, seq = drive(talker, t, seq, 30)
    assert not any(loud)  # silent while waiting
    stamp = (7, seq - 31, end + 0.48, end + 0.481, end + 0.681)
    row = talker.replied(stamp, end + 0.6815, play_end=0.0)
    assert row is not None and dict(zip(FIELDS, row, strict=True))["gateway"] == pytest.approx(1.5)
    # the reply plays until 2 s later; the caller stays silent until then plus the pause
    play_end = end + 2.0
    loud, t, seq = drive(talker, end + 1.0, seq, 50, play_end)
    assert not any(loud)
    loud, t, seq = drive(talker, play_end + 0.21, seq, 1, play_end)
    assert loud == [True]
    assert talker.samples == [row] and talker.unmatched == 0 and talker.unanswered == 0


def test_a_reply_naming_another_frame_or_coming_twice_is_counted_not_measured() -> None:
    talker = Talker(1, (0.0, 100.0), start=0.0, speech_ms=100)
    talker.until = 0.0
    _, t, seq = drive(talker, 0.0, 0, 5)
    assert talker.replied((1, seq - 2, t, t, t), t + 0.5, 0.0) is None  # not the last loud frame
    assert talker.replied((1, seq - 1, t, t, t), t + 0.5, 0.0) is not None
    assert talker.replied((1, seq - 1, t, t, t), t + 0.6, 0.0) is None  # a second reply to the turn
    assert talker.unmatched == 2 and len(talker.samples) == 1


def test_an_unanswered_turn_is_counted_and_the_caller_speaks_again() -> None:
    talker = Talker(1, (0.0, 100.0), start=0.0, speech_ms=100, timeout_s=1.0)
    talker.until = 0.0
    _, t, seq = drive(talker, 0.0, 0, 5)
    loud, t, seq = drive(talker, t, seq, 49)
    assert not any(loud) and talker.unanswered == 0
    loud, t, seq = drive(talker, t + 0.1, seq, 1)
    assert loud == [True] and talker.unanswered == 1


def test_turns_outside_the_window_are_not_measured_and_a_pending_one_is_counted() -> None:
    talker = Talker(1, (5.0, 6.0), start=0.0, speech_ms=100)
    talker.until = 0.0
    _, t, seq = drive(talker, 0.0, 0, 5)
    assert talker.replied((1, seq - 1, t, t, t), t + 0.5, 0.0) is None and talker.unmatched == 0
    talker.until = 5.5
    talker.state = "resting"
    _, t, seq = drive(talker, 5.5, seq, 5)
    assert talker.pending() == 1


def test_a_step_summary_has_every_figure_and_the_counts() -> None:
    row = list(turn_figures(10.0, 10.6815, 0.0, 10.48, 10.481, 10.681))
    summary = summarize([{"turns": [row, row], "turns_unanswered": 1, "turns_unmatched": 0},
                         {"turns": [], "turns_unanswered": 0, "turns_unmatched": 2}])
    assert summary["turns_measured"] == 2 and summary["turns_unanswered"] == 1
    assert summary["turns_unmatched"] == 2
    assert summary["gateway_ms"]["p99"] == pytest.approx(1.5) and summary["stand_in_ms"]["p50"] == pytest.approx(680.0)
    assert summarize([])["gateway_ms"]["p50"] is None

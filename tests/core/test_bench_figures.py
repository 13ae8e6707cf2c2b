"""The benchmark's joins and fits (bench/figures.py), the phone's account of what it played
(bench/loadgen.py), the transcoder's conversions and the stand-in's settings, without sockets."""

from __future__ import annotations

import argparse
import base64
import os
from typing import Any

import pytest

from bench.figures import (
    barge_in_reactions,
    host_bound,
    join_truncations,
    period_steal,
    quiet_figures,
    ratios,
    rss_slope,
    steal_percent,
    steal_text,
)
from bench.loadgen import LoadGenerator, SimCall, played_at
from bench.transcoder import Transcoder
from gateway.simulator import cli
from gateway.simulator.bench import (
    CALLER_MAGIC,
    MARKER,
    PCM16_BLOCK,
    SCENARIOS,
    BenchSettings,
    BenchStats,
    BenchVoiceLive,
    _Session,
    bot_audio,
    caller_frame,
    read_marker,
    split_bot_seq,
)


def test_truncations_join_what_the_phone_played_per_call_and_response() -> None:
    truncations = [{"call": 1, "response": 3, "audio_end_ms": 840, "at": 10.0},
                   {"call": 2, "response": 3, "audio_end_ms": 300, "at": 10.1},
                   {"call": 1, "response": 3, "audio_end_ms": 900, "at": 10.2},  # again: the first counts
                   {"call": 3, "response": 1, "audio_end_ms": 60, "at": 10.3}]  # no flush seen
    played = [[1, 3, 852.5, 10.0], [2, 3, 290.0, 10.1], [1, 3, 999.0, 10.4],  # a later flush: the first counts
              [2, 4, 100.0, 10.5],  # a flush nobody truncated, in the window
              [4, 1, 100.0, 99.0]]  # ... and one outside it
    figures = join_truncations(truncations, played, window=(9.0, 11.0))
    assert figures["n"] == 2 and figures["max"] == pytest.approx(12.5)
    assert figures["p50"] == pytest.approx(11.25)
    assert figures["mean_signed"] == pytest.approx((-12.5 + 10.0) / 2)
    assert figures["truncations_without_flush"] == 1 and figures["flushes_without_truncation"] == 1
    assert join_truncations([], [])["p99"] is None


def test_barge_in_at_the_phone_is_speech_started_written_to_the_first_clear_after_it() -> None:
    barge_ins = [{"call": 1, "sent": 5.0}, {"call": 2, "sent": 5.0}, {"call": 3, "sent": 5.0}]
    clears = [[1, 4.9], [1, 5.0021], [1, 5.5], [2, 6.5], [3, 5.0005]]
    assert barge_in_reactions(barge_ins, clears) == [pytest.approx(2.1), pytest.approx(0.5)]  # call 2: too late


def test_rss_slope_is_the_least_squares_line_over_the_steps() -> None:
    assert rss_slope([(100, 50_000 + 100 * 64), (200, 50_000 + 200 * 64), (400, 50_000 + 400 * 64 + 30)]) \
        == pytest.approx(64 + 30 * (400 - 700 / 3) / 46_666.67, abs=0.01)  # the outlier moves it a little
    assert rss_slope([(100, 1.0), (100, 2.0)]) is None


def step(cpu: float, rss: float | None, p99: float) -> dict[str, Any]:
    return {"core_percent_per_call": cpu, "rss_kib_per_call": rss, "caller_delay_ms": {"p99": p99},
            "bot_delay_ms": {"p99": p99}, "barge_in_at_phone_ms": {"p99": None}}


def test_ratios_are_the_system_over_the_gateway() -> None:
    r = ratios(step(0.2, 40.0, 3.0), step(0.1, None, 1.5))
    assert r["core_percent_per_call"] == 2.0 and r["caller_p99_ms"] == 2.0
    assert r["rss_kib_per_call"] is None and r["barge_in_p99_ms"] is None


def test_the_phone_knows_how_much_of_which_response_played_when_the_flush_came() -> None:
    segments = [[1, 0.0, 0.5], [2, 0.5, 0.8], [2, 1.0, 1.2]]  # response 2 with a gap in its audio
    assert played_at(segments, 0.25) == (1, pytest.approx(250.0))
    assert played_at(segments, 0.9) == (2, pytest.approx(300.0))
    assert played_at(segments, 1.1) == (2, pytest.approx(400.0))
    assert played_at(segments, 5.0) == (2, pytest.approx(500.0))  # played out
    assert played_at(segments, -1.0) is None


def test_bot_audio_is_placed_per_response_from_the_markers_inside_any_chunking() -> None:
    generator = LoadGenerator("ws://unused", None, (0.0, 1e12))
    call = SimCall(4, None, "MZ")  # type: ignore[arg-type]
    one = base64.b64decode(bot_audio(4, 0, 2, 1.0, response=1))  # 2 blocks of response 1 (120 ms)
    two = base64.b64decode(bot_audio(4, 0, 2, 1.0, response=2))
    stream = one + two
    # chunks cut across the blocks: the tail of response 1 and the start of response 2 in one message
    for start, end in ((0, 700), (700, 1200), (1200, len(stream))):
        generator.audio(call, stream[start:end], 100.0, True, 8000)
    assert generator.bot_blocks == 4 and call.response == 2
    assert [(r, round(a - 100.0, 4), round(b - 100.0, 4)) for r, a, b in call.segments] == [
        (1, 0.0, 0.12), (2, 0.12, 0.24)]
    assert played_at(call.segments, 100.15) == (2, pytest.approx(30.0))


def test_the_transcoder_converts_every_frame_and_puts_the_markers_back() -> None:
    call = Transcoder()
    up = base64.b64decode(call.to_voicelive(base64.b64encode(caller_frame(3, 9, 1.5)).decode()))
    assert 950 <= len(up) <= 960  # 20 ms of pcm16 at 24 kHz (the resampler's first frame may be short)
    assert read_marker(base64.b64encode(up).decode(), CALLER_MAGIC) == (3, 9, 1.5)
    assert up[200:400] != caller_frame(3, 9, 1.5)[200 // 6:400 // 6]  # converted, not copied
    down = base64.b64decode(call.to_phone(bot_audio(3, 0, 3, 2.0, response=5, block=PCM16_BLOCK, fill=b"\0")))
    assert len(down) == 3 * 480
    assert [split_bot_seq(MARKER.unpack_from(down, at)[2]) for at in (0, 480, 960)] == [(5, 0), (5, 1), (5, 2)]
    assert down[100:400] == b"\xff" * 300  # pcm16 silence became µ-law silence


def test_a_400_ms_delta_has_a_marker_every_60_ms_and_a_shorter_last_block() -> None:
    for block, size in ((480, 3200), (PCM16_BLOCK, 19_200)):
        audio = base64.b64decode(bot_audio(8, 14, 0, 3.0, response=2, block=block, size=size))
        assert len(audio) == size
        starts = list(range(0, size, block))
        assert len(starts) == 7  # six whole blocks and 40 ms
        assert [split_bot_seq(MARKER.unpack_from(audio, at)[2]) for at in starts] == [(2, 14 + i) for i in range(7)]
    # and through the transcoder, each block's marker at its converted start
    down = base64.b64decode(Transcoder().to_phone(bot_audio(8, 0, 0, 3.0, response=2, block=PCM16_BLOCK,
                                                            fill=b"\0", size=19_200)))
    assert len(down) == 3200
    assert [split_bot_seq(MARKER.unpack_from(down, at)[2]) for at in range(0, 3200, 480)] == [(2, i) for i in range(7)]


@pytest.mark.parametrize("kwargs", [
    {"scenario": "storm"},
    {"reply_every_s": 2.0},  # a 2 s reply and a 1.5 s caller turn do not fit in 2 s
    {"barge_in_after_ms": 0},
    {"barge_in_spread_ms": 600},  # 300 ms give or take 300: a barge-in at the reply's first audio
    {"barge_in_spread_ms": -1},
    {"delta_ms": 0},
])
def test_bench_settings_refuse_a_conversation_that_does_not_fit(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        BenchSettings(**kwargs)


def test_barge_ins_come_at_once_unless_spread() -> None:
    at_once = BenchVoiceLive(BenchSettings(scenario="burst"))
    assert {at_once._barge_in_after_s(_Session(i), r) for i in range(50) for r in range(1, 4)} == {0.3}
    spread = BenchVoiceLive(BenchSettings(scenario="burst", barge_in_spread_ms=400))
    after = [spread._barge_in_after_s(_Session(i), r) for i in range(50) for r in range(1, 4)]
    assert all(0.1 <= t <= 0.5 for t in after)  # 300 ms give or take 200
    assert min(after) < 0.15 and max(after) > 0.45  # spread over the whole range
    assert len(set(after)) == len(after)  # each barged reply its own moment...
    again = BenchVoiceLive(BenchSettings(scenario="burst", barge_in_spread_ms=400))
    assert [again._barge_in_after_s(_Session(i), r) for i in range(50) for r in range(1, 4)] == after  # ...reproducibly


def test_the_command_line_offers_the_stand_ins_scenarios() -> None:
    assert cli.SCENARIOS == SCENARIOS
    assert BenchSettings(scenario="talk", reply_every_s=0.1).scenario == "talk"  # talk has no replies to fit


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="pinning processes to CPUs is Linux's")
def test_pinning_puts_the_system_on_cpus_of_its_own_and_the_harness_on_the_rest() -> None:
    from bench.run import cpu_sets, pinned

    cpus = sorted(os.sched_getaffinity(0))
    assert cpu_sets(argparse.Namespace(pin=False, workers=1)) == (None, None)
    assert pinned(None) is None
    if len(cpus) < 2:
        pytest.skip("one CPU: nothing to split")
    system, harness = cpu_sets(argparse.Namespace(pin=True, workers=1))
    assert system == {cpus[0]} and harness == set(cpus[1:])
    hook = pinned(harness)  # what the child runs before it starts: here, run in this process and undone
    try:
        hook()
        assert os.sched_getaffinity(0) == harness
    finally:
        os.sched_setaffinity(0, cpus)


def test_steal_is_each_cores_share_of_the_window_the_host_took() -> None:
    before = {"0": (100, 10_000), "1": (50, 10_000)}
    after = {"0": (160, 11_000), "1": (50, 11_000), "2": (7, 900)}  # a core that came online: no window
    assert steal_percent(before, after) == {"0": 6.0, "1": 0.0}
    step = {"steal_percent": {"0": 6.0, "1": 0.0}, "system_cores": [0]}
    assert steal_text(step) == "0: 6.0 % (system), 1: 0.0 %"
    assert steal_text({"steal_percent": {}, "system_cores": None}) == "?"


def test_a_step_is_host_bound_when_the_host_took_a_percent_of_any_core() -> None:
    assert host_bound({"steal_percent": {"0": 0.4, "1": 1.0}, "system_cores": [0]})  # the harness's core counts
    assert not host_bound({"steal_percent": {"0": 0.9, "1": 0.2}, "system_cores": [0]})
    assert not host_bound({})  # not measured (not Linux): not flagged


def test_a_period_steal_is_the_most_the_host_took_of_any_core_between_two_samples() -> None:
    ticks = {10: {"0": (0, 0), "1": (0, 0)}, 11: {"0": (2, 400), "1": (12, 400)}, 12: {"0": (2, 800), "1": (12, 800)}}
    assert period_steal(ticks) == {10: 3.0, 11: 0.0}  # period 12 has no end sample yet


def test_the_stand_in_gives_the_caller_delay_per_period_and_over_the_quiet_ones() -> None:
    stats = BenchStats()
    for sent, delay in ((1000.5, 5.0), (1001.0, 7.0), (1004.2, 30.0), (1009.0, 2.0)):  # periods 250, 250, 251, 252
        stats.caller_sent.append(sent)
        stats.caller_delays_ms.append(delay)
    figures = stats.summary(4.0, frozenset({250, 252}))
    assert [(p["period"], p["frames"], p["max"]) for p in figures["caller_delay_by_period"]] == \
        [(250, 2, 5.0 + 2.0), (251, 1, 30.0), (252, 1, 2.0)]
    assert figures["caller_delay_in_quiet_periods"]["max"] == 7.0  # period 251's 30 ms is left out
    assert figures["caller_delay_ms"]["max"] == 30.0  # the window's own figure keeps every frame
    assert "caller_delay_by_period" not in stats.summary()
    assert stats.summary(4.0)["caller_delay_in_quiet_periods"] == {"p50": None, "p99": None, "max": None}


def test_quiet_figures_keep_the_barge_ins_and_truncations_of_the_quiet_periods_only() -> None:
    vl_stats = {
        "barge_ins": [{"call": 1, "response": 3, "sent": 1000.3}, {"call": 2, "response": 5, "sent": 1004.3}],
        "truncations": [{"call": 1, "response": 3, "audio_end_ms": 300, "at": 1000.31},
                        {"call": 2, "response": 5, "audio_end_ms": 300, "at": 1004.31}],
        "caller_delay_by_period": [{"period": 250, "p99": 4.0}, {"period": 251, "p99": 40.0}],
        "caller_delay_in_quiet_periods": {"p50": 1.0, "p99": 4.0, "max": 5.0},
    }
    clears = [[1, 1000.305], [2, 1004.35]]
    played = [[1, 3, 296.0, 1000.305], [2, 5, 250.0, 1004.35]]  # the noisy period's truncation is 50 ms off
    quiet = quiet_figures(vl_stats, clears, played, {250: 0.2, 251: 3.0}, 4.0)
    assert quiet["quiet"] == 1 and [p["caller_delay_p99_ms"] for p in quiet["periods"]] == [4.0, 40.0]
    assert quiet["caller_delay_ms"]["p99"] == 4.0
    assert quiet["barge_in_at_phone_ms"]["n"] == 1 and quiet["barge_in_at_phone_ms"]["p99"] == pytest.approx(5.0)
    assert quiet["truncation_error_ms"]["n"] == 1 and quiet["truncation_error_ms"]["max"] == 4.0
    assert "truncation_error_read_ms" not in quiet  # (no read times given)


def test_the_phones_figures_by_their_read_of_the_clear_stand_beside_those_by_its_arrival() -> None:
    vl_stats = {
        "barge_ins": [{"call": 1, "response": 3, "sent": 1000.3}],
        "truncations": [{"call": 1, "response": 3, "audio_end_ms": 300, "at": 1000.31}],
        "caller_delay_by_period": [], "caller_delay_in_quiet_periods": None,
    }
    clears, clears_read = [[1, 1000.305]], [[1, 1000.345]]  # the load generator read it 40 ms late
    played, played_read = [[1, 3, 304.0, 1000.305]], [[1, 3, 344.0, 1000.345]]
    quiet = quiet_figures(vl_stats, clears, played, {250: 0.0}, 4.0, clears_read, played_read)
    assert quiet["truncation_error_ms"]["max"] == 4.0
    assert quiet["truncation_error_read_ms"]["max"] == 44.0
    assert quiet["barge_in_at_phone_ms"]["p99"] == pytest.approx(5.0)
    assert quiet["barge_in_at_phone_read_ms"]["p99"] == pytest.approx(45.0)

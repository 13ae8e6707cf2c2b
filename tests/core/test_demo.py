"""The demo's figures come from audible speech: the energy measurement, checked on synthetic audio
whose audible start and end are known (the demo call itself: tests/sockets/test_demo_call.py).
"""

from __future__ import annotations

import numpy as np

from gateway.audio import array_to_ulaw, ulaw_to_array
from gateway.demo import (
    audible_offset_ms,
    audible_onset_ms,
    audible_spans,
    audible_windows,
    clip_edge_latencies,
    first_audible_after,
    last_audible_within,
    locate_utterances,
    measure_turns,
)

RATE = 8000
PAD_MS = 100  # silence at each end of a synthetic clip, like the recorded ones


def tone(ms: float, dbfs: float = -20.0, hz: float = 440.0) -> np.ndarray:
    """A sine whose RMS is ``dbfs``."""
    n = round(ms * RATE / 1000)
    amplitude = 10 ** (dbfs / 20) * 32768 * np.sqrt(2)
    return amplitude * np.sin(2 * np.pi * hz * np.arange(n) / RATE)


def quiet(ms: float, dbfs: float = -70.0) -> np.ndarray:
    """Silence with a faint noise floor (well under the -40 dBFS threshold)."""
    n = round(ms * RATE / 1000)
    return np.random.default_rng(7).normal(0, 10 ** (dbfs / 20) * 32768, n)


def ulaw(*parts: np.ndarray) -> bytes:
    """8 kHz µ-law, as on the phone leg."""
    return array_to_ulaw(np.clip(np.concatenate(parts), -32768, 32767).astype(np.int16))


def decoded(*parts: np.ndarray) -> np.ndarray:
    return ulaw_to_array(ulaw(*parts))


def clip(speech_ms: float) -> bytes:
    """A recorded-style clip: 100 ms of silence, speech, 100 ms of silence."""
    return ulaw(quiet(PAD_MS), tone(speech_ms), quiet(PAD_MS))


# --- the energy measurement on audio whose audible start and end are known ---------------------


def test_onset_and_offset_of_a_tone_between_silences() -> None:
    samples = decoded(quiet(300), tone(1000), quiet(200))
    assert audible_onset_ms(samples) == 300
    assert audible_offset_ms(samples) == 1300
    assert audible_spans(samples) == [(300, 1300)]


def test_an_onset_inside_a_window_is_found_within_one_window() -> None:
    samples = decoded(quiet(305), tone(500), quiet(200))
    onset, offset = audible_onset_ms(samples), audible_offset_ms(samples)
    assert onset is not None and offset is not None
    assert 300 <= onset <= 310 and 800 <= offset <= 810


def test_silence_and_sound_under_the_threshold_are_not_audible() -> None:
    assert audible_onset_ms(decoded(quiet(1000))) is None
    assert audible_offset_ms(decoded(quiet(300), tone(500, dbfs=-50), quiet(300))) is None
    assert audible_onset_ms(decoded(quiet(300), tone(500, dbfs=-30), quiet(300))) == 300
    assert audible_onset_ms(np.zeros(0, dtype=np.int16)) is None


def test_a_click_does_not_count_as_speech() -> None:
    samples = decoded(quiet(200), tone(10, dbfs=-6), quiet(290), tone(400), quiet(200), tone(20, dbfs=-6), quiet(100))
    assert audible_windows(samples)[20]  # the click is loud...
    assert audible_onset_ms(samples) == 500  # ...but too short to be speech, at either end
    assert audible_offset_ms(samples) == 900


def test_span_queries() -> None:
    spans = [(100.0, 400.0), (600.0, 900.0)]
    assert first_audible_after(spans, 0) == 100
    assert first_audible_after(spans, 450) == 600
    assert first_audible_after(spans, 200) == 200  # sound going on at that moment
    assert first_audible_after(spans, 450, 550) is None
    assert last_audible_within(spans, 0, 1000) == 900
    assert last_audible_within(spans, 0, 500) == 400
    assert last_audible_within(spans, 450, 550) is None


# --- a call measured from its audio --------------------------------------------------------------


def test_latency_from_audible_speech_is_longer_than_between_clip_edges_by_the_padding() -> None:
    """The bot's clip starts playing 600 ms after the caller's clip ends; both clips carry 100 ms of
    silence at each end, so the caller hears 800 ms between the end of speech and the bot's voice."""
    said = clip(1000)  # 1200 ms
    answer = clip(800)  # 1000 ms
    caller = ulaw(quiet(400)) + said + ulaw(quiet(3000))
    bot = np.concatenate((decoded(quiet(400 + 1200 + 600)), ulaw_to_array(answer), decoded(quiet(1400))))
    assert len(bot) == len(caller)

    (utterance,) = locate_utterances(caller, [("question", said)])
    assert (utterance.clip_start_ms, utterance.clip_end_ms) == (400, 1600)
    assert (utterance.onset_ms, utterance.offset_ms) == (500, 1500)
    (turn,) = measure_turns([utterance], audible_spans(bot), len(caller) / 8)
    assert turn.reply_onset_ms == 2300
    assert turn.latency_ms == 800
    assert turn.overlap_ms is None  # the bot was silent when the caller spoke

    # What the softphone's events give: clip edges (speech_end at 1600 ms, bot audio from 2200 ms).
    events = [(400.0, "speech_start", {}), (1600.0, "speech_end", {}), (2200.0, "bot_audio_start", {})]
    assert clip_edge_latencies(events) == [600]
    assert turn.latency_ms - 600 == 2 * PAD_MS  # wrong by the caller's trailing + the bot's leading silence


def test_talking_over_the_bot_lasts_from_the_callers_first_sound_to_the_bots_last() -> None:
    """The bot talks from 100 ms on; the caller's clip starts at 1000 ms (audible from 1100 ms); the
    phone flushes the bot's audio at 1250 ms; the bot answers 700 ms after the caller's speech ends."""
    interrupt = clip(1000)  # audible 1100..2100 ms on the call
    caller = ulaw(quiet(1000)) + interrupt + ulaw(quiet(2000))
    bot = decoded(quiet(100), tone(1150, hz=300), quiet(850 + 700), tone(500, hz=300), quiet(900))
    assert len(bot) == len(caller)

    utterances = locate_utterances(caller, [("interrupt", interrupt), ("never said", clip(300))])
    assert [u.label for u in utterances] == ["interrupt"]  # a clip the call never had is left out
    (turn,) = measure_turns(utterances, audible_spans(bot), len(caller) / 8)
    assert turn.overlap_ms == 150  # 1100 → 1250 ms
    assert turn.reply_onset_ms == 2800
    assert turn.latency_ms == 700


def test_a_reply_is_looked_for_only_until_the_next_utterance() -> None:
    first, second = clip(500), clip(500)
    caller = ulaw(quiet(200)) + first + ulaw(quiet(1000)) + second + ulaw(quiet(1000))  # 3600 ms
    bot = decoded(quiet(3000), tone(400), quiet(200))  # the bot answers only the second (at 3000 ms)
    utterances = locate_utterances(caller, [("first", first), ("second", second)])
    assert [u.offset_ms for u in utterances] == [800, 2500]
    turns = measure_turns(utterances, audible_spans(bot), len(caller) / 8)
    assert [t.latency_ms for t in turns] == [None, 500]

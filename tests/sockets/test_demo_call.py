"""The demo users run first: a whole simulated call with a barge-in, end to end, its figures
measured from audible speech (the measurement on synthetic audio: tests/core/test_demo.py).
"""

from __future__ import annotations

import re
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from gateway.audio import ASSETS, load_ulaw_8k, read_wav, rms_dbfs, ulaw_to_array
from gateway.demo import audible_offset_ms, audible_spans, audible_windows, run_demo


def _trailing_silence_ms(name: str) -> float:
    audio = load_ulaw_8k(ASSETS / f"{name}.wav")
    offset = audible_offset_ms(ulaw_to_array(audio))
    assert offset is not None
    return len(audio) / 8 - offset


def _turns_in_recording(caller: np.ndarray, bot: np.ndarray) -> list[tuple[float, float]]:
    """(end of the caller's audible speech, the bot's next audible onset) for each utterance,
    taking caller pauses shorter than a second as part of one utterance."""
    spans = audible_spans(caller)
    ends = [end for (_, end), (start, _) in pairwise(spans) if start - end >= 1000]
    ends.append(spans[-1][1])
    bot_spans = audible_spans(bot)
    return [(end, next(start for start, _ in bot_spans if start >= end)) for end in ends]


TURN = re.compile(
    r"turn (\d): caller's audible speech ended → bot audible on the phone after (\d+) ms, "
    r"of which (\d+) ms is the end-of-speech silence the turn detection waits for "
    r"\(measured between clip edges, which carry silence, it would read (\d+) ms\)"
)
OVERLAP = re.compile(r"barge-in, audible: caller and bot talked over each other for (\d+) ms")


async def test_the_demo_call_goes_through_with_a_barge_in(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wav_path = tmp_path / "demo.wav"
    assert await run_demo(record=wav_path) == 0
    out = capsys.readouterr().out
    assert "BARGE-IN" in out and "truncation:" in out and "barge-in reaction inside the gateway" in out
    assert "the model now remembers saying only" in out
    assert "includes the 500 ms end-of-speech silence" not in out
    assert out.count("caller audible (") == 3 and out.count("bot audible on the phone (") == 3

    turns = [tuple(int(g) for g in m.groups()) for m in TURN.finditer(out)]
    assert [t[0] for t in turns] == [1, 2, 3], out
    pads = [_trailing_silence_ms(f"caller_{name}") for name in ("hours", "delivery", "interrupt")]
    for (_, audible, wait, edges), pad in zip(turns, pads, strict=True):
        assert audible >= wait > 0  # the turn detection waits that long after the audible end
        # The caller's trailing silence (and the bot's leading silence) no longer count as speech.
        assert pad - 40 <= audible - edges <= pad + 300, (audible, edges, pad)

    overlap = OVERLAP.search(out)
    assert overlap, out
    overlap_ms = int(overlap.group(1))

    wav = read_wav(wav_path)
    assert wav.rate == 8000 and wav.samples.shape[1] == 2
    caller, bot = wav.samples[:, 0], wav.samples[:, 1]
    assert rms_dbfs(caller) > -45 and rms_dbfs(bot) > -45  # both sides are audible
    # Recomputed from the recording: each utterance's audible end → the bot's next audible sound.
    for (_, audible, _, _), (end, reply) in zip(turns, _turns_in_recording(caller, bot), strict=True):
        assert abs((reply - end) - audible) <= 10, (reply - end, audible)
    # The only time both are audible at once is the barge-in: at most the printed overlap.
    both_ms = 10 * int(np.sum(audible_windows(caller) & audible_windows(bot)))
    assert 0 < both_ms <= overlap_ms + 10, (both_ms, overlap_ms)
    assert overlap_ms < len(load_ulaw_8k(ASSETS / "caller_interrupt.wav")) / 8

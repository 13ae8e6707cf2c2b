"""Audio the gateway makes itself: the hold tone and the apology clip, in every leg format."""

from __future__ import annotations

import base64

import pytest

from gateway.audio import FORMATS, apology_clip, decode_samples, hold_tone, rms_dbfs


@pytest.mark.parametrize("key", sorted(FORMATS))
def test_the_apology_clip_is_whole_frames_of_speech_in_the_legs_format(key: str) -> None:
    fmt = FORMATS[key]
    clip = base64.b64decode(apology_clip(fmt))
    frame = fmt.bytes_per_ms * 20
    assert len(clip) % frame == 0 and 4000 <= fmt.ms(len(clip)) <= 4300  # the shipped clip: 4.2 s
    assert rms_dbfs(decode_samples(fmt, clip)) > -40  # speech, not silence


@pytest.mark.parametrize("key", sorted(FORMATS))
def test_the_hold_tone_is_soft_and_mostly_silent(key: str) -> None:
    fmt = FORMATS[key]
    samples = decode_samples(fmt, hold_tone(fmt, 4_000))
    assert len(samples) == fmt.sample_rate * 4
    loud = abs(samples) > 0.01 * abs(samples).max()
    assert 0.05 < loud.mean() < 0.2  # a 150 ms beep every 2 s
    assert -45 < rms_dbfs(samples) < -30  # (over the whole clip, silence included)

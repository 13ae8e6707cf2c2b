"""The demo users run first: a whole simulated call with a barge-in, end to end."""

from __future__ import annotations

from pathlib import Path

from gateway.audio import read_wav, rms_dbfs
from gateway.demo import run_demo


async def test_the_demo_call_goes_through_with_a_barge_in(tmp_path: Path, capsys) -> None:
    wav_path = tmp_path / "demo.wav"
    assert await run_demo(record=wav_path) == 0
    out = capsys.readouterr().out
    assert "BARGE-IN" in out and "truncation:" in out and "barge-in reaction inside the gateway" in out
    wav = read_wav(wav_path)
    assert wav.rate == 8000 and wav.samples.shape[1] == 2
    caller, bot = wav.samples[:, 0], wav.samples[:, 1]
    assert rms_dbfs(caller) > -45 and rms_dbfs(bot) > -45  # both sides are audible

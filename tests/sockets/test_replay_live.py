"""Recorded calls replayed over real sockets (127.0.0.1): the phone leg against a gateway, a replay
server standing in for Voice Live (the same fixtures replayed without sockets: tests/core/test_replay.py)."""

from __future__ import annotations

import pytest

from gateway.call import Playout
from gateway.replay import load_fixture
from gateway.replay_live import LiveReplay, replay_live
from tests.core.test_replay import CALLS, _bytes_sent

# A truncation point over sockets depends on when the phone's acknowledgements arrive, in real time:
# the suite runs 8 workers on 2 cores, whose event loops may be tens of ms late (more in a stall), and a
# replay at 3x speed triples that in call time. The in-process replays check truncations exactly; a
# barge-in that cuts at the bytes sent instead of the audio played is seconds off (the last test below:
# 1.8 s in the recording it replays).
TOLERANCE_MS = {1.0: 200.0, 3.0: 400.0}


def _speed(name: str) -> float:
    """3x, except for a barge-in on a leg with playback marks: between two marks the gateway's playback
    clock runs in real time, so a replay at 3x, whose marks come three times sooner, finds the cut up to
    two thirds of a piece (400 ms) short of the recorded one."""
    return 1.0 if name.endswith("barge_in_mid_answer") else 3.0


async def _replay(name: str, speed: float) -> LiveReplay:
    return await replay_live(load_fixture(CALLS / f"{name}.jsonl"), speed=speed, tolerance_ms=TOLERANCE_MS[speed])


@pytest.mark.parametrize("name", ["barge_in_mid_answer", "voicelive_closes_mid_call", "function_call_round_trip",
                                  "voicelive_reconnects_mid_call"])
async def test_replay_over_real_sockets(name: str) -> None:
    result = await _replay(name, _speed(name))
    assert result.ok, f"{result.mismatch}\n{result.problems}"


@pytest.mark.parametrize("name", ["acs_barge_in_mid_answer", "acs_dtmf_digits"])
async def test_acs_replay_over_real_sockets(name: str) -> None:
    # ACS paces the bot's audio by the wall clock: its calls replay at their own speed
    result = await _replay(name, 1.0)
    assert result.ok, f"{result.mismatch}\n{result.problems}"


# binary frames in and out where the carrier sends them; acknowledgements answered as the recorded phone did
@pytest.mark.parametrize("name", ["plivo_barge_in_mid_answer", "plivo_bot_hangs_up",
                                  "vonage_barge_in_mid_answer", "vonage_bot_hangs_up", "telnyx_barge_in_mid_answer",
                                  "asterisk_barge_in_mid_answer", "asterisk_bot_hangs_up"])
async def test_other_carriers_replay_over_real_sockets(name: str) -> None:
    result = await _replay(name, _speed(name))
    assert result.ok, f"{result.mismatch}\n{result.problems}"


@pytest.mark.parametrize("name", ["genesys_barge_in_mid_answer", "genesys_bot_hangs_up"])
async def test_genesys_replay_over_real_sockets(name: str) -> None:
    # Genesys acknowledges no audio: the call paces it by the wall clock, so the calls replay at their own speed
    result = await _replay(name, 1.0)
    assert result.ok, f"{result.mismatch}\n{result.problems}"


async def test_socket_replay_catches_a_broken_barge_in(monkeypatch) -> None:
    monkeypatch.setattr(Playout, "_where", _bytes_sent)
    result = await _replay("barge_in_mid_answer", 3.0)
    assert not result.ok
    assert result.mismatch is not None and "conversation.item.truncate" in result.mismatch

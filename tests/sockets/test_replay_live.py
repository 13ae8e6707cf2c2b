"""Recorded calls replayed over real sockets (127.0.0.1): the phone leg against a gateway, a replay
server standing in for Voice Live (the same fixtures replayed without sockets: tests/core/test_replay.py)."""

from __future__ import annotations

import pytest

from gateway.call import Playout
from gateway.replay import load_fixture
from gateway.replay_live import replay_live
from tests.core.test_replay import CALLS, _bytes_sent


@pytest.mark.parametrize("name", ["barge_in_mid_answer", "voicelive_closes_mid_call", "function_call_round_trip",
                                  "voicelive_reconnects_mid_call"])
async def test_replay_over_real_sockets(name: str) -> None:
    result = await replay_live(load_fixture(CALLS / f"{name}.jsonl"), speed=3.0)
    assert result.ok, f"{result.mismatch}\n{result.problems}"


@pytest.mark.parametrize("name", ["acs_barge_in_mid_answer", "acs_dtmf_digits"])
async def test_acs_replay_over_real_sockets(name: str) -> None:
    # ACS paces the bot's audio by the wall clock: its calls replay at their own speed
    result = await replay_live(load_fixture(CALLS / f"{name}.jsonl"), speed=1.0)
    assert result.ok, f"{result.mismatch}\n{result.problems}"


# binary frames in and out where the carrier sends them; acknowledgements answered as the recorded phone did
@pytest.mark.parametrize("name", ["plivo_barge_in_mid_answer", "plivo_bot_hangs_up",
                                  "vonage_barge_in_mid_answer", "vonage_bot_hangs_up", "telnyx_barge_in_mid_answer",
                                  "asterisk_barge_in_mid_answer", "asterisk_bot_hangs_up"])
async def test_other_carriers_replay_over_real_sockets(name: str) -> None:
    result = await replay_live(load_fixture(CALLS / f"{name}.jsonl"), speed=3.0)
    assert result.ok, f"{result.mismatch}\n{result.problems}"


@pytest.mark.parametrize("name", ["genesys_barge_in_mid_answer", "genesys_bot_hangs_up"])
async def test_genesys_replay_over_real_sockets(name: str) -> None:
    # Genesys acknowledges no audio: the call paces it by the wall clock, so the calls replay at their own speed
    result = await replay_live(load_fixture(CALLS / f"{name}.jsonl"), speed=1.0)
    assert result.ok, f"{result.mismatch}\n{result.problems}"


async def test_socket_replay_catches_a_broken_barge_in(monkeypatch) -> None:
    monkeypatch.setattr(Playout, "position", _bytes_sent)
    result = await replay_live(load_fixture(CALLS / "barge_in_mid_answer.jsonl"), speed=3.0)
    assert not result.ok
    assert result.mismatch is not None and "conversation.item.truncate" in result.mismatch

"""Caller audio held while no session is ready, and the uncommitted tail sent again after a drop."""

from __future__ import annotations

import base64

from gateway.core.inbound import CallerAudio


def frame(tag: int, size: int = 160) -> str:
    return base64.b64encode(bytes([tag]) * size).decode()


def test_held_frames_keep_the_newest_within_the_limit() -> None:
    audio = CallerAudio(limit=400)
    dropped = [audio.hold(frame(n), 160) for n in range(4)]
    assert dropped == [0, 0, 1, 1]
    assert audio.take_held() == [frame(2), frame(3)]
    assert audio.held == 0 and audio.take_held() == []


def test_a_lost_session_resends_the_uncommitted_turn_ahead_of_what_was_held_since() -> None:
    audio = CallerAudio(limit=10_000)
    audio.sent(frame(1), 160)
    audio.committed()  # the first turn became an item: never sent again
    audio.speech_started()
    audio.sent(frame(2), 160)
    audio.sent(frame(3), 160)
    audio.hold(frame(4), 160)
    assert audio.session_lost() == 2
    assert audio.take_held() == [frame(2), frame(3), frame(4)]
    assert audio.session_lost() == 0  # nothing uncommitted is left


def test_silence_since_the_last_commit_is_not_sent_again() -> None:
    audio = CallerAudio(limit=10_000)
    audio.sent(frame(1), 160)
    assert not audio.speech_since_commit
    assert audio.session_lost() == 0
    assert audio.take_held() == []


def test_the_uncommitted_tail_is_bounded_too() -> None:
    audio = CallerAudio(limit=320)
    audio.speech_started()
    for n in range(5):
        audio.sent(frame(n), 160)
    assert audio.session_lost() == 2
    assert audio.take_held() == [frame(3), frame(4)]

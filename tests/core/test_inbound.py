"""Caller audio held while no session is ready, and the uncommitted tail sent again after a drop."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

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


def test_while_the_caller_is_silent_only_the_pre_roll_is_kept() -> None:
    audio = CallerAudio(limit=10_000, preroll=480, resend_limit=4_000)
    for n in range(20):
        audio.sent(frame(n), 160)
        assert audio.uncommitted_bytes <= 480  # the pre-roll: three frames, never more
    assert audio.uncommitted_bytes == 480
    audio.speech_started()  # Voice Live heard speech that began in the pre-roll: it is kept
    for n in range(20, 25):
        audio.sent(frame(n), 160)
    assert audio.session_lost() == 8
    assert audio.take_held() == [frame(n) for n in range(17, 25)]


def test_a_commit_returns_the_tail_to_the_pre_roll() -> None:
    audio = CallerAudio(limit=10_000, preroll=320, resend_limit=4_000)
    audio.speech_started()
    for n in range(10):
        audio.sent(frame(n), 160)
    assert audio.uncommitted_bytes == 1600
    audio.committed()
    assert audio.uncommitted_bytes == 0
    for n in range(10, 20):
        audio.sent(frame(n), 160)
    assert audio.uncommitted_bytes == 320
    assert audio.session_lost() == 0  # silence since the commit: nothing is sent again


def test_after_a_commit_the_tail_holds_one_buffer_of_the_pre_roll() -> None:
    audio = CallerAudio(limit=100_000, preroll=960, resend_limit=8_000)
    tail = audio._uncommitted
    audio.speech_started()
    for n in range(40):
        audio.sent(frame(n), 160)
    assert len(tail._buf) > 960  # the turn grew it past the pre-roll
    audio.committed()
    buffer = tail._buf
    assert len(buffer) == 960  # back to the pre-roll's size at once, the memory beyond it given back
    for n in range(40, 60):  # silence: the pre-roll fills and rolls within that buffer, never a new one
        audio.sent(frame(n), 160)
        assert tail._buf is buffer
    assert audio.uncommitted_bytes == 960
    audio.committed()
    assert tail._buf is buffer  # a commit in silence keeps it
    assert audio.uncommitted_bytes == 0


def test_a_long_turn_keeps_its_newest_audio_within_the_resend_limit() -> None:
    audio = CallerAudio(limit=100_000, preroll=320, resend_limit=1_600)
    audio.speech_started()
    for n in range(50):
        audio.sent(frame(n % 250), 160)
        assert audio.uncommitted_bytes <= 1600
    assert audio.session_lost() == 10
    assert audio.take_held() == [frame(n) for n in range(40, 50)]


def test_frames_of_different_sizes_come_back_as_they_went() -> None:
    audio = CallerAudio(limit=100_000)
    audio.speech_started()
    sizes = [160, 160, 80, 960, 960, 160, 2, 160]
    frames = [frame(i, size) for i, size in enumerate(sizes)]
    for f, size in zip(frames, sizes, strict=True):
        audio.sent(f, size)
    audio.hold(frame(99, 320), 320)
    assert audio.session_lost() == len(frames)
    assert audio.take_held() == [*frames, frame(99, 320)]


@given(st.lists(st.tuples(st.sampled_from(["sent", "hold", "speech", "commit", "lost", "take"]),
                          st.integers(1, 30)), max_size=120))
def test_the_rings_agree_with_a_list_of_frames(ops: list[tuple[str, int]]) -> None:
    """Against an oracle that keeps each frame as its own string."""
    limit, preroll, resend = 1_000, 300, 700
    audio = CallerAudio(limit=limit, preroll=preroll, resend_limit=resend)
    held: list[str] = []
    tail: list[str] = []
    speaking = False

    def size(frames: list[str]) -> int:
        return sum(len(base64.b64decode(f)) for f in frames)

    for n, (op, units) in enumerate(ops):
        f = frame(n % 256, units * 40)
        if op == "sent":
            audio.sent(f, units * 40)
            tail.append(f)
            cap = resend if speaking else preroll
            while size(tail) > cap:
                tail.pop(0)
        elif op == "hold":
            audio.hold(f, units * 40)
            held.append(f)
            while size(held) > limit:
                held.pop(0)
        elif op == "speech":
            audio.speech_started()
            speaking = True
        elif op == "commit":
            audio.committed()
            tail, speaking = [], False
        elif op == "lost":
            assert audio.session_lost() == (len(tail) if speaking else 0)
            if speaking:
                held = tail + held
                while size(held) > limit:
                    held.pop(0)
            tail = []
        else:
            assert audio.take_held() == held
            held = []
        assert audio.held == len(held)
        assert audio.uncommitted_bytes == size(tail)


@given(st.lists(st.integers(1, 700), max_size=200), st.integers(1, 1_500))
def test_the_circular_buffer_keeps_the_newest_frames_whole_within_its_bound(sizes: list[int], limit: int) -> None:
    """A ring that wraps around many times gives back exactly the newest frames that fit, byte for byte,
    and its buffer is never larger than its bound."""
    from gateway.core.inbound import FrameRing

    ring, oracle = FrameRing(), []
    for n, size in enumerate(sizes):
        audio = bytes((n + i) % 256 for i in range(size))
        dropped = ring.push(audio, limit)
        before = len(oracle)
        oracle.append(audio)
        while sum(map(len, oracle)) > limit:
            oracle.pop(0)
        assert dropped == before + 1 - len(oracle)
        assert ring.size == sum(map(len, oracle)) and ring.frames == len(oracle)
        assert len(ring._buf) <= limit
    assert [base64.b64decode(f) for f in ring.take()] == oracle
    assert ring.size == ring.frames == 0

"""Where the phone's playback stands between two echoes of its marks (gateway/core/playout.py)."""

from __future__ import annotations

from gateway.audio import G711_ULAW
from gateway.core.playout import ECHO_IN_FLIGHT_MS, Playout

MS = G711_ULAW.bytes_per_ms  # 8 bytes a millisecond


def sent(pieces: list[tuple[str, int, float]]) -> Playout:
    """A playout with pieces (item, ms of audio, sent at) queued, in order."""
    playout = Playout(G711_ULAW)
    ends: dict[str, int] = {}
    for item, ms, at in pieces:
        ends[item] = ends.get(item, 0) + ms * MS
        playout.add(item, ends[item], ms * MS, at)
    return playout


def test_past_a_piece_whose_echo_is_on_its_way_playback_goes_on_into_the_next() -> None:
    playout = sent([("a", 240, 0.0), ("a", 240, 0.0), ("a", 240, 0.0)])
    assert playout.position(200.0) == ("a", 200 * MS)
    assert playout.position(270.0) == ("a", 270 * MS)  # 30 ms into the second piece: not held at 240
    assert playout.position(240.0 + ECHO_IN_FLIGHT_MS) == ("a", (240 + ECHO_IN_FLIGHT_MS) * MS)


def test_an_echo_later_than_that_is_a_stalled_phone_and_what_was_heard_ends_with_its_piece() -> None:
    playout = sent([("a", 240, 0.0), ("a", 240, 0.0)])
    assert playout.position(240.0 + ECHO_IN_FLIGHT_MS + 1) == ("a", 240 * MS)
    assert playout.position(5000.0) == ("a", 240 * MS)
    playout.ack("1", 5000.0)  # the echo came after all: the clock starts again from it
    assert playout.position(5050.0) == ("a", 290 * MS)


def test_an_echo_read_late_keeps_the_clock_on_the_pieces_end_not_on_the_echos_arrival() -> None:
    # the first piece was due to end at 240; its echo is read at 290 (the way back, a busy gateway)
    playout = sent([("a", 240, 0.0), ("a", 240, 0.0), ("a", 240, 0.0)])
    assert playout.ack("1", 240.0 + 50)
    assert playout.position(300.0) == ("a", 300 * MS)  # not 250: the phone kept playing meanwhile
    assert playout.ack("2", 480.0 + ECHO_IN_FLIGHT_MS)  # the latest an echo is taken as on its way
    assert playout.flush(500.0) == ("a", 500 * MS)


def test_an_echo_sooner_than_its_piece_was_due_to_end_sets_the_clock() -> None:
    playout = sent([("a", 240, 0.0), ("a", 240, 0.0)])
    assert playout.ack("1", 200.0)  # the phone was ahead of the sending times
    assert playout.position(250.0) == ("a", 290 * MS)


def test_acknowledging_several_pieces_at_once_takes_when_the_last_was_due_to_end() -> None:
    playout = sent([("a", 240, 0.0), ("a", 240, 0.0), ("a", 240, 0.0)])
    assert playout.ack("2", 530.0)  # the second was due at 480
    assert playout.position(540.0) == ("a", 540 * MS)
    gap = sent([("a", 240, 0.0), ("a", 240, 0.0), ("a", 240, 600.0)])  # the third sent after a silence
    assert gap.ack("2", 500.0)
    assert gap.position(600.0) == ("a", 480 * MS) and gap.position(610.0) == ("a", 490 * MS)


def test_a_piece_sent_after_the_one_before_had_played_starts_when_it_was_sent() -> None:
    playout = sent([("a", 240, 0.0), ("a", 240, 300.0)])  # the phone was silent from 240 to 300
    assert playout.position(290.0) == ("a", 240 * MS)
    assert playout.position(320.0) == ("a", 260 * MS)


def test_a_flush_after_the_next_items_audio_began_keeps_the_first_item_heard() -> None:
    playout = sent([("a", 240, 0.0), ("b", 240, 0.0), ("c", 240, 0.0)])
    assert playout.flush(260.0) == ("b", 20 * MS)
    assert playout.unheard == ["c"]  # "a" played to its end; only "c" was never heard
    assert not playout.pending

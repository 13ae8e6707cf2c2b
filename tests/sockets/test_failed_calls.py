"""Notes of failed calls read by another worker (a shared directory) or replica (a real Redis): the
carrier's follow-up request gets the busy message or the apology wherever it lands."""

from __future__ import annotations

import os
import time
from pathlib import Path

from gateway.failures import FAILED_CALL_TTL_S, FailedCalls
from tests.sockets.loopback import refusing_port
from tests.sockets.redis_server import running_redis


async def test_a_worker_reads_what_another_worker_noted(tmp_path: Path) -> None:
    a, b = FailedCalls(str(tmp_path / "state")), FailedCalls(str(tmp_path / "state"))
    a.note("CA1", "All lines are busy.")
    await a.close()  # (the note is written in the background)
    assert await b.message("CA1") == "All lines are busy." and "CA1" not in b  # read from the directory
    assert await b.message("CA2") is None
    assert await a.message("../../etc/passwd") is None  # an id is never a path
    assert [p.name for p in (tmp_path / "state").iterdir()] != ["CA1"]


async def test_only_expired_notes_are_pruned_from_the_directory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    old = FailedCalls(str(state))
    old.note("CA-old", "busy")
    await old.close()
    foreign = state / "operator-notes.txt"  # a file the gateway did not write: never its to delete
    foreign.write_text("keep me")
    long_ago = time.time() - FAILED_CALL_TTL_S - 60
    for path in state.iterdir():
        os.utime(path, (long_ago, long_ago))
    notes = FailedCalls(str(state))
    notes.note("CA-new", "busy")
    await notes.close()
    assert await notes.message("CA-old") is None and await FailedCalls(str(state)).message("CA-new") == "busy"
    assert foreign.read_text() == "keep me"
    assert len(list(state.iterdir())) == 2  # the expired note went; the new one and the foreign file stay


async def test_replicas_read_what_another_noted_through_redis() -> None:
    with running_redis() as server:
        a, b = FailedCalls(redis_url=server.url), FailedCalls(redis_url=server.url)
        try:
            a.note("CA7", "Sorry, we cannot take your call right now.")
            await a.close()
            assert await b.message("CA7") == "Sorry, we cannot take your call right now."
            assert await b.message("CA8") is None
        finally:
            await b.close()


async def test_an_unreachable_redis_costs_only_the_shared_note() -> None:
    sock, port = refusing_port()
    try:
        notes = FailedCalls(redis_url=f"redis://127.0.0.1:{port}/0")
        notes.note("CA9", "apology")
        await notes.close()
        assert await notes.message("CA9") == "apology"  # this process still knows
        other = FailedCalls(redis_url=f"redis://127.0.0.1:{port}/0")
        assert await other.message("CA9") is None  # logged, not raised
        await other.close()
    finally:
        sock.close()

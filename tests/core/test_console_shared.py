"""The console's view of several workers (gateway.console.shared): which calls a worker lists (its own,
and those of the other workers' fresh snapshots), when a snapshot is too old to list or to keep, the
files of the shared directory (snapshots written atomically, end requests taken once), and the
directory the supervisor gives its workers. The workers serving a console: tests/sockets/test_console_workers.py."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.console.shared import (
    FORGET_S,
    FRESH_S,
    CallBoard,
    EndRequest,
    Snapshot,
    forgotten,
    fresh,
    merge_calls,
    parse_snapshot,
    request_name,
    shared_dir,
    snapshot_name,
    worker_of,
)
from gateway.workers import WORKERS_DIR_ENV, worker_environment

NOW = 1_700_000_000.0
OWN, OTHER, THIRD = 100, 200, 300


def call(call_id: str, started: float = NOW - 10, **extra: Any) -> dict[str, Any]:
    return {"call_id": call_id, "carrier": "twilio", "direction": "inbound", "profile": "main",
            "duration_s": 1.0, "state": "ready", "turns": 0, "started": started, **extra}


def test_a_worker_lists_its_own_calls_and_those_of_the_other_workers_fresh_snapshots() -> None:
    snapshots = [
        Snapshot(OTHER, NOW - 1, (call("B1", NOW - 30), call("B2", NOW - 5))),
        Snapshot(THIRD, NOW - FRESH_S - 0.1, (call("C1", NOW - 40),)),  # stopped writing: left out
        Snapshot(OWN, NOW - 3, (call("A-old", NOW - 50),)),  # this worker's own file: never read back
    ]
    merged = merge_calls(OWN, [call("A1", NOW - 20)], snapshots, NOW)
    assert [(c["call_id"], c["worker"]) for c in merged] == [("B1", OTHER), ("A1", OWN), ("B2", OTHER)]  # oldest first
    assert all(set(c) == set(call("x")) | {"worker"} for c in merged)


def test_a_call_is_listed_once_with_this_worker_s_view_winning() -> None:
    own = [call("X", state="ending")]
    merged = merge_calls(OWN, own, [Snapshot(OTHER, NOW, (call("X", state="ready"),)),
                                    Snapshot(THIRD, NOW, (call("X"),))], NOW)
    assert merged == [{**own[0], "worker": OWN}]
    assert merge_calls(OWN, [], [], NOW) == []


def test_freshness_and_forgetting_by_age() -> None:
    assert fresh(Snapshot(OTHER, NOW - FRESH_S), NOW) and not fresh(Snapshot(OTHER, NOW - FRESH_S - 0.01), NOW)
    assert fresh(Snapshot(OTHER, NOW + 1), NOW)  # (a wall clock that stepped back a little)
    assert not forgotten(Snapshot(OTHER, NOW - FORGET_S), NOW)
    assert forgotten(Snapshot(OTHER, NOW - FORGET_S - 0.01), NOW)


def test_the_worker_of_a_call_is_the_other_worker_whose_fresh_snapshot_lists_it() -> None:
    snapshots = [Snapshot(OTHER, NOW - 1, (call("B1"),)), Snapshot(THIRD, NOW - FRESH_S - 1, (call("C1"),)),
                 Snapshot(OWN, NOW, (call("A1"),))]
    assert worker_of("B1", OWN, snapshots, NOW) == OTHER
    assert worker_of("C1", OWN, snapshots, NOW) is None  # its worker stopped writing
    assert worker_of("A1", OWN, snapshots, NOW) is None  # this worker's own calls are not found this way
    assert worker_of("nothing", OWN, snapshots, NOW) is None


def test_a_snapshot_is_what_a_worker_writes_or_an_error() -> None:
    text = json.dumps({"pid": OTHER, "at": NOW, "calls": [call("B1"), {"carrier": "x"}, "junk", {"call_id": ""}]})
    assert parse_snapshot(text) == Snapshot(OTHER, NOW, (call("B1"),))  # (entries without a call id dropped)
    for bad in ("[]", "{", '{"pid": 0, "at": 1, "calls": []}', '{"pid": true, "at": 1, "calls": []}',
                '{"pid": "200", "at": 1, "calls": []}', '{"pid": 200, "at": "now", "calls": []}',
                '{"pid": 200, "at": NaN, "calls": []}', '{"pid": 200, "at": Infinity, "calls": []}',
                '{"pid": 200, "at": 1, "calls": {}}', '{"pid": 200, "at": 1}'):
        with pytest.raises(ValueError):
            parse_snapshot(bad)


def test_workers_share_snapshots_and_take_the_end_requests_addressed_to_them(tmp_path: Path) -> None:
    own, other = CallBoard(tmp_path, OWN), CallBoard(tmp_path, OTHER)
    assert own.publish([call("A1")], NOW) == [] and other.publish([call("B1"), call("B2")], NOW) == []
    assert own.others() == [Snapshot(OTHER, NOW, (call("B1"), call("B2")))]
    assert other.others() == [Snapshot(OWN, NOW, (call("A1"),))]
    assert sorted(p.name for p in tmp_path.iterdir()) == [snapshot_name(OWN), snapshot_name(OTHER)]  # no temporaries

    own.request_end(OTHER, "B2", NOW)
    assert (tmp_path / request_name(OTHER, "B2")).is_file()
    assert own.publish([call("A1")], NOW + 1) == []  # (not addressed to this worker: left alone)
    assert other.publish([call("B1"), call("B2")], NOW + 1) == [EndRequest("B2", OWN)]
    assert not (tmp_path / request_name(OTHER, "B2")).exists()
    assert other.publish([call("B1")], NOW + 2) == []  # taken once

    other.withdraw()
    assert own.others() == []
    other.withdraw()  # (nothing to remove: no error)


def test_a_request_for_an_odd_call_id_names_a_plain_file(tmp_path: Path) -> None:
    own, other = CallBoard(tmp_path, OWN), CallBoard(tmp_path, OTHER)
    odd = "../../etc/passwd\x00\udcff é"
    own.request_end(OTHER, odd, NOW)
    assert [p.parent for p in tmp_path.iterdir()] == [tmp_path]
    assert other.publish([], NOW) == [EndRequest(odd, OWN)]


def test_what_stopped_workers_left_is_removed_after_a_minute_and_bad_files_are_left_out(tmp_path: Path) -> None:
    own = CallBoard(tmp_path, OWN)
    gone = tmp_path / snapshot_name(OTHER)
    gone.write_text(json.dumps({"pid": OTHER, "at": NOW - FORGET_S - 1, "calls": [call("B1")]}))
    os.utime(gone, (NOW - FORGET_S - 1, NOW - FORGET_S - 1))
    stale = tmp_path / snapshot_name(THIRD)
    stale.write_text(json.dumps({"pid": THIRD, "at": NOW - FRESH_S - 1, "calls": [call("C1")]}))
    os.utime(stale, (NOW - FRESH_S - 1, NOW - FRESH_S - 1))
    untaken = tmp_path / request_name(OTHER, "B1")  # addressed to the worker that stopped
    untaken.write_text(json.dumps({"call_id": "B1", "by": OWN}))
    os.utime(untaken, (NOW - FORGET_S - 1, NOW - FORGET_S - 1))
    bad = tmp_path / snapshot_name(400)
    bad.write_text("{not json")
    liar = tmp_path / snapshot_name(500)  # (its content names another worker than its name)
    liar.write_text(json.dumps({"pid": OTHER, "at": NOW, "calls": [call("L1")]}))
    (tmp_path / "notes.txt").write_text("not the console's")

    with capture_logs() as logs:
        assert sorted(s.pid for s in own.others()) == [OTHER, THIRD]
        assert own.others()  # (read again: each unreadable file reported once)
        own.publish([], NOW)
    unreadable = [entry for entry in logs if "unreadable" in entry["event"]]
    assert sorted(Path(entry["file"]).name for entry in unreadable) == [snapshot_name(400), snapshot_name(500)]
    assert all(entry["log_level"] == "warning" for entry in unreadable)
    assert not gone.exists() and not untaken.exists()  # older than a minute: removed
    assert stale.exists() and bad.exists() and liar.exists()  # younger: kept (a stale one is just not listed)
    assert (tmp_path / "notes.txt").exists()
    assert [s.pid for s in own.others() if fresh(s, NOW)] == []


def test_a_malformed_end_request_is_logged_removed_and_ends_nothing(tmp_path: Path) -> None:
    other = CallBoard(tmp_path, OTHER)
    wrong_name = tmp_path / request_name(OTHER, "B1")
    wrong_name.write_text(json.dumps({"call_id": "B2", "by": OWN}))  # (names another call than its file)
    junk = tmp_path / request_name(OTHER, "B3")
    junk.write_bytes(b"\xff\xfe")
    with capture_logs() as logs:
        assert other.publish([call("B1"), call("B2"), call("B3")], NOW) == []
    assert [entry["event"] for entry in logs].count("an end request from the console is malformed: ignored") == 2
    assert not wrong_name.exists() and not junk.exists()


def test_a_board_in_a_directory_that_is_gone_shares_nothing_and_makes_it_again(tmp_path: Path) -> None:
    board = CallBoard(tmp_path / "workers", OWN)
    assert board.others() == []
    board.withdraw()
    assert board.publish([call("A1")], NOW) == []
    assert parse_snapshot((tmp_path / "workers" / snapshot_name(OWN)).read_text()).calls == (call("A1"),)


def test_the_supervisor_gives_its_workers_a_directory_inside_their_metrics_one() -> None:
    env = worker_environment({"PATH": "/bin"}, "/tmp/m", 2)
    assert env[WORKERS_DIR_ENV] == "/tmp/m/workers"
    assert shared_dir(env) == Path("/tmp/m/workers")
    assert shared_dir({}) is None and shared_dir({WORKERS_DIR_ENV: ""}) is None  # one worker: nothing shared

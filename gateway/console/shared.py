"""The calls of every worker of one gateway, for the console (``gateway serve --workers N``).

Each worker knows only its own calls, and a console request reaches whichever worker the kernel
picks. So that any of them lists (and ends) every call of the machine, the workers share a
directory the supervisor makes for them (``GATEWAY_WORKERS_DIR``, see :mod:`gateway.workers`):

- every second, each worker writes what it has in progress to ``calls-<pid>.json``
  (``{"pid", "at", "calls"}``, ``at`` being the wall clock), atomically (a temporary file, then a
  rename), and removes it when it stops;
- a worker answering the console lists its own calls as they are, and those of the other workers'
  snapshots written within :data:`FRESH_S` (a worker that stopped writing is left out; its file is
  removed once older than :data:`FORGET_S`);
- to end a call of another worker it writes ``end-<pid>-<sha256 of the call id>.json`` (the call id
  inside); that worker takes the request at its next write, ends the call and removes the file.

The files hold what the console shows (no numbers, nothing secret). Only the workers of one
supervisor share them: replicas on other machines (or other containers) each list their own calls.

The functions at the top are pure (the merge and the staleness rules); :class:`CallBoard` does the
file work, and is meant to run off the event loop (``asyncio.to_thread``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.log import get_logger
from gateway.workers import WORKERS_DIR_ENV

__all__ = ["FORGET_S", "FRESH_S", "CallBoard", "EndRequest", "Snapshot", "forgotten", "fresh", "merge_calls",
           "parse_snapshot", "shared_dir", "worker_of"]

log = get_logger("gateway.console")

FRESH_S = 5.0  # a worker's snapshot older than this is not listed (the worker stopped, or is stuck)
FORGET_S = 60.0  # a snapshot (or an end request nobody took) older than this is removed
MAX_FILE_BYTES = 4 * 1024 * 1024  # a file larger than this is not one a worker wrote
_SNAPSHOT = re.compile(r"calls-([0-9]{1,10})\.json")
_REQUEST = re.compile(r"end-([0-9]{1,10})-[0-9a-f]{64}\.json")
_TEMPORARY = re.compile(r"\.(?:calls|end)-[0-9]{1,10}[-0-9a-f]*\.json\.[0-9]{1,10}\.[0-9]{1,20}\.tmp")


def shared_dir(env: dict[str, str] | None = None) -> Path | None:
    """The directory the workers of this gateway share (None: one worker, nothing shared)."""
    value = (os.environ if env is None else env).get(WORKERS_DIR_ENV)
    return Path(value) if value else None


# --- pure: what a snapshot says, and what the console lists -------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """What one worker had in progress at ``at`` (the wall clock, seconds)."""

    pid: int
    at: float
    calls: tuple[dict[str, Any], ...] = field(default=())


def parse_snapshot(text: str) -> Snapshot:
    """A snapshot file's content; ValueError (saying what is wrong) for anything a worker did not write.
    A call entry without a call id is dropped with the rest kept."""
    body = json.loads(text)
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    pid, at, calls = body.get("pid"), body.get("at"), body.get("calls")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise ValueError("no worker pid")
    if not isinstance(at, int | float) or isinstance(at, bool) or not math.isfinite(at):
        raise ValueError("no time")
    if not isinstance(calls, list):
        raise ValueError("no list of calls")
    kept = tuple(call for call in calls if isinstance(call, dict) and isinstance(call.get("call_id"), str)
                 and call["call_id"])
    return Snapshot(pid, float(at), kept)


def fresh(snapshot: Snapshot, now: float) -> bool:
    """Whether a snapshot is recent enough to list: written within FRESH_S (a clock that went back a
    little counts as recent)."""
    return now - snapshot.at <= FRESH_S


def forgotten(snapshot: Snapshot, now: float) -> bool:
    """Whether a snapshot's worker is long gone: its file can be removed."""
    return now - snapshot.at > FORGET_S


def merge_calls(own_pid: int, own_calls: Iterable[dict[str, Any]], snapshots: Iterable[Snapshot],
                now: float) -> list[dict[str, Any]]:
    """The calls the console lists: this worker's (as they are now) and those of the other workers'
    fresh snapshots, each with ``worker`` (its pid), oldest call first (the same order whichever
    worker answers). A call is listed once (this worker's view wins); this worker's own snapshot is
    never read back."""
    out = [{**call, "worker": own_pid} for call in own_calls]
    seen = {call["call_id"] for call in out}
    for snapshot in sorted(snapshots, key=lambda s: s.pid):
        if snapshot.pid == own_pid or not fresh(snapshot, now):
            continue
        for call in snapshot.calls:
            if call["call_id"] not in seen:
                seen.add(call["call_id"])
                out.append({**call, "worker": snapshot.pid})

    def started(call: dict[str, Any]) -> tuple[float, str]:
        value = call.get("started")
        return (float(value) if isinstance(value, int | float) else 0.0, str(call["call_id"]))

    return sorted(out, key=started)


def worker_of(call_id: str, own_pid: int, snapshots: Iterable[Snapshot], now: float) -> int | None:
    """The other worker whose fresh snapshot lists ``call_id`` (None: no other worker has it)."""
    for snapshot in sorted(snapshots, key=lambda s: s.pid):
        if snapshot.pid != own_pid and fresh(snapshot, now) and any(c["call_id"] == call_id for c in snapshot.calls):
            return snapshot.pid
    return None


@dataclass(frozen=True)
class EndRequest:
    """An operator ended one of this worker's calls from a console request another worker answered."""

    call_id: str
    by: int | None  # the pid of the worker that answered the operator


def snapshot_name(pid: int) -> str:
    return f"calls-{pid}.json"


def request_name(pid: int, call_id: str) -> str:
    """The end request for ``call_id`` addressed to worker ``pid`` (the call id hashed: a file name
    made of it could be anything)."""
    return f"end-{pid}-{hashlib.sha256(call_id.encode('utf-8', 'surrogateescape')).hexdigest()}.json"


# --- the files ------------------------------------------------------------------------------------------


class CallBoard:
    """One worker's side of the shared directory. Its methods block (small files): call them with
    ``asyncio.to_thread``."""

    def __init__(self, directory: Path, pid: int | None = None) -> None:
        self.directory = directory
        self.pid = os.getpid() if pid is None else pid
        self._bad: set[str] = set()  # files already reported as unreadable (each is reported once)
        self._writes = itertools.count()  # (each write its own temporary file: requests may be written at once)

    def _write(self, name: str, body: dict[str, Any]) -> None:
        """Write a file atomically: readers see the previous content or the new one, never a part."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = self.directory / name
        temporary = self.directory / f".{name}.{self.pid}.{next(self._writes)}.tmp"
        try:
            temporary.write_text(json.dumps(body, separators=(",", ":")), encoding="utf-8")
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def publish(self, calls: list[dict[str, Any]], now: float | None = None) -> list[EndRequest]:
        """Write this worker's snapshot, and take the end requests addressed to it (their files
        removed). Also removes what stopped workers left behind."""
        now = time.time() if now is None else now
        self._write(snapshot_name(self.pid), {"pid": self.pid, "at": now, "calls": calls})
        wanted: list[EndRequest] = []
        for path in self._entries():
            name = path.name
            match = _REQUEST.fullmatch(name)
            if match is not None and int(match.group(1)) == self.pid:
                request = self._take_request(path)
                if request is not None:
                    wanted.append(request)
            elif match is not None or _TEMPORARY.fullmatch(name):
                self._remove_if_older(path, now)  # another worker's: removed only when nobody took it
            elif (found := _SNAPSHOT.fullmatch(name)) is not None and int(found.group(1)) != self.pid:
                snapshot = self._read(path)
                if snapshot is None or forgotten(snapshot, now):
                    self._remove_if_older(path, now)
        return wanted

    def others(self) -> list[Snapshot]:
        """The other workers' snapshots as they are on disk (stale ones included: see :func:`fresh`)."""
        out: list[Snapshot] = []
        for path in self._entries():
            found = _SNAPSHOT.fullmatch(path.name)
            if found is None or int(found.group(1)) == self.pid:
                continue
            snapshot = self._read(path)
            if snapshot is not None:
                out.append(snapshot)
        return out

    def request_end(self, pid: int, call_id: str, now: float | None = None) -> None:
        """Ask worker ``pid`` to end ``call_id`` (it acts at its next write, within a second)."""
        self._write(request_name(pid, call_id), {"call_id": call_id, "by": self.pid,
                                                 "at": time.time() if now is None else now})

    def withdraw(self) -> None:
        """Remove this worker's snapshot (it stops, or the console was turned off): its calls are no
        longer listed by the others."""
        try:
            (self.directory / snapshot_name(self.pid)).unlink()
        except FileNotFoundError:
            pass

    def _entries(self) -> list[Path]:
        try:
            return list(self.directory.iterdir())
        except FileNotFoundError:  # (not made yet, or removed as the gateway stops)
            return []
        except OSError as exc:
            if "" not in self._bad:  # (reported once)
                self._bad.add("")
                log.warning("the directory the workers share their calls in cannot be read: the console lists "
                            "this worker's calls only", directory=str(self.directory), error=str(exc))
            return []

    def _read(self, path: Path) -> Snapshot | None:
        try:
            with path.open("rb") as file:
                raw = file.read(MAX_FILE_BYTES + 1)
            if len(raw) > MAX_FILE_BYTES:
                raise ValueError("too large")
            snapshot = parse_snapshot(raw.decode("utf-8"))
            found = _SNAPSHOT.fullmatch(path.name)
            if found is not None and int(found.group(1)) != snapshot.pid:
                raise ValueError("its pid is not the one of its name")
            return snapshot
        except FileNotFoundError:  # (its worker removed it meanwhile)
            return None
        except (OSError, ValueError) as exc:  # (json's errors are ValueErrors, as are bad UTF-8 bytes)
            if path.name not in self._bad:
                self._bad.add(path.name)
                log.warning("a worker's call list for the console is unreadable: left out", file=str(path),
                            error=str(exc)[:200])
            return None

    def _take_request(self, path: Path) -> EndRequest | None:
        try:
            with path.open("rb") as file:
                raw = file.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("an end request from the console could not be read", file=str(path), error=str(exc))
            return None
        finally:
            try:
                path.unlink()
            except OSError:
                pass
        try:
            body = json.loads(raw.decode("utf-8")) if len(raw) <= MAX_FILE_BYTES else None
        except ValueError:
            body = None
        call_id = body.get("call_id") if isinstance(body, dict) else None
        if not isinstance(call_id, str) or not call_id or path.name != request_name(self.pid, call_id):
            log.warning("an end request from the console is malformed: ignored", file=str(path))
            return None
        by = body.get("by") if isinstance(body, dict) else None
        return EndRequest(call_id, by if isinstance(by, int) and not isinstance(by, bool) else None)

    @staticmethod
    def _remove_if_older(path: Path, now: float) -> None:
        try:
            if now - path.stat().st_mtime > FORGET_S:
                path.unlink()
        except OSError:
            pass

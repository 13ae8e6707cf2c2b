"""Calls the gateway failed, remembered for the carrier's follow-up request.

When the gateway cannot serve a call (Voice Live unavailable, no connection left in the budget), it
closes the media socket and, on carriers that work that way, the carrier asks a follow-up URL what
next (the carrier packages say which): the answer is the apology, or the profile's busy message. That
request is a new connection and may reach another worker or
replica than the one that failed the call, so the note is kept where every one of them can read it:

- in the process (always: the answer when the same worker is asked);
- in a directory shared by the workers of ``gateway serve --workers N`` (``GATEWAY_STATE_DIR``, which
  the supervisor makes for its workers), one small file per call;
- in Redis when ``GATEWAY_REDIS_URL`` is set (every replica), a key per call with an expiry.

A note lives ``FAILED_CALL_TTL_S``. Writing to the shared stores happens in the background, and a
store that fails is logged and skipped: a note is a courtesy to the caller, never a reason to fail.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.log import get_logger

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = get_logger("gateway.failures")

__all__ = ["FAILED_CALL_TTL_S", "STATE_DIR_ENV", "FailedCalls"]

FAILED_CALL_TTL_S = 600.0
STATE_DIR_ENV = "GATEWAY_STATE_DIR"
KEY_PREFIX = "gateway:failed:"
MAX_LOCAL = 10_000  # notes kept in the process (the oldest go first)
REDIS_TIMEOUT_S = 0.5


_NOTE_FILE = re.compile(r"[0-9a-f]{32}(\.[0-9]+\.tmp)?")


def _file_name(call_id: str) -> str:
    """A file name for any call id (ids come from carriers: never a path)."""
    return hashlib.sha256(call_id.encode()).hexdigest()[:32]


class FailedCalls:
    """Notes of failed calls: call id -> what the caller hears (the apology or a busy message)."""

    def __init__(self, directory: str | None = None, redis_url: str | None = None) -> None:
        self._local: dict[str, tuple[float, str]] = {}
        self._dir = Path(directory) if directory else None
        self._redis: Redis | None = None
        self._failures: tuple[type[BaseException], ...] = (OSError, TimeoutError)
        if redis_url:  # (redis-py is imported only then: it loads more than the gateway uses)
            from redis.asyncio import Redis
            from redis.exceptions import RedisError

            self._redis = Redis.from_url(redis_url, socket_connect_timeout=REDIS_TIMEOUT_S,
                                         socket_timeout=REDIS_TIMEOUT_S)
            self._failures = (RedisError, OSError, TimeoutError)
        self._tasks: set[asyncio.Task[None]] = set()
        self._redis_down = False  # (one warning per outage, not one per call)

    @classmethod
    def from_environment(cls, redis_url: str | None) -> FailedCalls:
        return cls(os.environ.get(STATE_DIR_ENV) or None, redis_url)

    def __contains__(self, call_id: object) -> bool:
        """Known in this process (the shared stores are asked by :meth:`message`)."""
        return isinstance(call_id, str) and self._fresh(call_id) is not None

    def _fresh(self, call_id: str) -> str | None:
        note = self._local.get(call_id)
        if note is None or time.monotonic() - note[0] > FAILED_CALL_TTL_S:
            return None
        return note[1]

    def note(self, call_id: str, message: str) -> None:
        """Remember that the gateway failed ``call_id``, and what its caller should hear."""
        if not call_id:
            return
        now = time.monotonic()
        self._local.pop(call_id, None)
        self._local[call_id] = (now, message)
        while len(self._local) > MAX_LOCAL or (
                self._local and now - next(iter(self._local.values()))[0] > FAILED_CALL_TTL_S):
            self._local.pop(next(iter(self._local)))
        if self._dir is not None or self._redis is not None:
            task = asyncio.get_running_loop().create_task(self._share(call_id, message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _share(self, call_id: str, message: str) -> None:
        if self._dir is not None:
            try:
                await asyncio.to_thread(self._write_file, call_id, message)
            except OSError as exc:
                log.warning("could not share a failed call's note with the other workers", error=str(exc))
        if self._redis is not None:
            try:
                await self._redis.set(KEY_PREFIX + call_id, message.encode(), ex=int(FAILED_CALL_TTL_S))
            except self._failures as exc:
                self._redis_failed("could not share a failed call's note through Redis", exc)
            else:
                self._redis_down = False

    def _write_file(self, call_id: str, message: str) -> None:
        assert self._dir is not None
        self._dir.mkdir(parents=True, exist_ok=True)
        path = self._dir / _file_name(call_id)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(message, encoding="utf-8")
        temporary.replace(path)
        now = time.time()  # prune what has expired (a few files at most per minute of failures)
        for old in self._dir.iterdir():
            if not _NOTE_FILE.fullmatch(old.name):  # only the notes (and their temporary files) are ours
                continue
            try:
                if now - old.stat().st_mtime > FAILED_CALL_TTL_S:
                    old.unlink()
            except OSError:
                continue

    def _read_file(self, call_id: str) -> str | None:
        assert self._dir is not None
        path = self._dir / _file_name(call_id)
        try:
            if time.time() - path.stat().st_mtime > FAILED_CALL_TTL_S:
                return None
            return path.read_text(encoding="utf-8")
        except OSError:
            return None

    async def message(self, call_id: str) -> str | None:
        """What the caller of a call the gateway failed should hear (None: it did not fail the call),
        from this process, the workers' directory or Redis."""
        if not call_id:
            return None
        found = self._fresh(call_id)
        if found is not None:
            return found
        if self._dir is not None:
            found = await asyncio.to_thread(self._read_file, call_id)
            if found is not None:
                return found
        if self._redis is not None:
            try:
                value = await self._redis.get(KEY_PREFIX + call_id)
            except self._failures as exc:
                self._redis_failed("could not read failed calls' notes from Redis", exc)
                return None
            self._redis_down = False
            if value is not None:
                return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        return None

    def _redis_failed(self, event: str, exc: BaseException) -> None:
        (log.debug if self._redis_down else log.warning)(event, error=type(exc).__name__)
        self._redis_down = True

    async def settle(self) -> None:
        """Wait until the notes taken so far are shared (before the carrier is let ask for them)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        await self.settle()
        if self._redis is not None:
            await self._redis.aclose()

"""Delivering post-call records: spooled to disk first, then POSTed to a webhook, signed the
Standard Webhooks way, retried with exponential backoff until it answers 2xx.

A record is written to the spool directory (a temporary file renamed into place) before any
attempt, and deleted only once the webhook has answered 2xx, so a webhook outage or a restart loses
nothing: at start-up the gateway delivers whatever the spool holds. The workers of a gateway share
the directory; a worker claims a record by renaming its file (a rename succeeds for one of them
only), so no two deliver the same record at once. A record still failing after ``max_attempts`` is
released back to the spool (``gateway_records_total{outcome="failed"}``) and tried again at the
next start-up. Nothing here runs on a call's path: delivery runs in background tasks.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from gateway import metrics
from gateway.config import RecordsSettings, webhook_key
from gateway.log import get_logger

__all__ = ["RESUME_DELIVERIES", "RecordDelivery", "Spool", "backoff_s", "sign", "signature_headers"]

log = get_logger("gateway.webhooks")

SUFFIX = ".json"  # a record waiting in the spool: <record id>.json
CLAIMED = ".claimed."  # a record being delivered: <record id>.json.claimed.<host>.<pid>.<process start>
RESUME_DELIVERIES = 8  # the records of the spool delivered at once at start-up (it may hold thousands)
STALE_CLAIM_S = 3600.0  # a claim of another host (or a temporary file) older than this: its worker is gone


def _host() -> str:
    """This host as a claim names it: its hostname and its pid namespace (containers with host
    networking share a hostname, not their pids: a claim's pid is checked only in its own namespace)."""
    name = socket.gethostname().replace(".", "_") or "host"
    try:
        namespace = os.readlink("/proc/self/ns/pid")  # pid:[4026531836]
    except OSError:
        return name
    return name + "_" + "".join(ch for ch in namespace if ch.isdigit())


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` of a body: ``v1,`` and the base64 HMAC-SHA256 of ``id.timestamp.body``."""
    mac = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signature_headers(key: bytes, message_id: str, body: bytes, now_s: float) -> dict[str, str]:
    timestamp = int(now_s)
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(key, message_id, timestamp, body), "content-type": "application/json"}


def backoff_s(attempt: int, initial_s: float, max_s: float) -> float:
    """The wait after failed attempt ``attempt`` (1, 2, ...): ``initial_s`` doubling, at most ``max_s``."""
    delay = initial_s
    for _ in range(attempt - 1):
        if delay >= max_s:
            break
        delay *= 2
    return min(max_s, delay)


def _started(pid: int) -> str:
    """When a process started (Linux: clock ticks since boot), so that a claim of a process that is
    gone is told from one of a new process given the same pid (a restarted container); "0" elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "0"
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else "0"


def _alive(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return started == "0" or _started(pid) in (started, "0")


class Spool:
    """The spool directory: records as files, claimed by rename. Blocking file I/O: run it off the loop."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # not fatal: each record is then delivered from memory (and said so)
            log.error("the records spool directory cannot be created; records are delivered without it "
                      "(a restart loses those not yet delivered)", directory=str(self.directory), error=str(exc))
        self._host = _host()
        self._claim_tag = f"{CLAIMED}{self._host}.{os.getpid()}.{_started(os.getpid())}"

    def write(self, record_id: str, webhook: str, body: bytes) -> Path:
        """Put a record in the spool, whole or not at all (a temporary file renamed into place)."""
        envelope = json.dumps({"id": record_id, "webhook": webhook, "body": body.decode()}).encode()
        path = self.directory / f"{record_id}{SUFFIX}"
        temp = self.directory / f".{record_id}.{uuid.uuid4().hex}.tmp"
        # readable by the gateway's user only: a record is personal data even when masked
        try:
            with os.fdopen(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
                out.write(envelope)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, path)
        except BaseException:  # a full disk, say: no part of the record stays behind
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        return path

    def claim(self, path: Path) -> Path | None:
        """Take a waiting record for this worker; None when another worker took it first."""
        claimed = path.with_name(path.name + self._claim_tag)
        try:
            os.rename(path, claimed)
        except FileNotFoundError:
            return None
        with contextlib.suppress(OSError):
            os.utime(claimed)
        return claimed

    @staticmethod
    def renew(claimed: Path) -> None:
        """Mark a claim as still being worked on (a claim of another host is stale once old)."""
        with contextlib.suppress(OSError):
            os.utime(claimed)

    def release(self, claimed: Path) -> None:
        """Give a claimed record back to the spool (to be delivered later)."""
        with contextlib.suppress(FileNotFoundError):
            os.rename(claimed, claimed.with_name(claimed.name.split(CLAIMED, 1)[0]))

    def done(self, claimed: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            claimed.unlink()

    @staticmethod
    def read(claimed: Path) -> dict[str, Any]:
        value = json.loads(claimed.read_bytes())
        if not isinstance(value, dict) or not all(isinstance(value.get(k), str) for k in ("id", "webhook", "body")):
            raise ValueError("not a spooled record")
        try:
            value["body"].encode()
        except UnicodeEncodeError:
            raise ValueError("not a spooled record (its body is not text)") from None
        return value

    def waiting(self) -> list[Path]:
        """The records waiting, oldest first; claims whose worker is gone are released first."""
        now = time.time()
        found: list[tuple[float, Path]] = []
        for path in self.directory.iterdir():
            name = path.name
            if name.startswith(".") and name.endswith(".tmp"):  # a write cut short (the record was not spooled)
                with contextlib.suppress(OSError):
                    if now - path.stat().st_mtime > STALE_CLAIM_S:
                        path.unlink()
                continue
            if CLAIMED in name:
                host, pid, started = ([*name.rsplit(CLAIMED, 1)[1].split("."), "", ""])[:3]
                try:
                    stale = (not _alive(int(pid), started) if host == self._host
                             else now - path.stat().st_mtime > STALE_CLAIM_S)
                except (ValueError, OSError):
                    continue
                if stale:
                    self.release(path)
                    path = path.with_name(name.split(CLAIMED, 1)[0])
                else:
                    continue
            elif not name.endswith(SUFFIX) or name.startswith("."):
                continue
            with contextlib.suppress(OSError):
                found.append((path.stat().st_mtime, path))
        return [path for _, path in sorted(found)]

    def count(self) -> int:
        """Records in the spool, waiting or being delivered."""
        return sum(1 for p in self.directory.iterdir() if not p.name.startswith(".")
                   and (p.name.endswith(SUFFIX) or CLAIMED in p.name))


class RecordDelivery:
    """Spools and delivers records in background tasks. ``on_outcome(record_id, outcome)`` hears of
    every attempt's end: delivered, retried, failed (the tests await it)."""

    def __init__(self, settings: RecordsSettings, *,
                 on_outcome: Callable[[str, str], None] | None = None) -> None:
        assert settings.spool_directory is not None and settings.signing_secret is not None
        self.settings = settings
        self.spool = Spool(settings.spool_directory)
        self._key = webhook_key(settings.signing_secret.get_secret_value())
        self._on_outcome = on_outcome
        self._tasks: set[asyncio.Task[None]] = set()
        self._posting: set[asyncio.Task[None]] = set()  # tasks with a POST (or a spool write) in flight
        self._closing = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None

    # --- the shell's interface ----------------------------------------------------------------

    def start(self) -> None:
        """Deliver what the spool holds (left by an earlier run, or by a worker that is gone)."""
        self._spawn(self._resume(), "records-resume")

    def submit(self, record_id: str, webhook: str, body: bytes) -> None:
        """A call's record: spool it, then deliver it (returns at once)."""
        if self._closing.is_set():  # shutting down: spooled now, delivered at the next start-up
            try:
                self.spool.write(record_id, webhook, body)
                log.info("a call record is spooled for the next start-up", record_id=record_id)
            except OSError as exc:
                log.error("a call record could not be spooled at shutdown: it is lost", record_id=record_id,
                          error=str(exc))
            return
        self._spawn(self._submit(record_id, webhook, body), f"record-{record_id}")

    async def close(self) -> None:
        """Stop: deliveries in flight get ``drain_timeout_s`` to finish; waiting ones stay in the spool."""
        self._closing.set()
        if self._posting and self.settings.drain_timeout_s > 0:
            await asyncio.wait(set(self._posting), timeout=self.settings.drain_timeout_s)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()

    async def idle(self) -> None:
        """Return once no delivery is running (each delivered, or given up on)."""
        while self._tasks:
            # (asyncio.wait always yields to the loop, so the done tasks' callbacks take them out of
            # the set; a gather of tasks all done already may return without yielding, and spin)
            await asyncio.wait(set(self._tasks))

    # --- inside --------------------------------------------------------------------------------

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _io(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def _gauge(self) -> None:
        with contextlib.suppress(OSError):
            metrics.RECORDS_SPOOLED.set(await self._io(self.spool.count))

    async def _submit(self, record_id: str, webhook: str, body: bytes) -> None:
        current = asyncio.current_task()
        assert current is not None
        self._posting.add(current)
        try:
            path = await self._io(self.spool.write, record_id, webhook, body)
        except OSError as exc:
            log.error("a call record could not be written to the spool; delivering it from memory",
                      record_id=record_id, error=str(exc))
            delivered = await self._attempts(record_id, webhook, body)
            self._outcome(record_id, "delivered" if delivered else "failed")
            return
        finally:
            self._posting.discard(current)
        await self._deliver(path)

    async def _resume(self) -> None:
        try:
            waiting = await self._io(self.spool.waiting)
        except OSError as exc:
            log.error("the records spool cannot be read", directory=str(self.spool.directory), error=str(exc))
            return
        if waiting:
            log.info("delivering the records left in the spool", records=len(waiting))
        queue = iter(waiting)  # shared by a few tasks, each delivering the next record when it is done

        async def deliver_in_turn() -> None:
            for path in queue:
                await self._deliver(path)

        for n in range(min(RESUME_DELIVERIES, len(waiting))):
            self._spawn(deliver_in_turn(), f"records-resume-{n}")
        await self._gauge()

    def _unclaim(self, claiming: asyncio.Future[Path | None]) -> None:
        if not claiming.cancelled() and claiming.exception() is None and (claimed := claiming.result()) is not None:
            self.spool.release(claimed)

    async def _deliver(self, path: Path) -> None:
        claiming = asyncio.get_running_loop().run_in_executor(None, self.spool.claim, path)
        try:
            claimed = await asyncio.shield(claiming)
        except asyncio.CancelledError:  # (shutting down) the rename may still happen: then give it back
            claiming.add_done_callback(self._unclaim)
            raise
        if claimed is None:
            return  # another worker delivers it
        delivered = False
        try:
            try:
                envelope = await self._io(self.spool.read, claimed)
            except (OSError, ValueError) as exc:
                log.error("a spooled record cannot be read; left in the spool", file=claimed.name, error=str(exc))
                return
            delivered = await self._attempts(envelope["id"], envelope["webhook"], envelope["body"].encode(),
                                             claimed)
        finally:
            # (a file removed or renamed: quick enough to do here, and done even when cancelled)
            if delivered:
                self.spool.done(claimed)
            else:  # given up for now, or shutting down: it waits in the spool
                self.spool.release(claimed)
        if delivered or not self._closing.is_set():
            self._outcome(envelope["id"], "delivered" if delivered else "failed")
        await self._gauge()

    async def _attempts(self, record_id: str, webhook: str, body: bytes, claimed: Path | None = None) -> bool:
        """POST until 2xx or ``max_attempts``; True once delivered (False: given up, or shutting down).
        The ``claimed`` file is renewed before each attempt, so that no worker takes it for stale."""
        settings = self.settings
        current = asyncio.current_task()
        assert current is not None
        for attempt in range(1, settings.max_attempts + 1):
            if self._closing.is_set():
                return False
            if claimed is not None and attempt > 1:
                await self._io(self.spool.renew, claimed)
            self._posting.add(current)
            try:
                why = await self._post(webhook, record_id, body)
            finally:
                self._posting.discard(current)
            if why is None:
                log.info("call record delivered", record_id=record_id, attempts=attempt)
                return True
            if attempt == settings.max_attempts:
                log.error("call record not delivered; it stays in the spool", record_id=record_id,
                          attempts=attempt, reason=why)
                return False
            delay = backoff_s(attempt, settings.initial_backoff_s, settings.max_backoff_s)
            log.warning("call record delivery failed; retrying", record_id=record_id, attempt=attempt,
                        reason=why, retry_in_s=delay)
            self._outcome(record_id, "retried")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay)  # a shutdown does not wait out the backoff
        return False

    def _outcome(self, record_id: str, outcome: str) -> None:
        metrics.RECORDS.inc(outcome)
        if self._on_outcome is not None:
            self._on_outcome(record_id, outcome)

    async def _post(self, webhook: str, record_id: str, body: bytes) -> str | None:
        """One attempt: None when the webhook took the record, else why not."""
        if self._http is None:
            self._http = aiohttp.ClientSession()
        headers = signature_headers(self._key, record_id, body, time.time())
        try:
            async with self._http.post(webhook, data=body, headers=headers, allow_redirects=False,
                                       timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s)) as response:
                await response.read()
                return None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return type(exc).__name__

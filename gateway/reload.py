"""Configuration reloads: ops change config.yaml and the running gateway takes it, without a restart.

Every worker reloads its configuration on ``SIGHUP`` (``gateway serve --workers N`` passes it on to
each worker) and when the file changes: the file is looked at every ``interval_s`` (2 s), following
symbolic links, so that the way Kubernetes updates a mounted ConfigMap (a new directory, then one
symbolic link swapped to it) is seen like an edit in place.

A new configuration is validated exactly as ``gateway check-config`` validates it. A valid one is
taken at once: calls that start afterwards use it, calls in progress keep the profile they started
with (a :class:`~gateway.call.Call` holds its profile). An invalid one changes nothing: every problem
is logged with its file, line and key path. Settings the gateway reads only when it starts (the
Voice Live connection and budgets, recording, post-call record delivery, the signing key, outbound
limits, and the keys a carrier declares in its ``restart_keys``) keep their running values; a change
of one is logged as needing a restart, never silently ignored. The listen address and the number of
workers are command-line options: a restart changes them. Values read from the environment
(``${VAR}``) are read again at each reload.

``/metrics`` shows ``gateway_config_reloads_total{result}`` (ok, invalid, unchanged) and
``gateway_config_info{hash}`` (1 for the hash of the file each worker runs with).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway import metrics
from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.config.diff import config_diff, format_diff, restart_paths
from gateway.log import get_logger, register_secret
from gateway.workers import worker_count

__all__ = ["WATCH_INTERVAL_S", "ConfigReloader", "keep_running", "restart_refusal"]

log = get_logger("gateway.reload")

WATCH_INTERVAL_S = 2.0  # how often each worker looks at the file


def _get(model: Any, path: str) -> Any:
    for part in path.split("."):
        model = getattr(model, part)
    return model


def _with(model: Any, parts: list[str], value: Any) -> Any:
    """``model`` with the value at ``parts`` replaced (pydantic models are copied, not changed)."""
    head = parts[0]
    if len(parts) == 1:
        return model.model_copy(update={head: value})
    return model.model_copy(update={head: _with(getattr(model, head), parts[1:], value)})


def changed_restart_keys(new: GatewayConfig, running: GatewayConfig, keys: tuple[str, ...]) -> list[str]:
    """The keys that need a restart whose value differs between the two configurations."""
    return [key for key in keys if _get(new, key) != _get(running, key)]


def keep_running(new: GatewayConfig, running: GatewayConfig, keys: tuple[str, ...]) -> GatewayConfig:
    """``new``, with the running values of ``keys`` (they take effect at the next start)."""
    merged = new
    for key in keys:
        if _get(merged, key) != _get(running, key):
            merged = _with(merged, key.split("."), _get(running, key))
    return merged


def restart_refusal(config: GatewayConfig) -> str | None:
    """Why ``gateway serve`` would not start with ``config`` in this process (None: it would): a
    reload to such a configuration is refused as an invalid one is."""
    refusal = config.simulator_refusal()
    if refusal is not None:
        return refusal
    if worker_count() > 1 and config.gateway.api_token is not None:
        return ("the outbound-call API (gateway.api_token) is on, and it needs one worker per replica: "
                "this gateway runs several")
    return None


def file_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


class ConfigReloader:
    """Reloads the configuration of one worker from ``path`` into ``apply`` (the running gateway's
    context); ``running()`` is the configuration it runs now."""

    def __init__(self, path: str | Path, running: Callable[[], GatewayConfig],
                 apply: Callable[[GatewayConfig], None], *, interval_s: float = WATCH_INTERVAL_S) -> None:
        self.path = Path(path)
        self.running = running
        self.apply = apply
        self.interval_s = interval_s
        self._signature = self._stat()
        self.hash = self._read_hash()
        self._lock = asyncio.Lock()
        self._wanted: asyncio.Event = asyncio.Event()
        self.reloads = 0  # reloads finished
        self.last_result: str | None = None
        self._finished = asyncio.Condition()
        metrics.CONFIG_INFO.set(1, self.hash or "unreadable")

    def _stat(self) -> tuple[int, int, int, int] | None:
        """What tells that the file changed: the file the path leads to now (through every symbolic
        link), its size and its modification time."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns

    def _read_hash(self) -> str | None:
        try:
            return file_hash(self.path.read_bytes())
        except OSError:
            return None

    def request(self, trigger: str = "SIGHUP") -> None:
        """Ask for a reload (a signal handler may call it): it runs soon, on the event loop."""
        log.info("configuration reload asked for", trigger=trigger, path=str(self.path))
        self._wanted.set()

    async def run(self) -> None:
        """Reload when asked, and when the file changes; until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._wanted.wait()
            if self._wanted.is_set():
                self._wanted.clear()
                await self.reload("signal")
                continue
            signature = self._stat()
            if signature is not None and signature != self._signature:
                await self.reload("file changed")

    async def reload(self, trigger: str) -> str:
        """Read, check and (when valid) take the configuration; returns ``ok``, ``invalid`` or ``unchanged``."""
        async with self._lock:
            result = await self._reload(trigger)
            metrics.CONFIG_RELOADS.inc(result)
        async with self._finished:
            self.reloads += 1
            self.last_result = result
            self._finished.notify_all()
        return result

    async def finished(self, count: int) -> str | None:
        """Return once ``count`` reloads have finished in all; the last one's result."""
        async with self._finished:
            await self._finished.wait_for(lambda: self.reloads >= count)
            return self.last_result

    async def _reload(self, trigger: str) -> str:
        self._signature = self._stat()
        loop = asyncio.get_running_loop()
        try:
            data = await loop.run_in_executor(None, self.path.read_bytes)
        except OSError as exc:
            log.error("configuration reload failed: the file cannot be read; the running configuration stays",
                      path=str(self.path), error=exc.strerror or str(exc), trigger=trigger)
            return "invalid"
        try:
            new = await loop.run_in_executor(None, load_config, self.path)
        except ConfigError as exc:
            log.error("configuration reload failed: the running configuration stays", path=str(self.path),
                      problems=len(exc.problems), trigger=trigger)
            for problem in exc.problems:
                log.error("configuration problem", problem=problem)
            return "invalid"
        running = self.running()
        keys = restart_paths()
        waiting = changed_restart_keys(new, running, keys)
        merged = keep_running(new, running, keys)
        refusal = restart_refusal(merged)
        if refusal is not None:
            log.error("configuration reload refused: the running configuration stays", path=str(self.path),
                      reason=refusal, trigger=trigger)
            return "invalid"
        digest = file_hash(data)
        if digest != self.hash:
            metrics.CONFIG_INFO.set(0, self.hash or "unreadable")
            metrics.CONFIG_INFO.set(1, digest)
            self.hash = digest
        if waiting:
            log.warning("configuration change needs a restart to take effect: the running values stay until then",
                        keys=waiting, path=str(self.path))
        if merged == running:
            log.info("configuration reloaded: nothing changed that a running gateway takes", path=str(self.path),
                     trigger=trigger, hash=digest)
            return "unchanged"
        for secret in merged.secrets():
            register_secret(secret)
        self.apply(merged)
        log.info("configuration reloaded: calls that start now use it; calls in progress keep their profile",
                 path=str(self.path), trigger=trigger, hash=digest, changes=_changes(running, merged))
        return "ok"


def _changes(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """What changed, as check-config --diff says it (secrets never shown)."""
    return format_diff(config_diff(old, new)).splitlines()

"""A real ``gateway serve`` process (one or several workers) on a loopback port, with its JSON log
lines watched as they come: the helper the command line, drain, worker and metrics tests share."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
TWILIO_TOKEN = "workers-test-twilio-token-42"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def use_separate_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every aiohttp session opens a connection per request: Twilio posts the webhook and opens the
    media stream on connections of their own, which the kernel may give to different workers (the
    softphone's session would carry both on one kept-alive connection, so to one worker)."""
    session = aiohttp.ClientSession

    def without_keep_alive(*args: Any, **kwargs: Any) -> aiohttp.ClientSession:
        kwargs.setdefault("connector", aiohttp.TCPConnector(force_close=True))
        return session(*args, **kwargs)

    monkeypatch.setattr(aiohttp, "ClientSession", without_keep_alive)


def clean_env(**extra: str) -> dict[str, str]:
    """Our environment without the gateway's own variables, logging JSON lines, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AZURE_", "GATEWAY_", "TWILIO_", "ACS_", "PROMETHEUS_"))}
    env.update(GATEWAY_LOG_FORMAT="json")
    env.update(extra)
    return env


def gateway_env(**extra: str) -> dict[str, str]:
    """Our environment without the gateway's own variables, plus ``extra``: what the shipped
    config.yaml reads, as a deployment would set it (a Twilio token, the simulator by name)."""
    return clean_env(**{"TWILIO_AUTH_TOKEN": TWILIO_TOKEN, "AZURE_VOICELIVE_ENDPOINT": "simulator", **extra})


_DECODER = json.JSONDecoder()


def records(line: str) -> list[dict[str, Any]]:
    """The JSON log records in one line of output. Workers share the supervisor's stdout and write a
    record and its newline in two writes, so two records may share a line ({...}{...}), the
    newlines following; any text that is not JSON is kept as a record's event."""
    out: list[dict[str, Any]] = []
    text, at = line.strip(), 0
    while at < len(text):
        try:
            record, end = _DECODER.raw_decode(text, at)
        except ValueError:
            return [*out, {"event": text[at:]}]
        out.append(record if isinstance(record, dict) else {"event": str(record)})
        at = end
    return out


class Served:
    """A gateway process: its port, every log line so far, and a way to await a line."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port
        self.lines: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.ended = False  # the output closed: the process has exited
        self._changed = asyncio.Condition()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            async with self._changed:
                self.raw.append(raw)
                self.lines += records(raw.decode(errors="replace"))
                self._changed.notify_all()
        async with self._changed:
            self.ended = True
            self._changed.notify_all()

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == name]

    async def wait_for(self, ready: Callable[[], bool], within_s: float = 30) -> None:
        """Until ``ready()`` holds, checked at each new log line (failing after ``within_s``)."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(ready), within_s)

    def listening_pids(self) -> list[int]:
        return [line["pid"] for line in self.events("gateway listening")]

    async def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """One GET /metrics (a new connection each time: the kernel picks the worker), parsed with
        prometheus-client's own parser: {(sample name, labels): value}."""
        async with aiohttp.ClientSession() as http, http.get(self.base + "/metrics") as response:
            assert response.status == 200
            text = await response.text()
        return {(s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}


@contextlib.asynccontextmanager
async def serve_gateway(env: dict[str, str], *args: str, workers: int = 1) -> AsyncIterator[Served]:
    """``gateway serve`` with ``args``; yields once every worker listens; SIGTERM (then a kill) on exit."""
    port = free_port()
    extra = ["--workers", str(workers)] if workers > 1 else []
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(port), *extra, *args,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    served = Served(proc, port)
    reader = asyncio.create_task(served.read())
    try:
        await served.wait_for(lambda: len(served.listening_pids()) >= workers or served.ended, 60)
        assert len(served.listening_pids()) >= workers, served.lines
        yield served
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await reader

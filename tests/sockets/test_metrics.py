"""GET /metrics reports the whole gateway: one process, or every worker of ``gateway serve --workers N``,
whichever of them the kernel hands a scrape to."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.carriers.twilio.phone import place_call
from gateway.softphone import CallError, Hangup, Silence, WaitForBot
from tests.sockets.served import ROOT, TWILIO_TOKEN, Served, gateway_env, serve_gateway

SCRAPES = 8
MAX_CALLS = 3  # per worker: with two workers full, both hold calls
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def _active(samples: Samples, carrier: str) -> float | None:
    return _sample(samples, "gateway_active_calls", carrier=carrier)


def _ended(samples: Samples) -> float:
    """Twilio calls that ended, whatever the outcome, refusals apart."""
    return sum(value for (name, labels), value in samples.items() if name == "gateway_calls_total"
               and ("carrier", "twilio") in labels and not dict(labels)["outcome"].startswith("refused"))


def _refused(samples: Samples) -> float:
    return sum(value for (name, labels), value in samples.items() if name == "gateway_calls_total"
               and dict(labels).get("outcome", "").startswith("refused"))


def _small_config(tmp_path: Path) -> str:
    """The shipped config.yaml with room for MAX_CALLS calls per worker."""
    text = (ROOT / "config.yaml").read_text()
    assert "max_calls: 200" in text
    path = tmp_path / "config.yaml"
    path.write_text(text.replace("max_calls: 200", f"max_calls: {MAX_CALLS}"))
    return str(path)


def _metric_files(directory: Path) -> list[Path] | None:
    """The metric files in ``directory``; None when it does not exist."""
    return sorted(directory.glob("*.db")) if directory.is_dir() else None


class HeldCalls:
    """Calls that talk to the bot until they are hung up (their tasks cancelled: the phone socket closes)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.tasks: list[asyncio.Task[Any]] = []
        self.refused = 0

    async def _try_one(self) -> bool:
        talking = asyncio.Event()
        task = asyncio.create_task(place_call(
            self.base + "/twilio/voice", [WaitForBot(heard_ms=100), Silence(60_000), Hangup()],
            auth_token=TWILIO_TOKEN,
            on_event=lambda _t, kind, _f: talking.set() if kind == "bot_audio_start" else None))
        waiter = asyncio.create_task(talking.wait())
        await asyncio.wait({task, waiter}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if talking.is_set():
            self.tasks.append(task)
            return True
        assert task.done(), "a call neither talked nor was refused within 30 s"
        with pytest.raises(CallError):  # refused by a worker at max_calls: TwiML that apologises, or a 503
            task.result()
        self.refused += 1
        return False

    async def hold(self, count: int, attempts: int = 80) -> None:
        for _ in range(attempts):
            if len(self.tasks) == count:
                return
            await self._try_one()
        assert len(self.tasks) == count, f"only {len(self.tasks)} calls in progress after {attempts} attempts"

    async def hang_up(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.fixture
async def two_workers(tmp_path: Path, separate_connections: None) -> AsyncIterator[Served]:
    async with serve_gateway(gateway_env(), "--config", _small_config(tmp_path), workers=2) as served:
        yield served


async def test_every_scrape_counts_the_calls_of_every_worker(two_workers: Served) -> None:
    served = two_workers
    for _ in range(SCRAPES):  # before any call: 0 in progress for every carrier, whichever worker answers
        samples = await served.scrape()
        assert (_active(samples, "twilio"), _active(samples, "acs")) == (0, 0)
    held = HeldCalls(served.base)
    try:
        await held.hold(2 * MAX_CALLS)  # both workers full: each holds MAX_CALLS of them
        for _ in range(SCRAPES):
            samples = await served.scrape()
            assert _active(samples, "twilio") == 2 * MAX_CALLS and _active(samples, "acs") == 0
            assert _refused(samples) == held.refused
    finally:
        await held.hang_up()
    await served.wait_for(lambda: len(served.events("call ended")) == 2 * MAX_CALLS)
    for _ in range(SCRAPES):
        samples = await served.scrape()
        assert _active(samples, "twilio") == 0 and _ended(samples) == 2 * MAX_CALLS
        assert _sample(samples, "gateway_voicelive_connect_seconds_count", carrier="twilio") == 2 * MAX_CALLS
        assert (_sample(samples, "gateway_event_loop_lag_seconds_count") or 0) > 0


async def test_a_worker_that_dies_stops_counting_its_calls_in_progress(two_workers: Served) -> None:
    served = two_workers
    held = HeldCalls(served.base)
    try:
        await held.hold(2 * MAX_CALLS)
        victim = served.listening_pids()[0]
        os.kill(victim, signal.SIGKILL)  # its calls are lost with it; the supervisor starts another
        await served.wait_for(lambda: len(served.listening_pids()) == 3)
        for _ in range(SCRAPES):
            samples = await served.scrape()
            assert _active(samples, "twilio") == MAX_CALLS  # the survivor's calls only
    finally:
        await held.hang_up()


async def test_the_supervisor_removes_its_metrics_directory(tmp_path: Path) -> None:
    async with serve_gateway(gateway_env(), workers=2) as served:
        (started,) = served.events("workers started")
        directory = Path(started["metrics_dir"])
        assert _metric_files(directory)  # the workers write there
        served.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(served.proc.wait(), 30)
    assert _metric_files(directory) is None


async def test_one_process_serves_its_own_metrics_from_the_first_scrape() -> None:
    async with serve_gateway(gateway_env()) as served:
        first = await served.scrape()
        assert (_active(first, "twilio"), _active(first, "acs")) == (0, 0)
        report = await place_call(served.base + "/twilio/voice", [WaitForBot(heard_ms=100), Hangup()],
                                  auth_token=TWILIO_TOKEN)
        assert report.closed_by == "caller"
        await served.wait_for(lambda: len(served.events("call ended")) == 1)
        samples = await served.scrape()
        assert _active(samples, "twilio") == 0 and _ended(samples) == 1

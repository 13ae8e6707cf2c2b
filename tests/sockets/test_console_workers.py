"""The console of ``gateway serve --workers 2`` (real processes sharing a port on 127.0.0.1, real
Twilio-style calls): whichever worker answers lists the calls of both, each with its worker's pid,
and ends a call of the other worker (202; that worker hangs it up within a second)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.audio import ASSETS, load_ulaw_8k
from gateway.carriers.twilio.phone import new_sid, place_call
from gateway.console.auth import COOKIE
from gateway.console.routes import END_REASON
from gateway.softphone import CallReport, Hangup, Say, Silence, WaitForBot
from gateway.workers import WORKERS_DIR_ENV
from tests.sockets.served import TWILIO_TOKEN, Served, gateway_env, serve_gateway

TOKEN = "console-workers-token-8d2c4a"
HOURS = load_ulaw_8k(ASSETS / "caller_hours.wav")
MAX_CALLS = 10  # calls placed at most until two workers have some (all on one: 2 in 2**10)
WAIT_S = 20  # a bound on awaiting what the test causes (never waited out when all is well)
SHARED = "calls shared with the other workers' console"  # each worker's debug line when its shared calls change


def _worker_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def _shared_dir(pids: list[int]) -> Path:
    """The directory the supervisor gave its workers to share their calls in (one for all)."""
    (directory,) = {_worker_environ(pid)[WORKERS_DIR_ENV] for pid in pids}
    assert Path(directory).is_dir()
    return Path(directory)


def _gone(path: Path) -> bool:
    return not path.exists()


def _shared(served: Served) -> dict[int, list[str]]:
    """Each worker's calls as it last shared them with the others (its pid: call ids)."""
    out: dict[int, list[str]] = {}
    for line in served.events(SHARED):
        out[line["pid"]] = line["calls"]
    return out


def _owner(served: Served, call_id: str) -> int | None:
    return next((pid for pid, ids in _shared(served).items() if call_id in ids), None)


async def _get(http: aiohttp.ClientSession, served: Served, cookie: str) -> dict[str, Any]:
    async with http.get(served.base + "/console/api/calls", headers={"Cookie": f"{COOKIE}={cookie}"}) as reply:
        assert reply.status == 200, await reply.text()
        body: dict[str, Any] = await reply.json()
        return body


@pytest.mark.usefixtures("separate_connections")
async def test_any_worker_lists_every_worker_s_calls_and_ends_a_call_of_another_worker() -> None:
    env = gateway_env(GATEWAY_CONSOLE_TOKEN=TOKEN, GATEWAY_LOG_LEVEL="debug")
    calls: dict[str, asyncio.Task[CallReport]] = {}
    async with serve_gateway(env, workers=2) as served:
        pids = served.listening_pids()
        shared_dir = _shared_dir(pids)
        # one connection, kept alive: every console request of this test reaches the same worker (the
        # calls' webhooks and media sockets each get a connection of their own, spread by the kernel)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http:
            try:
                async with http.post(served.base + "/console/login", data={"token": TOKEN},
                                     allow_redirects=False) as reply:
                    assert reply.status == 303, await reply.text()
                    cookie = reply.cookies[COOKIE].value

                where: dict[str, int] = {}
                while len(set(where.values())) < 2:
                    assert len(calls) < MAX_CALLS, f"{MAX_CALLS} calls, all on one worker: {where}"
                    sid = new_sid("CA")
                    calls[sid] = asyncio.create_task(place_call(
                        served.base + "/twilio/voice",
                        [Say(HOURS, "question"), WaitForBot(heard_ms=200), Silence(120_000), Hangup()],
                        auth_token=TWILIO_TOKEN, call_sid=sid, from_="+14155550123"))
                    # its worker has shared it with the others (at most a second after it started)
                    await served.wait_for(lambda sid=sid: _owner(served, sid) is not None or calls[sid].done(), WAIT_S)
                    assert not calls[sid].done(), calls[sid].result()
                    listed = await _get(http, served, cookie)
                    where = {call["call_id"]: call["worker"] for call in listed["calls"]}
                    assert set(where) == set(calls)  # one request: every call, whichever worker has it
                    assert where == {call_id: _owner(served, call_id) for call_id in calls}

                answering = listed["worker"]["pid"]
                assert listed["worker"] == {"pid": answering, "workers": 2, "all": True}
                assert set(where.values()) == set(pids) and answering in pids
                assert "4155550123" not in str(listed)
                remote = next(call_id for call_id, pid in where.items() if pid != answering)
                other = where[remote]

                async with http.post(served.base + "/console/api/calls/no-such-call/end",
                                     headers={"Cookie": f"{COOKIE}={cookie}"}) as reply:
                    assert reply.status == 404
                async with http.post(served.base + f"/console/api/calls/{remote}/end",
                                     headers={"Cookie": f"{COOKIE}={cookie}"}) as reply:
                    assert reply.status == 202, await reply.text()
                    assert await reply.json() == {"call_id": remote, "ending": True, "worker": other,
                                                  "answered_by": answering}
                # the other worker took the request and hung up: the softphone's call ends, by the gateway
                report = await asyncio.wait_for(calls.pop(remote), WAIT_S)
                assert report.closed_by == "gateway" and report.close_code == 1000
                assert [(line["call_id"], line["pid"], line["requested_by"])
                        for line in served.events("call ended from the console")] == [(remote, other, answering)]
                await served.wait_for(lambda: any(line.get("call_id") == remote and line.get("end_reason") == END_REASON
                                                  for line in served.events("call ended")), WAIT_S)
                await served.wait_for(lambda: remote not in _shared(served)[other], WAIT_S)
                after = await _get(http, served, cookie)
                assert after["worker"]["pid"] == answering
                assert {call["call_id"]: call["worker"] for call in after["calls"]} == {
                    call_id: pid for call_id, pid in where.items() if call_id != remote}
            finally:
                for task in calls.values():
                    task.cancel()
                await asyncio.gather(*calls.values(), return_exceptions=True)
    assert not served.events("a worker's call list for the console is unreadable: left out")
    assert _gone(shared_dir)  # (the supervisor removed it with the metrics directory)

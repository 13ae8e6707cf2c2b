"""``gateway serve --workers N``: real processes sharing a port on 127.0.0.1, real Twilio-style calls."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.audio import ASSETS, load_ulaw_8k
from gateway.carriers.twilio.phone import place_call
from gateway.softphone import CallReport, Hangup, Say, WaitForBot
from gateway.workers import SIGNING_KEY_ENV
from tests.sockets.served import TWILIO_TOKEN, gateway_env, serve_gateway

HOURS = load_ulaw_8k(ASSETS / "caller_hours.wav")
CALLS = 12


def _worker_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def _answered(report: CallReport) -> bool:
    return report.closed_by == "caller" and report.played_bytes > 0 and not report.events_of("wait_timeout")


@pytest.mark.usefixtures("separate_connections")
async def test_every_call_succeeds_whichever_worker_answers_the_webhook_and_the_media_socket() -> None:
    """The shipped config.yaml as deployed without GATEWAY_SIGNING_KEY: a Twilio token, no insecure
    mode. The webhook and the media socket of a call are two connections the kernel spreads over
    the workers independently, so the workers must agree on the call token key."""
    async with serve_gateway(gateway_env(), workers=2) as served:
        reports = await asyncio.gather(*(
            place_call(served.base + "/twilio/voice", [Say(HOURS, "question"), WaitForBot(heard_ms=200), Hangup()],
                       auth_token=TWILIO_TOKEN) for _ in range(CALLS)))
        failed = [(r.closed_by, r.close_code, r.played_bytes) for r in reports if not _answered(r)]
        assert failed == [], f"{len(failed)} of {CALLS} calls failed"
        pids = served.listening_pids()
        keys = {_worker_environ(pid).get(SIGNING_KEY_ENV) for pid in pids}
        assert len(pids) == 2 and len(keys) == 1 and None not in keys  # one key, made by the supervisor
        await served.wait_for(lambda: len(served.events("call ended")) == CALLS)
    assert not served.events("carrier request refused")
    (key,) = keys
    assert key is not None and key.encode() not in b"".join(served.raw)  # never logged

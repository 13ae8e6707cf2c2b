"""Post-call records over real sockets on 127.0.0.1: a Twilio-like phone calls the gateway (Voice Live
simulated), and the call's record arrives at a local webhook, signed; a webhook outage, a restart and
two deliveries sharing a spool lose nothing and deliver each record once."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway import metrics
from gateway.app import create_app
from gateway.audio import ASSETS, load_ulaw_8k
from gateway.bridge import CONTEXT
from gateway.carriers.twilio.phone import place_call
from gateway.config import parse_config
from gateway.simulator import RunningSimulator, SimulatorSettings, start_simulator
from gateway.softphone import Hangup, Say, Silence, WaitForBot
from gateway.webhooks import RESUME_DELIVERIES, RecordDelivery
from tests.sockets.loopback import listen, refusing_port

TWILIO_TOKEN = "records-test-twilio-auth-token-77"
SECRET = "whsec_" + base64.b64encode(hashlib.sha256(b"records test").digest()).decode()
CONFIG = """
voicelive:
  endpoint: ${EP}
twilio:
  auth_token: ${TWILIO_TOKEN}
records:
  webhook: ${HOOK}
  signing_secret: ${RECORDS_SECRET}
  spool_directory: ${SPOOL}
  initial_backoff_s: 0.01
  max_backoff_s: 0.02
  max_attempts: ${ATTEMPTS:-5}
  drain_timeout_s: ${DRAIN:-2}
profiles:
  main:
    model: gpt-realtime
    instructions: Be brief.
    voice: alloy
    turn_detection: {type: server_vad, silence_duration_ms: 400}
routes:
  default: main
"""
HOURS = load_ulaw_8k(ASSETS / "caller_hours.wav")
INTERRUPT = load_ulaw_8k(ASSETS / "caller_interrupt.wav")
WAIT_S = 15  # a bound on awaiting an event that the test causes (never waited out when all is well)


@dataclass
class Hook:
    """A local webhook: answers with ``statuses`` in turn (then 200) and keeps every request."""

    statuses: list[int] = field(default_factory=list)
    posts: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = self.statuses.pop(0) if self.statuses else 200
        self.posts.append((dict(request.headers), body, status))
        return web.Response(status=status)

    async def serve(self, port: int = 0) -> tuple[web.AppRunner, str]:
        app = web.Application()
        app.router.add_post("/calls", self.handle)
        runner = web.AppRunner(app)
        if port == 0:
            return runner, await listen(runner) + "/calls"
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner, f"http://127.0.0.1:{port}/calls"

    def delivered_ids(self) -> list[str]:
        return [headers["webhook-id"] for headers, _, status in self.posts if 200 <= status < 300]


class Outcomes:
    """What the gateway reports of each record's delivery attempts, awaited by the tests."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self._changed = asyncio.Event()

    def __call__(self, record_id: str, outcome: str) -> None:
        self.seen.append((record_id, outcome))
        self._changed.set()

    async def wait(self, outcome: str, count: int = 1) -> list[str]:
        async def enough() -> list[str]:
            while len(ids := [r for r, o in self.seen if o == outcome]) < count:
                self._changed.clear()
                await self._changed.wait()
            return ids

        return await asyncio.wait_for(enough(), WAIT_S)


def verify(headers: dict[str, str], body: bytes) -> None:
    """Check a request's Standard Webhooks signature, computed here from the spec, not by the gateway."""
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    message_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    mac = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(mac).decode()
    assert abs(int(timestamp) - time.time()) < 60
    assert headers["Content-Type"] == "application/json"


@dataclass
class Gateway:
    sim: RunningSimulator
    app: web.Application
    runner: web.AppRunner
    base: str
    outcomes: Outcomes

    async def close(self) -> None:
        await self.runner.cleanup()
        await self.sim.close()


async def start_gateway(hook_url: str, spool: Path, attempts: int = 5) -> Gateway:
    sim = await start_simulator(SimulatorSettings(audio_speed=4.0))
    config = parse_config(CONFIG, env={"EP": sim.endpoint, "TWILIO_TOKEN": TWILIO_TOKEN, "HOOK": hook_url,
                                       "RECORDS_SECRET": SECRET, "SPOOL": str(spool), "ATTEMPTS": str(attempts)})
    outcomes = Outcomes()
    app = create_app(config, record_outcomes=outcomes)
    runner = web.AppRunner(app)
    base = await listen(runner)
    return Gateway(sim, app, runner, base, outcomes)


async def dial(gateway: Gateway, steps: list) -> Any:
    return await place_call(gateway.base + "/twilio/voice", steps, auth_token=TWILIO_TOKEN,
                            to="+15555550100", from_="+14155550199")


def spooled(spool: Path) -> list[str]:
    return sorted(p.name for p in spool.iterdir() if not p.name.startswith("."))


@pytest.fixture
async def hook() -> AsyncIterator[tuple[Hook, str]]:
    h = Hook()
    runner, url = await h.serve()
    try:
        yield h, url
    finally:
        await runner.cleanup()


async def test_a_whole_call_s_record_arrives_signed_masked_and_without_secrets(hook: tuple[Hook, str],
                                                                              tmp_path: Path) -> None:
    webhook, url = hook
    tokens_before = metrics.TOKENS.value("output_audio")
    seconds_before = metrics.CALL_SECONDS.value("twilio", "inbound")
    delivered_before = metrics.RECORDS.value("delivered")
    gateway = await start_gateway(url, tmp_path / "spool")
    try:
        report = await dial(gateway, [Say(HOURS, "question"), WaitForBot(heard_ms=1200),
                                      Say(INTERRUPT, "interruption"), Hangup()])
        assert report.clears == 1
        (record_id,) = await gateway.outcomes.wait("delivered")
    finally:
        await gateway.close()
    ((headers, body, status),) = webhook.posts
    assert status == 200 and headers["webhook-id"] == record_id
    verify(headers, body)
    record = json.loads(body)
    assert record["id"] == record_id and record["type"] == "call.record"
    assert record["carrier"] == "twilio" and record["direction"] == "inbound" and record["profile"] == "main"
    assert record["from"] == "+*******0199" and record["to"] == "+*******0100"
    assert record["outcome"] == "completed" and record["end_reason"] == "caller_hung_up"
    assert record["started_at"] < record["ended_at"] and record["duration_ms"] > 0
    # both sides as heard: the caller's turns transcribed, the bot's first answer cut where the caller spoke
    roles = [turn["role"] for turn in record["transcript"]]
    assert "caller" in roles and "bot" in roles
    (barge,) = record["barge_ins"]
    assert barge["heard_ms"] is not None and barge["heard_ms"] < barge["received_ms"]
    (cut,) = [turn for turn in record["transcript"] if turn.get("interrupted")]
    assert cut["role"] == "bot" and cut["heard_ms"] == barge["heard_ms"]
    assert record["usage"]["output_token_details"]["audio_tokens"] > 0 and record["usage"]["responses"] >= 1
    (session,) = record["voicelive"]["sessions"]
    assert session["id"] and session["ready_ms"] is not None
    # no secret anywhere: not the carrier's token, not the signing secret, not the call's token
    text = body.decode()
    assert TWILIO_TOKEN not in text and SECRET not in text and SECRET.removeprefix("whsec_") not in text
    assert "4155550199" not in text and "5555550100" not in text
    # delivered: nothing waits in the spool; the metrics counted the record, its tokens and its seconds
    assert spooled(tmp_path / "spool") == []
    assert metrics.RECORDS.value("delivered") == delivered_before + 1
    assert metrics.TOKENS.value("output_audio") >= tokens_before + record["usage"]["output_token_details"][
        "audio_tokens"]
    assert metrics.CALL_SECONDS.value("twilio", "inbound") >= seconds_before + record["duration_ms"] / 1000 - 0.01


async def test_a_webhook_outage_is_retried_and_the_record_delivered_once(hook: tuple[Hook, str],
                                                                         tmp_path: Path) -> None:
    webhook, url = hook
    webhook.statuses = [503, 503]
    gateway = await start_gateway(url, tmp_path / "spool")
    try:
        await dial(gateway, [Silence(300), Hangup()])
        (record_id,) = await gateway.outcomes.wait("delivered")
    finally:
        await gateway.close()
    assert [o for r, o in gateway.outcomes.seen if r == record_id] == ["retried", "retried", "delivered"]
    assert [status for _, _, status in webhook.posts] == [503, 503, 200]
    assert {headers["webhook-id"] for headers, _, _ in webhook.posts} == {record_id}
    assert len({body for _, body, _ in webhook.posts}) == 1
    for headers, body, _ in webhook.posts:
        verify(headers, body)
    assert webhook.delivered_ids() == [record_id]
    assert spooled(tmp_path / "spool") == []


async def test_a_record_the_webhook_never_took_waits_in_the_spool_and_a_restart_delivers_it(
        tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    closed, port = refusing_port()  # the webhook is down: nothing listens on its port
    url = f"http://127.0.0.1:{port}/calls"
    failed_before = metrics.RECORDS.value("failed")
    gateway = await start_gateway(url, spool, attempts=2)
    try:
        await dial(gateway, [Silence(300), Hangup()])
        (record_id,) = await gateway.outcomes.wait("failed")
        await gateway.app[CONTEXT].records.idle()
        assert spooled(spool) == [f"{record_id}.json"]
        assert metrics.RECORDS.value("failed") == failed_before + 1
        assert metrics.RECORDS_SPOOLED.value() == 1
    finally:
        await gateway.close()
    closed.close()
    # the webhook is back, and a new gateway starts on the same spool: the record goes out once
    webhook = Hook()
    hook_runner, _ = await webhook.serve(port)
    restarted = await start_gateway(url, spool)
    try:
        assert await restarted.outcomes.wait("delivered") == [record_id]
        await restarted.app[CONTEXT].records.idle()
    finally:
        await restarted.close()
        await hook_runner.cleanup()
    assert webhook.delivered_ids() == [record_id] and len(webhook.posts) == 1
    verify(*webhook.posts[0][:2])
    assert json.loads(webhook.posts[0][1])["id"] == record_id
    assert spooled(spool) == []
    assert metrics.RECORDS_SPOOLED.value() == 0


async def test_two_workers_on_one_spool_deliver_each_record_once(hook: tuple[Hook, str], tmp_path: Path) -> None:
    webhook, url = hook
    config = parse_config(CONFIG, env={"EP": "ws://127.0.0.1:9", "TWILIO_TOKEN": TWILIO_TOKEN, "HOOK": url,
                                       "RECORDS_SECRET": SECRET, "SPOOL": str(tmp_path / "spool")})
    first, second = Outcomes(), Outcomes()
    workers = [RecordDelivery(config.records, on_outcome=first), RecordDelivery(config.records, on_outcome=second)]
    ids = [f"rec_{n:02d}" for n in range(12)]
    for record_id in ids:  # left by an earlier run
        workers[0].spool.write(record_id, url, json.dumps({"id": record_id}).encode())
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            await asyncio.wait_for(worker.idle(), WAIT_S)
    finally:
        for worker in workers:
            await worker.close()
    assert sorted(webhook.delivered_ids()) == ids and len(webhook.posts) == len(ids)
    assert sorted(r for r, o in first.seen + second.seen if o == "delivered") == ids
    assert spooled(tmp_path / "spool") == []


async def test_a_record_submitted_is_spooled_before_it_is_posted(tmp_path: Path) -> None:
    """The record is on disk while its first attempt is in flight (a crash then loses nothing)."""
    arrived = asyncio.Event()
    release = asyncio.Event()
    seen_on_disk: list[list[str]] = []
    spool = tmp_path / "spool"

    async def slow(request: web.Request) -> web.Response:
        seen_on_disk.append(spooled(spool))
        arrived.set()
        await release.wait()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/calls", slow)
    runner = web.AppRunner(app)
    url = await listen(runner) + "/calls"
    config = parse_config(CONFIG, env={"EP": "ws://127.0.0.1:9", "TWILIO_TOKEN": TWILIO_TOKEN, "HOOK": url,
                                       "RECORDS_SECRET": SECRET, "SPOOL": str(spool)})
    outcomes = Outcomes()
    delivery = RecordDelivery(config.records, on_outcome=outcomes)
    try:
        delivery.submit("rec_a", url, b'{"id":"rec_a"}')
        await asyncio.wait_for(arrived.wait(), WAIT_S)
        (names,) = seen_on_disk
        assert len(names) == 1 and names[0].startswith("rec_a.json.claimed.")
        release.set()
        assert await outcomes.wait("delivered") == ["rec_a"]
        await delivery.idle()
        assert spooled(spool) == []
    finally:
        release.set()
        await delivery.close()
        await runner.cleanup()


async def test_a_claim_left_by_a_worker_that_is_gone_is_delivered_and_a_live_one_is_left_alone(
        hook: tuple[Hook, str], tmp_path: Path) -> None:
    webhook, url = hook
    config = parse_config(CONFIG, env={"EP": "ws://127.0.0.1:9", "TWILIO_TOKEN": TWILIO_TOKEN, "HOOK": url,
                                       "RECORDS_SECRET": SECRET, "SPOOL": str(tmp_path / "spool")})
    outcomes = Outcomes()
    delivery = RecordDelivery(config.records, on_outcome=outcomes)
    spool = delivery.spool
    for record_id in ("rec_dead", "rec_live"):
        spool.write(record_id, url, json.dumps({"id": record_id}).encode())
    live = spool.claim(spool.directory / "rec_live.json")  # being delivered by a worker that is running
    assert live is not None
    # a worker that died, whose pid a new process now has (a restarted container): another start time
    host_pid = live.name.split(".claimed.", 1)[1].rsplit(".", 1)[0]
    (spool.directory / "rec_dead.json").rename(spool.directory / f"rec_dead.json.claimed.{host_pid}.1")
    delivery.start()
    try:
        assert await outcomes.wait("delivered") == ["rec_dead"]
        await asyncio.wait_for(delivery.idle(), WAIT_S)
    finally:
        await delivery.close()
    assert webhook.delivered_ids() == ["rec_dead"]
    assert spooled(spool.directory) == [live.name]


async def test_shutdown_waits_a_bounded_time_for_a_delivery_in_flight_and_keeps_the_rest_spooled(
        tmp_path: Path) -> None:
    arrived = asyncio.Event()
    never = asyncio.Event()
    spool = tmp_path / "spool"

    async def hanging(request: web.Request) -> web.Response:
        arrived.set()
        await never.wait()  # the webhook never answers
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/calls", hanging)
    runner = web.AppRunner(app)
    url = await listen(runner) + "/calls"
    config = parse_config(CONFIG, env={"EP": "ws://127.0.0.1:9", "TWILIO_TOKEN": TWILIO_TOKEN, "HOOK": url,
                                       "RECORDS_SECRET": SECRET, "SPOOL": str(spool), "DRAIN": "0.1"})
    delivery = RecordDelivery(config.records)
    try:
        delivery.submit("rec_slow", url, b'{"id":"rec_slow"}')
        await asyncio.wait_for(arrived.wait(), WAIT_S)
        started = time.monotonic()
        await delivery.close()
        assert time.monotonic() - started < 2  # drain_timeout_s (0.1 s), not the POST's 10 s timeout
        delivery.submit("rec_late", url, b'{"id":"rec_late"}')  # a call that ends during the shutdown
    finally:
        never.set()
        await runner.cleanup()
    assert spooled(spool) == ["rec_late.json", "rec_slow.json"]


async def test_a_spool_directory_that_cannot_be_made_is_said_and_records_still_go_out(
        hook: tuple[Hook, str], tmp_path: Path) -> None:
    """Not a crash at start-up: the error names the directory, and each record is delivered from memory."""
    webhook, url = hook
    (tmp_path / "taken").write_text("a file where the spool's parent should be")
    config = parse_config(CONFIG, env={"EP": "ws://127.0.0.1:9", "TWILIO_TOKEN": TWILIO_TOKEN, "HOOK": url,
                                       "RECORDS_SECRET": SECRET, "SPOOL": str(tmp_path / "taken" / "spool")})
    outcomes = Outcomes()
    delivery = RecordDelivery(config.records, on_outcome=outcomes)
    delivery.start()
    try:
        delivery.submit("rec_a", url, b'{"id":"rec_a"}')
        assert await outcomes.wait("delivered") == ["rec_a"]
        await asyncio.wait_for(delivery.idle(), WAIT_S)
    finally:
        await delivery.close()
    assert webhook.delivered_ids() == ["rec_a"]


async def test_a_shutdown_while_a_record_is_read_from_the_spool_gives_its_claim_back(
        hook: tuple[Hook, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The record waits in the spool for the next start-up, not as a claim no worker releases."""
    _, url = hook
    config = parse_config(CONFIG, env={"EP": "ws://127.0.0.1:9", "TWILIO_TOKEN": TWILIO_TOKEN, "HOOK": url,
                                       "RECORDS_SECRET": SECRET, "SPOOL": str(tmp_path / "spool")})
    delivery = RecordDelivery(config.records)
    delivery.spool.write("rec_a", url, b'{"id":"rec_a"}')
    reading, go_on = threading.Event(), threading.Event()
    read = delivery.spool.read

    def slow_read(claimed: Path) -> dict[str, Any]:  # a slow disk
        reading.set()
        go_on.wait(WAIT_S)
        return read(claimed)

    monkeypatch.setattr(delivery.spool, "read", slow_read)
    delivery.start()
    try:
        assert await asyncio.get_running_loop().run_in_executor(None, reading.wait, WAIT_S)
        await delivery.close()
    finally:
        go_on.set()
    assert spooled(delivery.spool.directory) == ["rec_a.json"]


async def test_a_claim_is_renewed_at_each_attempt_so_no_other_host_takes_it_for_stale(
        tmp_path: Path) -> None:
    """Another host's worker releases a claim older than an hour; a long delivery must not look that old."""
    spool = tmp_path / "spool"
    ages: list[float] = []

    async def failing_once(request: web.Request) -> web.Response:
        await request.read()
        (claim,) = [p for p in spool.iterdir() if ".claimed." in p.name]
        ages.append(time.time() - claim.stat().st_mtime)
        if len(ages) == 1:  # the delivery has been going on for two hours, as it would with long backoffs
            os.utime(claim, (time.time() - 7200, time.time() - 7200))
            return web.Response(status=503)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/calls", failing_once)
    runner = web.AppRunner(app)
    url = await listen(runner) + "/calls"
    config = parse_config(CONFIG, env={"EP": "ws://127.0.0.1:9", "TWILIO_TOKEN": TWILIO_TOKEN, "HOOK": url,
                                       "RECORDS_SECRET": SECRET, "SPOOL": str(spool)})
    outcomes = Outcomes()
    delivery = RecordDelivery(config.records, on_outcome=outcomes)
    try:
        delivery.submit("rec_a", url, b'{"id":"rec_a"}')
        assert await outcomes.wait("delivered") == ["rec_a"]
    finally:
        await delivery.close()
        await runner.cleanup()
    assert len(ages) == 2 and ages[1] < 60


async def test_a_full_spool_is_delivered_a_few_records_at_a_time(tmp_path: Path) -> None:
    """After an outage the spool may hold thousands: not as many POSTs at once (each waiting for a
    connection inside its own timeout), but a bounded number."""
    spool = tmp_path / "spool"
    in_flight, peak, seen = 0, 0, asyncio.Event()

    async def counting(request: web.Request) -> web.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        seen.set()
        await request.read()
        await asyncio.sleep(0.001)  # the webhook's own work: requests sent together overlap here
        in_flight -= 1
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/calls", counting)
    runner = web.AppRunner(app)
    url = await listen(runner) + "/calls"
    config = parse_config(CONFIG, env={"EP": "ws://127.0.0.1:9", "TWILIO_TOKEN": TWILIO_TOKEN, "HOOK": url,
                                       "RECORDS_SECRET": SECRET, "SPOOL": str(spool)})
    outcomes = Outcomes()
    delivery = RecordDelivery(config.records, on_outcome=outcomes)
    for n in range(60):
        delivery.spool.write(f"rec_{n:02}", url, b"{}")
    delivery.start()
    try:
        assert len(await outcomes.wait("delivered", 60)) == 60
        await asyncio.wait_for(delivery.idle(), WAIT_S)
    finally:
        await delivery.close()
        await runner.cleanup()
    assert 1 <= peak <= RESUME_DELIVERIES
    assert spooled(spool) == []

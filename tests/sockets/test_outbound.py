"""Calls the gateway places, over real sockets on 127.0.0.1: the API → a local stand-in for
Twilio's REST API (it records the create request) → the test plays Twilio: it fetches the answer
TwiML, connects the media stream with a Twilio-like phone and posts the answering-machine result →
the gateway and the Voice Live simulator. Nothing leaves the machine."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway.app import create_app
from gateway.audio import ASSETS, load_ulaw_8k
from gateway.bridge import CONTEXT
from gateway.call import spoken_text
from gateway.carriers.twilio.phone import new_sid, place_call
from gateway.cli import build_parser
from gateway.config import parse_config
from gateway.dial import dial
from gateway.replay import load_fixture, run
from gateway.simulator import RunningSimulator, SimulatorSettings, start_simulator
from gateway.simulator.server import SimSession
from gateway.softphone import CallReport, Hangup, Say, Silence, WaitForBot
from tests.sockets.loopback import post_as_twilio, serve

TWILIO_TOKEN = "test-twilio-auth-token-9012"
ACCOUNT = "AC" + "0123456789abcdef" * 2
API_TOKEN = "operator-token-3456"
CALLEE, FROM = "+15555550123", "+15555550100"
HELLO = load_ulaw_8k(ASSETS / "caller_hours.wav")
GREETING = "Hello, this is the clinic calling for you."
VOICEMAIL = "This is the clinic: please call us back about your appointment."
RECORDS_SECRET = "whsec_" + base64.b64encode(hashlib.sha256(b"outbound records").digest()).decode()

CONFIG = """
voicelive: {{endpoint: "{endpoint}"}}
gateway: {{api_token: "${{API_TOKEN}}", max_calls: {max_calls},
           outbound: {{calls_per_minute: {per_minute}, max_per_profile: {per_profile}}}}}
twilio: {{auth_token: "${{TWILIO_TOKEN}}", account_sid: "{account}", api_base_url: "{twilio_api}"}}
profiles:
  reminder:
    model: gpt-realtime
    instructions: "Remind {{name}} of the appointment."
    turn_detection: {{type: server_vad, silence_duration_ms: 400}}
    greeting: "{greeting}"
    voicemail: {{message: "{voicemail}"}}
    outbound: {{greeting_after_s: 0.2, machine_wait_s: 20}}
routes:
  default: reminder
"""


@dataclass
class Rig:
    sim: RunningSimulator
    app: web.Application
    base: str
    creates: list[dict[str, Any]]  # what the stand-in for Twilio's REST API was asked
    events: dict[str, list[tuple[str, float, dict[str, Any]]]] = field(default_factory=dict)
    seen: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)

    def seen_event(self, call_id: str, name: str) -> asyncio.Event:
        return self.seen.setdefault((call_id, name), asyncio.Event())

    async def api(self, method: str, path: str, body: Any = None, token: str | None = API_TOKEN
                  ) -> tuple[int, Any, dict[str, str]]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with aiohttp.ClientSession() as http, http.request(method, self.base + path, json=body,
                                                                  headers=headers) as reply:
            return reply.status, await reply.json(content_type=None), dict(reply.headers)

    async def place(self, **extra: Any) -> tuple[int, Any, dict[str, str]]:
        body = {"to": CALLEE, "from": FROM, "profile": "reminder", "variables": {"name": "Ada"}, **extra}
        return await self.api("POST", "/v1/calls", body)

    async def answer(self, sid: str, steps: list, webhook: dict[str, Any]) -> CallReport:
        """Twilio once the callee picked up: fetch the answer TwiML, open the media stream."""
        create = self.creates[-1]["form"]

        def on_event(t: float, kind: str, fields: dict[str, Any]) -> None:
            if kind == "webhook":
                webhook.update(fields)

        return await place_call(create["Url"], steps, auth_token=TWILIO_TOKEN, call_sid=sid, to=CALLEE,
                                from_=FROM, direction="outbound-api", on_event=on_event)

    async def amd(self, sid: str, answered_by: str) -> int:
        form = {"CallSid": sid, "AccountSid": ACCOUNT, "AnsweredBy": answered_by, "MachineDetectionDuration": "900"}
        status, _ = await post_as_twilio(self.creates[-1]["form"]["AsyncAmdStatusCallback"], form, TWILIO_TOKEN)
        return status

    async def session(self) -> SimSession:
        session = await asyncio.wait_for(self.sim.state.wait_closed(0), 10)
        await asyncio.wait_for(self.app[CONTEXT].wait_idle(), 10)
        return session


@contextlib.asynccontextmanager
async def outbound_rig(per_minute: int = 60, per_profile: int = 5, max_calls: int = 10,
                       api_token: bool = True, recording: Path | None = None,
                       records: tuple[str, Path] | None = None) -> AsyncIterator[Rig]:
    """``records``: (webhook URL, spool directory) to have the calls' post-call records delivered."""
    creates: list[dict[str, Any]] = []

    async def create_call(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        creates.append({"path": request.path, "form": form, "authorization": request.headers.get("Authorization")})
        sid = new_sid("CA")
        return web.json_response({"sid": sid, "account_sid": request.match_info["account"], "status": "queued",
                                  "to": form.get("To"), "from": form.get("From")}, status=201)

    fake = web.Application()
    fake.router.add_post("/2010-04-01/Accounts/{account}/Calls.json", create_call)
    fake_runner, fake_base = await serve(fake)
    sim = await start_simulator(SimulatorSettings(audio_speed=8.0))
    text = CONFIG.format(endpoint=sim.endpoint, twilio_api=fake_base, account=ACCOUNT, greeting=GREETING,
                         voicemail=VOICEMAIL, per_minute=per_minute, per_profile=per_profile, max_calls=max_calls)
    if not api_token:
        text = text.replace('api_token: "${API_TOKEN}", ', "")
    if recording is not None:
        text += f'recording: {{directory: "{recording}"}}\n'
    if records is not None:
        text += (f'records: {{webhook: "{records[0]}", signing_secret: "${{RECORDS_SECRET}}", '
                 f'spool_directory: "{records[1]}", initial_backoff_s: 0.01, max_backoff_s: 0.02}}\n')

    config = parse_config(text, env={"TWILIO_TOKEN": TWILIO_TOKEN, "API_TOKEN": API_TOKEN,
                                     "RECORDS_SECRET": RECORDS_SECRET})
    rig: Rig

    def observer_for(call_id: str) -> Any:
        def observe(event: str, t: float, fields: dict[str, Any]) -> None:
            rig.events.setdefault(call_id, []).append((event, t, fields))
            rig.seen_event(call_id, event).set()
        return observe

    runner, base = await serve(create_app(config, observer_factory=observer_for))
    rig = Rig(sim, runner.app, base, creates)
    try:
        yield rig
    finally:
        await runner.cleanup()
        await sim.close()
        await fake_runner.cleanup()


def client_events(session: SimSession, kind: str) -> list[dict[str, Any]]:
    return [e for e in session.received if e.get("type") == kind]


async def test_a_machine_gets_the_voicemail_message_verbatim_then_the_call_hangs_up(tmp_path: Path) -> None:
    hook_posts: list[tuple[dict[str, str], bytes]] = []
    delivered = asyncio.Event()

    async def webhook_route(request: web.Request) -> web.Response:
        hook_posts.append((dict(request.headers), await request.read()))
        delivered.set()
        return web.Response(status=204)

    hook_app = web.Application()
    hook_app.router.add_post("/records", webhook_route)
    hook_runner, hook_base = await serve(hook_app)
    spool = tmp_path / "spool"
    async with outbound_rig(recording=tmp_path, records=(hook_base + "/records", spool)) as rig:
        status, placed, _ = await rig.place()
        assert status == 201, placed
        sid = placed["id"]
        assert placed["state"] == "queued" and placed["profile"] == "reminder"
        (create,) = rig.creates
        form = create["form"]
        assert create["path"] == f"/2010-04-01/Accounts/{ACCOUNT}/Calls.json"
        assert create["authorization"] == "Basic " + base64.b64encode(f"{ACCOUNT}:{TWILIO_TOKEN}".encode()).decode()
        assert (form["To"], form["From"]) == (CALLEE, FROM)
        assert form["MachineDetection"] == "DetectMessageEnd" and form["AsyncAmd"] == "true"
        assert form["AsyncAmdStatusCallback"] == rig.base + "/twilio/amd"
        assert form["Url"] == rig.base + "/twilio/placed-answer"
        assert form["StatusCallback"] == rig.base + "/twilio/call-status"
        status, _ = await post_as_twilio(form["StatusCallback"], {"CallSid": sid, "CallStatus": "ringing"},
                                         TWILIO_TOKEN)
        assert status == 204
        assert (await rig.api("GET", f"/v1/calls/{sid}"))[1]["state"] == "ringing"

        ready, greeted = rig.seen_event(sid, "session.ready"), rig.seen_event(sid, "caller.speech_stopped")
        webhook: dict[str, Any] = {}
        phone = asyncio.create_task(rig.answer(sid, [Say(HELLO, "leave a message after the tone"),
                                                     Silence(30_000)], webhook))
        await asyncio.wait_for(ready.wait(), 10)
        assert webhook["stream_url"] == rig.base.replace("http", "ws") + "/twilio/media"
        assert webhook["parameters"]["token"]  # the signed per-call token, as for incoming calls
        assert (await rig.api("GET", f"/v1/calls/{sid}"))[1]["state"] == "in-progress"
        await asyncio.wait_for(greeted.wait(), 20)  # the machine's greeting ended: its beep
        assert await rig.amd(sid, "machine_end_beep") == 204
        report = await asyncio.wait_for(phone, 30)
        session = await rig.session()
        assert report.closed_by == "gateway"
        assert report.played_bytes == sum(session.items_audio_bytes.values()) > 0  # heard in full
        assert [spoken_text(e) for e in client_events(session, "response.create")] == [VOICEMAIL]
        assert session.received[0]["session"]["instructions"] == "Remind Ada of the appointment."
        status, state, _ = await rig.api("GET", f"/v1/calls/{sid}")
        assert status == 200
        assert (state["state"], state["answered_by"], state["end_reason"]) == (
            "completed", "machine_end_beep", "voicemail_left")
        # the call's post-call record reaches the operator's webhook, signed (checked here from the
        # Standard Webhooks spec), as an outbound call that left a voicemail
        await asyncio.wait_for(delivered.wait(), 10)
    await hook_runner.cleanup()
    ((headers, body),) = hook_posts
    key = base64.b64decode(RECORDS_SECRET.removeprefix("whsec_"))
    mac = hmac.new(key, f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body,
                   hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(mac).decode()
    record = json.loads(body)
    assert (record["call_id"], record["direction"], record["answering_machine"]) == (sid, "outbound",
                                                                                    "machine_end_beep")
    assert record["outcome"] == "answering_machine" and record["end_reason"] == "voicemail_left"
    assert [turn["text"] for turn in record["transcript"] if turn["role"] == "bot"] == [VOICEMAIL]
    assert CALLEE not in body.decode() and TWILIO_TOKEN not in body.decode()  # masked, no secrets
    # the recorded call replays: the same opening, the same words
    (path,) = await asyncio.to_thread(lambda: list(tmp_path.glob("*.jsonl")))
    fixture = await asyncio.to_thread(load_fixture, path)
    assert [r.get("result") for r in fixture.records if r.get("event") == "answered_by"] == ["machine_end_beep"]
    replayed = run(fixture)
    assert replayed.ok, f"{replayed.mismatch}\n{replayed.problems}"


async def test_a_person_gets_the_greeting_only_after_they_spoke() -> None:
    async with outbound_rig() as rig:
        status, placed, _ = await rig.place()
        assert status == 201
        sid = placed["id"]
        spoke = rig.seen_event(sid, "caller.speech_stopped")
        phone = asyncio.create_task(rig.answer(sid, [Say(HELLO, "hello?"), WaitForBot(timeout_s=20), Hangup()], {}))
        await asyncio.wait_for(spoke.wait(), 20)
        # they said "hello?"; without the answering-machine result the bot stays silent
        assert [e for e, _, _ in rig.events[sid] if e in ("call.opening", "response.created")] == []
        assert await rig.amd(sid, "human") == 204
        report = await asyncio.wait_for(phone, 30)
        session = await rig.session()
        assert report.closed_by == "caller" and report.played_bytes > 0
        assert [spoken_text(e) for e in client_events(session, "response.create")] == [GREETING]
        events = rig.events[sid]
        stopped = next(t for e, t, _ in events if e == "caller.speech_stopped")
        opening = next((t, f) for e, t, f in events if e == "call.opening")
        assert opening[1] == {"decision": "greet"} and opening[0] >= stopped
        state = (await rig.api("GET", f"/v1/calls/{sid}"))[1]
        assert (state["state"], state["answered_by"]) == ("completed", "human")


async def test_the_api_is_refused_without_the_token_and_off_without_one_configured() -> None:
    async with outbound_rig() as rig:
        body = {"to": CALLEE, "from": FROM, "profile": "reminder", "variables": {"name": "Ada"}}
        status, answer, headers = await rig.api("POST", "/v1/calls", body, token=None)
        assert status == 401 and "Bearer" in answer["error"] and headers["WWW-Authenticate"] == "Bearer"
        status, _, _ = await rig.api("POST", "/v1/calls", body, token="wrong-token")
        assert status == 401
        status, _, _ = await rig.api("GET", "/v1/calls/CA0", token="wrong-token")
        assert status == 401
        assert rig.creates == []
        # the twilio callbacks need Twilio's signature
        status, _ = await post_as_twilio(rig.base + "/twilio/amd", {"CallSid": "CA0", "AnsweredBy": "human"},
                                         "not-the-token")
        assert status == 403
    async with outbound_rig(api_token=False) as rig:
        status, answer, _ = await rig.api("POST", "/v1/calls", {}, token=API_TOKEN)
        assert status == 404 and "GATEWAY_API_TOKEN" in answer["error"]


async def test_bad_requests_say_what_is_wrong() -> None:
    async with outbound_rig() as rig:
        cases = [
            ({"to": "12", "from": FROM, "profile": "reminder", "variables": {"name": "A"}}, "to: expected an E.164"),
            ({"to": CALLEE, "from": FROM, "profile": "nope"}, "profile: expected one of reminder"),
            ({"to": CALLEE, "from": FROM, "profile": "reminder"}, "missing variable 'name'"),
            ({"to": CALLEE, "from": FROM, "profile": "reminder", "variables": {"name": "A", "x": "1"}},
             "unknown variable 'x'"),
            ({"to": CALLEE, "from": FROM, "profile": "reminder", "variables": {"name": "A"}, "carrier": "acs"},
             "carrier: "),
            ({"to": CALLEE, "from": FROM, "profile": "reminder", "colour": "red"}, "colour: unknown field"),
        ]
        for body, problem in cases:
            status, answer, _ = await rig.api("POST", "/v1/calls", body)
            assert status == 400 and problem in answer["error"], (body, answer)
        assert rig.creates == []


async def test_limits_refuse_with_retry_after_and_draining_refuses_with_503() -> None:
    async with outbound_rig(per_minute=1) as rig:
        assert (await rig.place())[0] == 201
        status, answer, headers = await rig.place()
        assert status == 429 and "calls_per_minute" in answer["error"] and int(headers["Retry-After"]) >= 1
    async with outbound_rig(per_profile=1) as rig:
        assert (await rig.place())[0] == 201
        status, answer, headers = await rig.place()
        assert status == 429 and "cap of profile reminder" in answer["error"] and headers["Retry-After"]
    async with outbound_rig(max_calls=1) as rig:
        assert (await rig.place())[0] == 201  # placed, not yet answered: it counts against max_calls
        status, answer, _ = await rig.place()
        assert status == 429 and "max_calls" in answer["error"]
    async with outbound_rig() as rig:
        rig.app[CONTEXT].draining = True
        status, answer, headers = await rig.place()
        assert status == 503 and "draining" in answer["error"] and headers["Retry-After"]
        assert rig.creates == []


async def test_the_same_idempotency_key_gives_the_same_call() -> None:
    async with outbound_rig() as rig:
        first, second = await asyncio.gather(rig.place(idempotency_key="reminder-42"),
                                             rig.place(idempotency_key="reminder-42"))
        assert {first[0], second[0]} <= {200, 201} and first[1]["id"] == second[1]["id"]
        third = await rig.place(idempotency_key="reminder-42")
        assert third[0] == 200 and third[1]["id"] == first[1]["id"]
        assert len(rig.creates) == 1
        other = await rig.place(idempotency_key="reminder-43")
        assert other[0] == 201 and other[1]["id"] != first[1]["id"] and len(rig.creates) == 2


async def test_gateway_dial_places_a_call_and_prints_its_id_and_state() -> None:
    async with outbound_rig() as rig:
        args = build_parser().parse_args(["dial", "--to", CALLEE, "--from", FROM, "--profile", "reminder",
                                          "--var", "name=Ada", "--url", rig.base, "--token", API_TOKEN])
        out = io.StringIO()
        assert await dial(args, out) == 0
        (create,) = rig.creates
        assert create["form"]["To"] == CALLEE
        line = out.getvalue().strip()
        sid = line.split()[1].rstrip(":")
        assert line == f"call {sid}: queued"
        assert (await rig.api("GET", f"/v1/calls/{sid}"))[1]["state"] == "queued"
        bad = build_parser().parse_args(["dial", "--to", CALLEE, "--from", FROM, "--profile", "reminder",
                                         "--url", rig.base, "--token", "wrong"])
        assert await dial(bad, io.StringIO()) == 1


async def test_a_call_nobody_answers_fails_with_the_carrier_s_reason_and_frees_its_place() -> None:
    async with outbound_rig(per_profile=1) as rig:
        status, placed, _ = await rig.place()
        assert status == 201
        assert (await rig.place())[0] == 429  # the profile's one place is taken
        callback = rig.creates[-1]["form"]["StatusCallback"]
        status, _ = await post_as_twilio(callback, {"CallSid": placed["id"], "CallStatus": "busy"}, TWILIO_TOKEN)
        assert status == 204
        state = (await rig.api("GET", f"/v1/calls/{placed['id']}"))[1]
        assert (state["state"], state["end_reason"]) == ("failed", "busy") and state["ended_at"]
        assert (await rig.place())[0] == 201
        status, _ = await post_as_twilio(callback, {"CallSid": placed["id"], "CallStatus": "completed"},
                                         "a-forged-signature-key")
        assert status == 403


async def test_an_unexpected_failure_of_the_carrier_answers_the_waiters_of_the_same_key(monkeypatch: Any) -> None:
    """A request that waits for a call being placed under its idempotency key gets an answer even
    when placing it fails in a way the carrier did not foresee (it must not wait forever)."""
    import threading

    from gateway.carriers.base import OutboundError
    from gateway.carriers.twilio import outbound as twilio_outbound

    started, release = threading.Event(), threading.Event()

    def broken_create(config: Any, request: Any) -> str:
        started.set()
        release.wait(10)
        raise RuntimeError("the carrier's client broke")

    async with outbound_rig() as rig:
        monkeypatch.setattr(twilio_outbound, "_create", broken_create)
        first = asyncio.create_task(rig.place(idempotency_key="reminder-7"))
        assert await asyncio.to_thread(started.wait, 10)
        future = rig.app[CONTEXT].outbound.placing["reminder-7"]
        release.set()
        status, answer, _ = await first
        assert status == 502 and "could not be placed" in answer["error"]
        assert future.done() and isinstance(future.exception(), OutboundError)
        assert rig.app[CONTEXT].outbound.placing == {} and rig.app[CONTEXT].outbound.placing_profiles == []


async def test_a_hanging_acs_api_is_given_up_on_and_the_call_s_place_freed(monkeypatch: Any) -> None:
    """Call Automation's create_call that never answers: the API answers 502 in bounded time (the
    SDK's own timeouts are minutes long, with retries), and the call holds no place in the limits."""
    from gateway.carriers.acs import outbound as acs_outbound
    from gateway.carriers.acs.carrier import AcsCarrier

    never = asyncio.Event()

    class HangingClient:
        async def create_call(self, **kwargs: Any) -> Any:
            await never.wait()

    monkeypatch.setattr(acs_outbound, "CREATE_TIMEOUT_S", 0.05)
    config = parse_config("""
voicelive: {endpoint: "wss://127.0.0.1:9/voice-live"}
gateway: {api_token: "${API_TOKEN}"}
profiles:
  reminder: {model: gpt-realtime}
routes:
  default: reminder
""", env={"API_TOKEN": API_TOKEN})
    runner, base = await serve(create_app(config, carriers=[AcsCarrier(HangingClient())]))
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http, http.post(
                base + "/v1/calls", json={"to": CALLEE, "from": FROM, "profile": "reminder"},
                headers={"Authorization": f"Bearer {API_TOKEN}"}) as reply:
            status, answer = reply.status, await reply.json()
        assert status == 502 and "ACS" in answer["error"], answer
        outbound = runner.app[CONTEXT].outbound
        assert outbound.placing_profiles == [] and outbound.calls == {}
    finally:
        never.set()
        await runner.cleanup()


async def test_json_nested_too_deep_is_a_bad_request() -> None:
    async with outbound_rig() as rig:
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"}
            async with http.post(rig.base + "/v1/calls", data="[" * 100_000, headers=headers) as reply:
                assert reply.status == 400 and "JSON object" in (await reply.json())["error"]
        assert rig.creates == []


async def test_a_token_that_is_not_utf8_is_a_wrong_token() -> None:
    async with outbound_rig() as rig:
        host, port = rig.base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /v1/calls/CA0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
                     b"Connection: close\r\n\r\n")
        status_line = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        assert status_line.split()[1] == b"401", status_line
        assert rig.creates == []


async def test_gateway_dial_says_so_when_the_answer_is_json_but_not_an_object() -> None:
    """A proxy in front of the gateway may answer with any JSON: dial reports it, it does not crash."""
    async def odd(request: web.Request) -> web.Response:
        return web.json_response(["bad gateway"], status=502 if request.method == "POST" else 200)

    app = web.Application()
    app.router.add_route("*", "/v1/calls", odd)
    runner, base = await serve(app)
    try:
        args = build_parser().parse_args(["dial", "--to", CALLEE, "--from", FROM, "--profile", "reminder",
                                          "--url", base, "--token", API_TOKEN])
        assert await dial(args, io.StringIO()) == 1
    finally:
        await runner.cleanup()


async def test_a_ringing_placed_call_holds_its_place_in_max_calls() -> None:
    """With max_calls 1: an incoming call is refused (the at-max_calls apology) while a call the
    worker placed rings, and taken once that call ended without an answer; the media of a placed
    call that is answered takes the place its call held."""
    async with outbound_rig(max_calls=1) as rig:
        ctx = rig.app[CONTEXT]

        async def incoming_call() -> str:
            form = {"CallSid": new_sid("CA"), "AccountSid": ACCOUNT, "To": FROM, "From": "+15555550177"}
            status, twiml = await post_as_twilio(rig.base + "/twilio/voice", form, TWILIO_TOKEN)
            assert status == 200
            return "refused" if "<Say>" in twiml and "<Connect" not in twiml else "connected"

        async def ready() -> int:
            async with aiohttp.ClientSession() as http, http.get(rig.base + "/readyz") as reply:
                return reply.status

        assert await incoming_call() == "connected"  # (its media never comes: the webhook holds no place)
        status, placed, _ = await rig.place()
        assert status == 201
        sid, callback = placed["id"], rig.creates[-1]["form"]["StatusCallback"]
        assert await incoming_call() == "refused"  # placed, not yet ringing
        assert (await post_as_twilio(callback, {"CallSid": sid, "CallStatus": "ringing"}, TWILIO_TOKEN))[0] == 204
        assert await incoming_call() == "refused" and await ready() == 503
        assert (await post_as_twilio(callback, {"CallSid": sid, "CallStatus": "no-answer"}, TWILIO_TOKEN))[0] == 204
        assert await incoming_call() == "connected" and await ready() == 200

        # a second placed call is answered: its media is taken, in the place it held
        status, placed, _ = await rig.place()
        assert status == 201
        sid = placed["id"]
        assert await incoming_call() == "refused"
        started = rig.seen_event(sid, "session.ready")
        phone = asyncio.create_task(rig.answer(sid, [Silence(30_000)], {}))
        await asyncio.wait_for(started.wait(), 10)
        assert list(ctx.calls) == [sid] and ctx.outbound.calls[sid].state == "in-progress"
        assert await incoming_call() == "refused"  # the running call holds the one place (counted once)
        assert await rig.amd(sid, "fax") == 204  # a fax: the call hangs up at once
        report = await asyncio.wait_for(phone, 20)
        assert report.closed_by == "gateway"
        await asyncio.wait_for(ctx.wait_idle(), 10)
        assert await incoming_call() == "connected"


async def test_an_answering_machine_result_twilio_does_not_document_is_unknown(tmp_path: Path) -> None:
    """An AnsweredBy value outside Twilio's documented ones reaches neither the call's state nor its
    record as it came: it is "unknown" (the callee is treated as a person), with a warning that shows
    only the start of it."""
    from structlog.testing import capture_logs

    hook_posts: list[bytes] = []
    delivered = asyncio.Event()

    async def webhook_route(request: web.Request) -> web.Response:
        hook_posts.append(await request.read())
        delivered.set()
        return web.Response(status=204)

    hook_app = web.Application()
    hook_app.router.add_post("/records", webhook_route)
    hook_runner, hook_base = await serve(hook_app)
    odd = "machine_end_whistle_" + "w" * 4000
    try:
        async with outbound_rig(records=(hook_base + "/records", tmp_path / "spool")) as rig:
            status, placed, _ = await rig.place()
            assert status == 201
            sid = placed["id"]
            with capture_logs() as logs:
                assert await rig.amd(sid, odd) == 204  # (before the callee's media: the call learns it at its start)
            (warning,) = [line for line in logs if "AnsweredBy" in line["event"]]
            assert warning["log_level"] == "warning" and len(warning["answered_by"]) <= 43
            assert all(odd not in str(value) for line in logs for value in line.values())
            assert (await rig.api("GET", f"/v1/calls/{sid}"))[1]["answered_by"] == "unknown"
            phone = asyncio.create_task(rig.answer(sid, [Say(HELLO, "hello?"), WaitForBot(timeout_s=20), Hangup()],
                                                   {}))
            report = await asyncio.wait_for(phone, 30)
            await rig.session()
            # (the session opened when the call was placed was replaced when the result came: the call
            # took the one opened then)
            session = rig.sim.state.sessions[-1]
            assert report.played_bytes > 0  # greeted, as a person
            # (the session is ready at once: the greeting may come after the profile's 0.2 s pause,
            # before the callee's "hello?" was heard, which then gets a reply of its own)
            spoken = [spoken_text(e) for e in client_events(session, "response.create")]
            assert spoken[0] == GREETING and VOICEMAIL not in spoken
            state = (await rig.api("GET", f"/v1/calls/{sid}"))[1]
            assert (state["state"], state["answered_by"]) == ("completed", "unknown")
            await asyncio.wait_for(delivered.wait(), 10)
    finally:
        await hook_runner.cleanup()
    (body,) = hook_posts
    record = json.loads(body)
    assert (record["answering_machine"], record["outcome"]) == ("unknown", "completed")
    assert "whistle" not in body.decode()

"""Call control over real sockets on 127.0.0.1: softphone → gateway → Voice Live simulator, with
local stand-ins for a tool's service and for Twilio's REST API (nothing leaves the machine)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway import metrics
from gateway.app import create_app
from gateway.audio import ASSETS, load_ulaw_8k
from gateway.bridge import CONTEXT
from gateway.call import TRANSFER_WORDS, spoken_text
from gateway.carriers.twilio.phone import place_call
from gateway.config import parse_config
from gateway.simulator import RunningSimulator, SimulatorSettings, ToolCall, start_simulator
from gateway.simulator.server import SimSession
from gateway.softphone import CallReport, Dtmf, Hangup, Say, Silence, WaitForBot
from tests.sockets.loopback import post_as_twilio, serve

TWILIO_TOKEN = "test-twilio-auth-token-5678"
OPERATOR = "+14155550100"
KEYS_NUMBER = "+15555550111"
QUIET_NUMBER = "+15555550122"
HOURS = load_ulaw_8k(ASSETS / "caller_hours.wav")

CONFIG = """
voicelive: {{endpoint: "{endpoint}"}}
twilio: {{auth_token: "${{TWILIO_TOKEN}}", api_base_url: "{twilio_api}"}}
profiles:
  control:
    model: gpt-realtime
    turn_detection: {{type: server_vad, silence_duration_ms: 400}}
    tools:
      - {{name: hang_up, builtin: hang_up}}
      - name: transfer_call
        builtin: transfer_call
        transfer: {{targets: {{operator: "{operator}"}}}}
      - name: order_status
        description: The status of an order.
        parameters: {{type: object, properties: {{order: {{type: string}}}}, required: [order]}}
        http: {{url: "{service}/orders", timeout_s: 0.5}}
    interim_response: {{type: static, texts: ["One moment, please."], triggers: [tool]}}
  keys:
    model: gpt-realtime
    greeting: Hello, press a key.
    dtmf: {{digit_timeout_s: 3, finish_on: "#", actions: {{0: {{transfer_to: "{operator}"}}}}}}
  quiet:
    model: gpt-realtime
    silence: {{reprompt_after_s: 1, max_reprompts: 1, reprompt: "Are you still there?"}}
    limits: {{goodbye: "Goodbye from the gateway."}}
routes:
  default: control
  numbers: {{"{keys}": keys, "{quiet}": quiet}}
"""


@dataclass
class Rig:
    sim: RunningSimulator
    app: web.Application
    base: str
    twilio_requests: list[dict[str, Any]]  # what the stand-in for Twilio's REST API was asked
    tool_requests: list[dict[str, Any]]
    twilio_status: list[int] = field(default_factory=lambda: [200])

    async def dial(self, steps: list, to: str = "+15555550100") -> CallReport:
        return await place_call(self.base + "/twilio/voice", steps, auth_token=TWILIO_TOKEN, to=to)

    async def session(self) -> SimSession:
        session = await asyncio.wait_for(self.sim.state.wait_closed(0), 10)
        await asyncio.wait_for(self.app[CONTEXT].wait_idle(), 10)
        return session

    async def stream_ended(self, call_sid: str) -> str:
        """What the gateway tells Twilio once the media stream has closed (the <Connect action>)."""
        form = {"CallSid": call_sid, "StreamSid": "MZ0"}
        status, twiml = await post_as_twilio(self.base + "/twilio/stream-ended", form, TWILIO_TOKEN)
        assert status == 200
        return twiml


@contextlib.asynccontextmanager
async def control_rig(tool_calls: Mapping[int, ToolCall] | None = None) -> AsyncIterator[Rig]:
    twilio_requests: list[dict[str, Any]] = []
    tool_requests: list[dict[str, Any]] = []
    status = [200]
    never = asyncio.Event()  # the order service never answers

    async def update_call(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        twilio_requests.append({"path": request.path, "form": form,
                                "authorization": request.headers.get("Authorization")})
        return web.json_response({"sid": request.match_info["call"]}, status=status[0])

    async def orders(request: web.Request) -> web.Response:
        tool_requests.append(await request.json())
        await never.wait()
        return web.json_response({})

    fake = web.Application()
    fake.router.add_post("/2010-04-01/Accounts/{account}/Calls/{call}.json", update_call)
    fake.router.add_post("/orders", orders)
    fake_runner, fake_base = await serve(fake)
    sim = await start_simulator(SimulatorSettings(audio_speed=8.0, tool_calls=dict(tool_calls or {})))
    config = parse_config(CONFIG.format(endpoint=sim.endpoint, twilio_api=fake_base, service=fake_base,
                                        operator=OPERATOR, keys=KEYS_NUMBER, quiet=QUIET_NUMBER),
                          env={"TWILIO_TOKEN": TWILIO_TOKEN})
    runner, base = await serve(create_app(config))
    try:
        yield Rig(sim, runner.app, base, twilio_requests, tool_requests, status)
    finally:
        never.set()
        await runner.cleanup()
        await sim.close()
        await fake_runner.cleanup()


def client_events(session: SimSession, kind: str) -> list[dict[str, Any]]:
    return [e for e in session.received if e.get("type") == kind]


def assert_heard_in_full(report: CallReport, session: SimSession) -> None:
    """The gateway ended the call only once the phone had played every byte the bot said."""
    assert report.closed_by == "gateway" and report.close_code == 1000
    assert report.violations == 0, report.violation_samples
    assert report.unplayed_bytes == 0 and report.discarded_bytes == 0 and report.clears == 0
    assert report.played_bytes == sum(session.items_audio_bytes.values()) > 0


async def test_hang_up_ends_the_call_after_the_goodbye_has_played_in_full() -> None:
    async with control_rig({1: ToolCall("hang_up", {"reason": "the caller is done"})}) as rig:
        report = await rig.dial([Say(HOURS, "that is all, thanks"), Silence(20_000)])
        session = await rig.session()
        ended = await rig.stream_ended(report.call_sid)
    assert_heard_in_full(report, session)
    (output,) = session.function_call_outputs
    assert json.loads(output["output"]) == {"status": "the call ends after your next words"}
    assert "Hangup" in ended and "Say" not in ended  # Twilio hangs up when the stream has closed
    assert rig.twilio_requests == []  # a hang-up needs no REST call
    assert report.duration_ms < 15_000  # not the caller's 20 s of silence


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_a_transfer_redirects_the_twilio_call_to_the_number_after_the_bot_said_so() -> None:
    async with control_rig({1: ToolCall("transfer_call", {"destination": "operator"})}) as rig:
        report = await rig.dial([Say(HOURS, "a person, please"), Silence(20_000)])
        session = await rig.session()
    assert_heard_in_full(report, session)
    (request,) = rig.twilio_requests
    assert request["path"] == f"/2010-04-01/Accounts/{report.account_sid}/Calls/{report.call_sid}.json"
    assert request["form"] == {"Twiml": f'<?xml version="1.0" encoding="UTF-8"?><Response><Dial>{OPERATOR}'
                                        "</Dial></Response>"}
    assert request["authorization"] == _basic(report.account_sid, TWILIO_TOKEN)


async def test_a_transfer_twilio_refuses_ends_with_the_apology() -> None:
    async with control_rig({1: ToolCall("transfer_call", {"destination": "operator"})}) as rig:
        rig.twilio_status[0] = 401
        report = await rig.dial([Say(HOURS, "a person, please"), Silence(20_000)])
        await rig.session()
        ended = await rig.stream_ended(report.call_sid)
    assert len(rig.twilio_requests) == 1
    assert "<Say>" in ended and "Hangup" in ended  # the caller hears the apology, not silence


async def test_caller_keys_reach_the_model_as_one_line_and_the_bot_answers() -> None:
    async with control_rig() as rig:
        report = await rig.dial([WaitForBot(), Dtmf("4"), Dtmf("2"), Dtmf("#"), WaitForBot(), Hangup()],
                                to=KEYS_NUMBER)
        session = await rig.session()
    (item,) = [e["item"] for e in client_events(session, "conversation.item.create")
               if e["item"].get("type") == "message"]
    assert item["role"] == "user"
    assert item["content"] == [{"type": "input_text",
                                "text": "[The caller pressed these keys on the phone keypad: 4 2 #]"}]
    types = [e["type"] for e in session.received if e["type"] != "input_audio_buffer.append"]
    assert types.index("response.create", types.index("conversation.item.create")) > 0  # answered after it
    assert len(report.events_of("bot_audio_start")) >= 2  # the greeting, then the answer
    assert not report.events_of("wait_timeout")


async def test_a_key_with_a_transfer_action_transfers_after_the_bot_says_so() -> None:
    async with control_rig() as rig:
        report = await rig.dial([WaitForBot(), Dtmf("0"), Silence(20_000)], to=KEYS_NUMBER)
        session = await rig.session()
    assert_heard_in_full(report, session)
    (request,) = rig.twilio_requests
    assert f"<Dial>{OPERATOR}</Dial>" in request["form"]["Twiml"]
    creates = client_events(session, "response.create")
    assert spoken_text(creates[-1]) == TRANSFER_WORDS


async def test_silence_reprompts_then_the_bot_says_goodbye_and_hangs_up() -> None:
    before = metrics.CALLS.value("twilio", "caller_silent")
    async with control_rig() as rig:
        report = await rig.dial([Silence(30_000)], to=QUIET_NUMBER)
        session = await rig.session()
    assert_heard_in_full(report, session)
    spoken = [spoken_text(e) for e in client_events(session, "response.create")]
    assert spoken == ["Are you still there?", "Goodbye from the gateway."]  # word for word
    assert metrics.CALLS.value("twilio", "caller_silent") == before + 1


async def test_a_tool_that_does_not_answer_in_time_becomes_an_error_the_bot_talks_about() -> None:
    async with control_rig({1: ToolCall("order_status", {"order": "7"})}) as rig:
        report = await rig.dial([Say(HOURS, "where is my order"), WaitForBot(), Hangup()])
        session = await rig.session()
    assert rig.tool_requests == [{"order": "7"}]
    (output,) = session.function_call_outputs
    assert json.loads(output["output"]) == {"error": "the order_status service did not answer within 0.5 s"}
    assert report.played_bytes > 0 and not report.events_of("wait_timeout")  # the bot went on
    assert report.closed_by == "caller"
    interim = session.session["interim_response"]
    assert interim == {"type": "static_interim_response", "texts": ["One moment, please."], "triggers": ["tool"]}

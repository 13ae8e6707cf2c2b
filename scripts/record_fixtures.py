"""Record the call fixtures in tests/fixtures/calls/ through the gateway and the Voice Live simulator.

Each scenario places a real call: the softphone plays the speech clips in gateway/assets/ in real
time against the gateway's Twilio routes, the gateway talks to the simulator, and the gateway's
own recorder writes the fixture (audio not redacted, so the fixtures carry real speech).

    .venv/bin/python scripts/record_fixtures.py            # every scenario (about two minutes)
    .venv/bin/python scripts/record_fixtures.py dtmf_digits barge_in_mid_answer

Recording again gives new ids and slightly different timings; replaying a fixture is exact.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway import log
from gateway.app import create_app
from gateway.audio import ASSETS, load_ulaw_8k
from gateway.bridge import CONTEXT
from gateway.carriers.acs.phone import place_acs_call
from gateway.carriers.asterisk.phone import place_asterisk_call
from gateway.carriers.browser.phone import place_browser_call
from gateway.carriers.genesys.phone import place_genesys_call
from gateway.carriers.plivo.phone import place_plivo_call
from gateway.carriers.telnyx.phone import place_telnyx_call
from gateway.carriers.twilio.phone import place_call
from gateway.carriers.vonage.phone import place_vonage_call
from gateway.config import parse_config
from gateway.simulator import RunningSimulator, SimulatorSettings, ToolCall, start_simulator
from gateway.softphone import Dtmf, Hangup, Reconnect, Say, Silence, WaitForBot

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "calls"

CONFIG = """
voicelive:
  endpoint: ${EP}
  reconnect_budget_s: ${BUDGET}
gateway:
  public_url: http://127.0.0.1
  insecure_dev_mode: true   # a loopback recording harness: the softphone opens the stream directly
recording:
  directory: ${DIR}
  redact_audio: false
profiles:
  main:
    model: gpt-realtime
    instructions: You answer the phone for a small shop. Be brief.
    voice: alloy
    turn_detection: {type: server_vad, silence_duration_ms: 500}
    input_transcription: {model: mai-transcribe, language: en-US}
  greeter:
    model: gpt-realtime
    voice: {type: azure-standard, name: en-US-Ava:DragonHDLatestNeural}
    turn_detection: {type: azure_semantic_vad, silence_duration_ms: 500}
    greeting: Hello, thanks for calling. How can I help you today?
  tooled:
    model: gpt-realtime
    voice: alloy
    turn_detection: {type: server_vad, silence_duration_ms: 500}
    tools:
      - name: opening_hours
        description: This week's opening hours of the shop.
        parameters: {type: object, properties: {week: {type: string}}}
        http: {url: "${TOOL_URL}", timeout_s: 5}
  closer:
    model: gpt-realtime
    voice: alloy
    turn_detection: {type: server_vad, silence_duration_ms: 500}
    tools:
      - {name: hang_up, builtin: hang_up}
  quiet:
    model: gpt-realtime
    voice: alloy
    turn_detection: {type: server_vad, silence_duration_ms: 500}
    silence: {reprompt_after_s: 1.5, max_reprompts: 1, reprompt: "Are you still there?"}
    limits: {goodbye: "Thank you for calling. Goodbye."}
  patient:
    model: gpt-realtime
    voice: alloy
    turn_detection: {type: server_vad, silence_duration_ms: 500, interrupt_response: false}
    barge_in: {response_cancel: false}
routes:
  default: main
  numbers: {"+15550000001": greeter, "+15550000002": tooled, "+15550000003": closer, "+15550000004": quiet,
            "+15550000005": patient}
"""
# The called number that routes to each profile (for carriers that choose the profile by number)
PROFILE_NUMBERS = {"main": "+15550000000", "greeter": "+15550000001", "tooled": "+15550000002",
                   "closer": "+15550000003", "quiet": "+15550000004", "patient": "+15550000005"}

HOURS = load_ulaw_8k(ASSETS / "caller_hours.wav")
DELIVERY = load_ulaw_8k(ASSETS / "caller_delivery.wav")
INTERRUPT = load_ulaw_8k(ASSETS / "caller_interrupt.wav")

Hook = Callable[[RunningSimulator, asyncio.Event], Awaitable[None]]
ANSWERED = asyncio.Event()  # set by the simulator's observer when a response is done


@dataclass
class Scenario:
    description: str
    steps: list[Any]
    profile: str = "main"
    sim: dict[str, Any] = field(default_factory=dict)  # SimulatorSettings fields
    hook: Hook | None = None  # runs beside the call; the event is set when bot audio starts playing
    reconnect_budget_s: float = 5.0
    carrier: str = "twilio"  # the carrier whose phone places the call (see PLACERS)


async def _send_error(sim: RunningSimulator, bot_audio: asyncio.Event) -> None:
    session = await sim.state.wait_for_session(0)
    await bot_audio.wait()
    await session.send_event({"type": "error", "error": {
        "type": "server_error", "code": "internal_error",
        "message": "The server had an error while processing your request.", "param": None}})


async def _drop_after_first_answer(sim: RunningSimulator, bot_audio: asyncio.Event) -> None:
    session = await sim.state.wait_for_session(0)
    await ANSWERED.wait()  # the simulator finished its first answer
    await session.close(1011, "internal error")


async def _close_mid_call(sim: RunningSimulator, bot_audio: asyncio.Event) -> None:
    session = await sim.state.wait_for_session(0)
    await bot_audio.wait()
    await session.close(1011, "internal error")


SCENARIOS: dict[str, Scenario] = {
    "question_and_answer": Scenario(
        "The caller asks a question, the bot answers, the caller hangs up.",
        [Say(HOURS, "hours"), WaitForBot(), Hangup()]),
    "bot_greets_first": Scenario(
        "The bot speaks first (a greeting), then answers a question.",
        [WaitForBot(), Say(HOURS, "hours"), WaitForBot(), Hangup()], profile="greeter"),
    "barge_in_mid_answer": Scenario(
        "The caller talks over the bot's answer: the phone is cleared, Voice Live cancels the answer, "
        "the gateway truncates it at what was heard.",
        [Say(DELIVERY, "delivery"), WaitForBot(heard_ms=1500), Say(INTERRUPT, "interrupt"),
         WaitForBot(heard_ms=1000), Silence(2000), Hangup()]),
    "speech_after_answer": Scenario(
        "The caller speaks right after the answer finished playing: nothing to flush or truncate.",
        [Say(HOURS, "hours"), WaitForBot(settle_ms=60), Say(DELIVERY, "delivery"),
         WaitForBot(heard_ms=1000), Hangup()]),
    "two_barge_ins_one_response": Scenario(
        "The caller speaks twice over one long response that the server does not cancel by itself: "
        "the first speech flushes and truncates, the second finds nothing left to interrupt.",
        [Say(DELIVERY, "delivery"), WaitForBot(heard_ms=1200), Say(INTERRUPT[:4800], "first burst"),
         Silence(900), Say(INTERRUPT[4800:12000], "second burst"), Silence(1500), Hangup()],
        profile="patient", sim={"audio_speed": 1.0}),
    "dtmf_digits": Scenario(
        "The caller types 1 2 # on the keypad: the model hears the entry and answers it; then the "
        "caller asks a question.",
        [Silence(400), Dtmf("1"), Silence(200), Dtmf("2"), Silence(200), Dtmf("#"), WaitForBot(),
         Say(HOURS, "hours"), WaitForBot(), Hangup()]),
    "hangup_while_bot_speaks": Scenario(
        "The caller hangs up while the bot is still talking.",
        [Say(DELIVERY, "delivery"), WaitForBot(heard_ms=1200), Hangup()]),
    "voicelive_error_event": Scenario(
        "Voice Live reports a server error mid-call; the call goes on.",
        [Say(HOURS, "hours"), WaitForBot(), Hangup()], hook=_send_error),
    "function_call_round_trip": Scenario(
        "The model calls an http tool; the gateway posts the arguments to it, hands the reply back and "
        "the bot answers with it.",
        [Say(HOURS, "hours"), WaitForBot(), Hangup()], profile="tooled",
        sim={"tool_calls": {1: ToolCall("opening_hours", {"week": "this week"})}}),
    "bot_hangs_up": Scenario(
        "The model ends the call with the hang_up tool without a word: the gateway asks it for a "
        "goodbye, lets the phone play all of it, then closes the stream.",
        [Say(HOURS, "hours"), Silence(15_000)], profile="closer",
        sim={"tool_calls": {1: ToolCall("hang_up", {"reason": "the caller has what they need"})}}),
    "silence_reprompt_then_goodbye": Scenario(
        "The caller says nothing: the bot asks whether they are still there, then says goodbye and "
        "the gateway hangs up once the goodbye has played.",
        [Silence(20_000)], profile="quiet"),
    "voicelive_reconnects_mid_call": Scenario(
        "Voice Live drops the session after the first answer; the gateway reopens one, gives it the "
        "conversation so far, and the caller's next question is answered: no audio lost.",
        # (the caller hangs up once the answer has all arrived: a replay over sockets has no race to lose)
        [Say(HOURS, "hours"), WaitForBot(), Silence(1200), Say(DELIVERY, "delivery"), WaitForBot(heard_ms=800),
         Silence(3000), Hangup()], hook=_drop_after_first_answer),
    "voicelive_closes_mid_call": Scenario(
        "Voice Live closes the session while the bot speaks; the gateway closes the phone socket.",
        [Say(HOURS, "hours"), Silence(8000), Hangup()], hook=_close_mid_call, reconnect_budget_s=0),
    "acs_bot_greets_first": Scenario(
        "ACS: the bot speaks first (a greeting), paced to the phone in real time, then answers a question.",
        [WaitForBot(), Say(HOURS, "hours"), WaitForBot(), Hangup()], profile="greeter", carrier="acs"),
    "acs_barge_in_mid_answer": Scenario(
        "ACS: the caller talks over the bot's answer: StopAudio, and the answer is truncated at the "
        "playback clock.",
        [Say(DELIVERY, "delivery"), WaitForBot(heard_ms=1500), Say(INTERRUPT, "interrupt"),
         WaitForBot(), Silence(500), Hangup()], carrier="acs"),
    "acs_bot_hangs_up": Scenario(
        "ACS: the model ends the call with hang_up; the goodbye plays out, then the gateway hangs up.",
        [Say(HOURS, "hours"), Silence(15_000)], profile="closer", carrier="acs",
        sim={"tool_calls": {1: ToolCall("hang_up", {"reason": "the caller has what they need"})}}),
    "acs_dtmf_digits": Scenario(
        "ACS: the caller types 1 2 # (DtmfData): the model hears the entry and answers it.",
        [Silence(400), Dtmf("1"), Silence(200), Dtmf("2"), Silence(200), Dtmf("#"), WaitForBot(), Hangup()],
        carrier="acs"),
    "acs_media_reconnect": Scenario(
        "ACS: the media socket drops and ACS reconnects it: the call goes on with the same session.",
        [Say(HOURS, "hours"), WaitForBot(), Reconnect(), Silence(300), Say(HOURS[:8000], "again"),
         WaitForBot(heard_ms=400), Silence(1500), Hangup()], carrier="acs"),
    "plivo_bot_greets_first": Scenario(
        "Plivo: the bot speaks first (a greeting, each piece followed by a checkpoint Plivo answers with "
        "playedStream), then answers a question.",
        [WaitForBot(), Say(HOURS, "hours"), WaitForBot(), Hangup()], profile="greeter", carrier="plivo"),
    "plivo_barge_in_mid_answer": Scenario(
        "Plivo: the caller talks over the bot's answer: clearAudio (Plivo answers clearedAudio and never "
        "acknowledges the dropped checkpoints), and the answer is truncated at what the phone played.",
        [Say(DELIVERY, "delivery"), WaitForBot(heard_ms=1500), Say(INTERRUPT, "interrupt"),
         WaitForBot(heard_ms=1000), Silence(2000), Hangup()], carrier="plivo"),
    "plivo_dtmf_digits": Scenario(
        "Plivo: the caller types 1 2 # (dtmf events): the model hears the entry and answers it.",
        [Silence(400), Dtmf("1"), Silence(200), Dtmf("2"), Silence(200), Dtmf("#"), WaitForBot(), Hangup()],
        carrier="plivo"),
    "plivo_bot_hangs_up": Scenario(
        "Plivo: the model ends the call with hang_up; the goodbye plays out (every checkpoint answered), "
        "then the gateway closes the stream.",
        [Say(HOURS, "hours"), Silence(15_000)], profile="closer", carrier="plivo",
        sim={"tool_calls": {1: ToolCall("hang_up", {"reason": "the caller has what they need"})}}),
    "vonage_bot_greets_first": Scenario(
        "Vonage: the bot speaks first (a greeting, in 640-byte binary frames, each piece followed by a "
        "notify), then answers a question.",
        [WaitForBot(), Say(HOURS, "hours"), WaitForBot(), Hangup()], profile="greeter", carrier="vonage"),
    "vonage_barge_in_mid_answer": Scenario(
        "Vonage: the caller talks over the bot's answer: clear, and the answer is truncated at what the "
        "notifies say was played.",
        [Say(DELIVERY, "delivery"), WaitForBot(heard_ms=1500), Say(INTERRUPT, "interrupt"),
         WaitForBot(heard_ms=1000), Silence(2000), Hangup()], carrier="vonage"),
    "vonage_dtmf_digits": Scenario(
        "Vonage: the caller types 1 2 # (websocket:dtmf): the model hears the entry and answers it.",
        [Silence(400), Dtmf("1"), Silence(200), Dtmf("2"), Silence(200), Dtmf("#"), WaitForBot(), Hangup()],
        carrier="vonage"),
    "vonage_bot_hangs_up": Scenario(
        "Vonage: the model ends the call with hang_up; the goodbye plays out (its last partial frame "
        "padded), then the gateway closes the media socket.",
        [Say(HOURS, "hours"), Silence(15_000)], profile="closer", carrier="vonage",
        sim={"tool_calls": {1: ToolCall("hang_up", {"reason": "the caller has what they need"})}}),
    "telnyx_bot_greets_first": Scenario(
        "Telnyx: the bot speaks first (a greeting), then answers a question; marks come back as it plays.",
        [WaitForBot(), Say(HOURS, "hours"), WaitForBot(), Hangup()], profile="greeter", carrier="telnyx"),
    "telnyx_barge_in_mid_answer": Scenario(
        "Telnyx: the caller talks over the bot's answer: clear, and the answer is truncated where the "
        "phone's marks say it had played.",
        [Say(DELIVERY, "delivery"), WaitForBot(heard_ms=1500), Say(INTERRUPT, "interrupt"),
         WaitForBot(), Silence(500), Hangup()], carrier="telnyx"),
    "telnyx_dtmf_digits": Scenario(
        "Telnyx: the caller types 1 2 # (dtmf frames): the model hears the entry and answers it.",
        [Silence(400), Dtmf("1"), Silence(200), Dtmf("2"), Silence(200), Dtmf("#"), WaitForBot(), Hangup()],
        carrier="telnyx"),
    "telnyx_bot_hangs_up": Scenario(
        "Telnyx: the model ends the call with hang_up; the goodbye plays out, then the gateway closes "
        "the stream (Telnyx's TeXML then hangs up).",
        [Say(HOURS, "hours"), Silence(15_000)], profile="closer", carrier="telnyx",
        sim={"tool_calls": {1: ToolCall("hang_up", {"reason": "the caller has what they need"})}}),
    "asterisk_bot_greets_first": Scenario(
        "Asterisk: the bot speaks first (a greeting) in binary µ-law frames behind START_MEDIA_BUFFERING, a "
        "MARK_MEDIA after each piece, then answers a question.",
        [WaitForBot(), Say(HOURS, "hours"), WaitForBot(), Hangup()], profile="greeter", carrier="asterisk"),
    "asterisk_barge_in_mid_answer": Scenario(
        "Asterisk: the caller talks over the bot's answer: FLUSH_MEDIA (the queued marks go with the audio), "
        "and the answer is truncated at the last MEDIA_MARK_PROCESSED.",
        [Say(DELIVERY, "delivery"), WaitForBot(heard_ms=1500), Say(INTERRUPT, "interrupt"),
         WaitForBot(heard_ms=1000), Silence(2000), Hangup()], carrier="asterisk"),
    "asterisk_dtmf_digits": Scenario(
        "Asterisk: the caller types 1 2 # (DTMF_END): the model hears the entry and answers it.",
        [Silence(400), Dtmf("1"), Silence(200), Dtmf("2"), Silence(200), Dtmf("#"), WaitForBot(), Hangup()],
        carrier="asterisk"),
    "asterisk_bot_hangs_up": Scenario(
        "Asterisk: the model ends the call with hang_up; the goodbye plays out (every mark processed), then "
        "the gateway sends HANGUP and closes the socket.",
        [Say(HOURS, "hours"), Silence(15_000)], profile="closer", carrier="asterisk",
        sim={"tool_calls": {1: ToolCall("hang_up", {"reason": "the caller has what they need"})}}),
    "genesys_bot_greets_first": Scenario(
        "Genesys AudioConnector: the open transaction, then the bot speaks first (a greeting), paced to "
        "the phone in binary PCMU frames, then answers a question; the caller closes the session.",
        [WaitForBot(), Say(HOURS, "hours"), WaitForBot(), Hangup()], profile="greeter", carrier="genesys"),
    "genesys_barge_in_mid_answer": Scenario(
        "Genesys: the caller talks over the bot's answer: an event with the barge_in entity, and the "
        "answer is truncated at the playout clock.",
        [Say(DELIVERY, "delivery"), WaitForBot(heard_ms=1500), Say(INTERRUPT, "interrupt"),
         WaitForBot(), Silence(500), Hangup()], carrier="genesys"),
    "genesys_dtmf_digits": Scenario(
        "Genesys: the caller types 1 2 # (dtmf messages): the model hears the entry and answers it.",
        [Silence(400), Dtmf("1"), Silence(200), Dtmf("2"), Silence(200), Dtmf("#"), WaitForBot(), Hangup()],
        carrier="genesys"),
    "genesys_bot_hangs_up": Scenario(
        "Genesys: the model ends the call with hang_up; the goodbye plays out, then the gateway sends a "
        "disconnect (reason completed, outputVariables action hangup).",
        [Say(HOURS, "hours"), Silence(15_000)], profile="closer", carrier="genesys",
        sim={"tool_calls": {1: ToolCall("hang_up", {"reason": "the caller has what they need"})}}),
    "browser_bot_greets_first": Scenario(
        "Console: the bot speaks first (a greeting), sent to the page as binary PCM16 at 24 kHz in 100 ms pieces, "
        "each followed by a mark the page acknowledges once played; then a question is answered; the page sees "
        "the call's events.",
        [WaitForBot(), Say(HOURS, "hours"), WaitForBot(), Hangup()], profile="greeter", carrier="browser"),
    "browser_barge_in_mid_answer": Scenario(
        "Console: the operator talks over the answer: clear (the page acknowledges the dropped marks at once), "
        "and the item is truncated at the page's playout clock.",
        [Say(DELIVERY, "delivery"), WaitForBot(heard_ms=1500), Say(INTERRUPT, "interrupt"),
         WaitForBot(heard_ms=1000), Silence(2000), Hangup()], carrier="browser"),
    "browser_dtmf_digits": Scenario(
        "Console: the operator types 1 2 # on the page's keypad: the model hears the entry and answers it.",
        [Silence(400), Dtmf("1"), Silence(200), Dtmf("2"), Silence(200), Dtmf("#"), WaitForBot(), Hangup()],
        carrier="browser"),
    "browser_bot_hangs_up": Scenario(
        "Console: the model ends the call with hang_up; the goodbye plays out (every mark acknowledged), then "
        "the gateway tells the page ended and closes the socket.",
        [Say(HOURS, "hours"), Silence(15_000)], profile="closer", carrier="browser",
        sim={"tool_calls": {1: ToolCall("hang_up", {"reason": "the caller has what they need"})}}),
}


async def _hours_service() -> tuple[web.AppRunner, str]:
    """A local stand-in for a shop's opening-hours service (the http tool's endpoint)."""

    async def hours(request: web.Request) -> web.Response:
        await request.json()
        return web.json_response({"monday_to_saturday": "9:00-18:00", "sunday": "closed"})

    app = web.Application()
    app.router.add_post("/hours", hours)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hours"  # type: ignore[union-attr]


async def record(name: str, scenario: Scenario, out: Path) -> Path:
    tool_runner, tool_url = await _hours_service()
    try:
        return await _record(name, scenario, out, tool_url)
    finally:
        await tool_runner.cleanup()


async def _record(name: str, scenario: Scenario, out: Path, tool_url: str) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        ANSWERED.clear()

        def observe(event: str, _fields: dict[str, Any]) -> None:
            if event == "response.done":
                ANSWERED.set()

        settings = SimulatorSettings(**{"audio_speed": 4.0, "observer": observe, **scenario.sim})
        async with await start_simulator(settings) as sim:
            config = parse_config(CONFIG, env={"EP": sim.endpoint, "DIR": tmp, "TOOL_URL": tool_url,
                                               "BUDGET": str(scenario.reconnect_budget_s)})
            app = create_app(config)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            bot_audio = asyncio.Event()

            def on_event(_t: float, kind: str, _fields: dict[str, Any]) -> None:
                if kind == "bot_audio_start":
                    bot_audio.set()

            try:
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
                hook = asyncio.create_task(scenario.hook(sim, bot_audio)) if scenario.hook else None
                await PLACERS[scenario.carrier](app, port, name, scenario, on_event)
                if hook is not None:
                    await hook
            finally:
                await runner.cleanup()  # closes the recorder: the file is complete
        (recorded,) = Path(tmp).glob("*.jsonl")  # noqa: ASYNC240 (a one-off script)
        target = out / f"{name}.jsonl"
        target.write_text(recorded.read_text(encoding="utf-8"), encoding="utf-8")
        return target


# --- how each carrier's call is placed (the gateway runs in insecure dev mode on loopback) ---------


async def _twilio(app: web.Application, port: int, name: str, scenario: Scenario, on_event: Any) -> None:
    await place_call(f"ws://127.0.0.1:{port}/twilio/media", scenario.steps,
                     params={"profile": scenario.profile}, on_event=on_event)


async def _acs(app: web.Application, port: int, name: str, scenario: Scenario, on_event: Any) -> None:
    correlation = f"corr-{name}"
    token = app[CONTEXT].tokens.issue({"profile": scenario.profile, "correlation": correlation}, 3600, carrier="acs")
    await place_acs_call(f"ws://127.0.0.1:{port}/acs/media?ctx={token}", scenario.steps,
                         call_connection_id=f"acs-{name}", correlation_id=correlation, on_event=on_event)


async def _plivo(app: web.Application, port: int, name: str, scenario: Scenario, on_event: Any) -> None:
    await place_plivo_call(f"ws://127.0.0.1:{port}/plivo/media?profile={scenario.profile}", scenario.steps,
                           on_event=on_event)


async def _vonage(app: web.Application, port: int, name: str, scenario: Scenario, on_event: Any) -> None:
    await place_vonage_call(f"ws://127.0.0.1:{port}/vonage/media", scenario.steps,
                            headers={"call": f"vonage-{name}", "profile": scenario.profile}, on_event=on_event)


async def _telnyx(app: web.Application, port: int, name: str, scenario: Scenario, on_event: Any) -> None:
    await place_telnyx_call(f"ws://127.0.0.1:{port}/telnyx/media?profile={scenario.profile}", scenario.steps,
                            on_event=on_event)


async def _asterisk(app: web.Application, port: int, name: str, scenario: Scenario, on_event: Any) -> None:
    await place_asterisk_call(f"ws://127.0.0.1:{port}/asterisk/media", scenario.steps,
                              params={"profile": scenario.profile}, connection_id="media_connection1",
                              channel_id=f"1764000000.{len(name)}", on_event=on_event)


async def _genesys(app: web.Application, port: int, name: str, scenario: Scenario, on_event: Any) -> None:
    ids = uuid.uuid5(uuid.NAMESPACE_URL, f"genesys-fixture/{name}")
    await place_genesys_call(f"ws://127.0.0.1:{port}/genesys/audiohook", scenario.steps,
                             dnis=PROFILE_NUMBERS[scenario.profile], session_id=str(ids),
                             conversation_id=str(uuid.uuid5(ids, "conversation")),
                             organization_id=str(uuid.uuid5(ids, "organization")), on_event=on_event)


Placer = Callable[[web.Application, int, str, Scenario, Any], Awaitable[None]]
async def _browser(app: web.Application, port: int, name: str, scenario: Scenario, on_event: Any) -> None:
    await place_browser_call(f"ws://127.0.0.1:{port}/console/media", scenario.steps, profile=scenario.profile,
                             on_event=on_event)


PLACERS: dict[str, Placer] = {
    "twilio": _twilio,
    "acs": _acs,
    "plivo": _plivo,
    "vonage": _vonage,
    "telnyx": _telnyx,
    "asterisk": _asterisk,
    "genesys": _genesys,
    "browser": _browser,
}


async def main(names: list[str]) -> int:
    log.configure(level="warning")
    OUT.mkdir(parents=True, exist_ok=True)
    for name in names or list(SCENARIOS):
        if name not in SCENARIOS:
            print(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}", file=sys.stderr)
            return 2
        path = await record(name, SCENARIOS[name], OUT)
        print(f"recorded {path.relative_to(OUT.parent.parent.parent)}: {SCENARIOS[name].description}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="scenarios to record (default: all)")
    raise SystemExit(asyncio.run(main(parser.parse_args().names)))

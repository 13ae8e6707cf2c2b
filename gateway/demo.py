"""``gateway demo``: one simulated phone call through the real gateway, end to end.

The built-in Voice Live simulator and the gateway start on free loopback ports; a softphone that
behaves like Twilio calls the gateway's voice webhook, opens the media stream and speaks three
recorded sentences: a question, a follow-up, and an interruption while the bot gives its long
second answer. The demo prints the call's timeline and writes a two-channel WAV file of it.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.app import create_app
from gateway.audio import ASSETS, load_ulaw_8k
from gateway.config import GatewayConfig, load_config, parse_config
from gateway.simulator import SimulatorSettings, start_simulator
from gateway.softphone import CallReport, Hangup, Say, WaitForBot, place_call

DEMO_CONFIG = """
voicelive:
  endpoint: ""
twilio:
  auth_token: ${DEMO_TWILIO_TOKEN}
profiles:
  demo:
    model: gpt-realtime
    instructions: You answer the phone for a small shop. Be brief and friendly.
    voice: {type: azure-standard, name: en-US-Ava:DragonHDLatestNeural}
    turn_detection: {type: azure_semantic_vad, silence_duration_ms: 500}
    input_transcription: {model: azure-speech, language: en-US}
    greeting: Hello, thanks for calling. How can I help you today?
routes:
  default: demo
"""

BYTES_PER_MS = 8  # µ-law 8 kHz on the phone leg


@dataclass
class Timeline:
    t0: float = field(default_factory=time.monotonic)
    rows: list[tuple[float, str, str, dict[str, Any]]] = field(default_factory=list)

    def add(self, source: str, event: str, fields: dict[str, Any]) -> None:
        self.rows.append(((time.monotonic() - self.t0) * 1000.0, source, event, dict(fields)))

    def find(self, source: str, event: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, f) for t, s, e, f in self.rows if s == source and e == event]


def _describe(source: str, event: str, f: dict[str, Any]) -> str | None:
    """One readable line per event worth showing; None hides it."""
    match source, event:
        case "phone", "webhook":
            return f"voice webhook answered; media stream {f.get('stream_url')}"
        case "phone", "connected":
            return "media stream open"
        case "phone", "speech_start":
            return f"caller starts speaking: \"{f.get('label')}\""
        case "phone", "speech_end":
            return "caller stops speaking"
        case "phone", "bot_audio_start":
            return "bot audio starts playing on the phone"
        case "phone", "bot_audio_end":
            return "bot audio stops playing"
        case "phone", "clear":
            return (f"phone playback flushed (clear): {f.get('discarded_bytes', 0) // BYTES_PER_MS} ms "
                    "of queued bot audio discarded")
        case "phone", "hangup":
            return "caller hangs up"
        case "gateway", "session.ready":
            return f"Voice Live session ready ({f.get('format')} both ways) after {f.get('ready_ms')} ms"
        case "gateway", "caller.speech_started":
            return "Voice Live: caller speech started"
        case "gateway", "caller.speech_stopped":
            return "Voice Live: caller speech stopped"
        case "gateway", "caller.transcript":
            return f"transcript (caller): {f.get('text')}"
        case "gateway", "bot.first_audio":
            after = f.get("after_speech_stopped_ms")
            return "first bot audio forwarded" + (f" ({after} ms after speech stopped)" if after else "")
        case "gateway", "bot.transcript":
            return f"transcript (bot): {f.get('text')}"
        case "gateway", "barge_in":
            cut = f.get("truncated_at_ms")
            return ("BARGE-IN: clear sent, response cancelled"
                    + (f", item truncated at {cut} ms" if cut else ""))
        case "gateway", "clear_sent":
            return f"clear sent {f.get('reaction_ms')} ms after speech_started arrived"
        case "gateway", "response.done":
            return f"response {f.get('status')}" + (f" ({f['reason']})" if f.get("reason") else "")
        case "gateway", "call.ended":
            return f"call ended ({f.get('reason')})"
        case "voicelive", "truncated":
            return f"simulator truncated {f.get('item_id')} at {f.get('audio_end_ms')} ms"
    return None


def _print_timeline(timeline: Timeline) -> None:
    print("\n   time  leg        event")
    for t, source, event, f in timeline.rows:
        text = _describe(source, event, f)
        if text:
            print(f"{t / 1000:7.3f}s {source:<10} {text}")


def _summary(timeline: Timeline, report: CallReport, sim_session: Any) -> tuple[list[str], bool]:
    lines: list[str] = []
    ok = True
    ends = [t for t, _ in timeline.find("phone", "speech_end")]
    starts = [t for t, _ in timeline.find("phone", "bot_audio_start")]
    for i, end in enumerate(ends, 1):
        heard = next((s for s in starts if s > end), None)
        if heard is not None:
            lines.append(f"turn {i}: caller stopped → bot heard after {heard - end:.0f} ms "
                         "(includes the 500 ms end-of-speech silence Voice Live waits for)")
    barge = timeline.find("gateway", "barge_in")
    clear_sent = timeline.find("gateway", "clear_sent")
    clear_heard = timeline.find("phone", "clear")
    started = timeline.find("gateway", "caller.speech_started")
    if not barge or not clear_heard:
        lines.append("no barge-in happened: the caller did not talk over the bot")
        return lines, False
    b_t, b = barge[-1]
    if clear_sent:
        lines.append(f"barge-in reaction inside the gateway: {clear_sent[-1][1]['reaction_ms']} ms "
                     "(speech_started received → clear sent)")
    before = [t for t, _ in started if t <= b_t]
    if before:
        lines.append(f"barge-in reaction at the phone: {clear_heard[-1][0] - before[-1]:.1f} ms "
                     "(speech_started received → phone flushed its playback)")
    cut = b.get("truncated_at_ms")
    played_total = clear_heard[-1][1].get("played_bytes_total", 0)
    prior = 0
    for item_id, size in sim_session.items_audio_bytes.items():
        if item_id == b.get("item_id"):
            break
        prior += size
    heard_ms = (played_total - prior) / BYTES_PER_MS
    if cut is None:
        lines.append("no truncation was sent")
        ok = False
    else:
        lines.append(f"truncation: {b.get('item_id')} cut at {cut} ms of {b.get('received_ms')} ms received; "
                     f"the phone had played {heard_ms:.0f} ms of it (difference {cut - heard_ms:+.0f} ms)")
        content = (sim_session.items.get(b.get("item_id")) or {}).get("content") or [{}]
        remembered = content[0].get("transcript")
        if remembered is not None:
            lines.append(f"the model now remembers saying only: \"{remembered}\"")
    if report.violations:
        lines.append(f"protocol violations seen by the phone: {report.violations}")
        ok = False
    return lines, ok


def _demo_config(config_path: str | None, twilio_token: str) -> GatewayConfig:
    env = {"TWILIO_AUTH_TOKEN": twilio_token, "DEMO_TWILIO_TOKEN": twilio_token}
    if config_path:
        return load_config(config_path, env=env)
    return parse_config(DEMO_CONFIG, source="<demo>", env=env)


async def run_demo(record: str | Path = "demo-call.wav", config_path: str | None = None,
                   quiet: bool = False) -> int:
    twilio_token = secrets.token_hex(16)  # the softphone signs its requests like Twilio does
    config = _demo_config(config_path, twilio_token)
    timeline = Timeline()
    _, profile = config.route(None)

    def sim_observer(event: str, fields: dict[str, Any]) -> None:
        timeline.add("voicelive", event, fields)

    def observer_for(call_id: str):
        return lambda event, _t, fields: timeline.add("gateway", event, fields)

    def phone_event(_t: float, kind: str, fields: dict[str, Any]) -> None:
        timeline.add("phone", kind, fields)

    caller = {name: load_ulaw_8k(ASSETS / f"caller_{name}.wav") for name in ("hours", "delivery", "interrupt")}
    steps: list[Any] = []
    if profile.greeting is not None:
        steps.append(WaitForBot())
    steps += [
        Say(caller["hours"], "Hi! What are your opening hours this week?"),
        WaitForBot(),
        Say(caller["delivery"], "Great, thanks. And do you deliver on weekends?"),
        WaitForBot(heard_ms=2500),
        Say(caller["interrupt"], "Sorry to interrupt, can I talk to a person instead?"),
        WaitForBot(),
        Hangup(),
    ]

    async with await start_simulator(SimulatorSettings(observer=sim_observer)) as simulator:
        app = create_app(config, voicelive_endpoint=simulator.endpoint, observer_factory=observer_for)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            if not quiet:
                print(f"gateway on 127.0.0.1:{port}, Voice Live simulator at {simulator.endpoint}; "
                      "placing a call to the Twilio voice webhook...")
            report = await place_call(f"http://127.0.0.1:{port}/twilio/voice", steps, record=record,
                                      on_event=phone_event, auth_token=twilio_token)
        finally:
            await runner.cleanup()
        sessions = simulator.state.sessions
        sim_session = sessions[-1] if sessions else None
    if sim_session is None:
        print("the gateway never opened a Voice Live session", flush=True)
        return 1
    lines, ok = _summary(timeline, report, sim_session)
    if not quiet:
        _print_timeline(timeline)
        print("\nSummary")
        for line in lines:
            print("  " + line)
        print(f"  recording: {record} (left: caller, right: bot as heard on the phone; 8 kHz)")
    return 0 if ok else 1

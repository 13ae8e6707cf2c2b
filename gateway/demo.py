"""``gateway demo``: one simulated phone call through the real gateway, end to end; or, with
``--console``, the gateway on the simulator with its console open on loopback, for an operator to
call a profile from a web page's microphone (:func:`run_console_demo`).

The built-in Voice Live simulator and the gateway start on free loopback ports; a softphone that
behaves like a carrier (the first of the registry whose phone places the demo's call, see
:class:`DemoPhone`) calls the gateway and speaks three recorded sentences: a question, a
follow-up, and an interruption while the bot gives its long second answer. The demo prints the
call's timeline and writes a two-channel WAV file of it.

Its latency figures come from audible speech, not from clip edges: recorded clips (and the bot's
audio) start and end with silence, so the call audio the phone sent and played is measured by
energy (10 ms windows louder than -40 dBFS, in runs of at least 30 ms so a click does not count).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from aiohttp import web
from pydantic import SecretStr

from gateway.app import create_app, drain
from gateway.audio import ASSETS, G711_ULAW, load_ulaw_8k, ulaw_to_array
from gateway.config import GatewayConfig, Profile, load_config, parse_config
from gateway.simulator import SimulatorSettings, start_simulator
from gateway.softphone import CallReport, Hangup, Say, WaitForBot
from gateway.softphone.script import Step
from gateway.softphone.session import EventCallback

DEMO_CONFIG = """
voicelive:
  endpoint: ""
profiles:
  demo:
    model: gpt-realtime
    instructions: You answer the phone for a small shop. Be brief and friendly.
    voice: {type: azure-standard, name: en-US-Ava:DragonHDLatestNeural}
    turn_detection: {type: azure_semantic_vad, silence_duration_ms: 500}
    input_transcription: {model: mai-transcribe, language: en-US}
    greeting: Hello, thanks for calling. How can I help you today?
routes:
  default: demo
"""

BYTES_PER_MS = 8  # µ-law 8 kHz on the phone leg
RATE = 8000

# --- audible speech, by energy (pure functions: audio in, milliseconds out) ----------------------

WINDOW_MS = 10
AUDIBLE_DBFS = -40.0  # RMS of a 10 ms window, relative to full scale (32768)
MIN_AUDIBLE_MS = 30  # shorter bursts (a click) are not speech

Span = tuple[float, float]  # [start_ms, end_ms) of audible sound


def audible_windows(samples: np.ndarray, rate: int = RATE, threshold_dbfs: float = AUDIBLE_DBFS) -> np.ndarray:
    """One flag per whole 10 ms window of 16-bit ``samples``: is its RMS above ``threshold_dbfs``?

    A partial window at the end is not looked at.
    """
    window = rate * WINDOW_MS // 1000
    count = samples.size // window
    frames = np.asarray(samples[: count * window], dtype=np.float64).reshape(count, window)
    threshold = (10.0 ** (threshold_dbfs / 20.0) * 32768.0) ** 2
    return np.mean(frames * frames, axis=1) > threshold


def audible_spans(
    samples: np.ndarray,
    rate: int = RATE,
    *,
    threshold_dbfs: float = AUDIBLE_DBFS,
    min_ms: int = MIN_AUDIBLE_MS,
) -> list[Span]:
    """``(start_ms, end_ms)`` of every run of audible windows lasting at least ``min_ms``."""
    loud = audible_windows(samples, rate, threshold_dbfs).astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], loud, [0]))))
    min_windows = max(1, math.ceil(min_ms / WINDOW_MS))
    return [
        (float(start * WINDOW_MS), float(end * WINDOW_MS))
        for start, end in zip(edges[0::2], edges[1::2], strict=True)
        if end - start >= min_windows
    ]


def audible_onset_ms(
    samples: np.ndarray, rate: int = RATE, *, threshold_dbfs: float = AUDIBLE_DBFS, min_ms: int = MIN_AUDIBLE_MS
) -> float | None:
    """Where the first audible sound in ``samples`` starts (ms); None if nothing is audible."""
    spans = audible_spans(samples, rate, threshold_dbfs=threshold_dbfs, min_ms=min_ms)
    return spans[0][0] if spans else None


def audible_offset_ms(
    samples: np.ndarray, rate: int = RATE, *, threshold_dbfs: float = AUDIBLE_DBFS, min_ms: int = MIN_AUDIBLE_MS
) -> float | None:
    """Where the last audible sound in ``samples`` ends (ms); None if nothing is audible."""
    spans = audible_spans(samples, rate, threshold_dbfs=threshold_dbfs, min_ms=min_ms)
    return spans[-1][1] if spans else None


def first_audible_after(spans: Sequence[Span], start_ms: float, end_ms: float = math.inf) -> float | None:
    """The first audible moment in ``[start_ms, end_ms)`` (``start_ms`` if sound is going on then)."""
    for start, end in spans:
        if end > start_ms and start < end_ms:
            return max(start, start_ms)
    return None


def last_audible_within(spans: Sequence[Span], start_ms: float, end_ms: float) -> float | None:
    """The end of the last audible sound in ``[start_ms, end_ms)`` (cut at ``end_ms``)."""
    last = None
    for start, end in spans:
        if end > start_ms and start < end_ms:
            last = min(end, end_ms)
    return last


# --- the call measured from its audio ------------------------------------------------------------


@dataclass(frozen=True)
class Utterance:
    """One ``Say`` clip on the call timeline (ms since the media socket opened)."""

    label: str
    clip_start_ms: float
    clip_end_ms: float
    onset_ms: float | None  # the first audible sound of the clip
    offset_ms: float | None  # the end of its last audible sound


@dataclass(frozen=True)
class Turn:
    """The bot's side of one caller utterance, as played on the phone."""

    utterance: Utterance
    reply_onset_ms: float | None  # the bot's first audible sound after the caller's audible end
    talked_over_until_ms: float | None  # the bot's last audible sound from the caller's first one on

    @property
    def latency_ms(self) -> float | None:
        """Caller's audible speech ended → the bot's reply became audible."""
        if self.reply_onset_ms is None or self.utterance.offset_ms is None:
            return None
        return self.reply_onset_ms - self.utterance.offset_ms

    @property
    def overlap_ms(self) -> float | None:
        """Caller's first audible sound → the bot's last audible sound while the caller talked."""
        if self.talked_over_until_ms is None or self.utterance.onset_ms is None:
            return None
        return self.talked_over_until_ms - self.utterance.onset_ms


def locate_utterances(caller_audio: bytes, clips: Sequence[tuple[str, bytes]]) -> list[Utterance]:
    """Find each µ-law clip, in order, in the caller's side of the call and measure where it is audible.

    Clips the call ended before are left out.
    """
    found: list[Utterance] = []
    pos = 0
    for label, clip in clips:
        at = caller_audio.find(clip, pos) if clip else -1
        if at < 0:
            break
        pos = at + len(clip)
        samples = ulaw_to_array(clip)
        base = at / BYTES_PER_MS
        onset, offset = audible_onset_ms(samples), audible_offset_ms(samples)
        found.append(Utterance(
            label,
            clip_start_ms=base,
            clip_end_ms=pos / BYTES_PER_MS,
            onset_ms=None if onset is None else base + onset,
            offset_ms=None if offset is None else base + offset,
        ))
    return found


def measure_turns(utterances: Sequence[Utterance], bot_spans: Sequence[Span], call_end_ms: float) -> list[Turn]:
    """For each utterance: when the bot's reply became audible, and how long the bot talked over it.

    The reply is looked for up to the next utterance (or the end of the call).
    """
    turns = []
    for i, utt in enumerate(utterances):
        until = utterances[i + 1].clip_start_ms if i + 1 < len(utterances) else call_end_ms
        reply = None if utt.offset_ms is None else first_audible_after(bot_spans, utt.offset_ms, until)
        over = None
        if utt.onset_ms is not None:
            over = last_audible_within(bot_spans, utt.onset_ms, until if reply is None else reply)
        turns.append(Turn(utt, reply, over))
    return turns


def clip_edge_latencies(events: Sequence[tuple[float, str, dict[str, Any]]]) -> list[float | None]:
    """Per utterance: the caller's clip ended → the phone started playing bot audio (softphone events).

    The clip-edge figure: it takes the silence at the edges of the clips for speech.
    """
    latencies: list[float | None] = []
    for i, (t, kind, _) in enumerate(events):
        if kind != "speech_end":
            continue
        nxt = next(((u, k) for u, k, _ in events[i + 1 :] if k in ("bot_audio_start", "speech_start")), None)
        latencies.append(nxt[0] - t if nxt is not None and nxt[1] == "bot_audio_start" else None)
    return latencies


def measure_call(report: CallReport, clips: Sequence[tuple[str, bytes]]) -> list[Turn]:
    """The call's turns, from the audio the phone sent and the bot audio it played (8 kHz µ-law)."""
    if report.audio_format != G711_ULAW:
        raise ValueError(f"measure_call reads 8 kHz µ-law call audio (this call's is {report.audio_format.name})")
    utterances = locate_utterances(report.caller_audio, clips)
    bot_spans = audible_spans(ulaw_to_array(report.bot_audio))
    return measure_turns(utterances, bot_spans, len(report.bot_audio) / BYTES_PER_MS)


# --- timeline and summary ------------------------------------------------------------------------


@dataclass
class Timeline:
    t0: float = field(default_factory=time.monotonic)
    rows: list[tuple[float, str, str, dict[str, Any]]] = field(default_factory=list)
    phone_offset_ms: float | None = None  # this timeline's time when the softphone's clock read 0

    def add(self, source: str, event: str, fields: dict[str, Any], at_ms: float | None = None) -> None:
        t = (time.monotonic() - self.t0) * 1000.0 if at_ms is None else at_ms
        self.rows.append((t, source, event, dict(fields)))

    def add_phone(self, t_ms: float, kind: str, fields: dict[str, Any]) -> None:
        """A softphone event; ``t_ms`` (its own clock) places the call audio on this timeline."""
        self.add("phone", kind, fields)
        if kind == "connected":
            self.phone_offset_ms = self.rows[-1][0] - t_ms

    def add_audible(self, turns: Sequence[Turn]) -> None:
        """Rows for where speech was audible in the call audio (which runs on the softphone's clock)."""
        if self.phone_offset_ms is None:
            return
        for turn in turns:
            utt = turn.utterance
            for at, event, fields in (
                (utt.onset_ms, "caller_audible_start", {"into_clip_ms": _minus(utt.onset_ms, utt.clip_start_ms)}),
                (utt.offset_ms, "caller_audible_end", {"left_in_clip_ms": _minus(utt.clip_end_ms, utt.offset_ms)}),
                (turn.talked_over_until_ms, "bot_audible_end", {"overlap_ms": turn.overlap_ms}),
                (turn.reply_onset_ms, "bot_audible_start", {"latency_ms": turn.latency_ms}),
            ):
                if at is not None:
                    self.add("phone", event, fields, at_ms=self.phone_offset_ms + at)
        self.rows.sort(key=lambda row: row[0])

    def find(self, source: str, event: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, f) for t, s, e, f in self.rows if s == source and e == event]


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _describe(source: str, event: str, f: dict[str, Any]) -> str | None:
    """One readable line per event worth showing; None hides it."""
    match source, event:
        case "phone", "webhook":
            return f"voice webhook answered; media stream {f.get('stream_url')}"
        case "phone", "connected":
            return "media stream open"
        case "phone", "speech_start":
            return f"caller's clip starts: \"{f.get('label')}\""
        case "phone", "speech_end":
            return "caller's clip ends"
        case "phone", "caller_audible_start":
            return f"caller audible ({f.get('into_clip_ms'):.0f} ms into the clip)"
        case "phone", "caller_audible_end":
            return f"caller no longer audible ({f.get('left_in_clip_ms'):.0f} ms of silence left in the clip)"
        case "phone", "bot_audio_start":
            return "bot audio starts playing on the phone"
        case "phone", "bot_audible_start":
            return f"bot audible on the phone ({f.get('latency_ms'):.0f} ms after the caller's audible end)"
        case "phone", "bot_audible_end":
            return f"bot's last audible sound on the phone ({f.get('overlap_ms'):.0f} ms talking over the caller)"
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


def _silence_wait_ms(profile: Profile) -> int | None:
    """The end-of-speech silence the profile's turn detection waits for, when it is configured."""
    wait = getattr(profile.turn_detection, "silence_duration_ms", None)
    return int(wait) if wait else None


def _latency_lines(turns: Sequence[Turn], clip_edges: Sequence[float | None], wait_ms: int | None) -> list[str]:
    lines = []
    for i, turn in enumerate(turns):
        latency = turn.latency_ms
        if latency is None:
            lines.append(f"turn {i + 1}: the bot's reply never became audible on the phone")
            continue
        line = f"turn {i + 1}: caller's audible speech ended → bot audible on the phone after {latency:.0f} ms"
        if wait_ms is not None:
            line += f", of which {wait_ms} ms is the end-of-speech silence the turn detection waits for"
        edge = clip_edges[i] if i < len(clip_edges) else None
        if edge is not None:
            line += f" (measured between clip edges, which carry silence, it would read {edge:.0f} ms)"
        lines.append(line)
    return lines


def _interrupting_turn(report: CallReport) -> int | None:
    """Index of the utterance the caller was saying when the phone last flushed its playback."""
    clears = report.events_of("clear")
    if not clears:
        return None
    said = [t for t, _ in report.events_of("speech_start") if t <= clears[-1][0]]
    return len(said) - 1 if said else None


def _overlap_line(turns: Sequence[Turn], report: CallReport) -> str | None:
    index = _interrupting_turn(report)
    if index is None or index >= len(turns):
        return None
    overlap = turns[index].overlap_ms
    if overlap is None:
        return "barge-in, audible: the bot was already silent when the caller's speech became audible"
    return (f"barge-in, audible: caller and bot talked over each other for {overlap:.0f} ms "
            "(caller's first audible sound → bot's last audible sound on the phone)")


def _truncation_lines(barge: dict[str, Any], played_total: int, sim_session: Any) -> tuple[list[str], bool]:
    cut = barge.get("truncated_at_ms")
    if cut is None:
        return ["no truncation was sent"], False
    prior = 0
    for item_id, size in sim_session.items_audio_bytes.items():
        if item_id == barge.get("item_id"):
            break
        prior += size
    heard_ms = (played_total - prior) / BYTES_PER_MS
    lines = [f"truncation: {barge.get('item_id')} cut at {cut} ms of {barge.get('received_ms')} ms received; "
             f"the phone had played {heard_ms:.0f} ms of it (difference {cut - heard_ms:+.0f} ms)"]
    content = (sim_session.items.get(barge.get("item_id")) or {}).get("content") or [{}]
    remembered = content[0].get("transcript")
    if remembered is not None:
        lines.append(f"the model now remembers saying only: \"{remembered}\"")
    return lines, True


def _barge_in_lines(timeline: Timeline, sim_session: Any) -> tuple[list[str], bool]:
    barge = timeline.find("gateway", "barge_in")
    clear_sent = timeline.find("gateway", "clear_sent")
    clear_heard = timeline.find("phone", "clear")
    started = timeline.find("gateway", "caller.speech_started")
    if not barge or not clear_heard:
        return ["no barge-in happened: the caller did not talk over the bot"], False
    lines = []
    b_t, b = barge[-1]
    if clear_sent:
        lines.append(f"barge-in reaction inside the gateway: {clear_sent[-1][1]['reaction_ms']} ms "
                     "(speech_started received → clear sent)")
    before = [t for t, _ in started if t <= b_t]
    if before:
        lines.append(f"barge-in reaction at the phone: {clear_heard[-1][0] - before[-1]:.1f} ms "
                     "(speech_started received → phone flushed its playback)")
    truncation, ok = _truncation_lines(b, clear_heard[-1][1].get("played_bytes_total", 0), sim_session)
    return lines + truncation, ok


def _summary(timeline: Timeline, report: CallReport, sim_session: Any, turns: Sequence[Turn],
             wait_ms: int | None) -> tuple[list[str], bool]:
    lines = _latency_lines(turns, clip_edge_latencies(report.events), wait_ms)
    ok = bool(turns) and all(turn.latency_ms is not None for turn in turns)
    overlap = _overlap_line(turns, report)
    if overlap:
        lines.append(overlap)
    barge_lines, barge_ok = _barge_in_lines(timeline, sim_session)
    lines += barge_lines
    if report.violations:
        lines.append(f"protocol violations seen by the phone: {report.violations}")
    return lines, ok and barge_ok and not report.violations


@runtime_checkable
class DemoPhone(Protocol):
    """What the demo asks of a carrier's phone module (module-level names and functions)."""

    DEMO_SECRET_ENV: str  # the environment variable of the carrier's credential: the demo sets it
    DEMO_SECTION: str  # the carrier's section of the demo's config (YAML), naming DEMO_SECRET_ENV
    DEMO_PLACING: str  # what the demo prints as it places the call

    async def place_demo_call(self, base_url: str, steps: Sequence[Step], *, secret: str,
                              record: str | Path | None, on_event: EventCallback) -> CallReport:
        """Call the gateway at ``base_url`` like the carrier does, authenticated with ``secret``."""


def demo_phone() -> DemoPhone:
    """The first carrier's phone, in the registry's order, that places the demo's call."""
    from gateway.carriers.registry import phones

    for module in phones():
        if isinstance(module, DemoPhone):
            return module
    raise LookupError("no carrier's phone places the demo's call")


def _demo_config(config_path: str | None, phone: DemoPhone, secret: str) -> GatewayConfig:
    env = {phone.DEMO_SECRET_ENV: secret}
    if config_path:
        return load_config(config_path, env=env)
    return parse_config(DEMO_CONFIG + phone.DEMO_SECTION, source="<demo>", env=env)


async def run_demo(record: str | Path = "demo-call.wav", config_path: str | None = None,
                   quiet: bool = False) -> int:
    phone = demo_phone()
    secret = secrets.token_hex(16)  # the softphone authenticates its requests like the carrier does
    config = _demo_config(config_path, phone, secret)
    timeline = Timeline()
    _, profile = config.route(None)

    def sim_observer(event: str, fields: dict[str, Any]) -> None:
        timeline.add("voicelive", event, fields)

    def observer_for(call_id: str) -> Callable[[str, float, dict[str, Any]], None]:
        return lambda event, _t, fields: timeline.add("gateway", event, fields)

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
                      + phone.DEMO_PLACING)
            report = await phone.place_demo_call(f"http://127.0.0.1:{port}", steps, secret=secret, record=record,
                                                 on_event=timeline.add_phone)
        finally:
            await runner.cleanup()
        sessions = simulator.state.sessions
        sim_session = sessions[-1] if sessions else None
    if sim_session is None:
        print("the gateway never opened a Voice Live session", flush=True)
        return 1
    turns = measure_call(report, [(step.label, step.audio) for step in steps if isinstance(step, Say)])
    timeline.add_audible(turns)
    lines, ok = _summary(timeline, report, sim_session, turns, _silence_wait_ms(profile))
    if not quiet:
        _print_timeline(timeline)
        print("\nSummary")
        for line in lines:
            print("  " + line)
        print("  (audible: 10 ms windows of the call audio louder than "
              f"{AUDIBLE_DBFS:g} dBFS, in runs of at least {MIN_AUDIBLE_MS} ms)")
        print(f"  recording: {record} (left: caller, right: bot as heard on the phone; 8 kHz)")
    return 0 if ok else 1


# --- the console on the simulator ----------------------------------------------------------------

CONSOLE_DEMO_CONFIG = DEMO_CONFIG.replace("routes:", """  brief:
    model: gpt-realtime
    instructions: You are a terse assistant. Answer in one short sentence.
    voice: {type: azure-standard, name: en-US-Andrew:DragonHDLatestNeural}
    turn_detection: {type: server_vad, silence_duration_ms: 400}
    input_transcription: {model: mai-transcribe, language: en-US}
routes:""")
CONSOLE_DRAIN_S = 5.0  # at Ctrl-C: how long the calls in progress get to end


def _console_config(config_path: str | None, token: str) -> GatewayConfig:
    """The demo's profiles (or those of ``config_path``), with the console's token set."""
    config = load_config(config_path, env={}) if config_path else parse_config(CONSOLE_DEMO_CONFIG, source="<demo>",
                                                                                env={})
    gateway = config.gateway.model_copy(update={"console_token": SecretStr(token)})
    return config.model_copy(update={"gateway": gateway})


async def run_console_demo(config_path: str | None = None, port: int = 0, host: str = "127.0.0.1") -> int:
    """Run the gateway on the built-in Voice Live simulator with its console on, on loopback only, until
    SIGINT or SIGTERM. The console asks for a token made for this run, printed apart from the address
    (so that it lands in no address history or proxy log): anyone else on the machine who finds the
    port still has to log in."""
    token = secrets.token_urlsafe(18)
    config = _console_config(config_path, token)
    async with await start_simulator(SimulatorSettings(record=False)) as simulator:
        app = create_app(config, voicelive_endpoint=simulator.endpoint)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        signals = (signal.SIGINT, signal.SIGTERM)
        try:
            for sig in signals:
                loop.add_signal_handler(sig, stop.set)
            site = web.TCPSite(runner, host, port)
            await site.start()
            bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            profiles = ", ".join(config.profiles)
            print(f"Console: http://{host}:{bound}/console", flush=True)
            print(f"Console token: {token}", flush=True)
            print(f"Open the address, paste the token into the login form, pick a profile ({profiles}) and press "
                  "Call. Voice Live is the built-in simulator: it answers any speech with recorded replies. "
                  "Ctrl-C stops the gateway.", flush=True)
            await stop.wait()
            await drain(app, CONSOLE_DRAIN_S)
        finally:
            for sig in signals:
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
            await runner.cleanup()
    return 0

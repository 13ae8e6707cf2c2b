"""End-to-end turn latency: a caller who talks in turns, and what each turn's wait is made of.

Each simulated call (``bench/loadgen.py --turns``) says something (a loud tone for ``speech_ms``),
falls silent and waits for the bot; once the bot's reply has played at the phone and a pause has
passed, it speaks again. The Voice Live stand-in (``gateway simulator --bench --turns``) ends the
caller's turn after the session's ``silence_duration_ms`` of quiet frames, answers
``response_delay_ms`` after the frame that completed that silence arrived, and stamps the reply's
first block of audio with a turn marker (see ``gateway/simulator/bench.py``).

Every time is read from ``time.monotonic``, one clock for every process on the machine. For one
turn, with *E* the caller's end of speech (the send time of its last loud frame + 20 ms, that
frame's audible end) and *P* when the reply's first audio is played at the phone (its arrival, or
later if the phone is still playing earlier audio):

- end to end = P - E;
- phone playout alignment = P - arrival (0 when nothing else was playing);
- the stand-in's share = (sent time of the frame that completed the silence - E), the caller's
  silence its VAD waited for, + (first delta sent - that frame's arrival at the stand-in), its
  response delay and its own work;
- the gateway's share = end to end - the stand-in's share - alignment, which is, exactly, the time
  the two messages on the turn's critical path spent between the phone and the stand-in: the
  caller frame that completed the silence (phone -> gateway -> Voice Live) and the reply's first
  audio (Voice Live -> gateway -> phone). It includes loopback and the harness's own reading of
  its sockets, as any delay measured from outside the gateway does.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from gateway.audio import array_to_ulaw
from gateway.simulator.bench import TurnStamp

FRAME_S = 0.02
RATE = 8000
# One 20 ms frame of a 400 Hz tone at -12 dBFS: 160 samples are exactly 8 periods, so every frame
# of speech is the same bytes.
TONE_FRAME = array_to_ulaw(
    (0.25 * 32767 * np.sin(2 * np.pi * 400 * np.arange(160) / RATE)).astype(np.int16))

SPEAKING, WAITING, RESTING = "speaking", "waiting", "resting"

# the figures of a turn, in ms (Talker.samples rows, in this order)
FIELDS = ("end_to_end", "stand_in", "gateway", "alignment", "gateway_in", "gateway_out", "vad_wait", "held")


class Talker:
    """One caller's side of a conversation in turns, driven by the phone's 20 ms frame clock.

    ``tick`` says whether the frame about to be sent is speech; ``replied`` takes the turn marker
    of the reply's first block when it reaches the phone. Turns whose end of speech falls inside
    ``window`` are measured."""

    def __init__(self, number: int, window: tuple[float, float], start: float, speech_ms: int = 600,
                 gap_ms: int = 400, timeout_s: float = 3.0) -> None:
        if speech_ms < 100 or gap_ms < 0 or timeout_s <= 0:
            raise ValueError("speech_ms must be >= 100, gap_ms >= 0 and timeout_s > 0")
        self.number = number
        self.window = window
        self.speech_frames = max(1, round(speech_ms / 1000 / FRAME_S))
        self.base_gap_s = self.gap_s = gap_ms / 1000
        self.timeout_s = timeout_s
        self._random = random.Random(number)
        self.state = RESTING
        # the first turn starts at a random point of a turn's length: calls do not speak in step
        self.until = start + self._random.uniform(0.0, speech_ms / 1000 + 1.5 + self.gap_s)
        self.frames_left = 0
        self.last_speech: tuple[int, float] | None = None  # (frame number, send time) of the last loud frame
        self.replied_at: float | None = None
        self.samples: list[tuple[float, ...]] = []
        self.unanswered = 0  # measured turns the bot did not answer within timeout_s
        self.unmatched = 0  # replies whose marker named another frame than the caller's last loud one

    def _measured(self, end: float) -> bool:
        return self.window[0] <= end <= self.window[1]

    def tick(self, seq: int, now: float, play_end: float) -> bool:
        """Whether frame ``seq``, sent at ``now``, is speech (``play_end``: when the bot audio
        received so far will have played)."""
        if self.state == WAITING:
            assert self.last_speech is not None
            if self.replied_at is not None:
                if now >= max(play_end, self.replied_at) + self.gap_s:
                    self._speak()
            elif now - self.last_speech[1] > self.timeout_s:
                if self._measured(self.last_speech[1] + FRAME_S):
                    self.unanswered += 1
                self._speak()
        elif self.state == RESTING and now >= self.until:
            self._speak()
        if self.state != SPEAKING:
            return False
        self.frames_left -= 1
        if self.frames_left <= 0:
            self.state = WAITING
            self.last_speech = (seq, now)
            self.replied_at = None
        return True

    def _speak(self) -> None:
        self.state = SPEAKING
        self.frames_left = self.speech_frames
        # the next pause, at random between gap and twice the gap: turns drift apart across calls
        self.gap_s = self._random.uniform(1.0, 2.0) * self.base_gap_s

    def replied(self, stamp: TurnStamp, arrived: float, play_end: float) -> tuple[float, ...] | None:
        """The reply's first block reached the phone at ``arrived`` (``play_end``: when the audio
        received before it will have played). The turn's figures, if measured."""
        _, seq, completed_sent, completed_arrived, answered = stamp
        if self.state != WAITING or self.last_speech is None or self.replied_at is not None \
                or seq != self.last_speech[0]:
            self.unmatched += 1
            return None
        self.replied_at = arrived
        end = self.last_speech[1] + FRAME_S  # the last loud frame's audible end
        if not self._measured(end):
            return None
        figures = turn_figures(end, arrived, play_end, completed_sent, completed_arrived, answered)
        self.samples.append(figures)
        return figures

    def pending(self) -> int:
        """1 if a measured turn is still waiting for its answer (at hang-up)."""
        return int(self.state == WAITING and self.replied_at is None and self.last_speech is not None
                   and self._measured(self.last_speech[1] + FRAME_S))


def turn_figures(end: float, arrived: float, play_end: float, completed_sent: float,
                 completed_arrived: float, answered: float) -> tuple[float, ...]:
    """A turn's figures in ms, in the order of FIELDS (all times on one monotonic clock, s).

    ``end``: the caller's end of speech; ``arrived``: the reply's first audio at the phone;
    ``play_end``: when the audio the phone had before it will have played; ``completed_sent`` /
    ``completed_arrived``: the caller frame that completed the stand-in's silence, sent by the
    phone / read by the stand-in; ``answered``: the stand-in sent the first audio delta."""
    played = max(arrived, play_end)
    end_to_end = played - end
    alignment = played - arrived
    vad_wait = completed_sent - end
    held = answered - completed_arrived
    stand_in = vad_wait + held
    gateway = end_to_end - stand_in - alignment
    return tuple(round(v * 1000.0, 3) for v in (
        end_to_end, stand_in, gateway, alignment, completed_arrived - completed_sent, arrived - answered,
        vad_wait, held))


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    a = np.asarray(values, dtype=np.float64)
    return {"p50": round(float(np.percentile(a, 50)), 2), "p95": round(float(np.percentile(a, 95)), 2),
            "p99": round(float(np.percentile(a, 99)), 2), "max": round(float(a.max()), 2)}


def summarize(generated: list[dict[str, Any]]) -> dict[str, Any]:
    """One step's latency figures from the load generators' results."""
    rows = [row for g in generated for row in g.get("turns", [])]
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in FIELDS]
    return {
        "turns_measured": len(rows),
        "turns_unanswered": sum(g.get("turns_unanswered", 0) for g in generated),
        "turns_unmatched": sum(g.get("turns_unmatched", 0) for g in generated),
        **{f"{name}_ms": percentiles(list(column)) for name, column in zip(FIELDS, columns, strict=True)},
    }


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)


def _trio(figures: dict[str, Any]) -> str:
    return " / ".join(_fmt(figures[q]) for q in ("p50", "p95", "p99"))


def table(steps: list[dict[str, Any]]) -> list[str]:
    """The Markdown table of a latency run's steps."""
    lines = [
        "| calls | turns measured (unanswered) | end to end p50 / p95 / p99 ms | stand-in's share "
        "p50 / p95 / p99 ms | **gateway's share p50 / p95 / p99 ms** | of which caller → Voice Live / "
        "Voice Live → phone, p99 ms | playout alignment p99 ms | gateway / harness / other work, % of a core |",
        "|---:|---|---|---|---|---|---:|---|",
    ]
    for s in steps:
        lat = s["latency"]
        lines.append(
            f"| {s['calls']} | {lat['turns_measured']} ({lat['turns_unanswered']}) | {_trio(lat['end_to_end_ms'])} | "
            f"{_trio(lat['stand_in_ms'])} | **{_trio(lat['gateway_ms'])}** | "
            f"{_fmt(lat['gateway_in_ms']['p99'])} / {_fmt(lat['gateway_out_ms']['p99'])} | "
            f"{_fmt(lat['alignment_ms']['p99'])} | {_fmt(s['core_percent_total'])} / "
            f"{_fmt(s['harness_core_percent'])} / {_fmt(s.get('others_core_percent'))} |")
    return lines


def markdown(result: dict[str, Any]) -> str:
    m, settings = result["machine"], result["settings"]
    steps = result["steps"]
    silence = sorted({ms for s in steps for ms in s.get("silence_duration_ms", [])})
    lines = [
        f"# End-to-end turn latency: {result['workers']} gateway worker(s)",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), Python {m['python']}, {m['platform']}.",
        "",
        *table(steps),
        "",
        f"Each call talks in turns: {settings['speech_ms']} ms of a 400 Hz tone, then silence until the "
        f"bot's reply ({settings['reply_ms']} ms of audio) has played and a pause of {settings['gap_ms']}-"
        f"{2 * settings['gap_ms']} ms has passed. The Voice Live stand-in ends a turn after "
        f"{'/'.join(str(v) for v in silence) or '?'} ms of silence (the profile's silence_duration_ms) and "
        f"answers {settings['response_delay_ms']} ms after the frame that completed it arrived. Each step: "
        f"{settings['ramp']:g} calls/s ramp, {settings['warmup']:g} s warm-up, {settings['measure']:g} s "
        "measured (turns whose end of speech falls in the window).",
        "",
        "End to end: the caller's last speech frame's audible end (send time + 20 ms) to the reply's first "
        "audio played at the phone. The stand-in's share: the caller's silence its VAD waited for (to the "
        "send of the frame that completed it) plus the time from that frame's arrival to the first delta "
        "sent (response delay and its own work), stamped into the reply's first block. The gateway's share: "
        "the rest, less the phone's playout alignment, i.e. the completing caller frame's trip phone → "
        "gateway → stand-in plus the first audio's trip stand-in → gateway → phone.",
    ]
    return "\n".join(lines) + "\n"

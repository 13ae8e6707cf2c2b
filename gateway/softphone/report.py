"""What a softphone call gives back: errors, the report, its WAV file and its lines for humans."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gateway.audio import G711_ULAW, AudioFormat, decode_samples, write_wav

DEFAULT_BYTES_PER_MS = G711_ULAW.bytes_per_ms  # 8 kHz µ-law: 8 bytes per millisecond


class CallError(Exception):
    """The call could not be placed: bad URL, unreachable host, or an answer the phone cannot follow."""


class CallRejected(CallError):
    """The gateway answered, but refused the call (HTTP error on the webhook or the media socket)."""


def _s(nbytes: int, bytes_per_ms: int = DEFAULT_BYTES_PER_MS) -> str:
    return f"{nbytes / (bytes_per_ms * 1000):.1f} s"


@dataclass
class CallReport:
    """Everything the softphone saw during one call.

    ``carrier`` names the carrier whose phone placed the call; a carrier's phone returns its own
    subclass, which words :func:`summarize` its way (and may name the ids as its carrier does).
    ``caller_audio`` and ``bot_audio`` are in the call's ``audio_format`` (at ``sample_rate``).
    Both are on the same timeline: slot ``k`` (one 20 ms frame) is the frame sent at
    ``t0 + 20k ms`` and what was played during that frame (silence where nothing played).

    ``events`` are ``(t_ms, kind, fields)`` with ``t_ms`` counted from the moment the media
    socket opened (0 for events before it, such as ``webhook``). ``received_payloads`` holds the
    payload string of every audio message the gateway sent, even one rejected as a violation;
    ``received_bytes`` counts only the audio that was accepted for playback. ``marks_received``
    and ``marks_echoed`` are mark names in order (always empty on carriers without marks).
    ``clears`` counts the gateway's messages that stop playback; ``discarded_bytes`` counts the
    bot audio they dropped and any lost to a reconnect; ``connections`` the media sockets opened.
    """

    stream_sid: str
    call_sid: str
    account_sid: str
    stream_url: str
    custom_parameters: dict[str, str]
    closed_by: str  # "caller" | "gateway"
    close_code: int | None
    events: list[tuple[float, str, dict[str, Any]]]
    caller_audio: bytes
    bot_audio: bytes
    received_payloads: list[str]
    sent_payloads: list[str]
    received_bytes: int  # bytes of valid media accepted into the playout buffer
    played_bytes: int
    discarded_bytes: int  # dropped when the gateway stopped playback (and lost to a reconnect)
    unplayed_bytes: int  # still buffered when the call ended
    marks_received: list[str]
    marks_echoed: list[str]
    clears: int
    violations: int
    violation_samples: list[str]
    duration_ms: float
    audio_format: AudioFormat  # of caller_audio and bot_audio, as the carrier streams it
    carrier: str = ""
    connections: int = 1

    @property
    def sample_rate(self) -> int:
        return self.audio_format.sample_rate

    @property
    def bytes_per_ms(self) -> int:
        """Bytes of call audio per millisecond (8 for 8 kHz µ-law; PCM16: 48 at 24 kHz, 32 at 16 kHz)."""
        return self.audio_format.bytes_per_ms

    def events_of(self, kind: str) -> list[tuple[float, dict[str, Any]]]:
        """``(t_ms, fields)`` of every event of one kind."""
        return [(t, f) for t, k, f in self.events if k == kind]

    def seconds(self, nbytes: int) -> str:
        """``nbytes`` of this call's audio as seconds, for humans (``"1.2 s"``)."""
        return _s(nbytes, self.bytes_per_ms)

    def outcome(self) -> str:
        """How long the call lasted and who ended it, for humans."""
        closed = "the caller" if self.closed_by == "caller" else "the gateway"
        return f"{self.duration_ms / 1000:.1f} s, ended by {closed} (close code {self.close_code})"

    def summary_lines(self) -> list[str]:
        """What :func:`summarize` says before the protocol violations (a carrier's phone words it its way)."""
        s = self.seconds
        return [
            f"call {self.call_sid}, stream {self.stream_sid}: {self.outcome()}",
            f"bot audio: {s(self.received_bytes)} received, {s(self.played_bytes)} played, "
            f"{s(self.discarded_bytes)} discarded ({self.clears} playback stop(s)), "
            f"{s(self.unplayed_bytes)} unplayed at the end",
            f"media sockets: {self.connections}",
        ]


def write_call_wav(report: CallReport, path: str | Path) -> None:
    """Stereo 16-bit WAV at the call's sample rate: left = the caller, right = the bot as the caller heard it."""
    left = decode_samples(report.audio_format, report.caller_audio)
    right = decode_samples(report.audio_format, report.bot_audio)
    n = max(len(left), len(right))
    stereo = np.zeros((n, 2), dtype=np.int16)
    stereo[: len(left), 0] = left
    stereo[: len(right), 1] = right
    write_wav(path, stereo, report.sample_rate)


def describe_event(kind: str, fields: Mapping[str, Any], *, bytes_per_ms: int = DEFAULT_BYTES_PER_MS) -> str:
    """One short line for an event, as ``gateway call`` prints it.

    ``bytes_per_ms``: of the call's audio (:attr:`CallReport.bytes_per_ms`; 8 for 8 kHz µ-law).
    """
    s = functools.partial(_s, bytes_per_ms=bytes_per_ms)
    if kind == "webhook":
        count = len(fields.get("parameters", {}))
        return f"webhook answered: stream {fields.get('stream_url')} ({count} parameters)"
    if kind == "connected":
        return f"media socket open ({fields.get('url')})"
    if kind == "speech_start":
        return f"caller speaks: {fields.get('label')} ({fields.get('ms', 0) / 1000:.1f} s)"
    if kind == "speech_end":
        return f"caller done: {fields.get('label')}"
    if kind == "dtmf":
        return f"caller presses {fields.get('digit')}"
    if kind == "bot_audio_start":
        return "bot audio starts"
    if kind == "bot_audio_end":
        return f"bot audio ends ({s(fields.get('played_bytes', 0))} played)"
    if kind == "clear":
        text = (
            f"clear (played {s(fields.get('turn_played_bytes', 0))} of bot audio, "
            f"{s(fields.get('discarded_bytes', 0))} discarded"
        )
        flushed = len(fields.get("marks_flushed", ()))
        return text + (f", {flushed} marks flushed)" if flushed else ")")
    if kind == "stop_audio":
        return (
            f"StopAudio (played {s(fields.get('turn_played_bytes', 0))} of bot audio, "
            f"{s(fields.get('discarded_bytes', 0))} discarded)"
        )
    if kind == "reconnect":
        return (
            f"media socket reopened (connection {fields.get('connection')}, "
            f"{s(fields.get('discarded_bytes', 0))} of buffered bot audio lost)"
        )
    if kind == "reconnect_failed":
        return f"media socket could not be reopened: {fields.get('error')}"
    if kind == "wait_timeout":
        return f"no answer from the bot within {fields.get('timeout_s')} s"
    if kind == "no_bot_audio":
        return f"the bot said nothing within {fields.get('timeout_s')} s; going on"
    if kind == "hangup":
        return "caller hangs up"
    if kind == "closed_by_gateway":
        return f"gateway closed the call (code {fields.get('code')})"
    if kind == "violation":
        return f"protocol violation: {fields.get('description')}"
    return f"{kind} {dict(fields)}" if fields else kind


def summarize(report: CallReport) -> list[str]:
    """Totals of a call, a few lines for humans."""
    lines = report.summary_lines()
    lines.append(f"protocol violations: {report.violations}")
    lines += [f"  - {sample}" for sample in report.violation_samples]
    return lines


def call_failures(report: CallReport) -> list[str]:
    """Why a smoke-test call counts as failed (empty when it went well)."""
    failures = []
    if report.violations:
        failures.append(f"{report.violations} protocol violation(s)")
    refused = report.events_of("reconnect_failed")
    if refused:
        failures.append("the gateway did not take the reopened media socket")
    elif report.closed_by == "gateway" and report.close_code != 1000:
        failures.append(f"the gateway closed the call abnormally (code {report.close_code})")
    timeouts = len(report.events_of("wait_timeout"))
    if timeouts:
        failures.append(f"the bot did not answer {timeouts} time(s)")
    return failures

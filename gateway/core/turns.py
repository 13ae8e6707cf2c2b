"""Turn detection in the gateway, for profiles that turn Voice Live's off (``turn_detection:
none``): the caller's audio is decoded (only then) and an energy detector says when the caller
starts and stops speaking. The call commits the turn and asks for the answer; speech over the bot
is a barge-in. Audio that holds only silence since the last turn is cleared from Voice Live's
input buffer rather than kept (and billed)."""

from __future__ import annotations

import base64

from gateway.audio import AudioFormat, b64_len, decode_samples
from gateway.config import TurnDetectionOff
from gateway.vad import EnergyVad, VadEvent

__all__ = ["IDLE_INPUT_MS", "CallerTurns"]

IDLE_INPUT_MS = 5_000  # caller silence Voice Live may hold before it is cleared


class CallerTurns:
    """Listens to the caller's frames as they are forwarded."""

    def __init__(self, settings: TurnDetectionOff, audio: AudioFormat) -> None:
        self.audio = audio
        self.vad = EnergyVad(audio.sample_rate, settings.threshold_dbfs, settings.speech_duration_ms,
                             settings.silence_duration_ms)
        self.buffered = 0  # bytes appended since the last commit or clear
        self.heard_at = 0.0  # when the last frame was listened to

    def listen(self, payload: str, now: float) -> list[VadEvent]:
        """A forwarded frame (base64): where speech started or stopped in it."""
        self.heard_at = now
        self.buffered += b64_len(payload)
        return self.vad.feed(decode_samples(self.audio, base64.b64decode(payload)))

    def idle(self, speech_since_commit: bool) -> bool:
        """Whether what Voice Live holds since the last turn is long silence only (then clear it)."""
        return (not speech_since_commit and self.vad.quiet
                and self.buffered > IDLE_INPUT_MS * self.audio.bytes_per_ms)

    def silent_line_due(self) -> float | None:
        """When a caller who was speaking counts as silent because no audio came at all (a phone
        leg that stops sending frames instead of sending silence); None: not speaking."""
        return self.heard_at + self.vad.silence_ms if self.vad.in_speech else None

    def emptied(self) -> None:
        """The input buffer was committed or cleared."""
        self.buffered = 0

    def reset(self) -> None:
        """A new session: what is sent to it again is listened to again."""
        self.vad.reset()
        self.buffered = 0

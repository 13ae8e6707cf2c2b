"""Energy voice-activity detection: numpy windows, no per-sample Python loops.

The simulator's turn detection uses it, and so does the gateway when a profile turns Voice Live's
turn detection off (the gateway then decides where the caller's turn ends).

The detector works on decoded 16-bit mono samples in 10 ms windows and keeps its own clock in
samples since the start of the session, so the times it reports are "milliseconds of appended
audio", the clock Voice Live uses in ``speech_started`` / ``speech_stopped``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

WINDOW_MS = 10


@dataclass(frozen=True, slots=True)
class VadEvent:
    kind: Literal["start", "stop"]
    ms: int
    """For ``start``: where the speech began. For ``stop``: where it ended (the start of the
    silence that closed the turn). Both in ms since the start of the session's audio."""


class EnergyVad:
    """Speech starts after ``min_speech_ms`` of windows louder than ``threshold_dbfs`` and stops
    after ``silence_ms`` of quieter windows. ``silence_ms`` may be changed between feeds."""

    def __init__(
        self,
        rate: int,
        threshold_dbfs: float = -40.0,
        min_speech_ms: int = 100,
        silence_ms: int = 500,
        origin_samples: int = 0,
    ) -> None:
        if rate % (1000 // WINDOW_MS):
            raise ValueError(f"sample rate {rate} is not a whole number of samples per {WINDOW_MS} ms")
        self.rate = rate
        self.window = rate * WINDOW_MS // 1000
        # Mean-square power of a full-scale-relative level, so no sqrt/log per window.
        self._threshold_power = (10.0 ** (threshold_dbfs / 20.0) * 32768.0) ** 2
        self.min_speech_ms = min_speech_ms
        self.silence_ms = silence_ms
        self._pos = origin_samples  # samples consumed into whole windows
        self._tail = np.zeros(0, dtype=np.int16)
        self.in_speech = False
        self._run = 0  # consecutive windows of the kind that would change the state
        self._run_start = 0  # sample position where that run began

    def _ms(self, samples: int) -> int:
        return samples * 1000 // self.rate

    @property
    def quiet(self) -> bool:
        """No speech in progress and the last window was quiet (no loud run that may become speech)."""
        return not self.in_speech and self._run == 0

    def reset(self) -> None:
        """Forget any speech in progress (after a manual commit or a buffer clear)."""
        self.in_speech = False
        self._run = 0

    def feed(self, samples: np.ndarray) -> list[VadEvent]:
        if self._tail.size:
            samples = np.concatenate((self._tail, samples))
        n_windows = samples.size // self.window
        used = n_windows * self.window
        self._tail = samples[used:].copy()
        if n_windows == 0:
            return []
        frames = samples[:used].astype(np.float32).reshape(n_windows, self.window)
        loud = np.mean(frames * frames, axis=1) > self._threshold_power

        events: list[VadEvent] = []
        need_speech = max(1, -(-self.min_speech_ms // WINDOW_MS))
        i = 0
        while i < n_windows:
            # Jump straight to the next window that could change something.
            target = not self.in_speech  # idle: look for loud windows; speaking: quiet ones
            hits = np.flatnonzero(loud[i:] == target)
            if hits.size == 0:
                self._run = 0
                break
            j = i + int(hits[0])
            if j > i:
                self._run = 0
            # Length of the run of `target` windows starting at j.
            misses = np.flatnonzero(loud[j:] != target)
            end = n_windows if misses.size == 0 else j + int(misses[0])
            if self._run == 0:
                self._run_start = self._pos + j * self.window
            needed = need_speech if target else max(1, -(-self.silence_ms // WINDOW_MS))
            have = self._run + (end - j)
            if have >= needed:
                fire = j + (needed - self._run)  # first window index after the state change
                if target:
                    events.append(VadEvent("start", self._ms(self._run_start)))
                else:
                    events.append(VadEvent("stop", self._ms(self._run_start)))
                self.in_speech = target
                self._run = 0
                i = fire
            else:
                self._run = have
                i = end
        self._pos += used
        return events

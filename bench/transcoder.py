"""A transcoding bridge, of the kind the Azure accelerator runs: the naive forwarder
(``bench/forwarder.py``) with a Voice Live session in pcm16 at 24 kHz, so every frame is converted.

Caller audio: µ-law 8 kHz → PCM16 (``audioop.ulaw2lin``) → 24 kHz (``audioop.ratecv``, its state kept
per call); a 20 ms frame of 160 bytes becomes 960. Bot audio: PCM16 24 kHz → 8 kHz (a second
stateful ``ratecv`` per call) → µ-law (``audioop.lin2ulaw``); a 60 ms block of 2880 bytes becomes 480.

Measuring apparatus, not a shortcut: converting audio destroys the benchmark's markers (the first
20 bytes of each caller frame and of each 60 ms block of bot audio: call, sequence, send time), so
after doing the full conversion of every frame and block, this bridge writes the original marker
bytes back over the start of the converted frame or block. The cost measured is the real cost of
transcoding; the markers only let the stand-in and the load generator time the audio as they do
through the gateway and the forwarder.

    python -m bench.transcoder --port 8080 --voicelive http://127.0.0.1:8765
"""

from __future__ import annotations

import base64
import warnings
from typing import Any

from bench.forwarder import Passthrough, main

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # stdlib before 3.13, audioop-lts from 3.13

MARK = 20  # bytes of a benchmark marker (gateway.simulator.bench.MARKER)
PCM_BLOCK, ULAW_BLOCK = 2880, 480  # 60 ms of bot audio in pcm16 at 24 kHz, and in µ-law at 8 kHz


class Transcoder(Passthrough):
    """One call's conversions, each direction with its own resampler state."""

    session: dict[str, Any] = {"input_audio_format": "pcm16", "input_audio_sampling_rate": 24000,
                               "output_audio_format": "pcm16",
                               "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}

    def __init__(self) -> None:
        self.up: Any = None  # ratecv state, phone → Voice Live
        self.down: Any = None  # ratecv state, Voice Live → phone

    def to_voicelive(self, payload: str) -> str:
        ulaw = base64.b64decode(payload)
        pcm, self.up = audioop.ratecv(audioop.ulaw2lin(ulaw, 2), 2, 1, 8000, 24000, self.up)
        return base64.b64encode(ulaw[:MARK] + pcm[MARK:]).decode()  # the marker back in front

    def to_phone(self, delta: str) -> str:
        pcm = base64.b64decode(delta)
        low, self.down = audioop.ratecv(pcm, 2, 1, 24000, 8000, self.down)
        ulaw = bytearray(audioop.lin2ulaw(low, 2))
        for block in range(0, len(pcm), PCM_BLOCK):  # each block's marker back at its converted start
            at = block // PCM_BLOCK * ULAW_BLOCK
            if at + MARK <= len(ulaw):
                ulaw[at:at + MARK] = pcm[block:block + MARK]
        return base64.b64encode(bytes(ulaw)).decode()


if __name__ == "__main__":
    main(Transcoder, __doc__)

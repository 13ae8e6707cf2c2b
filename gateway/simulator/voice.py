"""The simulator's voice: the reply clips shipped in gateway/assets, in every Voice Live output
format, and the decoding of caller audio for its VAD.

Clips are read and converted once per (clip, format) and kept in memory.
"""

from __future__ import annotations

import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gateway.audio import ASSETS, pcm16_to_ulaw, read_wav, resample, ulaw_to_array

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # stdlib before 3.13, audioop-lts from 3.13

GREETING = "bot_greeting"
REPLIES = ("bot_reply_1", "bot_reply_2", "bot_reply_3")
CLIP_RATE = 24000

INPUT_FORMATS = ("pcm16", "g711_ulaw", "g711_alaw")
PCM16_INPUT_RATES = (8000, 16000, 24000, 44100, 48000)


@dataclass(frozen=True, slots=True)
class OutputFormat:
    name: str  # as the client wrote it
    rate: int
    encoding: str  # "pcm16" | "ulaw" | "alaw"

    @property
    def sample_width(self) -> int:
        return 2 if self.encoding == "pcm16" else 1

    def nbytes(self, ms: float) -> int:
        """Bytes holding ``ms`` of audio (whole samples)."""
        return round(ms * self.rate / 1000.0) * self.sample_width

    def ms(self, nbytes: int) -> int:
        """Whole milliseconds of audio in ``nbytes``."""
        return nbytes // self.sample_width * 1000 // self.rate


_PCM_RATE_RE = re.compile(r"pcm16[_-](\d+)hz")
_PCM_OUTPUT_RATES = (8000, 16000, 22050, 24000, 44100, 48000)


def output_format(name: object) -> OutputFormat | None:
    """The Voice Live ``output_audio_format`` called ``name``, or None if unknown. The hyphenated
    spellings of older API versions (``pcm16-8000hz``) are accepted too."""
    if not isinstance(name, str):
        return None
    if name == "pcm16":
        return OutputFormat(name, 24000, "pcm16")
    if name == "g711_ulaw":
        return OutputFormat(name, 8000, "ulaw")
    if name == "g711_alaw":
        return OutputFormat(name, 8000, "alaw")
    m = _PCM_RATE_RE.fullmatch(name)
    if m and int(m.group(1)) in _PCM_OUTPUT_RATES:
        return OutputFormat(name, int(m.group(1)), "pcm16")
    return None


# --- caller audio -------------------------------------------------------------------------

_ULAW_TABLE = ulaw_to_array(bytes(range(256))).copy()
_ALAW_TABLE = np.frombuffer(audioop.alaw2lin(bytes(range(256)), 2), dtype="<i2").copy()


def decode_input(fmt: str, data: bytes) -> np.ndarray:
    """Caller audio in ``input_audio_format`` ``fmt`` as int16 samples (whole samples only)."""
    if fmt == "g711_ulaw":
        return _ULAW_TABLE[np.frombuffer(data, dtype=np.uint8)]
    if fmt == "g711_alaw":
        return _ALAW_TABLE[np.frombuffer(data, dtype=np.uint8)]
    return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2")


# --- reply clips ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Clip:
    name: str
    text: str
    samples: np.ndarray  # int16 mono at CLIP_RATE

    @property
    def duration_ms(self) -> int:
        return self.samples.size * 1000 // CLIP_RATE


def read_speech_txt(path: Path) -> dict[str, str]:
    """``<file>: <text>`` lines → {file stem: text}."""
    texts: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        name, sep, text = line.partition(":")
        if sep and name.strip():
            texts[Path(name.strip()).stem] = text.strip()
    return texts


_lock = threading.Lock()
_clips: dict[tuple[Path, str], Clip] = {}
_encoded: dict[tuple[Path, str, str, int], bytes] = {}


def load_clip(name: str, assets: Path = ASSETS) -> Clip:
    key = (assets, name)
    with _lock:
        clip = _clips.get(key)
    if clip is None:
        texts = read_speech_txt(assets / "speech.txt")
        wav = read_wav(assets / f"{name}.wav")
        samples = resample(wav.mono, wav.rate, CLIP_RATE)
        clip = Clip(name, texts.get(name, ""), samples)
        with _lock:
            _clips[key] = clip
    return clip


def clip_audio(name: str, fmt: OutputFormat, assets: Path = ASSETS) -> bytes:
    """The clip's audio encoded in ``fmt``; converted on first use, then cached. This can take a
    few tens of milliseconds the first time: call it off the event loop (``asyncio.to_thread``)."""
    key = (assets, name, fmt.encoding, fmt.rate)
    with _lock:
        data = _encoded.get(key)
    if data is None:
        samples = resample(load_clip(name, assets).samples, CLIP_RATE, fmt.rate)
        pcm = np.asarray(samples, dtype="<i2").tobytes()
        if fmt.encoding == "ulaw":
            data = pcm16_to_ulaw(pcm)
        elif fmt.encoding == "alaw":
            data = audioop.lin2alaw(pcm, 2)
        else:
            data = pcm
        with _lock:
            _encoded[key] = data
    return data

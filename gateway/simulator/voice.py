"""The simulator's voice: the reply clips shipped in gateway/assets, in every Voice Live output
format, synthetic speech for any other text (``pre_generated_assistant_message``), and the decoding
of caller audio for its VAD.

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


def encode_output(samples: np.ndarray, fmt: OutputFormat) -> bytes:
    """int16 mono ``samples`` already at ``fmt.rate``, encoded as ``fmt``."""
    pcm = np.asarray(samples, dtype="<i2").tobytes()
    if fmt.encoding == "ulaw":
        return pcm16_to_ulaw(pcm)
    if fmt.encoding == "alaw":
        return audioop.lin2alaw(pcm, 2)
    return pcm


def clip_audio(name: str, fmt: OutputFormat, assets: Path = ASSETS) -> bytes:
    """The clip's audio encoded in ``fmt``; converted on first use, then cached. This can take a
    few tens of milliseconds the first time: call it off the event loop (``asyncio.to_thread``)."""
    key = (assets, name, fmt.encoding, fmt.rate)
    with _lock:
        data = _encoded.get(key)
    if data is None:
        data = encode_output(resample(load_clip(name, assets).samples, CLIP_RATE, fmt.rate), fmt)
        with _lock:
            _encoded[key] = data
    return data


def clip_for_text(text: str, assets: Path = ASSETS) -> str | None:
    """The shipped clip whose transcript (speech.txt) is exactly ``text``, if any."""
    return next((name for name, said in read_speech_txt(assets / "speech.txt").items() if said == text), None)


# --- synthetic speech ---------------------------------------------------------------------------

SYNTH_MS_PER_CHAR = 65
SYNTH_MIN_SPEECH_MS = 400
SYNTH_PAD_MS = 100  # silence before and after, like the trimmed clips
_SYNTH_PITCH_HZ = 140.0
_SYNTH_HARMONICS = (1.0, 0.55, 0.35, 0.2)  # relative amplitude of harmonics 1, 2, 3, ...
_SYNTH_SYLLABLES_HZ = 4.0
_SYNTH_PEAK = 0.35  # of full scale: RMS about -17 dBFS at a syllable peak, -25 dBFS in a dip
_SYNTH_FADE_MS = 10


def synthetic_speech_ms(text: str) -> int:
    """Length of :func:`synthetic_speech` for ``text``, silence included."""
    return max(SYNTH_MIN_SPEECH_MS, SYNTH_MS_PER_CHAR * len(text)) + 2 * SYNTH_PAD_MS


def synthetic_speech(text: str, fmt: OutputFormat) -> bytes:
    """Voice-like audio for ``text`` in ``fmt``: a few harmonics of a low pitch under a
    syllable-rate envelope, loud enough for any energy VAD, whose length grows with the text
    (:data:`SYNTH_MS_PER_CHAR`, at least :data:`SYNTH_MIN_SPEECH_MS`), with
    :data:`SYNTH_PAD_MS` of silence at each end."""
    rate = fmt.rate
    n = round((synthetic_speech_ms(text) - 2 * SYNTH_PAD_MS) * rate / 1000)
    t = np.arange(n) / rate
    tone = np.zeros(n)
    for k, a in enumerate(_SYNTH_HARMONICS):
        tone += a * np.sin(2 * np.pi * _SYNTH_PITCH_HZ * (k + 1) * t)
    tone = tone / sum(_SYNTH_HARMONICS)
    envelope = 0.4 + 0.6 * np.sin(np.pi * _SYNTH_SYLLABLES_HZ * t) ** 2
    fade = np.clip(np.minimum(np.arange(n), np.arange(n)[::-1]) / (_SYNTH_FADE_MS * rate / 1000), 0.0, 1.0)
    voiced = np.round(tone * envelope * fade * _SYNTH_PEAK * 32767).astype(np.int16)
    pad = np.zeros(round(SYNTH_PAD_MS * rate / 1000), dtype=np.int16)
    return encode_output(np.concatenate((pad, voiced, pad)), fmt)


# --- what a response says ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Speech:
    """What one spoken response says: its text and its audio in the response's output format."""

    text: str
    audio: bytes
    clip: str | None  # the shipped clip it is, None for synthetic speech


def clip_speech(name: str, fmt: OutputFormat, assets: Path = ASSETS) -> Speech:
    """A shipped clip as a response's speech (blocking: call it off the event loop)."""
    return Speech(load_clip(name, assets).text, clip_audio(name, fmt, assets), name)


def text_speech(text: str, fmt: OutputFormat, assets: Path = ASSETS) -> Speech:
    """``text`` as a response's speech: the shipped clip saying exactly that if there is one,
    otherwise :func:`synthetic_speech` (blocking: call it off the event loop)."""
    clip = clip_for_text(text, assets)
    if clip is not None:
        return clip_speech(clip, fmt, assets)
    return Speech(text, synthetic_speech(text, fmt), None)

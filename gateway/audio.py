"""Audio helpers: audio formats, G.711 µ-law, base64 slicing, resampling and WAV files.

Nothing here runs per forwarded frame except :func:`is_base64`, :func:`b64_len` and
:func:`split_b64`, which work on the base64 text itself and never decode audio.
"""

from __future__ import annotations

import base64
import functools
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # stdlib before 3.13, audioop-lts from 3.13


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """A Voice Live audio format as carried on a phone leg."""

    name: str  # Voice Live name: g711_ulaw, pcm16 ...
    sample_rate: int
    sample_width: int  # bytes per sample on the wire (1 for G.711, 2 for PCM16)

    @property
    def bytes_per_ms(self) -> int:
        return self.sample_rate * self.sample_width // 1000

    def ms(self, nbytes: int) -> int:
        """Whole milliseconds of audio in ``nbytes``."""
        return nbytes // self.bytes_per_ms

    @property
    def piece_unit(self) -> int:
        """Smallest byte count that is whole samples and whole base64 quanta (3 bytes)."""
        return 3 * self.sample_width

    @property
    def output_name(self) -> str:
        """Voice Live's ``output_audio_format`` for this format (``name`` is the input format):
        PCM16 at 24 kHz is ``pcm16``, at other rates ``pcm16_<rate>hz``."""
        if self.name == "pcm16" and self.sample_rate != 24000:
            return f"pcm16_{self.sample_rate}hz"
        return self.name

    @property
    def key(self) -> str:
        """One name per format, as recordings store it: the output format name."""
        return self.output_name


G711_ULAW = AudioFormat("g711_ulaw", 8000, 1)
G711_ALAW = AudioFormat("g711_alaw", 8000, 1)
PCM16_24K = AudioFormat("pcm16", 24000, 2)
PCM16_16K = AudioFormat("pcm16", 16000, 2)
FORMATS: dict[str, AudioFormat] = {f.key: f for f in (G711_ULAW, G711_ALAW, PCM16_24K, PCM16_16K)}
"""Every format a phone leg can carry without transcoding, by :attr:`AudioFormat.key`."""


def decode_samples(fmt: AudioFormat, data: bytes) -> np.ndarray:
    """Audio bytes in ``fmt`` as int16 samples (only where the gateway must hear the caller)."""
    if fmt.name == "g711_ulaw":
        return _ULAW_TABLE[np.frombuffer(data, dtype=np.uint8)]
    if fmt.name == "g711_alaw":
        return _ALAW_TABLE[np.frombuffer(data, dtype=np.uint8)]
    return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2")

ULAW_SILENCE_BYTE = 0xFF

_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def is_base64(text: object) -> bool:
    """True if ``text`` is a well-formed, padded standard base64 string (checked without decoding:
    whole 4-character groups of the base64 alphabet, with at most two ``=`` at the end)."""
    if not isinstance(text, str) or len(text) % 4 or not text.isascii():
        return False
    data = text.encode("ascii")
    body = data.rstrip(b"=")
    # (deleting the alphabet leaves nothing: a bytes translation, several times faster than a regex)
    return len(data) - len(body) <= 2 and not body.translate(None, _B64_ALPHABET)


def b64_len(text: str) -> int:
    """Number of bytes a well-formed base64 string decodes to, computed from its length."""
    n = len(text)
    if n == 0:
        return 0
    return n // 4 * 3 - (text[-1] == "=") - (text[-2] == "=")


def split_b64(text: str, max_chars: int) -> list[str]:
    """Split base64 text into pieces of at most ``max_chars`` characters (a multiple of 4).

    Every piece is valid base64 on its own and the pieces concatenate back to ``text``;
    no audio is decoded.
    """
    if max_chars % 4:
        raise ValueError("max_chars must be a multiple of 4")
    if len(text) <= max_chars:
        return [text]
    return [text[i : i + max_chars] for i in range(0, len(text), max_chars)]


# --- G.711 µ-law ------------------------------------------------------------------------


def ulaw_to_pcm16(data: bytes) -> bytes:
    return audioop.ulaw2lin(data, 2)


def pcm16_to_ulaw(data: bytes) -> bytes:
    return audioop.lin2ulaw(data, 2)


def ulaw_to_array(data: bytes) -> np.ndarray:
    return np.frombuffer(ulaw_to_pcm16(data), dtype="<i2")


_ULAW_TABLE = np.frombuffer(audioop.ulaw2lin(bytes(range(256)), 2), dtype="<i2").copy()
_ALAW_TABLE = np.frombuffer(audioop.alaw2lin(bytes(range(256)), 2), dtype="<i2").copy()


def array_to_ulaw(samples: np.ndarray) -> bytes:
    return pcm16_to_ulaw(np.asarray(samples, dtype="<i2").tobytes())


# --- signal helpers ------------------------------------------------------------------------


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level of int16 samples in dB relative to full scale (-120 for digital silence)."""
    if samples.size == 0:
        return -120.0
    x = samples.astype(np.float64)
    rms = float(np.sqrt(np.mean(x * x)))
    if rms < 1e-6:
        return -120.0
    return 20.0 * float(np.log10(rms / 32768.0))


def _lowpass(x: np.ndarray, cutoff: float, rate: int, taps: int = 101) -> np.ndarray:
    """Windowed-sinc FIR low-pass (cutoff in Hz)."""
    n = np.arange(taps) - (taps - 1) / 2
    h = np.sinc(2 * cutoff / rate * n) * np.hamming(taps)
    h /= h.sum()
    return np.convolve(x, h, mode="same")


def resample(samples: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Resample int16 mono audio (offline use: files and test audio, not the forwarding path)."""
    if src_rate == dst_rate:
        return np.asarray(samples, dtype=np.int16)
    x = np.asarray(samples, dtype=np.float64)
    if dst_rate < src_rate:
        x = _lowpass(x, 0.45 * dst_rate, src_rate)
    n_out = round(len(x) * dst_rate / src_rate)
    t_out = np.arange(n_out) * (src_rate / dst_rate)
    y = np.interp(t_out, np.arange(len(x)), x)
    return np.clip(np.round(y), -32768, 32767).astype(np.int16)


# --- WAV files -------------------------------------------------------------------------------

_WAVE_PCM, _WAVE_FLOAT, _WAVE_ALAW, _WAVE_ULAW, _WAVE_EXTENSIBLE = 1, 3, 6, 7, 0xFFFE


class WavError(ValueError):
    pass


@dataclass(slots=True)
class Wav:
    samples: np.ndarray  # int16, shape (n,) for mono or (n, channels)
    rate: int

    @property
    def mono(self) -> np.ndarray:
        if self.samples.ndim == 1:
            return self.samples
        return np.round(self.samples.astype(np.float64).mean(axis=1)).astype(np.int16)

    @property
    def duration_ms(self) -> int:
        return len(self.samples) * 1000 // self.rate


def read_wav(path: str | Path) -> Wav:
    """Read a WAV file: PCM 8/16/24/32-bit, float32, µ-law or A-law; any rate and channel count."""
    data = Path(path).read_bytes()
    return parse_wav(data, str(path))


def parse_wav(data: bytes, name: str = "<wav>") -> Wav:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise WavError(f"{name}: not a RIFF/WAVE file")
    pos = 12
    fmt: tuple[int, int, int, int] | None = None
    payload: bytes | None = None
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            if len(body) < 16:
                raise WavError(f"{name}: fmt chunk too short")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
            if tag == _WAVE_EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack_from("<H", body, 24)[0]
            fmt = (tag, channels, rate, bits)
        elif cid == b"data":
            payload = body
        pos += 8 + size + (size & 1)
    if fmt is None or payload is None:
        raise WavError(f"{name}: missing fmt or data chunk")
    tag, channels, rate, bits = fmt
    if channels < 1 or rate < 1:
        raise WavError(f"{name}: bad channel count or sample rate")
    if tag == _WAVE_ULAW:
        pcm = np.frombuffer(audioop.ulaw2lin(payload, 2), dtype="<i2")
    elif tag == _WAVE_ALAW:
        pcm = np.frombuffer(audioop.alaw2lin(payload, 2), dtype="<i2")
    elif tag == _WAVE_PCM and bits == 16:
        pcm = np.frombuffer(payload[: len(payload) // 2 * 2], dtype="<i2")
    elif tag == _WAVE_PCM and bits == 8:
        pcm = ((np.frombuffer(payload, dtype=np.uint8).astype(np.int16) - 128) << 8).astype(np.int16)
    elif tag == _WAVE_PCM and bits in (24, 32):
        width = bits // 8
        raw = payload[: len(payload) // width * width]
        pcm = np.frombuffer(audioop.lin2lin(raw, width, 2), dtype="<i2")
    elif tag == _WAVE_FLOAT and bits == 32:
        f = np.frombuffer(payload[: len(payload) // 4 * 4], dtype="<f4")
        pcm = np.clip(np.round(f * 32767.0), -32768, 32767).astype(np.int16)
    else:
        raise WavError(f"{name}: unsupported WAV encoding (format tag {tag}, {bits} bits)")
    pcm = pcm[: len(pcm) // channels * channels]
    samples = pcm.reshape(-1, channels) if channels > 1 else pcm
    return Wav(np.array(samples, dtype=np.int16), rate)


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """16-bit PCM WAV; ``samples`` is (n,) mono or (n, channels)."""
    arr = np.asarray(samples, dtype="<i2")
    channels = 1 if arr.ndim == 1 else arr.shape[1]
    payload = arr.tobytes()
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + len(payload), b"WAVE", b"fmt ", 16, _WAVE_PCM, channels, rate,
        rate * channels * 2, channels * 2, 16, b"data", len(payload),
    )
    return header + payload


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> None:
    Path(path).write_bytes(wav_bytes(samples, rate))


def load_ulaw_8k(path: str | Path) -> bytes:
    """Any WAV file as 8 kHz mono µ-law bytes (what a phone carrier sends)."""
    wav = read_wav(path)
    return array_to_ulaw(resample(wav.mono, wav.rate, 8000))


ASSETS = Path(__file__).with_name("assets")


HOLD_BEEP_MS = 150  # the hold tone: a soft beep of this long ...
HOLD_PERIOD_MS = 2000  # ... at the start of every period
HOLD_LEVEL = 0.06  # about -24 dBFS: heard, never startling


APOLOGY_FRAME_MS = 20


@functools.lru_cache(maxsize=8)
def apology_clip(fmt: AudioFormat, path: str | None = None) -> str:
    """The shipped apology ("Sorry, we cannot take your call right now...") in ``fmt``, base64, padded
    to whole 20 ms frames: what a leg that cannot speak text plays when the gateway fails the call."""
    wav = read_wav(path or ASSETS / "apology.wav")
    pcm = resample(wav.mono, wav.rate, fmt.sample_rate).astype("<i2").tobytes()
    encoded = encode_pcm16(fmt, pcm)
    frame = fmt.bytes_per_ms * APOLOGY_FRAME_MS
    silence = encode_pcm16(fmt, bytes(2 * (fmt.sample_rate // 1000) * APOLOGY_FRAME_MS))[:1]
    encoded += silence * (-len(encoded) % frame)
    return base64.b64encode(encoded).decode()


def encode_pcm16(fmt: AudioFormat, pcm: bytes) -> bytes:
    """16-bit PCM at ``fmt``'s rate, in ``fmt``'s encoding."""
    if fmt.name == "g711_ulaw":
        return audioop.lin2ulaw(pcm, 2)
    if fmt.name == "g711_alaw":
        return audioop.lin2alaw(pcm, 2)
    return pcm


def hold_tone(fmt: AudioFormat, ms: int) -> bytes:
    """``ms`` of hold audio in ``fmt``: a soft 440 Hz beep every two seconds, silence between."""
    rate = fmt.sample_rate
    t = np.arange(rate * ms // 1000) / rate
    beep = (t % (HOLD_PERIOD_MS / 1000)) < HOLD_BEEP_MS / 1000
    wave = np.where(beep, HOLD_LEVEL * np.sin(2 * np.pi * 440.0 * t), 0.0)
    return encode_pcm16(fmt, (wave * 32767).astype("<i2").tobytes())

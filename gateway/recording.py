"""Call recording: every call as one JSON Lines file, written as it happens.

The first line is a header (format version, carrier, call id, profile as resolved, gateway version,
start time); then one line per message on either leg, in either direction, with the time in milliseconds since
the media socket opened (full precision, so that a replay computes exactly what the call did) and
the message exactly as it was on the wire::

    {"t": 812.375, "leg": "phone", "dir": "in", "msg": "{\\"event\\":\\"media\\",...}"}
    {"t": 812.402, "leg": "voicelive", "dir": "out", "msg": "{\\"type\\":\\"input_audio_buffer.append\\",...}"}
    {"t": 950.0, "leg": "voicelive", "event": "closed", "code": 1011}

The event loop only puts records on a queue; one background thread formats and writes them for
every call, so recording never blocks a call and never holds a whole call in memory. With
``redact_audio`` every audio payload is replaced by silence of the same length, keeping every
timing and every other field. Registered secrets are scrubbed from the header and every line
(from each string, before JSON encoding). A disk error is logged once and the call goes on
without recording.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import queue
import re
import threading
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.audio import AudioFormat, b64_len
from gateway.log import get_logger, scrub_text

FORMAT = "voicelive-gateway-call/1"

log = get_logger("gateway.recording")

_CLOSE = object()
_STOP = object()


@functools.lru_cache(maxsize=64)
def _silence(nbytes: int, fill: int) -> str:
    return base64.b64encode(bytes([fill]) * nbytes).decode()


# (leg, direction) -> (a substring every audio-carrying message has, where its audio is)
_AUDIO_FIELDS: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {
    ("phone", "in"): ('"media"', ("media", "payload")),
    ("phone", "out"): ('"media"', ("media", "payload")),
    ("voicelive", "out"): ("input_audio_buffer.append", ("audio",)),
    ("voicelive", "in"): ("response.audio.delta", ("delta",)),
}


def redact_audio(message: str, leg: str, direction: str, silence_byte: int) -> str:
    """The message with its audio payload (if any) replaced by silence of the same length."""
    marker, path = _AUDIO_FIELDS.get((leg, direction), ("\0", ()))
    if marker not in message:
        return message
    try:
        node: Any = json.loads(message)
        for key in path:
            node = node[key]
    except (ValueError, KeyError, TypeError):
        return message
    if not isinstance(node, str) or not node:
        return message
    return message.replace(node, _silence(b64_len(node), silence_byte), 1)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)[:80] or "call"


class CallRecorder:
    """Records one call. ``record`` is cheap and never blocks: it only enqueues."""

    def __init__(self, writer: RecordingWriter, path: Path, header: dict[str, Any], silence_byte: int) -> None:
        self.writer = writer
        self.path = path
        self.header = header
        self.silence_byte = silence_byte
        self.enqueued = 0
        self.written = 0  # updated by the writer thread
        self.stopped = False  # no more records are taken (disk error or backlog)
        self.failed = False  # a disk error: nothing more is written
        self.call_secrets: list[str] = []  # per-call credentials (e.g. a call token) kept out of the file
        self._file: Any = None

    def record(self, t: float, leg: str, direction: str, message: str | bytes | None = None,
               **fields: Any) -> None:
        if self.stopped:
            return
        if self.enqueued - self.written > self.writer.max_backlog:
            self.stopped = True
            log.error("call recording stopped: the disk cannot keep up", path=str(self.path))
            return
        self.enqueued += 1
        self.writer.queue.put((self, t, leg, direction, message, fields))

    def close(self) -> None:
        self.writer.queue.put((self, _CLOSE))

    # --- writer thread ---------------------------------------------------------------------

    def _line(self, t: float, leg: str, direction: str, message: str | bytes | None,
              fields: dict[str, Any]) -> str:
        if direction in ("in", "out"):
            entry: dict[str, Any] = {"t": t, "leg": leg, "dir": direction}
            if isinstance(message, bytes):
                if self.writer.redact_audio and leg == "phone":  # a binary phone frame is raw audio
                    message = bytes([self.silence_byte]) * len(message)
                entry["binary"] = base64.b64encode(message).decode()
            elif message is not None:
                if self.writer.redact_audio:
                    message = redact_audio(message, leg, direction, self.silence_byte)
                entry["msg"] = message
        else:
            entry = {"t": t, "leg": leg, "event": direction, **fields}
        return json.dumps(self._scrubbed(entry), separators=(",", ":"), ensure_ascii=False)

    def _scrubbed(self, value: Any) -> Any:
        """``value`` with every registered secret and every call secret replaced by ``***`` in each
        of its strings. Strings are scrubbed before JSON encoding: a secret holding a quote or a
        backslash would no longer be found in the encoded text."""
        if isinstance(value, str):
            value = scrub_text(value)
            for secret in self.call_secrets:
                value = value.replace(secret, "***")
            return value
        if isinstance(value, dict):
            return {self._scrubbed(key): self._scrubbed(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrubbed(item) for item in value]
        return value

    def _write(self, text: str) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", encoding="utf-8")
            self._file.write(json.dumps(self._scrubbed(self.header), ensure_ascii=False) + "\n")
        self._file.write(text + "\n")

    def _fail(self, exc: OSError) -> None:
        self.failed = self.stopped = True
        log.error("call recording failed; the call goes on without it", path=str(self.path),
                  error=exc.strerror or str(exc))
        self._close_file()

    def _close_file(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None


class RecordingWriter:
    """The background thread that writes every call's recording."""

    def __init__(self, directory: str | Path, redact_audio: bool = True, max_backlog: int = 100_000) -> None:
        self.directory = Path(directory)
        self.redact_audio = redact_audio
        self.max_backlog = max_backlog
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="call-recording", daemon=True)
        self._thread.start()

    def open_call(self, *, carrier: str, call_id: str, stream_id: str, profile_name: str,
                  profile: dict[str, Any], audio: AudioFormat,
                  options: dict[str, Any] | None = None) -> CallRecorder:
        """A recorder for one call; times given to it are ms since the call's media socket opened."""
        now = dt.datetime.now(dt.UTC)
        header = {
            "format": FORMAT,
            "carrier": carrier,
            "call_id": call_id,
            "stream_id": stream_id,
            "profile_name": profile_name,
            "profile": profile,
            "call_options": options or {},
            "audio_format": audio.key,
            "gateway_version": __version__,
            "started_at": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "redacted_audio": self.redact_audio,
        }
        path = self.directory / f"{now:%Y%m%dT%H%M%S}-{_safe_name(call_id)}.jsonl"
        silence = 0xFF if audio.name == "g711_ulaw" else 0x00
        return CallRecorder(self, path, header, silence)

    def close(self) -> None:
        """Write what is queued and stop the thread (blocking: run it off the event loop)."""
        self.queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        open_files: set[CallRecorder] = set()
        while True:
            item = self.queue.get()
            if item is _STOP:
                break
            recorder: CallRecorder = item[0]
            if item[1] is _CLOSE:
                recorder._close_file()
                open_files.discard(recorder)
            else:
                # after a disk error the recording is over; after a backlog stop, what was
                # queued before it is still written
                if not recorder.failed:
                    try:
                        recorder._write(recorder._line(*item[1:]))
                        open_files.add(recorder)
                    except OSError as exc:
                        recorder._fail(exc)
                        open_files.discard(recorder)
                recorder.written += 1
            if self.queue.empty():
                for rec in list(open_files):
                    try:
                        rec._file.flush()
                    except (OSError, AttributeError) as exc:
                        if isinstance(exc, OSError):
                            rec._fail(exc)
                        open_files.discard(rec)
        for rec in open_files:
            rec._close_file()

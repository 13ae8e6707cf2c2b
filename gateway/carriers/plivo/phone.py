"""The softphone's Plivo side: places a call through the gateway the way Plivo does.

:func:`place_plivo_call` posts Plivo's answer URL (signed with ``X-Plivo-Signature-V3`` and its
nonce), follows the ``<Stream>`` XML answer, opens the media WebSocket and then plays Plivo's side
of a bidirectional audio stream:

* it sends ``start``, one 20 ms ``media`` message of µ-law every 20 ms for the whole call (the
  caller's speech, or µ-law silence) and ``dtmf`` for key presses; hanging up closes the socket
  (Plivo's protocol reference has no inbound ``stop``);
* it plays ``playAudio`` from the gateway in real time (8 bytes per millisecond), answers each
  ``checkpoint`` with ``playedStream`` once the audio queued before it has played, and on
  ``clearAudio`` drops everything not yet played, answers ``clearedAudio``, and never acknowledges
  the checkpoints the clear dropped (Plivo emits ``playedStream`` only for audio that played).

It checks every message the gateway sends the way Plivo would, and counts violations instead of
failing. The module also answers ``gateway call --carrier plivo URL`` (see
:mod:`gateway.softphone.cli`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import aiohttp

from gateway.audio import G711_ULAW, ULAW_SILENCE_BYTE, is_base64
from gateway.carriers.plivo.auth import NONCE_HEADER, SIGNATURE_HEADER, plivo_signature
from gateway.carriers.plivo.codec import plivo_number
from gateway.softphone.report import CallError, CallRejected, CallReport, write_call_wav
from gateway.softphone.script import Dtmf, Hangup, Reconnect, Say, Silence, Step, WaitForBot
from gateway.softphone.session import EventCallback, _Call, _check_url, _Events, _open_socket

BYTES_PER_MS = 8
OUTBOUND_EVENTS = ("playAudio", "checkpoint", "clearAudio")

_WS_SCHEMES = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}


def new_auth_id() -> str:
    """A Plivo-style Auth ID: ``MA`` and 18 upper-case letters and digits."""
    return "MA" + secrets.token_hex(9).upper()


def signed_headers(auth_token: str | None, url: str, form: dict[str, str] | None = None,
                   method: str = "POST") -> dict[str, str]:
    """The headers Plivo signs a request with (none without a token)."""
    if not auth_token:
        return {}
    nonce = secrets.token_hex(10)
    return {SIGNATURE_HEADER: plivo_signature(auth_token, method, url, nonce, form), NONCE_HEADER: nonce}


def parse_stream_xml(body: bytes | str, base_url: str) -> str:
    """The media socket URL of a ``<Stream>`` answer, checked as Plivo would need it: a
    bidirectional µ-law stream that keeps the call alive. A relative URL is resolved against
    ``base_url``; http(s) becomes ws(s)."""
    snippet = (body.decode("utf-8", "replace") if isinstance(body, bytes) else body).strip()[:120]
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise CallError(f"the answer URL did not answer with Plivo XML ({exc}): {snippet!r}") from None
    if root.tag != "Response":
        raise CallError(f"the answer URL's XML is not a <Response>: {snippet!r}")
    stream = root.find("Stream")
    if stream is None:
        elements = ", ".join(f"<{child.tag}>" for child in root) or "nothing"
        raise CallError(f"the answer has no <Stream> (it has {elements})")
    wanted = {"bidirectional": "true", "keepCallAlive": "true", "contentType": "audio/x-mulaw;rate=8000"}
    for name, value in wanted.items():
        if (stream.get(name) or "").strip() != value:
            raise CallError(f"the <Stream> has {name}={stream.get(name)!r}; this phone takes {name}={value!r}")
    raw_url = (stream.text or "").strip()
    parts = urlsplit(urljoin(base_url, raw_url))
    scheme = _WS_SCHEMES.get(parts.scheme)
    if not raw_url or scheme is None or not parts.hostname:
        raise CallError(f"the <Stream> URL {raw_url!r} is not a ws(s):// URL")
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))


async def _post_answer(session: aiohttp.ClientSession, url: str, form: dict[str, str], auth_token: str | None,
                       timeout_s: float) -> bytes:
    try:
        async with asyncio.timeout(timeout_s):
            async with session.post(url, data=form, headers=signed_headers(auth_token, url, form)) as resp:
                body = await resp.read()
                status = resp.status
    except TimeoutError:
        raise CallError(f"the answer URL {url} did not answer within {timeout_s:g} s") from None
    except aiohttp.ClientError as exc:
        raise CallError(f"cannot reach the answer URL {url}: {exc}") from None
    if status >= 400:
        text = body.decode("utf-8", "replace").strip()[:120]
        raise CallRejected(f"the answer URL {url} answered HTTP {status}: {text!r}")
    return body


# --- the call -----------------------------------------------------------------------------------


class PlivoCallReport(CallReport):
    """The report of a Plivo call: ``caller_audio`` and ``bot_audio`` are µ-law at 8 kHz.

    ``call_sid`` is the ``callId`` (the CallUUID), ``stream_sid`` the ``streamId`` and
    ``account_sid`` the ``accountId``; ``marks_received`` are the checkpoints the gateway sent and
    ``marks_echoed`` those answered with ``playedStream``; ``clears`` counts ``clearAudio``.
    """

    def summary_lines(self) -> list[str]:
        s = self.seconds
        return [
            f"call {self.call_sid}, stream {self.stream_sid}: {self.outcome()}",
            f"bot audio: {s(self.received_bytes)} received, {s(self.played_bytes)} played, "
            f"{s(self.discarded_bytes)} discarded by {self.clears} clearAudio, "
            f"{s(self.unplayed_bytes)} unplayed at the end",
            f"checkpoints: {len(self.marks_received)} received, {len(self.marks_echoed)} played",
        ]


class _PlivoCall(_Call[PlivoCallReport]):
    """Plivo's side of a bidirectional audio stream."""

    carrier = "plivo"
    audio_format = G711_ULAW
    silence_byte = ULAW_SILENCE_BYTE
    report_class = PlivoCallReport

    def __init__(self, *args: Any, extra_headers: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seq = 0
        self.extra_headers = extra_headers
        self.cleared_dropped: list[str] = []  # checkpoints a clearAudio dropped, never acknowledged

    def _connected_fields(self) -> dict[str, Any]:
        return {"url": self.stream_url, "stream_sid": self.stream_sid, "call_sid": self.call_sid}

    async def _send_event(self, event: str, body: dict[str, Any], stream: bool = True) -> bool:
        """Send an event with the next sequenceNumber (a number) and, when ``stream``, our streamId."""
        async with self._send_lock:
            self._seq += 1
            message: dict[str, Any] = {"event": event, "sequenceNumber": self._seq}
            if stream:
                message["streamId"] = self.stream_sid
            message.update(body)
            return await self._write(message)

    async def _open(self) -> None:
        start = {
            "callId": self.call_sid,
            "streamId": self.stream_sid,
            "accountId": self.account_sid,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
        }
        await self._send_event("start", {"start": start, "extra_headers": self.extra_headers}, stream=False)

    async def _before_frame(self) -> None:
        await self._played(self.playout.due_marks())

    async def _send_audio(self, k: int, frame: bytes, payload: str) -> bool:
        media = {"track": "inbound", "timestamp": str(int(time.time() * 1000)), "chunk": k + 1, "payload": payload}
        return await self._send_event("media", {"media": media, "extra_headers": self.extra_headers})

    async def _send_dtmf(self, digit: str) -> bool:
        return await self._send_event("dtmf", {"dtmf": {"track": "inbound", "digit": digit}})

    async def _played(self, names: list[str]) -> None:
        for name in names:
            if await self._send_event("playedStream", {"name": name}):
                self.marks_echoed.append(name)

    async def _handle_text(self, data: str) -> None:
        message = self._json_object(data)
        if message is None:
            return
        event = message.get("event")
        if event not in OUTBOUND_EVENTS:
            self._violation(f"unknown event {event!r} (allowed: {', '.join(OUTBOUND_EVENTS)})")
            return
        if event == "playAudio":
            await self._play(message.get("media"))
            return
        sid = message.get("streamId")
        if sid != self.stream_sid:
            self._violation(f"{event} with streamId {sid!r}, expected {self.stream_sid!r}")
            return
        if event == "checkpoint":
            name = message.get("name")
            if not isinstance(name, str) or not name:
                self._violation("checkpoint without a name string")
                return
            self.marks_received.append(name)
            if self.playout.add_mark(name):  # nothing queued before it: played already
                await self._played([name])
        else:  # clearAudio
            dropped = self.playout.pending_marks
            self.cleared_dropped += dropped
            self._stop_playback("clear", marks_flushed=dropped)
            await self._send_event("clearedAudio", {})

    async def _play(self, media: object) -> None:
        if not isinstance(media, dict):
            self._violation("playAudio without a media object")
            return
        payload = media.get("payload")
        if isinstance(payload, str):
            self.received_payloads.append(payload)
        if media.get("contentType") != "audio/x-mulaw" or media.get("sampleRate") != 8000:
            self._violation(f"playAudio as {media.get('contentType')!r} at {media.get('sampleRate')!r} Hz; the stream "
                            "is audio/x-mulaw at 8000 Hz (Plivo cannot switch codecs mid-stream)")
            return
        if not is_base64(payload):
            self._violation(f"playAudio payload is not valid base64: {str(payload)[:40]!r}")
            return
        assert isinstance(payload, str)
        if payload.startswith("UklGR"):  # "RIFF": a WAV header is not raw µ-law
            self._violation("playAudio payload starts with a WAV header")
        audio = base64.b64decode(payload)
        self.received_bytes += len(audio)
        self.playout.append(audio)


async def place_plivo_call(
    url: str,
    steps: Sequence[Step],
    *,
    to: str = "+15555550100",
    from_: str = "+15555550199",
    auth_token: str | None = None,
    call_uuid: str | None = None,
    request_uuid: str | None = None,
    record: str | Path | None = None,
    on_event: EventCallback | None = None,
    connect_timeout_s: float = 10,
) -> PlivoCallReport:
    """Place one call through the gateway and run ``steps`` on it, like a Plivo caller.

    ``url``: the answer URL (``http(s)://…/plivo/answer``: its ``<Stream>`` answer names the media
    socket) or the media socket itself (``ws(s)://…/plivo/media?…``). ``auth_token``: sign the
    answer with ``X-Plivo-Signature-V3`` like Plivo does. ``call_uuid``: the call's CallUUID
    (default: a new UUID). ``request_uuid``: answer as the callee of a call placed through Plivo's
    REST API, whose create request was answered with this ``request_uuid`` (``Direction:
    outbound``; ``ALegRequestUUID`` and ``RequestUUID`` name the request). ``on_event(t_ms, kind,
    fields)`` is called as things happen (``t_ms`` counts from the moment the media socket
    opened); the kinds are those of the Twilio phone (``webhook`` is the answer). ``record``: write
    the call as a stereo WAV. If the steps end without :class:`Hangup`, the caller hangs up.
    :class:`Reconnect` is not a Plivo step.

    Raises :class:`CallError` (or :class:`CallRejected`) when the call cannot be set up.
    """
    script = list(steps)
    for step in script:
        if isinstance(step, Reconnect):
            raise TypeError("Reconnect is not a step of Plivo calls: a Plivo stream does not reopen its socket")
        if not isinstance(step, (Say, Silence, Dtmf, WaitForBot, Hangup)):
            raise TypeError(f"not a call step: {step!r}")
    kind = _check_url(url)
    call_id, stream_id, account_id = call_uuid or str(uuid.uuid4()), str(uuid.uuid4()), new_auth_id()
    events = _Events(on_event)
    # a new connection per request, as Plivo's requests come: with several workers sharing the
    # port, each may land on another one
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        if kind == "webhook":
            form = {
                "CallUUID": call_id,
                "From": plivo_number(from_),  # Plivo writes numbers without the plus
                "To": plivo_number(to),
                "Direction": "inbound" if request_uuid is None else "outbound",
                "CallStatus": "ringing" if request_uuid is None else "in-progress",
                "Event": "StartApp",
                "CallerName": "",
                "ALegUUID": call_id,
                "ALegRequestUUID": request_uuid or str(uuid.uuid4()),
                "RequestUUID": request_uuid or str(uuid.uuid4()),
                "SessionStart": time.strftime("%Y-%m-%d %H:%M:%S"),
            }
            body = await _post_answer(session, url, form, auth_token, connect_timeout_s)
            stream_url = parse_stream_xml(body, url)
            events.emit("webhook", stream_url=stream_url)
        else:
            stream_url = url
        ws = await _open_socket(session, stream_url, {}, connect_timeout_s)
        try:
            call = _PlivoCall(ws, script, events, stream_url=stream_url, stream_sid=stream_id, call_sid=call_id,
                              account_sid=account_id, custom_parameters={})
            await call.run()
        finally:
            await ws.close()
    report = call.report()
    if record is not None:
        await asyncio.to_thread(write_call_wav, report, record)
    return report


# --- `gateway call --carrier plivo` (see gateway.softphone.cli) ------------------------------------

NAME = "Plivo"
CLI_DESCRIPTION = ("with --carrier plivo, the way Plivo does: post the answer URL (http(s) URL) or open the "
                   "audio stream's socket directly (ws(s) URL)")
URL_NAME = "a Plivo URL (--carrier plivo)"
URL_HINT = "the gateway's Plivo answer URL with --carrier plivo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of Plivo calls (the positional URL is Plivo's with ``--carrier plivo``)."""
    parser.add_argument(
        "--plivo-auth-token", default=os.environ.get("PLIVO_AUTH_TOKEN") or None, metavar="TOKEN",
        help="Plivo: sign the answer with X-Plivo-Signature-V3 (default: $PLIVO_AUTH_TOKEN)",
    )


def call_url(args: argparse.Namespace) -> str | None:
    """The URL of the Plivo call ``gateway call`` was asked to place, if it was."""
    from gateway.softphone.cli import positional_url

    return positional_url(args, "plivo")


def misused_options(args: argparse.Namespace) -> str | None:
    """Why the options given do not fit when another carrier's call is placed (None: they fit)."""
    if args.plivo_auth_token is not None and args.plivo_auth_token != (os.environ.get("PLIVO_AUTH_TOKEN") or None):
        return "--plivo-auth-token is for Plivo calls (--carrier plivo)"
    return None


def place_from_args(
    args: argparse.Namespace, url: str, steps: list[Step], printer: Callable[[int], EventCallback]
) -> CallReport:
    """Place the Plivo call of ``gateway call``; ``printer(bytes_per_ms)`` prints its events."""
    return asyncio.run(
        place_plivo_call(
            url,
            steps,
            to=args.to or "+15555550100",
            from_=args.from_ or "+15555550199",
            auth_token=args.plivo_auth_token,
            record=args.record,
            on_event=printer(BYTES_PER_MS),
        )
    )

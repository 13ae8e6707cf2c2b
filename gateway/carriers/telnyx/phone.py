"""The softphone's Telnyx side: places a call through the gateway the way Telnyx does with TeXML.

:func:`place_telnyx_call` posts the TeXML voice webhook (form fields as Telnyx sends them, signed
with Ed25519 as Telnyx signs: ``telnyx-signature-ed25519`` over ``"{telnyx-timestamp}|{body}"``),
checks the TeXML answer the way Telnyx would read it (a ``<Connect><Stream>`` in the ``rtp``
bidirectional mode with PCMU at 8 kHz), opens the media WebSocket at the stream's URL and plays
Telnyx's side of a bidirectional media stream:

* it sends ``connected``, ``start``, one 20 ms ``media`` frame of PCMU every 20 ms for the whole
  call (the caller's speech, or silence), ``dtmf`` and finally ``stop``;
* it plays what the gateway sends back in real time (8 bytes per millisecond), sends each ``mark``
  back once the audio queued before it has played (at once when nothing is queued), and on
  ``clear`` drops everything not yet played and sends every pending mark back at once.

It checks every message the gateway sends the way Telnyx would and counts violations instead of
failing. Once the media socket has closed, it follows the TeXML on to its ``<Redirect>`` (signed
too) and keeps the verbs of the answer (``after_stream``: ``["Hangup"]``, or ``["Say", "Hangup"]``
for an apology). The module also answers ``gateway call --carrier telnyx``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import os
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audio import G711_ULAW, ULAW_SILENCE_BYTE, is_base64
from gateway.carriers.telnyx.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, telnyx_signature
from gateway.softphone.report import CallError, CallRejected, CallReport, write_call_wav
from gateway.softphone.script import Dtmf, Hangup, Reconnect, Say, Silence, Step, WaitForBot
from gateway.softphone.session import FRAME_MS, EventCallback, _Call, _check_url, _Events, _open_socket

FRAME_BYTES = 160  # 20 ms of 8 kHz PCMU
BYTES_PER_MS = 8
MIN_CHUNK_BYTES = 20 * BYTES_PER_MS  # Telnyx takes RTP media chunks of 20 ms to 30 s
MAX_CHUNK_BYTES = 30_000 * BYTES_PER_MS

_WS_SCHEMES = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}


# --- Telnyx helpers -----------------------------------------------------------------------------


def new_call_control_id() -> str:
    """A Telnyx-style call control id (a TeXML call's CallSid): ``v3:`` and 40 url-safe characters."""
    return "v3:" + base64.urlsafe_b64encode(os.urandom(30)).decode().rstrip("=")


def private_key_from_base64(text: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from its base64 32-byte seed. CallError when it is not one."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise CallError("the Telnyx signing key is not base64") from None
    if len(raw) != 32:
        raise CallError(f"the Telnyx signing key is {len(raw)} bytes; an Ed25519 private key (seed) is 32")
    return Ed25519PrivateKey.from_private_bytes(raw)


def signed_headers(private_key: Ed25519PrivateKey | None, body: bytes, now: float | None = None) -> dict[str, str]:
    """The headers Telnyx puts on a webhook with ``body`` (none without a key)."""
    if private_key is None:
        return {}
    timestamp = str(int(time.time() if now is None else now))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: telnyx_signature(private_key, timestamp, body)}


@dataclass
class StreamAnswer:
    """What a ``<Connect><Stream>`` TeXML answer asks of Telnyx."""

    stream_url: str
    redirect_url: str | None  # the <Redirect> after the stream, if any
    problems: list[str] = field(default_factory=list)  # what Telnyx would not do as the gateway expects


def parse_texml(body: bytes | str, base_url: str) -> StreamAnswer:
    """The media stream URL (query string kept) and the ``<Redirect>`` of a ``<Connect><Stream>``
    TeXML answer. A relative URL is resolved against ``base_url``; http(s) becomes ws(s)."""
    snippet = (body.decode("utf-8", "replace") if isinstance(body, bytes) else body).strip()[:120]
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise CallError(f"the voice webhook did not answer with TeXML ({exc}): {snippet!r}") from None
    if root.tag != "Response":
        raise CallError(f"the voice webhook answer is not a TeXML <Response>: {snippet!r}")
    stream = root.find("Connect/Stream")
    if stream is None:
        verbs = ", ".join(f"<{child.tag}>" for child in root) or "nothing"
        raise CallError(f"the TeXML answer has no <Connect><Stream> (it has {verbs})")
    raw_url = (stream.get("url") or "").strip()
    if not raw_url:
        raise CallError("the TeXML <Stream> has no url")
    parts = urlsplit(urljoin(base_url, raw_url))
    scheme = _WS_SCHEMES.get(parts.scheme)
    if scheme is None or not parts.hostname:
        raise CallError(f"the TeXML <Stream> url {raw_url!r} is not a ws(s):// URL")
    problems = []
    # Telnyx's defaults: mp3 playback (one file a second) and the call's own codec
    if stream.get("bidirectionalMode") != "rtp":
        problems.append(f"<Stream bidirectionalMode={stream.get('bidirectionalMode')!r}>: the bot's audio "
                        "would be taken as MP3 files (expected rtp)")
    if stream.get("bidirectionalCodec", "PCMU") != "PCMU" or stream.get("bidirectionalSamplingRate", "8000") != "8000":
        problems.append("<Stream> bidirectional audio is not PCMU at 8000 Hz")
    if stream.get("codec", "default") not in ("PCMU", "default"):
        problems.append(f"<Stream codec={stream.get('codec')!r}>: the caller's audio would not be PCMU")
    track = stream.get("track", "inbound_track")
    if track != "inbound_track":
        problems.append(f"<Stream track={track!r}>: the bot would hear itself")
    redirect = root.find("Redirect")
    redirect_url = None
    if redirect is not None and (redirect.text or "").strip():
        redirect_url = urljoin(base_url, (redirect.text or "").strip())
    stream_url = urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))
    return StreamAnswer(stream_url, redirect_url, problems)


async def _post_webhook(
    session: aiohttp.ClientSession,
    url: str,
    form: dict[str, str],
    private_key: Ed25519PrivateKey | None,
    timeout_s: float,
) -> bytes:
    body = urlencode(form).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", **signed_headers(private_key, body)}
    try:
        async with asyncio.timeout(timeout_s):
            async with session.post(url, data=body, headers=headers) as resp:
                answer = await resp.read()
                status = resp.status
    except TimeoutError:
        raise CallError(f"the webhook {url} did not answer within {timeout_s:g} s") from None
    except aiohttp.ClientError as exc:
        raise CallError(f"cannot reach the webhook {url}: {exc}") from None
    if status >= 400:
        text = answer.decode("utf-8", "replace").strip()[:120]
        raise CallRejected(f"the webhook {url} answered HTTP {status}: {text!r}")
    return answer


def texml_verbs(body: bytes) -> list[str]:
    """The verbs of a TeXML ``<Response>`` (``["Parse error"]`` when it is not TeXML)."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return ["Parse error"]
    return [child.tag for child in root] if root.tag == "Response" else ["Parse error"]


# --- the call -----------------------------------------------------------------------------------


@dataclass
class TelnyxCallReport(CallReport):
    """The report of a Telnyx call: ``caller_audio`` and ``bot_audio`` are PCMU at 8 kHz; ``clears``
    counts ``clear`` messages; ``call_sid`` is the call control id; ``after_stream`` the verbs of the
    TeXML the gateway answered at the ``<Redirect>`` once the stream had closed; ``short_chunks``
    counts media messages under Telnyx's 20 ms."""

    after_stream: list[str] = field(default_factory=list)
    short_chunks: int = 0

    def summary_lines(self) -> list[str]:
        s = self.seconds
        lines = [
            f"call {self.call_sid}, stream {self.stream_sid}: {self.outcome()}",
            f"bot audio: {s(self.received_bytes)} received, {s(self.played_bytes)} played, "
            f"{s(self.discarded_bytes)} discarded by {self.clears} clear(s), "
            f"{s(self.unplayed_bytes)} unplayed at the end",
            f"marks: {len(self.marks_received)} received, {len(self.marks_echoed)} sent back",
        ]
        if self.after_stream:
            lines.append("after the stream, TeXML: " + ", ".join(self.after_stream))
        return lines


class _TelnyxCall(_Call[TelnyxCallReport]):
    """Telnyx's side of a bidirectional media stream (rtp mode, PCMU 8 kHz)."""

    carrier = "telnyx"
    audio_format = G711_ULAW
    silence_byte = ULAW_SILENCE_BYTE
    report_class = TelnyxCallReport

    def __init__(self, *args: Any, from_: str = "", to: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seq = 0
        self.from_ = from_
        self.to = to
        self.short_chunks = 0

    def _connected_fields(self) -> dict[str, Any]:
        return {"url": self.stream_url, "stream_sid": self.stream_sid, "call_sid": self.call_sid}

    async def _send_event(self, event: str, body: dict[str, Any]) -> bool:
        """Send an event carrying the next sequence_number and our stream_id."""
        async with self._send_lock:
            self._seq += 1
            message: dict[str, Any] = {"event": event, "sequence_number": str(self._seq)}
            message.update(body)
            message["stream_id"] = self.stream_sid
            return await self._write(message)

    async def _open(self) -> None:
        await self._send({"event": "connected", "version": "1.0.0"})
        start = {
            "user_id": self.account_sid,
            "call_control_id": self.call_sid,
            "call_session_id": str(uuid.uuid4()),
            "from": self.from_,
            "to": self.to,
            "custom_parameters": dict(self.custom_parameters),
            "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
        }
        await self._send_event("start", {"start": start})

    async def _before_frame(self) -> None:
        await self._echo_marks(self.playout.due_marks())

    async def _send_audio(self, k: int, frame: bytes, payload: str) -> bool:
        media = {"track": "inbound", "chunk": str(k + 1), "timestamp": str(k * FRAME_MS), "payload": payload}
        return await self._send_event("media", {"media": media})

    async def _send_dtmf(self, digit: str) -> bool:
        return await self._send_event("dtmf", {"occurred_at": _now_iso(), "dtmf": {"digit": digit}})

    async def _send_stop(self) -> None:
        await self._send_event("stop", {"stop": {"user_id": self.account_sid, "call_control_id": self.call_sid}})

    async def _echo_marks(self, names: list[str]) -> None:
        for name in names:
            if await self._send_event("mark", {"mark": {"name": name}}):
                self.marks_echoed.append(name)

    async def _handle_text(self, data: str) -> None:
        message = self._json_object(data)
        if message is None:
            return
        event = message.get("event")
        if event not in ("media", "mark", "clear"):
            self._violation(f"unknown event {event!r} (allowed: media, mark, clear)")
            return
        media = message.get("media")
        payload = media.get("payload") if isinstance(media, dict) else None
        if event == "media" and isinstance(payload, str):
            self.received_payloads.append(payload)
        if "stream_id" in message and message["stream_id"] != self.stream_sid:
            self._violation(f"{event} with stream_id {message['stream_id']!r}, expected {self.stream_sid!r}")
            return
        if event == "media":
            if not is_base64(payload):
                self._violation(f"media payload is not valid base64: {str(payload)[:40]!r}")
                return
            assert isinstance(payload, str)
            if payload.startswith(("UklGR", "SUQz")):  # a WAV header, an MP3 file (ID3): not an RTP payload
                self._violation("media payload is a file (WAV or MP3), not PCMU RTP payload")
            audio = base64.b64decode(payload)
            if len(audio) > MAX_CHUNK_BYTES:
                self._violation(f"media chunk of {len(audio) / BYTES_PER_MS:.0f} ms: over Telnyx's 30 s")
            elif len(audio) < MIN_CHUNK_BYTES:
                self.short_chunks += 1
            self.received_bytes += len(audio)
            self.playout.append(audio)
        elif event == "mark":
            mark = message.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if not isinstance(name, str):
                self._violation("mark without a mark.name string")
                return
            self.marks_received.append(name)
            if self.playout.add_mark(name):
                await self._echo_marks([name])
        else:  # clear
            flushed = self.playout.pending_marks
            self._stop_playback("clear", marks_flushed=flushed)
            await self._echo_marks(flushed)


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000000Z"


async def place_telnyx_call(
    url: str,
    steps: Sequence[Step],
    *,
    signing_key: Ed25519PrivateKey | None = None,
    to: str = "+15555550100",
    from_: str = "+15555550199",
    params: Mapping[str, str] | None = None,
    record: str | Path | None = None,
    on_event: EventCallback | None = None,
    connect_timeout_s: float = 10,
    call_sid: str | None = None,
    account_sid: str | None = None,
    direction: str = "inbound",
) -> TelnyxCallReport:
    """Place one call through the gateway and run ``steps`` on it, like a Telnyx TeXML call.

    ``url``: the TeXML voice webhook (``http(s)://…/telnyx/voice``: the TeXML answer names the media
    socket) or the media socket itself (``ws(s)://…/telnyx/media?…``, with ``params`` as the
    stream's ``custom_parameters``). ``signing_key``: sign the webhooks as Telnyx does (unsigned
    without it). ``on_event(t_ms, kind, fields)`` as for the other carriers' phones; a TeXML answer
    Telnyx would not play as the gateway meant it is a violation. If the steps end without
    :class:`Hangup`, the caller hangs up. :class:`Reconnect` is not a Telnyx step. ``call_sid``,
    ``account_sid`` and ``direction``: the call's as Telnyx names them (a call the gateway placed:
    the ``call_sid`` its create request was answered with, ``direction="outbound-api"``).

    Raises :class:`CallError` (or :class:`CallRejected`) when the call cannot be set up.
    """
    script = list(steps)
    for step in script:
        if isinstance(step, Reconnect):
            raise TypeError("Reconnect is not a step of Telnyx calls: a Telnyx media stream does not reopen its socket")
        if not isinstance(step, (Say, Silence, Dtmf, WaitForBot, Hangup)):
            raise TypeError(f"not a call step: {step!r}")
    kind = _check_url(url)
    call_sid, account_sid = call_sid or new_call_control_id(), account_sid or str(uuid.uuid4())
    stream_id = str(uuid.uuid4())
    events = _Events(on_event)
    form = {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallSidLegacy": call_sid,
        "CallStatus": "ringing",
        "ConnectionId": "1234567890",
        "Direction": direction,
        "From": from_,
        "To": to,
    }
    answer: StreamAnswer | None = None
    # a new connection per request, as Telnyx's webhooks and media socket come
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        if kind == "webhook":
            body = await _post_webhook(session, url, form, signing_key, connect_timeout_s)
            answer = parse_texml(body, url)
            # the stream URL's query string carries the call's token: printed without its values
            shown = urlsplit(answer.stream_url)
            events.emit("webhook", stream_url=urlunsplit(shown._replace(query="")),
                        parameters={name: "..." for name, _ in parse_qsl(shown.query)})
            stream_url, custom = answer.stream_url, dict(params or {})
        else:
            stream_url, custom = url, dict(params or {})
        ws = await _open_socket(session, stream_url, {}, connect_timeout_s)
        try:
            call = _TelnyxCall(ws, script, events, stream_url=stream_url, stream_sid=stream_id, call_sid=call_sid,
                               account_sid=account_sid, custom_parameters=custom, from_=from_, to=to)
            for problem in answer.problems if answer is not None else []:
                call._violation(problem)
            await call.run()
        finally:
            await ws.close()
        after: list[str] = []
        if answer is not None and answer.redirect_url is not None:
            follow = {**form, "CallStatus": "in-progress"}
            try:
                after = texml_verbs(await _post_webhook(session, answer.redirect_url, follow, signing_key,
                                                        connect_timeout_s))
            except CallError as exc:  # the call is over either way; say what the redirect answered
                after = [f"error: {exc}"]
    report = call.report()
    report.after_stream = after
    report.short_chunks = call.short_chunks
    if record is not None:
        await asyncio.to_thread(write_call_wav, report, record)
    return report


# --- `gateway call --carrier telnyx` (see gateway.softphone.cli) -----------------------------------

NAME = "Telnyx"
CLI_DESCRIPTION = (
    "the way Telnyx does with TeXML (--carrier telnyx): post the signed voice webhook (http(s) URL) or open "
    "the media socket directly (ws(s) URL)"
)
URL_NAME = "a Telnyx URL"
URL_HINT = "the gateway's Telnyx URL with --carrier telnyx"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of Telnyx calls (the positional URL with ``--carrier telnyx``)."""
    parser.add_argument(
        "--telnyx-signing-key", metavar="BASE64",
        help="Telnyx: sign webhooks with this Ed25519 private key (base64 32-byte seed; the gateway's "
        "telnyx.public_key must be its public key) (default: $TELNYX_SIGNING_KEY)",
    )


def call_url(args: argparse.Namespace) -> str | None:
    """The URL of the Telnyx call ``gateway call`` was asked to place, if it was."""
    from gateway.softphone.cli import positional_url

    return positional_url(args, "telnyx")


def misused_options(args: argparse.Namespace) -> str | None:
    """Why the options given do not fit when another carrier's call is placed (None: they fit)."""
    if getattr(args, "telnyx_signing_key", None):
        return "--telnyx-signing-key is for Telnyx calls (--carrier telnyx)"
    return None


def place_from_args(
    args: argparse.Namespace, url: str, steps: list[Step], printer: Callable[[int], EventCallback]
) -> CallReport:
    """Place the Telnyx call of ``gateway call``; ``printer(bytes_per_ms)`` prints its events."""
    text = args.telnyx_signing_key or os.environ.get("TELNYX_SIGNING_KEY")
    key = private_key_from_base64(text) if text else None
    return asyncio.run(
        place_telnyx_call(
            url,
            steps,
            signing_key=key,
            to=args.to or "+15555550100",
            from_=args.from_ or "+15555550199",
            record=args.record,
            on_event=printer(BYTES_PER_MS),
        )
    )

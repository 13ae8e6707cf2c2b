"""The softphone's Twilio side: places a call through the gateway exactly the way Twilio does.

:func:`place_call` posts Twilio's voice webhook, follows the ``<Connect><Stream>`` TwiML answer,
opens the media WebSocket and then plays Twilio's side of a bidirectional media stream:

* it sends ``connected``, ``start``, one 20 ms ``media`` frame of µ-law every 20 ms for the
  whole call (the caller's speech, or µ-law silence), ``dtmf`` and finally ``stop``;
* it plays what the gateway sends back in real time (8 bytes per millisecond), echoes each
  ``mark`` once the audio queued before it has played, and on ``clear`` drops everything not
  yet played and echoes every pending mark at once.

It checks every message the gateway sends the way Twilio would, and counts violations instead of
failing. The module also answers ``gateway call`` (see :mod:`gateway.softphone.cli`): the
positional URL is a Twilio call.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import os
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import aiohttp

from gateway.audio import G711_ULAW, ULAW_SILENCE_BYTE, is_base64
from gateway.softphone.report import CallError, CallRejected, CallReport, write_call_wav
from gateway.softphone.script import Dtmf, Hangup, Reconnect, Say, Silence, Step, WaitForBot
from gateway.softphone.session import FRAME_MS, EventCallback, _Call, _check_url, _Events, _open_socket

FRAME_BYTES = 160  # 20 ms of 8 kHz µ-law
BYTES_PER_MS = 8
SILENCE_FRAME = bytes([ULAW_SILENCE_BYTE]) * FRAME_BYTES


# --- Twilio helpers -----------------------------------------------------------------------------


def new_sid(prefix: str) -> str:
    """A Twilio-style id: two letters and 32 hex digits (``CA…``, ``AC…``, ``MZ…``)."""
    return prefix + secrets.token_hex(16)


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str] | None = None) -> str:
    """The ``X-Twilio-Signature`` Twilio puts on a request to ``url`` with form ``params``."""
    form = params or {}
    data = url + "".join(name + form[name] for name in sorted(form))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


_WS_SCHEMES = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}


def parse_twiml(body: bytes | str, base_url: str) -> tuple[str, dict[str, str]]:
    """The media stream URL and ``<Parameter>`` values of a ``<Connect><Stream>`` TwiML answer.

    A relative stream URL is resolved against ``base_url``; http(s) becomes ws(s).
    """
    snippet = (body.decode("utf-8", "replace") if isinstance(body, bytes) else body).strip()[:120]
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise CallError(f"the voice webhook did not answer with TwiML ({exc}): {snippet!r}") from None
    if root.tag != "Response":
        raise CallError(f"the voice webhook answer is not a TwiML <Response>: {snippet!r}")
    stream = root.find("Connect/Stream")
    if stream is None:
        verbs = ", ".join(f"<{child.tag}>" for child in root) or "nothing"
        raise CallError(f"the TwiML answer has no <Connect><Stream> (it has {verbs})")
    raw_url = (stream.get("url") or "").strip()
    if not raw_url:
        raise CallError("the TwiML <Stream> has no url")
    parts = urlsplit(urljoin(base_url, raw_url))
    scheme = _WS_SCHEMES.get(parts.scheme)
    if scheme is None or not parts.hostname:
        raise CallError(f"the TwiML <Stream> url {raw_url!r} is not a ws(s):// URL")
    stream_url = urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))
    params = {
        name: p.get("value", "") for p in stream.findall("Parameter") if (name := p.get("name"))
    }
    return stream_url, params


async def _post_webhook(
    session: aiohttp.ClientSession,
    url: str,
    form: dict[str, str],
    auth_token: str | None,
    timeout_s: float,
) -> bytes:
    headers = {"X-Twilio-Signature": twilio_signature(auth_token, url, form)} if auth_token else {}
    try:
        async with asyncio.timeout(timeout_s):
            async with session.post(url, data=form, headers=headers) as resp:
                body = await resp.read()
                status = resp.status
    except TimeoutError:
        raise CallError(f"the voice webhook {url} did not answer within {timeout_s:g} s") from None
    except aiohttp.ClientError as exc:
        raise CallError(f"cannot reach the voice webhook {url}: {exc}") from None
    if status >= 400:
        text = body.decode("utf-8", "replace").strip()[:120]
        raise CallRejected(f"the voice webhook {url} answered HTTP {status}: {text!r}")
    return body


async def _open_media_socket(
    session: aiohttp.ClientSession, url: str, auth_token: str | None, timeout_s: float
) -> aiohttp.ClientWebSocketResponse:
    headers = {"X-Twilio-Signature": twilio_signature(auth_token, url)} if auth_token else {}
    return await _open_socket(session, url, headers, timeout_s)


# --- the call -----------------------------------------------------------------------------------


class TwilioCallReport(CallReport):
    """The report of a Twilio call: ``caller_audio`` and ``bot_audio`` are µ-law at 8 kHz; ``clears``
    counts ``clear`` messages."""

    def summary_lines(self) -> list[str]:
        s = self.seconds
        return [
            f"call {self.call_sid}, stream {self.stream_sid}: {self.outcome()}",
            f"bot audio: {s(self.received_bytes)} received, {s(self.played_bytes)} played, "
            f"{s(self.discarded_bytes)} discarded by {self.clears} clear(s), "
            f"{s(self.unplayed_bytes)} unplayed at the end",
            f"marks: {len(self.marks_received)} received, {len(self.marks_echoed)} echoed",
        ]


class _TwilioCall(_Call[TwilioCallReport]):
    """Twilio's side of a bidirectional media stream."""

    carrier = "twilio"
    audio_format = G711_ULAW
    silence_byte = ULAW_SILENCE_BYTE
    report_class = TwilioCallReport

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seq = 0

    def _connected_fields(self) -> dict[str, Any]:
        return {"url": self.stream_url, "stream_sid": self.stream_sid, "call_sid": self.call_sid}

    async def _send_event(self, event: str, body: dict[str, Any]) -> bool:
        """Send an event carrying the next sequenceNumber and our streamSid."""
        async with self._send_lock:
            self._seq += 1
            message = {"event": event, "sequenceNumber": str(self._seq), "streamSid": self.stream_sid}
            message.update(body)
            return await self._write(message)

    async def _open(self) -> None:
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        start = {
            "streamSid": self.stream_sid,
            "accountSid": self.account_sid,
            "callSid": self.call_sid,
            "tracks": ["inbound"],
            "customParameters": dict(self.custom_parameters),
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        }
        await self._send_event("start", {"start": start})

    async def _before_frame(self) -> None:
        await self._echo_marks(self.playout.due_marks())

    async def _send_audio(self, k: int, frame: bytes, payload: str) -> bool:
        media = {"track": "inbound", "chunk": str(k + 1), "timestamp": str(k * FRAME_MS), "payload": payload}
        return await self._send_event("media", {"media": media})

    async def _send_dtmf(self, digit: str) -> bool:
        return await self._send_event("dtmf", {"dtmf": {"track": "inbound_track", "digit": digit}})

    async def _send_stop(self) -> None:
        await self._send_event("stop", {"stop": {"accountSid": self.account_sid, "callSid": self.call_sid}})

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
        sid = message.get("streamSid")
        if sid != self.stream_sid:
            self._violation(f"{event} with streamSid {sid!r}, expected {self.stream_sid!r}")
            return
        if event == "media":
            if not is_base64(payload):
                self._violation(f"media payload is not valid base64: {str(payload)[:40]!r}")
                return
            assert isinstance(payload, str)
            if payload.startswith("UklGR"):  # "RIFF": a WAV header is not raw µ-law
                self._violation("media payload starts with a WAV header")
            audio = base64.b64decode(payload)
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


async def place_call(
    url: str,
    steps: Sequence[Step],
    *,
    params: Mapping[str, str] | None = None,
    to: str = "+15555550100",
    from_: str = "+15555550199",
    record: str | Path | None = None,
    on_event: EventCallback | None = None,
    connect_timeout_s: float = 10,
    auth_token: str | None = None,
    call_sid: str | None = None,
    direction: str = "inbound",
) -> TwilioCallReport:
    """Place one call through the gateway and run ``steps`` on it, like a Twilio caller.

    ``url``: the voice webhook (``http(s)://…/twilio/voice``: the TwiML answer names the media
    socket and its parameters; ``params`` are added to them) or the media socket itself
    (``ws(s)://…/twilio/media``, with ``params`` as the stream's customParameters).
    ``on_event(t_ms, kind, fields)`` is called as things happen (``t_ms`` counts from the
    moment the media socket opened). Event kinds: webhook, connected, speech_start,
    speech_end, dtmf, bot_audio_start, bot_audio_end, clear, wait_timeout, hangup,
    closed_by_gateway, violation (the first few only). ``auth_token``: sign requests with
    ``X-Twilio-Signature`` like Twilio does. ``call_sid``: the call's SID (a call placed through
    the REST API has one already); ``direction``: "outbound-api" for such a call. ``record``: write
    the call as a stereo WAV (see
    :func:`~gateway.softphone.report.write_call_wav`).
    If the steps end without :class:`Hangup`, the caller hangs up. :class:`Reconnect` is not
    a Twilio step.

    Raises :class:`CallError` (or :class:`CallRejected`) when the call cannot be set up.
    """
    script = list(steps)
    for step in script:
        if isinstance(step, Reconnect):
            raise TypeError("Reconnect is not a step of Twilio calls: a Twilio media stream does not reopen its socket")
        if not isinstance(step, (Say, Silence, Dtmf, WaitForBot, Hangup)):
            raise TypeError(f"not a call step: {step!r}")
    kind = _check_url(url)
    call_sid, account_sid, stream_sid = call_sid or new_sid("CA"), new_sid("AC"), new_sid("MZ")
    events = _Events(on_event)
    # a new connection per request, as Twilio's webhook and media socket come: with several workers
    # sharing the port, each may land on another one
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        if kind == "webhook":
            form = {
                "AccountSid": account_sid,
                "ApiVersion": "2010-04-01",
                "CallSid": call_sid,
                "CallStatus": "ringing",
                "Called": to,
                "Caller": from_,
                "Direction": direction,
                "From": from_,
                "To": to,
            }
            body = await _post_webhook(session, url, form, auth_token, connect_timeout_s)
            stream_url, custom = parse_twiml(body, url)
            events.emit("webhook", stream_url=stream_url, parameters=dict(custom))
            custom.update(params or {})
        else:
            stream_url, custom = url, dict(params or {})
        ws = await _open_media_socket(session, stream_url, auth_token, connect_timeout_s)
        try:
            call = _TwilioCall(
                ws,
                script,
                events,
                stream_url=stream_url,
                stream_sid=stream_sid,
                call_sid=call_sid,
                account_sid=account_sid,
                custom_parameters=custom,
            )
            await call.run()
        finally:
            await ws.close()
    report = call.report()
    if record is not None:
        await asyncio.to_thread(write_call_wav, report, record)
    return report



# --- `gateway call` (see gateway.softphone.cli) ----------------------------------------------------

NAME = "Twilio"
CLI_DESCRIPTION = (
    "the way Twilio does: post the voice webhook (http(s) URL) or open the media socket directly (ws(s) URL)"
)
URL_NAME = "a Twilio URL"
URL_HINT = "the gateway's Twilio URL"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of Twilio calls (the positional URL is Twilio's unless ``--carrier`` names another)."""
    parser.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="Twilio: a stream customParameter"
    )
    parser.add_argument(
        "--auth-token", default=os.environ.get("TWILIO_AUTH_TOKEN") or None,
        help="Twilio: sign requests with X-Twilio-Signature (default: $TWILIO_AUTH_TOKEN)",
    )


def call_url(args: argparse.Namespace) -> str | None:
    """The URL of the Twilio call ``gateway call`` was asked to place, if it was."""
    from gateway.softphone.cli import positional_url

    return positional_url(args, "twilio")


def misused_options(args: argparse.Namespace) -> str | None:
    """Why the options given do not fit when another carrier's call is placed (None: they fit)."""
    if args.param:
        return "--param is for Twilio calls; other carriers' calls have no stream parameters"
    return None


def place_from_args(
    args: argparse.Namespace, url: str, steps: list[Step], printer: Callable[[int], EventCallback]
) -> CallReport:
    """Place the Twilio call of ``gateway call``; ``printer(bytes_per_ms)`` prints its events."""
    params = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CallError(f"--param {item!r}: expected NAME=VALUE")
        params[name] = value
    return asyncio.run(
        place_call(
            url,
            steps,
            params=params,
            to=args.to or "+15555550100",
            from_=args.from_ or "+15555550199",
            record=args.record,
            on_event=printer(BYTES_PER_MS),
            auth_token=args.auth_token,
        )
    )


# --- `gateway demo` (see gateway.demo) -------------------------------------------------------------

DEMO_SECRET_ENV = "TWILIO_AUTH_TOKEN"  # the demo sets it to a fresh token: the gateway checks what the phone signs
DEMO_SECTION = "twilio:\n  auth_token: ${TWILIO_AUTH_TOKEN}\n"  # the demo config's section for this carrier
DEMO_PLACING = "placing a call to the Twilio voice webhook..."


async def place_demo_call(
    base_url: str, steps: Sequence[Step], *, secret: str, record: str | Path | None, on_event: EventCallback
) -> CallReport:
    """The demo's call: the voice webhook of the gateway at ``base_url``, signed with ``secret``."""
    return await place_call(f"{base_url}/twilio/voice", steps, record=record, on_event=on_event, auth_token=secret)

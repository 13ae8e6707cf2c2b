"""The softphone's Asterisk side: places a call through the gateway exactly the way chan_websocket does.

:func:`place_asterisk_call` opens the gateway's media socket (``ws(s)://…/asterisk/media?to=…``, the
URI a ``websocket_client.conf`` connection plus the dial string's ``v()`` parameters give) with
the connection's credentials (HTTP basic, or a bearer token), then plays Asterisk's side:

* it sends ``MEDIA_START`` (plain text, or JSON with ``json_control``), then one BINARY frame of
  ``optimal_frame_size`` bytes of µ-law every 20 ms for the whole call (the caller's speech, or
  µ-law silence), ``DTMF_END digit:<key>`` for keys, and closes the socket to hang up;
* it plays the BINARY audio the gateway sends in real time, cutting it into whole frames as
  chan_websocket does (outside ``START_MEDIA_BUFFERING`` a remainder that does not fill a frame is
  dropped, and counted as a violation); ``MARK_MEDIA`` is answered with ``MEDIA_MARK_PROCESSED``
  once the audio queued before it has played; ``FLUSH_MEDIA`` drops everything queued, marks
  included, which are never answered (as Asterisk does); ``GET_STATUS`` gets a ``STATUS``;
* it keeps Asterisk's queue limits (frames): ``MEDIA_XOFF`` once ``xoff_frames`` are queued,
  ``MEDIA_XON`` once fewer than ``xon_frames`` are, and a message that arrives while
  ``max_frames`` are queued is dropped (a violation). Tests lower the limits to reach them.

It checks every message the gateway sends the way chan_websocket would and counts violations
instead of failing. The module also answers ``gateway call --carrier asterisk URL`` (see
:mod:`gateway.softphone.cli`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp

from gateway.audio import G711_ULAW, ULAW_SILENCE_BYTE
from gateway.carriers.asterisk.auth import basic_header
from gateway.carriers.asterisk.codec import MAX_CONTROL, MAX_MESSAGE, QUEUE_MAX, XOFF_LEVEL, XON_LEVEL
from gateway.softphone.report import CallError, CallReport, write_call_wav
from gateway.softphone.script import Dtmf, Hangup, Reconnect, Say, Silence, Step, WaitForBot
from gateway.softphone.session import EventCallback, _Call, _check_url, _Events, _open_socket

FRAME_BYTES = 160  # optimal_frame_size of ulaw: 20 ms of 8 kHz µ-law
BYTES_PER_MS = 8
_COMMANDS = ("ANSWER", "HANGUP", "START_MEDIA_BUFFERING", "STOP_MEDIA_BUFFERING", "MARK_MEDIA", "FLUSH_MEDIA",
             "GET_STATUS", "REPORT_QUEUE_DRAINED", "PAUSE_MEDIA", "CONTINUE_MEDIA", "SET_MEDIA_DIRECTION")


class AsteriskCallReport(CallReport):
    """The report of an Asterisk call: ``caller_audio`` and ``bot_audio`` are µ-law at 8 kHz.

    ``stream_sid`` is the ``connection_id`` and ``call_sid`` the ``channel_id`` of ``MEDIA_START``;
    ``received_payloads`` holds every BINARY frame the gateway sent (base64); ``clears`` counts
    ``FLUSH_MEDIA``; ``marks_echoed`` the ``MEDIA_MARK_PROCESSED`` sent back.
    """

    def summary_lines(self) -> list[str]:
        s = self.seconds
        return [
            f"Asterisk channel {self.call_sid}, connection {self.stream_sid}: {self.outcome()}",
            f"bot audio: {s(self.received_bytes)} received, {s(self.played_bytes)} played, "
            f"{s(self.discarded_bytes)} discarded by {self.clears} FLUSH_MEDIA, "
            f"{s(self.unplayed_bytes)} unplayed at the end",
            f"marks: {len(self.marks_received)} received, {len(self.marks_echoed)} processed",
        ]


class _AsteriskCall(_Call[AsteriskCallReport]):
    """chan_websocket's side of the media socket."""

    carrier = "asterisk"
    audio_format = G711_ULAW
    silence_byte = ULAW_SILENCE_BYTE
    report_class = AsteriskCallReport

    def __init__(self, *args: Any, json_control: bool = False, frame_size: int = FRAME_BYTES,
                 xoff_frames: int = XOFF_LEVEL, xon_frames: int = XON_LEVEL, max_frames: int = QUEUE_MAX,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.json_control = json_control
        self.frame_size = frame_size
        self.xoff_frames, self.xon_frames, self.max_frames = xoff_frames, xon_frames, max_frames
        self.buffering = False  # START_MEDIA_BUFFERING received (until STOP_MEDIA_BUFFERING or FLUSH_MEDIA)
        self.leftover = b""  # a partial frame kept while buffering
        self.queue_full = False  # MEDIA_XOFF sent, MEDIA_XON not yet
        self.xoffs = 0
        self.xons = 0
        self.dropped_messages = 0  # audio messages that arrived with the queue full
        self.hangup_received = False
        self.statuses = 0
        self.commands: list[str] = []  # every command received, in order (names only)

    # -- sending

    async def _control(self, name: str, **fields: Any) -> bool:
        """Send one control message in the socket's format, as chan_websocket writes it."""
        if self.json_control:
            text = json.dumps({"event": name, "channel_id": self.call_sid, **fields}, separators=(",", ":"))
        elif name == "MEDIA_MARK_PROCESSED":
            text = f"{name} {fields['correlation_id']}".rstrip()
        else:
            if name == "DTMF_END":
                fields["channel_id"] = self.call_sid  # after the digit
            elif name == "STATUS":
                fields = {"channel_id": self.call_sid, **fields}
            words = (f"{key}:{str(value).lower() if isinstance(value, bool) else value}"
                     for key, value in fields.items())
            text = " ".join([name, *words])
        return await self._send_text(text)

    async def _send_text(self, text: str) -> bool:
        async with self._send_lock:
            if self.send_failed:
                return False
            try:
                await self.ws.send_str(text)
            except (ConnectionError, aiohttp.ClientError, RuntimeError):
                self.send_failed = True
                return False
            return True

    def _connected_fields(self) -> dict[str, Any]:
        return {"url": self.stream_url, "connection_id": self.stream_sid, "channel_id": self.call_sid}

    async def _open(self) -> None:
        fields: dict[str, Any] = {"connection_id": self.stream_sid, "channel": f"WebSocket/{self.stream_sid}/0x1",
                                  "channel_id": self.call_sid, "format": "ulaw",
                                  "optimal_frame_size": self.frame_size, "ptime": 20}
        if self.json_control:
            fields["channel_variables"] = {"MEDIA_WEBSOCKET_CONNECTION_ID": self.stream_sid,
                                           "MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE": str(self.frame_size)}
            await self._send_text(json.dumps({"event": "MEDIA_START", **fields}, separators=(",", ":")))
            return
        await self._send_text("MEDIA_START " + " ".join(f"{key}:{value}" for key, value in fields.items()))

    async def _send_audio(self, k: int, frame: bytes, payload: str) -> bool:
        async with self._send_lock:
            return await self._write_bytes(frame)

    async def _send_dtmf(self, digit: str) -> bool:
        return await self._control("DTMF_END", digit=digit)

    async def _before_frame(self) -> None:
        """A 20 ms tick: the previous frame has played; marks behind it are processed, and the
        queue may have drained below the XON level."""
        for name in self.playout.due_marks():
            if await self._control("MEDIA_MARK_PROCESSED", correlation_id=name):
                self.marks_echoed.append(name)
        if self.queue_full and self._queued_frames() < self.xon_frames:
            self.queue_full = False
            if await self._control("MEDIA_XON"):
                self.xons += 1
                self.events.emit("media_xon", queued_frames=self._queued_frames())

    def _queued_frames(self) -> int:
        return self.playout.buffered // self.frame_size

    # -- receiving

    async def _handle_binary(self, data: bytes) -> None:
        self.received_payloads.append(self._b64(data))
        if not data:
            self._violation("an empty BINARY frame")
            return
        if len(data) > MAX_MESSAGE:
            self._violation(f"a BINARY frame of {len(data)} bytes: Asterisk closes the socket past {MAX_MESSAGE}")
            return
        if self._queued_frames() >= self.max_frames:
            self.dropped_messages += 1
            self._violation(f"{len(data)} bytes of audio sent while {self.max_frames} frames were queued: dropped")
            return
        if self.buffering:
            audio = self.leftover + data
            whole = len(audio) // self.frame_size * self.frame_size
            self.leftover = audio[whole:]
            audio = audio[:whole]
        else:
            whole = len(data) // self.frame_size * self.frame_size
            if whole != len(data):
                self._violation(f"a BINARY frame of {len(data)} bytes outside media buffering: the last "
                                f"{len(data) - whole} bytes do not fill a frame and are dropped")
            audio = data[:whole]
        self.received_bytes += len(audio)
        self.playout.append(audio)
        if not self.queue_full and self._queued_frames() >= self.xoff_frames:
            self.queue_full = True
            if await self._control("MEDIA_XOFF"):
                self.xoffs += 1
                self.events.emit("media_xoff", queued_frames=self._queued_frames())

    def _play_frame(self) -> bytes:
        if not self.playout.buffered and self.leftover:  # the queue ran dry: the partial frame plays
            self.received_bytes += len(self.leftover)
            self.playout.append(self.leftover)
            self.leftover = b""
        return super()._play_frame()

    @staticmethod
    def _b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    def _parse(self, data: str) -> tuple[str, dict[str, Any], str] | None:
        """(command, JSON fields, plain-text argument) of a control message, or None (a violation)."""
        if len(data.encode()) > MAX_CONTROL:
            self._violation(f"a control message of {len(data.encode())} bytes: Asterisk ignores those over "
                            f"{MAX_CONTROL}")
            return None
        if self.json_control:
            message = self._json_object(data)
            if message is None:
                return None
            command = message.get("command")
            if not isinstance(command, str):
                self._violation(f"a JSON command without a command name: {data[:60]!r}")
                return None
            return command, message, ""
        if data.lstrip().startswith("{"):
            self._violation(f"a JSON command on a plain-text socket: {data[:60]!r}")
            return None
        command, _, argument = data.strip().partition(" ")
        return command, {}, argument.strip()

    async def _handle_text(self, data: str) -> None:
        parsed = self._parse(data)
        if parsed is None:
            return
        command, fields, argument = parsed
        if command not in _COMMANDS:
            self._violation(f"unknown command {command[:40]!r}")
            return
        self.commands.append(command)
        name = fields.get("correlation_id") if self.json_control else argument
        if command == "START_MEDIA_BUFFERING":
            self.buffering = True
        elif command == "STOP_MEDIA_BUFFERING":
            self.buffering = False
            if self.leftover:
                self.received_bytes += len(self.leftover)
                self.playout.append(self.leftover)
                self.leftover = b""
        elif command == "MARK_MEDIA":
            mark = name if isinstance(name, str) else ""
            self.marks_received.append(mark)
            if self.playout.add_mark(mark) and await self._control("MEDIA_MARK_PROCESSED", correlation_id=mark):
                self.marks_echoed.append(mark)
        elif command == "FLUSH_MEDIA":
            self.buffering = False
            self.leftover = b""
            self._stop_playback("clear", marks_flushed=self.playout.pending_marks)  # never processed
        elif command == "GET_STATUS":
            self.statuses += 1
            self.events.emit("status", queued_frames=self._queued_frames(), queue_full=self.queue_full)
            await self._control("STATUS", queue_length=self._queued_frames(), xon_level=self.xon_frames,
                                xoff_level=self.xoff_frames, queue_full=self.queue_full,
                                bulk_media=self.buffering, media_paused=False)
        elif command == "HANGUP":
            self.hangup_received = True
            self.events.emit("hangup_command")
        elif command in ("PAUSE_MEDIA", "CONTINUE_MEDIA", "SET_MEDIA_DIRECTION", "REPORT_QUEUE_DRAINED"):
            self._violation(f"{command}: not expected from the gateway")
        # ANSWER: the channel is answered already (auto-answer)

    async def _send_stop(self) -> None:
        """Asterisk hangs up by closing the socket: nothing to send first."""


def with_query(url: str, params: dict[str, str]) -> str:
    """``url`` with ``params`` added to its query string (as the dial string's ``v()`` adds them)."""
    if not params:
        return url
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


async def place_asterisk_call(
    url: str,
    steps: Sequence[Step],
    *,
    to: str | None = None,
    from_: str | None = None,
    params: dict[str, str] | None = None,
    username: str | None = None,
    password: str | None = None,
    token: str | None = None,
    json_control: bool = False,
    connection_id: str | None = None,
    channel_id: str | None = None,
    record: str | Path | None = None,
    on_event: EventCallback | None = None,
    connect_timeout_s: float = 10,
    xoff_frames: int = XOFF_LEVEL,
    xon_frames: int = XON_LEVEL,
    max_frames: int = QUEUE_MAX,
) -> AsteriskCallReport:
    """Place one call through the gateway and run ``steps`` on it, like Asterisk's chan_websocket.

    ``url``: the media socket (``ws(s)://…/asterisk/media``); ``to`` (the called number), ``from_``
    (the caller's, as ``from``) and ``params`` are added to its query string.
    ``username``/``password``: HTTP basic credentials, as websocket_client.conf sends them;
    ``token``: a bearer token instead. ``json_control``: control messages in JSON (``f(json)``)
    instead of plain text. ``connection_id`` and ``channel_id`` are
    those of ``MEDIA_START`` (random by default). ``xoff_frames``, ``xon_frames``, ``max_frames``:
    the queue limits (Asterisk's by default). Events as for the other phones, plus
    ``hangup_command`` when the gateway sends ``HANGUP``.

    Raises :class:`CallError` (or :class:`~gateway.softphone.report.CallRejected`) when the call
    cannot be set up.
    """
    script = list(steps)
    for step in script:
        if isinstance(step, Reconnect):
            raise TypeError("Reconnect is not a step of Asterisk calls: chan_websocket does not reopen its socket")
        if not isinstance(step, (Say, Silence, Dtmf, WaitForBot, Hangup)):
            raise TypeError(f"not a call step: {step!r}")
    if _check_url(url) != "media":
        raise CallError(f"bad URL {url!r}: Asterisk calls open the media socket, ws(s)://host/asterisk/media")
    query = dict(params or {})
    if to:
        query["to"] = to
    if from_:
        query["from"] = from_
    stream_url = with_query(url, query)
    headers: dict[str, str] = {}
    if token:
        headers["Authorization"] = "Bearer " + token
    elif username is not None and password is not None:
        headers["Authorization"] = basic_header(username, password)
    connection = connection_id or "media_connection1"
    channel = channel_id or f"{secrets.randbelow(10**10)}.{secrets.randbelow(1000)}"
    events = _Events(on_event)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        ws = await _open_socket(session, stream_url, headers, connect_timeout_s)
        try:
            call = _AsteriskCall(ws, script, events, stream_url=stream_url, stream_sid=connection,
                                 call_sid=channel, account_sid="", custom_parameters=query,
                                 json_control=json_control, xoff_frames=xoff_frames, xon_frames=xon_frames,
                                 max_frames=max_frames)
            await call.run()
        finally:
            await ws.close()
    report = call.report()
    if record is not None:
        await asyncio.to_thread(write_call_wav, report, record)
    return report


# --- `gateway call --carrier asterisk URL` (see gateway.softphone.cli) -----------------------------

NAME = "Asterisk"
CLI_DESCRIPTION = (
    "with --carrier asterisk, the way Asterisk's chan_websocket does: open the media socket (ws(s) URL) "
    "with the connection's credentials"
)
URL_NAME = "an Asterisk URL (--carrier asterisk)"
URL_HINT = "--carrier asterisk and the gateway's ws(s)://host/asterisk/media URL for an Asterisk call"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of Asterisk calls (the positional URL with ``--carrier asterisk``)."""
    parser.add_argument(
        "--asterisk-user", default=os.environ.get("ASTERISK_WS_USERNAME") or None, metavar="NAME",
        help="Asterisk: the basic-auth username of the websocket_client.conf connection "
        "(default: $ASTERISK_WS_USERNAME)",
    )
    parser.add_argument(
        "--asterisk-password", default=os.environ.get("ASTERISK_WS_PASSWORD") or None, metavar="SECRET",
        help="Asterisk: its password (default: $ASTERISK_WS_PASSWORD)",
    )
    parser.add_argument(
        "--asterisk-token", default=os.environ.get("ASTERISK_WS_TOKEN") or None, metavar="TOKEN",
        help="Asterisk: a bearer token instead of basic credentials (default: $ASTERISK_WS_TOKEN)",
    )
    parser.add_argument("--asterisk-json", action="store_true",
                        help="Asterisk: JSON control messages (f(json)) instead of plain text")


def call_url(args: argparse.Namespace) -> str | None:
    """The URL of the Asterisk call ``gateway call`` was asked to place (``--carrier asterisk``), if it was."""
    from gateway.softphone.cli import positional_url

    return positional_url(args, "asterisk")


def misused_options(args: argparse.Namespace) -> str | None:
    """Why the options given do not fit when another carrier's call is placed (None: they fit).
    Credentials from the environment do not count: only what the command line says."""
    given = [option for option, value, env in (
        ("--asterisk-user", args.asterisk_user, "ASTERISK_WS_USERNAME"),
        ("--asterisk-password", args.asterisk_password, "ASTERISK_WS_PASSWORD"),
        ("--asterisk-token", args.asterisk_token, "ASTERISK_WS_TOKEN"),
    ) if value is not None and value != (os.environ.get(env) or None)]
    given += ["--asterisk-json"] if args.asterisk_json else []
    if given:
        return f"{', '.join(given)}: for Asterisk calls only (--carrier asterisk URL)"
    return None


def place_from_args(
    args: argparse.Namespace, url: str, steps: list[Step], printer: Callable[[int], EventCallback]
) -> CallReport:
    """Place the Asterisk call of ``gateway call``; ``printer(bytes_per_ms)`` prints its events."""
    if (args.asterisk_user is None) != (args.asterisk_password is None) and not args.asterisk_token:
        raise CallError("--asterisk-user and --asterisk-password go together")
    return asyncio.run(
        place_asterisk_call(
            url,
            steps,
            to=args.to,  # added to the URL as to=NUMBER, as the dial string's v() does
            from_=args.from_,  # and from=NUMBER
            username=args.asterisk_user,
            password=args.asterisk_password,
            token=args.asterisk_token,
            json_control=args.asterisk_json,
            record=args.record,
            on_event=printer(BYTES_PER_MS),
        )
    )

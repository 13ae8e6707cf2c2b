"""The softphone's console side: places a call through the gateway exactly the way the console page does.

:func:`place_browser_call` logs in to the console when given its token (``POST /console/login`` with
the form field ``token``; the answer's ``gateway_console`` cookie goes with the upgrade), opens the
console's media socket (``ws(s)://…/console/media``) and plays the page's side:

* it sends ``{"type":"start","profile":…}``, then one binary frame of 20 ms of PCM16 at 24 kHz
  (960 bytes) every 20 ms for the whole call (the caller's speech, or silence), ``dtmf`` for keys,
  and ``hangup`` before it closes the socket to hang up;
* it plays the binary audio the gateway sends in real time and answers each ``mark`` with
  ``played`` once its playout clock has passed it; ``clear`` drops everything queued, and the marks
  still pending are answered at once (as the page does);
* it keeps what the gateway tells the page: ``started`` (the call's id), every ``event`` (in
  :attr:`BrowserCallReport.page_events`), and ``ended`` (the reason).

It checks every message the gateway sends the way the page would and counts violations instead of
failing. The module also answers ``gateway call --carrier browser`` (see :mod:`gateway.softphone.cli`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from gateway.audio import PCM16_24K, resample, ulaw_to_array
from gateway.carriers.browser.codec import KEYS
from gateway.console.auth import COOKIE
from gateway.softphone.report import CallError, CallRejected, CallReport, write_call_wav
from gateway.softphone.script import Dtmf, Hangup, Say, Silence, Step, WaitForBot
from gateway.softphone.session import EventCallback, _Call, _check_url, _Events, _open_socket

LOGIN_TIMEOUT_S = 10.0


@dataclass
class BrowserCallReport(CallReport):
    """The report of a console call: ``caller_audio`` and ``bot_audio`` are PCM16 (little-endian) at
    24 kHz. ``call_sid`` is the call id of ``started``; ``page_events`` every ``event`` message as
    it came (name, t, fields); ``ended_reason`` the reason of ``ended`` (None: the gateway did not
    end the call); ``error`` the message of an ``error`` (a start the gateway refused)."""

    page_events: list[dict[str, Any]] = field(default_factory=list)
    ended_reason: str | None = None
    error: str | None = None

    def page_events_named(self, name: str) -> list[dict[str, Any]]:
        """The fields of every ``event`` of one name, in order."""
        return [event["fields"] for event in self.page_events if event.get("name") == name]

    def summary_lines(self) -> list[str]:
        s = self.seconds
        ended = f", ended by the gateway: {self.ended_reason}" if self.ended_reason else ""
        return [
            f"console call {self.call_sid or '(not started)'}: {self.outcome()}{ended}",
            f"bot audio: {s(self.received_bytes)} received, {s(self.played_bytes)} played, "
            f"{s(self.discarded_bytes)} discarded by {self.clears} clear(s), "
            f"{s(self.unplayed_bytes)} unplayed at the end",
            f"marks: {len(self.marks_received)} received, {len(self.marks_echoed)} played",
            f"events shown on the page: {len(self.page_events)}",
        ]


def ulaw_to_page_pcm(audio: bytes) -> bytes:
    """8 kHz µ-law as the console page sends a microphone: PCM16 little-endian at 24 kHz (offline use)."""
    return resample(ulaw_to_array(bytes(audio)), 8000, PCM16_24K.sample_rate).astype("<i2").tobytes()


def _page_script(steps: list[Step]) -> list[Step]:
    """The steps with every Say's µ-law turned into the page's PCM16 at 24 kHz (once, before the call)."""
    return [Say(ulaw_to_page_pcm(s.audio), label=s.label) if isinstance(s, Say) else s for s in steps]


class _BrowserCall(_Call[BrowserCallReport]):
    """The console page's side of its media socket."""

    carrier = "browser"
    audio_format = PCM16_24K
    silence_byte = 0
    report_class = BrowserCallReport

    def __init__(self, *args: Any, profile: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.profile = profile
        self.page_events: list[dict[str, Any]] = []
        self.ended_reason: str | None = None
        self.error: str | None = None
        self.started = False

    def _connected_fields(self) -> dict[str, Any]:
        return {"url": self.stream_url, "profile": self.profile}

    async def _open(self) -> None:
        await self._send({"type": "start", "profile": self.profile})

    async def _before_frame(self) -> None:
        await self._ack(self.playout.due_marks())

    async def _ack(self, names: list[str]) -> None:
        for name in names:
            if await self._send({"type": "played", "name": name}):
                self.marks_echoed.append(name)

    async def _send_audio(self, k: int, frame: bytes, payload: str) -> bool:
        async with self._send_lock:
            return await self._write_bytes(frame)

    async def _send_dtmf(self, digit: str) -> bool:
        return await self._send({"type": "dtmf", "digit": digit})

    async def _send_stop(self) -> None:
        await self._send({"type": "hangup"})

    async def _handle_binary(self, data: bytes) -> None:
        self.received_payloads.append(base64.b64encode(data).decode("ascii"))
        if not data or len(data) % 2:
            self._violation(f"a binary frame of {len(data)} bytes: not whole PCM16 samples")
            return
        if data.startswith(b"RIFF"):
            self._violation("bot audio starts with a WAV header")
        self.received_bytes += len(data)
        self.playout.append(data)

    async def _handle_text(self, data: str) -> None:
        message = self._json_object(data)
        if message is None:
            return
        kind = message.get("type")
        if kind == "mark":
            name = message.get("name")
            if not isinstance(name, str) or not name:
                self._violation("mark without a name")
                return
            self.marks_received.append(name)
            if self.playout.add_mark(name):
                await self._ack([name])
        elif kind == "clear":
            flushed = self.playout.pending_marks
            self._stop_playback("clear", marks_flushed=flushed)
            await self._ack(flushed)  # the page answers the marks a clear dropped at once
        elif kind == "event":
            name, fields, t = message.get("name"), message.get("fields"), message.get("t")
            if not isinstance(name, str) or not isinstance(fields, dict) or not isinstance(t, int | float):
                self._violation(f"an event without a name, a time or fields: {data[:80]!r}")
                return
            self.page_events.append(message)
            self.events.emit("gateway_event", event=name, fields=fields)
        elif kind == "started":
            call_id = message.get("call_id")
            if self.started or not isinstance(call_id, str) or message.get("sample_rate") != self.sample_rate:
                self._violation(f"an unexpected started: {data[:120]!r}")
                return
            self.started = True
            self.call_sid = self.stream_sid = call_id
            self.events.emit("started", call_id=call_id, profile=message.get("profile"))
        elif kind == "ended":
            reason = message.get("reason")
            self.ended_reason = reason if isinstance(reason, str) else ""
            self.events.emit("ended", reason=self.ended_reason)
        elif kind == "error":
            text = message.get("message")
            self.error = text if isinstance(text, str) else ""
            self.events.emit("refused", message=self.error)
        else:
            self._violation(f"unknown message type {str(kind)[:40]!r} (allowed: mark, clear, event, started, "
                            "ended, error)")

    def report(self) -> BrowserCallReport:
        report = super().report()
        report.page_events = list(self.page_events)
        report.ended_reason = self.ended_reason
        report.error = self.error
        return report


def login_url(media_url: str) -> str:
    """The console's login for its media socket's URL: ``ws://host/console/media`` gives
    ``http://host/console/login``."""
    parts = urlsplit(media_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    folder = parts.path.rsplit("/", 1)[0]
    return urlunsplit((scheme, parts.netloc, folder + "/login", "", ""))


async def log_in(session: aiohttp.ClientSession, media_url: str, token: str,
                 timeout_s: float = LOGIN_TIMEOUT_S) -> str:
    """Log in to the console as an operator does (the login form's ``token``): the session cookie's
    value. CallRejected when the gateway refuses the token, CallError when it cannot be asked."""
    url = login_url(media_url)
    try:
        async with asyncio.timeout(timeout_s), session.post(url, data={"token": token}, allow_redirects=False) as reply:
            status = reply.status
            cookie = reply.cookies.get(COOKIE)
    except TimeoutError:
        raise CallError(f"the console's login {url} did not answer within {timeout_s:g} s") from None
    except aiohttp.ClientError as exc:
        raise CallError(f"cannot reach the console's login {url}: {exc}") from None
    if status >= 400:
        raise CallRejected(f"the console's login {url} refused the token: HTTP {status}")
    if cookie is None or not cookie.value:
        raise CallError(f"the console's login {url} answered HTTP {status} without a session cookie")
    return cookie.value


async def place_browser_call(
    url: str,
    steps: Sequence[Step],
    *,
    profile: str,
    token: str | None = None,
    cookie: str | None = None,
    headers: dict[str, str] | None = None,
    record: str | Path | None = None,
    on_event: EventCallback | None = None,
    connect_timeout_s: float = 10,
) -> BrowserCallReport:
    """Place one call through the gateway's console and run ``steps`` on it, like the console page.

    ``url``: the console's media socket, ``ws(s)://…/console/media``; ``profile``: the profile to
    call. ``token``: the console token, to log in first (``POST /console/login``); ``cookie``: a
    session cookie's value instead (a test that made one). ``headers`` go with the upgrade (an
    ``Origin``, as a page sends it). ``Say`` audio is 8 kHz µ-law, converted once before the call to
    the page's PCM16 at 24 kHz; :class:`Dtmf` sends ``dtmf`` (keys 0-9, * and #); :class:`Hangup`
    (or the end of the steps) sends ``hangup`` and closes the socket.

    Events as for the other phones, plus ``started``, ``gateway_event`` (every ``event`` message:
    ``event``, its name, and ``fields``), ``ended`` and ``refused`` (an ``error`` message). Raises
    :class:`~gateway.softphone.report.CallError` (or :class:`~gateway.softphone.report.CallRejected`
    with the HTTP status: 401 without a session, 403 from a foreign page, 404 with the console off)
    when the call cannot be set up.
    """
    script = list(steps)
    for step in script:
        if not isinstance(step, (Say, Silence, Dtmf, WaitForBot, Hangup)):
            raise TypeError(f"not a step of a console call: {step!r} (the page does not reopen its socket)")
        if isinstance(step, Dtmf) and step.digit not in KEYS:
            raise CallError(f"the console's keypad has no key {step.digit!r} (keys: 0-9, * and #)")
    if _check_url(url) != "media":
        raise CallError(f"bad URL {url!r}: console calls open the media socket, ws(s)://host/console/media")
    if any(isinstance(step, Say) for step in script):
        script = await asyncio.to_thread(_page_script, script)
    events = _Events(on_event)
    upgrade = dict(headers or {})
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        if token:
            cookie = await log_in(session, url, token, connect_timeout_s)
        if cookie:
            upgrade["Cookie"] = f"{COOKIE}={cookie}"
        ws = await _open_socket(session, url, upgrade, connect_timeout_s)
        try:
            call = _BrowserCall(ws, script, events, stream_url=url, stream_sid="", call_sid="", account_sid="",
                                custom_parameters={"profile": profile}, profile=profile)
            await call.run()
        finally:
            await ws.close()
    report = call.report()
    if record is not None:
        await asyncio.to_thread(write_call_wav, report, record)
    return report


# --- `gateway call --carrier browser` (see gateway.softphone.cli) ----------------------------------

NAME = "the console"
CLI_DESCRIPTION = (
    "with --carrier browser (or --console-url URL), the way the console's web page does: log in with "
    "the console token, open the console's media socket and call --profile"
)
URL_NAME = "--console-url URL (or --carrier browser URL)"
URL_HINT = "--console-url ws(s)://host/console/media and --profile NAME for a console call"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--console-url URL`` and the options of console calls."""
    parser.add_argument(
        "--console-url", metavar="URL",
        help="place a console call instead, on the console's media socket: ws(s)://host/console/media",
    )
    parser.add_argument("--profile", metavar="NAME", help="console: the profile to call")
    parser.add_argument(
        "--console-token", default=os.environ.get("GATEWAY_CONSOLE_TOKEN") or None, metavar="TOKEN",
        help="console: the console token to log in with (default: $GATEWAY_CONSOLE_TOKEN; none: the gateway's "
        "console must be open, insecure_dev_mode)",
    )


def call_url(args: argparse.Namespace) -> str | None:
    """The URL of the console call ``gateway call`` was asked to place (``--console-url URL``, or the
    positional URL with ``--carrier browser``), if it was."""
    from gateway.softphone.cli import positional_url

    url: str | None = args.console_url or positional_url(args, "browser")
    return url or None


def misused_options(args: argparse.Namespace) -> str | None:
    """Why the options given do not fit when another carrier's call is placed (None: they fit). A
    token from the environment does not count: only what the command line says."""
    given = [option for option, value in (
        ("--profile", args.profile),
        ("--console-token", args.console_token if args.console_token != (os.environ.get("GATEWAY_CONSOLE_TOKEN")
                                                                         or None) else None),
    ) if value is not None]
    if given:
        return f"{', '.join(given)}: for console calls only (--console-url URL)"
    return None


def place_from_args(
    args: argparse.Namespace, url: str, steps: list[Step], printer: Callable[[int], EventCallback]
) -> CallReport:
    """Place the console call of ``gateway call``; ``printer(bytes_per_ms)`` prints its events."""
    if not args.profile:
        raise CallError("--profile NAME: the profile a console call calls")
    return asyncio.run(
        place_browser_call(
            url,
            steps,
            profile=args.profile,
            token=args.console_token,
            record=args.record,
            on_event=printer(PCM16_24K.bytes_per_ms),
        )
    )


"""The softphone's Genesys side: places a call through the gateway the way Genesys Cloud's
AudioConnector does (the bidirectional AudioHook protocol, version 2).

:func:`place_genesys_call` opens the WebSocket with Genesys's headers (``Audiohook-Organization-Id``,
``Audiohook-Correlation-Id``, ``Audiohook-Session-Id``, ``X-API-KEY``) and, given the client secret,
signs the request as Genesys does (``Signature-Input`` / ``Signature``, HMAC-SHA256). It runs the open
transaction (``open`` offering PCMU at 8 kHz, external channel, or stereo with ``stereo=True``; no
audio before ``opened``), then sends one binary frame of 20 ms µ-law every 20 ms (stereo: the caller on
the external channel, silence on the internal one), a ``ping`` every few seconds, and ``dtmf`` for key
presses. It plays the gateway's binary frames in real time, drops everything unplayed on an ``event``
with the ``barge_in`` entity, and on ``disconnect`` runs the close transaction (``close`` with reason
``disconnect``, awaiting ``closed``). Hanging up sends ``close`` (reason ``end``) and awaits ``closed``
before it closes the socket.

It checks every message the gateway sends as Genesys would (version, ``seq`` one more each time,
``clientseq`` never ahead of what it sent, the session id, the chosen media, frames of at most
1600 bytes, bot audio never far ahead of real time) and counts violations instead of failing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from gateway.audio import G711_ULAW, ULAW_SILENCE_BYTE
from gateway.carriers.genesys.auth import sign_request
from gateway.carriers.genesys.codec import FRAME_BYTES as MAX_FRAME_BYTES
from gateway.softphone.report import CallError, CallReport, write_call_wav
from gateway.softphone.script import Dtmf, Hangup, Say, Silence, Step, WaitForBot
from gateway.softphone.session import FRAME_MS, EventCallback, _Call, _check_url, _Events, _open_socket

BYTES_PER_MS = G711_ULAW.bytes_per_ms
PING_EVERY_FRAMES = 250  # a ping every 5 s of call
MAX_AHEAD_BYTES = 2000 * BYTES_PER_MS  # bot audio buffered beyond this is a burst Genesys would throttle
CLOSE_WAIT_S = 5.0
DEFAULT_DNIS = "+15555550100"
DEFAULT_ANI = "+15555550199"


@dataclass
class GenesysCallReport(CallReport):
    """The report of a Genesys AudioConnector call. ``call_sid`` is the conversation id,
    ``stream_sid`` the AudioHook session id, ``account_sid`` the organization id; ``clears`` counts
    ``barge_in`` events; ``disconnect`` holds the parameters of the gateway's ``disconnect`` (reason,
    info, outputVariables), if it sent one; ``pongs`` counts pongs for ``pings`` sent."""

    disconnect: dict[str, Any] | None = None
    pings: int = 0
    pongs: int = 0
    closed_transaction: bool = False  # the close transaction completed (closed received)
    opened_media: list[Any] = field(default_factory=list)

    def summary_lines(self) -> list[str]:
        s = self.seconds
        ending = ""
        if self.disconnect is not None:
            ending = f", disconnect {self.disconnect.get('reason')}"
            variables = self.disconnect.get("outputVariables")
            if variables:
                ending += f" with outputVariables {json.dumps(variables, sort_keys=True)}"
        return [
            f"Genesys conversation {self.call_sid}, AudioHook session {self.stream_sid}: {self.outcome()}{ending}",
            f"bot audio: {s(self.received_bytes)} received, {s(self.played_bytes)} played, "
            f"{s(self.discarded_bytes)} discarded ({self.clears} barge_in event(s)), "
            f"{s(self.unplayed_bytes)} unplayed at the end",
            f"pings: {self.pings} sent, {self.pongs} answered; close transaction "
            f"{'completed' if self.closed_transaction else 'not completed'}",
        ]


class _GenesysCall(_Call[GenesysCallReport]):
    """Genesys's side of an AudioConnector session (binary PCMU 8 kHz both ways)."""

    carrier = "genesys"
    audio_format = G711_ULAW
    silence_byte = ULAW_SILENCE_BYTE
    report_class = GenesysCallReport

    def __init__(self, *args: Any, stereo: bool, dnis: str, ani: str, input_variables: dict[str, str],
                 language: str | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stereo = stereo
        self.dnis, self.ani = dnis, ani
        self.input_variables = input_variables
        self.language = language
        self.seq = 0  # our last seq
        self.serverseq = 0  # the gateway's last seq
        self.opened = asyncio.Event()
        self.closed = asyncio.Event()
        self.opened_media: list[Any] = []
        self.disconnect: dict[str, Any] | None = None
        self.closing = False  # close sent: no more audio
        self.pings = self.pongs = 0
        self.frames = 0

    def _connected_fields(self) -> dict[str, Any]:
        return {"url": self.stream_url, "conversation_id": self.call_sid, "session_id": self.stream_sid}

    def _message(self, kind: str, parameters: dict[str, Any]) -> dict[str, Any]:
        self.seq += 1
        position = f"PT{self.frames * FRAME_MS / 1000:.2f}S"
        return {"version": "2", "type": kind, "seq": self.seq, "serverseq": self.serverseq, "id": self.stream_sid,
                "position": position, "parameters": parameters}

    async def _send_message(self, kind: str, parameters: dict[str, Any]) -> bool:
        async with self._send_lock:  # seq is taken under the lock: messages go out in seq order
            return await self._write(self._message(kind, parameters))

    async def _open(self) -> None:
        channels = ["external", "internal"] if self.stereo else ["external"]
        offers = [{"type": "audio", "format": "PCMU", "channels": channels, "rate": 8000}]
        if not self.stereo:
            offers.append({"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000})
        parameters: dict[str, Any] = {
            "organizationId": self.account_sid, "conversationId": self.call_sid,
            "participant": {"id": str(uuid.uuid4()), "ani": self.ani, "aniName": "", "dnis": self.dnis},
            "media": offers, "inputVariables": self.input_variables}
        if self.language:
            parameters["language"] = self.language
        await self._send_message("open", parameters)
        try:
            async with asyncio.timeout(10.0):
                await self.opened.wait()
        except TimeoutError:
            self._violation("no opened within 10 s of the open")

    async def _before_frame(self) -> None:
        self.frames += 1
        if self.frames % PING_EVERY_FRAMES == 0 and not self.closing and self.opened.is_set():
            self.pings += 1
            await self._send_message("ping", {})

    async def _send_audio(self, k: int, frame: bytes, payload: str) -> bool:
        if self.closing or not self.opened.is_set():
            return True  # no audio outside the open session (the call goes on until the socket closes)
        if self.stereo:
            pairs = bytearray(len(frame) * 2)
            pairs[0::2] = frame
            pairs[1::2] = bytes([ULAW_SILENCE_BYTE]) * len(frame)
            frame = bytes(pairs)
        async with self._send_lock:
            return await self._write_bytes(frame)

    async def _send_dtmf(self, digit: str) -> bool:
        return await self._send_message("dtmf", {"digit": digit})

    async def _send_stop(self) -> None:
        if self.closing:
            return
        self.closing = True
        await self._send_message("close", {"reason": "end"})
        try:
            async with asyncio.timeout(CLOSE_WAIT_S):
                await self.closed.wait()
        except TimeoutError:
            self._violation(f"no closed within {CLOSE_WAIT_S:g} s of the close")

    async def _handle_binary(self, data: bytes) -> None:
        self.received_payloads.append(base64.b64encode(data).decode("ascii"))  # each frame, as base64
        if not self.opened.is_set():
            self._violation(f"audio ({len(data)} bytes) before opened")
            return
        if self.closing:
            return  # the session is closing: audio is discarded
        if len(data) > MAX_FRAME_BYTES:
            self._violation(f"an audio frame of {len(data)} bytes (more than {MAX_FRAME_BYTES})")
        self.received_bytes += len(data)
        self.playout.append(data)
        if self.playout.buffered > MAX_AHEAD_BYTES:
            self._violation(f"bot audio {self.playout.buffered // BYTES_PER_MS} ms ahead of playback: a burst")

    async def _handle_text(self, data: str) -> None:
        message = self._json_object(data)
        if message is None:
            return
        kind = message.get("type")
        if message.get("version") != "2":
            self._violation(f"{kind}: version {message.get('version')!r}, expected \"2\"")
        seq, clientseq = message.get("seq"), message.get("clientseq")
        if type(seq) is not int or seq != self.serverseq + 1:
            self._violation(f"{kind}: seq {seq!r}, expected {self.serverseq + 1}")
        if type(seq) is int:
            self.serverseq = seq
        if type(clientseq) is not int or clientseq > self.seq or clientseq < 0:
            self._violation(f"{kind}: clientseq {clientseq!r} (the phone sent {self.seq})")
        if message.get("id") != self.stream_sid:
            self._violation(f"{kind}: id {message.get('id')!r} is not the session id")
        parameters = message.get("parameters")
        if not isinstance(parameters, dict):
            self._violation(f"{kind}: parameters is not an object")
            parameters = {}
        if kind == "opened":
            self._opened(parameters)
        elif kind == "pong":
            self.pongs += 1
        elif kind == "event":
            entities = parameters.get("entities")
            if not isinstance(entities, list) or not entities:
                self._violation("event without entities")
                return
            for entity in entities:
                if isinstance(entity, dict) and entity.get("type") == "barge_in":
                    self._stop_playback("barge_in")
        elif kind == "disconnect":
            await self._disconnected(parameters)
        elif kind == "closed":
            if not self.closing:
                self._violation("closed without a close")
            self.closed.set()
        else:
            self._violation(f"unknown message type {kind!r} (allowed: opened, pong, event, disconnect, closed)")

    def _opened(self, parameters: dict[str, Any]) -> None:
        if self.opened.is_set():
            self._violation("a second opened")
            return
        media = parameters.get("media")
        if not isinstance(media, list) or len(media) != 1 or not isinstance(media[0], dict):
            self._violation(f"opened with media {media!r}: exactly one chosen offer expected")
        else:
            chosen = media[0]
            if (chosen.get("format"), chosen.get("rate")) != ("PCMU", 8000) or \
                    chosen.get("channels") not in (["external"], ["external", "internal"]):
                self._violation(f"opened with media {chosen!r}, which was not offered")
        self.opened_media = media if isinstance(media, list) else []
        self.events.emit("opened", media=self.opened_media)
        self.opened.set()

    async def _disconnected(self, parameters: dict[str, Any]) -> None:
        reason = parameters.get("reason")
        if reason not in ("completed", "error", "unauthorized"):
            self._violation(f"disconnect with reason {reason!r}")
        variables = parameters.get("outputVariables")
        if variables is not None and (not isinstance(variables, dict)
                                      or not all(isinstance(v, str) for v in variables.values())):
            self._violation("disconnect outputVariables is not a map of strings")
        self.disconnect = dict(parameters)
        self.events.emit("disconnect", reason=reason, info=parameters.get("info"), output_variables=variables)
        self.opened.set()  # a refused open: nothing more to wait for
        if not self.closing:
            self.closing = True
            await self._send_message("close", {"reason": "disconnect"})

    def report(self) -> GenesysCallReport:
        report = super().report()
        report.disconnect = self.disconnect
        report.pings, report.pongs = self.pings, self.pongs
        report.closed_transaction = self.closed.is_set()
        report.opened_media = self.opened_media
        return report


def _authority(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    netloc = parts.netloc.lower()
    default = {"ws": ":80", "wss": ":443"}.get(parts.scheme)
    if default and netloc.endswith(default):
        netloc = netloc[: -len(default)]
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return netloc, target


def genesys_headers(url: str, *, session_id: str, conversation_id: str, organization_id: str,
                    api_key: str | None, client_secret: str | None, now: float | None = None) -> dict[str, str]:
    """The headers of Genesys's connection request to ``url``, signed when the client secret is given."""
    headers = {"Audiohook-Organization-Id": organization_id, "Audiohook-Correlation-Id": conversation_id,
               "Audiohook-Session-Id": session_id, "User-Agent": "GenesysCloud-AudioHook-Client"}
    if api_key:
        headers["X-API-KEY"] = api_key
        if client_secret:
            authority, target = _authority(url)
            created = int(now if now is not None else time.time())
            headers.update(sign_request(target=target, authority=authority, headers=headers, api_key=api_key,
                                        client_secret=client_secret, created=created, expires=created + 300,
                                        nonce=secrets.token_urlsafe(16)))
    return headers


async def place_genesys_call(
    url: str,
    steps: Sequence[Step],
    *,
    api_key: str | None = None,
    client_secret: str | None = None,
    dnis: str = DEFAULT_DNIS,
    ani: str = DEFAULT_ANI,
    input_variables: dict[str, str] | None = None,
    language: str | None = "en-US",
    stereo: bool = False,
    session_id: str | None = None,
    conversation_id: str | None = None,
    organization_id: str | None = None,
    headers: dict[str, str] | None = None,
    record: str | Path | None = None,
    on_event: EventCallback | None = None,
    connect_timeout_s: float = 10,
) -> GenesysCallReport:
    """Place one call through the gateway's ``ws(s)://host/genesys/audiohook`` and run ``steps`` on it,
    like Genesys Cloud's AudioConnector. ``headers`` replace the request headers Genesys would send (to
    test refusals). Raises :class:`~gateway.softphone.report.CallError` (``CallRejected`` with the HTTP
    status) when the socket cannot be opened."""
    script = list(steps)
    for step in script:
        if not isinstance(step, (Say, Silence, Dtmf, WaitForBot, Hangup)):
            raise TypeError(f"not a Genesys call step: {step!r}")
    if _check_url(url) != "media":
        raise CallError(f"bad URL {url!r}: a Genesys AudioHook URL is ws(s)://host/genesys/audiohook")
    session = session_id or str(uuid.uuid4())
    conversation = conversation_id or str(uuid.uuid4())
    organization = organization_id or str(uuid.uuid4())
    if headers is None:
        headers = genesys_headers(url, session_id=session, conversation_id=conversation,
                                  organization_id=organization, api_key=api_key, client_secret=client_secret)
    events = _Events(on_event)
    async with aiohttp.ClientSession() as http:
        ws = await _open_socket(http, url, headers, connect_timeout_s)
        call: _GenesysCall | None = None
        try:
            call = _GenesysCall(ws, script, events, stream_url=url, stream_sid=session, call_sid=conversation,
                                account_sid=organization, custom_parameters=dict(input_variables or {}),
                                stereo=stereo, dnis=dnis, ani=ani, input_variables=dict(input_variables or {}),
                                language=language)
            await call.run()
        finally:
            await ws.close()
    assert call is not None
    report = call.report()
    if record is not None:
        await asyncio.to_thread(write_call_wav, report, record)
    return report


# --- `gateway call --carrier genesys` (see gateway.softphone.cli) ----------------------------------

NAME = "Genesys"
CLI_DESCRIPTION = ("with --carrier genesys, the way Genesys Cloud's AudioConnector does: the signed AudioHook "
                   "WebSocket (ws(s)://host/genesys/audiohook), open/opened, binary PCMU every 20 ms, close/closed")
URL_NAME = "a Genesys AudioHook URL"
URL_HINT = "the gateway's Genesys AudioHook URL with --carrier genesys"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of Genesys calls (the positional URL with ``--carrier genesys``)."""
    parser.add_argument("--genesys-api-key", metavar="KEY",
                        help="Genesys: the X-API-KEY (default: $GENESYS_API_KEY)")
    parser.add_argument("--genesys-client-secret", metavar="BASE64",
                        help="Genesys: the client secret that signs the request (default: $GENESYS_CLIENT_SECRET)")
    parser.add_argument("--genesys-input", action="append", default=[], metavar="NAME=VALUE",
                        help="Genesys: an input variable of the open")
    parser.add_argument("--genesys-stereo", action="store_true",
                        help="Genesys: offer stereo only (external and internal channels)")


def call_url(args: argparse.Namespace) -> str | None:
    from gateway.softphone.cli import positional_url

    return positional_url(args, "genesys")


def misused_options(args: argparse.Namespace) -> str | None:
    if args.genesys_api_key or args.genesys_client_secret or args.genesys_input or args.genesys_stereo:
        return "--genesys-* options are for Genesys calls (--carrier genesys)"
    return None


def place_from_args(
    args: argparse.Namespace, url: str, steps: list[Step], printer: Callable[[int], EventCallback]
) -> CallReport:
    variables = {}
    for item in args.genesys_input:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CallError(f"--genesys-input {item!r}: expected NAME=VALUE")
        variables[name] = value
    return asyncio.run(place_genesys_call(
        url, steps,
        api_key=args.genesys_api_key or os.environ.get("GENESYS_API_KEY") or None,
        client_secret=args.genesys_client_secret or os.environ.get("GENESYS_CLIENT_SECRET") or None,
        dnis=args.to or DEFAULT_DNIS, ani=args.from_ or DEFAULT_ANI, input_variables=variables,
        stereo=args.genesys_stereo, record=args.record, on_event=printer(BYTES_PER_MS)))

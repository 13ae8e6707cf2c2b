"""The softphone's Vonage side: places a call through the gateway the way the Vonage Voice API does.

:func:`place_vonage_call` asks the answer webhook for its NCCO (``GET`` with ``to``, ``from``,
``uuid`` and ``conversation_uuid`` in the query, or ``POST`` with them as JSON), signed like Vonage
signs webhooks when it knows the signature secret; follows the NCCO's ``connect`` to its
``websocket`` endpoint, opening it with the endpoint's ``authorization`` as the ``Authorization``
header; then plays Vonage's side of the media socket:

* it sends ``websocket:connected`` (the ``content-type`` and the endpoint's headers at the top
  level), then one binary frame of 20 ms of 16-bit linear PCM at 16 kHz (640 bytes) every 20 ms
  (the caller's speech, or silence), and ``websocket:dtmf`` for key presses; hanging up closes
  the socket;
* it plays the binary frames the gateway sends in real time (32 bytes per millisecond), answers a
  ``notify`` with ``websocket:notify`` once the audio queued before it has played, and on
  ``clear`` drops everything not yet played (and the notifies queued behind it) and answers
  ``websocket:cleared``.

It checks every message the gateway sends the way Vonage would (audio frames of exactly 640 bytes,
known actions only) and counts violations instead of failing. The module also answers
``gateway call --carrier vonage URL`` (see :mod:`gateway.softphone.cli`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

import aiohttp

from gateway.audio import resample, ulaw_to_array
from gateway.carriers.vonage.auth import webhook_token
from gateway.carriers.vonage.codec import AUDIO, CONTENT_TYPE, FRAME_BYTES, same_content_type
from gateway.softphone.report import CallError, CallRejected, CallReport, write_call_wav
from gateway.softphone.script import Dtmf, Hangup, Say, Silence, Step, WaitForBot
from gateway.softphone.session import EventCallback, _Call, _check_url, _Events, _open_socket

BYTES_PER_MS = AUDIO.bytes_per_ms  # 32: PCM16 at 16 kHz
DTMF_DURATION_MS = 260
_WS_SCHEMES = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}


def ulaw_to_l16(audio: bytes) -> bytes:
    """8 kHz µ-law as Vonage carries a caller's audio: 16-bit little-endian PCM at 16 kHz (offline use)."""
    return resample(ulaw_to_array(bytes(audio)), 8000, AUDIO.sample_rate).astype("<i2").tobytes()


def parse_ncco(body: bytes | str, base_url: str) -> tuple[str, dict[str, str], str | None]:
    """The media socket URL, the endpoint's headers and its Authorization header value of an NCCO
    that connects the call to a ``websocket`` endpoint. CallError when it does not."""
    snippet = (body.decode("utf-8", "replace") if isinstance(body, bytes) else body).strip()[:120]
    try:
        ncco = json.loads(body)
    except ValueError:
        raise CallError(f"the answer webhook did not answer with an NCCO (JSON): {snippet!r}") from None
    if not isinstance(ncco, list):
        raise CallError(f"the answer webhook's NCCO is not a JSON array: {snippet!r}")
    actions = [a.get("action") for a in ncco if isinstance(a, dict)]
    connect = next((a for a in ncco if isinstance(a, dict) and a.get("action") == "connect"), None)
    endpoints = connect.get("endpoint") if connect is not None else None
    endpoint = next((e for e in endpoints if isinstance(e, dict) and e.get("type") == "websocket"), None) \
        if isinstance(endpoints, list) else None
    if endpoint is None:
        raise CallError(f"the NCCO does not connect to a websocket (its actions: {actions})")
    raw_url = endpoint.get("uri")
    if not isinstance(raw_url, str) or not raw_url.strip():
        raise CallError("the NCCO's websocket endpoint has no uri")
    parts = urlsplit(urljoin(base_url, raw_url.strip()))
    scheme = _WS_SCHEMES.get(parts.scheme)
    if scheme is None or not parts.hostname:
        raise CallError(f"the websocket endpoint uri {raw_url!r} is not a ws(s):// URL")
    if not same_content_type(endpoint.get("content-type")):
        raise CallError(f"the websocket endpoint asks for {endpoint.get('content-type')!r}; this phone streams "
                        f"{CONTENT_TYPE}")
    headers = endpoint.get("headers") or {}
    if not isinstance(headers, dict):
        raise CallError("the websocket endpoint's headers are not an object")
    if len(json.dumps(headers, separators=(",", ":")).encode()) > 2048:
        raise CallError("the websocket endpoint's headers are too long")
    authorization = endpoint.get("authorization")
    value: str | None = None
    if authorization is not None:
        if not isinstance(authorization, dict) or authorization.get("type") != "custom" \
                or not isinstance(authorization.get("value"), str):
            raise CallError("the websocket endpoint's authorization is not {type: custom, value: ...}")
        value = authorization["value"]
    url = urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))
    return url, {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in headers.items()}, value


# --- the call -----------------------------------------------------------------------------------


class VonageCallReport(CallReport):
    """The report of a Vonage call: ``caller_audio`` and ``bot_audio`` are 16-bit little-endian PCM at
    16 kHz. ``call_sid`` is the call's uuid, ``stream_sid`` its conversation uuid; ``received_payloads``
    holds every binary frame from the gateway (base64); ``marks_received`` and ``marks_echoed`` are the
    mark names of the notifies; ``clears`` counts ``clear`` actions."""

    @property
    def call_uuid(self) -> str:
        return self.call_sid

    def summary_lines(self) -> list[str]:
        s = self.seconds
        return [
            f"Vonage call {self.call_uuid}, conversation {self.stream_sid}: {self.outcome()}",
            f"bot audio: {s(self.received_bytes)} received, {s(self.played_bytes)} played, "
            f"{s(self.discarded_bytes)} discarded by {self.clears} clear(s), "
            f"{s(self.unplayed_bytes)} unplayed at the end",
            f"notifies: {len(self.marks_received)} received, {len(self.marks_echoed)} answered",
        ]


class _VonageCall(_Call[VonageCallReport]):
    """Vonage's side of the media socket (binary L16 16 kHz, JSON text events)."""

    carrier = "vonage"
    audio_format = AUDIO
    silence_byte = 0
    report_class = VonageCallReport

    def __init__(self, *args: Any, headers: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connected_headers = dict(headers)
        self._payloads: dict[str, Any] = {}  # notify id -> its payload
        self._next_notify = 0

    def _connected_fields(self) -> dict[str, Any]:
        return {"url": self.stream_url, "call_uuid": self.call_sid, "conversation_uuid": self.stream_sid}

    async def _open(self) -> None:
        await self._send({"event": "websocket:connected", "content-type": CONTENT_TYPE, **self.connected_headers})

    async def _before_frame(self) -> None:
        await self._answer_notifies(self.playout.due_marks())

    async def _send_audio(self, k: int, frame: bytes, payload: str) -> bool:
        async with self._send_lock:
            return await self._write_bytes(frame)

    async def _send_dtmf(self, digit: str) -> bool:
        return await self._send({"event": "websocket:dtmf", "digit": digit, "duration": DTMF_DURATION_MS})

    async def _answer_notifies(self, ids: list[str]) -> None:
        for notify_id in ids:
            payload = self._payloads.pop(notify_id, None)
            if await self._send({"event": "websocket:notify", "payload": payload}):
                self.marks_echoed.append(_mark_name(payload))

    async def _handle_binary(self, data: bytes) -> None:
        self.received_payloads.append(base64.b64encode(data).decode("ascii"))
        if len(data) != FRAME_BYTES:
            self._violation(f"audio frame of {len(data)} bytes (Vonage takes {FRAME_BYTES}: 20 ms at 16 kHz)")
            return
        self.received_bytes += len(data)
        self.playout.append(data)

    async def _handle_text(self, data: str) -> None:
        message = self._json_object(data)
        if message is None:
            return
        action = message.get("action")
        if action == "notify":
            if "payload" not in message:
                self._violation("notify without a payload")
                return
            payload = message["payload"]
            self.marks_received.append(_mark_name(payload))
            self._next_notify += 1
            notify_id = str(self._next_notify)
            self._payloads[notify_id] = payload
            if self.playout.add_mark(notify_id):
                await self._answer_notifies([notify_id])
        elif action == "clear":
            dropped = self.playout.pending_marks  # Vonage drops the notifies queued behind the audio too
            for notify_id in dropped:
                self._payloads.pop(notify_id, None)
            self._stop_playback("clear", notifies_dropped=len(dropped))
            await self._send({"event": "websocket:cleared"})
        else:
            self._violation(f"unknown action {action!r} (allowed: notify, clear)")


def _mark_name(payload: Any) -> str:
    if isinstance(payload, dict) and isinstance(payload.get("mark"), str):
        return str(payload["mark"])
    return json.dumps(payload, separators=(",", ":"))


async def _answer_webhook(session: aiohttp.ClientSession, url: str, params: dict[str, str], secret: str | None,
                          post: bool, timeout_s: float) -> bytes:
    """The answer webhook's NCCO, asked for the way Vonage asks (signed when ``secret`` is known)."""
    body = json.dumps(params).encode() if post else None
    target = url if post else url + ("&" if urlsplit(url).query else "?") + urlencode(params)
    headers = {"Authorization": f"Bearer {webhook_token(secret, body)}"} if secret else {}
    try:
        async with asyncio.timeout(timeout_s):
            if post:
                headers["Content-Type"] = "application/json"
                request = session.post(target, data=body, headers=headers)
            else:
                request = session.get(target, headers=headers)
            async with request as resp:
                answer = await resp.read()
                status = resp.status
    except TimeoutError:
        raise CallError(f"the answer webhook {url} did not answer within {timeout_s:g} s") from None
    except aiohttp.ClientError as exc:
        raise CallError(f"cannot reach the answer webhook {url}: {exc}") from None
    if status >= 400:
        text = answer.decode("utf-8", "replace").strip()[:120]
        raise CallRejected(f"the answer webhook {url} answered HTTP {status}: {text!r}")
    return answer


def _vonage_script(steps: list[Step]) -> list[Step]:
    """The steps with every Say's µ-law turned into L16 at 16 kHz (once, before the call)."""
    return [Say(ulaw_to_l16(s.audio), label=s.label) if isinstance(s, Say) else s for s in steps]


async def place_vonage_call(
    url: str,
    steps: Sequence[Step],
    *,
    to: str = "15555550100",
    from_: str = "15555550199",
    signature_secret: str | None = None,
    post: bool = False,
    headers: Mapping[str, str] | None = None,
    authorization: str | None = None,
    call_uuid: str | None = None,
    record: str | Path | None = None,
    on_event: EventCallback | None = None,
    connect_timeout_s: float = 10,
) -> VonageCallReport:
    """Place one call through the gateway and run ``steps`` on it, like the Vonage Voice API.

    ``url``: the answer webhook (``http(s)://…/vonage/answer``: its NCCO names the media socket,
    its headers and its Authorization; asked with GET, or POST when ``post``) or the media socket
    itself (``ws(s)://…/vonage/media``, with ``headers`` in ``websocket:connected`` and
    ``authorization`` as its Authorization header). ``signature_secret``: sign the webhook like
    Vonage does. ``to`` and ``from_`` are the called and calling numbers (E.164 without ``+``, as
    Vonage writes them). ``on_event(t_ms, kind, fields)`` is called as things happen; event kinds:
    webhook, connected, speech_start, speech_end, dtmf, bot_audio_start, bot_audio_end, clear,
    wait_timeout, no_bot_audio, hangup, closed_by_gateway, violation. ``record``: write the call as
    a stereo WAV at 16 kHz. If the steps end without :class:`Hangup`, the caller hangs up (the socket
    closes).

    Raises :class:`CallError` (or :class:`CallRejected`) when the call cannot be set up.
    """
    script = list(steps)
    for step in script:
        if not isinstance(step, (Say, Silence, Dtmf, WaitForBot, Hangup)):
            raise TypeError(f"not a step of Vonage calls: {step!r}")
    kind = _check_url(url)
    call_id = call_uuid or str(uuid.uuid4())
    conversation = "CON-" + str(uuid.uuid4())
    events = _Events(on_event)
    if any(isinstance(step, Say) for step in script):
        script = await asyncio.to_thread(_vonage_script, script)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        if kind == "webhook":
            params = {"to": to, "from": from_, "uuid": call_id, "conversation_uuid": conversation}
            body = await _answer_webhook(session, url, params, signature_secret, post, connect_timeout_s)
            stream_url, connected, auth = parse_ncco(body, url)
            events.emit("webhook", stream_url=stream_url, parameters=dict(connected))
        else:
            stream_url, connected, auth = url, dict(headers or {}), authorization
        socket_headers = {"Authorization": auth} if auth else {}
        ws = await _open_socket(session, stream_url, socket_headers, connect_timeout_s)
        try:
            call = _VonageCall(ws, script, events, stream_url=stream_url, stream_sid=conversation, call_sid=call_id,
                               account_sid="", custom_parameters=dict(connected), headers=connected)
            await call.run()
        finally:
            await ws.close()
    report = call.report()
    if record is not None:
        await asyncio.to_thread(write_call_wav, report, record)
    return report


# --- `gateway call --carrier vonage` (see gateway.softphone.cli) ---------------------------------------

NAME = "Vonage"
CLI_DESCRIPTION = ("with --carrier vonage, the way the Vonage Voice API does: fetch the answer NCCO "
                   "(http(s) URL) or open the media socket directly (ws(s) URL)")
URL_NAME = "a Vonage URL (--carrier vonage)"
URL_HINT = "URL --carrier vonage for a Vonage call"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of Vonage calls."""
    parser.add_argument(
        "--vonage-secret", metavar="SECRET",
        help="Vonage: sign the answer webhook with this signature secret (default: $VONAGE_SIGNATURE_SECRET)",
    )
    parser.add_argument("--vonage-post", action="store_true",
                        help="Vonage: ask the answer webhook with POST (JSON) instead of GET")


def call_url(args: argparse.Namespace) -> str | None:
    """The URL of the Vonage call ``gateway call`` was asked to place (``--carrier vonage``), if it was."""
    from gateway.softphone.cli import positional_url

    return positional_url(args, "vonage")


def misused_options(args: argparse.Namespace) -> str | None:
    """Why the options given do not fit when another carrier's call is placed (None: they fit)."""
    if args.vonage_secret or args.vonage_post:
        return "--vonage-secret and --vonage-post are for Vonage calls (--carrier vonage)"
    return None


def place_from_args(
    args: argparse.Namespace, url: str, steps: list[Step], printer: Callable[[int], EventCallback]
) -> CallReport:
    """Place the Vonage call of ``gateway call``; ``printer(bytes_per_ms)`` prints its events."""
    return asyncio.run(
        place_vonage_call(
            url,
            steps,
            to=(args.to or "15555550100").lstrip("+"),  # Vonage writes numbers without the +
            from_=(args.from_ or "15555550199").lstrip("+"),
            signature_secret=args.vonage_secret or os.environ.get("VONAGE_SIGNATURE_SECRET") or None,
            post=args.vonage_post,
            record=args.record,
            on_event=printer(BYTES_PER_MS),
        )
    )

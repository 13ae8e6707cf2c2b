"""The softphone's ACS side: places a call through the gateway the way Azure Communication Services
(ACS) media streaming does.

:func:`place_acs_call` opens the media WebSocket with ACS's headers (``Authorization: Bearer …``,
``x-ms-call-connection-id``, ``x-ms-call-correlation-id``), sends ``AudioMetadata``, then one
``AudioData`` packet of 20 ms PCM16 at 24 kHz (or 16 kHz: ``sample_rate``) every 20 ms
(``silent`` on silence) and ``DtmfData`` for key presses. It plays ``AudioData`` from the gateway
in real time (48 bytes per millisecond at 24 kHz, 32 at 16 kHz) with no acknowledgement, drops
everything unplayed on ``StopAudio``, and can drop and reopen its media socket mid-call like ACS
does. Hanging up closes the socket.

It checks every message the gateway sends the way ACS would, and counts violations instead of
failing. The module also answers ``gateway call --acs URL`` (see :mod:`gateway.softphone.cli`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from gateway.audio import PCM16_24K, b64_len, is_base64, resample, ulaw_to_array
from gateway.carriers.acs.codec import AUDIO_FORMATS
from gateway.softphone.report import CallError, CallReport, write_call_wav
from gateway.softphone.script import Dtmf, Hangup, Reconnect, Say, Silence, Step, WaitForBot
from gateway.softphone.session import FRAME_MS, EventCallback, _Call, _check_url, _Events, _open_socket

ACS_SAMPLE_RATE = PCM16_24K.sample_rate  # the default; ACS_SAMPLE_RATES are the rates ACS streams
ACS_SAMPLE_RATES = tuple(sorted(AUDIO_FORMATS))  # 16000, 24000 (PCM16 mono)
ACS_CALLER_RAW_ID = "4:+15555550199"  # participantRawID of the caller's audio


# --- ACS helpers ----------------------------------------------------------------------------------


def ulaw_to_acs_pcm(audio: bytes, sample_rate: int = ACS_SAMPLE_RATE) -> bytes:
    """8 kHz µ-law as ACS carries a caller's audio: PCM16 little-endian at ``sample_rate`` (offline use)."""
    samples = resample(ulaw_to_array(bytes(audio)), 8000, sample_rate)
    return samples.astype("<i2").tobytes()


def acs_timestamp(when: datetime) -> str:
    """ISO-8601 UTC with milliseconds, as in ACS's ``AudioData.timestamp``."""
    when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _get_ci(obj: Mapping[str, Any], key: str) -> Any:
    """``obj[key]`` with the key matched case-insensitively (ACS reads its messages that way)."""
    if key in obj:
        return obj[key]
    lowered = key.lower()
    for name, value in obj.items():
        if isinstance(name, str) and name.lower() == lowered:
            return value
    return None


# --- the call -----------------------------------------------------------------------------------


class AcsCallReport(CallReport):
    """The report of an ACS call: ``caller_audio`` and ``bot_audio`` are PCM16 (little-endian) at 24
    or 16 kHz (``sample_rate``).

    ``call_sid`` is the ``x-ms-call-connection-id``, ``account_sid`` the
    ``x-ms-call-correlation-id`` and ``stream_sid`` the ``subscriptionId`` of ``AudioMetadata``
    (also under their ACS names: :attr:`call_connection_id`, :attr:`correlation_id`,
    :attr:`subscription_id`); ``received_payloads`` holds the ``data`` string of every
    ``AudioData``; ``clears`` counts ``StopAudio`` messages; ``marks_received`` and
    ``marks_echoed`` are always empty (ACS has no marks).
    """

    @property
    def call_connection_id(self) -> str:
        return self.call_sid

    @property
    def correlation_id(self) -> str:
        return self.account_sid

    @property
    def subscription_id(self) -> str:
        return self.stream_sid

    def summary_lines(self) -> list[str]:
        s = self.seconds
        return [
            f"ACS call {self.call_connection_id}, subscription {self.subscription_id}: {self.outcome()}",
            f"bot audio: {s(self.received_bytes)} received, {s(self.played_bytes)} played, "
            f"{s(self.discarded_bytes)} discarded ({self.clears} StopAudio), "
            f"{s(self.unplayed_bytes)} unplayed at the end",
            f"media sockets: {self.connections}",
        ]


class _AcsCall(_Call[AcsCallReport]):
    """ACS's side of a bidirectional media stream (PCM16 mono at 24 or 16 kHz, mixed audio)."""

    carrier = "acs"
    silence_byte = 0
    report_class = AcsCallReport

    def __init__(
        self,
        *args: Any,
        session: aiohttp.ClientSession,
        headers: Mapping[str, str],
        connect_timeout_s: float,
        sample_rate: int,
        **kwargs: Any,
    ) -> None:
        self.audio_format = AUDIO_FORMATS[sample_rate]  # before frames are sized
        super().__init__(*args, **kwargs)
        self.session = session
        self.headers = dict(headers)
        self.connect_timeout_s = connect_timeout_s
        self.wall_t0 = datetime.now(UTC)

    def _connected_fields(self) -> dict[str, Any]:
        return {
            "url": self.stream_url,
            "call_connection_id": self.call_sid,
            "correlation_id": self.account_sid,
            "subscription_id": self.stream_sid,
        }

    async def _open(self) -> None:
        metadata = {
            "subscriptionId": self.stream_sid,
            "encoding": "PCM",
            "sampleRate": self.sample_rate,
            "channels": 1,
            "length": self.frame_bytes,
        }
        await self._send({"kind": "AudioMetadata", "audioMetadata": metadata})

    async def _send_audio(self, k: int, frame: bytes, payload: str) -> bool:
        audio = {
            "timestamp": acs_timestamp(self.wall_t0 + timedelta(milliseconds=k * FRAME_MS)),
            "participantRawID": ACS_CALLER_RAW_ID,
            "data": payload,
            "silent": frame == self.silence_frame,
        }
        return await self._send({"kind": "AudioData", "audioData": audio})

    async def _send_dtmf(self, digit: str) -> bool:
        return await self._send({"kind": "DtmfData", "dtmfData": {"data": digit}})

    async def _handle_text(self, data: str) -> None:
        message = self._json_object(data)
        if message is None:
            return
        kind = _get_ci(message, "kind")
        name = kind.lower() if isinstance(kind, str) else None
        if name == "audiodata":
            body = _get_ci(message, "audioData")
            payload = _get_ci(body, "data") if isinstance(body, dict) else None
            if not isinstance(payload, str):
                self._violation("AudioData without an audioData.data string")
                return
            self.received_payloads.append(payload)
            if not is_base64(payload):
                self._violation(f"AudioData data is not valid base64: {payload[:40]!r}")
                return
            nbytes = b64_len(payload)
            if nbytes % 2:
                self._violation(f"AudioData data has an odd byte count ({nbytes}): not whole PCM16 samples")
                return
            if payload.startswith("UklGR"):  # "RIFF": a WAV header is not raw PCM
                self._violation("AudioData data starts with a WAV header")
            audio = base64.b64decode(payload)
            self.received_bytes += len(audio)
            self.playout.append(audio)
        elif name == "stopaudio":
            self._stop_playback("stop_audio")
        else:
            self._violation(f"unknown kind {kind!r} (allowed: AudioData, StopAudio)")

    async def _reconnect(self) -> bool:
        """Drop the media socket and open a new one for the same call; False if that failed."""
        if self.gateway_closed:
            return False
        old = self._receiver
        assert old is not None
        self.reconnecting = True
        try:
            await self.ws.close()  # while the receiver still reads, so the handshake completes
            old_code = self.ws.close_code
            await asyncio.wait({old}, timeout=1.0)
            old.cancel()
            (outcome,) = await asyncio.gather(old, return_exceptions=True)
            if isinstance(outcome, Exception):
                raise outcome
            lost, _ = self.playout.clear()  # what the old socket delivered but did not play is gone
            try:
                ws = await _open_socket(self.session, self.stream_url, self.headers, self.connect_timeout_s)
            except CallError as exc:
                self.gateway_closed = True
                self.close_code = None
                self.events.emit("reconnect_failed", error=str(exc), discarded_bytes=lost)
                return False
            self.ws = ws
            self.connections += 1
            self._receiver = asyncio.create_task(self._receive_loop(ws))
        finally:
            self.reconnecting = False
        self.events.emit("reconnect", connection=self.connections, close_code=old_code, discarded_bytes=lost)
        await self._open()
        return True


def _acs_script(steps: list[Step], sample_rate: int) -> list[Step]:
    """The steps with every Say's µ-law turned into ACS's PCM16 at ``sample_rate`` (once, before the call)."""
    return [Say(ulaw_to_acs_pcm(s.audio, sample_rate), label=s.label) if isinstance(s, Say) else s for s in steps]


async def place_acs_call(
    url: str,
    steps: Sequence[Step],
    *,
    token: str | None = None,
    call_connection_id: str | None = None,
    correlation_id: str | None = None,
    record: str | Path | None = None,
    on_event: EventCallback | None = None,
    connect_timeout_s: float = 10,
    sample_rate: int = ACS_SAMPLE_RATE,
) -> AcsCallReport:
    """Place one call through the gateway and run ``steps`` on it, like ACS media streaming.

    ``url``: the gateway's ACS media socket, ``ws(s)://…/acs/media?ctx=…``. It is opened with
    ``Authorization: Bearer <token>`` (when a token is given), ``x-ms-call-connection-id`` and
    ``x-ms-call-correlation-id`` (random UUIDs unless given). The caller's audio goes as PCM16
    ``AudioData`` at ``sample_rate`` (24000 or 16000, announced in ``AudioMetadata``: the rate
    the gateway's ``acs.sample_rate`` answers calls with); ``Say`` audio is 8 kHz µ-law, converted
    once before the call starts;
    :class:`Dtmf` sends ``DtmfData``; :class:`Reconnect` drops the socket and opens a new one
    with the same headers; :class:`Hangup` (or the end of the steps) closes the socket with
    code 1000.

    ``on_event(t_ms, kind, fields)`` is called as things happen (``t_ms`` counts from the moment
    the media socket opened). Event kinds: connected, speech_start, speech_end, dtmf,
    bot_audio_start, bot_audio_end, stop_audio, reconnect, reconnect_failed, wait_timeout,
    no_bot_audio, hangup, closed_by_gateway, violation (the first few only). Raises
    :class:`~gateway.softphone.report.CallError` (or
    :class:`~gateway.softphone.report.CallRejected` with the HTTP status, e.g. 401 or 403) when
    the media socket cannot be opened.
    """
    script = list(steps)
    for step in script:
        if not isinstance(step, (Say, Silence, Dtmf, WaitForBot, Hangup, Reconnect)):
            raise TypeError(f"not a call step: {step!r}")
    if sample_rate not in AUDIO_FORMATS:
        raise ValueError(f"sample_rate must be one of {ACS_SAMPLE_RATES} (what ACS streams), not {sample_rate!r}")
    if _check_url(url) != "media":
        raise CallError(f"bad URL {url!r}: an ACS media stream URL is ws(s)://host/acs/media?...")
    connection_id = call_connection_id or str(uuid.uuid4())
    correlation = correlation_id or str(uuid.uuid4())
    headers = {"x-ms-call-connection-id": connection_id, "x-ms-call-correlation-id": correlation}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if any(isinstance(step, Say) for step in script):
        script = await asyncio.to_thread(_acs_script, script, sample_rate)
    events = _Events(on_event)
    async with aiohttp.ClientSession() as session:
        ws = await _open_socket(session, url, headers, connect_timeout_s)
        call: _AcsCall | None = None
        try:
            call = _AcsCall(
                ws,
                script,
                events,
                stream_url=url,
                stream_sid=str(uuid.uuid4()),
                call_sid=connection_id,
                account_sid=correlation,
                custom_parameters={},
                session=session,
                headers=headers,
                connect_timeout_s=connect_timeout_s,
                sample_rate=sample_rate,
            )
            await call.run()
        finally:
            await ws.close()
            if call is not None:
                await call.ws.close()  # the socket of the last reconnect
    assert call is not None
    report = call.report()
    if record is not None:
        await asyncio.to_thread(write_call_wav, report, record)
    return report



# --- `gateway call --acs` (see gateway.softphone.cli) ----------------------------------------------

NAME = "ACS"
CLI_DESCRIPTION = "with --acs, the way Azure Communication Services media streaming does"
URL_NAME = "--acs URL"
URL_HINT = "--acs URL for an ACS call"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--acs URL`` and the options of ACS calls."""
    parser.add_argument(
        "--acs", metavar="URL", help="place an ACS call instead, on this media socket: ws(s)://host/acs/media?ctx=..."
    )
    parser.add_argument("--token", metavar="JWT", help="ACS: the bearer token on the media socket")
    parser.add_argument(
        "--call-connection-id", metavar="ID", help="ACS: x-ms-call-connection-id (default: a random UUID)"
    )
    parser.add_argument(
        "--correlation-id", metavar="ID", help="ACS: x-ms-call-correlation-id (default: a random UUID)"
    )
    parser.add_argument(
        "--sample-rate", type=int, choices=ACS_SAMPLE_RATES, metavar="HZ",
        help=f"ACS: the PCM16 rate of the media stream, {' or '.join(map(str, ACS_SAMPLE_RATES))}: the "
        f"gateway's acs.sample_rate (default {ACS_SAMPLE_RATE})",
    )


def call_url(args: argparse.Namespace) -> str | None:
    """The URL of the ACS call ``gateway call`` was asked to place (``--acs URL``, or the positional
    URL with ``--carrier acs``), if it was."""
    from gateway.softphone.cli import positional_url

    url: str | None = args.acs or positional_url(args, "acs")
    return url or None


def misused_options(args: argparse.Namespace) -> str | None:
    """Why the options given do not fit when another carrier's call is placed (None: they fit)."""
    if args.token or args.call_connection_id or args.correlation_id or args.sample_rate:
        return "--token, --call-connection-id, --correlation-id and --sample-rate are for ACS calls (--acs URL)"
    return None


def place_from_args(
    args: argparse.Namespace, url: str, steps: list[Step], printer: Callable[[int], EventCallback]
) -> CallReport:
    """Place the ACS call of ``gateway call``; ``printer(bytes_per_ms)`` prints its events."""
    rate: int = args.sample_rate or ACS_SAMPLE_RATE
    return asyncio.run(
        place_acs_call(
            url,
            steps,
            token=args.token or None,
            call_connection_id=args.call_connection_id,
            correlation_id=args.correlation_id,
            record=args.record,
            on_event=printer(AUDIO_FORMATS[rate].bytes_per_ms),
            sample_rate=rate,
        )
    )

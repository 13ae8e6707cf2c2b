"""Call control on ACS: hang-up, transfer and keypad tones through Call Automation; a media socket
that ACS reconnects mid-call continues the same call; the apology clip for a failed Voice Live."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from gateway.audio import apology_clip
from gateway.bridge import CallBridge
from gateway.carriers.acs.codec import AUDIO_FORMATS
from gateway.carriers.acs.settings import AcsSettings
from gateway.carriers.common import KEY_TONES

ACS_PIECE_MS = 20  # bot audio goes to ACS in 20 ms frames, paced by the call's clock


class AcsBridge(CallBridge):
    carrier = "acs"

    async def attach(self, ws: web.WebSocketResponse, transport: Any) -> None:
        """A new media socket for this call (ACS reconnected): continue on it. Returns when the
        bridge no longer uses it."""
        old, self.phone, self.phone_transport = self.phone, ws, transport
        done = self._done_with.setdefault(id(ws), asyncio.Event())
        self.log.info("media socket reconnected; the call goes on")
        self._replaced.set()
        if not old.closed:
            await old.close(code=1000, message=b"replaced by a new connection")
        await done.wait()

    def _phone_lost(self) -> None:
        # Sending failed on a socket that went away: ACS may reconnect, and the phone side
        # decides when the socket is gone for good. The bot audio of the gap is lost.
        self.log.debug("media socket gone while sending; waiting for ACS to reconnect")

    def _release(self, ws: web.WebSocketResponse) -> None:
        event = self._done_with.pop(id(ws), None)
        if event is not None:
            event.set()

    async def _phone_side(self) -> None:
        grace = AcsSettings.of(self.ctx.config).reconnect_grace_s
        while True:
            ws = self.phone
            self._replaced.clear()
            await self._read_phone(ws)
            if self.call.ended:
                return
            if self.phone is ws:  # the socket dropped: ACS may come back with a new one
                self.wire.phone_away(self._now())
                try:
                    await asyncio.wait_for(self._replaced.wait(), grace)
                except TimeoutError:
                    self.log.warning("media socket lost and not reconnected", grace_s=grace)
                    self.wire.phone_closed("phone_socket_closed", self._now())
                    return
                self.wire.phone_back(self._now())
            if ws is not self.phone:
                self._release(ws)

    def __init__(self, *args: Any, client: Any = None, correlation: str = "", caller: str | None = None,
                 called: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client = client  # the Call Automation client (None: ACS not configured)
        self._replaced = asyncio.Event()
        self._done_with: dict[int, asyncio.Event] = {}
        self.correlation = correlation  # the call its stream token names: a new socket must name it too
        self.binding = correlation or None  # and so must a socket that takes the call's pre-warmed session
        self.caller = caller  # the caller's phone number, when ACS gave it
        self.called = called  # the number the caller dialled (the caller id shown on a transfer)

    async def _end_phone_call(self) -> None:
        client = self.client
        if client is None:
            return
        from azure.communication.callautomation import PhoneNumberIdentifier

        connection = client.get_call_connection(self.call.call_id)
        number = self.call.transfer_to
        if number is not None:
            try:
                source = PhoneNumberIdentifier(self.called) if self.called else None
                await connection.transfer_call_to_participant(PhoneNumberIdentifier(number),
                                                              operation_context="gateway-transfer",
                                                              source_caller_id_number=source)
                self.log.info("call transferred through Call Automation")
                return
            except Exception as exc:
                self.log.error("the transfer failed; hanging up", error=type(exc).__name__, detail=str(exc)[:200])
        try:
            await connection.hang_up(is_for_everyone=True)
            self.log.info("call hung up through Call Automation")
        except Exception as exc:  # the call may already be gone
            self.log.warning("Call Automation hang-up failed", error=type(exc).__name__, detail=str(exc)[:200])

    async def _send_dtmf(self, digits: str) -> str:
        client = self.client
        if client is None or self.caller is None:
            return json.dumps({"error": "this line cannot send keypad tones"})
        from azure.communication.callautomation import PhoneNumberIdentifier

        try:
            await client.get_call_connection(self.call.call_id).send_dtmf_tones(
                [KEY_TONES[key] for key in digits], PhoneNumberIdentifier(self.caller),
                operation_context="gateway-dtmf")
        except Exception as exc:
            self.log.warning("sending keypad tones failed", error=type(exc).__name__, detail=str(exc)[:200])
            return json.dumps({"error": "the keypad tones could not be sent"})
        return json.dumps({"status": f"pressed {len(digits)} key(s)"})

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            for event in self._done_with.values():
                event.set()


def load_apology(path: str | None, sample_rate: int) -> str | None:
    """The apology clip as base64 PCM16 at ``sample_rate`` (``acs.sample_rate``), in whole 20 ms frames:
    what the ACS leg plays when Voice Live fails."""
    return apology_clip(AUDIO_FORMATS[sample_rate], path) if path else None

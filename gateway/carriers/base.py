"""What every carrier provides. The application is built from a list of carriers (see
:mod:`gateway.carriers.registry`); a carrier is one package under ``gateway/carriers/`` holding
everything that knows it, and this interface is all the rest of the gateway sees of it.

A carrier:

* answers its own HTTP routes (webhooks, callbacks, the media WebSocket) and, for each media
  stream, runs a :class:`~gateway.bridge.CallBridge` with its sans-I/O codec (a
  :class:`~gateway.wire.PhoneLeg`) around the pure :class:`~gateway.call.Call`;
* keeps the clients it needs (a REST session, a Call Automation client, signing keys) for as long
  as the application runs (:meth:`Carrier.running`), and says at start-up what its settings mean
  (:meth:`Carrier.notes`);
* knows its recordings: from a recorded call it rebuilds the codec leg and the call's options, so
  that every carrier's calls replay through the same shell code (:meth:`Carrier.replay_start`),
  and it can tell its own phone messages apart (caller audio in; bot audio and playback flushes
  out), which the replay's checks need.

Adding a carrier means adding a package that implements this and one line in the registry.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from aiohttp import web

from gateway.audio import AudioFormat
from gateway.wire import PhoneLeg

if TYPE_CHECKING:
    from gateway.config import GatewayConfig


def app_config(app: web.Application) -> GatewayConfig:
    from gateway.bridge import CONTEXT

    return app[CONTEXT].config


class ReplayError(ValueError):
    """A recording this carrier cannot replay; the text says why."""


@dataclass
class ReplayStart:
    """What a replay needs to rebuild a recorded call: where its phone leg started (the index of
    the record), the codec leg, and the call's identity and carrier-given options."""

    index: int
    leg: PhoneLeg
    call_id: str
    stream_id: str
    audio: AudioFormat
    started_at: float  # the call's clock origin, as the live call had it
    options: dict[str, Any] = field(default_factory=dict)  # Call keyword arguments: paced, piece_ms...


@dataclass(frozen=True)
class OutboundRequest:
    """A call the gateway is asked to place (checked already: numbers, profile, limits)."""

    to: str
    from_: str
    profile: str
    public_base: str  # the address the carrier reaches the gateway at (its callbacks, the media socket)
    detect_machine: bool = True  # ask the carrier for asynchronous answering-machine detection
    machine_wait_s: float = 6.0  # how long the gateway waits for that result


@dataclass(frozen=True)
class PlacedCall:
    """What a carrier answered when asked to place a call."""

    call_id: str  # the carrier's id of the call: the one its media stream will carry
    state: str = "queued"
    detects_machine: bool = False  # an answering-machine result will come (GatewayContext.answering_machine)
    # the audio format its media socket builds the call with: the call's Voice Live session is opened
    # as soon as it is placed (see gateway.prewarm); None: it opens when the media comes
    audio: AudioFormat | None = None


class OutboundError(Exception):
    """A call could not be placed; ``status`` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


class Carrier(ABC):
    """One carrier, as the application sees it."""

    name: ClassVar[str]  # the label of its metrics and recordings: "twilio", "acs"
    places_calls: ClassVar[bool] = False  # it can place outbound calls (see place_call)

    @abstractmethod
    def routes(self) -> list[web.RouteDef]:
        """Its HTTP routes: webhooks, callbacks, media sockets."""

    def install(self, app: web.Application, config: GatewayConfig) -> None:  # noqa: B027 (optional hook)
        """Keep what it needs in ``app`` (under its own app keys) when the application is built."""

    async def running(self, app: web.Application) -> AsyncIterator[None]:
        """Open its clients while the application runs (an aiohttp cleanup context)."""
        yield

    def notes(self, config: GatewayConfig) -> list[str]:
        """Warnings for the start-up log about what its settings mean (e.g. requests refused)."""
        return []

    # --- outbound calls ---------------------------------------------------------------------

    def outbound_refusal(self, config: GatewayConfig) -> str | None:
        """Why this carrier cannot place calls with this configuration (None: it can)."""
        return f"{self.name} does not offer outbound calls through the gateway"

    async def place_call(self, app: web.Application, request: OutboundRequest) -> PlacedCall:
        """Ask the carrier to place a call whose answered media comes back to the gateway's media
        socket (``OutboundError`` when it cannot). Never blocks the event loop."""
        raise OutboundError(self.outbound_refusal(app_config(app)) or f"{self.name}: outbound calls not offered",
                            status=400)

    # --- recordings -------------------------------------------------------------------------

    @abstractmethod
    def replay_start(self, header: dict[str, Any], records: list[dict[str, Any]]) -> ReplayStart:
        """Rebuild a recorded call's phone leg (``ReplayError`` when the recording lacks what it needs)."""

    @abstractmethod
    def replay_socket(self, header: dict[str, Any]) -> tuple[str, dict[str, str]]:
        """The media socket a replay over sockets opens for a recorded call: (path, request headers)."""

    def replay_settings(self, header: dict[str, Any]) -> dict[str, Any]:
        """Config sections a replay over sockets needs to serve the recorded call as it was served."""
        return {}

    @abstractmethod
    def caller_audio(self, message: str | bytes) -> str | None:
        """The caller audio (base64) an inbound phone message carries, else None."""

    @abstractmethod
    def outbound_kind(self, message: str | bytes) -> str | None:
        """What an outbound phone message is: "audio" (bot audio), "flush" (playback cleared), or None."""

    def phone_reply(self, message: str | bytes) -> bool:
        """Whether an outbound phone message answers one of the phone's own (a pong to its ping): over
        sockets its place among the call's other messages depends on timing, so a replay over
        sockets compares these on their own."""
        return False

    def playback_ack(self, message: str | bytes) -> bool:
        """Whether an inbound phone message acknowledges playback (a mark echoed back): a replay over
        sockets sends these in answer to what the gateway sent, not on the caller's clock."""
        return False

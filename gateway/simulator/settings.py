"""The simulator's settings: what a :class:`SimulatorSettings` holds and the scripted
:class:`ToolCall`. Plain data, read by the protocol, the server and the command line."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gateway.audio import ASSETS

Observer = Callable[[str, dict[str, Any]], None]

OutputBufferClear = Literal["auto", "ack", "error", "ignore"]


@dataclass(frozen=True)
class ToolCall:
    """A function call the simulated model makes instead of speaking (see
    :attr:`SimulatorSettings.tool_calls`)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("a tool call needs a function name")
        if not isinstance(self.arguments, dict):
            raise ValueError(f"the arguments of tool call {self.name!r} must be a JSON object (a dict)")
        try:
            self.arguments_json()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the arguments of tool call {self.name!r} are not JSON: {exc}") from None

    def arguments_json(self) -> str:
        """The arguments as the JSON text a model streams."""
        return json.dumps(self.arguments, separators=(",", ":"), allow_nan=False)


@dataclass
class SimulatorSettings:
    api_key: str | None = None
    """With ``api_key`` or ``bearer_token`` set, the upgrade needs a matching ``api-key`` header or
    ``Authorization: Bearer <token>`` (or the same as query parameters), else HTTP 401."""
    bearer_token: str | None = None
    output_buffer_clear: OutputBufferClear = "auto"
    """Answer to ``output_audio_buffer.clear``. ``auto`` (the documented behaviour: the event is for
    avatar sessions only): ``output_audio_buffer.cleared`` on a session with an ``avatar``
    configured, else an ``error`` (code ``unsupported_operation``). ``ack``, ``error`` and
    ``ignore`` force ``output_audio_buffer.cleared``, the error, or no answer on every session."""
    function_call_done_name: bool = False
    """Add the function's ``name`` to ``response.function_call_arguments.done``. The 2026-07-15
    reference lists no ``name`` there (it is on the ``function_call`` item of
    ``response.output_item.added`` / ``conversation.item.created`` / ``response.output_item.done``),
    so by default it is left out."""
    response_delay_ms: int = 300
    """From commit (or ``response.create``) to ``response.created``: the model "thinking"."""
    setup_delay_ms: int = 0
    """The WebSocket upgrade of a session is answered this long after it was asked for: the set-up
    time of a service far away (the real one takes hundreds of milliseconds to seconds)."""
    max_connections_per_minute: int | None = None
    """Refuse a session's WebSocket upgrade with HTTP 429 (and a ``Retry-After``) once this many have been
    accepted in the last 60 seconds, as Voice Live does beyond a resource's new connections per minute
    (None: no limit). Accepted and refused upgrades are counted either way (``GET /stats``)."""
    audio_speed: float = 4.0
    """Reply audio is streamed this many times faster than real time (``math.inf``: at once)."""
    chunk_pattern_ms: tuple[int, ...] = (120, 240, 80, 400, 200)
    """Audio per ``response.audio.delta``, cycled."""
    vad_threshold_dbfs: float = -40.0
    vad_min_speech_ms: int = 100
    session_lifetime_s: int | None = 1800
    """Sessions close after this long; announced as ``expires_at`` (None: no limit, not announced)."""
    observer: Observer | None = None
    """Called with (event_name, fields) at notable moments: ``session.created``, ``speech_started``,
    ``speech_stopped``, ``response.created`` (response_id; for speech: clip, the shipped clip or
    None for synthetic audio, and text, what the response says; for a function call: clip None and
    function), ``response.done`` (status), ``function_call`` (name, call_id, arguments: the JSON
    text), when a call has been sent whole, ``function_call_output`` (call_id, output),
    ``truncated`` (item_id, audio_end_ms, item_audio_ms), ``truncate_rejected``, ``cancelled``
    (reason), ``error`` (code), ``closed`` (code). Every call also carries ``session`` (the
    session id)."""
    record: bool = True
    """Keep every event and closed session in :class:`SimulatorState` for inspection. A
    long-running server turns this off."""
    assets: Path = ASSETS
    """Folder holding the reply clips and speech.txt."""
    tool_calls: Mapping[int, ToolCall] = field(default_factory=dict)
    """Scripted function calls, by caller turn (1: the caller's first turn in the session). The
    response to that turn is a call of the function instead of a spoken reply, if the session (or
    the ``response.create``) declares a function of that name and ``tool_choice`` is not
    ``"none"``; otherwise a warning is logged and the reply is spoken. After the client sends the
    ``function_call_output``, its ``response.create`` gets the next spoken reply. A
    ``response.create`` with a ``pre_generated_assistant_message`` is never a scripted call (nor
    a turn's reply: it says its own text)."""
    function_call_ms: int = 200
    """A function call's arguments are streamed over this long, split evenly between the deltas
    (not scaled by ``audio_speed``)."""

    def __post_init__(self) -> None:
        if not self.audio_speed > 0:
            raise ValueError("audio_speed must be > 0")
        if not self.chunk_pattern_ms or min(self.chunk_pattern_ms) <= 0:
            raise ValueError("chunk_pattern_ms needs at least one positive duration")
        if self.output_buffer_clear not in ("auto", "ack", "error", "ignore"):
            raise ValueError("output_buffer_clear must be auto, ack, error or ignore")
        if min(self.response_delay_ms, self.vad_min_speech_ms, self.function_call_ms, self.setup_delay_ms) < 0:
            raise ValueError("response_delay_ms, vad_min_speech_ms, function_call_ms and setup_delay_ms must be >= 0")
        limit = self.max_connections_per_minute
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError("max_connections_per_minute must be a whole number >= 1 (or None: no limit)")
        for turn, call in self.tool_calls.items():
            if isinstance(turn, bool) or not isinstance(turn, int) or turn < 1:
                raise ValueError(f"tool_calls keys are caller turns counted from 1, not {turn!r}")
            if not isinstance(call, ToolCall):
                raise ValueError(f"tool_calls[{turn}] must be a ToolCall, not {type(call).__name__}")

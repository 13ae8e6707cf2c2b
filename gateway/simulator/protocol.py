"""One simulated Voice Live session as a sans-I/O protocol.

:class:`SimProtocol` keeps a session's state: the session object, the conversation items, the
input audio clock and its VAD, the response in progress, the truncation bookkeeping and the
function calls. It is fed parsed client events with the current time and returns the server
events to send, in order, each with its ``event_id``. It never touches a socket, a clock, a file
or a task: the server (:mod:`gateway.simulator.server`) does all of that around it.

A response unfolds over time. The protocol decides what each step sends and when the next step
is due; the server decides when to run it:

* :meth:`SimProtocol.receive` may start a response (``response.create``, or the end of a caller
  turn under server VAD). A spoken response first needs its audio, which is read from files:
  :attr:`SimProtocol.speech_wanted` says what to load and :meth:`SimProtocol.speech_ready` takes
  it. A function call needs nothing.
* :attr:`SimProtocol.wakeup` is when the response's next step is due (on the clock of ``now``;
  None: nothing is due), and :meth:`SimProtocol.advance` runs it: ``response.created`` after the
  "thinking" delay, then one audio delta at a time (with the transcript deltas its audio reaches)
  paced at ``audio_speed``, or one function-call arguments delta at a time, and with the last one
  the ``.done`` events and ``response.done``.
* :meth:`SimProtocol.cancel_response` (also reached through ``response.cancel`` and a barge-in
  inside :meth:`SimProtocol.receive`) ends the response at once and returns its closing events.
"""

from __future__ import annotations

import base64
import copy
import itertools
import re
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.audio import is_base64
from gateway.log import get_logger
from gateway.simulator.settings import OutputBufferClear, SimulatorSettings, ToolCall
from gateway.simulator.validation import Invalid, check_response_params, merge_session, turn_detection_defaults
from gateway.simulator.voice import GREETING, REPLIES, OutputFormat, Speech, decode_input, output_format
from gateway.vad import EnergyVad, VadEvent

MAX_APPEND_BYTES = 15 * 1024 * 1024
MAX_DELTA_BYTES = 2 * 1024 * 1024  # keeps every server message well under the SDK's 4 MiB
MIN_COMMIT_MS = 100

CLIENT_EVENTS = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "output_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.retrieve",
    "conversation.item.truncate",
    "conversation.item.delete",
    "response.create",
    "response.cancel",
    "input_text.delta",
    "input_text.done",
)

Event = dict[str, Any]
"""A client or server event: the protocol's JSON object."""

Plan = Generator[float, float, None]
"""A response's steps. Each ``yield`` gives the time the next step is due and receives the time it
runs at; the events of a step are emitted as it runs."""

_WORD_RE = re.compile(r"\s*\S+\s*")  # words with the spaces around them: they add up to the text


@dataclass(frozen=True, slots=True)
class SpeechRequest:
    """The audio a spoken response needs: a shipped reply ``clip``, or the ``text`` of a
    ``pre_generated_assistant_message``, in the output format ``fmt``."""

    response_id: str
    fmt: OutputFormat
    clip: str | None
    text: str | None


@dataclass
class Response:
    """The response in progress."""

    id: str
    clip: str | None  # the reply clip to speak; None for pre-generated text and function calls
    fmt: OutputFormat
    text: str | None = None  # a pre_generated_assistant_message's text, spoken instead of a clip
    call: ToolCall | None = None  # a function call instead of speech
    call_id: str | None = None
    arguments: str = ""  # a function call's arguments sent so far (JSON text)
    item_id: str | None = None
    created_sent: bool = False
    item_added: bool = False
    part_added: bool = False
    generating: bool = True  # still being produced: cancellable
    transcript: str = ""  # transcript sent so far
    audio_bytes: int = 0
    first_delta_at: float | None = None  # time of the first audio delta
    wake_at: float | None = None  # when the next step is due; None: waiting for speech, or over
    plan: Plan | None = field(default=None, repr=False)


@dataclass
class _AssistantAudio:
    """Bookkeeping for an assistant item that carried audio."""

    fmt: OutputFormat
    ms: int  # current length (after truncations)
    first_delta_at: float


class SimProtocol:
    """The state and the rules of one simulated Voice Live session, without I/O.

    ``session_id`` and ``index`` (the session's number on its server, used in item and event ids)
    are given by the server, as is ``wall_time`` (Unix seconds, for ``expires_at``). Times passed
    as ``now`` are seconds on any monotonic clock, the same for every call."""

    def __init__(
        self,
        settings: SimulatorSettings,
        query: Mapping[str, str],
        *,
        session_id: str,
        index: int,
        wall_time: float,
    ) -> None:
        self.id = session_id
        self.index = index
        self.settings = settings
        self.received: list[Event] = []
        """Client events as received (``record`` only), except the valid appends."""
        self.appended: list[str] = []
        """The base64 audio of each valid ``input_audio_buffer.append`` (``record`` only)."""
        self.truncations: list[dict[str, Any]] = []
        self.function_calls: list[dict[str, Any]] = []
        """Function calls the simulator made: call_id, name, arguments (JSON text), response_id,
        status (completed or cancelled)."""
        self.function_call_outputs: list[dict[str, Any]] = []
        """Accepted ``function_call_output`` items: item_id, call_id, output."""
        self.spoken: list[dict[str, Any]] = []
        """What each spoken response set out to say (recorded as it starts, whether or not it is
        then cut): response_id, text, clip (the shipped clip, None for synthetic speech),
        pre_generated (True for a ``pre_generated_assistant_message``)."""
        self.items_audio_bytes: dict[str, int] = {}
        self.items: dict[str, dict[str, Any]] = {}
        """The conversation, in order."""

        self._log = get_logger("simulator", session=session_id)
        self._api_version = query["api-version"]
        self._counters = {"event": 0, "item": 0, "resp": 0, "call": 0}
        self._out: list[Event] = []

        lifetime = settings.session_lifetime_s
        agent = query.get("agent-name")
        self.session: dict[str, Any] = {
            "id": self.id,
            "object": "realtime.session",
            "model": query.get("model"),
            "modalities": ["text", "audio"],
            "instructions": "",
            "voice": {"type": "azure-standard", "name": "en-US-AvaMultilingualNeural"},
            "input_audio_format": "pcm16",
            "output_audio_format": "pcm16",
            "input_audio_sampling_rate": 24000,
            "input_audio_noise_reduction": None,
            "input_audio_echo_cancellation": None,
            "input_audio_transcription": None,
            "turn_detection": turn_detection_defaults("server_vad", self._api_version),
            "tools": [],
            "tool_choice": "auto",
            "temperature": 0.8,
            "max_response_output_tokens": "inf",
        }
        if agent:
            del self.session["instructions"]  # an agent has its own, and takes none from the client
            self.session["agent"] = {
                "type": "agent",
                "name": agent,
                "agent_id": agent,
                "thread_id": "thread_" + self.id[5:],
            }
        if lifetime is not None:
            self.session["expires_at"] = int(wall_time) + lifetime

        # input audio
        self._audio_bytes_in = 0  # every appended byte, whatever the format
        self._clock = 0  # whole samples appended since the session started
        self._odd_byte = b""  # pcm16: half a sample left over from the last append
        self._buffer_samples = 0  # since the last commit or clear
        self._vad: EnergyVad | None = None
        self._speech: tuple[str, int] | None = None  # (item id, audio_start_ms) while speaking
        self._user_turns = 0
        self._last_reply = 0  # reply slot of the last spoken answer to a caller turn
        self._tool_turns: set[int] = set()  # caller turns whose scripted call has been decided
        self._call_ids: set[str] = set()  # call_id of every function_call item in the conversation

        # conversation
        self._assistant_audio: dict[str, _AssistantAudio] = {}
        self._last_assistant: str | None = None
        self._response: Response | None = None
        self._configure_vad()

    # --- what the server calls ------------------------------------------------------------

    def open(self) -> list[Event]:
        """The first event of the session: ``session.created``."""
        self._emit({"type": "session.created", "session": self.session})
        self._notify("session.created", model=self.session.get("model"))
        return self._take()

    def receive(self, event: object, now: float) -> list[Event]:
        """Handle one parsed client event received at ``now``; the events to send in reply."""
        if not isinstance(event, dict):
            self._error("invalid_event", "A client event must be a JSON object")
        else:
            kind = event.get("type")
            if kind == "input_audio_buffer.append":
                self._on_append(event, now)
            else:
                self._dispatch(kind, event, now)
        return self._take()

    def invalid_json(self, problem: str) -> list[Event]:
        """A client message that is not JSON: the ``error`` to send."""
        self._error("invalid_json", f"The message is not valid JSON: {problem}")
        return self._take()

    def server_error(self, event: object) -> list[Event]:
        """After :meth:`receive` raised: what it had produced, then a ``server_error``."""
        client_event = event if isinstance(event, dict) else None
        self._error(
            "server_error", "The server had an error processing the event.", client_event, kind="server_error"
        )
        return self._take()

    def expire(self) -> list[Event]:
        """The session has reached ``session_lifetime_s``: the ``error`` that precedes the close."""
        lifetime = self.settings.session_lifetime_s
        self._error("session_expired", f"Your session hit the maximum duration of {lifetime} seconds.")
        return self._take()

    def closed(self, code: int | None) -> None:
        """The socket has closed with ``code``."""
        self._notify("closed", code=code)

    def stamp(self, event: Event) -> Event:
        """``event`` with an ``event_id`` (added if missing), for a server event sent out of turn."""
        event = {**event}
        event.setdefault("event_id", self._next_id("event"))
        return event

    @property
    def response(self) -> Response | None:
        """The response in progress (None once it is done, cancelled or failed)."""
        return self._response

    @property
    def speech_wanted(self) -> SpeechRequest | None:
        """The audio the response in progress waits for, if any: load it, then :meth:`speech_ready`."""
        resp = self._response
        if resp is None or resp.call is not None or resp.plan is not None:
            return None
        return SpeechRequest(resp.id, resp.fmt, resp.clip, resp.text)

    def speech_ready(self, speech: Speech, now: float) -> list[Event]:
        """The audio of the response in progress, loaded at ``now``: its first step runs now."""
        resp = self._response
        if resp is None or resp.call is not None or resp.plan is not None:
            return []
        resp.plan = self._speech_plan(resp, speech, now)
        self._step(resp, None)
        return self._take()

    @property
    def wakeup(self) -> float | None:
        """When :meth:`advance` is next due (on the clock of ``now``), or None."""
        resp = self._response
        return None if resp is None else resp.wake_at

    def advance(self, now: float) -> list[Event]:
        """Run the response's step that is due: the events it sends."""
        resp = self._response
        if resp is not None and resp.plan is not None and resp.wake_at is not None:
            self._step(resp, now)
        return self._take()

    def cancel_response(self, reason: str = "client_cancelled") -> list[Event]:
        """End the response in progress at once (``reason``: ``client_cancelled`` or
        ``turn_detected``): the ``.done`` events of what it had opened, then ``response.done``
        with status ``cancelled``. Nothing if no response is in progress."""
        self._cancel_response(reason)
        return self._take()

    def fail_response(self) -> list[Event]:
        """After a step of the response raised (or its audio could not be loaded): what the step
        had produced, then ``response.done`` with status ``failed``."""
        resp = self._response
        if resp is not None:
            self._end(resp)
            self._emit(
                {
                    "type": "response.done",
                    "response": self._response_object(
                        resp,
                        "failed",
                        [],
                        {
                            "type": "failed",
                            "error": {"type": "server_error", "message": "The simulator failed."},
                        },
                    ),
                }
            )
            self._notify("response.done", response_id=resp.id, status="failed")
        return self._take()

    # --- ids, events, errors ----------------------------------------------------------------

    def _next_id(self, kind: str) -> str:
        self._counters[kind] += 1
        return f"{kind}_{self.index:03d}{self._counters[kind]:05d}"

    @property
    def _last_item_id(self) -> str | None:
        return next(reversed(self.items), None)

    def _emit(self, event: Event) -> None:
        self._out.append(self.stamp(event))

    def _take(self) -> list[Event]:
        out, self._out = self._out, []
        return out

    def _notify(self, moment: str, /, **fields: Any) -> None:
        observer = self.settings.observer
        if observer is None:
            return
        try:
            observer(moment, {"session": self.id, **fields})
        except Exception:
            self._log.exception("simulator observer failed", moment=moment)

    def _error(
        self,
        code: str,
        message: str,
        client_event: Event | None = None,
        param: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        event_id = client_event.get("event_id") if isinstance(client_event, dict) else None
        self._notify("error", code=code)
        self._log.info("simulator error reply", code=code, error=message)
        self._emit(
            {
                "type": "error",
                "error": {
                    "type": kind,
                    "code": code,
                    "message": message,
                    "param": param,
                    "event_id": event_id if isinstance(event_id, str) else None,
                },
            }
        )

    def _dispatch(self, kind: Any, ev: Event, now: float) -> None:
        if self.settings.record:
            self.received.append(ev)
        if not isinstance(kind, str):
            self._error("missing_required_parameter", "Missing required parameter: 'type'.", ev, "type")
            return
        handler = self._HANDLERS.get(kind)
        if handler is None:
            self._error(
                "invalid_value",
                f"Invalid value: '{kind}'. Supported values are: " + ", ".join(CLIENT_EVENTS) + ".",
                ev,
                "type",
            )
            return
        handler(self, ev, now)

    # --- session --------------------------------------------------------------------------

    def _on_session_update(self, ev: Event, now: float) -> None:
        update = ev.get("session")
        if not isinstance(update, dict):
            self._error("missing_required_parameter", "Missing required parameter: 'session'.", ev, "session")
            return
        try:
            new = merge_session(self.session, update, self._api_version, self._audio_bytes_in > 0)
        except Invalid as exc:
            self._error(exc.code, exc.message, ev, exc.param)
            return
        self.session = new
        self._configure_vad()
        self._emit({"type": "session.updated", "session": self.session})

    def _configure_vad(self) -> None:
        td = self.session.get("turn_detection")
        if td is None:
            self._vad = None
            self._speech = None
            return
        silence = td.get("silence_duration_ms") or 500
        if self._vad is None or self._vad.rate != self.session["input_audio_sampling_rate"]:
            self._vad = EnergyVad(
                self.session["input_audio_sampling_rate"],
                self.settings.vad_threshold_dbfs,
                self.settings.vad_min_speech_ms,
                silence,
                origin_samples=self._clock,
            )
        self._vad.silence_ms = silence

    # --- input audio ----------------------------------------------------------------------

    def _on_append(self, ev: Event, now: float) -> None:
        audio = ev.get("audio")
        if not isinstance(audio, str):
            if self.settings.record:
                self.received.append(ev)
            if audio is None:
                self._error("missing_required_parameter", "Missing required parameter: 'audio'.", ev, "audio")
            else:
                self._error("invalid_type", "Invalid type for 'audio': expected a base64 string.", ev, "audio")
            return
        if not is_base64(audio) or len(audio) > MAX_APPEND_BYTES * 4 // 3 + 4:
            if self.settings.record:
                self.received.append(ev)
            reason = "is not valid base64" if len(audio) <= MAX_APPEND_BYTES * 4 // 3 + 4 else "is too large"
            self._error("invalid_value", f"The 'audio' of input_audio_buffer.append {reason}.", ev, "audio")
            return
        if self.settings.record:
            self.appended.append(audio)
        data = base64.b64decode(audio)
        if not data:
            return
        self._audio_bytes_in += len(data)
        fmt = self.session["input_audio_format"]
        if fmt == "pcm16":
            if self._odd_byte:
                data = self._odd_byte + data
            self._odd_byte = data[-1:] if len(data) % 2 else b""
            n = len(data) // 2
        else:
            n = len(data)
        events: list[VadEvent] = []
        if self._vad is not None and n:
            events = self._vad.feed(decode_input(fmt, data))
        self._clock += n
        self._buffer_samples += n
        for vad_event in events:
            if vad_event.kind == "start":
                self._on_speech_started(vad_event.ms, now)
            else:
                self._on_speech_stopped(vad_event.ms, now)

    def _rate(self) -> int:
        return int(self.session["input_audio_sampling_rate"])

    def _on_speech_started(self, speech_ms: int, now: float) -> None:
        td = self.session["turn_detection"] or {}
        item_id = self._next_id("item")
        start_ms = max(0, speech_ms - int(td.get("prefix_padding_ms") or 0))
        self._speech = (item_id, start_ms)
        self._emit({"type": "input_audio_buffer.speech_started", "audio_start_ms": start_ms, "item_id": item_id})
        self._notify("speech_started", audio_start_ms=start_ms, item_id=item_id)
        interrupted = False
        if self._active_response() is not None and td.get("interrupt_response", True):
            self._cancel_response("turn_detected")
            interrupted = True
        if td.get("auto_truncate") and (interrupted or self._active_response() is None):
            self._auto_truncate(now)

    def _on_speech_stopped(self, end_ms: int, now: float) -> None:
        td = self.session["turn_detection"] or {}
        if self._speech is None:
            return
        item_id, start_ms = self._speech
        self._speech = None
        self._emit({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": end_ms, "item_id": item_id})
        self._notify("speech_stopped", audio_end_ms=end_ms, item_id=item_id)
        self._commit(item_id, end_ms - start_ms)
        if td.get("create_response", True):
            self._start_response(None, None, now)

    def _commit(self, item_id: str, speech_ms: int) -> None:
        previous = self._last_item_id
        self._buffer_samples = 0
        self._user_turns += 1
        item: dict[str, Any] = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "audio": None, "transcript": None}],
        }
        self.items[item_id] = item
        self._emit({"type": "input_audio_buffer.committed", "previous_item_id": previous, "item_id": item_id})
        self._emit({"type": "conversation.item.created", "previous_item_id": previous, "item": copy.deepcopy(item)})
        if self.session.get("input_audio_transcription"):
            transcript = f"(simulated transcript: {max(0, speech_ms) / 1000:.1f} s of speech)"
            item["content"][0]["transcript"] = transcript
            self._emit(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item_id,
                    "content_index": 0,
                    "transcript": transcript,
                }
            )

    def _on_commit(self, ev: Event, now: float) -> None:
        buffered_ms = self._buffer_samples * 1000 // self._rate()
        if buffered_ms < MIN_COMMIT_MS:
            self._error(
                "input_audio_buffer_commit_empty",
                f"Error committing input audio buffer: buffer too small. Expected at least {MIN_COMMIT_MS}ms "
                f"of audio, but buffer only has {buffered_ms}ms of audio.",
                ev,
            )
            return
        item_id = self._speech[0] if self._speech else self._next_id("item")
        self._speech = None
        if self._vad is not None:
            self._vad.reset()
        self._commit(item_id, buffered_ms)

    def _on_input_clear(self, ev: Event, now: float) -> None:
        self._buffer_samples = 0
        self._speech = None
        if self._vad is not None:
            self._vad.reset()
        self._emit({"type": "input_audio_buffer.cleared"})

    def _output_clear_answer(self) -> OutputBufferClear:
        """How to answer ``output_audio_buffer.clear``: the setting, or with ``auto`` the
        documented behaviour (it is for avatar sessions only)."""
        mode = self.settings.output_buffer_clear
        if mode != "auto":
            return mode
        return "ack" if self.session.get("avatar") else "error"

    def _on_output_clear(self, ev: Event, now: float) -> None:
        answer = self._output_clear_answer()
        if answer == "ack":
            self._emit({"type": "output_audio_buffer.cleared"})
        elif answer == "error":
            self._error(
                "unsupported_operation",
                "output_audio_buffer.clear is only supported in avatar mode; this session has no avatar.",
                ev,
            )

    # --- starting a response ----------------------------------------------------------------

    def _active_response(self) -> Response | None:
        resp = self._response
        return resp if resp is not None and resp.generating else None

    def _on_response_create(self, ev: Event, now: float) -> None:
        try:
            params, text = check_response_params(ev.get("response"), "agent" in self.session)
        except Invalid as exc:
            self._error(exc.code, exc.message, ev, exc.param)
            return
        if self._active_response() is not None:
            self._error(
                "conversation_already_has_active_response",
                "Conversation already has an active response in progress.",
                ev,
            )
            return
        self._start_response(params, text, now)

    def _start_response(self, params: dict[str, Any] | None, text: str | None, now: float) -> None:
        """Start a response: saying ``text`` (a pre_generated_assistant_message), else the
        function call scripted for the turn, else the greeting or the turn's reply clip. Its
        first step is due at once, but never runs inside the client event that started it."""
        if self._active_response() is not None:
            self._log.info("simulator turn while a response is active: no new response")
            return
        fmt_name = (params or {}).get("output_audio_format") or self.session["output_audio_format"]
        fmt = output_format(fmt_name)
        assert fmt is not None  # validated by session.update / response.create
        call = self._scripted_call(params) if text is None else None
        clip: str | None = None
        if call is None and text is None:
            clip = GREETING if self._user_turns == 0 else self._next_reply()
        resp = Response(id=self._next_id("resp"), clip=clip, fmt=fmt, text=text, call=call)
        self._response = resp
        if call is not None:
            resp.plan = self._call_plan(resp, call, now)
            self._step(resp, None)

    def _next_reply(self) -> str:
        """The reply clip for a spoken answer after a caller turn: the clip of the turn, or the next
        one if that turn already had its spoken answer (after a function call's output, or a
        second ``response.create``)."""
        self._last_reply = max(self._user_turns, self._last_reply + 1)
        return REPLIES[(self._last_reply - 1) % len(REPLIES)]

    def _scripted_call(self, params: dict[str, Any] | None) -> ToolCall | None:
        """The function call scripted for the current caller turn, once per turn, if it can be made."""
        turn = self._user_turns
        call = self.settings.tool_calls.get(turn) if turn else None
        if call is None or turn in self._tool_turns:
            return None
        self._tool_turns.add(turn)
        params = params or {}
        tools = params["tools"] if "tools" in params else self.session.get("tools")
        choice = params["tool_choice"] if "tool_choice" in params else self.session.get("tool_choice")
        declared = {
            t.get("name")
            for t in (tools if isinstance(tools, list) else [])
            if isinstance(t, dict) and t.get("type") == "function"
        }
        if call.name not in declared:
            self._log.warning(
                "simulator skipped a scripted function call: the session declares no such function",
                turn=turn,
                function=call.name,
                declared=sorted(str(n) for n in declared),
            )
            return None
        if choice == "none":
            self._log.warning(
                "simulator skipped a scripted function call: tool_choice is none",
                turn=turn,
                function=call.name,
            )
            return None
        return call

    # --- running a response -------------------------------------------------------------------

    def _step(self, resp: Response, now: float | None) -> None:
        """Run the response's plan up to its next pause (from its start if ``now`` is None)."""
        plan = resp.plan
        assert plan is not None
        try:
            resp.wake_at = next(plan) if now is None else plan.send(now)
        except StopIteration:
            self._end(resp)
        except Exception:
            resp.wake_at = None  # a plan that raised is over: the server then calls fail_response()
            raise

    def _end(self, resp: Response) -> None:
        """The response is over: nothing more is due and nothing can cut it."""
        resp.generating = False
        resp.wake_at = None
        if resp.plan is not None:
            resp.plan.close()
            resp.plan = None
        if self._response is resp:
            self._response = None

    def _response_object(
        self,
        resp: Response,
        status: str,
        output: list[dict[str, Any]],
        details: dict[str, Any] | None = None,
        usage: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return {
            "id": resp.id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": output,
            "usage": usage,
            "conversation_id": "conv_" + self.id[5:],
            "voice": self.session.get("voice"),
            "modalities": self.session.get("modalities"),
            "output_audio_format": resp.fmt.name,
            "temperature": self.session.get("temperature"),
            "max_output_tokens": self.session.get("max_response_output_tokens"),
        }

    def _usage(self, resp: Response) -> dict[str, Any]:
        audio_ms = resp.fmt.ms(resp.audio_bytes)
        out_audio = audio_ms * 20 // 1000
        out_text = len(resp.transcript.split()) + (len(resp.arguments) + 3) // 4
        in_audio = self._clock * 10 // self._rate()
        return {
            "total_tokens": in_audio + out_audio + out_text,
            "input_tokens": in_audio,
            "output_tokens": out_audio + out_text,
            "input_token_details": {
                "cached_tokens": 0,
                "text_tokens": 0,
                "audio_tokens": in_audio,
                "image_tokens": 0,
                "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
            },
            "output_token_details": {
                "text_tokens": out_text,
                "audio_tokens": out_audio,
                "reasoning_tokens": 0,
            },
        }

    def _common(self, resp: Response) -> dict[str, Any]:
        return {"response_id": resp.id, "item_id": resp.item_id, "output_index": 0, "content_index": 0}

    def _assistant_item(self, resp: Response, status: str) -> dict[str, Any]:
        item = self.items.get(resp.item_id or "")
        content = [{"type": "audio", "transcript": resp.transcript}] if resp.part_added else []
        if item is not None:
            item["status"] = status
            item["content"] = content
        return {
            "id": resp.item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": [dict(c) for c in content],
        }

    def _function_item(self, resp: Response, status: str) -> dict[str, Any]:
        item = self.items.get(resp.item_id or "")
        if item is not None:
            item["status"] = status
            item["arguments"] = resp.arguments
        assert resp.call is not None
        return {
            "id": resp.item_id,
            "object": "realtime.item",
            "type": "function_call",
            "status": status,
            "call_id": resp.call_id,
            "name": resp.call.name,
            "arguments": resp.arguments,
        }

    def _output_item(self, resp: Response, status: str) -> dict[str, Any]:
        return self._function_item(resp, status) if resp.call else self._assistant_item(resp, status)

    def _response_created(self, resp: Response, **notify: Any) -> None:
        resp.created_sent = True
        self._emit({"type": "response.created", "response": self._response_object(resp, "in_progress", [])})
        self._notify("response.created", response_id=resp.id, **notify)

    def _add_output_item(self, resp: Response, item: dict[str, Any]) -> None:
        """Put the response's (only) output item in the conversation: ``response.output_item.added``
        and ``conversation.item.created``."""
        previous = self._last_item_id
        self.items[item["id"]] = item
        resp.item_added = True
        self._emit(
            {"type": "response.output_item.added", "response_id": resp.id, "output_index": 0, "item": dict(item)}
        )
        self._emit({"type": "conversation.item.created", "previous_item_id": previous, "item": dict(item)})

    def _speech_plan(self, resp: Response, speech: Speech, now: float) -> Plan:
        """A spoken response, from ``response.created`` (after the "thinking" delay) to
        ``response.done``."""
        resp.clip = speech.clip
        self.spoken.append(
            {"response_id": resp.id, "text": speech.text, "clip": speech.clip, "pre_generated": resp.text is not None}
        )
        if self.settings.response_delay_ms:
            now = yield now + self.settings.response_delay_ms / 1000
        self._response_created(resp, clip=speech.clip, text=speech.text)
        self._emit(
            {
                "type": "rate_limits.updated",
                "rate_limits": [
                    {"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 60.0},
                    {"name": "tokens", "limit": 100000, "remaining": 99000, "reset_seconds": 60.0},
                ],
            }
        )
        resp.item_id = self._next_id("item")
        self._add_output_item(
            resp,
            {
                "id": resp.item_id,
                "object": "realtime.item",
                "type": "message",
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            },
        )
        resp.part_added = True
        self._emit(
            {"type": "response.content_part.added", **self._common(resp), "part": {"type": "audio", "transcript": ""}}
        )
        yield from self._stream_speech(resp, speech, now)

        resp.generating = False  # from here on nothing can be cut: finish in order
        self._send_closing_events(resp, "completed")
        self._emit(
            {
                "type": "response.done",
                "response": self._response_object(
                    resp, "completed", [self._assistant_item(resp, "completed")], usage=self._usage(resp)
                ),
            }
        )
        self._notify("response.done", response_id=resp.id, status="completed")

    def _send_transcript_delta(self, resp: Response, words: str) -> None:
        resp.transcript += words
        self._emit({"type": "response.audio_transcript.delta", **self._common(resp), "delta": words})

    def _stream_speech(self, resp: Response, speech: Speech, now: float) -> Plan:
        """The audio deltas, one per step, paced at ``audio_speed`` from the first one, with each
        word's transcript delta sent when the audio reaches its share of the text."""
        settings = self.settings
        assert resp.item_id is not None
        text, audio = speech.text, speech.audio
        words = [(m.group(), m.start() / max(1, len(text))) for m in _WORD_RE.finditer(text)]
        next_word = 0
        pos = 0
        sent_ms = 0.0
        t0: float | None = None
        played: _AssistantAudio | None = None
        pattern = settings.chunk_pattern_ms
        k = 0
        while pos < len(audio):
            if t0 is not None:
                now = yield t0 + sent_ms / 1000.0 / settings.audio_speed
            ms = pattern[k % len(pattern)]
            k += 1
            n = max(resp.fmt.sample_width, min(resp.fmt.nbytes(ms), MAX_DELTA_BYTES))
            piece = audio[pos : pos + n]
            end_fraction = (pos + len(piece)) / len(audio)
            while next_word < len(words) and words[next_word][1] < end_fraction:
                self._send_transcript_delta(resp, words[next_word][0])
                next_word += 1
            pos += len(piece)
            resp.audio_bytes += len(piece)
            self.items_audio_bytes[resp.item_id] = resp.audio_bytes
            if t0 is None:
                t0 = resp.first_delta_at = now
                self._last_assistant = resp.item_id
                played = self._assistant_audio[resp.item_id] = _AssistantAudio(resp.fmt, 0, now)
            assert played is not None
            played.ms = resp.fmt.ms(resp.audio_bytes)
            sent_ms += len(piece) / resp.fmt.sample_width * 1000.0 / resp.fmt.rate
            self._emit(
                {"type": "response.audio.delta", **self._common(resp), "delta": base64.b64encode(piece).decode("ascii")}
            )
        for word, _ in words[next_word:]:
            self._send_transcript_delta(resp, word)

    def _call_plan(self, resp: Response, call: ToolCall, now: float) -> Plan:
        """A response holding one function call: its arguments are streamed in two or three deltas
        over ``function_call_ms``."""
        settings = self.settings
        now = yield now  # the first step: on the server's next turn
        if settings.response_delay_ms:
            now = yield now + settings.response_delay_ms / 1000
        self._response_created(resp, clip=None, function=call.name)
        resp.item_id = self._next_id("item")
        resp.call_id = self._next_id("call")
        item = {
            "id": resp.item_id,
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "call_id": resp.call_id,
            "name": call.name,
            "arguments": "",
        }
        self._call_ids.add(resp.call_id)
        self._add_output_item(resp, item)

        text = call.arguments_json()
        n = 3 if len(text) >= 3 else 2
        cuts = [len(text) * k // n for k in range(n + 1)]
        pause = settings.function_call_ms / 1000 / n
        ids = {"response_id": resp.id, "item_id": resp.item_id, "output_index": 0, "call_id": resp.call_id}
        for start, end in itertools.pairwise(cuts):
            resp.arguments += text[start:end]
            item["arguments"] = resp.arguments
            self._emit({"type": "response.function_call_arguments.delta", **ids, "delta": text[start:end]})
            if pause:
                now = yield now + pause  # a barge-in may come in between

        resp.generating = False  # from here on nothing can be cut: finish in order
        done = {"type": "response.function_call_arguments.done", **ids, "arguments": text}
        if settings.function_call_done_name:
            done["name"] = call.name
        self._emit(done)
        self.function_calls.append(
            {
                "call_id": resp.call_id,
                "name": call.name,
                "arguments": text,
                "response_id": resp.id,
                "status": "completed",
            }
        )
        self._notify("function_call", name=call.name, call_id=resp.call_id, arguments=text)
        done_item = self._function_item(resp, "completed")
        self._emit({"type": "response.output_item.done", "response_id": resp.id, "output_index": 0, "item": done_item})
        self._emit(
            {
                "type": "response.done",
                "response": self._response_object(resp, "completed", [dict(done_item)], usage=self._usage(resp)),
            }
        )
        self._notify("response.done", response_id=resp.id, status="completed")

    # --- ending a response early ------------------------------------------------------------------

    def _send_closing_events(self, resp: Response, item_status: str) -> None:
        """The .done events of whatever part and item the response had opened."""
        if resp.part_added:
            self._emit({"type": "response.audio.done", **self._common(resp)})
            self._emit({"type": "response.audio_transcript.done", **self._common(resp), "transcript": resp.transcript})
            self._emit(
                {
                    "type": "response.content_part.done",
                    **self._common(resp),
                    "part": {"type": "audio", "transcript": resp.transcript},
                }
            )
        if resp.item_added:
            self._emit(
                {
                    "type": "response.output_item.done",
                    "response_id": resp.id,
                    "output_index": 0,
                    "item": self._output_item(resp, item_status),
                }
            )

    def _cancel_response(self, reason: str) -> None:
        resp = self._active_response()
        if resp is None:
            return
        self._end(resp)
        if not resp.created_sent:
            resp.created_sent = True
            self._emit({"type": "response.created", "response": self._response_object(resp, "in_progress", [])})
        resp.transcript = resp.transcript.rstrip()
        self._send_closing_events(resp, "incomplete")
        output = [self._output_item(resp, "incomplete")] if resp.item_added else []
        if resp.call is not None and resp.call_id is not None:
            self.function_calls.append(
                {
                    "call_id": resp.call_id,
                    "name": resp.call.name,
                    "arguments": resp.arguments,
                    "response_id": resp.id,
                    "status": "cancelled",
                }
            )
        self._emit(
            {
                "type": "response.done",
                "response": self._response_object(
                    resp, "cancelled", output, {"type": "cancelled", "reason": reason}, self._usage(resp)
                ),
            }
        )
        self._notify("cancelled", response_id=resp.id, reason=reason)
        self._notify("response.done", response_id=resp.id, status="cancelled")

    def _on_response_cancel(self, ev: Event, now: float) -> None:
        resp = self._active_response()
        wanted = ev.get("response_id")
        if resp is None or (wanted is not None and wanted != resp.id):
            self._error("response_cancel_not_active", "Cancellation failed: no active response found", ev)
            return
        self._cancel_response("client_cancelled")

    # --- truncation -----------------------------------------------------------------------

    def _cut_transcript(self, item_id: str, fraction: float) -> None:
        item = self.items.get(item_id)
        if not item or not item.get("content"):
            return
        part = item["content"][0]
        text = part.get("transcript") or ""
        keep = int(len(text) * max(0.0, min(1.0, fraction)))
        if keep < len(text):
            cut = text[:keep]
            if keep and not text[keep].isspace():
                cut = cut.rsplit(" ", 1)[0] if " " in cut else ""
            part["transcript"] = cut.rstrip()

    def _truncate(self, item_id: str, audio_end_ms: int, audio: _AssistantAudio) -> None:
        item_ms = audio.ms
        if item_ms:
            self._cut_transcript(item_id, audio_end_ms / item_ms)
        audio.ms = audio_end_ms
        self.truncations.append(
            {"item_id": item_id, "audio_end_ms": audio_end_ms, "item_audio_ms": item_ms, "ok": True}
        )
        self._emit(
            {
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": audio_end_ms,
            }
        )
        self._notify("truncated", item_id=item_id, audio_end_ms=audio_end_ms, item_audio_ms=item_ms)

    def _auto_truncate(self, now: float) -> None:
        """Cut the last assistant item to what real-time playback would have reached by ``now``."""
        item_id = self._last_assistant
        audio = self._assistant_audio.get(item_id or "")
        if item_id is None or audio is None:
            return
        played = int((now - audio.first_delta_at) * 1000)
        if played < audio.ms:
            self._truncate(item_id, max(0, played), audio)

    def _on_truncate(self, ev: Event, now: float) -> None:
        item_id = ev.get("item_id")
        end = ev.get("audio_end_ms")
        content_index = ev.get("content_index", 0)
        if not isinstance(item_id, str):
            self._error("missing_required_parameter", "Missing required parameter: 'item_id'.", ev, "item_id")
            return
        if end is None:
            self._error(
                "missing_required_parameter", "Missing required parameter: 'audio_end_ms'.", ev, "audio_end_ms"
            )
            return
        if isinstance(end, bool) or not isinstance(end, int) or end < 0:
            self._error("invalid_value", "audio_end_ms must be a non-negative integer.", ev, "audio_end_ms")
            return
        if content_index != 0:
            self._error("invalid_value", "content_index must be 0 for an assistant audio item.", ev, "content_index")
            return
        if item_id not in self.items:
            self._error("item_not_found", f"Item with id '{item_id}' not found.", ev, "item_id")
            return
        active = self._active_response()
        if active is not None and active.item_id == item_id:
            self._error(
                "invalid_value",
                f"Item '{item_id}' is still being generated: cancel its response before truncating it.",
                ev,
                "item_id",
            )
            return
        audio = self._assistant_audio.get(item_id)
        if audio is None:
            self._error("invalid_value", "Only assistant messages with audio can be truncated.", ev, "item_id")
            return
        if end > audio.ms:
            self.truncations.append({"item_id": item_id, "audio_end_ms": end, "item_audio_ms": audio.ms, "ok": False})
            self._notify("truncate_rejected", item_id=item_id, audio_end_ms=end, item_audio_ms=audio.ms)
            self._error(
                "invalid_value",
                f"Audio content of {audio.ms} ms is already shorter than {end} ms",
                ev,
                "audio_end_ms",
            )
            return
        self._truncate(item_id, end, audio)

    # --- conversation items ---------------------------------------------------------------

    def _on_item_create(self, ev: Event, now: float) -> None:
        item = ev.get("item")
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            self._error("missing_required_parameter", "Missing required parameter: 'item'.", ev, "item")
            return
        item = copy.deepcopy(item)
        item_id = item.get("id") or self._next_id("item")
        if not isinstance(item_id, str):
            self._error("invalid_type", "Invalid type for 'item.id': expected a string.", ev, "item.id")
            return
        if item_id in self.items:
            self._error("invalid_value", f"Item with id '{item_id}' already exists.", ev, "item.id")
            return
        kind = item["type"]
        if kind == "function_call_output" and not self._valid_function_output(item, ev):
            return
        item.update(id=item_id, object="realtime.item", status="completed")
        previous = ev.get("previous_item_id", self._last_item_id)
        self.items[item_id] = item
        if kind == "message" and item.get("role") == "user":
            self._user_turns += 1
        elif kind == "function_call" and isinstance(item.get("call_id"), str):
            self._call_ids.add(item["call_id"])
        self._emit({"type": "conversation.item.created", "previous_item_id": previous, "item": copy.deepcopy(item)})
        if kind == "function_call_output":
            self.function_call_outputs.append(
                {"item_id": item_id, "call_id": item["call_id"], "output": item["output"]}
            )
            self._notify("function_call_output", call_id=item["call_id"], output=item["output"])

    def _valid_function_output(self, item: dict[str, Any], ev: Event) -> bool:
        """Check a function_call_output item; on a fault, emit the error and return False."""
        call_id = item.get("call_id")
        output = item.get("output")
        if call_id is None:
            self._error("missing_required_parameter", "Missing required parameter: 'item.call_id'.", ev, "item.call_id")
        elif not isinstance(call_id, str) or call_id not in self._call_ids:
            self._error(
                "invalid_value", f"No function call with call_id {call_id!r} in this conversation.", ev, "item.call_id"
            )
        elif output is None:
            self._error("missing_required_parameter", "Missing required parameter: 'item.output'.", ev, "item.output")
        elif not isinstance(output, str):
            self._error("invalid_type", "Invalid type for 'item.output': expected a string.", ev, "item.output")
        else:
            return True
        return False

    def _on_item_retrieve(self, ev: Event, now: float) -> None:
        item_id = ev.get("item_id")
        item = self.items.get(item_id) if isinstance(item_id, str) else None
        if item is None:
            self._error("item_not_found", f"Item with id '{ev.get('item_id')}' not found.", ev, "item_id")
            return
        self._emit({"type": "conversation.item.retrieved", "item": copy.deepcopy(item)})

    def _on_item_delete(self, ev: Event, now: float) -> None:
        item_id = ev.get("item_id")
        if not isinstance(item_id, str) or item_id not in self.items:
            self._error("item_not_found", f"Item with id '{item_id}' not found.", ev, "item_id")
            return
        del self.items[item_id]
        self._assistant_audio.pop(item_id, None)
        self._emit({"type": "conversation.item.deleted", "item_id": item_id})

    def _on_ignored(self, ev: Event, now: float) -> None:
        """Accepted without a reply (input_text.*: text streaming into a user item)."""

    _HANDLERS: dict[str, Callable[[SimProtocol, Event, float], None]] = {
        "session.update": _on_session_update,
        "input_audio_buffer.commit": _on_commit,
        "input_audio_buffer.clear": _on_input_clear,
        "output_audio_buffer.clear": _on_output_clear,
        "conversation.item.create": _on_item_create,
        "conversation.item.retrieve": _on_item_retrieve,
        "conversation.item.truncate": _on_truncate,
        "conversation.item.delete": _on_item_delete,
        "response.create": _on_response_create,
        "response.cancel": _on_response_cancel,
        "input_text.delta": _on_ignored,
        "input_text.done": _on_ignored,
    }

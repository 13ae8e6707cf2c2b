"""A softphone: places a call through the gateway exactly the way a phone carrier does.

Each carrier's phone lives in its package (``gateway.carriers.<name>.phone``); what they share is
here:

* :mod:`~gateway.softphone.script`: the caller's steps (:class:`Say`, :class:`Silence`,
  :class:`Dtmf`, :class:`WaitForBot`, :class:`Hangup`, :class:`Reconnect`);
* :mod:`~gateway.softphone.session`: one call over an open media socket, in real time: the
  script, playback of what the gateway sends, protocol checks counted as violations;
* :mod:`~gateway.softphone.playout`: the pure playback queue;
* :mod:`~gateway.softphone.report`: the :class:`CallReport` (both sides of the call on one
  timeline, which :func:`write_call_wav` turns into a stereo WAV file) and its lines for humans;
* :mod:`~gateway.softphone.cli`: ``gateway call`` (smoke test of a deployment).

Used by ``gateway call``, ``gateway demo`` and the socket-level tests.
"""

from gateway.softphone.cli import register_cli, run_call_command
from gateway.softphone.playout import Playout
from gateway.softphone.report import (
    CallError,
    CallRejected,
    CallReport,
    call_failures,
    describe_event,
    summarize,
    write_call_wav,
)
from gateway.softphone.script import DTMF_DIGITS, Dtmf, Hangup, Reconnect, Say, Silence, Step, WaitForBot
from gateway.softphone.session import FRAME_MS, EventCallback

__all__ = [
    "DTMF_DIGITS",
    "FRAME_MS",
    "CallError",
    "CallRejected",
    "CallReport",
    "Dtmf",
    "EventCallback",
    "Hangup",
    "Playout",
    "Reconnect",
    "Say",
    "Silence",
    "Step",
    "WaitForBot",
    "call_failures",
    "describe_event",
    "register_cli",
    "run_call_command",
    "summarize",
    "write_call_wav",
]

"""``gateway simulator``: the command line of the local Voice Live simulator (and of its lean
benchmark mode)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from typing import Any

from gateway.log import get_logger
from gateway.simulator.settings import SimulatorSettings, ToolCall

SCENARIOS = ("steady", "burst", "barge-storm", "talk")  # the benchmark's (gateway.simulator.bench)


def _log(**fields: Any) -> Any:
    # Resolved at each use, never at import (see gateway.simulator.server).
    return get_logger("simulator", **fields)


def register_cli(subparsers: Any) -> None:
    """Add ``gateway simulator`` to an argparse subparsers object."""
    p = subparsers.add_parser(
        "simulator",
        help="run the local Voice Live-compatible simulator",
        description="Run a local Voice Live-compatible realtime server at /voice-live/realtime. "
        "Point a client (or the gateway, with AZURE_VOICELIVE_ENDPOINT) at the printed endpoint.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port to listen on (default: 8765)")
    p.add_argument("--api-key", default=None, help="require this api-key (default: no authentication)")
    p.add_argument(
        "--output-buffer-clear",
        choices=("auto", "ack", "error", "ignore"),
        default="auto",
        help="answer to output_audio_buffer.clear: auto (the documented behaviour: "
        "output_audio_buffer.cleared on avatar sessions, an error otherwise), or always ack, error or "
        "ignore (default: auto)",
    )
    p.add_argument(
        "--audio-speed",
        type=float,
        default=4.0,
        help="stream reply audio this many times faster than real time (default: 4)",
    )
    p.add_argument(
        "--response-delay-ms",
        type=int,
        default=300,
        help="delay between the end of a caller turn and the response (default: 300)",
    )
    p.add_argument(
        "--setup-delay-ms",
        type=int,
        default=0,
        help="answer each session's WebSocket upgrade this long after it is asked for, like a service "
        "far away (default: 0)",
    )
    p.add_argument(
        "--max-connections-per-minute",
        type=int,
        default=None,
        metavar="N",
        help="refuse a session's upgrade with HTTP 429 and Retry-After once N were accepted in the last 60 "
        "seconds, as Voice Live does beyond a resource's connections per minute; GET /stats counts the "
        "upgrades accepted and refused (default: no limit)",
    )
    p.add_argument(
        "--tool-call",
        dest="tool_calls",
        action="append",
        type=parse_tool_call,
        metavar="TURN:NAME[:JSON_ARGS]",
        help="answer caller turn TURN (1: the first) with a call of function NAME, with the JSON "
        "object JSON_ARGS as arguments (default: {}); the session must declare the function. "
        "Repeatable, e.g. --tool-call '1:lookup_order:{\"order\": \"42\"}'",
    )
    bench = p.add_argument_group("benchmark mode (a lean Voice Live for load tests: no VAD, a scripted "
                                 "conversation)")
    bench.add_argument("--bench", action="store_true", help="run the lean benchmark mode")
    bench.add_argument("--scenario", choices=SCENARIOS, default="steady",
                       help="steady: each session's caller turns and replies on its own phase; burst: every "
                       "session's replies start at the same instant; barge-storm: as burst, and every session "
                       "is barged into at once; talk: the caller talks without pause (never committed, no "
                       "reply) (default: %(default)s)")
    bench.add_argument("--reply-every", type=float, default=4.0, metavar="S", help="a reply every S seconds")
    bench.add_argument("--reply-ms", type=int, default=2000, help="length of each reply")
    bench.add_argument("--delta-ms", type=int, default=None,
                       help="audio per response.audio.delta (default: 400 with --scenario burst or barge-storm, "
                       "else 240)")
    bench.add_argument("--speech-ms", type=int, default=1200,
                       help="each caller turn: speech_started to speech_stopped and committed (default: 1200)")
    bench.add_argument("--barge-in-every", type=int, default=3, metavar="N",
                       help="interrupt every Nth reply (0: never)")
    bench.add_argument("--barge-in-after-ms", type=int, default=300,
                       help="the barge-in's speech_started comes this long after the reply's first audio "
                       "(default: 300)")
    bench.add_argument("--barge-in-spread-ms", type=int, default=0,
                       help="each barge-in comes up to half this earlier or later, at random per reply "
                       "(default: 0, every one exactly --barge-in-after-ms)")
    bench.add_argument("--turns", action="store_true",
                       help="answer the caller's turns instead of replying every S seconds: a lean energy "
                       "VAD ends a turn after the session's silence_duration_ms, and the reply follows "
                       "--response-delay-ms later (the end-to-end latency run)")
    p.set_defaults(func=_run_cli)


def _run_bench(args: argparse.Namespace) -> int:
    from aiohttp import web

    from gateway.simulator.bench import BenchSettings, create_bench_app

    try:
        delta_ms = args.delta_ms or (400 if args.scenario in ("burst", "barge-storm") else 240)
        settings = BenchSettings(reply_every_s=args.reply_every, reply_ms=args.reply_ms,
                                 barge_in_every=args.barge_in_every, speed=args.audio_speed,
                                 turns=args.turns, response_delay_ms=args.response_delay_ms,
                                 scenario=args.scenario, delta_ms=delta_ms, speech_ms=args.speech_ms,
                                 barge_in_after_ms=args.barge_in_after_ms,
                                 barge_in_spread_ms=args.barge_in_spread_ms)
    except ValueError as exc:
        _log().error("benchmark settings are invalid", error=str(exc))
        return 2
    _log().info("benchmark Voice Live listening", host=args.host, port=args.port)
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    # a deep listen backlog: a step of thousands of calls opens its sessions within seconds
    web.run_app(create_bench_app(settings), host=args.host, port=args.port, print=None, access_log=None, backlog=4096,
                loop=loop_factory() if loop_factory else None)
    return 0


def parse_tool_call(text: str) -> tuple[int, ToolCall]:
    """``TURN:NAME[:JSON_ARGS]`` (the ``--tool-call`` option) as (turn, ToolCall)."""
    turn_text, _, rest = text.partition(":")
    name, _, args_text = rest.partition(":")
    try:
        turn = int(turn_text)
    except ValueError:
        turn = 0
    if turn < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: TURN must be a caller turn number from 1")
    if not name:
        raise argparse.ArgumentTypeError(f"{text!r}: expected TURN:NAME[:JSON_ARGS], NAME is missing")
    arguments: Any = {}
    if args_text:
        try:
            arguments = json.loads(args_text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: JSON_ARGS is not valid JSON ({exc})") from None
    if not isinstance(arguments, dict):
        raise argparse.ArgumentTypeError(f"{text!r}: JSON_ARGS must be a JSON object")
    try:
        return turn, ToolCall(name, arguments)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def settings_from_args(args: argparse.Namespace) -> SimulatorSettings:
    """The settings ``gateway simulator`` runs with; ValueError if they are invalid."""
    tool_calls: dict[int, ToolCall] = {}
    for turn, call in getattr(args, "tool_calls", None) or []:
        if turn in tool_calls:
            raise ValueError(f"--tool-call: turn {turn} is scripted twice")
        tool_calls[turn] = call
    return SimulatorSettings(
        api_key=args.api_key or None,
        output_buffer_clear=args.output_buffer_clear,
        audio_speed=args.audio_speed,
        response_delay_ms=args.response_delay_ms,
        setup_delay_ms=args.setup_delay_ms,
        max_connections_per_minute=getattr(args, "max_connections_per_minute", None),
        tool_calls=tool_calls,
        record=False,
    )


def _run_cli(args: argparse.Namespace) -> int:
    if getattr(args, "bench", False):
        return _run_bench(args)
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        _log().error("simulator settings are invalid", error=str(exc))
        return 2
    try:
        return asyncio.run(_serve(settings, args.host, args.port))
    except KeyboardInterrupt:
        return 0


async def _serve(settings: SimulatorSettings, host: str, port: int) -> int:
    # Imported here: the server module re-exports this module's functions.
    from gateway.simulator.server import start_simulator

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        sim = await start_simulator(settings, host, port)
    except OSError as exc:
        _log().error("simulator cannot listen", host=host, port=port, error=str(exc))
        return 1
    async with sim:
        _log().info(
            "simulator listening",
            endpoint=sim.endpoint,
            url=sim.ws_url,
            auth="api-key" if settings.api_key else "none",
            audio_speed=settings.audio_speed,
            max_connections_per_minute=settings.max_connections_per_minute,
            tool_calls={turn: call.name for turn, call in sorted(settings.tool_calls.items())} or None,
        )
        await stop.wait()
        _log().info("simulator stopping", open_sessions=len(sim.state.active))
    return 0

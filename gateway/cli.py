"""Command line: gateway serve | demo | call | dial | simulator | check-config."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from gateway import __version__, log

T = TypeVar("T")


def _load(path: str):  # -> GatewayConfig, or exits with the config's own error text
    from gateway.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None


def run_fast(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop where it is installed (faster sockets), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _cmd_serve(args: argparse.Namespace) -> int:
    from gateway.app import serve

    # until the gateway listens for it, a SIGHUP (reload the configuration) must not end the process:
    # the configuration is read below, as it is now
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    config = _load(args.config)
    refusal = config.simulator_refusal()
    if refusal is not None:
        print(f"{config.source}: not starting: {refusal}", file=sys.stderr)
        return 2
    if args.workers > 1 and config.gateway.signing_key is None and "GATEWAY_SIGNING_KEY" not in \
            config._env_refs.get("gateway.signing_key", ()):
        print(f"{config.source}: not starting {args.workers} workers: gateway.signing_key is not set and does not "
              "read GATEWAY_SIGNING_KEY, so each worker would sign call tokens with its own key and refuse the "
              "others' calls; write signing_key: ${GATEWAY_SIGNING_KEY:-}", file=sys.stderr)
        return 2
    if args.workers > 1 and config.gateway.api_token is not None:
        print(f"{config.source}: not starting {args.workers} workers: the outbound-call API is on "
              "(gateway.api_token), and a placed call's state, its media stream and its carrier's "
              "answering-machine callbacks must all reach the worker that placed it; run one worker "
              "per replica for the API", file=sys.stderr)
        return 2
    if args.workers > 1:
        from gateway.workers import supervise

        return supervise(args.workers, [sys.executable, "-m", "gateway", *sys.argv[1:]])
    run_fast(serve(config, args.host, args.port, reuse_port=args.reuse_port, reload_from=config.source))
    return 0


def _cmd_check_config(args: argparse.Namespace) -> int:
    from gateway.config import describe

    if args.diff is not None:
        if args.path is not None:
            print("gateway check-config: give one config file, or --diff OLD NEW, not both", file=sys.stderr)
            return 2
        return _check_config_diff(*args.diff)
    print(describe(_load(args.path or "config.yaml")))
    return 0


def _check_config_diff(old_path: str, new_path: str) -> int:
    """``check-config --diff OLD NEW``: both files validated as check-config validates one, then what
    the new one changes. Exit code 1 when either file is not valid (its problems on standard error)."""
    from gateway.config import ConfigError, GatewayConfig, load_config
    from gateway.config.diff import config_diff, format_diff

    configs: list[GatewayConfig] = []
    for which, path in (("old", old_path), ("new", new_path)):
        try:
            configs.append(load_config(path))
        except ConfigError as exc:
            print(f"{path}: the {which} configuration is not valid:", file=sys.stderr)
            print(exc, file=sys.stderr)
    if len(configs) < 2:
        return 1
    print(format_diff(config_diff(*configs)))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.console:
        from gateway.demo import run_console_demo

        return asyncio.run(run_console_demo(config_path=args.config, port=args.port))
    from gateway.demo import run_demo

    return asyncio.run(run_demo(record=args.record, config_path=args.config))


def _cmd_replay(args: argparse.Namespace) -> int:
    if args.sockets:
        from gateway.replay_live import replay_files_live

        return asyncio.run(replay_files_live(args.fixtures, speed=args.speed))
    from gateway.replay import replay_files

    return replay_files(args.fixtures, update=args.update)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="Telephony gateway: phone calls from carriers' media streams bridged to Azure AI "
        "Voice Live.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default=None,
                        help="log level (default: $GATEWAY_LOG_LEVEL or info)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the gateway")
    p.add_argument("--config", default="config.yaml", help="config file (default: ./config.yaml)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default: 0.0.0.0)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080)")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes sharing the port (SO_REUSEPORT), to use every core (default: 1)")
    p.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # set for each worker
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("demo", help="run a simulated phone call through the gateway and the built-in "
                       "Voice Live simulator, print its timeline and write a WAV file of it")
    p.add_argument("--record", default="demo-call.wav", help="WAV file to write (default: demo-call.wav)")
    p.add_argument("--config", default=None,
                   help="config file for the gateway (default: the shipped config.yaml if present)")
    from gateway.console.routes import phone_carrier

    # the console's phone is a carrier of its own: the option also goes by that carrier's name
    phone = phone_carrier()
    p.add_argument("--console", *([f"--{phone}"] if phone else []), dest="console", action="store_true",
                   help="instead of the scripted call: run the gateway on the built-in simulator with its console "
                   "on 127.0.0.1, print the console's address and login token, and run until Ctrl-C: call a "
                   "profile from the microphone of a web page, and watch the calls")
    p.add_argument("--port", type=int, default=0,
                   help="with --console: the port to listen on, on 127.0.0.1 (default: a free one)")
    p.set_defaults(func=_cmd_demo, default_log_level="warning")

    from gateway.softphone import register_cli as register_call

    register_call(sub)

    from gateway.dial import register_cli as register_dial

    register_dial(sub)

    from gateway.simulator import register_cli as register_simulator

    register_simulator(sub)

    p = sub.add_parser("replay", help="replay recorded calls and compare what the gateway sends now",
                       description="Feed each recorded call's inbound messages (phone and Voice Live) into a "
                       "fresh call with the recorded timestamps, compare what the gateway sends now with what "
                       "it sent then, and check the invariants every call must keep. Exit code 0: all pass.")
    p.add_argument("fixtures", nargs="+", metavar="FIXTURE", help="call recordings (.jsonl)")
    p.add_argument("--update", action="store_true",
                   help="rewrite the expected output of fixtures that differ (after an intended change)")
    p.add_argument("--sockets", action="store_true",
                   help="replay over real sockets: the phone leg against a gateway on a loopback port, "
                   "a replay server standing in for Voice Live")
    p.add_argument("--speed", type=float, default=1.0, help="with --sockets: play this many times faster "
                   "than real time (default 1)")
    p.set_defaults(func=_cmd_replay, default_log_level="error")

    p = sub.add_parser("check-config", help="validate a config file and show what each phone number gets")
    p.add_argument("path", nargs="?", default=None, help="config file (default: ./config.yaml)")
    p.add_argument("--diff", nargs=2, metavar=("OLD", "NEW"), default=None,
                   help="instead: validate both files and print what changing OLD for NEW does (profiles, routes "
                   "and settings added, removed or changed; secrets only as set, unset or changed)")
    p.set_defaults(func=_cmd_check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        log.configure(level=args.log_level or getattr(args, "default_log_level", None))
    except ValueError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130

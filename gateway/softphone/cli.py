"""``gateway call``: place a test call through a gateway, the way a carrier does.

The command names no carrier. Every carrier's phone module (``gateway.carriers.registry.phones()``)
is a :class:`Phone`: it adds its own arguments (among them the URL that asks for its kind of call),
says which URL it was asked to call, and places the call.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from gateway.audio import WavError, load_ulaw_8k
from gateway.softphone.report import (
    DEFAULT_BYTES_PER_MS,
    CallError,
    CallRejected,
    CallReport,
    call_failures,
    describe_event,
    summarize,
)
from gateway.softphone.script import Hangup, Say, Step, WaitForBot
from gateway.softphone.session import EventCallback


@runtime_checkable
class Phone(Protocol):
    """What ``gateway call`` asks of a carrier's phone module (module-level names and functions)."""

    NAME: str  # the carrier, as the command's help names it
    CLI_DESCRIPTION: str  # how it places a call: "the way … does: …", for the command's description
    URL_NAME: str  # its URL argument, for "give either … or …, not both"
    URL_HINT: str  # its URL argument, for "no URL: give …"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add its URL argument and its own options to the command."""

    def call_url(self, args: argparse.Namespace) -> str | None:
        """The URL of the call it was asked to place, or None when the arguments ask for another carrier."""

    def misused_options(self, args: argparse.Namespace) -> str | None:
        """Why its options were given when another carrier's call is placed, or None."""

    def place_from_args(
        self, args: argparse.Namespace, url: str, steps: list[Step], printer: Callable[[int], EventCallback]
    ) -> CallReport:
        """Place the call (``printer(bytes_per_ms)``: what prints its events); CallError on bad options."""


def carrier_phones() -> list[Phone]:
    """Every carrier's phone module, in the order the application lists the carriers."""
    from gateway.carriers.registry import phones

    found: list[Phone] = []
    for module in phones():
        if not isinstance(module, Phone):
            raise TypeError(f"{module.__name__} is not a softphone module (see gateway.softphone.cli.Phone)")
        found.append(module)
    return found


def register_cli(subparsers: Any) -> None:
    """Add ``gateway call`` to an argparse subparsers object."""
    phones = carrier_phones()
    parser = subparsers.add_parser(
        "call",
        help=f"place a test call through a gateway, like {' or '.join(phone.NAME for phone in phones)} does",
        description=(
            "Place a call through the gateway " + "; or, ".join(phone.CLI_DESCRIPTION for phone in phones) + ". "
            "Play each --play file as one caller turn "
            "and wait for the bot's answer after each, then hang up. Exit code 0: the call went well; "
            "1: the gateway refused the call, broke the protocol, closed the call abnormally or the bot "
            "did not answer; 2: the call could not be placed."
        ),
    )
    parser.add_argument(
        "--play", action="append", default=[], metavar="FILE.wav", help="a caller turn (any WAV file)"
    )
    parser.add_argument("--record", metavar="OUT.wav", help="write the call as a stereo WAV (caller, bot)")
    parser.add_argument(
        "--greeting-wait", type=float, default=3.0, metavar="S",
        help="before the first --play turn, listen this long for the bot to start a greeting "
        "(0: speak at once; default 3)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, metavar="S",
        help="seconds to wait for each bot answer (default %(default)s)",
    )
    from gateway.carriers.registry import carrier_names

    parser.add_argument(
        "url", nargs="?",
        help="the call's webhook (http(s)://) or media socket (ws(s)://), as the carrier named by --carrier "
        "answers them",
    )
    parser.add_argument(
        "--carrier", choices=carrier_names(), metavar="NAME",
        help="whose call the positional URL is: " + ", ".join(carrier_names()) + f" (default: {carrier_names()[0]})",
    )
    parser.add_argument("--to", metavar="NUMBER", help="the called number, as the carrier gives it to the gateway "
                        "(routes choose the profile by it; default: the phone's own test number)")
    parser.add_argument("--from", dest="from_", metavar="NUMBER",
                        help="the caller's number, where the carrier gives one")
    for phone in phones:
        phone.add_arguments(parser)
    parser.set_defaults(func=run_call_command)


def positional_url(args: argparse.Namespace, carrier: str) -> str | None:
    """The positional URL of ``gateway call`` when it is ``carrier``'s call (``--carrier``; the first
    carrier's when none is named), else None."""
    from gateway.carriers.registry import carrier_names

    url: str | None = getattr(args, "url", None)
    if not url or (getattr(args, "carrier", None) or carrier_names()[0]) != carrier:
        return None
    return url


def _print_event(
    t_ms: float, kind: str, fields: dict[str, Any], *, bytes_per_ms: int = DEFAULT_BYTES_PER_MS
) -> None:
    print(f"{t_ms:7.0f} ms  {describe_event(kind, fields, bytes_per_ms=bytes_per_ms)}", flush=True)


def _printer(bytes_per_ms: int) -> EventCallback:
    """Prints the events of a call whose audio has ``bytes_per_ms``."""
    return functools.partial(_print_event, bytes_per_ms=bytes_per_ms)


def _place_from_args(args: argparse.Namespace, steps: list[Step]) -> CallReport:
    phones = carrier_phones()
    asked = [(phone, url) for phone in phones if (url := phone.call_url(args))]
    if len(asked) > 1:
        raise CallError(f"give either {' or '.join(phone.URL_NAME for phone, _ in asked)}, not both")
    if not asked:
        raise CallError("no URL: give " + ", or ".join(phone.URL_HINT for phone in phones))
    phone, url = asked[0]
    for other in phones:
        if other is not phone and (problem := other.misused_options(args)):
            raise CallError(problem)
    return phone.place_from_args(args, url, steps, _printer)


def run_call_command(args: argparse.Namespace) -> int:
    """``gateway call``: see :func:`register_cli`."""
    try:
        steps: list[Step] = []
        if args.play and args.greeting_wait > 0:  # listen for a greeting before speaking
            steps.append(WaitForBot(timeout_s=args.timeout, optional=True, start_timeout_s=args.greeting_wait))
        for path in args.play:
            try:
                audio = load_ulaw_8k(path)
            except (OSError, WavError) as exc:
                raise CallError(f"cannot read --play file {path}: {exc}") from None
            steps += [Say(audio, label=Path(path).name), WaitForBot(timeout_s=args.timeout)]
        if not steps:
            steps = [WaitForBot(timeout_s=args.timeout)]  # listen to the greeting
        steps.append(Hangup())
        report = _place_from_args(args, steps)
    except CallRejected as exc:
        print(f"gateway call: {exc}", file=sys.stderr)
        return 1
    except (CallError, OSError) as exc:
        print(f"gateway call: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gateway call: interrupted", file=sys.stderr)
        return 2
    for line in summarize(report):
        print(line)
    if args.record:
        print(f"recorded to {args.record}")
    failures = call_failures(report)
    if failures:
        print("FAILED: " + "; ".join(failures))
        return 1
    return 0

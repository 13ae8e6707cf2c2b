"""A burst of calls within Voice Live's connection budget.

100 Twilio calls arrive within 10 seconds at a gateway whose Voice Live resource allows 30 new
connections per minute. The Voice Live stand-in (``gateway simulator --max-connections-per-minute
30``, a separate process that knows nothing of the gateway's budget) refuses every upgrade beyond 30
in a rolling minute with HTTP 429, as the service does, and counts what it accepted and refused.

Each call does what Twilio does: it posts the voice webhook (signed); a ``<Say>`` answer is what the
caller hears before Twilio hangs up; a ``<Connect><Stream>`` answer opens the media socket
(:func:`gateway.carriers.twilio.phone.place_call`), where the caller listens to the greeting, says
something (a shipped caller clip), waits for the bot's answer and hangs up. When the media stream has
closed, Twilio asks the ``<Connect action>`` what next: a ``<Say>`` there is what a caller whose call
the gateway ended hears. Every call is classified by what its caller heard:

- **talked**: bot audio played at the phone (the greeting and, with ``--talk full``, the answer to
  what the caller said);
- **busy**: the profile's busy message, from the voice webhook (no budget when the call came) or
  from the ``<Connect action>`` after the media stream (the call found none when it connected);
- **failed**: anything else (an error, the apology, silence, no answer, a refused socket).

The run passes when no call failed and the stand-in refused nothing (every connect the gateway made
was within the budget). Results go to ``bench/results/<name>.json`` and a summary is printed.

    python bench/burst.py                                    # 100 calls in 10 s, budget 30, one worker
    python bench/burst.py --workers 2 --name burst-workers-2 # each worker keeps half the budget
    python bench/burst.py --workers 2 --redis --name burst-workers-2-redis   # one budget in Redis
    python bench/burst.py --calls 6 --budget 3 --within 1 --talk greeting --out /tmp/b   # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

if __package__ in (None, ""):  # run as a script: the project's root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    Answer,
    Gateway,
    free_port,
    gateway_config,
    get_text,
    metric_values,
    new_call,
    processes,
    start_gateway,
    start_redis,
    start_standin,
    stream_ended,
    voice_webhook,
    wait_http,
)
from gateway.audio import ASSETS, load_ulaw_8k
from gateway.carriers.twilio.phone import place_call
from gateway.softphone import CallError, Hangup, Say, WaitForBot

BUSY_MESSAGE = "All our lines are busy right now. Please call again in a minute."



@dataclass
class CallResult:
    index: int
    arrival_s: float  # when the webhook was posted, from the burst's start
    outcome: str = "failed"  # talked, busy, failed
    heard: str = "nothing"  # bot, busy message, apology, nothing
    where: str | None = None  # busy: webhook or media
    detail: str = ""
    bot_ms: float = 0.0  # bot audio played at the phone
    first_bot_audio_ms: float | None = None  # from the media socket's opening (start) to the first bot audio played
    events: list[str] = field(default_factory=list)
    asked_again: list[str] = field(default_factory=list)  # diagnosis: the <Connect action> asked again


def classify_say(result: CallResult, answer: Answer, where: str) -> None:
    """A ``<Say>`` the caller heard from Twilio."""
    if answer.say == BUSY_MESSAGE:
        result.outcome, result.heard, result.where = "busy", "busy message", where
    else:
        result.heard = "apology" if answer.say else "nothing"
        result.detail = f"{where}: TwiML {answer.verbs} says {answer.say!r}"


async def one_call(index: int, at: float, t0: float, gateway: Gateway, steps: list[Any], full: bool) -> CallResult:
    await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
    result = CallResult(index, round(time.monotonic() - t0, 3))
    call_sid, account_sid = new_call()
    # a new connection per request, as Twilio's come (with several workers each may land on another)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        try:
            answer = await voice_webhook(http, gateway, call_sid, account_sid)
        except (RuntimeError, ValueError, aiohttp.ClientError) as exc:
            result.detail = f"voice webhook: {exc}"
            return result
        if answer.stream_url is None:
            classify_say(result, answer, "webhook")
            return result
        moments: list[tuple[float, str]] = []
        try:
            report = await place_call(answer.stream_url, steps, params=answer.parameters, call_sid=call_sid,
                                      auth_token=gateway.auth_token,
                                      on_event=lambda t, kind, _f: moments.append((t, kind)))
        except CallError as exc:
            result.detail = f"media: {exc}"
            return result
        result.events = [kind for _, kind in moments if kind != "violation"]
        result.bot_ms = report.played_bytes / 8
        result.first_bot_audio_ms = next((round(t, 1) for t, kind in moments if kind == "bot_audio_start"), None)
        try:
            after = await stream_ended(http, gateway, call_sid, account_sid)
            if report.played_bytes == 0 and after.say is None:
                # a diagnosis only (Twilio asks once, and the outcome stays what this answer says): would
                # another request, which may land on another worker, have been answered otherwise?
                for _ in range(4):
                    again = await stream_ended(http, gateway, call_sid, account_sid)
                    result.asked_again.append(again.say or " ".join(again.verbs))
        except (RuntimeError, ValueError, aiohttp.ClientError) as exc:
            result.detail = f"<Connect action>: {exc}"
            return result
    speech_end = next((t for t, kind in moments if kind == "speech_end"), None)
    answered = speech_end is not None and any(kind == "bot_audio_start" and t > speech_end for t, kind in moments)
    if report.played_bytes > 0:
        result.heard = "bot"
        problems = [kind for kind in ("wait_timeout", "closed_by_gateway") if kind in result.events]
        if full and not answered:
            problems.append("no answer to the caller")
        if report.violations:
            problems.append(f"{report.violations} protocol violation(s)")
        if problems:
            result.detail = "media: " + ", ".join(problems)
        else:
            result.outcome = "talked"
        return result
    if after.say is not None:
        classify_say(result, after, "media")
        return result
    result.detail = (f"media: no bot audio, closed by the {report.closed_by}; "
                     f"the <Connect action> answered {after.verbs}")
    if result.asked_again:
        result.detail += f" (asked again 4 times: {result.asked_again})"
    return result


def arrivals(calls: int, within_s: float, spread: str, seed: int) -> list[float]:
    if spread == "even":
        return [i * within_s / calls for i in range(calls)]
    rng = random.Random(seed)
    return sorted(rng.uniform(0.0, within_s) for _ in range(calls))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    logs = out / "logs" / args.name
    caller = load_ulaw_8k(ASSETS / "caller_hours.wav")
    full = args.talk == "full"
    steps: list[Any] = ([WaitForBot(timeout_s=15), Say(caller, "caller_hours"), WaitForBot(timeout_s=20), Hangup()]
                        if full else [WaitForBot(heard_ms=200, timeout_s=15), Hangup()])
    prewarm = {"auto": "auto", "on": "true", "off": "false"}[args.prewarm]
    config = gateway_config(budget=args.budget, prewarm=prewarm, busy=BUSY_MESSAGE)
    with processes(logs) as procs:
        standin = start_standin(procs, free_port(), setup_delay_ms=args.setup_delay_ms,
                                max_connections_per_minute=args.standin_limit or args.budget)
        redis_url = start_redis(procs, free_port()) if args.redis else None
        gateway = start_gateway(procs, config, free_port(), standin, workers=args.workers, redis_url=redis_url)
        await wait_http(standin + "/healthz")
        await wait_http(gateway.base + "/healthz")
        await asyncio.sleep(1.0 if args.workers > 1 else 0.2)  # every worker up (one answered already)
        times = arrivals(args.calls, args.within, args.spread, args.seed)
        t0 = time.monotonic()
        results = await asyncio.gather(*(one_call(i, at, t0, gateway, steps, full) for i, at in enumerate(times)))
        elapsed = time.monotonic() - t0
        stats = json.loads(await get_text(standin + "/stats"))["connections"]
        gateway_metrics = metric_values(await get_text(gateway.base + "/metrics"))
        dead = procs.dead()
    talked = [r for r in results if r.outcome == "talked"]
    busy = [r for r in results if r.outcome == "busy"]
    failed = [r for r in results if r.outcome == "failed"]
    summary: dict[str, Any] = {
        "name": args.name,
        "setup": {"calls": args.calls, "within_s": args.within, "spread": args.spread, "seed": args.seed,
                  "budget_per_minute": args.budget, "standin_limit_per_minute": args.standin_limit or args.budget,
                  "workers": args.workers, "redis": bool(args.redis), "prewarm": args.prewarm,
                  "setup_delay_ms": args.setup_delay_ms, "talk": args.talk},
        "calls": len(results),
        "talked": len(talked),
        "busy": len(busy),
        "busy_at_webhook": sum(1 for r in busy if r.where == "webhook"),
        "busy_at_media": sum(1 for r in busy if r.where == "media"),
        "failed": len(failed),
        "heard": {h: sum(1 for r in results if r.heard == h) for h in sorted({r.heard for r in results})},
        "failures": [f"call {r.index} at {r.arrival_s:.2f} s: heard {r.heard}; {r.detail}" for r in failed],
        "standin": {"accepted": stats["accepted"], "refused_429": stats["refused"],
                    "most_accepted_in_any_60s": stats["most_in_any_minute"],
                    "limit_per_minute": stats["limit_per_minute"]},
        "gateway_metrics": gateway_metrics,
        "seconds": round(elapsed, 1),
        "exited_early": dead,
        "per_call": [asdict(r) for r in results],
    }
    limit = summary["standin"]["limit_per_minute"]
    summary["passed"] = (not failed and stats["refused"] == 0 and stats["most_in_any_minute"] <= limit and not dead)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=100)
    p.add_argument("--within", type=float, default=10.0, metavar="S", help="the calls arrive within S seconds")
    p.add_argument("--spread", choices=("even", "random"), default="even",
                   help="arrivals evenly spaced or uniform at random")
    p.add_argument("--seed", type=int, default=1, help="the random arrivals' seed")
    p.add_argument("--budget", type=int, default=30,
                   help="the gateway's connections_per_minute (and the stand-in's limit)")
    p.add_argument("--standin-limit", type=int, default=None, help="the stand-in's own limit (default: the budget)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--redis", action="store_true", help="GATEWAY_REDIS_URL at a redis-server this run starts")
    p.add_argument("--prewarm", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--setup-delay-ms", type=int, default=300, help="the stand-in's session set-up time")
    p.add_argument("--talk", choices=("full", "greeting"), default="full",
                   help="full: greeting, a question, the answer; greeting: 200 ms of the greeting, then hang up")
    p.add_argument("--name", default="burst")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args(argv)
    summary = asyncio.run(run(args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    s = summary["standin"]
    print(f"{summary['name']}: {summary['calls']} calls in {args.within:g} s, budget {args.budget}/min, "
          f"{args.workers} worker(s){' + Redis' if args.redis else ''}: {summary['talked']} talked, "
          f"{summary['busy']} busy ({summary['busy_at_webhook']} at the webhook, {summary['busy_at_media']} "
          f"after the media), {summary['failed']} failed; stand-in accepted {s['accepted']}, refused "
          f"{s['refused_429']} (429), most in any 60 s {s['most_accepted_in_any_60s']}; "
          f"{'PASSED' if summary['passed'] else 'FAILED'} ({summary['seconds']} s)")
    for line in summary["failures"][:20]:
        print("  " + line)
    if summary["exited_early"]:
        print("  exited early: " + ", ".join(summary["exited_early"]))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

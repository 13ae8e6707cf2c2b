"""Pre-warmed sessions: how soon the caller hears the greeting after the media stream starts.

The Voice Live stand-in (``gateway simulator --setup-delay-ms 800``) takes 800 ms to accept a
session, like a service far away. The gateway (``gateway serve``, one worker) greets every call. Each
call is a Twilio call: the voice webhook (signed), then the media socket, on which the phone sends
``connected`` and ``start`` and then a 20 ms frame of µ-law silence every 20 ms. The figure is the
time from sending ``start`` to the first ``media`` message of bot audio arriving at the phone (over
loopback, what the gateway sent a fraction of a millisecond earlier), measured on one clock by the
phone. Three ways of calling, each against a fresh gateway and stand-in:

- ``ahead``: pre-warm on, the media socket opened ``--lead-ms`` (1500) after the webhook answered,
  so the warm session has been set up and its greeting is waiting;
- ``at-once``: pre-warm on, the media socket opened as soon as the webhook answered (what a real
  carrier does: the warm session has a head start of the socket's set-up only);
- ``no-prewarm``: pre-warm off: the session opens when the media socket's ``start`` arrives.

Calls run one after another (``--overlap N``: N at a time). Results go to ``bench/results/<name>.json``
and a summary is printed (p50, p95, max in ms).

    python bench/prewarm.py                          # 20 calls per way
    python bench/prewarm.py --calls 3 --out /tmp/p   # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

if __package__ in (None, ""):  # run as a script: the project's root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    Gateway,
    free_port,
    gateway_config,
    get_text,
    metric_values,
    new_call,
    percentiles,
    processes,
    start_gateway,
    start_standin,
    voice_webhook,
    wait_http,
)
from gateway.carriers.twilio.phone import new_sid, twilio_signature

TARGET_MS = 50.0
SILENCE = base64.b64encode(b"\xff" * 160).decode("ascii")  # 20 ms of µ-law silence
WAYS = {  # name: (pre-warm, lead from the webhook's answer to the media socket, in ms; None: --lead-ms)
    "ahead": (True, None),
    "at-once": (True, 0),
    "no-prewarm": (False, 0),
}


async def first_audio_ms(gateway: Gateway, stream_url: str, parameters: dict[str, str], call_sid: str,
                         timeout_s: float) -> float:
    """Open the media socket as Twilio does; ms from sending ``start`` to the first bot audio received."""
    headers = {"X-Twilio-Signature": twilio_signature(gateway.auth_token, stream_url)}
    stream_sid = new_sid("MZ")
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http, \
            http.ws_connect(stream_url, headers=headers) as ws:
        seq = 0

        def message(event: str, body: dict[str, Any]) -> str:
            nonlocal seq
            seq += 1
            return json.dumps({"event": event, "sequenceNumber": str(seq), "streamSid": stream_sid, **body})

        await ws.send_str(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        start = message("start", {"start": {
            "streamSid": stream_sid, "accountSid": new_sid("AC"), "callSid": call_sid, "tracks": ["inbound"],
            "customParameters": parameters,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})
        t_start = loop.time()
        await ws.send_str(start)

        async def frames() -> None:  # the caller's silence, one frame every 20 ms, as a phone sends it
            k = 0
            while True:
                k += 1
                await asyncio.sleep(max(0.0, t_start + k * 0.02 - loop.time()))
                await ws.send_str(message("media", {"media": {"track": "inbound", "chunk": str(k),
                                                               "timestamp": str(k * 20), "payload": SILENCE}}))

        sender = asyncio.create_task(frames())
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    msg = await ws.receive()
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        raise RuntimeError(f"the media socket closed before any bot audio ({msg.type.name})")
                    if json.loads(msg.data).get("event") == "media":
                        first = loop.time()
                        break
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        await ws.send_str(message("stop", {"stop": {"callSid": call_sid}}))
    return (first - t_start) * 1000.0


async def one_way(way: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    prewarm, lead_ms = WAYS[way]
    lead_s = (args.lead_ms if lead_ms is None else lead_ms) / 1000.0
    config = gateway_config(budget=1000, prewarm="true" if prewarm else "false")
    with processes(out / "logs" / f"{args.name}-{way}") as procs:
        standin = start_standin(procs, free_port(), setup_delay_ms=args.setup_delay_ms,
                                response_delay_ms=args.response_delay_ms)
        gateway = start_gateway(procs, config, free_port(), standin)
        await wait_http(standin + "/healthz")
        await wait_http(gateway.base + "/healthz")
        gate = asyncio.Semaphore(args.overlap)
        timings: list[float] = []
        errors: list[str] = []

        async def call() -> None:
            async with gate:
                call_sid, account_sid = new_call()
                try:
                    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
                        answer = await voice_webhook(http, gateway, call_sid, account_sid)
                    if answer.stream_url is None:
                        raise RuntimeError(f"the webhook answered {answer.verbs}: {answer.say!r}")
                    await asyncio.sleep(lead_s)  # (the benchmark's fixed lead: long enough for the warm-up)
                    timings.append(await first_audio_ms(gateway, answer.stream_url, answer.parameters, call_sid,
                                                         args.timeout))
                except (RuntimeError, ValueError, TimeoutError, aiohttp.ClientError) as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")

        started = time.monotonic()
        await asyncio.gather(*(call() for _ in range(args.calls)))
        seconds = time.monotonic() - started
        await asyncio.sleep(0.5)  # the last call's end reaches the metrics
        warm = {k.split('"')[1]: v for k, v in metric_values(await get_text(gateway.base + "/metrics")).items()
                if k.startswith("gateway_voicelive_warm_sessions_total")}
    figures = percentiles(timings)
    return {"way": way, "prewarm": prewarm, "lead_ms": round(lead_s * 1000), **figures,
            "within_target": sum(1 for t in timings if t <= TARGET_MS),
            "ms": [round(t, 1) for t in timings], "errors": errors, "warm_sessions": warm,
            "seconds": round(seconds, 1)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    ways = [await one_way(way, args, out) for way in args.ways]
    result = {"name": args.name,
              "setup": {"calls": args.calls, "overlap": args.overlap, "setup_delay_ms": args.setup_delay_ms,
                        "response_delay_ms": args.response_delay_ms, "lead_ms": args.lead_ms,
                        "target_ms": TARGET_MS},
              "ways": ways}
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=20, help="calls per way of calling")
    p.add_argument("--overlap", type=int, default=1, help="calls at a time")
    p.add_argument("--setup-delay-ms", type=int, default=800, help="the stand-in's session set-up time")
    p.add_argument("--response-delay-ms", type=int, default=300,
                   help="the stand-in's time from response.create to the response")
    p.add_argument("--lead-ms", type=int, default=1500, help="ahead: from the webhook's answer to the media socket")
    p.add_argument("--ways", nargs="+", choices=tuple(WAYS), default=list(WAYS))
    p.add_argument("--timeout", type=float, default=10.0, help="seconds a call waits for bot audio")
    p.add_argument("--name", default="prewarm")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args(argv)
    result = asyncio.run(run(args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    failed = False
    for way in result["ways"]:
        print(f"{way['way']:>10} (pre-warm {'on' if way['prewarm'] else 'off'}, media {way['lead_ms']} ms after the "
              f"webhook): start -> first bot audio p50 {way['p50']} ms, p95 {way['p95']} ms, max {way['max']} ms "
              f"over {way['n']} calls; {way['within_target']} within {TARGET_MS:g} ms; errors {len(way['errors'])}; "
              f"warm sessions {way['warm_sessions'] or 'none'}")
        for error in way["errors"][:5]:
            print("   " + error)
        failed = failed or bool(way["errors"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""``gateway dial``: place a call through a running gateway's outbound-call API and follow it."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

import aiohttp

DONE = ("completed", "failed")


def _variables(pairs: list[str]) -> dict[str, str]:
    variables: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--var {pair!r}: expected NAME=VALUE")
        variables[name] = value
    return variables


async def dial(args: argparse.Namespace, out: Any = None) -> int:
    out = out or sys.stdout
    token = args.token or os.environ.get("GATEWAY_API_TOKEN", "")
    if not token:
        print("gateway dial: no API token: pass --token or set GATEWAY_API_TOKEN", file=sys.stderr)
        return 2
    try:
        variables = _variables(args.var)
    except ValueError as exc:
        print(f"gateway dial: {exc}", file=sys.stderr)
        return 2
    body: dict[str, Any] = {"to": args.to, "from": args.from_, "profile": args.profile, "variables": variables}
    if args.carrier:
        body["carrier"] = args.carrier
    if args.idempotency_key:
        body["idempotency_key"] = args.idempotency_key
    base = args.url.rstrip("/")
    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=30)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async with http.post(base + "/v1/calls", json=body, headers=headers) as reply:
                answer = await reply.json(content_type=None)
                if not isinstance(answer, dict):
                    raise ValueError(f"HTTP {reply.status} with a JSON answer that is not an object")
                if reply.status >= 300:
                    retry = reply.headers.get("Retry-After")
                    print(f"gateway dial: refused (HTTP {reply.status}): {answer.get('error')}"
                          + (f" (retry after {retry} s)" if retry else ""), file=sys.stderr)
                    return 1
            print(f"call {answer['id']}: {answer['state']}", file=out, flush=True)
            state = answer["state"]
            while args.wait and state not in DONE:
                await asyncio.sleep(args.poll_s)  # a client of an HTTP API: it asks again
                async with http.get(f"{base}/v1/calls/{answer['id']}", headers=headers) as reply:
                    if reply.status != 200:
                        print(f"gateway dial: the call's state is not readable (HTTP {reply.status})",
                              file=sys.stderr)
                        return 1
                    answer = await reply.json()
                if not isinstance(answer, dict):
                    raise ValueError("the call's state is not a JSON object")
                if answer["state"] != state:
                    state = answer["state"]
                    extra = {k: answer[k] for k in ("answered_by", "end_reason") if answer.get(k)}
                    print(f"call {answer['id']}: {state}" + (f" {json.dumps(extra)}" if extra else ""), file=out,
                          flush=True)
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
        print(f"gateway dial: the gateway at {base} did not answer as expected: {exc or type(exc).__name__}",
              file=sys.stderr)
        return 1
    return 0 if state != "failed" else 1


def register_cli(sub: Any) -> None:
    p = sub.add_parser("dial", help="place a call through a running gateway's outbound-call API",
                       description="POST /v1/calls on a running gateway and print the call's id and state "
                       "(with --wait, every state until the call ends).")
    p.add_argument("--to", required=True, help="the number to call (E.164)")
    p.add_argument("--from", dest="from_", required=True, metavar="FROM",
                   help="the number calling (E.164, one of yours)")
    p.add_argument("--profile", required=True, help="the profile the call gets")
    p.add_argument("--carrier", default=None, help="the carrier to place it with (default: the only one able)")
    p.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="an instruction variable")
    p.add_argument("--idempotency-key", default=None, help="the same key again gives the same call")
    p.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway (default: http://127.0.0.1:8080)")
    p.add_argument("--token", default=None, help="the API token (default: $GATEWAY_API_TOKEN)")
    p.add_argument("--wait", action="store_true", help="follow the call until it ends")
    p.add_argument("--poll-s", type=float, default=1.0, help=argparse.SUPPRESS)
    p.set_defaults(func=lambda args: _run(args))


def _run(args: argparse.Namespace) -> int:
    from gateway.cli import run_fast

    return run_fast(dial(args))

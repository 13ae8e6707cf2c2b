"""Capacity benchmark: sweep the number of concurrent calls through the gateway (and, to compare,
a naive forwarder and a transcoding bridge) and measure.

For each step and system it starts, as separate processes, the simulator in its lean benchmark
mode (the Voice Live stand-in), the system (``gateway serve`` with production settings:
authentication, JSON logs, metrics; or ``bench/forwarder.py``, ``bench/transcoder.py``) and load
generators (``bench/loadgen.py``, at most --per-loadgen calls each). After the calls have ramped up
and warmed up, it measures for a fixed window:

- forwarding delay of caller frames (load generator → benchmark Voice Live) and of bot audio
  (benchmark Voice Live → load generator), p50 / p99 / max; caller frames lost or reordered;
- barge-in reaction at the phone, the primary figure: the stand-in's write of speech_started (on
  loopback the bytes are at the system the moment they are written) → clear received by the
  phone; and, secondary, the gateway's own histogram (speech_started parsed → clear written);
- truncation error: |audio_end_ms the gateway truncated a response to - what the phone had played
  of it when the clear arrived|, per (call, response), p50 / p99 / max;
- CPU seconds per call-minute and % of one core per call of the system's process tree; RSS per
  call (idle to loaded, per step, and the slope over the steps); the gateway's event-loop lag;
- the host's steal of each core (on a virtual machine, time the core stood still), and the caller
  delay, barge-ins and truncations again over the quiet periods alone: the whole periods of the
  conversation (``--reply-every``) in which the host took under 0.5 % of every core.

It writes the results as JSON and a Markdown report with a plot, and prints a one-line summary.

Scenarios (``--scenario``, the stand-in's conversation, ``gateway/simulator/bench.py``): ``steady``
(caller turns committed and replies, each call on its own phase), ``burst`` (every call's replies
start at the same instant, 400 ms deltas), ``barge-storm`` (every call barged into at once),
``talk`` (callers talk without pause: never committed, no reply) and ``latency`` (below).

Systems (``--systems``): each step runs each in turn, with fresh processes: ``gateway``, the naive
``forwarder`` (``bench/forwarder.py``) and the ``transcoder`` (``bench/transcoder.py``, pcm16 24 kHz
to Voice Live); the report gives each one's figures and their ratios to the gateway's.

With ``--scenario latency`` the calls talk in turns instead (``bench/latency.py``) and each step
measures the end-to-end turn latency: the caller's end of speech to the bot's first audio played
at the phone, split into the Voice Live stand-in's share and the gateway's share (p50/p95/p99).

    python bench/run.py --calls 50,100,200,400 --measure 30            # the full sweep (minutes)
    python bench/run.py --calls 4 --warmup 2 --measure 3 --no-plot     # a smoke run (seconds)
    python bench/run.py --scenario latency --calls 1,100,300 --warmup 3 --measure 20
    python bench/run.py --scenario burst --systems gateway,forwarder,transcoder --calls 100,200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import resource
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.figures import (
    QUIET_STEAL_LIMIT,
    barge_in_reactions,
    host_bound,
    join_truncations,
    pct,
    period_steal,
    quiet_figures,
    quiet_periods,
    quiet_summary,
    ratios,
    read_figures,
    rss_slope,
    steal_percent,
    steal_text,
)
from bench.harness import free_port, wait_http

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
TARGET_P99_MS = 20.0


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (the gateway's workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    return tree


def cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds of the processes."""
    user = system = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user / CLK_TCK, system / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy since boot (/proc/stat)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def core_ticks() -> dict[str, tuple[int, int]]:
    """(steal, all) clock ticks of each core since boot (/proc/stat ``cpuN`` lines). Steal is the time a
    virtual machine's core was ready to run but the host ran something else: the core stood still."""
    ticks: dict[str, tuple[int, int]] = {}
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return ticks
    for line in lines:
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu" and len(values) >= 8:
            numbers = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
            ticks[name[3:]] = (numbers[7], sum(numbers))
    return ticks


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB
        except OSError:
            continue
    return total


def histogram(metrics_text: str, name: str) -> dict[float, int]:
    """Cumulative bucket counts of a Prometheus histogram (labels merged)."""
    buckets: dict[float, int] = {}
    for line in metrics_text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="')[1].split('"')[0]
            bound = math.inf if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0) + int(float(line.rsplit(" ", 1)[1]))
    return buckets


def quantile_from(before: dict[float, int], after: dict[float, int], q: float) -> float | None:
    """Upper bound of the bucket holding the q-quantile of what was observed between two scrapes."""
    diff = {b: after.get(b, 0) - before.get(b, 0) for b in after}
    total = diff.get(math.inf, 0)
    if total <= 0:
        return None
    for bound in sorted(diff):
        if diff[bound] >= q * total:
            return bound
    return math.inf


def raise_nofile() -> int:
    """Raise the soft limit of open files to the hard one (inherited by every process started):
    thousands of calls are thousands of sockets in the gateway and the stand-in. The new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


async def fetch(url: str, method: str = "GET") -> str:
    async with aiohttp.ClientSession() as http, http.request(method, url) as response:
        return await response.text()


# The media socket each carrier's calls open (see the dialects in bench/loadgen.py).
MEDIA_PATHS = {"twilio": "/twilio/media", "asterisk": "/asterisk/media?profile=bench"}


SYSTEMS = ("gateway", "forwarder", "transcoder")


def cpu_sets(args: argparse.Namespace) -> tuple[set[int] | None, set[int] | None]:
    """With --pin: (the CPUs of the system under test, the harness's CPUs); else (None, None)."""
    if not args.pin:
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    return set(cpus[:args.workers]), set(cpus[args.workers:])


def pinned(cpus: set[int] | None) -> Any:
    """A child process's start-up hook that keeps it on ``cpus`` (None: wherever the kernel puts it)."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


async def run_step(calls: int, args: argparse.Namespace, workdir: Path, system: str = "gateway") -> dict[str, Any]:
    vl_port, gw_port = free_port(), free_port()
    twilio_token, signing_key = secrets.token_hex(16), secrets.token_hex(32)
    asterisk_password = secrets.token_hex(16)
    logs = workdir / (f"step-{calls}" if system == "gateway" else f"step-{calls}-{system}")
    logs.mkdir(parents=True, exist_ok=True)
    latency = args.scenario == "latency"
    # this checkout's modules in every process, whichever checkout the interpreter has installed
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    stand_in = [PY, "-m", "gateway", "simulator", "--bench", "--host", "127.0.0.1", "--port", str(vl_port),
                "--reply-every", str(args.reply_every), "--reply-ms", str(args.reply_ms),
                "--barge-in-every", str(args.barge_in_every)]
    if latency:
        stand_in += ["--turns", "--response-delay-ms", str(args.response_delay_ms)]
    else:
        stand_in += ["--scenario", args.scenario, "--speech-ms", str(args.speech_ms),
                     "--barge-in-after-ms", str(args.barge_in_after_ms),
                     "--barge-in-spread-ms", str(args.barge_in_spread_ms)]
        if args.delta_ms:
            stand_in += ["--delta-ms", str(args.delta_ms)]
    system_cpus, harness_cpus = cpu_sets(args)
    vl = subprocess.Popen(stand_in, cwd=ROOT, env={**os.environ, "PYTHONPATH": pythonpath},
                          preexec_fn=pinned(harness_cpus), stdout=open(logs / "voicelive.log", "wb"),
                          stderr=subprocess.STDOUT)
    env = {**os.environ, "PYTHONPATH": pythonpath, "AZURE_VOICELIVE_ENDPOINT": f"http://127.0.0.1:{vl_port}",
           "TWILIO_AUTH_TOKEN": twilio_token, "GATEWAY_SIGNING_KEY": signing_key,
           "ASTERISK_WS_USERNAME": "bench", "ASTERISK_WS_PASSWORD": asterisk_password,
           "GATEWAY_LOG_FORMAT": "json", "GATEWAY_LOG_LEVEL": "info"}
    if system == "gateway":
        serve = [PY, "-m", "gateway", "serve", "--config", str(ROOT / "bench" / "bench-config.yaml"),
                 "--host", "127.0.0.1", "--port", str(gw_port)]
        if args.workers > 1:
            serve += ["--workers", str(args.workers)]
    else:  # the comparisons: one process each, no authentication, no metrics
        serve = [PY, "-m", f"bench.{system}", "--host", "127.0.0.1", "--port", str(gw_port),
                 "--voicelive", f"http://127.0.0.1:{vl_port}"]
    gw = subprocess.Popen(serve, cwd=ROOT, env=env, stdout=open(logs / f"{system}.log", "wb"),
                          stderr=subprocess.STDOUT, preexec_fn=pinned(system_cpus))
    metrics_url = f"http://127.0.0.1:{gw_port}/metrics" if system == "gateway" else None
    loadgens: list[subprocess.Popen[bytes]] = []
    try:
        await wait_http(f"http://127.0.0.1:{vl_port}/bench/stats", process=vl, log=logs / "voicelive.log")
        await wait_http(f"http://127.0.0.1:{gw_port}/healthz", process=gw, log=logs / f"{system}.log")
        await asyncio.sleep(0.5)  # let the gateway's workers settle before the baseline
        base_rss = rss_kib(process_tree(gw.pid))
        ramp_s = calls / args.ramp
        start = time.monotonic()
        window = (start + ramp_s + args.warmup, start + ramp_s + args.warmup + args.measure)
        processes = max(1, math.ceil(calls / args.per_loadgen))
        for i in range(processes):
            share = calls // processes + (1 if i < calls % processes else 0)
            out = logs / f"loadgen-{i}.json"
            talk = (["--turns", "--speech-ms", str(args.speech_ms), "--gap-ms", str(args.gap_ms)]
                    if latency else [])
            # with turns, hang up later: a turn that ended in the window gets its answer
            linger = 2.0 if latency else 1.0
            loadgens.append(subprocess.Popen(
                [PY, "-m", "bench.loadgen", "--url", f"ws://127.0.0.1:{gw_port}{MEDIA_PATHS[args.carrier]}",
                 "--calls", str(share), "--first", str(i * 100_000), "--ramp", str(args.ramp / processes),
                 "--duration", str(window[1] - start + linger), "--window", str(window[0]), str(window[1]),
                 "--carrier", args.carrier, "--twilio-token", twilio_token, "--signing-key", signing_key,
                 "--asterisk-user", "bench", "--asterisk-password", asterisk_password, "--out", str(out), *talk,
                 *(["--kernel-clock"] if args.phone_clock == "kernel" else [])],
                cwd=ROOT, env={**os.environ, "PYTHONPATH": pythonpath}, preexec_fn=pinned(harness_cpus),
                stdout=open(logs / f"loadgen-{i}.log", "wb"), stderr=subprocess.STDOUT))
        await asyncio.sleep(max(0.0, window[0] - time.monotonic()))
        await fetch(f"http://127.0.0.1:{vl_port}/bench/reset", "POST")
        metrics0 = await fetch(metrics_url) if metrics_url else ""
        harness = [vl.pid, *(p.pid for p in loadgens)]
        cpu0, t0 = cpu_seconds(process_tree(gw.pid)), time.monotonic()
        harness0, busy0, ticks0 = sum(cpu_seconds(harness)), machine_busy_seconds(), core_ticks()
        # the host's steal in each whole period of the conversation inside the window
        steal = period_steal(await ticks_at_period_starts(args.reply_every, window[1]))
        cpu1, t1 = cpu_seconds(process_tree(gw.pid)), time.monotonic()
        harness1, busy1, ticks1 = sum(cpu_seconds(harness)), machine_busy_seconds(), core_ticks()
        rss = rss_kib(process_tree(gw.pid))
        metrics1 = await fetch(metrics_url) if metrics_url else ""
        quiet = ",".join(str(k) for k in sorted(quiet_periods(steal)))
        vl_stats = json.loads(await fetch(f"http://127.0.0.1:{vl_port}/bench/stats?period_s={args.reply_every}"
                                          f"&quiet={quiet}"))
        for p in loadgens:
            await asyncio.to_thread(p.wait, 60)
        generated = [json.loads((logs / f"loadgen-{i}.json").read_text()) for i in range(processes)]
    finally:
        for p in (*loadgens, gw, vl):
            if p.poll() is None:
                p.terminate()
        for p in (*loadgens, gw, vl):
            try:
                await asyncio.to_thread(p.wait, 30)
            except subprocess.TimeoutExpired:
                p.kill()

    bot_delays = [d for g in generated for d in g["bot_delays_ms"]]
    clears = [c for g in generated for c in g["clears"]]
    played = [row for g in generated for row in g.get("truncation_played", [])]
    clears_read = [c for g in generated for c in g.get("clears_read", [])]
    played_read = [row for g in generated for row in g.get("truncation_played_read", [])]
    stamps = sorted({g["arrival_stamps"] for g in generated})
    reactions = barge_in_reactions(vl_stats["barge_ins"], clears)
    truncation = join_truncations(vl_stats.get("truncations", []), played, window)
    window_s = t1 - t0
    user, kernel = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    cpu = user + kernel
    connected = sum(g["connected"] for g in generated)
    inside = quantile_from(histogram(metrics0, "gateway_barge_in_reaction_seconds"),
                           histogram(metrics1, "gateway_barge_in_reaction_seconds"), 0.99)
    lag99 = quantile_from(histogram(metrics0, "gateway_event_loop_lag_seconds"),
                          histogram(metrics1, "gateway_event_loop_lag_seconds"), 0.99)
    caller = vl_stats["caller_delay_ms"]
    extra: dict[str, Any] = {}
    if latency:
        from bench.latency import summarize

        extra = {"latency": summarize(generated), "silence_duration_ms": vl_stats.get("silence_duration_ms", []),
                 "stand_in_turns": vl_stats.get("turns"), "stand_in_answers": vl_stats.get("answers"),
                 # the machine's 1-minute load average after the window: others' work on the same cores
                 "load_average_1m": round(os.getloadavg()[0], 2)}
    return {
        "scenario": args.scenario,
        "system": system,
        "carrier": args.carrier,
        "calls": calls,
        "connected": connected,
        "workers": args.workers,
        "window_s": round(window_s, 2),
        "caller_frames": vl_stats["caller_frames"],
        "caller_frames_lost": vl_stats["caller_frames_lost"],
        "caller_frames_reordered": vl_stats["caller_frames_reordered"],
        "caller_delay_ms": caller,
        "bot_delay_ms": {"p50": pct(bot_delays, 50), "p99": pct(bot_delays, 99),
                         "max": round(max(bot_delays), 3) if bot_delays else None, "blocks": len(bot_delays)},
        "barge_ins": len(reactions),
        "barge_ins_sent": len(vl_stats["barge_ins"]),
        # the primary figure: speech_started written by the stand-in (the bytes are at the gateway on
        # loopback) to clear received by the phone
        "barge_in_at_phone_ms": {"p50": pct(reactions, 50), "p99": pct(reactions, 99),
                                 "max": round(max(reactions), 3) if reactions else None},
        # secondary: the gateway's own histogram (speech_started parsed → clear written), bucket bound
        "barge_in_in_gateway_p99_ms": None if inside is None else inside * 1000,
        # |audio_end_ms the client truncated to - ms the phone had played|, per (call, response)
        "truncation_error_ms": truncation,
        # what the phones' times are: "kernel" (when the bytes arrived, --phone-clock kernel) or "parse" (when
        # the load generator parsed them)
        "phone_times": "+".join(stamps),
        # the same two figures by when the load generators read the clear (their busy core may delay it)
        **read_figures(vl_stats["barge_ins"], vl_stats.get("truncations", []), clears_read, played_read, window),
        "stand_in_replies": vl_stats.get("replies"),
        "stand_in_replies_cancelled": vl_stats.get("replies_cancelled"),
        "stand_in_commits": vl_stats.get("commits"),
        "gateway_cpu_s": round(cpu, 3),
        "gateway_cpu_system_share": round(kernel / cpu, 3) if cpu else None,
        "cpu_s_per_call_minute": round(cpu / connected / (window_s / 60), 4) if connected else None,
        "core_percent_per_call": round(cpu / window_s / connected * 100, 4) if connected else None,
        "core_percent_total": round(cpu / window_s * 100, 1),
        # the load generators and the benchmark Voice Live on the same machine
        "harness_core_percent": round((harness1 - harness0) / window_s * 100, 1),
        # everything else the machine ran meanwhile (other work sharing the cores), by /proc/stat
        "others_core_percent": round(max(0.0, busy1 - busy0 - cpu - (harness1 - harness0)) / window_s * 100, 1),
        # per core, the share of the window a virtual machine's host ran something else instead (the
        # core stood still: on a shared host the tail of every delay grows with it)
        "steal_percent": steal_percent(ticks0, ticks1),
        "system_cores": sorted(system_cpus) if system_cpus else None,
        # the same figures over the periods of the window in which the host took (almost) nothing
        "quiet_periods": quiet_figures(vl_stats, clears, played, steal, args.reply_every, clears_read, played_read),
        "rss_kib_per_call": round((rss - base_rss) / connected, 1) if connected else None,
        "rss_kib": rss,
        "rss_idle_kib": base_rss,
        "loop_lag_p99_ms": None if lag99 is None else lag99 * 1000,
        "loadgen_late_ticks": sum(g["late_ticks"] for g in generated),
        "errors": sum(g["error_count"] for g in generated),
        "error_samples": [e for g in generated for e in g["errors"]][:5],
        **extra,
    }


async def ticks_at_period_starts(period_s: float, until: float) -> dict[int, dict[str, tuple[int, int]]]:
    """:func:`core_ticks` at the start of each period (multiples of ``period_s`` on the monotonic clock,
    where the stand-in's conversations have theirs) from now to ``until``; then waits until ``until``."""
    samples = {}
    k = math.ceil(time.monotonic() / period_s)
    while (k * period_s) <= until:
        await asyncio.sleep(max(0.0, k * period_s - time.monotonic()))
        samples[k] = core_ticks()
        k += 1
    await asyncio.sleep(max(0.0, until - time.monotonic()))
    return samples


def machine_bound(step: dict[str, Any]) -> bool:
    """The machine, not the gateway, ran out: every core busy with the gateway, the harness and
    whatever else the machine ran."""
    cores = os.cpu_count() or 1
    return (step["core_percent_total"] + step["harness_core_percent"] + step.get("others_core_percent", 0.0)
            >= 90 * cores)


def passes(step: dict[str, Any]) -> bool:
    if step.get("scenario") == "latency":
        # every call up and every measured turn answered by its own reply (no figure is a target)
        lat = step["latency"]
        return (step["connected"] == step["calls"] and not step["errors"] and lat["turns_measured"] > 0
                and not lat["turns_unanswered"] and not lat["turns_unmatched"])
    p99 = step["caller_delay_ms"]["p99"]
    return (step["connected"] == step["calls"] and not step["caller_frames_lost"]
            and not step["caller_frames_reordered"] and p99 is not None and p99 <= TARGET_P99_MS
            and (step["bot_delay_ms"]["p99"] or 0) <= TARGET_P99_MS)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def quiet_text(step: dict[str, Any]) -> str:
    """The step's figures over its quiet periods, for its one line."""
    summary = quiet_summary(step)
    if summary is None:
        return ""
    quiet, periods, caller, truncation = summary
    return (f"; in the {quiet} of {periods} periods the host took under {QUIET_STEAL_LIMIT} % of every core: "
            f"caller p99 {caller} ms, truncation error p99 {truncation} ms")


def read_text(step: dict[str, Any]) -> str:
    """The phone's figures by when the load generators read the clear, when the step has them."""
    read, trunc = step.get("barge_in_at_phone_read_ms"), step.get("truncation_error_read_ms")
    if not read or not trunc:
        return ""
    return f" [by the phones' read of the clear: barge-in p99 {read['p99']} ms, truncation error p99 {trunc['p99']} ms]"


def step_line(step: dict[str, Any]) -> str:
    """The one line a capacity step prints."""
    trunc = step["truncation_error_ms"]
    ratio = step.get("vs_gateway")
    return (f"{step['calls']:5d} calls, {step['system']}: caller p99 {step['caller_delay_ms']['p99']} ms, bot p99 "
            f"{step['bot_delay_ms']['p99']} ms, lost {step['caller_frames_lost']}, "
            f"{step['core_percent_per_call']} % core/call, {step['rss_kib_per_call']} KiB/call, "
            f"barge-in at phone p50/p99 {step['barge_in_at_phone_ms']['p50']}/{step['barge_in_at_phone_ms']['p99']} "
            f"ms ({step['barge_ins']} of {step['barge_ins_sent']}), in gateway p99 "
            f"{step['barge_in_in_gateway_p99_ms']} ms, truncation error p50/p99/max {trunc['p50']}/{trunc['p99']}/"
            f"{trunc['max']} ms (n={trunc['n']}){read_text(step)}, "
            f"{step['system']} {step['core_percent_total']} % + harness "
            f"{step['harness_core_percent']} % of a core, host steal {steal_text(step)}, "
            f"{'ok' if step['passes'] else 'over target'}"
            f"{' (machine saturated)' if step['machine_bound'] else ''}"
            f"{' (the host stole time)' if step.get('host_bound') else ''}"
            + quiet_text(step)
            + (f", vs gateway: CPU/call x{ratio['core_percent_per_call']}, RSS/call x{ratio['rss_kib_per_call']}, "
               f"caller p99 x{ratio['caller_p99_ms']}" if ratio else ""))


async def main_async(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps: list[dict[str, Any]] = []
    if args.reply_ms is None:
        args.reply_ms = 800 if args.scenario == "latency" else 2000
    if args.speech_ms is None:
        args.speech_ms = 600 if args.scenario == "latency" else 1200
    systems = args.systems
    stopped = False
    for calls in [int(c) for c in args.calls.split(",")]:
        at_step: dict[str, dict[str, Any]] = {}
        for system in systems:
            step = await run_step(calls, args, out / "logs", system)
            step["passes"] = passes(step)
            step["machine_bound"] = machine_bound(step)
            step["host_bound"] = host_bound(step)
            if system != "gateway" and "gateway" in at_step:
                step["vs_gateway"] = ratios(step, at_step["gateway"])
            at_step[system] = step
            steps.append(step)
            if args.scenario == "latency":
                lat = step["latency"]
                print(f"{calls:5d} calls: {lat['turns_measured']} turns ({lat['turns_unanswered']} unanswered), "
                      + ", ".join(f"{label} p50/p95/p99 {lat[key]['p50']}/{lat[key]['p95']}/{lat[key]['p99']} ms"
                                  for label, key in (("end to end", "end_to_end_ms"), ("stand-in", "stand_in_ms"),
                                                     ("gateway", "gateway_ms")))
                      + f", gateway {step['core_percent_total']} % + harness {step['harness_core_percent']} % + "
                      f"other work {step['others_core_percent']} % of a core"
                      f"{'' if step['passes'] else ', NOT every turn answered'}"
                      f"{' (machine saturated)' if step['machine_bound'] else ''}", flush=True)
                continue
            print(step_line(step), flush=True)
            stopped = stopped or (not step["passes"] and args.stop_at_failure)
        if stopped:
            break
    if args.scenario == "latency":
        return write_latency(steps, args, out)
    per_system: dict[str, dict[str, Any]] = {}
    for system in systems:
        mine = [s for s in steps if s["system"] == system]
        held_by = max((s["calls"] for s in mine if s["passes"]), default=0)
        per_system[system] = {
            "max_calls_within_target": held_by,
            # the other way to read memory: the slope of loaded RSS against calls over the steps
            "rss_slope_kib_per_call": rss_slope([(s["connected"], s["rss_kib"]) for s in mine if s["connected"]]),
        }
    held = per_system.get(systems[0], {}).get("max_calls_within_target", 0)
    result = {"machine": machine(), "scenario": args.scenario, "systems": per_system, "workers": args.workers,
              "target_p99_ms": TARGET_P99_MS,
              "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
              "max_calls_within_target": held, "steps": steps}
    name = args.name or (f"workers-{args.workers}" if args.scenario == "steady" else
                         f"{args.scenario}-workers-{args.workers}")
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    if not args.no_plot:
        from bench.report import write_report

        write_report(result, out / f"{name}.md", out / f"{name}.png")
    for system in systems:
        best = next((s for s in steps if s["system"] == system
                     and s["calls"] == per_system[system]["max_calls_within_target"]), None)
        print(f"{name}, {system}: {per_system[system]['max_calls_within_target']} calls held within p99 <= "
              f"{TARGET_P99_MS:g} ms with zero loss"
              + (f" ({best['core_percent_per_call']} % of a core and {best['rss_kib_per_call']} KiB per call)"
                 if best else "")
              + f"; RSS slope {per_system[system]['rss_slope_kib_per_call']} KiB per call")
    return 0


def write_latency(steps: list[dict[str, Any]], args: argparse.Namespace, out: Path) -> int:
    from bench.latency import markdown

    result = {"scenario": "latency", "machine": machine(), "workers": args.workers,
              "settings": {k: v for k, v in vars(args).items() if k not in ("out",)}, "steps": steps}
    name = args.name or f"latency-workers-{args.workers}"
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    if not args.no_plot:
        (out / f"{name}.md").write_text(markdown(result), encoding="utf-8")
    answered = all(s["passes"] for s in steps)
    print(f"{name}: gateway's share p99 "
          + ", ".join(f"{s['latency']['gateway_ms']['p99']} ms at {s['calls']} calls" for s in steps)
          + ("" if answered else " (some turns unanswered: see the steps)"))
    return 0 if answered else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", default="50,100,200,400", help="comma-separated numbers of concurrent calls")
    parser.add_argument("--workers", type=int, default=1, help="gateway worker processes")
    parser.add_argument("--carrier", choices=sorted(MEDIA_PATHS), default="twilio",
                        help="whose calls the load generators place: Twilio's JSON text media stream, or "
                        "Asterisk's binary µ-law frames (default %(default)s)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds after the ramp before measuring")
    parser.add_argument("--measure", type=float, default=20.0, help="seconds measured")
    parser.add_argument("--ramp", type=float, default=50.0, help="calls opened per second")
    parser.add_argument("--per-loadgen", type=int, default=200, help="calls per load generator process")
    parser.add_argument("--reply-every", type=float, default=4.0)
    parser.add_argument("--scenario", choices=("steady", "burst", "barge-storm", "talk", "latency", "capacity"),
                        default="steady",
                        help="steady: a conversation per call (caller turns committed, replies, barge-ins), each "
                        "on its own phase (default; capacity is its former name); burst: every call's replies "
                        "start at the same instant; barge-storm: every call barged into at once; talk: callers "
                        "talk without pause (never committed, no reply); latency: the calls talk in turns and "
                        "each turn's end-to-end latency is measured")
    parser.add_argument("--systems", default="gateway",
                        help="comma-separated, run in turn at each step with fresh processes: gateway, forwarder "
                        "(a naive bridge), transcoder (pcm16 24 kHz to Voice Live) (default %(default)s)")
    parser.add_argument("--reply-ms", type=int, default=None,
                        help="length of each reply (default: 2000, with --scenario latency 800)")
    parser.add_argument("--speech-ms", type=int, default=None,
                        help="each caller turn's speech (default: 1200; latency: the caller's tone, 600)")
    parser.add_argument("--delta-ms", type=int, default=None,
                        help="audio per response.audio.delta (default: 400 for burst and barge-storm, else 240)")
    parser.add_argument("--barge-in-after-ms", type=int, default=300,
                        help="a barge-in comes this long after its reply's first audio (default %(default)s)")
    parser.add_argument("--phone-clock", choices=("parse", "kernel"), default="parse",
                        help="when a phone received a message: when the load generator parsed its bytes "
                        "(default), or the kernel's receive time (Linux; the load generators then run on "
                        "asyncio's own loop instead of uvloop: slower, and the caller delay measured is longer)")
    parser.add_argument("--barge-in-spread-ms", type=int, default=0,
                        help="... give or take up to half this, at random per reply (default %(default)s: the "
                        "barge-ins of a burst all at once)")
    parser.add_argument("--gap-ms", type=int, default=400,
                        help="latency: pause after the reply has played (at random, up to twice this)")
    parser.add_argument("--response-delay-ms", type=int, default=200,
                        help="latency: the stand-in answers this long after the caller's turn ended")
    parser.add_argument("--barge-in-every", type=int, default=None,
                        help="barge into every Nth reply, 0: never (default: 1 for barge-storm, else 3)")
    parser.add_argument("--pin", action="store_true",
                        help="the system under test on CPUs of its own (one per worker), the stand-in and the load "
                        "generators on the others (Linux), so that its figures do not include waiting for the "
                        "harness's CPU time")
    parser.add_argument("--stop-at-failure", action="store_true", help="stop the sweep at the first step over target")
    parser.add_argument("--name", default=None, help="result file name (default: workers-N)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--no-plot", action="store_true", help="JSON only (no Markdown report, no plot)")
    args = parser.parse_args()
    if args.scenario == "capacity":
        args.scenario = "steady"
    if args.barge_in_every is None:
        args.barge_in_every = 1 if args.scenario == "barge-storm" else 3
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in args.systems if s not in SYSTEMS]
    if unknown or not args.systems:
        parser.error(f"--systems: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(SYSTEMS)}")
    if args.scenario == "latency" and args.systems != ["gateway"]:
        parser.error("--scenario latency measures the gateway only (--systems gateway)")
    if args.carrier != "twilio" and args.systems != ["gateway"]:
        parser.error("the forwarder and the transcoder speak Twilio's media stream only (--carrier twilio)")
    if args.pin:
        if not hasattr(os, "sched_setaffinity"):
            parser.error("--pin needs a system that can pin processes to CPUs (Linux)")
        available = len(os.sched_getaffinity(0))
        if available <= args.workers:
            parser.error(f"--pin needs more CPUs than workers: this process may use {available}, "
                         f"and {args.workers} would go to the system under test")
    raise_nofile()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())

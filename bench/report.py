"""The benchmark report: a Markdown table of every step and system, the memory read two ways, the
other systems' ratios to the gateway, and a plot of delay and CPU against calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.figures import quiet_summary, steal_text


def _quiet(step: dict[str, Any]) -> str:
    summary = quiet_summary(step)
    if summary is None:
        return "-"
    quiet, periods, caller, truncation = summary
    return f"{quiet} of {periods}: {_fmt(caller)} / {_fmt(truncation)}"


SCENARIO_TEXT = {
    "steady": "each call is a conversation on its own phase: a caller turn ({speech_ms} ms, then committed), the "
              "bot's reply {response_delay} after it",
    "burst": "each call is a conversation, and every call's reply starts at the same instant (a multiple of the "
             "period): a caller turn ({speech_ms} ms, then committed), the bot's reply after it",
    "barge-storm": "each call is a conversation, every call's reply starts at the same instant, and every call is "
                   "barged into on the same replies at once",
    "talk": "every caller talks without pause: one speech_started, never a commit, no reply",
}


def spread_text(spread_ms: Any) -> str:
    """How the barge-ins of a run were spread in time, for the report's description of the run."""
    if not spread_ms:
        return ""
    return f" (give or take up to {spread_ms / 2:g} ms, at random per reply)"


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _system(step: dict[str, Any]) -> str:
    return step.get("system", "gateway")


def _systems(result: dict[str, Any]) -> list[str]:
    seen: list[str] = []
    for s in result["steps"]:
        if _system(s) not in seen:
            seen.append(_system(s))
    return seen


def write_plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (delay_ax, cpu_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for system in _systems(result):
        steps = [s for s in result["steps"] if _system(s) == system]
        calls = [s["calls"] for s in steps]
        delay_ax.plot(calls, [s["caller_delay_ms"]["p99"] for s in steps], "o-",
                      label=f"{system}: caller → Voice Live, p99")
        delay_ax.plot(calls, [s["bot_delay_ms"]["p99"] for s in steps], "s--",
                      label=f"{system}: Voice Live → caller, p99")
        cpu_ax.plot(calls, [s["core_percent_total"] for s in steps], "o-", label=f"{system}, % of one core")
        cpu_ax.plot(calls, [s["harness_core_percent"] for s in steps], "s:",
                    label=f"harness beside the {system}")
    delay_ax.axhline(result["target_p99_ms"], color="grey", linestyle=":", label="target p99")
    delay_ax.set_xlabel("concurrent calls")
    delay_ax.set_ylabel("forwarding delay (ms)")
    delay_ax.legend(fontsize=7)
    delay_ax.grid(alpha=0.3)
    cpu_ax.set_xlabel("concurrent calls")
    cpu_ax.set_ylabel("CPU (% of one core)")
    cpu_ax.legend(fontsize=7)
    cpu_ax.grid(alpha=0.3)
    fig.suptitle(f"{result.get('scenario', 'steady')}, gateway with {result['workers']} worker(s): "
                 f"{result['machine']['cores']} cores, {result['machine']['cpu']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(result: dict[str, Any], plot_name: str | None) -> str:
    m = result["machine"]
    scenario = result.get("scenario", "steady")
    systems = _systems(result)
    per_system = result.get("systems", {})
    lines = [
        f"# Benchmark, scenario {scenario}: {', '.join(systems)} (gateway: {result['workers']} worker(s))",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), Python {m['python']}, {m['platform']}.",
        f"Most calls held with p99 forwarding delay ≤ {result['target_p99_ms']:g} ms both ways and no caller "
        "frame lost or reordered: "
        + ", ".join(f"{system} **{per_system.get(system, {}).get('max_calls_within_target', '-')}**"
                    for system in systems)
        + (f" (gateway: **{result['max_calls_within_target']}**)" if not per_system else "") + ".",
        "",
        "| calls | system | caller→VL p50 / p99 / max ms | VL→caller p50 / p99 ms | lost / reordered "
        "| **barge-in: speech_started written → clear at phone, p50 / p99 ms** | barge-in in gateway (its histogram) "
        "p99 ms | truncation error p50 / p99 / max ms (n) | % core | % core per call | CPU s per call-minute "
        "| RSS KiB per call (idle → loaded) | loop lag p99 ms | harness % core | host steal % by core "
        "| quiet periods (host steal < 0.5 %): how many, caller p99 / truncation p99 ms |",
        "|---:|---|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for s in result["steps"]:
        c, b = s["caller_delay_ms"], s["bot_delay_ms"]
        flag = "" if s["passes"] else " ✗"
        flag += " (machine saturated)" if s.get("machine_bound") else ""
        flag += " (the host stole time)" if s.get("host_bound") else ""
        t = s.get("truncation_error_ms") or {}
        trunc = (f"{_fmt(t.get('p50'))} / {_fmt(t.get('p99'))} / {_fmt(t.get('max'))} ({t.get('n', 0)})"
                 if t.get("n") else "-")
        lines.append(
            f"| {s['calls']}{flag} | {_system(s)} | {_fmt(c['p50'])} / {_fmt(c['p99'])} / {_fmt(c['max'])} | "
            f"{_fmt(b['p50'])} / {_fmt(b['p99'])} | {s['caller_frames_lost']} / {s['caller_frames_reordered']} | "
            f"**{_fmt(s['barge_in_at_phone_ms']['p50'])} / {_fmt(s['barge_in_at_phone_ms']['p99'])}** | "
            f"{_fmt(s['barge_in_in_gateway_p99_ms'])} | {trunc} | {_fmt(s['core_percent_total'], 1)} | "
            f"{_fmt(s['core_percent_per_call'], 3)} | {_fmt(s['cpu_s_per_call_minute'], 3)} | "
            f"{_fmt(s['rss_kib_per_call'], 1)} | {_fmt(s['loop_lag_p99_ms'])} | {_fmt(s['harness_core_percent'], 1)} | "
            f"{steal_text(s) if s.get('steal_percent') else '-'} | {_quiet(s)} |")
    if per_system:
        lines += ["", "Memory per call, two ways: the idle-to-loaded difference of each step (above), and the slope of "
                  "loaded RSS against calls over the steps (a least-squares line; it leaves out what a process holds "
                  "whatever the load):", "",
                  "| system | RSS slope KiB per call |", "|---|---:|"]
        lines += [f"| {system} | {_fmt(per_system.get(system, {}).get('rss_slope_kib_per_call'), 1)} |"
                  for system in systems]
    compared = [s for s in result["steps"] if s.get("vs_gateway")]
    if compared:
        lines += ["", "Each system over the gateway in the same step (system ÷ gateway; below 1: it needs less):",
                  "", "| calls | system | CPU per call | RSS per call | caller→VL p99 | VL→caller p99 | barge-in p99 |",
                  "|---:|---|---:|---:|---:|---:|---:|"]
        for s in compared:
            r = s["vs_gateway"]
            lines.append(f"| {s['calls']} | {_system(s)} | {_fmt(r['core_percent_per_call'])} | "
                         f"{_fmt(r['rss_kib_per_call'])} | {_fmt(r['caller_p99_ms'])} | {_fmt(r['bot_p99_ms'])} | "
                         f"{_fmt(r['barge_in_p99_ms'])} |")
    settings = result["settings"]
    what = SCENARIO_TEXT.get(scenario, SCENARIO_TEXT["steady"]).format(
        speech_ms=settings.get("speech_ms"), response_delay=f"{settings.get('response_delay_ms')} ms")
    lines += [
        "",
        f"Each step: {settings['ramp']:g} calls/s ramp, {settings['warmup']:g} s warm-up, {settings['measure']:g} s "
        f"measured, each system with fresh processes. Each call streams a 20 ms µ-law frame every 20 ms; in the "
        f"Voice Live stand-in {what}; replies of {settings['reply_ms']} ms every {settings['reply_every']:g} s, sent "
        f"4x faster than real time, one in {settings['barge_in_every']} barged into "
        f"{settings.get('barge_in_after_ms', '-')} ms after its first audio"
        f"{spread_text(settings.get('barge_in_spread_ms'))}. The gateway runs with authentication, "
        "JSON logs at info and metrics; the forwarder and the transcoder with none of them. Barge-in at the phone: "
        "the stand-in's write of speech_started (the bytes are at the bridge the moment they are written, on "
        "loopback) to the phone's receipt of clear; the gateway's histogram (speech_started parsed → clear written, "
        "the upper bound of the bucket holding the p99) is a secondary figure. Truncation error: |audio_end_ms of "
        "the conversation.item.truncate - ms of that response the phone had played when clear arrived|, per (call, "
        "response); the forwarder and the transcoder do not truncate.",
    ]
    if plot_name:
        lines += ["", f"![delay and CPU against calls]({plot_name})"]
    return "\n".join(lines) + "\n"


def write_report(result: dict[str, Any], md_path: Path, png_path: Path) -> None:
    """The Markdown report, with the plot where matplotlib is installed (without it, no plot)."""
    try:
        write_plot(result, png_path)
        plot: str | None = png_path.name
    except ImportError:
        plot = None
    md_path.write_text(markdown(result, plot), encoding="utf-8")

"""The benchmark report: a Markdown table of every step and a plot of delay and CPU against calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def write_plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = result["steps"]
    calls = [s["calls"] for s in steps]
    fig, (delay_ax, cpu_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    delay_ax.plot(calls, [s["caller_delay_ms"]["p99"] for s in steps], "o-", label="caller → Voice Live, p99")
    delay_ax.plot(calls, [s["caller_delay_ms"]["p50"] for s in steps], "o--", label="caller → Voice Live, p50")
    delay_ax.plot(calls, [s["bot_delay_ms"]["p99"] for s in steps], "s-", label="Voice Live → caller, p99")
    delay_ax.axhline(result["target_p99_ms"], color="grey", linestyle=":", label="target p99")
    delay_ax.set_xlabel("concurrent calls")
    delay_ax.set_ylabel("forwarding delay (ms)")
    delay_ax.legend(fontsize=8)
    delay_ax.grid(alpha=0.3)
    cpu_ax.plot(calls, [s["core_percent_total"] for s in steps], "o-", label="gateway, % of one core")
    cpu_ax.plot(calls, [s["harness_core_percent"] for s in steps], "s--", label="load generators + Voice Live stand-in")
    cpu_ax.set_xlabel("concurrent calls")
    cpu_ax.set_ylabel("CPU (% of one core)")
    cpu_ax.legend(fontsize=8)
    cpu_ax.grid(alpha=0.3)
    fig.suptitle(f"Gateway, {result['workers']} worker(s): {result['machine']['cores']} cores, "
                 f"{result['machine']['cpu']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(result: dict[str, Any], plot_name: str | None) -> str:
    m = result["machine"]
    lines = [
        f"# Benchmark: {result['workers']} gateway worker(s)",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), Python {m['python']}, {m['platform']}.",
        f"Most calls held with p99 forwarding delay ≤ {result['target_p99_ms']:g} ms both ways and no caller "
        f"frame lost or reordered: **{result['max_calls_within_target']}**.",
        "",
        "| calls | caller→VL p50 / p99 / max ms | VL→caller p50 / p99 ms | lost / reordered | barge-in in gateway "
        "p99 ms | barge-in at phone p50 / p99 ms | gateway % core | % core per call | CPU s per call-minute "
        "| RSS KiB per call | loop lag p99 ms | harness % core |",
        "|---:|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in result["steps"]:
        c, b = s["caller_delay_ms"], s["bot_delay_ms"]
        flag = "" if s["passes"] else " ✗"
        flag += " (machine saturated)" if s.get("machine_bound") else ""
        lines.append(
            f"| {s['calls']}{flag} | {_fmt(c['p50'])} / {_fmt(c['p99'])} / {_fmt(c['max'])} | "
            f"{_fmt(b['p50'])} / {_fmt(b['p99'])} | {s['caller_frames_lost']} / {s['caller_frames_reordered']} | "
            f"{_fmt(s['barge_in_in_gateway_p99_ms'])} | {_fmt(s['barge_in_at_phone_ms']['p50'])} / "
            f"{_fmt(s['barge_in_at_phone_ms']['p99'])} | {_fmt(s['core_percent_total'], 1)} | "
            f"{_fmt(s['core_percent_per_call'], 3)} | {_fmt(s['cpu_s_per_call_minute'], 3)} | "
            f"{_fmt(s['rss_kib_per_call'], 1)} | {_fmt(s['loop_lag_p99_ms'])} | {_fmt(s['harness_core_percent'], 1)} |")
    settings = result["settings"]
    lines += [
        "",
        f"Each step: {settings['ramp']:g} calls/s ramp, {settings['warmup']:g} s warm-up, {settings['measure']:g} s "
        f"measured. Each call streams a 20 ms µ-law frame every 20 ms; the Voice Live stand-in answers every "
        f"{settings['reply_every']:g} s with {settings['reply_ms']} ms of audio sent 4x faster than real time, and "
        f"one answer in {settings['barge_in_every']} is interrupted. The gateway runs with authentication, JSON logs "
        "at info and metrics. Barge-in in the gateway is the upper bound of the histogram bucket holding the p99.",
    ]
    if plot_name:
        lines += ["", f"![delay and CPU against calls]({plot_name})"]
    return "\n".join(lines) + "\n"


def write_report(result: dict[str, Any], md_path: Path, png_path: Path) -> None:
    write_plot(result, png_path)
    md_path.write_text(markdown(result, png_path.name), encoding="utf-8")

"""The benchmark's joins and fits, without processes or sockets (``bench/run.py`` uses them).

- truncation: the stand-in records each ``conversation.item.truncate`` as (call, response,
  ``audio_end_ms``); the load generator records, when a ``clear`` (the carrier's flush) arrives, how
  much of the response then playing the phone had played. Joined per (call, response), the error is
  ``|truncated - played|`` in ms;
- barge-in at the phone: the stand-in's write of ``speech_started`` (its time, per call) to the
  first ``clear`` the phone received after it;
- memory: the slope of the loaded RSS against the calls, over the steps of a run (a least-squares
  line), beside each step's idle-to-loaded difference per call.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def join_truncations(truncations: list[dict[str, Any]], played: list[list[Any]],
                     window: tuple[float, float] | None = None) -> dict[str, Any]:
    """The truncation error per (call, response): what the client truncated the response's item to
    against what the phone had played of it when the flush arrived.

    ``truncations``: the stand-in's ``{"call", "response", "audio_end_ms", "at"}``; ``played``: the
    load generators' ``[call, response, played_ms, flush_at]``; ``window``: (start, end) of the
    measurement, to count the flushes in it that had no truncation (None: all of them)."""
    heard: dict[tuple[int, int], float] = {}
    for call, response, ms, _at in played:
        heard.setdefault((int(call), int(response)), float(ms))  # the first flush of a response counts
    errors, signed, unmatched = [], [], 0
    truncated: set[tuple[int, int]] = set()
    for t in truncations:
        key = (int(t["call"]), int(t["response"]))
        if key in truncated:
            continue  # truncated again: the first one is what the flush decided
        truncated.add(key)
        if key not in heard:
            unmatched += 1
            continue
        diff = float(t["audio_end_ms"]) - heard[key]
        signed.append(diff)
        errors.append(abs(diff))
    in_window = {(int(c), int(r)) for c, r, _, at in played
                 if window is None or window[0] <= at <= window[1]}
    return {
        "n": len(errors),
        "p50": pct(errors, 50),
        "p99": pct(errors, 99),
        "max": round(max(errors), 3) if errors else None,
        # > 0: the client truncated to more than the phone had played
        "mean_signed": round(float(np.mean(signed)), 3) if signed else None,
        "truncations_without_flush": unmatched,
        "flushes_without_truncation": len(in_window - truncated),
    }


def barge_in_reactions(barge_ins: list[dict[str, Any]], clears: list[list[Any]],
                       within_s: float = 1.0) -> list[float]:
    """For each barge-in (the stand-in's ``{"call", "sent"}``, ``sent`` the time it wrote
    ``speech_started``), ms to the first ``clear`` that call's phone received within ``within_s``."""
    by_call: dict[int, list[float]] = {}
    for call, at in clears:
        by_call.setdefault(int(call), []).append(float(at))
    reactions = []
    for barge in barge_ins:
        sent = float(barge["sent"])
        later = [t for t in by_call.get(int(barge["call"]), []) if sent <= t <= sent + within_s]
        if later:
            reactions.append((min(later) - sent) * 1000.0)
    return reactions


def rss_slope(points: list[tuple[int, float]]) -> float | None:
    """KiB per call: the least-squares slope of loaded RSS (KiB) against calls, over a run's steps;
    None with fewer than two different numbers of calls."""
    if len({calls for calls, _ in points}) < 2:
        return None
    x = np.asarray([calls for calls, _ in points], dtype=np.float64)
    y = np.asarray([rss for _, rss in points], dtype=np.float64)
    slope, _ = np.polyfit(x, y, 1)
    return round(float(slope), 2)


RATIO_FIGURES = {
    "core_percent_per_call": lambda s: s.get("core_percent_per_call"),
    "rss_kib_per_call": lambda s: s.get("rss_kib_per_call"),
    "caller_p99_ms": lambda s: s["caller_delay_ms"]["p99"],
    "bot_p99_ms": lambda s: s["bot_delay_ms"]["p99"],
    "barge_in_p99_ms": lambda s: s["barge_in_at_phone_ms"]["p99"],
}


def ratios(step: dict[str, Any], gateway: dict[str, Any]) -> dict[str, float | None]:
    """A system's figures over the gateway's in the same step (system ÷ gateway)."""
    out: dict[str, float | None] = {}
    for name, get in RATIO_FIGURES.items():
        mine, theirs = get(step), get(gateway)
        out[name] = round(mine / theirs, 3) if mine is not None and theirs else None
    return out


def steal_text(step: dict[str, Any]) -> str:
    """Each core's steal in the window, the system's own cores marked: ``0: 6.1 % (system), 1: 0.4 %``."""
    steal, own = step.get("steal_percent") or {}, {str(c) for c in step.get("system_cores") or ()}
    return ", ".join(f"{core}: {share} %{' (system)' if core in own else ''}" for core, share in steal.items()) or "?"


def steal_percent(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict[str, float]:
    """Per core, the share of the window the host took the core away (steal), in %."""
    shares = {}
    for core, (steal1, all1) in after.items():
        steal0, all0 = before.get(core, (steal1, all1))
        if all1 > all0:
            shares[core] = round((steal1 - steal0) / (all1 - all0) * 100, 1)
    return shares


HOST_STEAL_LIMIT = 1.0  # % of a core: above it, the host's pauses alone reach a p99 of 200 calls' frames


def host_bound(step: dict[str, Any]) -> bool:
    """The host, not the system, set the tail: it took at least ``HOST_STEAL_LIMIT`` % of some core in the
    window (the system's or the harness's). At 1 % of a 16 s window, 160 ms in pauses of a few ms each: a
    caller frame in flight during one waits for it, and with 200 calls that is about 1 % of the frames."""
    return max((step.get("steal_percent") or {}).values(), default=0.0) >= HOST_STEAL_LIMIT


QUIET_STEAL_LIMIT = 0.5  # % of a core: a period in which the host took less of every core is quiet


def period_steal(ticks: dict[int, dict[str, tuple[int, int]]]) -> dict[int, float]:
    """Per period *k* (ticks sampled at its start and at the next one's), the most the host took of any
    core in it, in %."""
    return {k: max(steal_percent(ticks[k], ticks[k + 1]).values(), default=0.0)
            for k in sorted(ticks) if k + 1 in ticks}


def quiet_periods(steal: dict[int, float]) -> set[int]:
    """The periods in which the host took less than ``QUIET_STEAL_LIMIT`` % of every core."""
    return {k for k, share in steal.items() if share < QUIET_STEAL_LIMIT}


def quiet_summary(step: dict[str, Any]) -> tuple[int, int, float | None, float | None] | None:
    """(quiet periods, periods, caller p99 ms, truncation error p99 ms) over a step's quiet periods; None
    when the step measured no period."""
    quiet = step.get("quiet_periods")
    if not quiet or not quiet["periods"]:
        return None
    return (quiet["quiet"], len(quiet["periods"]), (quiet["caller_delay_ms"] or {}).get("p99"),
            quiet["truncation_error_ms"]["p99"])


def in_periods(rows: list[dict[str, Any]], key: str, period_s: float, periods: set[int]) -> list[dict[str, Any]]:
    """The rows whose time ``row[key]`` falls in one of the periods."""
    return [row for row in rows if int(float(row[key]) // period_s) in periods]


def quiet_figures(vl_stats: dict[str, Any], clears: list[list[Any]], played: list[list[Any]],
                  steal: dict[int, float], period_s: float, clears_read: list[list[Any]] | None = None,
                  played_read: list[list[Any]] | None = None) -> dict[str, Any]:
    """The step's figures over its quiet periods only (the host took less than ``QUIET_STEAL_LIMIT`` % of
    every core): the caller delay the stand-in pooled over them (``caller_delay_in_quiet_periods``), the
    barge-ins whose ``speech_started`` was written in them, and those barge-ins' truncations (by when
    the phones' ``clear`` arrived, and with ``clears_read`` / ``played_read``, also by when the load
    generators read it)."""
    quiet = quiet_periods(steal)
    barge_ins = in_periods(vl_stats["barge_ins"], "sent", period_s, quiet)
    barged = {(int(b["call"]), int(b["response"])) for b in barge_ins}
    truncations = [t for t in vl_stats.get("truncations", []) if (int(t["call"]), int(t["response"])) in barged]
    reactions = barge_in_reactions(barge_ins, clears)
    caller_p99 = {int(p["period"]): p["p99"] for p in vl_stats.get("caller_delay_by_period", [])}
    truncation = join_truncations(truncations, played)
    return {
        "period_s": period_s,
        "steal_limit_percent": QUIET_STEAL_LIMIT,
        "periods": [{"period": k, "steal_percent_max": share, "caller_delay_p99_ms": caller_p99.get(k)}
                    for k, share in steal.items()],
        "quiet": len(quiet),
        "caller_delay_ms": vl_stats.get("caller_delay_in_quiet_periods"),
        "barge_in_at_phone_ms": {"n": len(reactions), "p50": pct(reactions, 50), "p99": pct(reactions, 99)},
        "truncation_error_ms": {k: truncation[k] for k in ("n", "p50", "p99", "max")},
        **read_figures(barge_ins, truncations, clears_read, played_read),
    }


def read_figures(barge_ins: list[dict[str, Any]], truncations: list[dict[str, Any]],
                 clears_read: list[list[Any]] | None, played_read: list[list[Any]] | None,
                 window: tuple[float, float] | None = None) -> dict[str, Any]:
    """The barge-in at the phone and the truncation error by when the load generators *read* the
    ``clear`` (which their busy core may delay) rather than when it arrived: beside the primary
    figures, to show how much of these the harness's own lateness would add. Empty without them."""
    if clears_read is None or played_read is None:
        return {}
    reactions = barge_in_reactions(barge_ins, clears_read)
    truncation = join_truncations(truncations, played_read, window)
    return {"barge_in_at_phone_read_ms": {"n": len(reactions), "p50": pct(reactions, 50), "p99": pct(reactions, 99)},
            "truncation_error_read_ms": {k: truncation[k] for k in ("n", "p50", "p99", "max")}}

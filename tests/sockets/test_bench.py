"""Smoke runs of the benchmark: the harness keeps working (its timings are not asserted: they belong
to the benchmark, not to pass/fail tests; how the latency run splits a turn is)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bench.harness import _ephemeral_low, free_port
from bench.latency import FIELDS, TONE_FRAME
from bench.report import markdown
from gateway.simulator.bench import CALLER_MAGIC, MARKER, BenchSettings, create_bench_app, read_turn_marker

ROOT = Path(__file__).resolve().parents[2]


def test_a_tiny_benchmark_run_measures_every_figure(tmp_path: Path) -> None:
    # a warm-up of 3 s: on a busy machine the load generator's process may take seconds to start
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--calls", "3", "--warmup", "3", "--measure", "4",
         "--reply-every", "1.5", "--reply-ms", "600", "--speech-ms", "300", "--barge-in-every", "1", "--no-plot",
         "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "workers-1.json").read_text())
    (step,) = result["steps"]
    assert step["connected"] == 3 and step["errors"] == 0, step["error_samples"]
    assert step["caller_frames"] > 3 * 50 * 2  # about 50 frames per second per call were measured
    assert step["caller_frames_lost"] == 0 and step["caller_frames_reordered"] == 0
    assert step["caller_delay_ms"]["p99"] is not None and step["bot_delay_ms"]["blocks"] > 0
    assert step["barge_ins"] > 0 and step["barge_in_at_phone_ms"]["p50"] is not None
    assert step["stand_in_commits"] > 0 and step["stand_in_replies"] > 0  # a conversation, committed
    # every barge-in interrupted audio the phone was playing: the gateway truncated it, the phone knows
    # what it had played of that response
    assert step["truncation_error_ms"]["n"] > 0 and step["truncation_error_ms"]["max"] is not None
    assert step["gateway_cpu_s"] > 0 and step["rss_kib"] > 0
    assert "3 calls held within" in done.stdout or "0 calls held within" in done.stdout
    report = markdown(result, None)
    assert "| 3" in report and "Most calls held" in report


def test_one_run_measures_the_gateway_the_forwarder_and_the_transcoder_side_by_side(tmp_path: Path) -> None:
    # a barge-in storm every 1.5 s: a 2.5 s window holds at least one for every call
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--scenario", "barge-storm", "--calls", "2",
         "--systems", "gateway,forwarder,transcoder", "--warmup", "1.5", "--measure", "2.5",
         "--reply-every", "1.5", "--reply-ms", "600", "--speech-ms", "300", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "barge-storm-workers-1.json").read_text())
    steps = {s["system"]: s for s in result["steps"]}
    assert sorted(steps) == ["forwarder", "gateway", "transcoder"] and sorted(result["systems"]) == sorted(steps)
    for system, s in steps.items():
        assert s["connected"] == 2 and s["errors"] == 0, system
        assert s["caller_frames"] > 2 * 50 and s["caller_frames_lost"] == 0, system  # audio through each bridge
        assert s["bot_delay_ms"]["blocks"] > 0, system  # and the bot's back, markers intact
        assert s["barge_ins"] >= 2 and s["barge_in_at_phone_ms"]["p99"] is not None, system
        assert s["core_percent_per_call"] > 0 and s["rss_kib"] > 0, system  # its process tree measured
    assert steps["gateway"]["truncation_error_ms"]["n"] >= 2
    assert steps["forwarder"]["truncation_error_ms"]["n"] == 0  # it does not truncate
    assert steps["gateway"]["barge_in_in_gateway_p99_ms"] is not None  # the secondary figure, gateway only
    assert steps["forwarder"]["barge_in_in_gateway_p99_ms"] is None
    for system in ("forwarder", "transcoder"):
        assert steps[system]["vs_gateway"]["core_percent_per_call"] is not None
    report = (tmp_path / "barge-storm-workers-1.md").read_text()
    assert "system ÷ gateway" in report and "| 2 | transcoder |" in report and "RSS slope" in report
    assert "barge-storm-workers-1, transcoder:" in done.stdout


async def test_the_turns_stand_in_answers_a_turn_and_stamps_what_it_held() -> None:
    """``gateway simulator --bench --turns`` over a real socket: loud frames, then the session's
    silence_duration_ms of quiet ones, get speech_started, speech_stopped, committed and a reply
    whose first block names the caller's last loud frame and the frame that ended the turn."""
    bench = BenchSettings(turns=True, response_delay_ms=40, reply_ms=480, delta_ms=240, speed=100)
    runner = web.AppRunner(create_bench_app(bench))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(
                f"http://127.0.0.1:{port}/voice-live/realtime") as ws:
            assert json.loads(await ws.receive_str())["type"] == "session.created"
            turn_detection = {"type": "server_vad", "silence_duration_ms": 100}
            await ws.send_str(json.dumps({"type": "session.update", "session": {
                "input_audio_format": "g711_ulaw", "turn_detection": turn_detection}}))
            assert json.loads(await ws.receive_str())["type"] == "session.updated"
            sent = {}
            for seq in range(13):  # 8 loud frames (160 ms), then 5 quiet ones (100 ms)
                sent[seq] = 1000.0 + seq
                frame = MARKER.pack(CALLER_MAGIC, 42, seq, sent[seq]) + (
                    TONE_FRAME[MARKER.size:] if seq < 8 else b"\xff" * (160 - MARKER.size))
                # compact, as the gateway writes it (what the lean stand-in reads)
                await ws.send_str(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(
                    frame).decode()}, separators=(",", ":")))
            events: list[dict[str, Any]] = []
            while not events or events[-1]["type"] != "response.done":
                events.append(json.loads(await ws.receive_str(timeout=10)))
    finally:
        await runner.cleanup()
    kinds = [e["type"] for e in events]
    assert kinds == ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                     "input_audio_buffer.committed", "response.created", "response.audio.delta",
                     "response.audio.delta", "response.done"]
    assert events[-1]["response"]["status"] == "completed"
    first = read_turn_marker(events[4]["delta"])
    assert first is not None
    call, last_loud, ending_sent, arrived, answered = first
    assert (call, last_loud, ending_sent) == (42, 7, sent[12])  # the 5th quiet frame ended the turn
    assert answered - arrived >= 0.04  # it held the turn for its response delay, at least
    assert read_turn_marker(events[5]["delta"]) is None  # only a reply's first block carries it
    assert len(base64.b64decode(events[4]["delta"])) == 1920


def test_a_tiny_latency_run_splits_each_turn(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--scenario", "latency", "--calls", "2",
         "--warmup", "2", "--measure", "3", "--speech-ms", "200", "--gap-ms", "100", "--reply-ms", "240",
         "--response-delay-ms", "50", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "latency-workers-1.json").read_text())
    (step,) = result["steps"]
    assert step["connected"] == 2 and step["errors"] == 0 and step["passes"]
    lat = step["latency"]
    assert lat["turns_measured"] >= 2 and lat["turns_unanswered"] == 0 and lat["turns_unmatched"] == 0
    assert step["silence_duration_ms"] == [500]  # the bench profile's, read by the stand-in
    rows = [row for g in (tmp_path / "logs" / "step-2").glob("loadgen-*.json")
            for row in json.loads(g.read_text())["turns"]]
    assert len(rows) == lat["turns_measured"]
    for row in rows:
        f = dict(zip(FIELDS, row, strict=True))
        assert 0 <= f["gateway"] <= f["end_to_end"]
        assert f["gateway"] == pytest.approx(f["gateway_in"] + f["gateway_out"], abs=0.01)
        assert f["held"] >= 49  # its response delay (uvloop's timers are 1 ms grained)
        # the 500 ms of silence less the frame that completes it: both stamps are the phone's sends, each
        # late by its tick's lateness on a loaded machine (469 ms once in CI), so a wide band that still
        # tells the profile's 500 ms from another silence duration
        assert 300 < f["vad_wait"] < 1000
        assert f["stand_in"] == pytest.approx(f["vad_wait"] + f["held"], abs=0.01)
        assert f["stand_in"] < f["end_to_end"]
    assert 0 <= lat["gateway_ms"]["p99"] <= lat["end_to_end_ms"]["p99"]
    report = (tmp_path / "latency-workers-1.md").read_text()
    assert "| 2 |" in report and "gateway's share" in report
    assert "gateway's share p99" in done.stdout


async def test_the_forwarders_voice_live_connections_have_no_pool_limit() -> None:
    """aiohttp's default pool of 100 connections would hold the 101st call's session back."""
    from bench.forwarder import HTTP, make_app

    runner = web.AppRunner(make_app("http://127.0.0.1:9"))
    await runner.setup()  # (starts its client session)
    try:
        assert runner.app[HTTP].connector.limit == 0
    finally:
        await runner.cleanup()


def test_the_harness_listens_on_ports_no_client_socket_can_have_taken() -> None:
    """A port for a process to listen on later comes from below the kernel's client port range (a
    sweep's hundreds of calls take ports from that range meanwhile), and no two are the same."""
    low = _ephemeral_low()
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(10_000 <= port < low for port in ports), (low, ports)

"""A smoke run of the capacity benchmark: the harness keeps working (its figures are not asserted;
timings belong to the benchmark, not to pass/fail tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.report import markdown

ROOT = Path(__file__).resolve().parents[2]


def test_a_tiny_benchmark_run_measures_every_figure(tmp_path: Path) -> None:
    # a warm-up of 3 s: on a busy machine the load generator's process may take seconds to start
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--calls", "3", "--warmup", "3", "--measure", "4",
         "--reply-every", "1", "--barge-in-every", "1", "--no-plot", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "workers-1.json").read_text())
    (step,) = result["steps"]
    assert step["connected"] == 3 and step["errors"] == 0
    assert step["caller_frames"] > 3 * 50 * 2  # about 50 frames per second per call were measured
    assert step["caller_frames_lost"] == 0 and step["caller_frames_reordered"] == 0
    assert step["caller_delay_ms"]["p99"] is not None and step["bot_delay_ms"]["blocks"] > 0
    assert step["barge_ins"] > 0 and step["barge_in_at_phone_ms"]["p50"] is not None
    assert step["gateway_cpu_s"] > 0 and step["rss_kib"] > 0
    assert "3 calls held within" in done.stdout or "0 calls held within" in done.stdout
    report = markdown(result, None)
    assert "| 3" in report and "Most calls held" in report

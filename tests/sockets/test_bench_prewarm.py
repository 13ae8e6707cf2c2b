"""A smoke run of the pre-warm benchmark: against a stand-in taking 300 ms to set a session up, a call
whose webhook came 600 ms ahead hears its greeting sooner than that set-up (its warm session was
used), and one without pre-warm cannot (it waits for the set-up)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETUP_MS = 300


def test_the_warm_session_beats_the_set_up_and_the_cold_one_waits_for_it(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "prewarm.py"), "--calls", "2", "--ways", "ahead", "no-prewarm",
         "--setup-delay-ms", str(SETUP_MS), "--response-delay-ms", "0", "--lead-ms", "600",
         "--name", "smoke", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    ahead, cold = json.loads((tmp_path / "smoke.json").read_text())["ways"]
    assert (ahead["way"], ahead["n"], ahead["errors"]) == ("ahead", 2, [])
    assert (cold["way"], cold["n"], cold["errors"]) == ("no-prewarm", 2, [])
    assert ahead["warm_sessions"] == {"opened": 2.0, "used": 2.0} and cold["warm_sessions"] == {}
    assert ahead["max"] < SETUP_MS <= min(cold["ms"])
    assert "start -> first bot audio" in done.stdout

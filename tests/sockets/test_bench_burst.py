"""A smoke run of the burst benchmark: 6 calls against a budget of 3 (the stand-in refusing beyond 3
a minute too). With one worker the webhook knows the budget exactly: 3 callers talk to the bot, 3 hear
the busy message, none fails, and the stand-in never had to refuse a connect."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_small_burst_talks_within_the_budget_and_gives_the_rest_the_busy_message(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "burst.py"), "--calls", "6", "--budget", "3", "--within", "1",
         "--talk", "greeting", "--setup-delay-ms", "50", "--name", "smoke", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    result = json.loads((tmp_path / "smoke.json").read_text())
    assert done.returncode == 0, done.stdout + done.stderr
    assert (result["calls"], result["talked"], result["busy"], result["failed"]) == (6, 3, 3, 0), result["failures"]
    assert result["heard"] == {"bot": 3, "busy message": 3}
    assert result["standin"] == {"accepted": 3, "refused_429": 0, "most_accepted_in_any_60s": 3, "limit_per_minute": 3}
    talked = [c for c in result["per_call"] if c["outcome"] == "talked"]
    assert all(c["bot_ms"] >= 200 for c in talked)
    assert "PASSED" in done.stdout

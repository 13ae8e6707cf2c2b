"""The command line as users run it: real processes, real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.audio import ASSETS, load_ulaw_8k, read_wav
from gateway.carriers.twilio.phone import place_call
from gateway.simulator import RunningSimulator
from gateway.softphone import Hangup, Say, WaitForBot
from tests.sockets.served import ROOT, Served, clean_env, free_port, serve_gateway

TWILIO_TOKEN = "cli-test-twilio-token-77"


async def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, cwd=ROOT, env=env or clean_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_check_config_shows_what_each_number_gets() -> None:
    code, out, _ = await _run("check-config")
    assert code == 0
    assert "config.yaml: OK" in out
    assert "+15555550100 -> sales" in out and "any other number -> support" in out


async def test_check_config_reports_the_line_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "config.yaml").read_text().replace("voice: marin", "voice: robot"))
    code, out, err = await _run("check-config", str(bad))
    assert code == 2 and out == ""
    line_no = next(i for i, line in enumerate(bad.read_text().splitlines(), 1) if "voice: robot" in line)
    assert f"bad.yaml:{line_no}: profiles.sales.voice" in err
    assert "Traceback" not in err


async def test_replay_command_passes_the_corpus() -> None:
    fixtures = sorted(str(p) for p in (ROOT / "tests" / "fixtures" / "calls").glob("*.jsonl"))
    code, out, _ = await _run("replay", *fixtures)
    assert code == 0, out
    assert out.count("PASS ") == len(fixtures) and f"{len(fixtures)} passed, 0 failed" in out


@pytest.fixture
async def served_with_builtin_simulator() -> AsyncIterator[Served]:
    # carrier credentials mean real calls: the simulator must be asked for by name
    async with serve_gateway(clean_env(TWILIO_AUTH_TOKEN=TWILIO_TOKEN, AZURE_VOICELIVE_ENDPOINT="simulator")) as served:
        yield served


async def test_serve_uses_the_builtin_simulator_and_says_so(served_with_builtin_simulator: Served) -> None:
    served = served_with_builtin_simulator
    events = [line.get("event", "") for line in served.lines]
    assert any("built-in Voice Live simulator" in e for e in events)
    report = await place_call(served.base + "/twilio/voice", [
        Say(load_ulaw_8k(ASSETS / "caller_hours.wav"), "question"), WaitForBot(), Hangup()],
        auth_token=TWILIO_TOKEN)
    assert report.violations == 0 and report.played_bytes > 8000
    served.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(served.proc.wait(), 20) == 0


async def test_serve_talks_to_the_configured_endpoint_and_the_call_command_works(
        tmp_path: Path, sim: RunningSimulator) -> None:
    env = clean_env(AZURE_VOICELIVE_ENDPOINT=sim.endpoint, TWILIO_AUTH_TOKEN=TWILIO_TOKEN)
    async with serve_gateway(env) as served:
        backend = next(line for line in served.lines if line.get("event") == "Voice Live backend")
        assert backend["endpoint"] == sim.endpoint
        out_wav = tmp_path / "out.wav"
        code, out, err = await _run(
            "call", served.base + "/twilio/voice", "--play", str(ASSETS / "caller_hours.wav"),
            "--record", str(out_wav), env=env)
        assert code == 0, out + err
        wav = read_wav(out_wav)
        assert wav.rate == 8000 and wav.samples.shape[1] == 2
        assert len(sim.state.sessions) == 1
        session = await asyncio.wait_for(sim.state.wait_closed(0), 10)
        assert session.appended  # the caller's audio reached the configured endpoint


async def test_serve_with_carrier_credentials_and_no_voice_live_endpoint_refuses_to_start() -> None:
    code, out, err = await _run("serve", "--port", str(free_port()), env=clean_env(TWILIO_AUTH_TOKEN=TWILIO_TOKEN))
    assert code == 2 and out == ""
    assert err.strip() == (
        "config.yaml: not starting: twilio.auth_token is set (real calls), but no Voice Live endpoint is: set "
        "AZURE_VOICELIVE_ENDPOINT to the Voice Live resource, or write voicelive.endpoint: simulator to send "
        "calls to the built-in simulator on purpose")
    code, out, _ = await _run("check-config", env=clean_env(TWILIO_AUTH_TOKEN=TWILIO_TOKEN))
    assert code == 0 and "gateway serve will refuse to start: twilio.auth_token is set" in out


async def test_an_unknown_log_level_is_an_error_not_info() -> None:
    code, out, err = await _run("check-config", env=clean_env(GATEWAY_LOG_LEVEL="verbose"))
    assert (code, out) == (2, "")
    assert err.strip() == "gateway: GATEWAY_LOG_LEVEL must be one of debug, info, warning, error (got 'verbose')"


async def test_log_lines_go_to_standard_error() -> None:
    code = "from gateway import log; log.configure(); log.get_logger('test').info('where do I go')"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, cwd=ROOT, env=clean_env(), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert out == b"" and json.loads(err)["event"] == "where do I go"  # as docs/operations.md says


async def test_several_workers_refuse_the_outbound_call_api(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("voicelive: {endpoint: simulator}\ngateway: {signing_key: \"${K}\", api_token: \"${T}\"}\n"
                      "profiles: {main: {model: gpt-realtime}}\n")
    env = {**clean_env(), "K": "k" * 48, "T": "t" * 32}
    code, out, err = await _run("serve", "--config", str(config), "--workers", "2", "--port", str(free_port()),
                                env=env)
    assert (code, out) == (2, "")
    assert "not starting 2 workers: the outbound-call API is on" in err


async def test_several_workers_need_one_signing_key_for_all(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("voicelive: {endpoint: simulator}\nprofiles: {main: {model: gpt-realtime}}\n")
    code, out, err = await _run("serve", "--config", str(config), "--workers", "2", "--port", str(free_port()))
    assert (code, out) == (2, "")
    assert "gateway.signing_key is not set and does not read GATEWAY_SIGNING_KEY" in err


async def test_check_config_diff_prints_the_changes_and_refuses_an_invalid_file(tmp_path: Path) -> None:
    old, new, bad = tmp_path / "old.yaml", tmp_path / "new.yaml", tmp_path / "bad.yaml"
    old.write_text("gateway: {signing_key: \"${KEY}\"}\nprofiles:\n  main: {model: gpt-realtime, voice: marin}\n"
                   "  legacy: {model: gpt-realtime}\nroutes: {default: main}\n")
    new.write_text(old.read_text().replace("legacy", "sales").replace("voice: marin", "voice: cedar")
                   .replace("default: main", "default: sales").replace("gateway: {", "gateway: {max_calls: 300, "))
    bad.write_text(new.read_text().replace("voice: cedar", "voice: robot"))
    env = clean_env(KEY="the-signing-key-of-this-test")
    code, out, err = await _run("check-config", "--diff", str(old), str(new), env=env)
    assert (code, err) == (0, ""), err
    assert out.splitlines() == [
        "profiles: added sales; removed legacy",
        'profiles.main.voice: "marin" -> "cedar"',
        'routes.default: "main" -> "sales"',
        "gateway.max_calls: 200 -> 300",
    ]
    code, out, _ = await _run("check-config", "--diff", str(old), str(old), env=env)
    assert (code, out) == (0, "no change\n")
    code, out, err = await _run("check-config", "--diff", str(old), str(bad), env=env)
    assert (code, out) == (1, "")
    line_no = next(i for i, line in enumerate(bad.read_text().splitlines(), 1) if "voice: robot" in line)
    assert err.splitlines()[:2] == [f"{bad}: the new configuration is not valid:",
                                    f"{bad}:{line_no}: profiles.main.voice: expected an OpenAI realtime voice: one "
                                    "of alloy, ash, ballad, coral, echo, sage, shimmer, verse, marin, cedar; Azure "
                                    "voices are written as a mapping such as {type: azure-standard, name: "
                                    "en-US-AvaNeural} (got 'robot')"]
    assert "Traceback" not in err and "the-signing-key" not in err
    code, out, err = await _run("check-config", "--diff", str(old), str(new), env=clean_env())
    assert (code, out) == (1, "")  # KEY unset: both files name it
    assert err.count("environment variable KEY is not set") == 2
    assert f"{old}: the old configuration is not valid:" in err and f"{new}: the new configuration is not valid:" in err

"""Live calls recorded through the gateway over sockets (127.0.0.1): a fixture that replays, a disk error
that must not hurt the call, a tool's secrets kept out (the recorder alone: tests/core/test_recording.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from aiohttp import web

from gateway.app import create_app
from gateway.audio import ASSETS, load_ulaw_8k
from gateway.carriers.twilio.phone import place_call
from gateway.config import parse_config
from gateway.replay import load_fixture, run
from gateway.simulator import SimulatorSettings, ToolCall, start_simulator
from gateway.softphone import Hangup, Say, WaitForBot
from tests.sockets.loopback import LogCapture, listen, serve

HOURS = load_ulaw_8k(ASSETS / "caller_hours.wav")


async def _call_through_gateway(tmp: Path, directory: str, redact: bool, profile: str = "{model: gpt-realtime}",
                                env: dict[str, str] | None = None,
                                settings: SimulatorSettings | None = None) -> object:
    async with await start_simulator(settings or SimulatorSettings(audio_speed=8.0)) as sim:
        config = parse_config(f"""
voicelive: {{endpoint: "{sim.endpoint}"}}
twilio: {{auth_token: "${{TOKEN}}"}}
recording: {{directory: "{directory}", redact_audio: {str(redact).lower()}}}
profiles: {{main: {profile}}}
""", env={"TOKEN": "recording-test-token", **(env or {})})
        runner = web.AppRunner(create_app(config))
        try:
            base = await listen(runner)
            return await place_call(base + "/twilio/voice", [Say(HOURS, "q"), WaitForBot(), Hangup()],
                                    auth_token="recording-test-token")
        finally:
            await runner.cleanup()


async def test_a_live_call_records_a_fixture_that_replays(tmp_path: Path) -> None:
    report = await _call_through_gateway(tmp_path, str(tmp_path / "calls"), redact=True)
    (path,) = (tmp_path / "calls").glob("*.jsonl")
    fixture = load_fixture(path)
    assert fixture.header["redacted_audio"] is True
    media = [json.loads(r["msg"]) for r in fixture.records if r["leg"] == "phone" and '"media"' in r.get("msg", "")]
    payloads = [m["media"]["payload"] for m in media]
    assert payloads and all(set(base64.b64decode(p)) == {0xFF} for p in payloads)  # callers' voices removed
    sent = [m for m in media if "track" not in m["media"]]
    assert sum(len(base64.b64decode(m["media"]["payload"])) for m in sent) == report.played_bytes
    result = run(fixture)
    assert result.ok, f"{result.mismatch}\n{result.problems}"


async def test_a_disk_error_is_logged_once_and_the_call_goes_on(tmp_path: Path, log_capture: LogCapture) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the recording directory should be")
    with log_capture("info") as buf:
        report = await _call_through_gateway(tmp_path, str(blocker / "calls"), redact=False)
    assert report.played_bytes > 0 and report.violations == 0  # type: ignore[attr-defined]
    failures = [line for line in buf.getvalue().splitlines() if "call recording failed" in line]
    assert len(failures) == 1


async def _echo_url(request: web.Request) -> web.Response:
    return web.json_response({"you_called": request.raw_path, "order": "shipped"})


async def test_a_tool_s_secrets_never_reach_the_recording(tmp_path: Path) -> None:
    """The header holds the resolved profile (tool URL and headers); the messages hold the tool's
    output, here echoing the URL with its key. Neither secret is in the file, in any JSON form."""
    url_key = "fnkey-Q8xZ4Lm_0a=="
    password = 'pa"ss\\w0rd-77'  # a quote and a backslash: changed by JSON encoding
    app = web.Application()
    app.router.add_post("/fn", _echo_url)
    service, base = await serve(app)
    try:
        profile = ("{model: gpt-realtime, tools: [{name: lookup_order, description: Find an order., "
                   f'http: {{url: "{base}/fn?code=${{FN_KEY}}", headers: {{X-Password: "${{FN_PASSWORD}}"}}}}}}]}}')
        settings = SimulatorSettings(audio_speed=8.0, tool_calls={1: ToolCall("lookup_order", {"order": "42"})})
        await _call_through_gateway(tmp_path, str(tmp_path / "calls"), redact=True, profile=profile,
                                    env={"FN_KEY": url_key, "FN_PASSWORD": password}, settings=settings)
    finally:
        await service.cleanup()
    (path,) = (tmp_path / "calls").glob("*.jsonl")
    text = path.read_text()
    assert "you_called" in text and "/fn?code=***" in text  # the tool ran, and its output is recorded
    for secret in (url_key, password):
        once = json.dumps(secret)[1:-1]
        for form in (secret, once, json.dumps(once)[1:-1]):
            assert form not in text

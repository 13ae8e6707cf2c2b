"""The call recorder: what it writes, redaction, secrets, and failures that must not hurt a call."""

from __future__ import annotations

import base64
import io
import json
import threading
from pathlib import Path

from aiohttp import web

from gateway import log
from gateway.app import create_app
from gateway.audio import ASSETS, G711_ULAW, load_ulaw_8k
from gateway.carriers.twilio.phone import place_call
from gateway.config import parse_config
from gateway.recording import FORMAT, CallRecorder, RecordingWriter, redact_audio
from gateway.replay import load_fixture, run
from gateway.simulator import SimulatorSettings, ToolCall, start_simulator
from gateway.softphone import Hangup, Say, WaitForBot
from tests.loopback import serve

HOURS = load_ulaw_8k(ASSETS / "caller_hours.wav")


def test_redaction_keeps_length_and_every_other_field() -> None:
    audio = base64.b64encode(bytes(range(160))).decode()
    msg = json.dumps({"event": "media", "sequenceNumber": "7", "streamSid": "MZ1",
                      "media": {"track": "inbound", "chunk": "6", "timestamp": "120", "payload": audio}})
    redacted = redact_audio(msg, "phone", "in", 0xFF)
    parsed, original = json.loads(redacted), json.loads(msg)
    assert base64.b64decode(parsed["media"]["payload"]) == b"\xff" * 160
    parsed["media"].pop("payload")
    original["media"].pop("payload")
    assert parsed == original
    delta = json.dumps({"type": "response.audio.delta", "response_id": "r", "item_id": "i",
                        "delta": base64.b64encode(b"\x01" * 1001).decode()})
    assert base64.b64decode(json.loads(redact_audio(delta, "voicelive", "in", 0xFF))["delta"]) == b"\xff" * 1001
    other = '{"type":"session.update","session":{"instructions":"media"}}'
    assert redact_audio(other, "voicelive", "out", 0xFF) == other


def _writer(tmp_path: Path, **kw) -> tuple[RecordingWriter, CallRecorder]:
    writer = RecordingWriter(tmp_path / "rec", **kw)
    recorder = writer.open_call(carrier="twilio", call_id="CA1", stream_id="MZ1", profile_name="p",
                                profile={"model": "m"}, audio=G711_ULAW)
    return writer, recorder


def test_lines_hold_time_leg_direction_and_the_exact_message(tmp_path: Path) -> None:
    writer, recorder = _writer(tmp_path, redact_audio=False)
    recorder.record(1.5, "phone", "in", '{"event":"connected"}')
    recorder.record(2.25, "voicelive", "open")
    recorder.record(3.0, "phone", "in", b"\x00\x01")
    recorder.record(4.0, "voicelive", "closed", code=1011)
    recorder.close()
    writer.close()
    header, *lines = [json.loads(x) for x in recorder.path.read_text().splitlines()]
    assert header["format"] == FORMAT and header["carrier"] == "twilio" and header["call_id"] == "CA1"
    assert header["profile"] == {"model": "m"} and header["gateway_version"] and header["started_at"]
    assert lines == [
        {"t": 1.5, "leg": "phone", "dir": "in", "msg": '{"event":"connected"}'},
        {"t": 2.25, "leg": "voicelive", "event": "open"},
        {"t": 3.0, "leg": "phone", "dir": "in", "binary": "AAE="},
        {"t": 4.0, "leg": "voicelive", "event": "closed", "code": 1011},
    ]


def test_secrets_never_reach_a_recording(tmp_path: Path) -> None:
    secret = "tok-very-secret-4242"
    log.register_secret(secret)
    writer, recorder = _writer(tmp_path)
    recorder.record(1.0, "phone", "in", json.dumps({"event": "start", "start": {"customParameters": {"t": secret}}}))
    recorder.close()
    writer.close()
    text = recorder.path.read_text()
    assert secret not in text and "***" in text


def test_a_stalled_disk_never_blocks_and_the_backlog_is_bounded(tmp_path: Path, monkeypatch) -> None:
    buf = io.StringIO()
    log.configure(level="info", json_output=True, stream=buf)
    release = threading.Event()
    original = CallRecorder._write

    def stalled(self: CallRecorder, text: str) -> None:
        release.wait()
        original(self, text)

    monkeypatch.setattr(CallRecorder, "_write", stalled)
    try:
        writer, recorder = _writer(tmp_path, max_backlog=50)
        for i in range(500):  # returns at once although nothing can be written
            recorder.record(float(i), "phone", "in", '{"event":"media"}')
        assert recorder.stopped and recorder.enqueued <= 52
        release.set()
        recorder.close()
        writer.close()
    finally:
        release.set()
        log.configure(level="info")
    errors = [json.loads(x) for x in buf.getvalue().splitlines() if '"error"' in x]
    assert len(errors) == 1 and "cannot keep up" in errors[0]["event"]
    assert len(recorder.path.read_text().splitlines()) == 1 + recorder.enqueued


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
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            return await place_call(f"http://127.0.0.1:{port}/twilio/voice", [Say(HOURS, "q"), WaitForBot(), Hangup()],
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


async def test_a_disk_error_is_logged_once_and_the_call_goes_on(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the recording directory should be")
    buf = io.StringIO()
    log.configure(level="info", json_output=True, stream=buf)
    try:
        report = await _call_through_gateway(tmp_path, str(blocker / "calls"), redact=False)
    finally:
        log.configure(level="info")
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

"""Configuration reloads over real sockets: a gateway in this process reloading its file (a call in
progress keeps its profile, the next one gets the new one; an invalid file changes nothing; a
ConfigMap's symbolic link swap is seen), and ``gateway serve --workers 2`` where both workers reload."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway import metrics
from gateway.app import RELOADER, create_app
from gateway.audio import ASSETS, load_ulaw_8k
from gateway.bridge import CONTEXT
from gateway.carriers.browser.phone import place_browser_call
from gateway.config import load_config
from gateway.reload import ConfigReloader, file_hash
from gateway.simulator import RunningSimulator, SimulatorSettings, start_simulator
from gateway.softphone import Hangup, Say, Silence, WaitForBot
from tests.sockets.served import clean_env, free_port, serve_gateway

from .conftest import LogCapture

HOURS = load_ulaw_8k(ASSETS / "caller_hours.wav")

CONFIG = """\
voicelive: {{endpoint: "{endpoint}"}}
gateway: {{insecure_dev_mode: true, max_calls: {max_calls}}}
recording: {{directory: "{recordings}"}}
profiles:
  main:
    model: gpt-realtime
    voice: {voice}
    turn_detection: {{type: server_vad, silence_duration_ms: 400}}
routes:
  default: main
"""


@dataclass
class Rig:
    sim: RunningSimulator
    app: web.Application
    base: str
    path: Path  # the configuration file the gateway reloads from
    ready: dict[str, asyncio.Event]  # call id -> set once its session is ready
    new_ready: asyncio.Event  # set when a call's session becomes ready

    @property
    def reloader(self) -> ConfigReloader:
        return self.app[RELOADER]

    def write(self, text: str) -> None:
        """Replace the file as an editor saving it does (a new file renamed over the old one)."""
        fresh = self.path.with_name(self.path.name + ".new")
        fresh.write_text(text)
        os.replace(fresh, self.path)

    def text(self, voice: str = "alloy", max_calls: int = 20, recordings: str = "") -> str:
        return CONFIG.format(endpoint=self.sim.endpoint, voice=voice, max_calls=max_calls,
                             recordings=recordings or str(self.path.parent / "recordings"))

    async def call(self, steps: list[Any]) -> Any:
        return await place_browser_call(self.base.replace("http://", "ws://") + "/console/media", steps,
                                        profile="main")

    async def next_ready(self) -> str:
        """The id of the next call whose session becomes ready."""
        while True:
            known = set(self.ready)
            await asyncio.wait_for(self.new_ready.wait(), 15)
            self.new_ready.clear()
            for call_id in set(self.ready) - known:
                return call_id


@contextlib.asynccontextmanager
async def reload_rig(path: Path) -> AsyncIterator[Rig]:
    sim = await start_simulator(SimulatorSettings(audio_speed=4.0))
    ready: dict[str, asyncio.Event] = {}
    new_ready = asyncio.Event()

    def observer_for(call_id: str) -> Any:
        def observe(event: str, _t: float, _fields: dict[str, Any]) -> None:
            if event == "session.ready":
                ready.setdefault(call_id, asyncio.Event()).set()
                new_ready.set()
        return observe

    rig = Rig(sim, web.Application(), "", path, ready, new_ready)
    await asyncio.to_thread(path.write_text, rig.text())  # (through the path's symbolic links, if any)
    app = create_app(load_config(path), observer_factory=observer_for, reload_from=str(path),
                     reload_interval_s=0.05)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    rig.app, rig.base = app, f"http://127.0.0.1:{port}"
    try:
        yield rig
    finally:
        await runner.cleanup()
        await sim.close()


async def test_a_call_in_progress_keeps_its_voice_and_the_next_call_gets_the_new_one(tmp_path: Path) -> None:
    async with reload_rig(tmp_path / "config.yaml") as rig:
        ok_before = metrics.CONFIG_RELOADS.value("ok")
        first = asyncio.create_task(rig.call([Say(HOURS, "hours"), WaitForBot(), Hangup()]))
        first_id = await rig.next_ready()
        rig.write(rig.text(voice="marin", max_calls=30))
        assert await asyncio.wait_for(rig.reloader.finished(1), 10) == "ok"
        ctx = rig.app[CONTEXT]
        assert list(ctx.calls) == [first_id]  # the reload happened while the first call was in progress
        assert ctx.config.profiles["main"].voice == "marin" and ctx.config.gateway.max_calls == 30
        second = asyncio.create_task(rig.call([Silence(300), Hangup()]))
        await rig.next_ready()
        first_report, _ = await asyncio.wait_for(asyncio.gather(first, second), 30)
    assert first_report.played_bytes > 0  # the first call went on after the reload: the bot answered it
    voices = [session.session["voice"] for session in rig.sim.state.sessions]
    assert voices == ["alloy", "marin"]
    assert metrics.CONFIG_RELOADS.value("ok") == ok_before + 1
    assert metrics.CONFIG_INFO.value(rig.reloader.hash or "") == 1
    assert rig.reloader.hash == file_hash(rig.path.read_bytes())


async def test_an_invalid_file_changes_nothing_and_every_problem_is_logged_with_its_line(
        tmp_path: Path, log_capture: LogCapture) -> None:
    async with reload_rig(tmp_path / "config.yaml") as rig:
        ctx = rig.app[CONTEXT]
        running = ctx.config
        hash_before = rig.reloader.hash
        invalid_before = metrics.CONFIG_RELOADS.value("invalid")
        broken = rig.text(voice="marin", max_calls=-3).replace("    model: gpt-realtime\n", "    model: gpt-realtime\n"
                                                                "    temprature: 0.7\n")
        with log_capture("info") as logs:
            rig.write(broken)
            assert await asyncio.wait_for(rig.reloader.finished(1), 10) == "invalid"
        assert ctx.config is running and ctx.config.profiles["main"].voice == "alloy"
        assert rig.reloader.hash == hash_before  # the metric still shows the running file's hash
        assert metrics.CONFIG_RELOADS.value("invalid") == invalid_before + 1
        lines = [json.loads(line) for line in logs.getvalue().splitlines()]
        problems = [line["problem"] for line in lines if line["event"] == "configuration problem"]
        source = str(rig.path)
        assert any(p.startswith(f"{source}:2: gateway.max_calls") for p in problems), problems
        assert any(p.startswith(f"{source}:7: profiles.main.temprature") for p in problems), problems
        assert any(line["event"].startswith("configuration reload failed") and line["level"] == "error"
                   for line in lines)
        await rig.call([Silence(300), Hangup()])  # a call after the failed reload: the running profile
    assert [session.session["voice"] for session in rig.sim.state.sessions] == ["alloy"]


async def test_a_configmap_update_that_swaps_a_symbolic_link_is_reloaded(tmp_path: Path) -> None:
    """Kubernetes mounts a ConfigMap as ``config.yaml -> ..data/config.yaml`` with ``..data`` a link to
    a timestamped directory; an update writes a new directory and renames a new ``..data`` link over
    the old one (the file's own link, and its modification time in the old directory, never change)."""
    mount = tmp_path / "config"
    mount.mkdir()
    first = mount / "..2026_12_02_10_00_00.1"
    first.mkdir()
    (mount / "..data").symlink_to(first.name)
    (mount / "config.yaml").symlink_to("..data/config.yaml")
    async with reload_rig(mount / "config.yaml") as rig:
        ctx = rig.app[CONTEXT]
        assert ctx.config.profiles["main"].voice == "alloy" and (first / "config.yaml").is_file()
        second = mount / "..2026_12_02_10_05_00.2"
        second.mkdir()
        (second / "config.yaml").write_text(rig.text(voice="marin"))
        (mount / "..data_tmp").symlink_to(second.name)
        os.replace(mount / "..data_tmp", mount / "..data")  # the atomic swap
        assert await asyncio.wait_for(rig.reloader.finished(1), 10) == "ok"
        assert ctx.config.profiles["main"].voice == "marin"
        assert rig.reloader.hash == file_hash((second / "config.yaml").read_bytes())


async def test_a_setting_read_at_start_up_is_reported_as_needing_a_restart_and_sighup_reloads(
        tmp_path: Path, log_capture: LogCapture) -> None:
    async with reload_rig(tmp_path / "config.yaml") as rig:
        ctx = rig.app[CONTEXT]
        directory = ctx.config.recording.directory
        with log_capture("info") as logs:
            rig.write(rig.text(max_calls=7, recordings=str(tmp_path / "elsewhere")))
            assert await asyncio.wait_for(rig.reloader.finished(1), 10) == "ok"
        assert ctx.config.gateway.max_calls == 7 and ctx.config.recording.directory == directory
        (warning,) = [json.loads(line) for line in logs.getvalue().splitlines()
                      if "needs a restart" in json.loads(line)["event"]]
        assert warning["keys"] == ["recording"] and warning["level"] == "warning"
        rig.reloader.request("SIGHUP")  # what serve does on SIGHUP: the file is read again, unchanged
        assert await asyncio.wait_for(rig.reloader.finished(2), 10) == "unchanged"


async def test_two_workers_both_reload_on_a_change_and_on_sighup(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    text = ("voicelive: {endpoint: simulator}\ngateway: {signing_key: \"${GATEWAY_SIGNING_KEY:-}\", max_calls: 10}\n"
            "profiles: {main: {model: gpt-realtime, voice: alloy}}\nroutes: {default: main}\n")
    path.write_text(text)
    old_hash = file_hash(path.read_bytes())
    async with serve_gateway(clean_env(), "--config", str(path), workers=2) as served:
        fresh = path.with_name("config.yaml.new")
        fresh.write_text(text.replace("voice: alloy", "voice: marin"))
        os.replace(fresh, path)
        new_hash = file_hash(path.read_bytes())

        def reloaded(what: str) -> bool:
            return len([line for line in served.lines if line.get("event", "").startswith(what)]) >= 2

        await served.wait_for(lambda: reloaded("configuration reloaded: calls that start now"), 20)
        samples = await served.scrape()
        assert samples[("gateway_config_reloads_total", frozenset({("result", "ok")}))] == 2
        assert samples[("gateway_config_info", frozenset({("hash", new_hash)}))] == 1
        assert samples[("gateway_config_info", frozenset({("hash", old_hash)}))] == 0
        served.proc.send_signal(signal.SIGHUP)  # to the supervisor: it passes it on to each worker
        await served.wait_for(lambda: reloaded("configuration reloaded: nothing changed"), 20)
        assert served.proc.returncode is None and len(served.listening_pids()) == 2


async def test_a_reload_reads_the_environment_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``${VAR}`` is read at each reload: a token the process's environment holds now is the one taken
    (a signal after the environment changed, as a process manager that sets it anew would send)."""
    monkeypatch.setenv("RELOAD_TEST_TWILIO_TOKEN", "first-token-0001")
    async with reload_rig(tmp_path / "config.yaml") as rig:
        rig.write(rig.text() + 'twilio: {auth_token: "${RELOAD_TEST_TWILIO_TOKEN}"}\n')
        assert await asyncio.wait_for(rig.reloader.finished(1), 10) == "ok"
        ctx = rig.app[CONTEXT]
        assert ctx.config.twilio.auth_token is not None
        assert ctx.config.twilio.auth_token.get_secret_value() == "first-token-0001"
        monkeypatch.setenv("RELOAD_TEST_TWILIO_TOKEN", "second-token-0002")
        rig.reloader.request("SIGHUP")
        assert await asyncio.wait_for(rig.reloader.finished(2), 10) == "ok"
        assert ctx.config.twilio.auth_token.get_secret_value() == "second-token-0002"

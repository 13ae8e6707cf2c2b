"""The operator console in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``),
driven through Selenium, against a gateway on 127.0.0.1 with the Voice Live simulator.

Chromium's fake microphone plays a shipped caller recording (a question, a pause, then an
interruption), so the page's own capture, media socket, playout clock and barge-in flush are the
ones under test: the operator logs in, calls a profile, hears the bot (marks acknowledged by the
page's playout clock), talks over it (the page drops its queued audio at once, and the gateway
cuts the model's memory of the answer to what the page played), then ends the call from the
calls list. A Twilio caller's call shows in the same list, with its carrier.

Selenium never looks for or downloads a browser or a driver here: the system's chromedriver is
given by path, and Chromium resolves no name but the loopback address, so nothing leaves the
machine. With ``CONSOLE_SCREENSHOT=<path>`` set, the page is saved as a PNG in the middle of the
call (the README's picture of the console).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from aiohttp import web
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.selenium_manager import SeleniumManager
from selenium.webdriver.support.ui import Select, WebDriverWait

from gateway.app import create_app
from gateway.audio import ASSETS, load_ulaw_8k, read_wav, resample, write_wav
from gateway.bridge import CONTEXT
from gateway.carriers.browser.settings import DEFAULT_PIECE_MS
from gateway.carriers.twilio.phone import place_call
from gateway.config import parse_config
from gateway.simulator import RunningSimulator, SimulatorSettings, start_simulator
from gateway.softphone import Hangup, Say, Silence, WaitForBot
from tests.sockets.loopback import serve
from tests.sockets.test_records import SECRET as RECORDS_SECRET
from tests.sockets.test_records import Hook

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
    reason="the console's test needs Chromium and its driver: apt-get install chromium chromium-driver "
           "(/usr/bin/chromium and /usr/bin/chromedriver)")

CONSOLE_TOKEN = "console-test-token-5173"
TWILIO_TOKEN = "console-test-twilio-token-88"
RATE = 24_000  # the console's phone: PCM16 at 24 kHz both ways
WAIT_S = 20  # a bound on awaiting what the test causes (never waited out when all is well)
POLL_S = 0.05  # how often a wait looks at the page again
CONFIG = """
voicelive: {endpoint: "${EP}"}
gateway: {console_token: "${CONSOLE}"}
twilio: {auth_token: "${TWILIO}"}
records:
  webhook: ${HOOK}
  signing_secret: ${RECORDS_SECRET}
  spool_directory: ${SPOOL}
  initial_backoff_s: 0.01
  max_backoff_s: 0.02
profiles:
  main:
    model: gpt-realtime
    voice: alloy
    turn_detection: {type: server_vad, silence_duration_ms: 400}
  greeter:
    model: gpt-realtime
    voice: alloy
    turn_detection: {type: server_vad, silence_duration_ms: 400}
    greeting: Hello, thanks for calling. How can I help you today?
routes:
  default: greeter
"""

# What the fake microphone says, from the moment the page opens it (the Call button): silence while the
# call connects, the question, a pause (the bot starts its answer, about 3.5 s long, some 0.7 s after
# the question ends), the interruption about a second into that answer, then silence (played once).
LEAD_S, PAUSE_S = 1.5, 1.8
HOURS = load_ulaw_8k(ASSETS / "caller_hours.wav")  # (a Twilio caller's question)

T = TypeVar("T")


def caller_wav(path: Path) -> Path:
    """The fake microphone's recording, from the shipped caller clips, as Chromium's fake capture reads
    it: 16-bit PCM mono WAV, 48 kHz (a device's usual rate)."""
    rate = 48_000

    def clip(name: str) -> np.ndarray:
        wav = read_wav(ASSETS / name)
        return resample(wav.mono, wav.rate, rate)

    def silence(seconds: float) -> np.ndarray:
        return np.zeros(round(seconds * rate), dtype=np.int16)

    samples = np.concatenate([silence(LEAD_S), clip("caller_hours.wav"), silence(PAUSE_S),
                              clip("caller_interrupt.wav"), silence(1.0)])
    write_wav(path, samples, rate)
    return path


def chromium(microphone: Path, scratch: Path) -> Any:
    """Headless Chromium through the system's chromedriver, its microphone playing ``microphone`` once,
    its profile and temporary files in ``scratch``."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # (Chromium's sandbox starts neither as root nor in most containers)
        "--disable-dev-shm-usage",
        "--window-size=1280,800",
        "--use-fake-ui-for-media-stream",  # the microphone is allowed without asking
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}%noloop",
        "--autoplay-policy=no-user-gesture-required",
        # nothing leaves the machine: no background requests, and no name resolves but the loopback address
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-default-apps",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(argument)
    # the driver given by path: Selenium Manager (which may download browsers and drivers) is skipped
    service = Service(executable_path=str(CHROMEDRIVER), env={**os.environ, "TMPDIR": str(scratch)})
    driver = webdriver.Chrome(service=service, options=options)
    try:  # the page itself 1280x800, whatever the headless window's frame takes
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})
    except BaseException:
        driver.quit()
        raise
    return driver


class Page:
    """The browser's window on the console, driven from the test's event loop: every WebDriver call
    blocks, so each runs on a thread of its own while the gateway goes on serving."""

    def __init__(self, driver: Any, base: str) -> None:
        self.driver = driver
        self.base = base

    async def do(self, action: Callable[[Any], T]) -> T:
        return await asyncio.to_thread(action, self.driver)

    async def until(self, condition: Callable[[Any], T], what: str, within_s: float = WAIT_S) -> T:
        """The first true value of ``condition(driver)``, looked at every 50 ms (failing after ``within_s``).
        An element that went away as it was looked at (the page was replaced) is looked for again."""
        def wait(driver: Any) -> T:
            try:
                return WebDriverWait(driver, within_s, poll_frequency=POLL_S,
                                     ignored_exceptions=(StaleElementReferenceException,)).until(condition)
            except TimeoutException:
                raise AssertionError(f"the console page never showed {what}; it shows {self._state(driver)}") from None

        return await self.do(wait)

    def _state(self, driver: Any) -> str:
        try:
            return str(driver.execute_script(
                "return {stats: window.consoleStats, transcript: [...document.querySelectorAll('#transcript .entry')]"
                ".map(e => e.dataset.role + ': ' + e.textContent), calls: [...document.querySelectorAll("
                "'#calls tr.call-row')].map(r => r.textContent), body: document.body.innerText.slice(0, 400)}"))
        except Exception as exc:
            return f"(unreadable: {exc!r})"

    async def stats(self) -> dict[str, Any]:
        return await self.do(lambda d: d.execute_script("return Object.assign({}, window.consoleStats)"))

    async def stats_when(self, test: str, what: str) -> dict[str, Any]:
        """``window.consoleStats`` at the first moment the JavaScript expression ``test`` (of ``s``, the
        stats) holds."""
        script = f"const s = window.consoleStats; return s && ({test}) ? Object.assign({{}}, s) : null;"
        return await self.until(lambda d: d.execute_script(script), what)

    async def log_in(self, token: str) -> None:
        def submit(driver: Any) -> None:
            field_ = driver.find_element(By.ID, "token")
            field_.clear()
            field_.send_keys(token)
            driver.find_element(By.ID, "login-submit").click()

        await self.do(submit)

    async def text(self, selector: str) -> str:
        return await self.do(lambda d: d.find_element(By.CSS_SELECTOR, selector).text)

    async def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        assert await self.do(lambda d: d.save_screenshot(str(path))), path


@dataclass
class Rig:
    sim: RunningSimulator
    app: web.Application
    base: str
    events: dict[str, list[tuple[str, float, dict[str, Any]]]] = field(default_factory=dict)
    new_call: asyncio.Event = field(default_factory=asyncio.Event)  # set as each call begins
    simulated: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # what Voice Live noted
    simulated_more: asyncio.Event = field(default_factory=asyncio.Event)

    def of(self, call_id: str, name: str) -> list[dict[str, Any]]:
        """The fields of each ``name`` event call ``call_id`` reported, in order."""
        return [fields for event, _, fields in self.events.get(call_id, []) if event == name]

    async def call_number(self, n: int) -> str:
        """The id of the gateway's ``n``-th call (from 0), once it has begun."""
        while len(self.events) <= n:
            self.new_call.clear()
            await self.new_call.wait()
        return list(self.events)[n]

    async def simulator_saw(self, name: str) -> list[dict[str, Any]]:
        """The fields of each ``name`` event the simulated Voice Live noted, once there is one."""
        while not (seen := [fields for event, fields in self.simulated if event == name]):
            self.simulated_more.clear()
            await self.simulated_more.wait()
        return seen


@contextlib.asynccontextmanager
async def console_rig(spool: Path) -> AsyncIterator[Rig]:
    """The gateway on 127.0.0.1 with the console on, the simulator, and a webhook for post-call records."""
    rig: Rig | None = None

    def simulated(event: str, fields: dict[str, Any]) -> None:
        assert rig is not None
        rig.simulated.append((event, dict(fields)))
        rig.simulated_more.set()

    def observer_for(call_id: str) -> Any:
        assert rig is not None
        seen = rig.events.setdefault(call_id, [])
        rig.new_call.set()

        def observe(event: str, t: float, fields: dict[str, Any]) -> None:
            seen.append((event, t, dict(fields)))

        return observe

    async with contextlib.AsyncExitStack() as stack:
        hook_runner, hook_url = await Hook().serve()
        stack.push_async_callback(hook_runner.cleanup)
        sim = await start_simulator(SimulatorSettings(audio_speed=4.0, observer=simulated))
        stack.push_async_callback(sim.close)
        config = parse_config(CONFIG, env={"EP": sim.endpoint, "CONSOLE": CONSOLE_TOKEN, "TWILIO": TWILIO_TOKEN,
                                           "HOOK": hook_url, "RECORDS_SECRET": RECORDS_SECRET, "SPOOL": str(spool)})
        app = create_app(config, observer_factory=observer_for)
        runner, base = await serve(app)
        stack.push_async_callback(runner.cleanup)
        rig = Rig(sim, app, base)
        yield rig


def no_selenium_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    """Selenium Manager (which may download browsers and drivers) must not run: calling it fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("Selenium Manager was asked for a browser or a driver")

    monkeypatch.setattr(SeleniumManager, "binary_paths", refuse)
    monkeypatch.setenv("SE_OFFLINE", "true")


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with console_rig(tmp_path / "spool") as r:
        yield r


@pytest.fixture
async def page(rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Page]:
    no_selenium_manager(monkeypatch)
    # (a short path of its own: Chromium's sockets live there, and a socket's path is at most 107 bytes)
    scratch = Path(tempfile.mkdtemp(prefix="console-chromium-"))
    try:
        driver = await asyncio.to_thread(chromium, caller_wav(tmp_path / "caller.wav"), scratch)
        try:
            yield Page(driver, rig.base)
        finally:
            await asyncio.to_thread(driver.quit)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


async def logged_in(page: Page) -> None:
    await page.do(lambda d: d.get(page.base + "/console"))
    await page.until(lambda d: d.find_elements(By.ID, "login-form"), "the login form")
    await page.log_in(CONSOLE_TOKEN)
    await page.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#profile option"), "the profiles to call")


async def test_a_wrong_token_is_refused_and_the_right_one_opens_the_console(rig: Rig, page: Page) -> None:
    await page.do(lambda d: d.get(page.base + "/console"))
    await page.until(lambda d: d.find_elements(By.ID, "login-form"), "the login form")
    assert await page.do(lambda d: d.find_element(By.ID, "token").get_attribute("type")) == "password"
    await page.log_in("not-the-token")
    error = await page.until(lambda d: d.find_element(By.ID, "login-error").text.strip(), "a login error")
    assert "token" in error
    assert await page.do(lambda d: d.find_elements(By.ID, "call-button")) == []
    await page.log_in(CONSOLE_TOKEN)
    await page.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#profile option"), "the profiles to call")
    names = await page.do(lambda d: [o.get_attribute("value")
                                     for o in Select(d.find_element(By.ID, "profile")).options])
    assert names == ["main", "greeter"]
    selected = await page.do(lambda d: Select(d.find_element(By.ID, "profile")).first_selected_option.text)
    assert selected == "greeter"  # the default route's profile
    assert await page.text("#call-state") == "idle"
    # the session cookie is out of the page's reach (HttpOnly), and the token is nowhere in the page
    assert await page.do(lambda d: d.execute_script("return document.cookie")) == ""
    assert CONSOLE_TOKEN not in await page.do(lambda d: d.page_source)
    cookie = await page.do(lambda d: d.get_cookie("gateway_console"))
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"


async def test_a_call_from_the_page_heard_interrupted_and_ended_from_the_calls_list(rig: Rig, page: Page) -> None:
    screenshot = os.environ.get("CONSOLE_SCREENSHOT")
    if screenshot:  # the picture shows an ended call's record too: a short Twilio call first
        await place_call(rig.base + "/twilio/voice", [Say(HOURS, "question"), WaitForBot(), Hangup()],
                         auth_token=TWILIO_TOKEN)
        await asyncio.wait_for(rig.app[CONTEXT].wait_idle(), WAIT_S)
    calls_before = len(rig.events)
    await logged_in(page)
    await page.do(lambda d: Select(d.find_element(By.ID, "profile")).select_by_value("main"))
    await page.do(lambda d: d.find_element(By.ID, "call-button").click())
    await page.until(lambda d: d.find_element(By.ID, "call-state").text == "in call", "the call in progress")
    session = await asyncio.wait_for(rig.sim.state.wait_for_session(calls_before), WAIT_S)
    assert session.session["input_audio_format"] == session.session["output_audio_format"] == "pcm16"
    (call_id,) = rig.app[CONTEXT].calls
    assert list(rig.events)[calls_before:] == [call_id]
    assert call_id.startswith("console-")

    # the caller's question from the microphone, then the bot's answer played and its marks acknowledged
    heard = await page.stats_when("s.botSamplesPlayed > 0 && s.marksAcked > 0", "the bot's answer played")
    assert heard["framesSent"] > 0 and heard["botBytesReceived"] > 0
    await page.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#transcript .entry[data-role=bot]"),
                     "the bot's words in the transcript")
    await page.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#transcript .entry[data-role=latency]"),
                     "the turn's latency")
    assert (await page.text("#latency")).endswith(" ms")

    # the caller talks over the bot: the page drops its queued audio at once, and the gateway cuts the
    # model's memory of the answer to what the page played (the page's playout clock, by its marks)
    cleared = await page.stats_when("s.clears > 0", "the barge-in flush")
    await page.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#transcript .entry[data-role=barge-in]"),
                     "the barge-in in the transcript")
    await asyncio.wait_for(rig.simulator_saw("truncated"), WAIT_S)  # (the truncation may trail the clear)
    (truncation,) = session.truncations
    (barge,) = rig.of(call_id, "barge_in")
    answer = next(iter(session.items_audio_bytes))
    assert truncation["ok"] and truncation["item_id"] == barge["item_id"] == answer
    assert barge["cleared"] and barge["truncated_at_ms"] == truncation["audio_end_ms"]
    played_ms = cleared["botSamplesPlayed"] * 1000 / RATE
    # (the gateway places the cut from the last acknowledged mark and the time since: a late report
    # of the page's playout clock misplaces it by one piece of audio at most)
    assert abs(truncation["audio_end_ms"] - played_ms) <= DEFAULT_PIECE_MS + 20, (truncation, played_ms)
    assert truncation["audio_end_ms"] < session.items_audio_bytes[answer] / (2 * RATE / 1000)  # cut short
    assert cleared["marksAcked"] >= heard["marksAcked"]
    await page.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#transcript .entry[data-role=caller]"),
                     "the caller's words in the transcript")

    # a Twilio caller's call shows in the same list, with its carrier
    twilio = asyncio.create_task(place_call(rig.base + "/twilio/voice", [Silence(WAIT_S * 1000)],
                                            auth_token=TWILIO_TOKEN))
    try:
        mine = await page.until(lambda d: _row(d, call_id), "the console's call in the calls list")
        assert mine is not None and mine["direction"] == "inbound" and mine["profile"] == "main"
        assert mine["end"] == "yes"
        assert mine["state"] == "ready" and int(mine["turns"]) >= 1
        other_id = await asyncio.wait_for(rig.call_number(calls_before + 1), WAIT_S)
        other = await page.until(lambda d: _row(d, other_id), "the Twilio call in the calls list")
        assert other is not None and other["carrier"] == "twilio" and other["profile"] == "greeter"
        assert mine["carrier"] != other["carrier"]
        source = await page.do(lambda d: d.page_source)  # the Twilio caller's numbers are not shown
        assert "5555550199" not in source and "5555550100" not in source
        if screenshot:
            # the picture of the console: once the bot has answered the interruption too
            await page.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#transcript .entry[data-role=bot]"))
                             >= 2, "the answer to the interruption")
            await page.screenshot(Path(screenshot))
    finally:
        twilio.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await twilio

    # the operator ends the console's call from the list: the gateway hangs up, the page says why
    await page.do(lambda d: _end_button(d, call_id).click())
    state = await page.until(lambda d: (t := d.find_element(By.ID, "call-state").text).startswith("ended") and t,
                             "the call ended")
    assert state == "ended: ended_from_console"
    await page.until(lambda d: _row(d, call_id) is None, "the ended call gone from the list")
    await asyncio.wait_for(rig.app[CONTEXT].wait_idle(), WAIT_S)
    assert rig.of(call_id, "call.ended")[-1]["reason"] == "ended_from_console"
    final = await page.stats()
    assert final["state"] == state and final["clears"] >= 1

    # and its post-call record in the recent calls
    await page.do(lambda d: d.refresh())
    await page.until(lambda d: "ended_from_console" in d.find_element(By.ID, "records").text, "the call's record")


def _row(driver: Any, call_id: str) -> dict[str, str] | None:
    script = """
        const row = [...document.querySelectorAll('#calls tr.call-row')].find(r => r.dataset.callId === arguments[0]);
        if (!row) return null;
        const cells = {};
        for (const name of ['carrier', 'direction', 'profile', 'duration', 'state', 'turns'])
            cells[name] = row.querySelector('td.' + name).textContent;
        cells.end = row.querySelector('button.end-call') ? 'yes' : 'no';
        return cells;"""
    return driver.execute_script(script, call_id)


def _end_button(driver: Any, call_id: str) -> Any:
    """The end button of the calls list's row of ``call_id`` (found in one go: other rows may come and go)."""
    button = driver.execute_script(
        "const row = [...document.querySelectorAll('#calls tr.call-row')].find(r => r.dataset.callId === arguments[0]);"
        "return row ? row.querySelector('button.end-call') : null;", call_id)
    assert button is not None, f"no row of call {call_id} in the calls list"
    return button


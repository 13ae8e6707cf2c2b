"""The ``browser`` section of config.yaml: the console's phone (the operator's microphone and speaker).

The console's calls come from operators on the console page, never from callers: the section holds
no credential of its own. What locks the console's media socket is ``gateway.console_token`` (see
:mod:`gateway.console.auth`), so this section never says "real calls reach the gateway"
(:attr:`has_credential` is False): a gateway with only its console on may run on the simulator.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import AfterValidator, BeforeValidator

from gateway.carriers.settings import CarrierSettings
from gateway.settings_model import between, whole

DEFAULT_PIECE_MS = 100


class BrowserSettings(CarrierSettings):
    section: ClassVar[str] = "browser"
    credential_key: ClassVar[str | None] = None  # (gateway.console_token locks the console, not this section)
    credential_label: ClassVar[str | None] = None  # (check-config's "Console:" line says what locks it)
    transfers: ClassVar[bool] = False  # the console's phone has no number to hand a call over to

    # The bot's audio goes to the page in pieces of this many milliseconds, each followed by a mark
    # the page acknowledges once it has played: a barge-in truncates the bot's answer at the last
    # acknowledged mark plus the time since, so a stall of the page's playback (a busy tab) misplaces
    # the cut by at most one piece. Smaller pieces: a finer cut, more messages (10 a second at 100).
    piece_ms: Annotated[int, BeforeValidator(whole), AfterValidator(between(20, 400))] = DEFAULT_PIECE_MS


SETTINGS = BrowserSettings

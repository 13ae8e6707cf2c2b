"""Local Voice Live-compatible server: the gateway's default backend, the test counterpart, the demo.

``protocol`` holds a session's rules without I/O, ``validation`` the checks of what clients
configure, ``server`` the aiohttp server around them, ``cli`` the ``gateway simulator`` command.
"""

from gateway.simulator.cli import register_cli
from gateway.simulator.server import (
    RunningSimulator,
    SimSession,
    SimulatorState,
    create_app,
    start_simulator,
)
from gateway.simulator.settings import SimulatorSettings, ToolCall

__all__ = [
    "RunningSimulator",
    "SimSession",
    "SimulatorSettings",
    "SimulatorState",
    "ToolCall",
    "create_app",
    "register_cli",
    "start_simulator",
]
